"""The pure deployment decision, table-driven over realistic ArgoCD write sequences."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from doraforwarder.argocd.dedupe import apply_dedupe
from doraforwarder.argocd.deployment_records import history_deployments
from doraforwarder.argocd.detect import decide, dedupe_key, deployment_id, mark_deleted
from doraforwarder.argocd.model import parse_time
from doraforwarder.argocd.parse import parse_application
from doraforwarder.argocd.state import AppState
from doraforwarder.config import ArgoCDConfig
from doraforwarder.records import DetectedDeployment, GitSource
from doraforwarder.testing.argocd_objects import LiveApp, image, sha, source

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def run(objects: list[dict[str, Any]], config: ArgoCDConfig | None = None,
        state: AppState | None = None, times: list[datetime] | None = None,
        ) -> tuple[AppState | None, list[DetectedDeployment]]:
    """Feed snapshots through ``decide`` as the lanes do; return final state and records."""
    config = config or ArgoCDConfig(namespaces=["argocd"])
    produced: list[DetectedDeployment] = []
    for index, obj in enumerate(objects):
        now = times[index] if times else NOW
        decision = decide(parse_application(obj), state, config, now)
        produced.extend(decision.deployments)
        state = decision.state
    return state, produced


Scenario = Callable[[LiveApp], list[dict[str, Any]]]


def summary(records: list[DetectedDeployment]) -> list[tuple[Any, ...]]:
    return [(r.result, r.history_id, r.revision, r.images, r.previous_images, r.message)
            for r in records]


I0, I1, I2 = image("svc", "initial"), image("svc", "r1"), image("svc", "r2")

SCENARIOS: list[tuple[str, Scenario, list[tuple[Any, ...]]]] = [
    ("first sight only", lambda a: [a.snapshot(), a.refresh()], []),
    ("single healthy sync", lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1])],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy")]),
    ("not decided before the comparison after the operation",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1])[:3]], []),
    ("degraded", lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], health="Degraded")],
     [("FAILURE", 1, sha("r1"), [I1], [I0], "health Degraded")]),
    ("progressing waits", lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], health="Progressing")],
     []),
    ("suspended then healthy",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], health="Progressing"),
                a.set_health("Suspended"), a.set_health("Healthy")],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy")]),
    ("unknown health counts as healthy",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], health="Unknown")],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Unknown")]),
    ("two syncs back to back",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1]), *a.sync(sha("r2"), [I2])],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy"),
      ("SUCCESS", 2, sha("r2"), [I2], [I1], "health Healthy")]),
    ("superseded while progressing keeps its images",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], health="Progressing"),
                *a.sync(sha("r2"), [I2])],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "superseded by a newer sync before it settled"),
      ("SUCCESS", 2, sha("r2"), [I2], [I1], "health Healthy")]),
    ("only the final state seen (catch-up)",
     lambda a: [a.snapshot(), (a.sync(sha("r1"), [I1]), a.sync(sha("r2"), [I2]))[1][-1]],
     [("SUCCESS", 1, sha("r1"), [I0], [I0], "superseded by a newer sync before it settled"),
      ("SUCCESS", 2, sha("r2"), [I2], [I0], "health Healthy")]),
    ("re-sync of the same revision and images sends nothing",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1]), *a.sync(sha("r1"), [I1])],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy")]),
    ("failed operation, then success from the old baseline",
     lambda a: [a.snapshot(), *a.fail(sha("bad"), message="boom"), a.refresh(),
                *a.sync(sha("r1"), [I1])],
     [("FAILURE", None, sha("bad"), [I0], [I0], "boom"),
      ("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy")]),
    ("syncs then a failed operation, seen at once (a catch-up): in the order they happened",
     lambda a: [a.snapshot(), (a.sync(sha("r1"), [I1]), a.sync(sha("r2"), [I2]),
                               a.fail(sha("bad")))[-1][-1]],
     [("SUCCESS", 1, sha("r1"), [I0], [I0], "superseded by a newer sync before it settled"),
      ("SUCCESS", 2, sha("r2"), [I2], [I0], "a later sync operation failed before it settled"),
      ("FAILURE", None, sha("bad"), [I2], [I2], "one or more objects failed to apply")]),
    ("a pending sync is over once a later operation failed",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1])[:2], *a.fail(sha("bad"))],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "a later sync operation failed before it settled"),
      ("FAILURE", None, sha("bad"), [I1], [I1], "one or more objects failed to apply")]),
    ("errored operation",
     lambda a: [a.snapshot(), *a.fail(sha("bad"), phase="Error", message="")],
     [("FAILURE", None, sha("bad"), [I0], [I0], "sync operation Error")]),
    ("two failures at different times are two attempts",
     lambda a: [a.snapshot(), *a.fail(sha("bad")), *a.fail(sha("bad"))],
     [("FAILURE", None, sha("bad"), [I0], [I0], "one or more objects failed to apply")] * 2),
    ("failure already there at first sight is not sent",
     lambda a: [(a.fail(sha("bad")), a.snapshot())[1], a.refresh()], []),
    ("first sight during a running sync follows it",
     lambda a: (lambda steps: [steps[1], *steps[2:]])(a.sync(sha("r1"), [I1])),
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy")]),
    ("first sight of a drifted app is a baseline",
     lambda a: [(a.status["sync"].update(status="OutOfSync"), a.refresh())[1], a.refresh()], []),
    # settling: the operation and a comparison after it, whatever the sync status
    ("OutOfSync after a successful sync settles with the compared images",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], sync_status="OutOfSync")],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy")]),
    ("OutOfSync and progressing waits",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], health="Progressing",
                                      sync_status="OutOfSync")], []),
    ("OutOfSync then degraded", lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], health="Degraded",
                                                                 sync_status="OutOfSync")],
     [("FAILURE", 1, sha("r1"), [I1], [I0], "health Degraded")]),
    ("the next OutOfSync sync starts from the settled images",
     lambda a: [a.snapshot(), *a.sync(sha("r1"), [I1], sync_status="OutOfSync"),
                *a.sync(sha("r2"), [I2], sync_status="OutOfSync")],
     [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy"),
      ("SUCCESS", 2, sha("r2"), [I2], [I1], "health Healthy")]),
    # failed attempts: the resolved revision, retries once per finishedAt
    ("a failed sync of HEAD reports the resolved commit",
     lambda a: [a.snapshot(), *a.fail("HEAD", resolved=sha("bad"))],
     [("FAILURE", None, sha("bad"), [I0], [I0], "one or more objects failed to apply")]),
    ("a retried failure is one attempt per finishedAt, the final one too",
     lambda a: [a.snapshot(), *a.retrying_fail(sha("bad"), attempts=2)],
     [("FAILURE", None, sha("bad"), [I0], [I0],
       "one or more objects failed to apply. Retrying attempt #1 at 10:05AM."),
      ("FAILURE", None, sha("bad"), [I0], [I0],
       "one or more objects failed to apply. Retrying attempt #2 at 10:05AM."),
      ("FAILURE", None, sha("bad"), [I0], [I0],
       "one or more objects failed to apply (retried 2 times).")]),
    ("a retried failure seen again is not counted again",
     lambda a: (lambda first, steps: [first, *steps, steps[-1], a.refresh()])(
         a.snapshot(), a.retrying_fail(sha("bad"), attempts=1, final_phase=None)),
     [("FAILURE", None, sha("bad"), [I0], [I0],
       "one or more objects failed to apply. Retrying attempt #1 at 10:05AM.")]),
    ("a retry that then succeeds: one failure, one deployment",
     lambda a: [a.snapshot(), *a.retrying_fail(sha("r1"), attempts=1, final_phase=None),
                *a.sync(sha("r1"), [I1])],
     [("FAILURE", None, sha("r1"), [I0], [I0],
       "one or more objects failed to apply. Retrying attempt #1 at 10:05AM."),
      ("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy")]),
    ("the retry start (Running, no finishedAt) is not a failure",
     lambda a: [a.snapshot(), a.retrying_fail(sha("bad"), attempts=2, final_phase=None)[2]], []),
]


@pytest.mark.parametrize(("case", "scenario", "want"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenarios(case: str, scenario: Scenario, want: list[tuple[Any, ...]]) -> None:
    app = LiveApp("svc")
    _, records = run(scenario(app))
    assert summary(records) == want


def test_the_final_failure_with_the_retry_s_finished_at_is_the_same_attempt() -> None:
    app = LiveApp("svc")
    first = app.snapshot()
    retry = app.retrying_fail(sha("bad"), attempts=1, final_phase=None)[-1]
    final = copy.deepcopy(retry)
    final["status"]["operationState"].update(phase="Failed", message="failed (retried 1 times).")
    _, records = run([first, retry, final])
    assert [r.message for r in records] == [
        "one or more objects failed to apply. Retrying attempt #1 at 10:05AM."]


@pytest.mark.parametrize(("sync_result", "want"), [
    ({"revision": sha("resolved")}, sha("resolved")),
    (None, "main"),  # no syncResult: the requested revision is all there is
])
def test_failed_attempt_revision(sync_result: dict[str, Any] | None, want: str) -> None:
    app = LiveApp("svc")
    first = app.snapshot()
    steps = app.fail("main")
    if sync_result is None:
        del steps[-1]["status"]["operationState"]["syncResult"]
    else:
        steps[-1]["status"]["operationState"]["syncResult"] = sync_result
    _, [record] = run([first, *steps])
    assert record.revision == want and record.sources[0].revision == want
    assert record.id.split(":")[1] == want


def test_first_sight_during_running_sync_uses_previous_entry_as_baseline() -> None:
    app = LiveApp("svc")
    steps = app.sync(sha("r1"), [I1])
    state, records = run([steps[1]])
    assert records == []
    assert state is not None and state.baseline is not None
    assert state.baseline.history_id == 0 and [p.history_id for p in state.pending] == [1]


@pytest.mark.parametrize(("unsettled", "minutes", "want"), [
    ("SUCCESS", 9, []),
    ("SUCCESS", 11, [("SUCCESS", "health still Progressing after 0:10:00")]),
    ("FAILURE", 11, [("FAILURE", "health still Progressing after 0:10:00")]),
])
def test_health_timeout(unsettled: str, minutes: int, want: list[tuple[str, str]]) -> None:
    app = LiveApp("svc")
    config = ArgoCDConfig(namespaces=["argocd"], unsettled_result=unsettled)
    objects = [app.snapshot(), *app.sync(sha("r1"), [I1], health="Progressing")]
    times = [NOW] * len(objects)
    objects.append(app.snapshot())  # the deadline re-check decides with the last view
    times.append(NOW + timedelta(minutes=minutes))
    state, records = run(objects, config, times=times)
    assert [(r.result, r.message) for r in records] == want
    assert state is not None and len(state.pending) == (0 if want else 1)


def test_operation_that_never_settles_is_decided_at_the_deadline() -> None:
    app = LiveApp("svc")
    first = app.snapshot()
    steps = app.sync(sha("r1"), [I1])
    objects = [first, steps[1], steps[1]]
    times = [NOW, NOW, NOW + timedelta(minutes=11)]
    _, records = run(objects, times=times)
    assert [(r.result, r.images, r.message) for r in records] == [
        ("SUCCESS", [I0], "operation did not settle within 0:10:00")]


def test_multi_source_app() -> None:
    sources = [source("components/svc/production"),
               source("charts/svc", repo_url="https://github.com/example/charts")]
    app = LiveApp("svc", revision=[sha("a0"), sha("b0")], sources=sources)
    _, records = run([app.snapshot(), *app.sync([sha("a1"), sha("b1")], [I1])])
    [record] = records
    assert record.revision == sha("a1")
    assert record.sources == [
        GitSource(repo_url="https://github.com/example/gitops", revision=sha("a1"),
                  path="components/svc/production"),
        GitSource(repo_url="https://github.com/example/charts", revision=sha("b1"),
                  path="charts/svc"),
    ]


def test_full_record_of_a_sync() -> None:
    app = LiveApp("svc-east", path="components/svc/production")
    config = ArgoCDConfig(namespaces=["argocd"], known_clusters=["east"], dedupe_scope="cluster")
    _, [record] = run([app.snapshot(), *app.sync(sha("r1"), [I1])], config)
    entry = app.last_entry
    assert record == DetectedDeployment(
        id=f"svc:{sha('r1')}:{int(parse_time(entry['deployedAt']).timestamp())}:east",
        app_namespace="argocd", app_name="svc-east", component="svc", cluster="east",
        environment="PRODUCTION", result="SUCCESS", revision=sha("r1"),
        sources=[GitSource(repo_url="https://github.com/example/gitops", revision=sha("r1"),
                           path="components/svc/production")],
        history_id=1, started_at=parse_time(entry["deployStartedAt"]),
        deployed_at=parse_time(entry["deployedAt"]), images=[I1],
        previous_images=[image("svc-east", "initial")], message="health Healthy",
        detected_at=NOW,
    )


def test_skipped_app_forgets_its_state() -> None:
    app = LiveApp("svc")
    state, _ = run([app.snapshot()])
    config = ArgoCDConfig(namespaces=["argocd"], components_to_ignore=["svc"])
    decision = decide(parse_application(app.refresh()), state, config, NOW)
    assert decision.state is None and decision.changed
    assert decide(parse_application(app.refresh()), None, config, NOW).changed is False


def test_refresh_changes_nothing() -> None:
    app = LiveApp("svc")
    state, _ = run([app.snapshot()])
    decision = decide(parse_application(app.refresh()), state, ArgoCDConfig(namespaces=["argocd"]),
                      NOW)
    assert decision.changed is False and decision.deployments == []


def test_deleted_then_recreated() -> None:
    app = LiveApp("svc")
    state, _ = run([{**app.snapshot(), "metadata": {**app.obj["metadata"], "uid": "one"}}])
    deleted = mark_deleted(state, NOW, namespace="argocd", name="svc")
    assert deleted.changed and deleted.state is not None and deleted.state.deleted_at == NOW
    assert mark_deleted(deleted.state, NOW, namespace="argocd", name="svc").changed is False
    again = LiveApp("svc", start=NOW)
    again.obj["metadata"]["uid"] = "two"
    again.obj["status"]["history"] = []
    again.next_id = 0
    final, records = run([again.snapshot(), *again.sync(sha("r1"), [I1])], state=deleted.state)
    assert [(r.history_id, r.previous_images) for r in records] == [(0, [I0])]
    assert final is not None and final.deleted_at is None and final.uid == "two"


@pytest.mark.parametrize(("args", "kwargs", "want"), [
    (("svc", "abc", NOW), {}, "svc:abc:1735732800"),
    (("svc", "abc", NOW), {"cluster": "east"}, "svc:abc:1735732800:east"),
    (("svc", "abc", NOW), {"failed": True}, "svc:abc:1735732800:failed"),
    (("svc", "abc", NOW), {"cluster": "east", "failed": True}, "svc:abc:1735732800:east:failed"),
])
def test_deployment_id(args: tuple[Any, ...], kwargs: dict[str, Any], want: str) -> None:
    assert deployment_id(*args, **kwargs) == want


@pytest.mark.parametrize(("kwargs", "want"), [
    ({}, "svc:abc"),
    ({"cluster": "east"}, "svc:abc:east"),
    ({"failed": True}, "svc:abc:failed"),
])
def test_dedupe_key(kwargs: dict[str, Any], want: str) -> None:
    assert dedupe_key("svc", "abc", **kwargs) == want


def _record(app: str, cluster: str, revision: str = "r1", failed: bool = False,
            ) -> DetectedDeployment:
    return DetectedDeployment(
        id=f"svc:{revision}:1:{cluster}", app_namespace="argocd", app_name=app,
        component="svc", cluster=cluster, environment="PRODUCTION",
        result="FAILURE" if failed else "SUCCESS", revision=revision,
        history_id=None if failed else 1, started_at=NOW, deployed_at=NOW)


@pytest.mark.parametrize(("scope", "holders", "records", "kept"), [
    ("component", {}, [_record("svc-east", "east")], ["svc-east"]),
    ("component", {"svc:r1": "argocd/svc-west svc:r1:0"}, [_record("svc-east", "east")], []),
    ("component", {"svc:r1": "argocd/svc-east svc:r1:0"}, [_record("svc-east", "east")],
     ["svc-east"]),
    ("cluster", {"svc:r1:west": "argocd/svc-west x"}, [_record("svc-east", "east")],
     ["svc-east"]),
    ("component", {"svc:r1": "argocd/svc-west x"}, [_record("svc-east", "east", failed=True)],
     ["svc-east"]),
    ("component", {}, [_record("svc-east", "east"), _record("svc-east", "east", "r2")],
     ["svc-east", "svc-east"]),
])
def test_apply_dedupe(scope: str, holders: dict[str, str], records: list[DetectedDeployment],
                      kept: list[str]) -> None:
    config = ArgoCDConfig(namespaces=["argocd"], dedupe_scope=scope)
    outcome = apply_dedupe(records, holders, config)
    assert [r.app_name for r in outcome.kept] == kept
    assert len(outcome.claims) == len({(r.revision, r.history_id is None) for r in outcome.kept})


def test_history_deployments_use_the_live_ids() -> None:
    app = LiveApp("svc")
    objects = [app.snapshot(), *app.sync(sha("r1"), [I1]), *app.sync(sha("r2"), [I2])]
    _, live = run(objects)
    backfill = history_deployments(parse_application(app.snapshot()),
                                   ArgoCDConfig(namespaces=["argocd"]), NOW)
    assert [r.id for r in backfill][1:] == [r.id for r in live]
    assert backfill[-1].images == [I2] and backfill[0].images == []


# --- stale views: another replica (or this one before a restart) is ahead -----------------

StaleCase = Callable[[LiveApp], tuple[list[dict[str, Any]], dict[str, Any]]]
"""Builds (what the replica that is ahead decided, in order; the older view a lagging one has)."""


def _lagging_settled_view_of_sync_1(a: LiveApp) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    first, sync_1 = a.snapshot(), a.sync(sha("r1"), [I1])
    return [first, *sync_1, *a.sync(sha("r2"), [I2])[:2]], sync_1[-1]


def _lagging_healthy_view_after_a_newer_failure(
    a: LiveApp,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    first, progressing = a.snapshot(), a.sync(sha("r1"), [I1], health="Progressing")
    healthy = a.set_health("Healthy")  # the replica that is ahead skipped it (a re-list)
    return [first, *progressing, *a.fail(sha("bad"))], healthy


def _lagging_view_of_an_older_failure(a: LiveApp) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    first, older = a.snapshot(), a.fail(sha("bad"))
    return [first, *older, *a.fail(sha("worse"))], older[-1]


def _lagging_running_view_of_a_recorded_failure(
    a: LiveApp,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    first, failed = a.snapshot(), a.fail(sha("bad"))
    return [first, *failed], failed[0]


def _lagging_failure_view_under_a_newer_history(
    a: LiveApp,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    first, failed = a.snapshot(), a.fail(sha("bad"))
    return [first, *a.sync(sha("r1"), [I1])], failed[-1]  # ahead: the failure was skipped


def _lagging_running_view_of_a_decided_sync(
    a: LiveApp,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    first, sync_1 = a.snapshot(), a.sync(sha("r1"), [I1])
    return [first, *sync_1], sync_1[0]


def _lagging_progressing_view_after_degraded(
    a: LiveApp,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    first, progressing = a.snapshot(), a.sync(sha("r1"), [I1], health="Progressing")
    return [first, *progressing, a.set_health("Degraded")], progressing[-1]


def _lagging_view_of_the_deleted_predecessor(
    a: LiveApp,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    old = a.snapshot()
    old["metadata"].update(uid="one", creationTimestamp="2024-06-01T10:00:00Z")
    again = LiveApp("svc", start=NOW)
    again.obj["metadata"].update(uid="two", creationTimestamp="2025-01-01T11:00:00Z")
    return [again.snapshot(), *again.sync(sha("r1"), [I1], health="Progressing")], old


STALE: list[tuple[str, StaleCase, bool]] = [
    # (case, scenario, whether stale_reason recognises it; else it is a no-op by itself)
    ("a settled view of sync 1 after sync 2 was recorded",
     _lagging_settled_view_of_sync_1, True),
    ("a healthy view older than a failure recorded since",
     _lagging_healthy_view_after_a_newer_failure, True),
    ("a view of an older failure", _lagging_view_of_an_older_failure, True),
    ("the running view of a failure already recorded",
     _lagging_running_view_of_a_recorded_failure, True),
    ("a failure only a view older than the history shows",
     _lagging_failure_view_under_a_newer_history, True),
    ("the running view of a sync already decided", _lagging_running_view_of_a_decided_sync, True),
    ("a progressing view after the sync was decided degraded",
     _lagging_progressing_view_after_degraded, False),
    ("a view of the deleted predecessor after the re-creation",
     _lagging_view_of_the_deleted_predecessor, True),
]


@pytest.mark.parametrize(("case", "scenario", "recognised"), STALE, ids=[s[0] for s in STALE])
def test_a_view_older_than_the_stored_state_decides_nothing(
    case: str, scenario: StaleCase, recognised: bool
) -> None:
    ahead, old_view = scenario(LiveApp("svc"))
    stored, _ = run(ahead)
    assert stored is not None
    decision = decide(parse_application(old_view), stored, ArgoCDConfig(namespaces=["argocd"]),
                      NOW)
    assert decision.deployments == []
    assert decision.state == stored and not decision.changed
    assert decision.stale is recognised


def test_the_lagging_replica_of_the_e2e_suite() -> None:
    """Sync 2 pending with the old baseline must not be sent as 'superseded' by sync 1's view."""
    app = LiveApp("svc")
    first, sync_1 = app.snapshot(), app.sync(sha("r1"), [I1])
    stored, sent = run([first, *sync_1, app.sync(sha("r2"), [I2])[1]])
    assert stored is not None and [p.history_id for p in stored.pending] == [2]
    decision = decide(parse_application(sync_1[-1]), stored, ArgoCDConfig(namespaces=["argocd"]),
                      NOW)
    assert decision.deployments == [] and decision.state == stored
    assert "stale view ignored" in decision.reasons[0]
    assert summary(sent) == [("SUCCESS", 1, sha("r1"), [I1], [I0], "health Healthy")]


