"""The reference's ways of finding its file and its environment, in process.

(Through the real CLI: tests/test_cli_switch.py.)
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from doraforwarder.config import (
    ConfigError,
    default_config_path,
    file_secret_warnings,
    load_config,
    load_dotenv_file,
)
from tests.conftest import write_config

FILE_TOKEN = "offline-in-file-0001"


@pytest.mark.parametrize(("present", "chosen"), [
    ((), "config/config.yaml"),
    (("config/config.yaml",), "config/config.yaml"),
    (("configs/config.yaml",), "configs/config.yaml"),
    (("configs/config.yaml", "config/config.yaml"), "configs/config.yaml"),
])
def test_default_config_path_prefers_the_references_place(
        tmp_path: Path, present: tuple[str, ...], chosen: str) -> None:
    for name in present:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    assert default_config_path(tmp_path) == chosen


@pytest.mark.parametrize(("webrca", "variable", "interval"), [
    ("{}", "7m", timedelta(minutes=7)),        # the file does not say: the variable decides
    ("{interval: 2m}", "7m", timedelta(minutes=2)),  # the file wins, as in the reference
    ("{}", None, timedelta(minutes=30)),
    ('{interval: ""}', "7m", timedelta(minutes=7)),
])
def test_webrca_interval_variable_as_the_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webrca: str, variable: str | None,
        interval: timedelta) -> None:
    if variable is not None:
        monkeypatch.setenv("WEBRCA_INTERVAL", variable)
    path = write_config(tmp_path, f"webrca: {webrca}\n")
    assert load_config(path).settings.webrca.interval == interval


def test_bad_webrca_interval_names_the_variable(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBRCA_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="environment variable WEBRCA_INTERVAL='soon'"):
        load_config(write_config(tmp_path, "server: {}\n"))


def test_webrca_token_from_the_file_only_without_offline_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, f"webrca: {{token: {FILE_TOKEN}}}\n")
    config = load_config(path)
    assert config.secrets.offline_token is not None
    assert config.secrets.offline_token.get_secret_value() == FILE_TOKEN
    assert FILE_TOKEN in config.secrets.values()  # so the log processor masks it
    [warning] = file_secret_warnings(config)
    assert "used because OFFLINE_TOKEN is not set" in warning and FILE_TOKEN not in warning
    assert FILE_TOKEN not in repr(config) + str(config.redacted())

    monkeypatch.setenv("OFFLINE_TOKEN", "from-env")
    config = load_config(path)
    assert config.secrets.offline_token is not None
    assert config.secrets.offline_token.get_secret_value() == "from-env"
    [warning] = file_secret_warnings(config)
    assert "ignored: OFFLINE_TOKEN" in warning


def test_dotenv_never_overrides_a_set_variable(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nPORT=9123\nexport LOG_LEVEL=debug\nENVIRONMENT=\"from dotenv\"\n"
        "DORA_TEST_EMPTY=x\n")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("DORA_TEST_EMPTY", "")  # set, even empty: it wins
    for name in ("PORT", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    try:
        assert sorted(load_dotenv_file(tmp_path)) == ["ENVIRONMENT", "PORT"]
        assert (os.environ["PORT"], os.environ["LOG_LEVEL"]) == ("9123", "warning")
        assert os.environ["ENVIRONMENT"] == "from dotenv" and os.environ["DORA_TEST_EMPTY"] == ""
    finally:
        for name in ("PORT", "ENVIRONMENT"):
            os.environ.pop(name, None)
    assert load_dotenv_file(tmp_path / "nowhere") == []


def test_the_differences_docs_migration_lists(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows of docs/migration.md that are configuration defaults."""
    monkeypatch.setenv("REDIS_HOST", "other")
    settings = load_config(write_config(
        tmp_path, "storage: {redis: {address: 'redis:6380'}}\n")).settings
    assert settings.storage.redis.address == "other:6380"  # the reference: other:6379
    monkeypatch.delenv("REDIS_HOST")
    settings = load_config(write_config(tmp_path, "{}\n")).settings
    assert settings.server.port_number == 8080  # the reference: 3000
    assert settings.server.environment == "production"  # the reference: development
    assert settings.argocd.dedupe_window == timedelta(hours=24)  # the reference: 30 days
    assert settings.webrca.products == ["konflux"]  # as the reference
    assert settings.server.cors_allow_origins == ["*"]  # as the reference
