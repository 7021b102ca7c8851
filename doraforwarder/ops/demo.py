"""``doraforwarder demo``: the real pipeline, on this machine, in about twenty seconds.

The daemon runs in-process exactly as in production (watch, detect, resolve,
outbox, deliver, poll), against the fakes of :mod:`doraforwarder.testing`:
a Kubernetes API server whose Applications sync on a three-day script, GitHub
with matching commits and pull requests, WebRCA with two incidents, and a
DevLake that validates the contract. What DevLake accepts is printed as it
arrives, then summed up, then turned into the four DORA numbers per DevLake
project by the model of DevLake's own computation.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from doraforwarder.daemon import Daemon
from doraforwarder.devlake.target_ids import TARGET_SEPARATOR
from doraforwarder.testing.argocd_objects import LiveApp, source
from doraforwarder.testing.dora import DoraModel, ProjectNumbers
from doraforwarder.testing.fake_devlake_bodies import parse_devlake_date
from doraforwarder.testing.fake_devlake_records import Posted
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
IGNORED = ("monitoring",)
"""argocd.components_to_ignore: the monitoring app is listed, never forwarded."""
CONNECTION_NAMES = {str(k): v for k, v in CONNECTIONS.items()}


@dataclass
class Component:
    name: str
    shas: list[str]
    """Commits of the component's repository, oldest first; images are tagged with them."""

    def image(self, index: int) -> str:
        return f"quay.io/example/{self.name}:{self.shas[index]}"