def _eventful_history(app: LiveApp) -> list[dict[str, Any]]:
    return [
        app.snapshot(), app.refresh(),
        *app.sync(sha("r1"), [I1]),
        *app.fail(sha("bad")),
        *app.sync(sha("r2"), [I2], health="Progressing"), app.set_health("Healthy"),
        *app.sync(sha("r3"), [I1], health="Progressing"),
        *app.sync(sha("r4"), [I2], health="Degraded"),
        *app.fail(sha("bad")), *app.fail(sha("worse"), phase="Error"),
        *app.sync(sha("r4"), [I2]), app.refresh(),
    ]


def test_no_older_view_ever_moves_the_state_or_sends_anything() -> None:
    """Every view j < k decided against the state after view k: nothing happens."""
    config = ArgoCDConfig(namespaces=["argocd"])
    views = [parse_application(obj) for obj in _eventful_history(LiveApp("svc"))]
    states: list[AppState] = []
    state: AppState | None = None
    for view in views:
        state = decide(view, state, config, NOW).state
        assert state is not None
        states.append(state)
    for k, after in enumerate(states):
        for j in range(k):
            decision = decide(views[j], after, config, NOW)
            assert decision.deployments == [], (j, k, decision.reasons)
            assert decision.state == after, (j, k, decision.reasons)


