"""The real daemon process: SIGKILL in the middle of deliveries loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.redis_server import RedisServer
from tests.conftest import write_config
from tests.devlake_support import TOKEN, deployment_entry, eventually, stage


def start_daemon(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "doraforwarder", "run", "--config", str(config),
             "--log-format", "json"],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )


async def test_sigkill_mid_delivery_then_restart_delivers_everything(
    tmp_path: Path, redis_server: RedisServer, redis_client: aioredis.Redis,
    clean_env: dict[str, str],
) -> None:
    keys = Keys("sigkill")
    ids = [f"svc:{n}" for n in range(20)]
    await stage(redis_client, keys, [deployment_entry(i) for i in ids])
    with FakeDevLake(token=TOKEN) as devlake:
        config = write_config(tmp_path, f"""
server: {{port: "0", host: 127.0.0.1, shutdown_timeout: 5s}}
argocd: {{enabled: false}}
storage: {{redis: {{address: "{redis_server.address}", key_prefix: sigkill}}}}
integration:
  devlake: {{enabled: true, base_url: "{devlake.url}/", project_id: "1", timeout_seconds: 5}}
delivery: {{workers: 4, claim_idle: 500ms, initial_backoff: 10ms, max_backoff: 100ms}}
""")
        env = dict(clean_env, DEVLAKE_WEBHOOK_TOKEN=TOKEN)
        log = tmp_path / "daemon.log"
        devlake.hold()
        first = start_daemon(config, env, log)
        try:
            devlake.wait_for_held(4, timeout=30)  # four deliveries in flight
            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
        finally:
            first.kill()
        assert await redis_client.xlen(keys.outbox_stream) == len(ids)  # nothing acknowledged
        devlake.release()

        second = start_daemon(config, env, log)
        try:
            async def drained() -> bool:
                return await redis_client.xlen(keys.outbox_stream) == 0

            await eventually(drained, timeout=30, what="outbox drained after restart")
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=15) == 0
        finally:
            second.kill()
        assert devlake.deployment_ids(1) == set(ids)
        accepted = [p.record_id for p in devlake.accepted("deployment")]
        assert set(accepted) == set(ids)
        assert len(accepted) <= len(ids) + 4  # at most the in-flight four twice, same ids
        pending = await redis_client.xpending(keys.outbox_stream, OUTBOX_GROUP)
        assert pending["pending"] == 0
        assert TOKEN.encode() not in log.read_bytes()
