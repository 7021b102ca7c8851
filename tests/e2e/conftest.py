"""Fixtures of the end-to-end suite: a fake world, a Redis client, daemon processes.

Every daemon started through :func:`daemons` is stopped at the end of its
test, and its logs (stdout and stderr of every start) are checked for every
secret of the world: no scenario may leak one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from doraforwarder.testing.world import FakeWorld
from tests.e2e.harness import CONNECTIONS, DaemonProcess, no_secrets

DaemonFactory = Callable[..., DaemonProcess]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path / "world", redis_appendonly=True, connections=CONNECTIONS) as world:
        yield world


@pytest.fixture
def store(world: FakeWorld) -> Iterator[redis.Redis]:
    """A plain Redis client on the world's server (the harness reads queue depths)."""
    assert world.redis is not None, "the end-to-end suite needs redis-server"
    client = redis.Redis.from_url(world.redis.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def daemons(world: FakeWorld, tmp_path: Path,
            clean_env: dict[str, str]) -> Iterator[DaemonFactory]:
    """``daemons(overrides, name=...)`` -> a started daemon process on a config of its own."""
    started: list[DaemonProcess] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir()

    def start(overrides: dict[str, Any], name: str = "daemon") -> DaemonProcess:
        config = world.write_config(overrides, name=f"{name}.yaml")
        daemon = DaemonProcess(config, {**clean_env, **world.environment()}, log_dir, name)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.ensure_stopped()
    no_secrets(world, started)
