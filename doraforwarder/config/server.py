"""``server``: the HTTP listener, log level and who may read the inventory.

The inventory's ``api_auth`` modes (``token``, ``kubernetes``, ``openshift``)
are configured here because they guard this server's endpoints.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
    StrOrInt,
)

OPENSHIFT_USER_PATH = "/apis/user.openshift.io/v1/users/~"


class OpenShiftAuthConfig(Section):
    """``server.api_auth: openshift``: who the bearer token belongs to, as the reference asks."""

    api_url: str = "https://api.openshift.com"
    """The API whose ``/apis/user.openshift.io/v1/users/~`` names the token's user (the
    reference's is OCM's, api.openshift.com; a cluster's API server answers it too)."""
    email_domains: list[str] = Field(default_factory=lambda: ["redhat.com"], min_length=1)
    """The e-mail domains admitted (the reference admits ``@redhat.com`` only)."""
    timeout: Duration = timedelta(seconds=10)
    cache_ttl: Duration = timedelta(seconds=60)
    """How long an admitted token is remembered (refusals are never cached)."""

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("email_domains")
    @classmethod
    def _plain_domains(cls, value: list[str]) -> list[str]:
        domains = [domain.strip().lower().removeprefix("@") for domain in value]
        for domain in domains:
            if not domain or "@" in domain or " " in domain:
                raise ValueError(f"{domain!r} is not an e-mail domain (write redhat.com)")
        return domains

    @property
    def user_url(self) -> str:
        return self.api_url + OPENSHIFT_USER_PATH


class KubernetesAuthConfig(Section):
    """``server.api_auth: kubernetes``: how bearer tokens are reviewed by the API server."""

    audiences: list[str] = Field(default_factory=lambda: ["doraforwarder"])
    """Audiences the TokenReview asks for: a caller's token must be issued for one of them
    (``kubectl create token SA --audience doraforwarder``), so a token that reads the
    inventory is not also a key to the API server. ``[]``: the API server's own audiences
    (any token valid against the API server, as before)."""
    timeout: Duration = timedelta(seconds=10)
    """Longest wait for one TokenReview or SubjectAccessReview (then 503)."""
    cache_ttl: Duration = timedelta(seconds=30)
    """How long a review's answer (accepted or not) is remembered, by the token's digest."""
    unknown_tokens_per_minute: int = Field(default=30, ge=1)
    """Failed TokenReviews allowed per minute (a burst of as many): past it, a token not
    in the cache gets 429 without a review, so random tokens cannot flood the API server."""


class ServerConfig(Section):
    port: StrOrInt = "8080"
    environment: str = "production"
    log_level: Literal["debug", "info", "warning", "warn", "error"] = "info"
    host: str = "0.0.0.0"  # noqa: S104 - a pod serves its probes on every interface
    log_format: Literal["auto", "json", "console"] = "auto"
    shutdown_timeout: Duration = timedelta(seconds=20)
    ready_grace: Duration = timedelta(seconds=30)
    """How long Redis may be unreachable before ``/readyz`` answers 503."""
    api_auth: Literal["none", "token", "kubernetes", "openshift"] | None = None
    """Who may read the application inventory; unset means ``none`` on a loopback
    host and ``token`` anywhere else (see :attr:`effective_api_auth`)."""
    openshift: OpenShiftAuthConfig = Field(default_factory=OpenShiftAuthConfig)
    kubernetes: KubernetesAuthConfig = Field(default_factory=KubernetesAuthConfig)
    cors_allow_origins: list[str] = Field(default_factory=lambda: ["*"])
    """Origins whose browser pages may call the API (the reference allows any: ``*``);
    an empty list sends no CORS headers."""

    @property
    def listens_on_loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @property
    def effective_api_auth(self) -> Literal["none", "token", "kubernetes", "openshift"]:
        if self.api_auth is not None:
            return self.api_auth
        return "none" if self.listens_on_loopback else "token"

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("port")
    @classmethod
    def _valid_port(cls, value: str) -> str:
        if not value.isdigit() or not 0 <= int(value) <= 65535:
            raise ValueError(f"port must be a number from 0 to 65535, got {value!r}")
        return value

    @property
    def port_number(self) -> int:
        return int(self.port)