def story_start() -> datetime:
    """Midnight UTC three days ago: the scripted three days all lie in the past."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=3)


PULL_REQUESTS = (
    # (number, index of its squash-merge commit in build-service, created, merged) on day 2
    (101, 15, (9, 30), (10, 30)),
    (102, 16, (11, 30), (12, 0)),
    (103, 17, (13, 15), (14, 0)),
    (104, 18, (15, 30), (16, 30)),
)
"""Merged into build-service on day 2, shipped by its two syncs on day 3."""

SYNC_STEP = timedelta(seconds=20)
"""How long each write of a sync takes in the scripted clusters."""


@dataclass
class Scenario:
    """The scripted cluster: applications, their repositories and the timeline.

    The script covers three days (UTC), played in about twenty seconds: every
    sync carries its own times, so DevLake's rows and the DORA numbers come
    out as they would over those days.
    """

    world: FakeWorld
    day_one: datetime = field(default_factory=story_start)
    gitops: list[str] = field(default_factory=list)
    components: dict[str, Component] = field(default_factory=dict)
    apps: dict[str, LiveApp] = field(default_factory=dict)

    def at(self, day: int, hour: int, minute: int = 0) -> datetime:
        """A moment of the script: ``day`` 1 to 3."""
        return self.day_one + timedelta(days=day - 1, hours=hour, minutes=minute)

    def prepare(self) -> None:
        self._projects()
        github = self.world.github
        self.gitops = github.add_repo("example/gitops", 12, start=self.at(1, 7))
        for name in ("build-service", "image-controller", "release", "integration"):
            # 15 commits up to day 1 08:00, then 5 on day 2 from 09:00, two hours apart
            repo = f"example/{name}"
            shas = github.add_repo(repo, 15, start=self.at(1, 8) - 14 * timedelta(hours=2),
                                   step=timedelta(hours=2))
            shas += github.add_commits(repo, 5, start=self.at(2, 9), step=timedelta(hours=2))
            self.components[name] = Component(name, shas)
        build = self.components["build-service"]
        for number, index, created, merged in PULL_REQUESTS:
            github.add_pull_request(
                "example/build-service", number, f"build-service change {number}",
                commits=[build.shas[index]], merge_commit_sha=build.shas[index],
                created_at=self.at(2, *created), merged_at=self.at(2, *merged))
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
                start=self.at(1, 8),
                step=SYNC_STEP,
                sources=[source(f"components/{component}/production", GITOPS)],
            )
            self.apps[app_name] = app
            self.world.kube.apply(app.snapshot())
        # Resolved before the first scripted deployment: it counts for time to restore only.
        self.incident("ITN-2025-00101", self.at(1, 8, 30), summary="Builds stuck in queue",
                      severity="major")
        self.resolve("ITN-2025-00101", self.at(1, 9, 15))

    def _projects(self) -> None:
        """The DevLake projects the dashboard shows: each holds its webhook connection."""
        devlake = self.world.devlake
        for connection_id, project in CONNECTIONS.items():
            devlake.add_project(project)
            devlake.attach(project, connection_id)

    def incident(self, key: str, when: datetime, summary: str, severity: str) -> None:
        webrca = self.world.webrca
        webrca.tick((when - webrca.clock).total_seconds() / 60)
        webrca.add_incident(key, summary=summary, products=["konflux"], severity=severity)

    def resolve(self, key: str, when: datetime) -> None:
        webrca = self.world.webrca
        webrca.tick((when - webrca.clock).total_seconds() / 60)
        webrca.resolve(key)

    def sync(self, app: str, when: datetime, revision: int, image: int | None = None,
             health: str = "Healthy") -> None:
        """A sync whose history entry says ``deployedAt == when`` (started one step before)."""
        live = self.apps[app]
        live.now = when - 2 * live.step
        component = self.components[app.rsplit("-prod-", 1)[0]]
        images = [component.image(image)] if image is not None else None
        for step in live.sync(self.gitops[revision], images, health=health):
            self.world.kube.apply(step)

    def set_health(self, app: str, when: datetime, health: str) -> None:
        live = self.apps[app]
        live.now = when - live.step
        self.world.kube.apply(live.set_health(health))

    def fail(self, app: str, when: datetime, revision: int) -> None:
        live = self.apps[app]
        live.now = when - live.step
        for step in live.fail(self.gitops[revision]):
            self.world.kube.apply(step)

    def rapid_syncs(self, app: str) -> None:
        self.sync(app, self.at(3, 10), 6, 16)
        self.sync(app, self.at(3, 10, 5), 7, 18)

    def timeline(self) -> list[Step]:
        """The script, in the order a person watching would see it."""
        at = self.at
        return [
            Step(1, at(1, 10), "build-service syncs a new image on prod-east-1",
                 lambda: self.sync("build-service-prod-east-1", at(1, 10), 1, 14)),
            Step(3, at(1, 10, 20), "the same build-service revision rolls out to prod-west-1 "
                    "(not sent again: deduplicated across clusters)",
                 lambda: self.sync("build-service-prod-west-1", at(1, 10, 20), 1, 14),
                 1),  # after prod-east-1's deployment reached DevLake, whatever the load
            Step(5, at(1, 14), "image-controller syncs and stays Progressing "
                    "(not sent yet: waiting for health)",
                 lambda: self.sync("image-controller-prod-east-1", at(1, 14), 2, 13,
                                   health="Progressing")),
            Step(7, at(1, 14, 10), "image-controller becomes Healthy",
                 lambda: self.set_health("image-controller-prod-east-1", at(1, 14, 10),
                                         "Healthy")),
            Step(8, at(2, 9), "release fails to sync",
                 lambda: self.fail("release-prod-east-1", at(2, 9), 3)),
            Step(10, at(2, 10), "integration syncs a gitops-only change",
                 lambda: self.sync("integration-prod-east-1", at(2, 10), 4)),
            Step(12, at(2, 11), "release syncs again and succeeds",
                 lambda: self.sync("release-prod-east-1", at(2, 11), 5, 12)),
            Step(13, at(2, 11, 20), "incident ITN-2025-00102 opens in WebRCA",
                 lambda: self.incident("ITN-2025-00102", at(2, 11, 20),
                                       summary="Release pipeline failing", severity="critical")),
            Step(15, at(2, 13), "incident ITN-2025-00102 is resolved in WebRCA",
                 lambda: self.resolve("ITN-2025-00102", at(2, 13))),
            Step(17, at(3, 10), "build-service ships two syncs in quick succession "
                     f"({len(PULL_REQUESTS)} pull requests merged on day 2)",
                 lambda: self.rapid_syncs("build-service-prod-east-1")),
        ]


@dataclass(frozen=True)
class Step:
    """One moment of the script."""

    at: float
    """Seconds after the start of the timeline (scaled by the pace)."""
    when: datetime
    """The script's time of the writes."""
    text: str
    action: Callable[[], object]
    after_deployments: int = 0
    """Deployments DevLake must have accepted before this step plays."""


NOT_SENT = (
    "build-service on prod-west-1: the revision already deployed on prod-east-1, "
    "deduplicated across clusters",
    "image-controller while Progressing: held until it became Healthy, then sent once",
    "monitoring-prod-east-1: component monitoring is in components_to_ignore",
)

EXPECTED_DEPLOYMENTS = 7
EXPECTED_PER_CONNECTION = {1: 7, 2: 4, 3: 2}
"""Deployments each connection receives: every one globally, each team its components'."""
INCIDENTS = ("ITN-2025-00101", "ITN-2025-00102")
INCIDENT_CONNECTIONS = (1, 3)  # global and team-release (product konflux)

