"""The end-to-end harness: the real daemon process, a scripted estate, and the verdict.

- :class:`DaemonProcess` runs ``python -m doraforwarder run`` as production
  does (its own process, JSON logs to files) and can SIGKILL or SIGTERM it.
- :class:`Estate` plays ArgoCD and WebRCA: 50 applications over namespaces,
  clusters and teams, syncs with fresh gitops commits and image bumps, failed
  operations, incidents opened and resolved. Every action records what DevLake
  must end up holding (:class:`Expected`).
- :func:`verify` compares DevLake's final state with those expectations and
  names every missing, unexpected or wrong record.

Waits poll DevLake's fake and Redis with a bounded deadline; a timeout says
exactly what is still missing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import redis

from doraforwarder.argocd.detect import deployment_id
from doraforwarder.argocd.model import parse_time
from doraforwarder.devlake.target_ids import target_deployment_id
from doraforwarder.keys import DEPLOYMENTS_GROUP, Keys
from doraforwarder.testing.argocd_objects import LiveApp, source
from doraforwarder.testing.fake_devlake_bodies import parse_devlake_date
from doraforwarder.testing.world import FakeWorld

CLUSTERS = ("prod-east-1", "prod-west-1", "prod-eu-1", "prod-ap-1")
NAMESPACES = ("argocd", "argocd-apps", "argocd-infra")
GITOPS_REPO = "example/gitops"
GITOPS_URL = f"https://github.com/{GITOPS_REPO}"
GLOBAL = 1
CONNECTIONS = {GLOBAL: "global", 2: "team-a", 3: "team-b", 4: "team-c"}
TEAMS: list[dict[str, Any]] = [
    {"name": "team-a", "project_id": "2",
     "argocd_components": ["svc00", "svc01", "svc02", "svc03"],
     "webrca_products": ["konflux"]},
    {"name": "team-b", "project_id": "3",
     "argocd_components": ["svc00", "svc04", "svc05", "svc06", "svc07"]},
    {"name": "team-c", "connection_name": "team-c",
     "argocd_components": ["svc08", "svc09", "svc10"],
     "webrca_products": ["rhtap"]},
]
TEAM_CONNECTIONS = {"team-a": 2, "team-b": 3, "team-c": 4}
IMAGE_COMMITS = 60
"""Commits in each component repository (images are tagged with them)."""
FIRST_IMAGE = 5
KEY_PREFIX = "dora-metrics"


def sent_id(connection: int, deployment_id: str) -> str:
    """The id ``connection``'s copy of a deployment has: the global one keeps the
    deployment's id, a team's names the team (devlake/target_ids.py: target_deployment_id)."""
    team = None if connection == GLOBAL else CONNECTIONS[connection]
    return target_deployment_id(deployment_id, team)


def connections_of_component(component: str) -> set[int]:
    teams = {TEAM_CONNECTIONS[t["name"]] for t in TEAMS if component in t["argocd_components"]}
    return {GLOBAL, *teams}


def connections_of_products(products: Iterable[str]) -> set[int]:
    wanted = set(products)
    teams = {TEAM_CONNECTIONS[t["name"]] for t in TEAMS
             if wanted & set(t.get("webrca_products", []))}
    return {GLOBAL, *teams}


def base_overrides(**sections: dict[str, Any]) -> dict[str, Any]:
    """The configuration every scenario starts from: short intervals, this estate's layout."""
    components = sorted({app_component(i) for i in range(50)})
    overrides: dict[str, Any] = {
        "server": {"shutdown_timeout": "5s"},
        "argocd": {
            "namespaces": list(NAMESPACES),
            "known_clusters": list(CLUSTERS),
            "health_timeout": "3s",
            "watch_timeout": "20s",
            "workers": 4,
        },
        "github": {
            "image_repositories": [
                {"prefix": f"quay.io/example/{c}", "repo": f"https://github.com/example/{c}"}
                for c in components
            ],
            "timeout_seconds": 5,
        },
        "webrca": {"interval": "1s", "timeout_seconds": 5},
        # These scenarios check every commit of each image range: the range rows.
        "integration": {"devlake": {"teams": TEAMS, "timeout_seconds": 5,
                                    "deployment_commits": "range"}},
        "delivery": {"initial_backoff": "100ms", "max_backoff": "1s", "claim_idle": "2s",
                     "workers": 4},
    }
    for name, section in sections.items():
        overrides[name] = {**overrides.get(name, {}), **section}
    return overrides


