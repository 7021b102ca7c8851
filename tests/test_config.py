"""Configuration: reference files load unchanged; every bad file exits 2 with a clear message."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from doraforwarder.config import (
    ENV_OVERRIDES,
    ConfigError,
    RedisConfig,
    Settings,
    load_config,
    parse_duration,
)
from doraforwarder.config.loading import _describe
from tests.conftest import COMPAT_CONFIGS, ROOT, UPSTREAM_REFERENCE_CONFIGS, write_config

VALID_DEVLAKE = """
integration:
  devlake:
    enabled: true
    base_url: "https://devlake.example.com/"
    project_id: "1"
"""


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "config" / "config.yaml",
        COMPAT_CONFIGS / "reference-style.yaml",
        COMPAT_CONFIGS / "reference-style-production.yaml",
    ],
    ids=lambda p: p.name,
)
def test_shipped_and_reference_style_files_load(path: Path) -> None:
    config = load_config(path)
    assert config.settings.argocd.enabled


@pytest.mark.parametrize("name", ["reference-config.yaml", "reference-config-production.yaml"])
def test_the_reference_implementations_own_files_load_when_present(name: str) -> None:
    path = UPSTREAM_REFERENCE_CONFIGS / name
    if not path.is_file():
        pytest.skip(f"{path} is not beside this checkout (only CI has it)")
    assert load_config(path).settings.argocd.enabled


def test_reference_values_are_read() -> None:
    config = load_config(COMPAT_CONFIGS / "reference-style-production.yaml")
    s = config.settings
    assert s.webrca.enabled and s.webrca.interval == timedelta(hours=1)
    assert s.argocd.namespaces == ["apps-public-production", "argocd"]
    assert "east-p01" in s.argocd.known_clusters
    assert s.integration.devlake.project_id == "1"
    assert [t.project_id for t in s.integration.devlake.teams][:2] == ["3", "6"]
    assert s.storage.redis.key_prefix == "dora-metrics"


@pytest.mark.parametrize(
    ("text", "duration"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("500ms", 0.5), ("30d", 2592000),
     (45, 45), ("12", 12), ("2.5s", 2.5)],
)
def test_durations(text: object, duration: float) -> None:
    assert parse_duration(text).total_seconds() == duration


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h-", "-5s", "1.2.3s", True, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


BAD_FILES = [
    ("unknown section", "servr:\n  port: '8080'\n", "servr: unknown key"),
    ("unknown key", "argocd:\n  namespace: [a]\n", "argocd.namespace: unknown key"),
    ("wrong type", "argocd:\n  enabled: maybe\n", "argocd.enabled"),
    ("wrong list type", "argocd:\n  namespaces: argocd\n", "argocd.namespaces"),
    ("bad port", "server:\n  port: http\n", "server.port"),
    ("missing base_url", "integration:\n  devlake:\n    enabled: true\n    project_id: '1'\n",
     "base_url is required"),
    ("team without project_id", VALID_DEVLAKE + "    teams:\n      - name: t1\n        argocd_components: [a]\n",
     "team 't1' needs exactly one of project_id"),
    ("duplicate team target",
     VALID_DEVLAKE + "    teams:\n      - {name: t1, project_id: '2', argocd_components: [a]}\n"
     "      - {name: t2, project_id: '2', argocd_components: [a]}\n",
     "both route component 'a' to the same target '2'"),
    ("unparseable duration", "argocd:\n  health_timeout: soon\n", "argocd.health_timeout: unparseable"),
    ("bad environment", "argocd:\n  environments: [PROD]\n", "argocd.environments.0"),
    ("bad tag pattern", "github:\n  tag_patterns: ['^(?P<x>[0-9a-f]+)$']\n", "named group"),
    ("not a mapping", "- a\n- b\n", "must hold a mapping"),
    ("not yaml", "server: [unclosed\n", "not valid YAML"),
    ("bad log level", "server:\n  log_level: loud\n", "server.log_level"),
    ("star mixed", "argocd:\n  namespaces: ['*', a]\n", "cannot be combined"),
    ("bad redis address", "storage:\n  redis:\n    address: 'redis host:6379'\n",
     "storage.redis.address: 'redis host:6379' is not host:port"),
    ("skip_images with a tag", "registry:\n  skip_images: ['quay.io/istio/proxyv2:1.20']\n",
     "registry.skip_images: pattern 'quay.io/istio/proxyv2:1.20' has a tag or digest"),
    ("skip_images empty", "registry:\n  skip_images: ['']\n",
     "registry.skip_images: pattern '' is empty"),
    ("redis address port 0", "storage:\n  redis:\n    address: 'redis:0'\n",
     "storage.redis.address: 'redis:0' is not host:port"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_raise_clear_errors(tmp_path: Path, case: str, text: str, message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read configuration file .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, "storage:\n  redis:\n    address: 'redis:6379'\n")
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ENVIRONMENT", "prod-east")
    monkeypatch.setenv("REDIS_HOST", "cache.local")
    monkeypatch.setenv("REDIS_PASSWORD", "pw-from-env")
    settings = load_config(path).settings
    assert settings.server.port_number == 9090
    assert settings.server.log_level == "debug"
    assert settings.server.environment == "prod-east"
    assert settings.storage.redis.address == "cache.local:6379"
    assert settings.storage.redis.connection_url() == "redis://:pw-from-env@cache.local:6379/0"
    assert "pw-from-env" not in settings.storage.redis.display_url()


@pytest.mark.parametrize("address", ["localhost:6379", "redis", "10.0.0.7:6380", "[::1]:6379",
                                     "redis-master.ns.svc.cluster.local:6379", "cache_1:1"])
def test_good_redis_addresses(address: str) -> None:
    assert RedisConfig(address=address).address == address


def error(loc: tuple[str, ...], msg: str, kind: str = "value_error") -> ErrorDetails:
    return ErrorDetails(type=kind, loc=loc, msg=msg, input=None)


LOG_LEVEL_MSG = "Input should be 'debug', 'info', 'warning', 'warn' or 'error'"
# (case, error, origins, the description)
DESCRIBE_CASES: list[tuple[str, ErrorDetails, dict[tuple[str, ...], dict[str, str]], str]] = [
    ("from the file: the file key",
     error(("server", "log_level"), LOG_LEVEL_MSG), {},
     f"server.log_level: {LOG_LEVEL_MSG}"),
    ("from the environment: the variable and its value",
     error(("server", "log_level"), LOG_LEVEL_MSG), {("server", "log_level"): {"LOG_LEVEL": "x"}},
     f"environment variable LOG_LEVEL='x' (overrides server.log_level): {LOG_LEVEL_MSG}"),
    ("another key set by the environment: still the file key",
     error(("server", "host"), "bad"), {("server", "log_level"): {"LOG_LEVEL": "x"}},
     "server.host: bad"),
    ("two variables build one key: both named",
     error(("storage", "redis", "address"), "'a b:0' is not host:port"),
     {("storage", "redis", "address"): {"REDIS_HOST": "a b", "REDIS_PORT": "0"}},
     "environment variables REDIS_HOST='a b', REDIS_PORT='0' (overrides storage.redis.address): "
     "'a b:0' is not host:port"),
    ("a secret: named, its value never shown, even inside the message",
     error(("storage", "redis", "password"), "'pw-secret-1' is not allowed"),
     {("storage", "redis", "password"): {"REDIS_PASSWORD": "pw-secret-1"}},
     "environment variable REDIS_PASSWORD (overrides storage.redis.password): "
     "'***' is not allowed"),
]


@pytest.mark.parametrize(("case", "problem", "origins", "expected"), DESCRIBE_CASES,
                         ids=[c[0] for c in DESCRIBE_CASES])
def test_describe_names_who_set_the_key(case: str, problem: ErrorDetails,
                                        origins: dict[tuple[str, ...], dict[str, str]],
                                        expected: str) -> None:
    assert _describe(problem, origins) == expected


def test_every_override_maps_to_a_file_key_that_exists() -> None:
    settings = load_config(COMPAT_CONFIGS / "reference-style.yaml").settings.model_dump()
    for name, location in ENV_OVERRIDES.items():
        node = settings
        for key in location:
            assert key in node, (name, location)
            node = node[key]


def test_log_level_error_names_the_variable_or_the_file_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, "server:\n  log_level: loud\n")
    with pytest.raises(ConfigError) as from_file:
        load_config(path)
    assert "server.log_level: Input should be" in str(from_file.value)
    assert "LOG_LEVEL" not in str(from_file.value)
    monkeypatch.setenv("LOG_LEVEL", "louder")  # wins over the file: the variable is to blame
    with pytest.raises(ConfigError) as from_env:
        load_config(path)
    assert "environment variable LOG_LEVEL='louder' (overrides server.log_level)" in str(
        from_env.value)
    assert str(path) in str(from_env.value)


def test_redis_password_with_url_characters_stays_out_of_the_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.asyncio as aioredis

    monkeypatch.setenv("REDIS_PASSWORD", "pw/with@odd:chars%#?")
    redis = load_config(write_config(tmp_path, "{}\n")).settings.storage.redis
    client = aioredis.Redis.from_url(redis.connection_url())
    options = client.connection_pool.connection_kwargs
    assert (options["host"], options["port"]) == ("localhost", 6379)
    assert options["password"] == "pw/with@odd:chars%#?"
    assert "pw" not in redis.display_url()


def test_secrets_from_env_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "devlake-token"
    token_file.write_text("devlake-secret-value\n")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_example_value")
    monkeypatch.setenv("DEVLAKE_WEBHOOK_TOKEN_FILE", str(token_file))
    config = load_config(write_config(tmp_path, "{}\n"))
    assert config.secrets.github_token is not None
    assert config.secrets.github_token.get_secret_value() == "ghp_example_value"
    assert config.secrets.devlake_webhook_token is not None
    assert config.secrets.devlake_webhook_token.get_secret_value() == "devlake-secret-value"
    assert config.secrets.offline_token is None
    shown = str(config.redacted()) + repr(config)
    assert "ghp_example_value" not in shown and "devlake-secret-value" not in shown


def test_missing_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLINE_TOKEN_FILE", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="OFFLINE_TOKEN_FILE names"):
        load_config(write_config(tmp_path, "{}\n"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "doraforwarder", *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(("case", "text", "message"), BAD_FILES[:9], ids=[c[0] for c in BAD_FILES[:9]])
def test_cli_exit_code_2_without_traceback(tmp_path: Path, case: str, text: str, message: str,
                                           clean_env: dict[str, str]) -> None:
    path = write_config(tmp_path, text)
    result = run_cli("check-config", "--config", str(path), env=clean_env)
    assert result.returncode == 2
    assert message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_check_config_masks_secrets(tmp_path: Path, clean_env: dict[str, str]) -> None:
    env = dict(clean_env, GITHUB_TOKEN="ghp_supersecret1234", REDIS_PASSWORD="redis-pass-123",
               DEVLAKE_WEBHOOK_TOKEN="dl-token-5678")
    result = run_cli("check-config", "--config", str(COMPAT_CONFIGS / "reference-style.yaml"),
                     env=env)
    assert result.returncode == 0, result.stderr
    for secret in ("ghp_supersecret1234", "redis-pass-123", "dl-token-5678"):
        assert secret not in result.stdout
    assert "GITHUB_TOKEN: '***'" in result.stdout
    assert "password: '***'" in result.stdout


def test_cli_run_with_unreadable_config_exits_2(tmp_path: Path, clean_env: dict[str, str]) -> None:
    result = run_cli("run", "--config", str(tmp_path / "absent.yaml"), env=clean_env)
    assert result.returncode == 2
    assert "cannot read configuration file" in result.stderr


def test_cli_version(clean_env: dict[str, str]) -> None:
    result = run_cli("version", env=clean_env)
    assert result.returncode == 0 and result.stdout.startswith("doraforwarder ")


def test_token_in_file_is_used_without_offline_token_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from doraforwarder.commands.common import load_and_configure
    from doraforwarder.logging import get_logger

    path = write_config(tmp_path, "webrca:\n  token: offline-in-file-1234\n")
    config = load_and_configure(argparse.Namespace(config=str(path), log_format="json",
                                                   log_level="info"))
    # As the reference: the file's token serves when OFFLINE_TOKEN is unset.
    assert config.secrets.offline_token is not None
    assert config.secrets.offline_token.get_secret_value() == "offline-in-file-1234"
    get_logger("test").info("token is offline-in-file-1234")  # masked like any secret
    out = capsys.readouterr().out
    assert "webrca.token in the configuration file is used because OFFLINE_TOKEN" in out
    assert "secrets belong in the environment" in out
    assert "offline-in-file-1234" not in out
    assert "offline-in-file-1234" not in str(config.redacted())


def _setting_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, key as written in a file) of every field, nested sections included."""
    found = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if field.exclude:  # secrets read from the environment only (sentinel_password, token)
            continue
        found.append((prefix + key, key))
        for kind in (*getattr(field.annotation, "__args__", ()), field.annotation):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found += _setting_keys(kind, prefix + key + ".")
    return found


def test_the_example_file_documents_every_key() -> None:
    """The README says config/config.yaml documents every key: a new field must appear there
    (as a key, or named in a comment as the matchers of environment_rules are)."""
    text = (ROOT / "config" / "config.yaml").read_text()
    missing = [path for path, key in _setting_keys(Settings)
               if not re.search(rf"(^|[\s#{{,(]){re.escape(key)}[:,)]", text, re.M)]
    assert not missing, missing
