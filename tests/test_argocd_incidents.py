"""Degraded production apps as incidents (``argocd.failures_as_incidents``), pure decisions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from doraforwarder.argocd.detect import Decision, decide, history_deployments
from doraforwarder.argocd.model import parse_application, parse_time
from doraforwarder.argocd.state import AppState, load_state
from doraforwarder.config import ArgoCDConfig
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
