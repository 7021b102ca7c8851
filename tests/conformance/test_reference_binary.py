"""Side by side with the reference binary (redhat-appstudio/dora-metrics) the user names.

Opt-in: set ``DORAFORWARDER_REFERENCE_BIN`` to a ``dora-metrics`` server binary you built from
its repository (its Makefile's ``make build``), and ``DORAFORWARDER_REFERENCE_CONFIG`` to its
production ConfigMap's ``config.yaml`` (default: ``shared/reference/configs/`` beside this
checkout); ``openssl`` and ``redis-server`` must be on ``PATH``. Without them the module is skipped with one line. Nothing leaves the loopback (see
:mod:`tests.conformance.reference_world`).

Both run with the reference's production ConfigMap as ``configs/config.yaml`` in their
working directory (``webrca.interval`` shortened to 5 s, which the reference reads only from
the file), ours through the image's ``./main`` (``docker/main``), against the same fakes, on
the same scenario: syncs, a multi-cluster rollout, a failed sync, incidents of two products,
a restart of each. What each sends to DevLake is compared step by step: what matches must
match, and every difference must be one ``docs/migration.md`` names (ids, failed syncs,
incident statuses, the close call, what a restart loses or re-sends). The endpoints are
compared byte for byte where the shapes match, the inventory (JSON and TOON) with
``server.api_auth: openshift``. Then the switch: the reference runs and stops; we start on
its Redis and DevLake; a rollout it began and ``backfill`` count nothing twice.

It takes about four minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.conftest import UPSTREAM_REFERENCE_CONFIGS

BINARY = "DORAFORWARDER_REFERENCE_BIN"
CONFIG = "DORAFORWARDER_REFERENCE_CONFIG"
DEFAULT_CONFIG = UPSTREAM_REFERENCE_CONFIGS / "reference-config-production.yaml"
"""The reference's production ConfigMap, where this checkout's CI keeps it."""


def skip_reason(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    binary = env.get(BINARY, "")
    if not binary:
        return (f"side by side with the reference: set {BINARY} to a dora-metrics binary built "
                "from redhat-appstudio/dora-metrics (make build)")
    if not os.access(binary, os.X_OK):
        return f"side by side with the reference: {BINARY}={binary} is not an executable file"
    config = Path(env.get(CONFIG) or DEFAULT_CONFIG)
    if not config.is_file():
        return (f"side by side with the reference: set {CONFIG} to its production ConfigMap "
                f"(manifests/production/configmap.yaml's config.yaml); {config} is absent")
    missing = [tool for tool in ("openssl", "redis-server") if not shutil.which(tool)]
    if missing:
        return f"side by side with the reference: {' and '.join(missing)} not on PATH"
    return None


REASON = skip_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from doraforwarder.inventory import inventory_json  # noqa: E402
from doraforwarder.testing.argocd_objects import LiveApp, source  # noqa: E402
from tests.conformance.reference_world import (  # noqa: E402
    Fakes,
    Side,
    copy_launcher,
    settle,
    summary,
)
from tests.conftest import ROOT  # noqa: E402

REFERENCE_CONFIG = Path(os.environ.get(CONFIG) or DEFAULT_CONFIG)
GITOPS = "https://github.com/redhat-appstudio/infra-deployments"
LAUNCHER = ROOT / "docker" / "main"
VENV_PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"


def config_text() -> str:
    text = REFERENCE_CONFIG.read_text()
    assert '  interval: "1h"\n' in text
    return text.replace('  interval: "1h"\n', '  interval: "5s"\n')


class Scenario:
    """The fakes, the apps and both sides."""

    def __init__(self, directory: Path, *, clusters: tuple[str, ...], switch: bool) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)
        text = config_text()
        settings = yaml.safe_load(text)
        devlake = settings["integration"]["devlake"]
        teams = {c: team["project_id"] for team in devlake["teams"]
                 for c in team["argocd_components"]}
        known = settings["argocd"]["known_clusters"]
        assert {"build-service", "release"} <= set(teams), "the scenario's components"
        assert set(clusters) | {"kflux-ocp-p01"} <= set(known), "the scenario's clusters"
        self.team = {"build-service": int(teams["build-service"]),
                     "release": int(teams["release"])}
        self.fakes = Fakes(directory, self.now, urlsplit(devlake["base_url"]).hostname or "")
        github = self.fakes.github
        start = self.now - timedelta(days=3)
        self.gitops = github.add_repo("redhat-appstudio/infra-deployments", 8, start=start)
        self.build = github.add_repo("konflux-ci/build-service", 8, start=start)
        self.release = github.add_repo("konflux-ci/release-service", 8, start=start)
        self.apps: dict[str, LiveApp] = {}
        specs = [("build-service", cluster, "konflux-ci/build-service", self.build[0])
                 for cluster in clusters]
        specs += [("release", "kflux-ocp-p01", "konflux-ci/release-service", self.release[0]),
                  ("monitoring", "kflux-ocp-p01", "prometheus/prometheus", "v2.53.0")]
        for component, cluster, repo, tag in specs:
            name = f"{component}-{cluster}"
            live = LiveApp(name, "argocd", revision=self.gitops[0],
                           images=[f"quay.io/{repo}:{tag}"],
                           start=self.now - timedelta(hours=2), step=timedelta(seconds=20))
            live.obj["spec"]["source"] = source(
                f"components/{component}/production/{cluster}", repo_url=GITOPS)
            self.apps[name] = live
            self.fakes.kube.apply(live.snapshot())
        self.ref = Side("reference", [os.environ[BINARY]], directory / "reference", text,
                        self.fakes, kube_over_tls=True, path=VENV_PATH)
        self.ours = Side("doraforwarder", ["./main"], directory / "doraforwarder", text,
                         self.fakes, kube_over_tls=False, path=VENV_PATH,
                         share=self.ref if switch else None)
        copy_launcher(LAUNCHER, self.ours)

    def sync(self, app: str, revision: int, image: int | None = None) -> None:
        repo = self.build if app.startswith("build-service") else self.release
        images = None if image is None else [
            f"quay.io/konflux-ci/{'build-service' if repo is self.build else 'release-service'}"
            f":{repo[image]}"]
        self.fakes.kube.apply_all(self.apps[app].sync(self.gitops[revision], images))

    def close(self) -> None:
        for side in (self.ours, self.ref):
            side.close()
        self.fakes.close()


@pytest.fixture
def side_by_side(tmp_path: Path) -> Iterator[Scenario]:
    scenario = Scenario(tmp_path, clusters=("kflux-ocp-p01", "stone-prd-rh01"), switch=False)
    try:
        yield scenario
    finally:
        scenario.close()


def step(scenario: Scenario, **waits: float) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    sides = [scenario.ref, scenario.ours]
    settle(sides, **waits)
    return ([summary(p) for p in scenario.ref.new_posts()],
            [summary(p) for p in scenario.ours.new_posts()])


def deployments(posts: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    return {p for p in posts if p[0] == "deployment"}


def test_what_each_sends_and_answers(side_by_side: Scenario) -> None:
    s = side_by_side
    g = s.gitops
    for side in (s.ref, s.ours):
        side.start()
    assert step(s) == ([], []), "first sight: neither sends anything"

    s.sync("build-service-kflux-ocp-p01", 1, image=2)
    ref, ours = step(s)
    build, release = s.team["build-service"], s.team["release"]
    assert deployments(ref) == {("deployment", c, g[1], "SUCCESS", 2) for c in (1, build)}
    ids = {p[2] for p in ours}
    assert len(ids) == 1 and ids.pop().startswith(f"build-service:{g[1]}:"), ours  # named: ids
    assert {(p[1], p[3], p[4]) for p in ours} == {(1, "SUCCESS", 2), (build, "SUCCESS", 2)}

    s.sync("build-service-stone-prd-rh01", 1, image=2)
    assert step(s) == ([], []), "the rollout is one deployment for both"

    s.sync("release-kflux-ocp-p01", 2, image=3)
    s.sync("monitoring-kflux-ocp-p01", 2)
    ref, ours = step(s)
    assert {(p[1], p[3]) for p in ref} == {(p[1], p[3]) for p in ours} == {
        (1, "SUCCESS"), (release, "SUCCESS")}, "release to global and its team; monitoring ignored"

    s.fakes.kube.apply_all(s.apps["release-kflux-ocp-p01"].fail(g[3]))
    ref, ours = step(s)
    assert ref == []  # named: the reference never reports failed syncs
    assert {(p[1], p[3]) for p in ours} == {(1, "FAILURE"), (release, "FAILURE")}

    s.fakes.webrca.add_incident("ITN-1", products=["konflux"], summary="Builds stuck")
    s.fakes.webrca.add_incident("ITN-2", products=["openshift-ci"], summary="CI down")
    ref, ours = step(s, minimum=8)
    assert ref == [("issue", 1, "ITN-1", "TODO", "konflux", None)]
    assert ours == [("issue", 1, "ITN-1", "IN_PROGRESS", "konflux", None)]  # named: statuses

    s.fakes.webrca.tick(30)
    s.fakes.webrca.resolve("ITN-1")
    ref, ours = step(s, minimum=8)
    resolved = [p for p in ref if p[0] == "issue"]
    assert resolved and resolved == ours and resolved[0][3] == "DONE" and resolved[0][5]
    assert [p[0] for p in ref if p[0] != "issue"] == ["close"]  # named: close_resolved

    for side in (s.ref, s.ours):
        side.stop()
    s.sync("build-service-kflux-ocp-p01", 4, image=4)
    s.sync("build-service-kflux-ocp-p01", 5, image=5)
    for side in (s.ref, s.ours):
        side.start()
    ref, ours = step(s, minimum=10)
    assert [p[0] for p in ref] == ["issue"]  # named: incidents re-sent after a restart
    assert {(p[1], p[2].split(":")[1]) for p in ours} == {
        (c, g[r]) for c in (1, build) for r in (4, 5)}, "both syncs made while down"
    for live in s.apps.values():
        s.fakes.kube.apply(live.refresh())
    ref, ours = step(s, minimum=8)
    assert deployments(ref) == {("deployment", c, g[5], "SUCCESS", 2) for c in (1, build)}
    assert ours == []  # named: the reference sends only the last sync of a downtime
    assert not s.ref.proxy.refused and not s.ours.proxy.refused

    check_endpoints(s)


def get(side: Side, path: str, **headers: str) -> httpx.Response:
    return httpx.get(side.url + path, headers=headers, timeout=15)


def without(body: bytes, *fields: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(body)
    return {key: value for key, value in document.items() if key not in fields}


def check_endpoints(s: Scenario) -> None:
    for path in ("/", "/api/v1/health"):
        ref, ours = get(s.ref, path), get(s.ours, path)
        assert (ref.status_code, ref.headers["content-type"]) == (
            ours.status_code, ours.headers["content-type"])
        assert list(json.loads(ref.content)) == list(json.loads(ours.content)), path
        assert without(ref.content, "version", "timestamp", "uptime") == without(
            ours.content, "version", "timestamp", "uptime")
    for path in ("/nope", "/api/v1/argocd/nope"):
        ref, ours = get(s.ref, path), get(s.ours, path)
        assert (ref.status_code, ref.content) == (ours.status_code, ours.content)

    # The inventory with the reference's check: the same file plus `api_auth: openshift`.
    s.ours.stop()
    config = s.ours.dir / "configs" / "config.yaml"
    config.write_text(config.read_text().replace("server:\n", "server:\n  api_auth: openshift\n", 1))
    s.ours.start()
    for token in ("", "tok-alice", "tok-bob", "tok-unknown"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        ref = get(s.ref, "/api/v1/argocd/applications", **headers)
        ours = get(s.ours, "/api/v1/argocd/applications", **headers)
        assert ref.status_code == ours.status_code, token
        if ref.status_code != 200:
            assert ref.content == ours.content, token
            continue
        document = json.loads(ref.content)
        document["clusters"].sort(key=lambda cluster: cluster["cluster"])  # Go map order
        assert inventory_json(document) == ours.content
        ref_toon = get(s.ref, "/api/v1/argocd/applications.toon", **headers).text
        ours_toon = get(s.ours, "/api/v1/argocd/applications.toon", **headers).text
        assert toon_clusters(ref_toon) == toon_clusters(ours_toon)


def toon_clusters(text: str) -> tuple[str, frozenset[str], str]:
    """A TOON inventory as (header, the cluster blocks in any order, footer)."""
    lines = text.splitlines(keepends=True)
    header, footer = lines[0], lines[-1]
    blocks: list[str] = []
    for line in lines[1:-1]:
        if line.startswith("  - cluster: "):
            blocks.append("")
        blocks[-1] += line
    return header, frozenset(blocks), footer


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[Scenario]:
    scenario = Scenario(tmp_path, clusters=("kflux-ocp-p01", "stone-prd-rh01", "kflux-prd-rh02"),
                        switch=True)
    try:
        yield scenario
    finally:
        scenario.close()


def test_switch_on_the_references_redis_counts_nothing_twice(switch: Scenario) -> None:
    s = switch
    g = s.gitops
    s.ref.start()
    settle([s.ref])
    s.sync("build-service-kflux-ocp-p01", 1, image=2)
    settle([s.ref])
    s.ref.stop()
    s.sync("build-service-stone-prd-rh01", 1, image=2)
    s.sync("release-kflux-ocp-p01", 2, image=3)
    s.ours.start()
    settle([s.ours])
    s.sync("build-service-kflux-prd-rh02", 1, image=2)  # the rollout goes on after the switch
    settle([s.ours])
    since = min(datetime.fromisoformat(entry["deployedAt"]) for app in s.apps.values()
                for entry in app.status["history"][1:])
    backfill = [str(Path(sys.executable).parent / "doraforwarder"), "backfill", "--since",
                since.isoformat(), "--config", "configs/config.yaml", "--wait", "60"]
    first = subprocess.run(backfill, cwd=s.ours.dir, env=s.ours.env, capture_output=True,
                           text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert "3 already sent by the reference, 1 staged" in first.stdout, first.stdout
    again = subprocess.run(backfill, cwd=s.ours.dir, env=s.ours.env, capture_output=True,
                           text=True, timeout=180)
    assert "3 already sent by the reference, 1 already staged" in again.stdout, again.stdout
    settle([s.ours])
    records = {(c, i.split(":")[1] if ":" in i else i) for c, i in s.ref.devlake.deployments}
    build, release = s.team["build-service"], s.team["release"]
    assert records == {(1, g[1]), (build, g[1]), (1, g[2]), (release, g[2])}, records
    assert len(s.ref.devlake.deployments) == 4, "r1 once (the reference's), r2 once (ours)"
