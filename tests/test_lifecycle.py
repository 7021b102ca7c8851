"""The real process: starts, logs JSON with components, stops on SIGTERM with exit 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from doraforwarder.testing.redis_server import RedisServer
from tests.conftest import write_config


def start_daemon(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "doraforwarder", "run", "--config", str(config),
         "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def read_until(process: subprocess.Popen[str], event: str, timeout: float = 30) -> list[dict]:
    lines: list[dict] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        record = json.loads(line)
        lines.append(record)
        if record.get("event") == event:
            return lines
    raise AssertionError(f"no {event!r} log line; got {lines}")


def test_sigterm_stops_cleanly_and_logs_carry_components(
    tmp_path: Path, redis_server: RedisServer, clean_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, f"""
server: {{port: "0", host: 127.0.0.1, shutdown_timeout: 5s}}
argocd: {{enabled: false}}
storage: {{redis: {{address: "{redis_server.address}"}}}}
""")
    env = dict(clean_env, GITHUB_TOKEN="ghp_lifecycle_secret_value")
    process = start_daemon(config, env)
    try:
        lines = read_until(process, "started")
        started_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started_at < 6
        assert process.stdout is not None
        rest = process.stdout.read()
    finally:
        process.kill()
    for record in lines:
        assert record["component"], record
        assert "timestamp" in record and "level" in record
    assert any(r["event"] == "http listening" for r in lines)
    assert "ghp_lifecycle_secret_value" not in json.dumps(lines) + rest
    assert '"stopped"' in rest


def test_redis_unreachable_at_start_retries_without_crashing(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    server = RedisServer()
    config = write_config(tmp_path, f"""
server: {{port: "0", host: 127.0.0.1, shutdown_timeout: 5s}}
argocd: {{enabled: false}}
storage: {{redis: {{address: "{server.address}"}}}}
""")
    process = start_daemon(config, clean_env)
    try:
        lines = read_until(process, "dependency down")  # once per cause, then quiet retries
        assert lines[-1]["component"] == "daemon" and lines[-1]["dependency"] == "redis"
        assert server.address in lines[-1]["cause"]
        assert process.poll() is None
        server.start()
        read_until(process, "started")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        server.close()
