"""``doraforwarder demo``: the real pipeline, on this machine, in about half a minute.

The daemon runs in-process exactly as in production (watch, detect, resolve,
outbox, deliver, poll), against the fakes of :mod:`doraforwarder.testing`:
a Kubernetes API server whose Applications sync on a script, GitHub with
matching commits, WebRCA with two incidents, and a DevLake that validates
the contract. What DevLake accepts is printed as it arrives, then summed up.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import redis.asyncio as aioredis

from doraforwarder.daemon import Daemon
from doraforwarder.testing.argocd_objects import LiveApp, source
from doraforwarder.testing.fake_devlake import Posted
from doraforwarder.testing.world import FakeWorld

CLUSTERS = ["prod-east-1", "prod-west-1"]
GITOPS = "https://github.com/example/gitops"
TEAMS = [
    {"name": "team-build", "project_id": "2",
     "argocd_components": ["build-service", "image-controller"]},
    {"name": "team-release", "project_id": "3", "argocd_components": ["release"],
     "webrca_products": ["konflux"]},
]
CONNECTIONS = {1: "global", 2: "team-build", 3: "team-release"}
CONNECTION_NAMES = {str(k): v for k, v in CONNECTIONS.items()}


@dataclass
class Component:
    name: str
    shas: list[str]
    """Commits of the component's repository, oldest first; images are tagged with them."""

    def image(self, index: int) -> str:
        return f"quay.io/example/{self.name}:{self.shas[index]}"


@dataclass
class Scenario:
    """The scripted cluster: applications, their repositories and the timeline."""

    world: FakeWorld
    gitops: list[str] = field(default_factory=list)
    components: dict[str, Component] = field(default_factory=dict)
    apps: dict[str, LiveApp] = field(default_factory=dict)

    def prepare(self) -> None:
        github = self.world.github
        start = datetime.now(UTC) - timedelta(days=3)
        self.gitops = github.add_repo("example/gitops", 12, start=start)
        for name in ("build-service", "image-controller", "release", "integration"):
            shas = github.add_repo(f"example/{name}", 20, start=start, step=timedelta(hours=2))
            self.components[name] = Component(name, shas)
        now = datetime.now(UTC)
        for app_name, component in [
            ("build-service-prod-east-1", "build-service"),
            ("build-service-prod-west-1", "build-service"),
            ("image-controller-prod-east-1", "image-controller"),
            ("release-prod-east-1", "release"),
            ("integration-prod-east-1", "integration"),
            ("monitoring-prod-east-1", "integration"),  # an ignored component
        ]:
            app = LiveApp(
                app_name,
                revision=self.gitops[0],
                images=[self.components[component].image(10)],
                start=now,
                step=timedelta(seconds=1),
                sources=[source(f"components/{component}/production", GITOPS)],
            )
            self.apps[app_name] = app
            self.world.kube.apply(app.snapshot())
        webrca = self.world.webrca
        webrca.add_incident("ITN-2025-00101", summary="Builds stuck in queue",
                            products=["konflux"], severity="major")
        webrca.tick(45)
        webrca.resolve("ITN-2025-00101")
        webrca.tick(30)
        webrca.add_incident("ITN-2025-00102", summary="Release pipeline failing",
                            products=["konflux"], severity="critical")

    def sync(self, app: str, revision: int, image: int | None = None,
             health: str = "Healthy") -> None:
        live = self.apps[app]
        component = self.components[app.rsplit("-prod-", 1)[0]]
        images = [component.image(image)] if image is not None else None
        for step in live.sync(self.gitops[revision], images, health=health):
            self.world.kube.apply(step)

    def set_health(self, app: str, health: str) -> None:
        self.world.kube.apply(self.apps[app].set_health(health))

    def fail(self, app: str, revision: int) -> None:
        for step in self.apps[app].fail(self.gitops[revision]):
            self.world.kube.apply(step)

    def rapid_syncs(self, app: str) -> None:
        self.sync(app, 6, 16)
        self.sync(app, 7, 18)

    def timeline(self) -> list[tuple[float, str, Callable[[], object]]]:
        """(seconds after start, what a person would see, the writes)."""
        return [
            (1, "build-service syncs a new image on prod-east-1",
             lambda: self.sync("build-service-prod-east-1", 1, 14)),
            (3, "image-controller syncs and stays Progressing "
                "(not sent yet: waiting for health)",
             lambda: self.sync("image-controller-prod-east-1", 2, 13, health="Progressing")),
            (5, "the same build-service revision rolls out to prod-west-1 "
                "(not sent again: deduplicated across clusters)",
             lambda: self.sync("build-service-prod-west-1", 1, 14)),
            (7, "release fails to sync",
             lambda: self.fail("release-prod-east-1", 3)),
            (9, "image-controller becomes Healthy",
             lambda: self.set_health("image-controller-prod-east-1", "Healthy")),
            (11, "integration syncs a gitops-only change",
             lambda: self.sync("integration-prod-east-1", 4)),
            (13, "release syncs again and succeeds",
             lambda: self.sync("release-prod-east-1", 5, 12)),
            (15, "incident ITN-2025-00102 is resolved in WebRCA",
             lambda: self.world.webrca.resolve("ITN-2025-00102")),
            (17, "build-service ships two syncs in quick succession",
             lambda: self.rapid_syncs("build-service-prod-east-1")),
        ]


