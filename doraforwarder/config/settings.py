"""The root models: the whole file (:class:`Settings`), the secrets, and both together.

Old keys are carried to their new place (:func:`migrate_old_keys`) before the
root model validates, so files written for an older release keep loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from doraforwarder.config.alertmanager import AlertmanagerConfig
from doraforwarder.config.argocd import ArgoCDConfig
from doraforwarder.config.delivery import DeliveryConfig
from doraforwarder.config.devlake import (
    DEFAULT_TOKEN_ENV,
    IntegrationConfig,
)
from doraforwarder.config.fields import (
    Section,
)
from doraforwarder.config.github import GitHubConfig
from doraforwarder.config.registry import RegistryConfig
from doraforwarder.config.server import ServerConfig
from doraforwarder.config.storage import StorageConfig
from doraforwarder.config.webrca import WebRCAConfig


class Settings(Section):
    """The whole configuration, as validated from file and environment."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    webrca: WebRCAConfig = Field(default_factory=WebRCAConfig)
    alertmanager: AlertmanagerConfig = Field(default_factory=AlertmanagerConfig)
    argocd: ArgoCDConfig = Field(default_factory=ArgoCDConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    integration: IntegrationConfig = Field(default_factory=IntegrationConfig)
    github: GitHubConfig = Field(default_factory=GitHubConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)

    @model_validator(mode="before")
    @classmethod
    def _github_retries_from_delivery(cls, data: Any) -> Any:
        """Old files keep their GitHub retry timing (see :func:`migrate_old_keys`)."""
        return migrate_old_keys(data)[0] if isinstance(data, Mapping) else data


class Secrets(BaseModel):
    """Tokens from the environment. ``SecretStr`` keeps them out of every repr."""

    model_config = ConfigDict(frozen=True)

    github_token: SecretStr | None = None
    devlake_webhook_token: SecretStr | None = None
    offline_token: SecretStr | None = None
    redis_password: SecretStr | None = None
    redis_sentinel_password: SecretStr | None = None
    redis_url_passwords: tuple[SecretStr, ...] = ()
    """Passwords written inside ``storage.redis.url`` (userinfo or ``?password=``)."""
    devlake_keys: dict[str, SecretStr | None] = Field(default_factory=dict)
    """DevLake API keys by the ``token_env`` naming them (``integration.devlake`` and teams)."""

    def devlake_key(self, token_env: str = DEFAULT_TOKEN_ENV) -> SecretStr | None:
        """The key ``token_env`` names; the default one is ``devlake_webhook_token``."""
        if token_env in self.devlake_keys:
            return self.devlake_keys[token_env]
        return self.devlake_webhook_token if token_env == DEFAULT_TOKEN_ENV else None

    def values(self) -> list[str]:
        """Every secret value, for the log redaction processor."""
        found = []
        for secret in (
            self.github_token,
            self.devlake_webhook_token,
            self.offline_token,
            self.redis_password,
            self.redis_sentinel_password,
            *self.redis_url_passwords,
            *self.devlake_keys.values(),
        ):
            if secret is not None and secret.get_secret_value():
                found.append(secret.get_secret_value())
        return found


class LoadedConfig(BaseModel):
    """What the daemon runs with: settings, secrets and where they came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    settings: Settings
    secrets: Secrets
    source: str
    deprecations: tuple[str, ...] = ()
    """Old keys that still load, each with what to write instead (logged once at start)."""
    offline_token_from_file: bool = False
    """The WebRCA token is ``webrca.token`` of the file (no ``OFFLINE_TOKEN``), as the
    reference allows; a warning says it belongs in the environment."""

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with every secret shown as ``***``."""
        data = self.settings.model_dump(mode="json")
        redis = data["storage"]["redis"]
        if redis.get("password"):
            redis["password"] = "***"  # noqa: S105 - a mask, not a password
        if redis.get("url"):
            redis["url"] = self.settings.storage.redis.display_url()
        data["secrets"] = {
            name: ("***" if value is not None else None)
            for name, value in (
                ("GITHUB_TOKEN", self.secrets.github_token),
                ("DEVLAKE_WEBHOOK_TOKEN", self.secrets.devlake_webhook_token),
                ("OFFLINE_TOKEN", self.secrets.offline_token),
                *self.secrets.devlake_keys.items(),
            )
        }
        return data


GITHUB_RETRY_KEYS = ("initial_backoff", "max_backoff")
"""GitHub retry settings once read from ``delivery``; they now live under ``github``."""


def migrate_old_keys(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Carry old keys to their new place; say what changed, one sentence per key.

    ``delivery.initial_backoff`` and ``delivery.max_backoff`` used to pace the
    GitHub retries too. A file that sets them (and not the ``github`` ones)
    keeps its GitHub timing, with a deprecation notice.
    """
    document = dict(data)
    delivery, github = document.get("delivery"), document.get("github")
    if not isinstance(delivery, Mapping) or not isinstance(github, Mapping | None):
        return document, []
    github = dict(github or {})
    notes = []
    for key in GITHUB_RETRY_KEYS:
        if key in delivery and key not in github:
            github[key] = delivery[key]
            notes.append(f"GitHub retries still follow delivery.{key}: set github.{key} "
                         f"instead (delivery.{key} is for DevLake deliveries)")
    if notes:
        document["github"] = github
    return document, notes
