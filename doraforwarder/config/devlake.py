"""``integration.devlake``: where deployments and incidents are sent, per team.

The target names are checked here (one per team, no two teams the same)
because a wrong one would send a team's deployments into another's project.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
    StrOrInt,
)
from doraforwarder.webhook_paths import Prefix, check_name, normalize_prefix

DEFAULT_TOKEN_ENV = "DEVLAKE_WEBHOOK_TOKEN"  # noqa: S105 - a variable's name, not a secret
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


TokenEnvName = Annotated[str, AfterValidator(_env_name)]
"""The name of an environment variable that holds a DevLake API key."""


class TeamConfig(Section):
    name: str
    project_id: StrOrInt | None = None
    connection_name: str | None = None
    project_name: str | None = None
    argocd_components: list[str] = Field(default_factory=list)
    webrca_products: list[str] = Field(default_factory=list)
    token_env: TokenEnvName | None = None
    """Environment variable holding this team's DevLake API key (``<NAME>_FILE``: a file);
    unset: the key of ``integration.devlake.token_env``."""

    @model_validator(mode="after")
    def _exactly_one_target(self) -> TeamConfig:
        given = [v for v in (self.project_id, self.connection_name, self.project_name) if v]
        if len(given) != 1:
            raise ValueError(
                f"team {self.name!r} needs exactly one of project_id, connection_name "
                "or project_name"
            )
        return self


class DevLakeConfig(Section):
    enabled: bool = True
    base_url: str = ""
    project_id: StrOrInt | None = None
    """The global webhook connection id (the reference calls it a project id)."""
    connection_name: str | None = None
    project_name: str | None = None
    timeout_seconds: float = Field(default=30, gt=0)
    api_prefix: str = "/api/rest"
    """``/api/rest`` when base_url is config-ui (default), ``/rest`` on the DevLake backend."""
    token_env: TokenEnvName = DEFAULT_TOKEN_ENV
    """Environment variable holding the global target's API key (``<NAME>_FILE``: a file)."""
    refused_recheck: Duration | None = None
    """How often one entry of a target DevLake refuses (401/403) is tried again (unset:
    ``delivery.max_backoff``); the others wait in the outbox meanwhile."""
    teams: list[TeamConfig] = Field(default_factory=list)
    deployment_commits: Literal["head", "range"] = "head"
    """``head``: one row per (deployment, repository) holding the deployed commit, dated
    with the deployment's own start and finish (what DevLake's lead time expects).
    ``range``: every commit between the previous image tag and the new one, with author
    dates (the reference's rows; distorts DevLake's own lead time)."""

    @property
    def prefix(self) -> Prefix:
        """``api_prefix`` as DevLake routes it (validated when the section is enabled)."""
        return normalize_prefix(self.api_prefix)

    def team_token_env(self, team: TeamConfig) -> str:
        return team.token_env or self.token_env

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> DevLakeConfig:
        if not self.enabled:
            return self
        if not self.base_url:
            raise ValueError("base_url is required when integration.devlake is enabled")
        if not re.match(r"https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        try:
            prefix = normalize_prefix(self.api_prefix)
        except ValueError as exc:
            raise ValueError(f"integration.devlake.api_prefix: {exc}") from None
        given = [v for v in (self.project_id, self.connection_name, self.project_name) if v]
        if len(given) != 1:
            raise ValueError(
                "the global target needs exactly one of project_id, connection_name "
                "or project_name"
            )
        _check_target_names("integration.devlake", self.project_id, self.connection_name,
                            self.project_name, prefix)
        seen: dict[tuple[str, str], str] = {}
        token_envs: dict[str, tuple[str, str]] = {}
        global_key = _target_key(self.project_id, self.connection_name, self.project_name)
        token_envs[global_key] = ("integration.devlake", self.token_env)
        for index, team in enumerate(self.teams):
            where = f"integration.devlake.teams[{index}]"
            _check_target_names(where, team.project_id, team.connection_name,
                                team.project_name, prefix)
            target = team.project_id or team.connection_name or team.project_name or ""
            key = _target_key(team.project_id, team.connection_name, team.project_name)
            env = self.team_token_env(team)
            other = token_envs.setdefault(key, (where, env))
            if other[1] != env:
                raise ValueError(
                    f"{where} ({team.name!r}) and {other[0]} send to the same DevLake target "
                    f"{target!r} but name different keys ({env} and {other[1]}): one "
                    "target has one key, set the same token_env on both")
            for component in team.argocd_components:
                previous = seen.get((component, target))
                if previous is not None:
                    raise ValueError(
                        f"teams {previous!r} and {team.name!r} both route component "
                        f"{component!r} to the same target {target!r}"
                    )
                seen[(component, target)] = team.name
        return self

    def token_envs(self) -> list[str]:
        """Every environment variable a target's key is read from (default first)."""
        names = [self.token_env, *(self.team_token_env(team) for team in self.teams)]
        return list(dict.fromkeys(names))


def _target_key(project_id: str | None, connection_name: str | None,
                project_name: str | None) -> str:
    if project_id:
        return f"connection_id:{project_id}"
    if connection_name:
        return f"connection_name:{connection_name}"
    return f"project_name:{project_name}"


def _check_target_names(where: str, project_id: str | None, connection_name: str | None,
                        project_name: str | None, prefix: Prefix) -> None:
    """Refuse a target DevLake can never route, naming the key that holds it."""
    if project_id and not (project_id.isascii() and project_id.isdigit()
                           and int(project_id) >= 1):
        raise ValueError(
            f"{where}.project_id: {project_id!r} is not a webhook connection id (a number "
            "from 1); use connection_name for a connection's name")
    for key, value, what in (("connection_name", connection_name, "connection name"),
                             ("project_name", project_name, "project name")):
        if not value:
            continue
        reason = check_name(value, prefix, what)
        if key == "project_name" and reason is None:
            reason = check_name(f"{value}_deployments", prefix, "connection name")
            if reason is not None:
                reason = f"its incident connection {value}_deployments: {reason}"
        if reason is not None:
            raise ValueError(f"{where}.{key}: DevLake cannot route {value!r}: {reason}")


class IntegrationConfig(Section):
    devlake: DevLakeConfig = Field(default_factory=lambda: DevLakeConfig(enabled=False))
