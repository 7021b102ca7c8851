"""Shared fixtures: a real redis-server per test session (fresh database per test)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from doraforwarder.testing.redis_server import (
    ClusterGroup,
    RedisServer,
    SentinelGroup,
    TlsFiles,
    TlsUnavailable,
    make_tls_files,
    redis_has_tls,
)

ROOT = Path(__file__).resolve().parent.parent
COMPAT_CONFIGS = ROOT / "tests" / "fixtures" / "compat"
"""Configuration files in the reference implementation's format, written for these tests."""
UPSTREAM_REFERENCE_CONFIGS = ROOT.parent / "shared" / "reference" / "configs"
"""The reference implementation's own files, beside a CI checkout only: tests skip without them."""

SECRET_ENV = ("GITHUB_TOKEN", "DEVLAKE_WEBHOOK_TOKEN", "OFFLINE_TOKEN", "REDIS_PASSWORD",
              "GITHUB_TOKEN_FILE", "DEVLAKE_WEBHOOK_TOKEN_FILE", "OFFLINE_TOKEN_FILE",
              "REDIS_HOST", "REDIS_PORT", "PORT", "LOG_LEVEL", "ENVIRONMENT",
              "DORAFORWARDER_CONFIG", "REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_PASSWORD_FILE",
              "WEBRCA_INTERVAL", "API_TOKENS", "API_TOKENS_FILE")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "after_everything: run after every other test of the session "
        "(it reads what they recorded, e.g. the fake API server's call ledger)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``after_everything`` go last, in their collected order."""
    items.sort(key=lambda item: item.get_closest_marker("after_everything") is not None)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's tokens or overrides."""
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server (no persistence) shared by the session; flushed per test."""
    with RedisServer() as server:
        yield server


SENTINEL_PASSWORD = "sentinel-test-secret"


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    """A master, a replica and three Sentinels (with a Sentinel password), shared by the session.

    Tests that fail the master over start their own group instead.
    """
    with SentinelGroup(sentinel_password=SENTINEL_PASSWORD) as group:
        yield group


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterGroup]:
    """A three-master Redis Cluster shared by the session."""
    with ClusterGroup() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if not redis_has_tls():
        pytest.skip("the installed redis-server was built without TLS support")
    try:
        return make_tls_files(tmp_path_factory.mktemp("tls"))
    except TlsUnavailable as exc:  # openssl missing: skip with its one line, never an error
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tls_redis_server(tls_files: TlsFiles) -> Iterator[RedisServer]:
    """A redis-server speaking only TLS, with a certificate from the test's own CA."""
    with RedisServer(tls=tls_files) as server:
        yield server


@pytest.fixture
def durable_redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, with AOF on: ``restart()`` keeps the data."""
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client: aioredis.Redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


def write_config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
