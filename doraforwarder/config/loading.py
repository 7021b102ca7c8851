"""Finding, reading and validating the configuration; one clear error per problem.

Every problem becomes one :class:`~doraforwarder.config.fields.ConfigError`
naming the key (or the variable) and the file: ``check-config`` and every
command exit 2 with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    SecretStr,
    ValidationError,
)
from pydantic_core import ErrorDetails

from doraforwarder.config.devlake import (
    DEFAULT_TOKEN_ENV,
)
from doraforwarder.config.environment import (
    SECRET_OVERRIDES,
    EnvironmentOverrides,
    Origins,
    apply_overrides,
    read_named_secret,
    read_secret,
)
from doraforwarder.config.fields import (
    ConfigError,
)
from doraforwarder.config.settings import LoadedConfig, Secrets, Settings, migrate_old_keys
from doraforwarder.config_file import read_document
from doraforwarder.env_file import load_dotenv_file as load_dotenv_file

DEFAULT_CONFIG_PATH = "config/config.yaml"
REFERENCE_CONFIG_PATH = "configs/config.yaml"
"""Where the reference reads its file (from the working directory, always)."""
CONFIG_ENV_VAR = "DORAFORWARDER_CONFIG"


def file_secret_warnings(config: LoadedConfig) -> list[str]:
    """Secrets written in the configuration file, one sentence each (never the value)."""
    notes = []
    if config.settings.webrca.token and config.offline_token_from_file:
        notes.append("webrca.token in the configuration file is used because OFFLINE_TOKEN "
                     "is not set: secrets belong in the environment; move it to OFFLINE_TOKEN "
                     "(or OFFLINE_TOKEN_FILE, from a Secret)")
    elif config.settings.webrca.token:
        notes.append("webrca.token in the configuration file is ignored: OFFLINE_TOKEN "
                     "(or OFFLINE_TOKEN_FILE) is set; remove the token from the file")
    redis = config.settings.storage.redis
    if redis.password and not os.environ.get("REDIS_PASSWORD"):
        notes.append("storage.redis.password is written in the configuration file: move it "
                     "to the REDIS_PASSWORD environment variable (from a Secret)")
    return notes


def _describe(error: ErrorDetails, origins: Origins | None = None) -> str:
    """One problem, naming the file key, or the variable when the environment set it."""
    path = tuple(str(part) for part in error["loc"])
    location = ".".join(path) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown key (check its spelling)"
    message = str(error["msg"]).removeprefix("Value error, ")
    set_by = (origins or {}).get(path)
    if set_by:
        return _describe_variables(set_by, location, message)
    if message.startswith(f"{location}."):
        return message  # already names the exact key
    return f"{location}: {message}"


def _describe_variables(set_by: Mapping[str, str], location: str, message: str) -> str:
    """``environment variable LOG_LEVEL='loud' (overrides server.log_level): ...``."""
    shown = []
    for name, value in set_by.items():
        if name in SECRET_OVERRIDES:
            message = message.replace(value, "***")
            shown.append(name)
        else:
            shown.append(f"{name}={value!r}")
    noun = "variable" if len(shown) == 1 else "variables"
    return f"environment {noun} {', '.join(shown)} (overrides {location}): {message}"


def _validate(data: Mapping[str, Any], source: str,
              origins: Origins | None = None) -> tuple[Settings, list[str]]:
    try:
        return Settings.model_validate(dict(data)), migrate_old_keys(data)[1]
    except ValidationError as exc:
        problems = "; ".join(_describe(error, origins) for error in exc.errors())
        raise ConfigError(f"invalid configuration in {source}: {problems}") from None


def validate_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Validate a parsed document; problems raise one :class:`ConfigError`."""
    return _validate(data, source)[0]


def load_config(path: str | os.PathLike[str] | None = None) -> LoadedConfig:
    """Read, override from the environment and validate.

    Raises :class:`ConfigError` with one clear message naming the key and the file.
    """
    source = str(path or os.environ.get(CONFIG_ENV_VAR) or default_config_path())
    data = read_document(source, ConfigError)
    env = EnvironmentOverrides()
    data, origins = apply_overrides(data, env)
    settings, deprecations = _validate(data, source, origins)
    sentinel_password = read_secret(env, "redis_sentinel_password")
    if sentinel_password is not None:
        redis = settings.storage.redis.model_copy(update={"sentinel_password": sentinel_password})
        settings = settings.model_copy(
            update={"storage": settings.storage.model_copy(update={"redis": redis})})
    default_key = read_secret(env, "devlake_webhook_token")
    devlake_keys = {
        name: default_key if name == DEFAULT_TOKEN_ENV else read_named_secret(name)
        for name in settings.integration.devlake.token_envs()
    } if settings.integration.devlake.enabled else {}
    offline_token = read_secret(env, "offline_token")
    from_file = offline_token is None and bool(settings.webrca.token)
    if from_file:
        offline_token = SecretStr(settings.webrca.token)
    secrets = Secrets(
        github_token=read_secret(env, "github_token"),
        devlake_webhook_token=default_key,
        devlake_keys=devlake_keys,
        offline_token=offline_token,
        redis_password=SecretStr(settings.storage.redis.password)
        if settings.storage.redis.password
        else None,
        redis_sentinel_password=sentinel_password,
        redis_url_passwords=tuple(
            SecretStr(value) for value in settings.storage.redis.url_passwords()),
    )
    return LoadedConfig(settings=settings, secrets=secrets, source=source,
                        deprecations=tuple(deprecations), offline_token_from_file=from_file)


def missing_devlake_keys(config: LoadedConfig) -> dict[str, list[str]]:
    """Variables that name no DevLake API key, each with the targets that need it.

    Empty when DevLake is disabled. The reference refuses to send without
    ``DEVLAKE_WEBHOOK_TOKEN``; ``run`` stops at start instead of filling the outbox.
    """
    devlake = config.settings.integration.devlake
    if not devlake.enabled:
        return {}
    users: dict[str, list[str]] = {devlake.token_env: ["integration.devlake"]}
    for index, team in enumerate(devlake.teams):
        users.setdefault(devlake.team_token_env(team), []).append(
            f"integration.devlake.teams[{index}] ({team.name})")
    return {name: targets for name, targets in users.items()
            if config.secrets.devlake_key(name) is None}


def default_config_path(cwd: Path | None = None) -> str:
    """The file read when neither ``--config`` nor ``DORAFORWARDER_CONFIG`` names one:
    ``configs/config.yaml`` in the working directory (where the reference reads it) when
    it exists, else ``config/config.yaml`` (this repository's layout)."""
    directory = cwd or Path.cwd()
    if (directory / REFERENCE_CONFIG_PATH).is_file():
        return REFERENCE_CONFIG_PATH
    return DEFAULT_CONFIG_PATH