MEDIANS = (
    "Medians are DevLake's: the lower median (of an even number of values, the smaller "
    "middle one, not the average of the two)."
)
MODELLED = (
    "Modelled: what DevLake's DORA dashboard would show for these records; a real DevLake "
    "also needs a GitHub connection in each project for lead time."
)


def _when(value: object) -> str:
    """A DevLake date as ``YYYY-MM-DD HH:MM`` (UTC), or empty."""
    moment = parse_devlake_date(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else ""


def _minutes(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value} min"
    return f"{value} min ({value // 60}h{value % 60:02d})"


def _failures(numbers: ProjectNumbers) -> int:
    """Deployments with an incident linked (the rate's numerator)."""
    return round((numbers.change_failure_rate or 0) * numbers.deployments)


def dora_json(numbers: ProjectNumbers) -> dict[str, Any]:
    """The four numbers of one project, for ``--json``."""
    return {
        "kind": "dora", "project": numbers.project, "deployments": numbers.deployments,
        "deployment_days": numbers.deployment_days,
        "median_lead_time_minutes": numbers.median_lead_time_minutes,
        "lead_times_minutes": numbers.lead_times_minutes,
        "change_failure_rate": numbers.change_failure_rate,
        "deployments_with_incident": _failures(numbers), "incidents": numbers.incidents,
        "median_time_to_restore_minutes": numbers.time_to_restore_minutes,
        "median_failed_deployment_recovery_minutes": numbers.failed_deployment_recovery_minutes,
        "modelled": True, "warnings": numbers.warnings,
    }


class Reporter:
    """Prints what DevLake accepted: a table line per record and target, or JSON lines."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.seen = 0
        self.started = time.monotonic()
        self.deployments: dict[str, dict[str, Any]] = {}
        self.incidents: dict[str, dict[str, Any]] = {}

    def has_deployments(self, count: int) -> bool:
        return len(self.deployments) >= count

    def note(self, when: datetime, text: str) -> None:
        if not self.as_json:
            print(f"{self._clock()}  > {when:%Y-%m-%d %H:%M}  {text}", file=self.out, flush=True)

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
            # a team's copy is sent as "<id>@<team>" (devlake/target_ids.py: target_deployment_id)
            deployment_id = str(body.get("id")).removesuffix(f"{TARGET_SEPARATOR}{target}")
            record = self.deployments.setdefault(deployment_id, {"targets": [], **body})
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
        print("\nSummary (times UTC)", file=self.out)
        print(f"  {'component':<17} {'cluster':<12} {'result':<8} {'revision':<8} "
              f"{'deployed':<16} {'commits':>7}  targets", file=self.out)
        for record in self.deployments.values():
            title = str(record.get("displayTitle", ""))
            print(f"  {_title_field(title, 'Component'):<17} "
                  f"{_title_field(title, 'Cluster'):<12} {record.get('result', ''):<8} "
                  f"{_title_field(title, 'Revision')[:8]:<8} "
                  f"{_when(record.get('finishedDate')):<16} "
                  f"{len(record.get('deploymentCommits', [])):>7}  "
                  f"{', '.join(_targets(record['targets']))}", file=self.out)
        print(f"\n  {'incident':<17} {'status':<8} {'opened':<16} {'resolved':<16}  targets",
              file=self.out)
        for key, incident in self.incidents.items():
            print(f"  {key:<17} {incident.get('status', ''):<8} "
                  f"{_when(incident.get('createdDate')):<16} "
                  f"{_when(incident.get('resolutionDate')) or '-':<16}  "
                  f"{', '.join(_targets(incident['targets']))}", file=self.out)
        print("\nNot sent, on purpose", file=self.out)
        for line in NOT_SENT:
            print(f"  {line}", file=self.out)
        print(f"\n{len(self.deployments)} deployments and {len(self.incidents)} incidents "
              f"forwarded in {took:.1f}s; store: {store}.", file=self.out, flush=True)

    def dora(self, projects: list[ProjectNumbers]) -> None:
        """The dashboard's four numbers per project: a table, or one JSON line each."""
        if self.as_json:
            for numbers in projects:
                print(json.dumps(dora_json(numbers)), file=self.out, flush=True)
            return
        print("\nDORA numbers per DevLake project (whole period)", file=self.out)
        print(f"  {'project':<13} {'deployments':>11} {'days':>4}  "
              f"{'median lead time':<26} {'change failure rate':<19}  "
              f"{'time to restore':<15}  failed deployment recovery", file=self.out)
        for n in projects:
            rate = ("-" if n.change_failure_rate is None
                    else f"{_failures(n)}/{n.deployments} = {n.change_failure_rate:.0%}")
            lead = _minutes(n.median_lead_time_minutes)
            if n.lead_times_minutes:
                lead += f", {len(n.lead_times_minutes)} PRs"
            print(f"  {n.project:<13} {n.deployments:>11} {n.deployment_days:>4}  "
                  f"{lead:<26} {rate:<19}  {_minutes(n.time_to_restore_minutes):<15}  "
                  f"{_minutes(n.failed_deployment_recovery_minutes)}", file=self.out)
        for n in projects:
            for warning in n.warnings:
                print(f"  {n.project}: {warning}", file=self.out)
        for line in self.counting_notes(projects):
            print(f"  {line}", file=self.out)
        print(f"  {MEDIANS}", file=self.out)
        print(f"  {MODELLED}", file=self.out, flush=True)

    def counting_notes(self, projects: list[ProjectNumbers]) -> list[str]:
        """Why a project counts fewer deployments than were forwarded to it: DORA counts
        SUCCESS deployments only, and a failed sync is sent as a FAILURE one."""
        notes = []
        for n in projects:
            sent = [r for r in self.deployments.values() if n.project in r["targets"]]
            failed = [r for r in sent if r.get("result") != "SUCCESS"]
            if len(sent) != n.deployments and failed:
                which = ", ".join(sorted({_title_field(str(r.get("displayTitle", "")),
                                                       "Component") for r in failed}))
                one = len(failed) == 1
                notes.append(
                    f"{n.project}: {len(sent)} deployments forwarded, {n.deployments} counted: "
                    f"the {len(failed)} FAILURE ({which}: "
                    f"{'the failed sync) is' if one else 'failed syncs) are'} sent for the "
                    "record and left out by DORA, which counts SUCCESS deployments only")
        return notes


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
                "argocd": {"known_clusters": CLUSTERS, "components_to_ignore": list(IGNORED)},
                "webrca": {"interval": "1s", "products": ["konflux"]},
                "integration": {"devlake": {"teams": TEAMS}},
            })
            daemon = Daemon(config, redis=redis_client)
            task = asyncio.create_task(daemon.run())
            delivered = False
            try:
                # Each scripted sync must find its app's baseline already stored: a sync
                # the daemon first sees already done is its baseline, never a deployment
                # (detect.py: first sight). Readiness alone is not that: "argocd" is not
                # even declared until the source starts, and a listed app is not yet decided.
                if not await _until(partial(_baselined, daemon, scenario), 30):
                    print("demo: the daemon did not record the applications' baselines "
                          "within 30s", file=sys.stderr, flush=True)
                    return 1
                reporter.header()

                def poll() -> None:
                    reporter.take(world.devlake.accepted())

                begin = time.monotonic()
                for step in scenario.timeline():
                    await _until(lambda: False, begin + step.at * pace - time.monotonic(), poll)
                    if not await _until(partial(reporter.has_deployments,
                                                step.after_deployments), 30, poll):
                        print(f"demo: step {step.at:g} waits for {step.after_deployments} "
                              "deployment(s) in DevLake, not there within 30s",
                              file=sys.stderr, flush=True)
                        return 1
                    reporter.note(step.when, step.text)
                    step.action()
                delivered = await _until(lambda: _delivered(world), 30, poll)
            finally:
                daemon.request_stop()
                await asyncio.wait_for(task, 20)
            reporter.summary(store, time.monotonic() - started)
            model = DoraModel(world.devlake, world.github)
            reporter.dora([model.project(name) for name in world.devlake.project_names()])
    return 0 if delivered else 1


async def _baselined(daemon: Daemon, scenario: Scenario) -> bool:
    """Whether the daemon stored the state of every scripted app it forwards.

    The ignored component's app gets no state (nothing is decided for it).
    """
    keys = daemon.context.keys
    names = [keys.app_state(app.namespace, app.name) for app in scenario.apps.values()
             if not app.name.startswith(tuple(IGNORED))]
    try:
        return bool(await daemon.context.redis.exists(*names) == len(names))
    except (RedisError, OSError):
        return False  # the store is still starting


def _delivered(world: FakeWorld) -> bool:
    """Every deployment in every connection it belongs to, both incidents resolved in each."""
    devlake = world.devlake
    return (all(len(devlake.deployment_ids(connection)) >= count
                for connection, count in EXPECTED_PER_CONNECTION.items())
            and all((devlake.issue(connection, key) or {}).get("status") == "DONE"
                    for connection in INCIDENT_CONNECTIONS for key in INCIDENTS))
