"""Alertmanager's real webhooks into DevLake incidents, through the real daemon process.

A real Alertmanager (Debian's ``prometheus-alertmanager``) on loopback posts
to ``/api/v1/alertmanager`` of a ``doraforwarder run`` process. A critical
alert of component ``api`` fires, is re-sent every ``repeat_interval``, is
resolved while the daemon is stopped (Alertmanager retries until it is
back), then fires again and resolves: two incidents, each POSTed to DevLake
once per state and connection, and the DORA model shows the change failure
rate and time to restore of team-a's project. A warning alert (not matched)
never reaches DevLake.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from doraforwarder.keys import Keys
from doraforwarder.testing.argocd_objects import LiveApp, source
from doraforwarder.testing.dora import DoraModel
from doraforwarder.testing.http_fake import free_port
from doraforwarder.testing.world import FakeWorld
from tests.alertmanager_support import Alertmanager, binary
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import DaemonProcess, wait_for

pytestmark = pytest.mark.skipif(binary() is None,
                                reason="prometheus-alertmanager is not installed "
                                       "(apt-get install prometheus-alertmanager)")

CONNECTIONS = {1: "global", 2: "team-a"}
TEAMS = [{"name": "team-a", "project_id": "2", "argocd_components": ["api"]}]
TOKEN = "alertmanager-e2e-token-0000"
GITOPS = "https://github.com/org/gitops"
CRITICAL = {"alertname": "ApiDown", "severity": "critical", "component": "api"}
WARNING = {"alertname": "ApiSlow", "severity": "warning", "component": "api"}


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    with FakeWorld(tmp_path / "world", redis_appendonly=True, connections=CONNECTIONS) as world:
        for connection, name in CONNECTIONS.items():
            world.devlake.add_project(name, connections=[connection])
        yield world


def metric(daemon: DaemonProcess, name: str) -> float:
    port = daemon.port()
    if port is None:
        return 0.0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def am_metric(alertmanager: Alertmanager, name: str) -> float:
    with urllib.request.urlopen(f"{alertmanager.url}/metrics", timeout=2) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and 'integration="webhook"' in line)


ACCEPTED = 'doraforwarder_alertmanager_notifications_total{outcome="accepted"}'


def alert_issues(world: FakeWorld, connection: int) -> dict[str, dict[str, object]]:
    found = {}
    for key in {p.record_id for p in world.devlake.accepted("issue")
                if p.connection_id == connection and p.record_id}:
        issue = world.devlake.issue(connection, key)
        if issue is not None and key.startswith("alertmanager:"):
            found[key] = issue
    return found


def test_alertmanager_incidents_reach_devlake_once_through_a_restart(
        world: FakeWorld, store: redis.Redis, daemons: DaemonFactory, tmp_path: Path,
        clean_env: dict[str, str]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    gitops = world.github.add_repo("org/gitops", 4, start=now - timedelta(hours=5),
                                   step=timedelta(minutes=1))
    app = LiveApp("api-prod-east", revision=gitops[0], images=["quay.io/org/api:v1"],
                  start=now - timedelta(hours=3), sources=[source("components/api", GITOPS)])
    world.kube.apply(app.snapshot())
    port = free_port()
    clean_env["API_TOKENS"] = TOKEN
    daemon = daemons({
        "server": {"port": str(port)},
        "argocd": {"known_clusters": ["prod-east"]},
        "webrca": {"enabled": False},
        "alertmanager": {"enabled": True, "matchers": ['severity="critical"'],
                         "title": "{alertname}: {summary}"},
        "integration": {"devlake": {"teams": TEAMS}},
    })
    daemon.wait_ready()
    keys = Keys("dora-metrics")
    wait_for(lambda: bool(store.exists(keys.app_state("argocd", app.name))), 30,
             lambda: "app not baselined")
    for minutes, revision in ((120, 1), (90, 2)):   # two deployments of api
        app.now = now - timedelta(minutes=minutes, seconds=20)
        for step in app.sync(gitops[revision]):
            world.kube.apply(step)
    wait_for(lambda: len(world.devlake.deployment_ids(2)) == 2, 30,
             lambda: f"deployments: {world.devlake.deployment_ids(2)}")

    url = f"http://127.0.0.1:{port}/api/v1/alertmanager"
    refused = urllib.request.Request(url, data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        urllib.request.urlopen(refused, timeout=5)
    assert unauthorized.value.code == 401

    with Alertmanager(tmp_path / "alertmanager", url, token=TOKEN) as alertmanager:
        first = now - timedelta(minutes=60)
        alertmanager.post(CRITICAL, starts_at=first, annotations={"summary": "api answers 5xx"})
        alertmanager.post(WARNING, starts_at=first)
        wait_for(lambda: all(alert_issues(world, c) for c in (1, 2)), 30,
                 lambda: f"no open incident; alertmanager log: "
                         f"{alertmanager.log.read_text()[-1500:]}")
        opened = metric(daemon, ACCEPTED)
        wait_for(lambda: metric(daemon, ACCEPTED) >= opened + 4, 30,
                 lambda: "Alertmanager's repeats did not arrive")

        assert daemon.terminate() == 0
        failed = am_metric(alertmanager, "alertmanager_notifications_failed_total")
        alertmanager.post(CRITICAL, starts_at=first, ends_at=now - timedelta(minutes=30),
                          annotations={"summary": "api answers 5xx"})
        wait_for(lambda: am_metric(alertmanager, "alertmanager_notifications_failed_total")
                 > failed, 30, lambda: "Alertmanager never tried the stopped daemon")
        daemon.start()
        daemon.wait_ready()

        def resolved(count: int) -> bool:
            return all(sum(1 for issue in alert_issues(world, c).values()
                           if issue.get("status") == "DONE") == count for c in (1, 2))

        wait_for(lambda: resolved(1), 30, lambda: f"not resolved: {alert_issues(world, 1)}")
        second = now - timedelta(minutes=20)
        alertmanager.post(CRITICAL, starts_at=second, annotations={"summary": "api answers 5xx"})
        wait_for(lambda: all(len(alert_issues(world, c)) == 2 for c in (1, 2)), 30,
                 lambda: f"the re-fire is no new incident: {alert_issues(world, 1)}")
        alertmanager.post(CRITICAL, starts_at=second, ends_at=now - timedelta(minutes=10),
                          annotations={"summary": "api answers 5xx"})
        wait_for(lambda: resolved(2), 30, lambda: f"not resolved: {alert_issues(world, 1)}")
        settled = metric(daemon, ACCEPTED)
        wait_for(lambda: metric(daemon, ACCEPTED) >= settled + 2, 30,
                 lambda: "no later notification arrived")
    assert daemon.terminate() == 0

    for connection in (1, 2):
        issues = alert_issues(world, connection)
        assert sorted((i["createdDate"], i["resolutionDate"], i["title"], i["component"])
                      for i in issues.values()) == [
            (first.isoformat(), (now - timedelta(minutes=30)).isoformat(),
             "ApiDown: api answers 5xx", "api"),
            (second.isoformat(), (now - timedelta(minutes=10)).isoformat(),
             "ApiDown: api answers 5xx", "api"),
        ], issues
    posts = Counter((p.connection_id, p.record_id, p.body["status"])
                    for p in world.devlake.accepted("issue"))
    assert posts and set(posts.values()) == {1}, posts   # each state once per connection
    assert len(posts) == 8
    assert not [p for p in world.devlake.accepted("issue") if "ApiSlow" in str(p.body)]
    for project in ("team-a", "global"):
        numbers = DoraModel(world.devlake, world.github).project(project)
        assert numbers.deployments == 2, project
        assert numbers.incidents == 2, project
        assert numbers.change_failure_rate == 1 / 2, project
        assert numbers.time_to_restore_minutes == 10, project   # lower median of 30 and 10


def test_an_ha_pair_posting_to_two_replicas_gives_each_state_once(
        world: FakeWorld, daemons: DaemonFactory, tmp_path: Path,
        clean_env: dict[str, str]) -> None:
    """Two Alertmanagers (an HA pair, each notifying on its own) post every notification to
    two daemon processes on one Redis: DevLake still gets each incident state once."""
    clean_env["API_TOKENS"] = TOKEN
    ports = [free_port(), free_port()]
    replicas = [daemons({"server": {"port": str(port)}, "argocd": {"enabled": False},
                         "webrca": {"enabled": False},
                         "alertmanager": {"enabled": True, "incident_key": "fingerprint"},
                         "integration": {"devlake": {"teams": TEAMS}}}, name=f"replica-{i}")
                for i, port in enumerate(ports)]
    for replica in replicas:
        replica.wait_ready()
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(minutes=40), now - timedelta(minutes=15)
    pair = [Alertmanager(tmp_path / f"am-{i}", f"http://127.0.0.1:{port}/api/v1/alertmanager",
                         token=TOKEN) for i, port in enumerate(ports)]
    try:
        for am in pair:
            am.start()
        for am in pair:
            am.post(CRITICAL, starts_at=start)
        wait_for(lambda: all(alert_issues(world, c) for c in (1, 2)), 30,
                 lambda: "no incident")
        for am in pair:
            am.post(CRITICAL, starts_at=start, ends_at=end)
        wait_for(lambda: all(issue.get("status") == "DONE" for c in (1, 2)
                             for issue in alert_issues(world, c).values()), 30,
                 lambda: f"not resolved: {alert_issues(world, 1)}")
        served = [metric(r, ACCEPTED) for r in replicas]
        wait_for(lambda: all(metric(r, ACCEPTED) >= 2 for r in replicas), 30,
                 lambda: f"a replica got no notification: {served}")
    finally:
        for am in pair:
            am.close()
    for replica in replicas:
        assert replica.terminate() == 0
    posts = Counter((p.connection_id, p.record_id, p.body["status"])
                    for p in world.devlake.accepted("issue"))
    assert set(posts.values()) == {1} and len(posts) == 4, posts
    for connection in (1, 2):
        (issue,) = alert_issues(world, connection).values()
        assert issue["resolutionDate"] == end.isoformat()
