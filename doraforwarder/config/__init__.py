"""Configuration: the reference YAML file, our additions, environment overrides.

The file format of redhat-appstudio/dora-metrics loads unchanged, so its users
switch without edits. Every section forbids unknown keys: a typo is an error
naming the key and the file, never a silently ignored setting.

Secrets belong in the environment (the one exception, as in the reference:
``webrca.token`` when ``OFFLINE_TOKEN`` is unset, with a warning). They come from ``GITHUB_TOKEN``,
``DEVLAKE_WEBHOOK_TOKEN`` and ``OFFLINE_TOKEN`` (or ``*_FILE`` variables naming a
mounted secret) and are held as :class:`pydantic.SecretStr`, so printing the
configuration can never show them.

One module per top-level section of the file, each a :class:`~.fields.Section`
model: :mod:`.server` (with the inventory's auth), :mod:`.webrca`,
:mod:`.alertmanager`, :mod:`.argocd`, :mod:`.storage` (Redis), :mod:`.devlake`
(``integration.devlake`` and its teams), :mod:`.github`, :mod:`.registry` (OCI
image labels), :mod:`.delivery`. A new section is a new module beside them,
one field of :class:`~.settings.Settings`, and a name exported here. Shared
field types (durations, ports) are in :mod:`.fields`; the root models and the
migration of old keys in :mod:`.settings`; the reference's environment
variables in :mod:`.environment`; reading, validating and the error messages in
:mod:`.loading`.

Everything the rest of the code uses is importable from here.
"""

from doraforwarder.config.alertmanager import ALERT_MATCHER, AlertmanagerConfig
from doraforwarder.config.argocd import ENVIRONMENT_MATCHERS, ArgoCDConfig, EnvironmentRule
from doraforwarder.config.delivery import DeliveryConfig
from doraforwarder.config.devlake import (
    DEFAULT_TOKEN_ENV,
    DevLakeConfig,
    IntegrationConfig,
    TeamConfig,
)
from doraforwarder.config.environment import ENV_OVERRIDES, EnvironmentOverrides
from doraforwarder.config.fields import (
    ConfigError,
    Duration,
    Section,
    StrOrInt,
    format_duration,
    parse_duration,
)
from doraforwarder.config.github import GitHubConfig, ImageRepositoryRule
from doraforwarder.config.loading import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    REFERENCE_CONFIG_PATH,
    default_config_path,
    file_secret_warnings,
    load_config,
    load_dotenv_file,
    missing_devlake_keys,
    validate_settings,
)
from doraforwarder.config.registry import RegistryConfig, RegistryLabelRule
from doraforwarder.config.server import KubernetesAuthConfig, OpenShiftAuthConfig, ServerConfig
from doraforwarder.config.settings import LoadedConfig, Secrets, Settings
from doraforwarder.config.storage import RedisConfig, StorageConfig, masked_url, url_passwords
from doraforwarder.config.webrca import SSO_ENDPOINT, WebRCAConfig

__all__ = [
    "ALERT_MATCHER",
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_TOKEN_ENV",
    "ENVIRONMENT_MATCHERS",
    "ENV_OVERRIDES",
    "REFERENCE_CONFIG_PATH",
    "SSO_ENDPOINT",
    "AlertmanagerConfig",
    "ArgoCDConfig",
    "ConfigError",
    "DeliveryConfig",
    "DevLakeConfig",
    "Duration",
    "EnvironmentOverrides",
    "EnvironmentRule",
    "GitHubConfig",
    "ImageRepositoryRule",
    "IntegrationConfig",
    "KubernetesAuthConfig",
    "LoadedConfig",
    "OpenShiftAuthConfig",
    "RedisConfig",
    "RegistryConfig",
    "RegistryLabelRule",
    "Secrets",
    "Section",
    "ServerConfig",
    "Settings",
    "StorageConfig",
    "StrOrInt",
    "TeamConfig",
    "WebRCAConfig",
    "default_config_path",
    "file_secret_warnings",
    "format_duration",
    "load_config",
    "load_dotenv_file",
    "masked_url",
    "missing_devlake_keys",
    "parse_duration",
    "url_passwords",
    "validate_settings",
]