def app_component(index: int) -> str:
    return f"svc{index // 4:02d}"


# --- the daemon process -------------------------------------------------------------


class DaemonProcess:
    """One ``doraforwarder run`` process; every start appends to its own log files."""

    def __init__(self, config: Path, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.config = config
        self.env = env
        self.log_dir = log_dir
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.logs: list[Path] = []

    def start(self) -> DaemonProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        out = self.log_dir / f"{self.name}-{self.starts}.stdout"
        err = self.log_dir / f"{self.name}-{self.starts}.stderr"
        self.logs += [out, err]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "doraforwarder", "run", "--config", str(self.config),
                 "--log-format", "json"],
                stdout=stdout, stderr=stderr, env=self.env,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM")

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    # --- what it says -----------------------------------------------------------------
    def lines(self) -> list[dict[str, Any]]:
        """Every JSON log line of every start (stdout and stderr)."""
        found: list[dict[str, Any]] = []
        for path in self.logs:
            if not path.exists():
                continue
            for raw in path.read_text(errors="replace").splitlines():
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(parsed, dict):
                    found.append(parsed)
        return found

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def port(self) -> int | None:
        """The HTTP port of the current start (from its ``http listening`` line)."""
        if not self.logs:
            return None
        for path in self.logs[-2:]:
            if not path.exists():
                continue
            for raw in path.read_text(errors="replace").splitlines():
                if "http listening" in raw:
                    try:
                        return int(json.loads(raw)["port"])
                    except (ValueError, KeyError, TypeError):
                        continue
        return None

    def ready(self) -> bool:
        port = self.port()
        if port is None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        def check() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited while starting:\n{self.text()[-3000:]}")
            return self.ready()

        wait_for(check, timeout, lambda: f"{self.name} /readyz never answered 200 "
                                         f"(log tail: {self.text()[-1500:]})")


# --- waiting ------------------------------------------------------------------------


