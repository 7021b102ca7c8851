"""``doraforwarder outbox ...`` against a real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from doraforwarder import cli, outbox
from doraforwarder.keys import Keys
from doraforwarder.testing.redis_server import RedisServer
from tests.conftest import write_config
from tests.devlake_support import deployment_entry, issue_entries, stage

KEYS = Keys("cmd")


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer) -> Path:
    return write_config(tmp_path, f"""
storage: {{redis: {{address: "{redis_server.address}", key_prefix: cmd}}}}
""")


async def run(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


async def test_stats_list_dead_requeue_drop(redis_client, config: Path, capsys) -> None:
    assert await run("outbox", "--config", str(config), "list") == 0
    assert "no outbox yet: nothing was ever staged" in capsys.readouterr().out
    await stage(redis_client, KEYS, [deployment_entry("svc:1"), deployment_entry("svc:2"),
                                     *issue_entries("INC-7", "DONE", close=True)])
    await outbox.ensure_group(redis_client, KEYS.outbox_stream, "delivery")
    items = await outbox.read_stream(redis_client, KEYS.outbox_stream)
    dead_id = await outbox.dead_letter(redis_client, KEYS, items[0],
                                       reason="rejected: HTTP 400 bad", status=400)

    assert await run("outbox", "stats", "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert "outbox:         3 entries" in out and "dead letters:   1" in out
    assert "connection_id:1" in out and "rejected" in out

    assert await run("outbox", "--config", str(config), "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "KIND", "TARGET", "AGE", "ORDER", "RECORD"]
    assert any("issue:connection_id:1:INC-7#2" in line and "close" in line for line in out)

    assert await run("outbox", "--config", str(config), "dead") == 0
    out = capsys.readouterr().out
    assert dead_id in out and "400" in out and "rejected: HTTP 400 bad" in out

    assert await run("outbox", "--config", str(config), "requeue", dead_id) == 0
    assert f"requeued {dead_id}" in capsys.readouterr().out
    assert await redis_client.xlen(KEYS.dead_stream) == 0
    assert await redis_client.xlen(KEYS.outbox_stream) == 4

    assert await run("outbox", "--config", str(config), "requeue", dead_id) == 1
    assert "no dead letter" in capsys.readouterr().err
    assert await run("outbox", "--config", str(config), "drop", items[1].id) == 0
    assert "dropped" in capsys.readouterr().out
    assert await redis_client.xlen(KEYS.outbox_stream) == 3


async def test_requeue_all(redis_client, config: Path, capsys) -> None:
    await stage(redis_client, KEYS, [deployment_entry(f"svc:{n}") for n in range(3)])
    await outbox.ensure_group(redis_client, KEYS.outbox_stream, "delivery")
    for item in await outbox.read_stream(redis_client, KEYS.outbox_stream):
        await outbox.dead_letter(redis_client, KEYS, item, reason="not_found: x", status=404)
    assert await run("outbox", "--config", str(config), "requeue", "--all") == 0
    assert "3 requeued, 0 skipped" in capsys.readouterr().out
    assert await redis_client.xlen(KEYS.outbox_stream) == 3
