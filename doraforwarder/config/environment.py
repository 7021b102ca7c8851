"""The reference's environment variables, and how they override the file.

Kept apart from validation so an error can name the variable the operator set
(``PORT``, ``REDIS_PASSWORD``...) rather than a key absent from their file, and
never show a secret override's value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    SecretStr,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from doraforwarder.config.fields import (
    ConfigError,
)

ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "PORT": ("server", "port"),
    "LOG_LEVEL": ("server", "log_level"),
    "ENVIRONMENT": ("server", "environment"),
    "REDIS_HOST": ("storage", "redis", "address"),
    "REDIS_PORT": ("storage", "redis", "address"),
    "REDIS_PASSWORD": ("storage", "redis", "password"),
    "WEBRCA_INTERVAL": ("webrca", "interval"),
}
"""The reference's variables and the file key each one overrides: a validation error
of that key names the variable the operator set, not a key absent from their file.
``WEBRCA_INTERVAL`` is the exception, as in the reference: it is used only when the
file does not set ``webrca.interval``."""
SECRET_OVERRIDES = frozenset({"REDIS_PASSWORD"})
"""Overrides whose value is never shown, not even in part, in an error."""

Origins = Mapping[tuple[str, ...], Mapping[str, str]]
"""File key -> the variables (name -> value) that set it."""


class EnvironmentOverrides(BaseSettings):
    """Variables the reference honours, read with pydantic-settings."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    port: str | None = None
    log_level: str | None = None
    environment: str | None = None
    redis_host: str | None = None
    redis_port: str | None = None
    redis_password: str | None = None
    redis_sentinel_password: str | None = None
    redis_sentinel_password_file: str | None = None
    github_token: str | None = None
    github_token_file: str | None = None
    devlake_webhook_token: str | None = None
    devlake_webhook_token_file: str | None = None
    offline_token: str | None = None
    offline_token_file: str | None = None
    webrca_interval: str | None = None


def read_secret(env: EnvironmentOverrides, name: str) -> SecretStr | None:
    return _secret(name, getattr(env, name), getattr(env, f"{name}_file"))


def read_named_secret(name: str) -> SecretStr | None:
    """The secret in environment variable ``name``, or in the file ``<name>_FILE`` names."""
    return _secret(name, os.environ.get(name), os.environ.get(f"{name}_FILE"))


def _secret(name: str, value: str | None, file_name: str | None) -> SecretStr | None:
    if file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{name.upper()}_FILE names {file_name!r}, which cannot be read: {exc.strerror}"
            ) from None
    return SecretStr(value) if value else None


def _section(data: dict[str, Any], *path: str) -> dict[str, Any] | None:
    """The nested mapping at ``path``, created when absent; None when the file has a non-mapping."""
    node: Any = data
    for key in path:
        if not isinstance(node, dict):
            return None
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
    return node if isinstance(node, dict) else None


def apply_overrides(data: dict[str, Any],
                     env: EnvironmentOverrides) -> tuple[dict[str, Any], Origins]:
    """Environment variables win over the file, as in the reference.

    Returns the document and which keys the environment set (see :data:`ENV_OVERRIDES`).
    """
    check_number("PORT", env.port)
    check_number("REDIS_PORT", env.redis_port)
    origins: dict[tuple[str, ...], dict[str, str]] = {}
    webrca = _section(data, "webrca")
    interval_in_file = webrca is not None and webrca.get("interval") not in (None, "")
    for name, location in ENV_OVERRIDES.items():
        value = getattr(env, name.lower())
        if value and not (name == "WEBRCA_INTERVAL" and interval_in_file):
            origins.setdefault(location, {})[name] = value
    if webrca is not None and env.webrca_interval and not interval_in_file:
        webrca["interval"] = env.webrca_interval
    server = _section(data, "server")
    if server is not None:
        for key in ("port", "log_level", "environment"):
            if getattr(env, key):
                server[key] = getattr(env, key)
    redis = _section(data, "storage", "redis")
    if redis is not None:
        if env.redis_host or env.redis_port:
            host, _, port = str(redis.get("address", "localhost:6379")).rpartition(":")
            redis["address"] = f"{env.redis_host or host or 'localhost'}:{env.redis_port or port}"
        if env.redis_password:
            redis["password"] = env.redis_password
    return data, origins


def check_number(name: str, value: str | None) -> None:
    if value is not None and value != "" and (not value.isdigit() or int(value) > 65535):
        raise ConfigError(f"environment variable {name}={value!r} is not a port number "
                          "(0 to 65535)")
