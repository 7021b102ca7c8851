"""``doraforwarder status`` on the Alertmanager: what Redis holds, through the real CLI process.

The CLI reads Redis without the daemon: it counts the open alert incidents
(alerts or groups whose latest episode is unresolved) and names what only the
running daemon knows (the last notification each process accepted or refused).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import redis.asyncio as aioredis

from doraforwarder.alertmanager.receiver import AlertReceiver
from doraforwarder.alertmanager.webhook import parse_notification
from doraforwarder.config import load_config
from doraforwarder.context import AppContext
from doraforwarder.devlake.plan import Planner
from doraforwarder.keys import Keys
from doraforwarder.testing.redis_server import RedisServer
from tests.test_alertmanager_receiver import T, body


def run(config: Path, clean_env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "doraforwarder", "status", "--config",
                           str(config), *argv], capture_output=True, text=True, timeout=60,
                          env=clean_env, cwd=config.parent)


async def test_status_counts_open_alert_incidents(
        redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path,
        clean_env: dict[str, str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f'storage: {{redis: {{address: "{redis_server.address}", key_prefix: "cli-am"}}}}\n'
        "alertmanager: {enabled: true}\n"
        "integration: {devlake: {enabled: true, base_url: 'http://devlake.invalid', "
        "project_id: '1'}}\n")
    loaded = load_config(str(config))
    context = AppContext(config=loaded, redis=redis_client,
                         keys=Keys(loaded.settings.storage.redis.keyspace))
    receiver = AlertReceiver(context, Planner.from_settings(context.settings, False))
    other = body(start=T + timedelta(hours=1)).replace(b'"f00d"', b'"beef"')
    for sent in (body(), other, body("resolved", end=T + timedelta(minutes=9))):
        await receiver.receive(parse_notification(sent))

    answer = await asyncio.to_thread(run, config, clean_env, "-o", "json")
    assert answer.returncode == 0, answer.stderr
    status = json.loads(answer.stdout)
    assert status["alertmanager"] == {"open_incidents": 1, "alerts_or_groups": 2,
                                      "enabled": True}
    assert {"alertmanager.last_accepted", "alertmanager.last_refused"} <= set(
        status["not_available_offline"])
    text = (await asyncio.to_thread(run, config, clean_env)).stdout
    assert "alertmanager:     1 open incidents (2 alerts or groups remembered)\n" in text
    assert "alertmanager.last_accepted" in text