NOT_SENT = (
    "build-service on prod-west-1: the revision already deployed on prod-east-1, "
    "deduplicated across clusters",
    "image-controller while Progressing: held until it became Healthy, then sent once",
    "monitoring-prod-east-1: component monitoring is in components_to_ignore",
)

EXPECTED_DEPLOYMENTS = 7
EXPECTED_INCIDENT_STATES = 3  # ITN-101 resolved, ITN-102 open, ITN-102 resolved


class Reporter:
    """Prints what DevLake accepted: a table line per record and target, or JSON lines."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.seen = 0
        self.started = time.monotonic()
        self.deployments: dict[str, dict[str, Any]] = {}
        self.incidents: dict[str, dict[str, Any]] = {}

    def note(self, text: str) -> None:
        if not self.as_json:
            print(f"{self._clock()}  > {text}", file=self.out, flush=True)

    def _clock(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def header(self) -> None:
        if not self.as_json:
            print(f"{'time':>6}  {'kind':<10} {'component':<17} {'cluster':<12} "
                  f"{'result':<8} {'commits':>7}  target   "
                  "(incidents: status in the result column)", file=self.out)

    def take(self, posts: list[Posted]) -> None:
        for post in posts[self.seen:]:
            self._show(post)
        self.seen = len(posts)

    def _show(self, post: Posted) -> None:
        target = CONNECTION_NAMES.get(str(post.connection_id), str(post.connection_id))
        body = post.body if isinstance(post.body, dict) else {}
        if self.as_json:
            print(json.dumps({"kind": post.kind, "target": target, "payload": body}),
                  file=self.out, flush=True)
        if post.kind == "deployment":
            record = self.deployments.setdefault(str(body.get("id")), {"targets": [], **body})
            record["targets"].append(target)
            title = str(body.get("displayTitle", ""))
            component = _title_field(title, "Component")
            cluster = _title_field(title, "Cluster")
            row = (post.kind, component, cluster, str(body.get("result", "")),
                   str(len(body.get("deploymentCommits", []))), target)
        else:
            key = str(body.get("issueKey", post.record_id))
            record = self.incidents.setdefault(key, {"targets": []})
            record.update(body)
            record["targets"].append(target)
            row = ("incident", key, "", str(body.get("status", post.kind)), "", target)
        if not self.as_json:
            print(f"{self._clock()}  {row[0]:<10} {row[1]:<17} {row[2]:<12} {row[3]:<8} "
                  f"{row[4]:>7}  {row[5]}", file=self.out, flush=True)

    def summary(self, store: str, took: float) -> None:
        if self.as_json:
            return
        print("\nSummary", file=self.out)
        print(f"  {'component':<17} {'cluster':<12} {'result':<8} {'revision':<8} "
              f"{'commits':>7}  targets", file=self.out)
        for record in self.deployments.values():
            title = str(record.get("displayTitle", ""))
            print(f"  {_title_field(title, 'Component'):<17} "
                  f"{_title_field(title, 'Cluster'):<12} {record.get('result', ''):<8} "
                  f"{_title_field(title, 'Revision')[:8]:<8} "
                  f"{len(record.get('deploymentCommits', [])):>7}  "
                  f"{', '.join(_targets(record['targets']))}", file=self.out)
        print(f"\n  {'incident':<30} {'status':<8}  targets", file=self.out)
        for key, incident in self.incidents.items():
            print(f"  {key:<30} {incident.get('status', ''):<8}  "
                  f"{', '.join(_targets(incident['targets']))}", file=self.out)
        print("\nNot sent, on purpose", file=self.out)
        for line in NOT_SENT:
            print(f"  {line}", file=self.out)
        print(f"\n{len(self.deployments)} deployments and {len(self.incidents)} incidents "
              f"forwarded in {took:.1f}s; store: {store}.", file=self.out, flush=True)


def _targets(names: list[str]) -> list[str]:
    """Global first, then teams alphabetically, each once."""
    return sorted(set(names), key=lambda name: (name != "global", name))


def _title_field(title: str, name: str) -> str:
    for part in title.split(" | "):
        if part.startswith(f"{name}: "):
            return part.removeprefix(f"{name}: ")
    return ""


async def _until(condition: Callable[[], bool | Awaitable[bool]], seconds: float,
                 on_tick: Callable[[], None] | None = None) -> bool:
    """Poll ``condition`` every 100 ms for up to ``seconds``, calling ``on_tick`` each time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if on_tick is not None:
            on_tick()
        if result:
            return True
        await asyncio.sleep(0.1)
    return False


