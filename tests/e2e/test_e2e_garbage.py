"""Scenarios 6 and 7: garbage in the inputs, and secrets in the logs.

6. A thousand malformed Application objects and malformed WebRCA pages are
   mixed into a normal run: the normal records all arrive, the process never
   dies, and an application repaired after being malformed is followed.
7. A run at debug level through authentication failures of every API: no
   secret value appears in any log line (every scenario's logs are checked
   too, by the ``daemons`` fixture).
"""

from __future__ import annotations

import itertools
import time
from typing import Any, get_args

import redis

from doraforwarder.testing.argocd_objects import LiveApp, source
from doraforwarder.testing.fake_webrca import PageFault
from doraforwarder.testing.world import FakeWorld
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import (
    CLUSTERS,
    GITOPS_URL,
    NAMESPACES,
    DaemonProcess,
    Estate,
    base_overrides,
    verify,
    wait_baselined,
    wait_delivered,
    wait_for,
)

MALFORMED = 1000


def _break(obj: dict[str, Any], variant: int) -> dict[str, Any]:
    """One of many ways an Application can be wrong (by hand, by a bad controller, ...)."""
    status = obj["status"]
    match variant % 14:
        case 0:
            del obj["status"]
        case 1:
            obj["status"] = "Synced, trust me"
        case 2:
            status["history"] = "not a list"
        case 3:
            status["history"][-1]["id"] = "seven"
        case 4:
            status["history"][-1]["deployedAt"] = "yesterday-ish"
        case 5:
            status["summary"]["images"] = 42
        case 6:
            del obj["spec"]
        case 7:
            obj["metadata"]["annotations"] = ["not", "a", "mapping"]
        case 8:
            status["operationState"]["phase"] = 123
            status["operationState"]["finishedAt"] = "not a date"
        case 9:
            obj["spec"]["source"] = "a string"
        case 10:
            status["history"] = ["entry", None, 3]
        case 11:
            status["health"] = ["Healthy"]
        case 12:
            status["history"][-1]["revision"] = {"sha": "abc"}
        case _:
            obj["spec"]["destination"] = None
            status["sync"] = 7
    return obj


def test_malformed_applications_and_pages_never_stop_the_normal_records(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    estate = Estate(world, seed=6)
    repaired = [
        LiveApp(f"svc11-fixed{n}-{CLUSTERS[n % 4]}", NAMESPACES[n % 3],
                sources=[source("components/svc11/production", GITOPS_URL)])
        for n in range(3)
    ]
    world.kube.apply_all([_break(app.snapshot(), 2) for app in repaired])
    daemon = daemons(base_overrides())
    daemon.wait_ready()
    wait_baselined(store, estate)
    page_faults = itertools.cycle(get_args(PageFault))
    junk = 0
    for n in range(150):
        estate.sync()
        batch = []
        for _ in range(MALFORMED // 150 + 1):
            if junk < MALFORMED:
                live = LiveApp(f"junk{junk}-{CLUSTERS[junk % 4]}", NAMESPACES[junk % 3])
                batch.append(_break(live.snapshot(), junk))
                junk += 1
        world.kube.apply_all(batch)
        if n % 10 == 0:
            estate.incident_step()
            world.webrca.malform_page(1, next(page_faults), times=2)
        if n == 100:  # the broken apps are fixed, then synced: followed from there
            world.kube.apply_all([app.snapshot() for app in repaired])
            for app in repaired:
                world.kube.apply_all(app.sync(world.github.add_commits("example/gitops", 1)[0]))
        time.sleep(0.02)
    assert junk == MALFORMED
    wait_delivered(world, estate, store)
    repaired_ids = {i for i in world.devlake.deployment_ids(1)
                    if i.startswith("svc11-fixed")}
    assert len(repaired_ids) == len(repaired), \
        f"repaired apps not followed: got {sorted(repaired_ids)}"
    assert daemon.alive, "the daemon died on malformed input"
    _assert_never_crashed(daemon)
    malformed_logs = [line for line in daemon.lines()
                      if line.get("event") == "application skipped: malformed"]
    assert len(malformed_logs) >= 14, "malformed applications were not reported"
    assert daemon.terminate() == 0
    for record_id in repaired_ids:
        world.devlake.deployments.pop((1, record_id), None)  # known extras, checked above
    verify(world, estate)


def _assert_never_crashed(daemon: DaemonProcess) -> None:
    crashes = [line for line in daemon.lines() if line.get("event") == "service crashed, restarting"]
    assert not crashes, f"a service crashed: {crashes[:3]}"


def test_no_secret_reaches_any_log_line_even_at_debug_level(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    """Every API refuses the daemon's credentials for a while, at debug level."""
    estate = Estate(world, seed=7)
    devlake_token, github_token, kube_token = (
        world.devlake.token, world.github.token, world.kube.token)
    daemon = daemons(base_overrides(server={"log_level": "debug"}))
    daemon.wait_ready()
    wait_baselined(store, estate)
    world.devlake.set_token("another-devlake-token")     # 403: wrong API key
    world.github.token = "another-github-token"          # 401: bad credentials
    world.webrca.fail_token_requests(3, status=503)      # SSO trouble ...
    world.webrca.expire_all_tokens()                      # ... and expired access tokens
    for n in range(30):
        estate.sync(fail_allowed=False)
        if n % 5 == 0:
            estate.incident_step()
        if n == 10:
            world.kube.token = "another-kube-token"      # 401 from the API server
            world.kube.drop_watches()
        if n == 15:
            wait_for(lambda: world.kube.requests["unauthorized"] >= 1, 10,
                     lambda: "the watch never came back to meet the API server's 401")
            world.kube.token = kube_token
        time.sleep(0.05)
    wait_for(lambda: bool(world.devlake.posts(status=403)), 20,
             lambda: "the daemon never met DevLake's 403")
    world.devlake.set_token(devlake_token)
    world.github.token = github_token
    wait_delivered(world, estate, store, timeout=90)
    assert daemon.terminate() == 0
    verify(world, estate)
    text = daemon.text()
    assert '"level": "debug"' in text or '"level":"debug"' in text, "debug logging was not on"
    for secret in world.secrets:
        assert secret not in text, "a secret reached the logs"
    assert world.github.count(status=401) >= 1, "GitHub's 401 was never met"


def test_github_rejecting_the_token_for_a_while_loses_no_commit(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    estate = Estate(world, seed=8)
    github_token = world.github.token
    daemon = daemons(base_overrides())
    daemon.wait_ready()
    wait_baselined(store, estate)
    world.github.token = "a-revoked-token"
    for _ in range(5):
        estate.sync(bump=True)
    wait_for(lambda: world.github.count(status=401) >= 10, 30,  # two look-ups per sync
             lambda: "GitHub's 401 was not met for every sync")
    world.github.token = github_token
    wait_delivered(world, estate, store)
    assert daemon.terminate() == 0
    verify(world, estate)
