"""RSS of the real daemon process holding a backlog of big outbox entries (issue 19 #6).

With ``deployment_commits: range`` one entry of 250 commits is about 100 KB in
Redis. DevLake answers 503, so every entry read is held (and retried); the
outbox holds 1,500 of them. Each run starts a fresh Redis and daemon with one
``delivery.max_held_bytes`` and records the daemon's peak RSS over 20 s; the
``count only`` run sets the bound out of reach (1 GiB), which is how the daemon
behaved before the size bound: 1,000 entries held. ``idle`` is the same daemon
with an empty outbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as sync_redis

from doraforwarder.keys import Keys
from doraforwarder.outbox import OutboxEntry, Target
from doraforwarder.testing.world import FakeWorld

ENTRIES = 1500
COMMITS = 250
SECONDS = 20.0
BOUNDS = (("idle", "16MiB", 0), ("8MiB", "8MiB", ENTRIES), ("16MiB (default)", "16MiB", ENTRIES),
          ("32MiB", "32MiB", ENTRIES), ("count only", "1GiB", ENTRIES))


def range_entry(n: int) -> dict[str, str]:
    """A deployment with ``COMMITS`` commit rows, as ``deployment_commits: range`` makes it."""
    started, finished = "2025-05-01T11:00:00+00:00", "2025-05-01T12:00:00+00:00"
    rows = [{"repoUrl": "https://github.com/example/some-service", "commitSha": f"{n:08x}{k:032x}",
             "startedDate": started, "finishedDate": finished, "refName": "main",
             "commitMsg": "Fix the thing in the module (#1234)\n\nSigned-off-by: A Person "
                          "<a@example.com>",
             "result": "SUCCESS", "displayTitle": "some-service deployed to production",
             "name": "some-service-production"} for k in range(COMMITS)]
    payload = {"id": f"svc:{n}", "startedDate": started, "finishedDate": finished,
               "environment": "PRODUCTION", "result": "SUCCESS", "name": f"deploy {n}",
               "deploymentCommits": rows}
    return OutboxEntry(kind="deployment", target=Target(kind="connection_id", value="1"),
                       record_id=f"svc:{n}", payload=payload).to_fields()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _held_once(bound: str, entries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-held-") as tmp, \
            FakeWorld(Path(tmp), redis_appendonly=False) as world:
        assert world.redis is not None
        store = sync_redis.Redis.from_url(world.redis.url, decode_responses=True)
        keys = Keys("dora-metrics")
        stored = 0
        pipe = store.pipeline(transaction=False)
        for n in range(entries):
            fields = range_entry(n)
            stored += sum(len(k) + len(v) for k, v in fields.items())
            pipe.xadd(keys.outbox_stream, fields)  # type: ignore[arg-type]
            if n % 100 == 99:
                pipe.execute()
        pipe.execute()
        world.devlake.fail_always(503)
        config = world.write_config({
            "argocd": {"enabled": False}, "webrca": {"enabled": False},
            "delivery": {"max_held_bytes": bound, "initial_backoff": "1s", "max_backoff": "5s"},
        })
        env = {k: v for k, v in os.environ.items()
               if k not in ("GITHUB_TOKEN", "DEVLAKE_WEBHOOK_TOKEN", "OFFLINE_TOKEN")}
        env.update(world.environment())
        with (Path(tmp) / "daemon.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "doraforwarder", "run", "--config", str(config),
                 "--log-format", "json"], stdout=log, stderr=subprocess.STDOUT, env=env)
        peak = 0.0
        try:
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline and process.poll() is None:
                peak = max(peak, _rss_mb(process.pid))
                time.sleep(0.25)
        finally:
            process.terminate()
            process.wait(timeout=20)
            store.close()
    return {"max_held_bytes": bound, "entries": entries,
            "entry_kb": round(stored / max(entries, 1) / 1000, 1), "peak_rss_mb": round(peak)}


def bench_held() -> dict[str, Any]:
    return {"cases": [{"case": name, **_held_once(bound, entries)}
                      for name, bound, entries in BOUNDS]}
