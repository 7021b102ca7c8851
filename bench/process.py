"""Refresh events through the whole daemon process, next to a bare ``json.loads``.

The in-process refresh cases (``bench_refresh``, ``scale.py``) time the
watcher's decode path fed from memory. This one runs the real ``doraforwarder
run`` process against the fake API server and counts its **whole-process CPU**
(``/proc/<pid>/stat``: HTTP read of the chunked watch stream, splitting,
decoding, the intake, everything else the process does meanwhile) per
refresh-only event, from the first event to the moment its
``doraforwarder_argocd_noop_events`` counter shows the last one. The stream
is then read again from the fake's history (the same bytes the daemon got)
and each line is given to ``json.loads`` in this process, timed with
``time.process_time``: the ratio is bare CPU per event over the daemon's CPU
per event (> 1: the daemon spends less per event than ``json.loads`` alone).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis as sync_redis
from apps import live_app

from doraforwarder.testing.world import FakeWorld

DAEMON = [sys.executable, "-m", "doraforwarder"]
"""How the daemon is started (a comparison run may point it at a patched launcher)."""
NOOP = re.compile(rb"^doraforwarder_argocd_noop_events_total (\S+)$", re.M)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wakeups(pid: int) -> int:
    """Times the process's threads went to sleep and were woken (voluntary context switches)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # a thread that just ended
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def _port(log: Path) -> int | None:
    for raw in log.read_text(errors="replace").splitlines():
        if "http listening" in raw:
            try:
                return int(json.loads(raw)["port"])
            except (ValueError, KeyError, TypeError):
                continue
    return None


def _noop_events(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        match = NOOP.search(answer.read())
    return float(match.group(1)) if match else 0.0


def _stream_bytes(world: FakeWorld, since: int) -> bytes:
    """The watch stream after ``since`` as the fake serves it (the daemon's bytes)."""
    request = urllib.request.Request(
        f"{world.kube.url}/apis/argoproj.io/v1alpha1/namespaces/argocd/applications"
        f"?watch=true&resourceVersion={since}&timeoutSeconds=1",
        headers={"Authorization": f"Bearer {world.kube.token}"})
    with urllib.request.urlopen(request, timeout=120,
                                context=ssl.create_default_context()) as answer:
        return bytes(answer.read())


def bench_refresh_process(apps: int = 500, events: int = 20_000, rounds: int = 3,
                          env_extra: dict[str, str] | None = None,
                          idle_s: float = 0.0) -> dict[str, Any]:
    """Daemon CPU per refresh event (whole process) against bare ``json.loads`` per event.

    Also the daemon's wake-ups per event (voluntary context switches of all its
    threads) and, with ``idle_s``, its CPU and wake-ups per second over that
    long a window with nothing happening, after the rounds.
    """
    lives = [live_app(i) for i in range(apps)]
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp, \
            FakeWorld(Path(tmp), redis_appendonly=False) as world:
        world.kube.max_events = apps + events * rounds + 10
        world.kube.apply_all([app.snapshot() for app in lives])
        config = world.write_config({
            "argocd": {"known_clusters": ["prod-east-1", "prod-west-1", "prod-eu-1",
                                          "prod-ap-1"], "watch_timeout": "300s"},
            "webrca": {"enabled": False},
        })
        assert world.redis is not None
        store = sync_redis.Redis.from_url(world.redis.url)
        env = {k: v for k, v in os.environ.items()
               if k not in ("GITHUB_TOKEN", "DEVLAKE_WEBHOOK_TOKEN", "OFFLINE_TOKEN")}
        env.update(world.environment())
        env.update(env_extra or {})
        log = Path(tmp) / "daemon.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [*DAEMON, "run", "--config", str(config),
                 "--log-format", "json"], stdout=sink, stderr=subprocess.STDOUT, env=env)
        per_round: list[dict[str, float]] = []
        try:
            _wait(lambda: _port(log) is not None, 60, "the daemon's HTTP port")
            port = _port(log)
            assert port is not None

            def baselined() -> bool:
                return sum(1 for _ in store.scan_iter("dora-metrics:app:*", count=1000)) >= apps

            _wait(baselined, 120, "every application's baseline")
            _wait(lambda: world.kube.open_watches > 0, 30, "the watch")
            time.sleep(1.0)
            for _ in range(rounds):
                batch = [lives[n % apps].refresh() for n in range(events)]
                before_events = _noop_events(port)
                since = world.kube.resource_version
                cpu_before = _cpu_s(process.pid)
                wakeups_before = _wakeups(process.pid)
                for start in range(0, events, 2000):
                    world.kube.apply_all(batch[start:start + 2000])
                target = before_events + events
                _wait(lambda target=target: _noop_events(port) >= target, 300,  # type: ignore[misc]
                      "the daemon to read every refresh event", 0.02)
                daemon_cpu = _cpu_s(process.pid) - cpu_before
                wakeups = _wakeups(process.pid) - wakeups_before
                body = _stream_bytes(world, since)
                lines = [line for line in body.split(b"\n") if line]
                assert len(lines) == events, (len(lines), events)
                started = time.process_time()
                for line in lines:
                    json.loads(line)
                bare_cpu = time.process_time() - started
                per_round.append({"daemon_us": daemon_cpu / events * 1e6,
                                  "bare_us": bare_cpu / events * 1e6,
                                  "bytes": len(body) / events,
                                  "wakeups": wakeups / events})
            rss = _rss_mb(process.pid)
            idle: dict[str, float] = {}
            if idle_s:
                time.sleep(1.0)
                cpu_before, wakeups_before = _cpu_s(process.pid), _wakeups(process.pid)
                started_idle = time.monotonic()
                time.sleep(idle_s)
                elapsed = time.monotonic() - started_idle
                idle = {"idle_cpu_ms_per_s": round(
                            (_cpu_s(process.pid) - cpu_before) / elapsed * 1000, 2),
                        "idle_wakeups_per_s": round(
                            (_wakeups(process.pid) - wakeups_before) / elapsed, 1)}
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            store.close()
    for r in per_round:  # CPU is counted in clock ticks: a tiny run may see none
        r["daemon_us"] = max(r["daemon_us"], 1e-3)
    ratios = sorted(r["bare_us"] / r["daemon_us"] for r in per_round)
    return {
        "apps": apps,
        "events": events,
        "rounds": rounds,
        "event_bytes": round(per_round[0]["bytes"]),
        "daemon_cpu_us_per_event": [round(r["daemon_us"], 1) for r in per_round],
        "bare_json_loads_cpu_us_per_event": [round(r["bare_us"], 1) for r in per_round],
        "process_ratio": round(ratios[len(ratios) // 2], 3),
        "process_ratio_per_round": [round(r["bare_us"] / r["daemon_us"], 3)
                                    for r in per_round],
        "daemon_wakeups_per_event": [round(r["wakeups"], 3) for r in per_round],
        "rss_mb": round(rss, 1),
        **idle,
    }


if __name__ == "__main__":
    print(json.dumps(bench_refresh_process(), indent=2))
