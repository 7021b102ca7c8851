"""HTTP endpoints over real HTTP, on an in-process daemon with a real Redis."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from doraforwarder.config import LoadedConfig, load_config
from doraforwarder.context import AppContext, Service
from doraforwarder.daemon import Daemon
from doraforwarder.server import go_time
from doraforwarder.testing.http_fake import free_port
from doraforwarder.testing.redis_server import RedisServer
from tests.conftest import write_config


class IdleService:
    name = "idle"

    def __init__(self, context: AppContext) -> None:
        context.readiness.ready("idle")

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


def config_for(tmp_path: Path, redis_address: str) -> LoadedConfig:
    text = f"""
server: {{port: "0", host: 127.0.0.1}}
argocd: {{enabled: false}}
storage: {{redis: {{address: "{redis_address}"}}}}
"""
    return load_config(write_config(tmp_path, text))


async def started(daemon: Daemon) -> asyncio.Task[int]:
    task = asyncio.create_task(daemon.run())
    while daemon.port is None:
        await asyncio.sleep(0.01)
    return task


@pytest.fixture
async def daemon_url(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[str]:
    factory: Callable[[AppContext], Sequence[Service]] = lambda ctx: [IdleService(ctx)]
    daemon = Daemon(config_for(tmp_path, redis_server.address), services_factory=factory)
    task = await started(daemon)
    yield f"http://127.0.0.1:{daemon.port}"
    daemon.request_stop()
    assert await task == 0


async def test_root_and_health_have_reference_shapes(daemon_url: str) -> None:
    async with httpx.AsyncClient(base_url=daemon_url) as client:
        root = (await client.get("/")).json()
        assert root == {"message": "DORA Metrics Server", "version": root["version"],
                        "docs": "/api/v1/health"}
        health = (await client.get("/api/v1/health")).json()
        assert set(health) == {"status", "timestamp", "version", "uptime"}
        assert health["status"] == "healthy"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", health["timestamp"])
        assert re.fullmatch(r"[\d.hm]+s|[\d.]+ms", health["uptime"])


async def test_root_health_and_errors_are_the_references_bytes(daemon_url: str) -> None:
    """As the reference binary answers (seen side by side): Go's compact JSON, a fiber.Map's
    sorted keys, ``application/json`` without charset, and its error handler's body."""
    async with httpx.AsyncClient(base_url=daemon_url) as client:
        root = await client.get("/")
        assert root.content == (b'{"docs":"/api/v1/health","message":"DORA Metrics Server",'
                                b'"version":"' + root.json()["version"].encode() + b'"}')
        assert root.headers["content-type"] == "application/json"
        health = await client.get("/api/v1/health")
        assert health.headers["content-type"] == "application/json"
        assert re.fullmatch(rb'\{"status":"healthy","timestamp":"[^"]+","version":"[^"]+",'
                            rb'"uptime":"[^"]+"\}', health.content), health.content
        missing = await client.get("/nope/a&b?q=1")
        assert missing.status_code == 404
        assert missing.content == b'{"error":true,"message":"Cannot GET /nope/a\\u0026amp;b"}'
        assert missing.headers["content-type"] == "application/json"
        wrong = await client.post("/api/v1/health")
        assert (wrong.status_code, wrong.content) == (
            405, b'{"error":true,"message":"Method Not Allowed"}')


@pytest.mark.parametrize(("moment", "text"), [
    (datetime(2026, 8, 1, 12, 0, 5, 123400, tzinfo=UTC), "2026-08-01T12:00:05.1234Z"),
    (datetime(2026, 8, 1, 12, 0, 5, tzinfo=UTC), "2026-08-01T12:00:05Z"),
    (datetime(2026, 8, 1, 12, 0, 5, 7, tzinfo=UTC), "2026-08-01T12:00:05.000007Z"),
])
def test_go_time(moment: datetime, text: str) -> None:
    assert go_time(moment) == text


async def test_ready_metrics_status(daemon_url: str) -> None:
    async with httpx.AsyncClient(base_url=daemon_url) as client:
        for _ in range(200):
            ready = await client.get("/readyz")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "reasons": []}
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "doraforwarder_outbox_depth" in metrics.text
        assert "doraforwarder_github_rate_limit_remaining" in metrics.text
        status = (await client.get("/api/v1/status")).json()
        assert {"watched_namespaces", "apps_tracked", "last_deployments", "outbox_depth",
                "last_webrca_poll"} <= set(status)


async def test_not_ready_while_redis_is_down_then_ready(tmp_path: Path) -> None:
    server = RedisServer()
    server.port = free_port()
    config = config_for(tmp_path, server.address)
    daemon = Daemon(config, services_factory=lambda ctx: [IdleService(ctx)])
    task = await started(daemon)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}") as client:
            answer = await client.get("/readyz")
            assert answer.status_code == 503
            assert any(reason.startswith("redis:") for reason in answer.json()["reasons"])
            assert (await client.get("/api/v1/health")).status_code == 200
            server.start()
            for _ in range(500):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
        server.close()