def _embedded_store() -> tuple[aioredis.Redis | None, str]:
    if shutil.which("redis-server"):
        return None, "redis-server (real, started for the demo)"
    import fakeredis

    client: aioredis.Redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    return client, "fakeredis (redis-server is not installed)"


async def run_demo(out: TextIO, as_json: bool = False, pace: float = 1.0) -> int:
    """Run the scripted scenario; ``pace`` < 1 plays the timeline faster (tests use it)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="doraforwarder-demo-") as tmp:
        redis_client, store = _embedded_store()
        with FakeWorld(Path(tmp), redis_appendonly=False, start_redis=redis_client is None,
                       connections=CONNECTIONS) as world:
            reporter = Reporter(out, as_json)
            if not as_json:
                print(f"doraforwarder demo: fakes of Kubernetes, GitHub, WebRCA and DevLake "
                      f"on loopback; store: {store}", file=out, flush=True)
            scenario = Scenario(world)
            scenario.prepare()
            config = world.config({
                "argocd": {"known_clusters": CLUSTERS, "components_to_ignore": ["monitoring"]},
                "webrca": {"interval": "3s", "products": ["konflux"]},
                "integration": {"devlake": {"teams": TEAMS}},
            })
            daemon = Daemon(config, redis=redis_client)
            task = asyncio.create_task(daemon.run())
            try:
                await _until(lambda: daemon.context.readiness.is_ready("argocd"), 30)
                reporter.header()

                def poll() -> None:
                    reporter.take(world.devlake.accepted())

                begin = time.monotonic()
                for at, text, action in scenario.timeline():
                    await _until(lambda: False, begin + at * pace - time.monotonic(), poll)
                    reporter.note(text)
                    action()
                await _until(
                    lambda: len(reporter.deployments) >= EXPECTED_DEPLOYMENTS
                    and len(world.devlake.accepted("issue")) >= EXPECTED_INCIDENT_STATES * 2,
                    30, poll,
                )
                await _until(lambda: False, 1.5, poll)  # let last team copies arrive
            finally:
                daemon.request_stop()
                await asyncio.wait_for(task, 20)
            reporter.summary(store, time.monotonic() - started)
    ok = len(reporter.deployments) >= EXPECTED_DEPLOYMENTS and len(reporter.incidents) >= 2
    return 0 if ok else 1
