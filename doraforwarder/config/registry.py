"""``registry``: commits from OCI image labels, for images whose tag carries no SHA.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta

from pydantic import (
    Field,
    field_validator,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
)


class RegistryLabelRule(Section):
    """A pair of image labels a build writes: the commit, and the repository it is of."""

    revision: str = Field(min_length=1)
    source: str | None = None
    """Absent: the repository comes from ``github.image_repositories`` or the commit search."""


class RegistryConfig(Section):
    """Commits from OCI image labels, for images whose tag carries no SHA (``registry``)."""

    enabled: bool = False
    """Off by default: the reference never calls a registry, and a NetworkPolicy may not let
    the pods reach one."""
    platform: str = ""
    """``os/arch[/variant]`` picked from a multi-platform index; empty: ``linux/amd64``,
    else the first entry (every platform of one build carries the same revision)."""
    labels: list[RegistryLabelRule] = Field(default_factory=list)
    """Label pairs tried before the OCI and OpenShift ones."""
    credentials_files: list[str] = Field(default_factory=list)
    """``.dockerconfigjson`` (or ``.dockercfg``) files, a pull Secret mounted as a volume."""
    plain_http: list[str] = Field(default_factory=list)
    """Registries (``host[:port]``) reached over plain HTTP instead of HTTPS."""
    timeout_seconds: float = Field(default=10, gt=0)
    timeouts: dict[str, float] = Field(default_factory=dict)
    """Per registry (``host[:port]`` -> seconds), for a slow one."""
    max_retry_after: Duration = timedelta(seconds=60)
    """Longest wait a registry's ``429 Retry-After`` is obeyed for (the deadline bounds it too)."""
    skip_images: list[str] = Field(default_factory=list)
    """Glob patterns (``fnmatch``) on the image name without tag or digest, as the Application
    shows it (``*/istio/proxyv2``, ``quay.io/oauth2-proxy/*``): images that never carry source
    labels (sidecars, infrastructure), never looked up in a registry."""

    @field_validator("platform")
    @classmethod
    def _platform_form(cls, value: str) -> str:
        parts = value.strip().split("/")
        if value.strip() and not (2 <= len(parts) <= 3 and all(parts)):
            raise ValueError(f"platform {value!r} is not os/arch or os/arch/variant")
        return value.strip()

    @field_validator("skip_images")
    @classmethod
    def _image_name_globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            last = pattern.rsplit("/", 1)[-1]
            if not pattern.strip() or pattern != pattern.strip():
                raise ValueError(f"pattern {pattern!r} is empty or has spaces "
                                 "around it")
            if "@" in pattern or ":" in last:
                raise ValueError(f"pattern {pattern!r} has a tag or digest: "
                                 "patterns match the image name without them")
            try:
                re.compile(fnmatch.translate(pattern))
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a glob: {exc}") from None
        return value

    @field_validator("timeouts")
    @classmethod
    def _positive_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        for host, seconds in value.items():
            if seconds <= 0:
                raise ValueError(f"timeout of registry {host!r} must be more than 0 seconds")
        return value
