"""Degraded production apps as incidents (``argocd.failures_as_incidents``), pure decisions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from doraforwarder.argocd.deployment_records import history_deployments
from doraforwarder.argocd.detect import Decision, decide, mark_deleted
from doraforwarder.argocd.model import parse_time
from doraforwarder.argocd.parse import parse_application
from doraforwarder.argocd.state import AppState, DegradedSpell, load_state
from doraforwarder.config import ArgoCDConfig
from doraforwarder.devlake.issues import build_detected_issue_payload
from doraforwarder.records import DetectedDeployment, DetectedIncident
from doraforwarder.testing.argocd_objects import LiveApp, image, sha

ON = ArgoCDConfig(namespaces=["argocd"], failures_as_incidents=True)
I1 = image("svc", "r1")
AFTER = timedelta(minutes=5)

Event = tuple[dict[str, Any], datetime]
"""One view and when it is decided (a watch event, or a recheck with the last view)."""


def at_write(obj: dict[str, Any]) -> Event:
    return obj, parse_time(obj["status"]["reconciledAt"])


def later(event: Event, delta: timedelta) -> Event:
    return event[0], event[1] + delta


def run(events: list[Event], config: ArgoCDConfig = ON, state: AppState | None = None,
        ) -> tuple[AppState | None, list[DetectedDeployment], list[DetectedIncident],
                   list[Decision]]:
    deployments: list[DetectedDeployment] = []
    incidents: list[DetectedIncident] = []
    decisions: list[Decision] = []
    for obj, now in events:
        decision = decide(parse_application(obj), state, config, now)
        deployments.extend(decision.deployments)
        incidents.extend(decision.incidents)
        decisions.append(decision)
        # Stored and read back, as between a restart's decisions.
        state = load_state(decision.state.dump()) if decision.state is not None else None
    return state, deployments, incidents, decisions


def degraded_sync(app: LiveApp, record_transition: bool = False) -> list[Event]:
    return [at_write(o) for o in app.sync(sha("r1"), [I1], health="Degraded",
                                          record_transition=record_transition)]


def summary(incidents: list[DetectedIncident]) -> list[tuple[str, str, datetime,
                                                              datetime | None]]:
    return [(i.key, i.status, i.created_at, i.resolved_at) for i in incidents]


def key(since: datetime) -> str:
    return f"argocd:argocd/svc:{int(since.timestamp())}"


def test_a_degraded_sync_is_a_success_then_an_incident_then_resolved() -> None:
    app = LiveApp("svc")
    first = at_write(app.refresh())
    sync = degraded_sync(app)
    since = sync[-1][1]
    waiting = later(sync[-1], AFTER - timedelta(seconds=1))
    due = later(sync[-1], AFTER)
    healthy = at_write((app.advance(AFTER * 2), app.set_health("Healthy"))[1])
    state, deployments, incidents, decisions = run([first, *sync, waiting, due, healthy])
    assert [(d.result, d.message) for d in deployments] == [("SUCCESS", "health Degraded")]
    assert decisions[len(sync)].recheck_at == since + AFTER  # asks to look again then
    assert decisions[-3].incidents == [] and decisions[-3].recheck_at == since + AFTER
    assert summary(incidents) == [(key(since), "open", since, None),
                                  (key(since), "resolved", since, healthy[1])]
    assert state is not None and state.next_deadline is None
    opened = incidents[0]
    assert (opened.component, opened.cluster, opened.environment, opened.revision) == (
        "svc", "kubernetes.default.svc", "PRODUCTION", sha("r1"))
    assert opened.title == "svc Degraded in kubernetes.default.svc"
    assert "turned Degraded at" in opened.description


def test_times_come_from_the_health_transition_when_argocd_records_it() -> None:
    app = LiveApp("svc")
    first = at_write(app.refresh())
    sync = degraded_sync(app, record_transition=True)
    since = sync[-1][1]
    seen_late = later(sync[-1], timedelta(minutes=7))  # first look only after incident_after
    app.advance(timedelta(minutes=20))
    healthy_obj = app.set_health("Healthy", record_transition=True)
    recovered = parse_time(healthy_obj["status"]["health"]["lastTransitionTime"])
    healthy = (healthy_obj, recovered + timedelta(minutes=3))  # seen 3 minutes after
    _, _, incidents, _ = run([first, sync[0], seen_late, healthy])
    assert summary(incidents) == [(key(since), "open", since, None),
                                  (key(since), "resolved", since, recovered)]


def _short_spell(app: LiveApp) -> list[Event]:
    degraded = at_write(app.set_health("Degraded"))
    return [degraded, later(degraded, timedelta(minutes=4)),
            at_write((app.advance(timedelta(minutes=4)), app.set_health("Healthy"))[1])]


def _degraded_later(app: LiveApp) -> list[Event]:
    degraded = at_write((app.advance(timedelta(hours=1)), app.set_health("Degraded"))[1])
    return [degraded, later(degraded, AFTER)]


def _replays(app: LiveApp) -> list[Event]:
    degraded = at_write(app.set_health("Degraded", record_transition=True))
    due = later(degraded, AFTER)
    healthy = at_write(app.set_health("Healthy", record_transition=True))
    # The same views again (a re-list, another replica, a restart): nothing twice.
    return [degraded, due, due, later(degraded, AFTER * 3), healthy, healthy,
            later(degraded, AFTER * 4)]


def _progressing_keeps_the_spell(app: LiveApp) -> list[Event]:
    degraded = at_write(app.set_health("Degraded"))
    progressing = at_write(app.set_health("Progressing"))
    return [degraded, later(progressing, AFTER)]


INCIDENT_CASES: list[tuple[str, Any, list[str]]] = [
    # (case, events after a first settled sight, incident statuses emitted)
    ("a spell shorter than incident_after emits nothing", _short_spell, []),
    ("degraded long after a sync", _degraded_later, ["open"]),
    ("replays emit nothing twice", _replays, ["open", "resolved"]),
    ("progressing is not a recovery", _progressing_keeps_the_spell, ["open"]),
]


@pytest.mark.parametrize(("case", "scenario", "want"), INCIDENT_CASES,
                         ids=[c[0] for c in INCIDENT_CASES])
def test_incident_cases(case: str, scenario: Any, want: list[str]) -> None:
    app = LiveApp("svc")
    first = at_write(app.refresh())
    _, deployments, incidents, _ = run([first, *scenario(app)])
    assert [i.status for i in incidents] == want and deployments == []
    assert len({i.key for i in incidents}) <= 1


@pytest.mark.parametrize(("config", "path", "result", "incidents"), [
    (ArgoCDConfig(namespaces=["argocd"]), None, "FAILURE", 0),
    (ON, None, "SUCCESS", 1),
    (ArgoCDConfig(namespaces=["argocd"], failures_as_incidents=True,
                  environments=["PRODUCTION", "STAGING"]), "components/svc/staging", "SUCCESS", 0),
])
def test_only_production_apps_with_the_setting_make_incidents(
    config: ArgoCDConfig, path: str | None, result: str, incidents: int
) -> None:
    app = LiveApp("svc", **({"path": path} if path else {}))
    first = at_write(app.refresh())
    sync = degraded_sync(app)
    state, deployments, found, _ = run([first, *sync, later(sync[-1], AFTER)], config)
    assert [d.result for d in deployments] == [result] and len(found) == incidents
    assert state is not None and (state.degraded is not None) == bool(incidents)


def test_a_spell_under_way_at_first_sight_is_not_reported() -> None:
    app = LiveApp("svc")
    degraded = at_write(app.set_health("Degraded"))
    healthy = at_write((app.advance(AFTER * 2), app.set_health("Healthy"))[1])
    state, _, incidents, decisions = run([degraded, later(degraded, AFTER * 2), healthy])
    assert incidents == [] and decisions[0].recheck_at is None
    assert state is not None and state.degraded is not None
    assert state.degraded.resolved_at == healthy[1]


def test_a_new_spell_after_a_recovery_is_a_new_incident() -> None:
    app = LiveApp("svc")
    events = [at_write(app.refresh())]
    for _ in range(2):
        degraded = at_write(app.set_health("Degraded"))
        events += [degraded, later(degraded, AFTER)]
        events.append(at_write((app.advance(AFTER * 2), app.set_health("Healthy"))[1]))
    _, _, incidents, _ = run(events)
    assert [i.status for i in incidents] == ["open", "resolved", "open", "resolved"]
    assert len({i.key for i in incidents}) == 2


def test_backfill_sends_a_degraded_latest_sync_as_success_with_the_setting() -> None:
    app = LiveApp("svc")
    app.sync(sha("r1"), [I1], health="Degraded")
    view = parse_application(app.snapshot())
    now = app.now
    assert history_deployments(view, ON, now)[-1].result == "SUCCESS"
    assert history_deployments(view, ArgoCDConfig(namespaces=["argocd"]), now)[-1].result == (
        "FAILURE")


# --- deleted while Degraded ------------------------------------------------------------------


def delete(state: AppState | None, now: datetime, uid: str = "") -> Decision:
    """The deletion of ``argocd/svc``, stored and read back like a decision."""
    decision = mark_deleted(state, now, uid, namespace="argocd", name="svc")
    if decision.state is not None:
        decision = Decision(load_state(decision.state.dump()), decision.deployments,
                            decision.reasons, decision.changed, decision.stale,
                            decision.incidents)
    return decision


def _open_spell(app: LiveApp) -> list[Event]:
    degraded = at_write(app.set_health("Degraded"))
    return [degraded, later(degraded, AFTER)]


def _young_spell(app: LiveApp) -> list[Event]:
    degraded = at_write(app.set_health("Degraded"))
    return [degraded, later(degraded, AFTER - timedelta(seconds=1))]


def _no_spell(app: LiveApp) -> list[Event]:
    return [at_write(app.refresh())]


def _delete_once(state: AppState | None, now: datetime) -> list[Decision]:
    return [delete(state, now, uid="one")]


def _delete_twice(state: AppState | None, now: datetime) -> list[Decision]:
    first = delete(state, now, uid="one")
    return [first, delete(first.state, now + AFTER, uid="one")]


def _delete_from_a_relist(state: AppState | None, now: datetime) -> list[Decision]:
    return [delete(state, now)]  # absent from a re-list after a 410: no uid


def _delete_a_predecessor_late(state: AppState | None, now: datetime) -> list[Decision]:
    return [delete(state, now, uid="zero")]  # an older object of the same name


DELETION_CASES: list[tuple[str, Any, Any, list[str]]] = [
    # (case, events after a first settled sight, deletions, incident statuses emitted on
    #  deletion)
    ("an opened incident is resolved", _open_spell, _delete_once, ["resolved"]),
    ("absent from a re-list: resolved too", _open_spell, _delete_from_a_relist, ["resolved"]),
    ("deleted twice: resolved once", _open_spell, _delete_twice, ["resolved"]),
    ("a spell not yet an incident resolves nothing", _young_spell, _delete_once, []),
    ("a spell already resolved resolves nothing", _replays, _delete_once, []),
    ("a short spell over resolves nothing", _short_spell, _delete_once, []),
    ("no spell resolves nothing", _no_spell, _delete_once, []),
    ("a predecessor's deletion seen late touches nothing", _open_spell,
     _delete_a_predecessor_late, []),
]


@pytest.mark.parametrize(("case", "scenario", "deletions", "want"), DELETION_CASES,
                         ids=[c[0] for c in DELETION_CASES])
def test_deletion_cases(case: str, scenario: Any, deletions: Any, want: list[str]) -> None:
    app = LiveApp("svc")
    app.obj["metadata"]["uid"] = "one"
    state, _, before, _ = run([at_write(app.refresh()), *scenario(app)])
    deleted_at = app.advance(AFTER * 10)
    decisions = deletions(state, deleted_at)
    incidents = [i for d in decisions for i in d.incidents]
    assert [i.status for i in incidents] == want
    opened = [i for i in before if i.status == "open"]
    for incident in incidents:
        assert incident.key == opened[-1].key  # the issue the opening created, no other
        assert (incident.created_at, incident.resolved_at, incident.resolved_by) == (
            opened[-1].created_at, deleted_at, "Deleted")
        assert [i.status for i in before] == ["open"]
    final = decisions[-1].state
    assert final is not None
    if case.startswith("a predecessor"):
        assert decisions[-1].stale and final == state and not decisions[-1].changed
    else:
        assert final.deleted_at == deleted_at
        assert final.degraded is None or final.degraded.resolved_at is not None
        assert final.next_deadline is None


def test_the_resolution_by_deletion_is_the_opening_issue_told_as_deleted() -> None:
    app = LiveApp("svc")
    sync = degraded_sync(app)  # a sync that turns Degraded: the revision is in the incident
    state, _, opened, _ = run([at_write(app.refresh()), *sync, later(sync[-1], AFTER)])
    assert [i.status for i in opened] == ["open"]
    deleted_at = app.advance(timedelta(minutes=42))
    resolved = delete(state, deleted_at).incidents
    assert summary(resolved) == [(opened[0].key, "resolved", opened[0].created_at, deleted_at)]
    got, want = resolved[0], opened[0]
    assert want.revision == sha("r1")
    assert (got.app, got.component, got.cluster, got.environment, got.title, got.revision) == (
        want.app, want.component, want.cluster, want.environment, want.title, want.revision)
    assert "deleted at" in got.description and "serves no traffic" in got.description
    opening = build_detected_issue_payload(want).body()
    body = build_detected_issue_payload(got).body()
    assert body["issueKey"] == opening["issueKey"] and body["status"] == "DONE"
    assert body["originalStatus"] == "Deleted" and body["createdDate"] == opening["createdDate"]
    assert body["resolutionDate"] == deleted_at.isoformat()
    assert body["component"] == opening["component"] == "svc"


def test_a_spell_stored_before_its_identity_was_kept_learns_it_from_the_next_view() -> None:
    app = LiveApp("svc")
    state, _, opened, _ = run([at_write(app.refresh()), *_open_spell(app)])
    assert state is not None and state.degraded is not None and len(opened) == 1
    # As an earlier version stored it: no component, cluster or environment in the spell.
    old_spell = state.degraded.model_dump(mode="json",
                                          exclude={"component", "cluster", "environment"})
    old = load_state(state.model_copy(
        update={"degraded": DegradedSpell.model_validate(old_spell)}).dump())
    assert old is not None and old.degraded is not None and old.degraded.component == ""
    at_deletion = app.advance(AFTER)
    stranded = delete(old, at_deletion)
    assert stranded.incidents == [] and "left open" in " ".join(stranded.reasons)
    learned, _, none, decisions = run([at_write(app.refresh())], state=old)
    assert none == [] and decisions[0].changed
    resolved = delete(learned, at_deletion).incidents
    assert [(i.key, i.component, i.status) for i in resolved] == [
        (opened[0].key, "svc", "resolved")]


def test_a_recreated_app_starts_a_new_spell_after_the_deletion_resolved_the_old() -> None:
    app = LiveApp("svc")
    app.obj["metadata"]["uid"] = "one"
    state, _, opened, _ = run([at_write(app.refresh()), *_open_spell(app)])
    deleted = delete(state, app.advance(AFTER), uid="one")
    assert [i.status for i in deleted.incidents] == ["resolved"]
    again = LiveApp("svc", start=app.advance(AFTER))
    again.obj["metadata"]["uid"] = "two"
    events = [at_write(again.refresh()), *_open_spell(again),
              at_write((again.advance(AFTER), again.set_health("Healthy"))[1])]
    _, _, incidents, _ = run(events, state=deleted.state)
    assert [i.status for i in incidents] == ["open", "resolved"]
    assert {i.key for i in incidents} != {opened[0].key} and len({i.key for i in incidents}) == 1
    assert all(i.resolved_by == "Healthy" for i in incidents)