def test_the_deletion_of_a_predecessor_seen_late_keeps_the_successor() -> None:
    app = LiveApp("svc")
    app.obj["metadata"]["uid"] = "two"
    state, _ = run([app.snapshot()])
    late = mark_deleted(state, NOW, uid="one", namespace="argocd", name="svc")
    assert late.state == state and not late.changed and late.stale
    assert mark_deleted(state, NOW, uid="two", namespace="argocd", name="svc").changed
    # absent from a re-list: no uid to compare
    assert mark_deleted(state, NOW, namespace="argocd", name="svc").changed


# --- when a sync started -------------------------------------------------------------------

_T = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("deploy_started", "operation", "expected"),
    [
        ("recorded deployStartedAt wins", (_T - timedelta(minutes=9), _T), _T - timedelta(minutes=5)),
        ("else the operation that wrote the entry", (_T - timedelta(minutes=9), _T),
         _T - timedelta(minutes=9)),
        ("an older operation is not this sync's", (_T - timedelta(hours=2), _T - timedelta(hours=1)),
         _T),
        ("a later operation is not this sync's", (_T + timedelta(minutes=1), _T + timedelta(minutes=2)),
         _T),
        ("no operation at all: deployedAt", None, _T),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_syncs_start_is_its_own(deploy_started: str, operation: tuple[datetime, datetime] | None,
                                  expected: datetime) -> None:
    from doraforwarder.argocd.settled import started_at
    from doraforwarder.testing.argocd_objects import application, history_entry, operation_state

    recorded = _T - timedelta(minutes=5) if deploy_started.startswith("recorded") else None
    entry = history_entry(1, sha("a"), _T, started_at=recorded)
    if recorded is None:
        entry.pop("deployStartedAt", None)
    state = (operation_state("Succeeded", sha("a"), operation[0], operation[1])
             if operation is not None else None)
    view = parse_application(application("svc", history=[entry], operation_state=state))
    assert started_at(view, view.history[-1]) == expected
