"""The scale cases: how cost grows with the number of Applications and their size.

- :func:`bench_refresh_scale`: refresh-only events through the watcher's code
  path (line splitting, decoding, dispatch, the intake's fingerprint check)
  with 1k, 10k and 100k tracked apps of 3 KB and of 30 KB, each against bare
  ``json.loads`` of the same bytes, in paired rounds; plus the first-sight
  cost per app (decode, parse, hand over) that the catch-up pays.
- :func:`bench_catchup`: the real daemon process starting against an API
  server holding 100k Applications of 3 to 30 KB and an empty Redis: time
  from the first list request to every app's baseline stored, and RSS.

The objects are encoded once per size class (:class:`apps.Templates`) and
the index filled in per app, so generating them costs far less than what is
measured.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis as sync_redis
from aiohttp import web
from apps import MIX, Templates

from doraforwarder.argocd.intake import Intake
from doraforwarder.argocd.watch_reader import urllib3_lines as _lines
from doraforwarder.argocd.watcher import ApplicationWatcher, WatchScope, WatchTiming
from doraforwarder.metrics import Metrics
from doraforwarder.testing.http_fake import BackgroundServer
from doraforwarder.testing.world import FakeWorld

API = "/apis/argoproj.io/v1alpha1"


class _Chunked:
    """What the watcher reads: the body in 64 KiB chunks, as urllib3 streams it."""

    def __init__(self, body: bytes, chunk: int = 65536) -> None:
        self.body, self.chunk = body, chunk

    def stream(self, amount: int, decode_content: bool = True) -> Iterator[bytes]:
        for start in range(0, len(self.body), self.chunk):
            yield self.body[start:start + self.chunk]


def _rss_kb_self() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- refresh cost against the number and size of apps ------------------------------------


def bench_refresh_scale(counts: tuple[int, ...] = (1_000, 10_000, 100_000),
                        sizes: tuple[str, ...] = ("3KB", "30KB"), events: int = 20_000,
                        rounds: int = 5) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for size in sizes:
        results.extend(_refresh_scale_one_size(size, counts, events, rounds))
        gc.collect()
    return {"events": events, "rounds": rounds, "cases": results}


def _refresh_scale_one_size(size: str, counts: tuple[int, ...], events: int,
                            rounds: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    templates = Templates(size)
    submitted = [0]

    def submit(key: str, job: Any, stop: threading.Event) -> bool:
        submitted[0] += 1
        return True

    metrics = Metrics()
    intake = Intake(submit, metrics, lambda scope, present: None)
    watcher = ApplicationWatcher(None, WatchScope("argocd"), intake, metrics,  # type: ignore[arg-type]
                                 threading.Event(), WatchTiming())

    def through_watcher(data: bytes) -> int:
        count = 0
        for line in _lines(_Chunked(data)):
            watcher._handle(line)
            count += 1
        return count

    def bare(data: bytes) -> int:
        count = 0
        for line in _lines(_Chunked(data)):
            json.loads(line)
            count += 1
        return count

    tracked = 0
    for count in counts:
        # First sight of the apps not tracked yet, 1,000 lines at a time.
        first_sight = 0.0
        for start in range(tracked, count, 1000):
            chunk = b"".join(templates.added(i) for i in range(start, min(count, start + 1000)))
            started = time.perf_counter()
            through_watcher(chunk)
            first_sight += time.perf_counter() - started
        new_apps, tracked = count - tracked, count
        # Refreshes spread over every tracked app (a stride coprime with the count).
        stride = 7919
        body = b"".join(templates.refresh((n * stride) % count, 10_000_000 + n)
                        for n in range(events))
        submitted[0] = 0

        def rate(fn: Callable[[bytes], int], body: bytes = body) -> float:
            gc.collect()
            started = time.perf_counter()
            done = fn(body)
            return done / (time.perf_counter() - started)

        paired = [(rate(through_watcher), rate(bare)) for _ in range(rounds)]
        assert submitted[0] == 0, f"refresh-only events reached the lanes: {submitted[0]}"
        assert intake.apps_tracked == count
        results.append({
            "size": size, "apps": count, "event_bytes": len(body) // events,
            "watcher_events_per_s": round(max(p[0] for p in paired)),
            "bare_json_loads_per_s": round(max(p[1] for p in paired)),
            "ratio": round(statistics.median(p[0] / p[1] for p in paired), 3),
            "first_sight_us_per_app": round(first_sight / new_apps * 1e6, 1),
            "bench_rss_mb": round(_rss_kb_self() / 1024),
        })
        del body
    return results


# --- catch-up of the real daemon process ---------------------------------------------------


class BigListAPI:
    """A Kubernetes API answering list pages of ``apps`` Applications made on demand.

    The fake of ``doraforwarder.testing`` keeps every object as a dict; 100,000
    of these would not fit. Pages are filled in from templates as they are
    asked for; a watch stays open (empty) until its timeout.
    """

    def __init__(self, apps: int, mix: list[str] | None = None) -> None:
        self.apps = apps
        self.templates = [Templates(size) for size in (mix or MIX)]
        self.lists = 0
        self.first_list_at: float | None = None
        self.bytes_served = 0
        app = web.Application()
        app.router.add_get(f"{API}/namespaces/{{namespace}}/applications", self._collection)
        self.server = BackgroundServer(app)

    def app_bytes(self, index: int) -> bytes:
        return self.templates[index % len(self.templates)].app(index)

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "big", "cluster": {"server": self.server.url}}],
            "users": [{"name": "big", "user": {"token": "bench"}}],
            "contexts": [{"name": "big", "context": {"cluster": "big", "user": "big"}}],
            "current-context": "big"}))
        return path

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") in ("true", "1"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            timeout = float(request.query.get("timeoutSeconds") or 60)
            await asyncio.sleep(timeout)
            return response
        if self.first_list_at is None:
            self.first_list_at = time.monotonic()
        self.lists += 1
        limit = int(request.query.get("limit") or 500)
        start = int(request.query.get("continue") or 0)
        end = min(self.apps, start + limit)
        items = b",".join(self.app_bytes(i) for i in range(start, end))
        metadata = b'{"resourceVersion":"1000"%s}' % (
            b',"continue":"%d"' % end if end < self.apps else b"")
        body = b'{"apiVersion":"argoproj.io/v1alpha1","kind":"ApplicationList","metadata":' \
            + metadata + b',"items":[' + items + b"]}"
        self.bytes_served += len(body)
        return web.Response(body=body, content_type="application/json")


def bench_catchup(apps: int = 100_000) -> dict[str, Any]:
    from run import _env, _rss_mb, _start_daemon, _stop, _wait

    api = BigListAPI(apps)
    sizes = [len(t.app(0)) for t in api.templates]
    with tempfile.TemporaryDirectory(prefix="bench-catchup-") as tmp, \
            FakeWorld(Path(tmp), redis_appendonly=False) as world:
        api.server.start()
        config = world.write_config({
            "argocd": {"kubeconfig": str(api.write_kubeconfig(Path(tmp) / "big-kubeconfig")),
                       "known_clusters": ["prod-east-1", "prod-west-1", "prod-eu-1",
                                          "prod-ap-1"],
                       "watch_timeout": "300s"},
            "webrca": {"enabled": False},
        })
        assert world.redis is not None
        store = sync_redis.Redis.from_url(world.redis.url)
        log = Path(tmp) / "daemon.log"
        started = time.monotonic()
        process = _start_daemon(config, _env(world), log)
        peak = 0.0
        try:
            _wait(lambda: api.first_list_at is not None, 60, "the first list", 0.005)
            assert api.first_list_at is not None

            def baselined() -> bool:
                nonlocal peak
                peak = max(peak, _rss_mb(process.pid))
                if int(store.dbsize()) < apps:  # O(1): no scan of 100,000 keys 4 times a second
                    return False
                return sum(1 for _ in store.scan_iter("dora-metrics:app:*", count=10_000)) >= apps

            listed: float | None = None

            def listed_or_done() -> bool:
                nonlocal listed
                if listed is None and "applications listed" in log.read_text(errors="replace"):
                    listed = time.monotonic()
                return listed is not None

            _wait(listed_or_done, 600, "the list to end", 0.05)
            _wait(baselined, 900, "every application's baseline", 0.25)
            done = time.monotonic()
            cpu_s = _cpu_s(process.pid)
            time.sleep(1.0)
            settled_rss = _rss_mb(process.pid)
            peak = max(peak, settled_rss)
        finally:
            _stop(process)
            store.close()
            api.server.close()
    assert listed is not None
    return {
        "apps": apps,
        "object_bytes_min": min(sizes),
        "object_bytes_max": max(sizes),
        "object_bytes_mean": round(statistics.mean(sizes)),
        "list_bytes": api.bytes_served,
        "process_start_to_first_list_s": round(api.first_list_at - started, 2),
        "list_s": round(listed - api.first_list_at, 2),
        "catch_up_s": round(done - api.first_list_at, 2),
        "daemon_cpu_s": round(cpu_s, 1),
        "rss_mb": round(settled_rss, 1),
        "rss_peak_mb": round(peak, 1),
    }
