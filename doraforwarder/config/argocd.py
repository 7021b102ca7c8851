"""``argocd``: the Applications watched, and which environment each deployment is of.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
)
from doraforwarder.records import Environment as EnvironmentName


def _production_only() -> list[EnvironmentName]:
    return ["PRODUCTION"]


ENVIRONMENT_MATCHERS = (
    "path",
    "app",
    "namespace",
    "project",
    "destination_namespace",
    "destination",
    "repo_url",
)


class EnvironmentRule(Section):
    """One ``argocd.environment_rules`` entry: one matcher (a regular expression
    searched in that field of the Application) and the environment it gives."""

    path: str | None = None
    app: str | None = None
    namespace: str | None = None
    project: str | None = None
    destination_namespace: str | None = None
    destination: str | None = None
    """Searched in the destination name and in the destination server URL."""
    repo_url: str | None = None
    environment: EnvironmentName

    @field_validator("environment", mode="before")
    @classmethod
    def _upper_environment(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_valid_matcher(self) -> EnvironmentRule:
        given = [key for key in ENVIRONMENT_MATCHERS if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                f"needs exactly one matcher among {', '.join(ENVIRONMENT_MATCHERS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        try:
            re.compile(getattr(self, given[0]))
        except re.error as exc:
            raise ValueError(f"{given[0]}: invalid regular expression: {exc}") from None
        return self

    @property
    def matcher(self) -> tuple[str, re.Pattern[str]]:
        """The matched field and its compiled expression (``re`` caches compilations)."""
        key = next(key for key in ENVIRONMENT_MATCHERS if getattr(self, key) is not None)
        return key, re.compile(getattr(self, key))


class ArgoCDConfig(Section):
    enabled: bool = True
    namespaces: list[str] = Field(default_factory=lambda: ["argocd"])
    components_to_ignore: list[str] = Field(default_factory=list)
    known_clusters: list[str] = Field(default_factory=list)
    repository_blacklist: list[str] = Field(default_factory=list)
    environments: list[EnvironmentName] = Field(default_factory=_production_only)
    """Environments forwarded; apps in any other are skipped."""
    environment_rules: list[EnvironmentRule] = Field(default_factory=list)
    """Ordered; the first rule whose matcher matches gives the environment (after the
    ``doraforwarder.io/environment`` annotation, before the path rules)."""
    default_environment: EnvironmentName = "PRODUCTION"
    """The environment of an app no annotation, rule or source path classifies."""
    failures_as_incidents: bool = False
    """A sync ending Degraded is a SUCCESS deployment, and a production app Degraded for
    longer than ``incident_after`` is an incident (resolved when Healthy again)."""
    incident_after: Duration = timedelta(minutes=5)
    health_timeout: Duration = timedelta(minutes=10)
    unsettled_result: Literal["SUCCESS", "FAILURE"] = "SUCCESS"
    dedupe_scope: Literal["component", "cluster"] = "component"
    dedupe_window: Duration = timedelta(hours=24)
    state_ttl: Duration = timedelta(days=30)
    kubeconfig: str | None = None
    context: str | None = None
    workers: int = Field(default=8, ge=1, le=256)
    """Applications are decided in parallel across this many ordered lanes."""
    queue_size: int = Field(default=1000, ge=1)
    """Events waiting per lane before the watch stops reading (back-pressure)."""
    watch_timeout: Duration = timedelta(minutes=5)

    @field_validator("default_environment", mode="before")
    @classmethod
    def _upper_default_environment(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("environments", mode="before")
    @classmethod
    def _upper_environments(cls, value: object) -> object:
        if isinstance(value, list):
            return [item.upper() if isinstance(item, str) else item for item in value]
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespaces_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('list at least one namespace, or ["*"] for every namespace')
        if "*" in value and len(value) > 1:
            raise ValueError('"*" watches every namespace and cannot be combined with names')
        return value

    @property
    def all_namespaces(self) -> bool:
        return self.namespaces == ["*"]