def wait_for(check: Callable[[], bool], timeout: float, missing: Callable[[], str],
             interval: float = 0.1) -> None:
    """Poll ``check`` until true; on timeout fail with what ``missing`` says is still absent."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {missing()}")
        time.sleep(interval)


# --- expectations -------------------------------------------------------------------

Commit = tuple[str, str]
"""(repository URL, SHA)."""
CommitCheck = Literal["exact", "ranges", "gitops"]


@dataclass
class Expected:
    """One deployment DevLake must hold in each of ``connections``."""

    id: str
    app: str
    component: str
    revision: str
    result: str
    started: datetime
    finished: datetime
    connections: set[int]
    gitops_commit: Commit
    image_commits: list[Commit]
    required: bool = True
    """False for a failed attempt that a crash may legitimately hide (ArgoCD keeps no
    record of a failed operation once a newer one runs)."""


@dataclass
class ExpectedIncident:
    key: str
    products: list[str]
    status: str = "IN_PROGRESS"
    resolved: bool = False

    @property
    def connections(self) -> set[int]:
        return connections_of_products(self.products)


@dataclass
class AppPlay:
    live: LiveApp
    component: str
    image_index: int
    history: list[Expected] = field(default_factory=list)


class Estate:
    """50 applications (3 namespaces, 4 clusters, 3 teams) and incidents, scripted."""

    def __init__(self, world: FakeWorld, seed: int, *, apps: int = 50) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.apps: list[AppPlay] = []
        self.repos: dict[str, list[str]] = {}
        self.expected: list[Expected] = []
        self.incidents: dict[str, ExpectedIncident] = {}
        self._incident_seq = 0
        github = world.github
        # GitHub dates have whole seconds; a gitops commit per hour stays in the past.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
        github.add_repo(GITOPS_REPO, 1, start=start - timedelta(days=30))
        initial_revision = github.add_commits(GITOPS_REPO, 1)[0]
        clock = datetime.now(UTC) - timedelta(days=1)
        for index in range(apps):
            component = app_component(index)
            if component not in self.repos:
                self.repos[component] = github.add_repo(
                    f"example/{component}", IMAGE_COMMITS, start=start,
                    step=timedelta(minutes=30))
            cluster = CLUSTERS[index % len(CLUSTERS)]
            live = LiveApp(
                f"{component}-{cluster}",
                NAMESPACES[index % len(NAMESPACES)],
                revision=initial_revision,
                images=[self._image(component, FIRST_IMAGE)],
                start=clock + timedelta(minutes=index),
                step=timedelta(seconds=7),
                sources=[source(f"components/{component}/production", GITOPS_URL)],
            )
            self.apps.append(AppPlay(live, component, FIRST_IMAGE))
        self.world.kube.apply_all([play.live.snapshot() for play in self.apps])

    def _image(self, component: str, index: int) -> str:
        return f"quay.io/example/{component}:{self.repos[component][index]}"

    # --- ArgoCD ---------------------------------------------------------------------
    def sync(self, *, fail_allowed: bool = True, degrade_allowed: bool = True,
             failures_required: bool = True, bump: bool = False,
             play: AppPlay | None = None) -> Expected:
        """One random action on one random app (or ``play``); returns what DevLake must show.

        ``bump``: a successful sync that ships new image commits, nothing else.
        """
        play = play or self.rng.choice(self.apps)
        roll = 0.2 if bump else self.rng.random()
        if fail_allowed and roll < 0.06:
            return self._fail(play, required=failures_required)
        revision = self.world.github.add_commits(GITOPS_REPO, 1)[0]
        image_commits: list[Commit] = []
        images: list[str] | None = None
        if roll < 0.45 and play.image_index < IMAGE_COMMITS - 3:
            new_index = play.image_index + self.rng.randint(1, 3)
            repo = f"https://github.com/example/{play.component}"
            image_commits = [(repo, s) for s in
                             self.repos[play.component][play.image_index + 1:new_index + 1]]
            play.image_index = new_index
            images = [self._image(play.component, new_index)]
        health = "Degraded" if degrade_allowed and 0.06 <= roll < 0.10 else "Healthy"
        self.world.kube.apply_all(play.live.sync(revision, images, health=health))
        entry = play.live.last_entry
        finished = parse_time(entry["deployedAt"])
        expected = Expected(
            id=deployment_id(play.component, revision, finished),
            app=play.live.name,
            component=play.component,
            revision=revision,
            result="FAILURE" if health == "Degraded" else "SUCCESS",
            started=parse_time(entry["deployStartedAt"]),
            finished=finished,
            connections=connections_of_component(play.component),
            gitops_commit=(GITOPS_URL, revision),
            image_commits=image_commits,
        )
        play.history.append(expected)
        self.expected.append(expected)
        return expected

    def _fail(self, play: AppPlay, *, required: bool) -> Expected:
        revision = self.world.github.add_commits(GITOPS_REPO, 1)[0]
        self.world.kube.apply_all(play.live.fail(revision))
        operation = play.live.status["operationState"]
        finished = parse_time(operation["finishedAt"])
        expected = Expected(
            id=deployment_id(play.component, revision, finished, failed=True),
            app=play.live.name,
            component=play.component,
            revision=revision,
            result="FAILURE",
            started=parse_time(operation["startedAt"]),
            finished=finished,
            connections=connections_of_component(play.component),
            gitops_commit=(GITOPS_URL, revision),
            image_commits=[],
            required=required,
        )
        self.expected.append(expected)
        return expected

    def refresh_some(self, count: int) -> None:
        """Refresh-only writes (most of a real cluster's traffic)."""
        self.world.kube.apply_all([self.rng.choice(self.apps).live.refresh()
                                   for _ in range(count)])

    # --- WebRCA ---------------------------------------------------------------------
    def incident_step(self) -> None:
        """Open a new incident, or resolve an open one."""
        webrca = self.world.webrca
        webrca.tick(self.rng.randint(5, 30))
        open_ones = [i for i in self.incidents.values() if not i.resolved]
        if open_ones and self.rng.random() < 0.5:
            incident = self.rng.choice(open_ones)
            webrca.resolve(incident.key)
            incident.resolved, incident.status = True, "DONE"
            return
        self._incident_seq += 1
        key = f"ITN-2025-{self._incident_seq:05d}"
        products = self.rng.choice([["konflux"], ["rhtap"], ["other"], ["konflux", "rhtap"]])
        webrca.add_incident(key, products=products, summary=f"Outage {key}")
        self.incidents[key] = ExpectedIncident(key, products)

    # --- the state to reach -------------------------------------------------------------
    def required(self) -> list[Expected]:
        return [e for e in self.expected if e.required]


# --- reading DevLake and Redis ------------------------------------------------------


def missing_records(world: FakeWorld, estate: Estate) -> list[str]:
    """What DevLake does not hold yet: ``connection/id`` of deployments and incidents."""
    devlake = world.devlake
    missing = []
    for expected in estate.required():
        for connection in sorted(expected.connections):
            if devlake.deployment(connection, sent_id(connection, expected.id)) is None:
                missing.append(f"deployment {connection}/{expected.id}")
    for incident in estate.incidents.values():
        for connection in sorted(incident.connections):
            issue = devlake.issue(connection, incident.key)
            if issue is None or issue.get("status") != incident.status:
                have = issue.get("status") if issue else "absent"
                missing.append(f"issue {connection}/{incident.key} ({incident.status}, has {have})")
    return missing


def pipeline_idle(client: redis.Redis, keys: Keys | None = None) -> bool:
    """Nothing detected waits for resolution and nothing waits for delivery."""
    keys = keys or Keys(KEY_PREFIX)
    try:
        if client.xlen(keys.outbox_stream):
            return False
        groups = client.xinfo_groups(keys.deployments_stream)
    except redis.ResponseError:
        return True  # no stream yet: nothing was ever detected
    for group in groups:
        if group["name"] in (DEPLOYMENTS_GROUP, b"resolvers") and (
                group["pending"] or group.get("lag")):
            return False
    return True


def wait_delivered(world: FakeWorld, estate: Estate, client: redis.Redis,
                   timeout: float = 60.0, keys: Keys | None = None) -> None:
    """Until every expected record is in DevLake and the daemon's queues are empty."""
    wait_for(lambda: not missing_records(world, estate), timeout,
             lambda: _describe_missing(missing_records(world, estate)))
    wait_for(lambda: pipeline_idle(client, keys), 20,
             lambda: "the daemon's deployment stream or outbox never drained")


def _describe_missing(missing: list[str]) -> str:
    shown = ", ".join(missing[:15])
    more = f" and {len(missing) - 15} more" if len(missing) > 15 else ""
    return f"{len(missing)} records missing in DevLake: {shown}{more}"


def wait_baselined(client: redis.Redis, estate: Estate, timeout: float = 30.0,
                   keys: Keys | None = None) -> None:
    """Until every application has its state in Redis (first sight committed)."""
    keys = keys or Keys(KEY_PREFIX)

    def absent() -> list[str]:
        pipe = client.pipeline(transaction=False)
        for play in estate.apps:
            pipe.exists(keys.app_state(play.live.namespace, play.live.name))
        return [play.live.name for play, found in zip(estate.apps, pipe.execute(), strict=True)
                if not found]

    wait_for(lambda: not absent(), timeout, lambda: f"no stored state yet for {absent()}")


# --- the verdict --------------------------------------------------------------------


def _date(value: object) -> datetime | None:
    parsed = parse_devlake_date(value)
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def verify(world: FakeWorld, estate: Estate, *, commits: CommitCheck = "exact") -> None:
    """DevLake holds exactly the expected records, with the right fields, where they belong.

    ``commits``: ``exact``, each deployment carries exactly its own commits;
    ``ranges`` (scenarios where the daemon may miss intermediate states, so an
    unsettled sync is superseded and its image range folds into the next one),
    each deployment's image commits come from its app's syncs up to it, and
    over an app every image commit is attributed exactly once; ``gitops``,
    only the gitops commit of each deployment is checked.
    """
    exact_commits = commits == "exact"
    devlake = world.devlake
    problems: list[str] = []
    for connection in CONNECTIONS:
        expected_by_id = {sent_id(connection, e.id): e for e in estate.expected}
        for record_id in sorted(devlake.deployment_ids(connection)):
            expected = expected_by_id.get(record_id)
            if expected is None:
                problems.append(f"unexpected deployment {connection}/{record_id}")
            elif connection not in expected.connections:
                problems.append(f"deployment {record_id} in connection {connection}, which "
                                f"should only have {sorted(expected.connections)}")
    problems += [f"missing {m}" for m in missing_records(world, estate)]
    for expected in estate.expected:
        for connection in sorted(expected.connections):
            body = devlake.deployment(connection, sent_id(connection, expected.id))
            if body is not None:
                problems += _check_deployment(expected, connection, body, exact_commits)
                if exact_commits:
                    problems += _check_commit_dates(world, expected, connection, body)
    if commits == "ranges":
        problems += _check_ranges(world, estate)
    for incident in estate.incidents.values():
        for connection in incident.connections:
            issue = devlake.issue(connection, incident.key)
            if issue is not None and incident.resolved and not issue.get("resolutionDate"):
                problems.append(f"issue {connection}/{incident.key} resolved without "
                                "resolutionDate")
    for connection in CONNECTIONS:
        known = {i.key for i in estate.incidents.values() if connection in i.connections}
        held = {key for (conn, key) in list(devlake.issues) if conn == connection}
        problems += [f"unexpected issue {connection}/{k}" for k in sorted(held - known)]
    assert not problems, f"{len(problems)} problems in DevLake's final state:\n" + \
        "\n".join(problems[:40])


def _check_deployment(expected: Expected, connection: int, body: dict[str, Any],
                      exact_commits: bool) -> list[str]:
    where = f"deployment {connection}/{expected.id}"
    problems = []
    allowed_results = {expected.result} if exact_commits else {expected.result, "SUCCESS"}
    if body.get("result") not in allowed_results:
        problems.append(f"{where}: result {body.get('result')}, expected {expected.result}")
    if _date(body.get("finishedDate")) != expected.finished:
        problems.append(f"{where}: finishedDate {body.get('finishedDate')}, "
                        f"expected {expected.finished.isoformat()}")
    if _date(body.get("startedDate")) != min(expected.started, expected.finished):
        problems.append(f"{where}: startedDate {body.get('startedDate')}, "
                        f"expected {expected.started.isoformat()}")
    if body.get("environment") != "PRODUCTION":
        problems.append(f"{where}: environment {body.get('environment')}")
    title = str(body.get("displayTitle", ""))
    if f"Component: {expected.component} |" not in title or expected.revision not in title:
        problems.append(f"{where}: displayTitle {title!r}")
    commits = [(c.get("repoUrl"), c.get("commitSha")) for c in body.get("deploymentCommits", [])]
    if expected.gitops_commit not in commits:
        problems.append(f"{where}: gitops commit {expected.gitops_commit[1]} missing")
    if len(commits) != len(set(commits)):
        problems.append(f"{where}: a commit listed twice")
    image_commits = [c for c in commits if c != expected.gitops_commit]
    if exact_commits and sorted(image_commits) != sorted(expected.image_commits):
        problems.append(f"{where}: image commits {[c[1][:8] for c in image_commits]}, "
                        f"expected {[c[1][:8] for c in expected.image_commits]}")
    for commit in body.get("deploymentCommits", []):
        if _date(commit.get("finishedDate")) != expected.finished:
            problems.append(f"{where}: commit {commit.get('commitSha')} finishedDate "
                            f"{commit.get('finishedDate')}")
            break
    return problems


def _check_commit_dates(world: FakeWorld, expected: Expected, connection: int,
                        body: dict[str, Any]) -> list[str]:
    """Each commit is dated by its author date in GitHub (capped at the deployment's end)."""
    for commit in body.get("deploymentCommits", []):
        repo = str(commit.get("repoUrl", "")).removeprefix("https://github.com/")
        try:
            known = world.github.commit(repo, str(commit.get("commitSha")))
        except KeyError:
            return [f"deployment {connection}/{expected.id}: commit {commit.get('commitSha')} "
                    f"unknown to GitHub in {repo}"]
        authored = known.author_date or known.committer_date
        if _date(commit.get("startedDate")) != min(authored, expected.finished):
            return [f"deployment {connection}/{expected.id}: commit {known.sha[:8]} "
                    f"startedDate {commit.get('startedDate')}, authored {authored.isoformat()}"]
    return []


def _check_ranges(world: FakeWorld, estate: Estate) -> list[str]:
    problems = []
    for play in estate.apps:
        attributed: list[Commit] = []
        allowed: set[Commit] = set()
        for expected in play.history:
            allowed.update(expected.image_commits)
            body = world.devlake.deployment(GLOBAL, expected.id)
            if body is None:
                continue
            for commit in body.get("deploymentCommits", []):
                pair = (commit.get("repoUrl"), commit.get("commitSha"))
                if pair == expected.gitops_commit:
                    continue
                if pair not in allowed:
                    problems.append(f"deployment {expected.id}: commit {pair} not shipped by "
                                    f"{play.live.name} up to this sync")
                attributed.append(pair)
        wanted = sorted(c for e in play.history for c in e.image_commits)
        if sorted(attributed) != wanted:
            problems.append(f"{play.live.name}: image commits attributed "
                            f"{len(attributed)} times, {len(wanted)} shipped")
    return problems


def no_secrets(world: FakeWorld, daemons: Iterable[DaemonProcess]) -> None:
    for daemon in daemons:
        for path in daemon.logs:
            if not path.exists():
                continue
            data = path.read_bytes()
            for secret in world.secrets:
                assert secret.encode() not in data, f"a secret leaked into {path.name}"
