"""GitHub retry settings live under ``github``; the old ``delivery`` keys still pace them."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import pytest

from doraforwarder.commands import check_config
from doraforwarder.config import Settings, load_config
from tests.conftest import write_config

CASES = [
    # (file, GitHub initial/max backoff, DevLake initial/max backoff, deprecated keys)
    ("{}", (timedelta(seconds=1), timedelta(minutes=5)),
     (timedelta(seconds=1), timedelta(minutes=5)), []),
    ("github: {initial_backoff: 2s, max_backoff: 1m}",
     (timedelta(seconds=2), timedelta(minutes=1)),
     (timedelta(seconds=1), timedelta(minutes=5)), []),
    ("delivery: {initial_backoff: 10ms, max_backoff: 50ms}",
     (timedelta(milliseconds=10), timedelta(milliseconds=50)),
     (timedelta(milliseconds=10), timedelta(milliseconds=50)),
     ["initial_backoff", "max_backoff"]),
    ("delivery: {initial_backoff: 10ms}\ngithub: {initial_backoff: 3s}",
     (timedelta(seconds=3), timedelta(minutes=5)),
     (timedelta(milliseconds=10), timedelta(minutes=5)), []),
    ("delivery: {max_backoff: 9s}\ngithub: {api_url: 'https://ghe.example/api/v3'}",
     (timedelta(seconds=1), timedelta(seconds=9)),
     (timedelta(seconds=1), timedelta(seconds=9)), ["max_backoff"]),
]


@pytest.mark.parametrize(("text", "github", "delivery", "deprecated"), CASES)
def test_where_the_backoff_comes_from(tmp_path: Path, text: str,
                                      github: tuple[timedelta, timedelta],
                                      delivery: tuple[timedelta, timedelta],
                                      deprecated: list[str]) -> None:
    config = load_config(write_config(tmp_path, text))
    settings = config.settings
    assert (settings.github.initial_backoff, settings.github.max_backoff) == github
    assert (settings.delivery.initial_backoff, settings.delivery.max_backoff) == delivery
    assert len(config.deprecations) == len(deprecated)
    for key, note in zip(deprecated, config.deprecations, strict=True):
        assert f"delivery.{key}" in note and f"github.{key}" in note


def test_the_shipped_configuration_uses_the_new_keys() -> None:
    config = load_config(Path(__file__).resolve().parent.parent / "config" / "config.yaml")
    assert config.deprecations == ()


def test_check_config_shows_the_deprecation(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "delivery: {initial_backoff: 10ms}")
    assert check_config.handle(argparse.Namespace(config=str(path))) == 0
    out = capsys.readouterr().out
    assert "# deprecated: GitHub retries still follow delivery.initial_backoff" in out
    assert "initial_backoff: 10ms" in out.split("github:")[1].split("delivery:")[0]


def test_settings_built_in_code_carry_the_old_keys_too() -> None:
    settings = Settings.model_validate({"delivery": {"initial_backoff": "10ms"}})
    assert settings.github.initial_backoff == timedelta(milliseconds=10)
