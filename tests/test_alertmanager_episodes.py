"""Alertmanager's side, pure: matchers, the notification format, and which incident an alert is in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from doraforwarder.alertmanager.episodes import (
    Episode,
    Observation,
    decide,
    observations,
    render_title,
    to_incident,
)
from doraforwarder.alertmanager.matchers import matches_all, parse_matchers
from doraforwarder.alertmanager.webhook import BadNotification, parse_notification
from doraforwarder.config import ConfigError, validate_settings

T = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T + timedelta(minutes=minutes)


@pytest.mark.parametrize(("matchers", "labels", "expected"), [
    (["severity=critical"], {"severity": "critical"}, True),
    (['severity="critical"'], {"severity": "critical"}, True),
    (["severity=critical"], {"severity": "warning"}, False),
    (["severity!=info"], {"severity": "warning"}, True),
    (["severity!=info"], {}, True),
    (["team="], {}, True),                               # absent label is the empty string
    (["severity=~crit.*"], {"severity": "critical"}, True),
    (["severity=~crit"], {"severity": "critical"}, False),   # anchored, as Alertmanager
    (["severity!~warn|info"], {"severity": "critical"}, True),
    (["severity!~warn|info"], {"severity": "info"}, False),
    (['env=~"prod|production"', "severity=critical"], {"env": "prod", "severity": "critical"},
     True),
    (['env=~"prod|production"', "severity=critical"], {"env": "prod", "severity": "page"},
     False),
    ([], {}, True),
])
def test_matchers_as_alertmanager(matchers: list[str], labels: dict[str, str],
                                  expected: bool) -> None:
    assert matches_all(parse_matchers(matchers), labels) is expected


@pytest.mark.parametrize(("value", "message"), [
    (["severity"], "is not a matcher"),
    (["severity=~("], "invalid regular expression"),
    (["9x=1"], "is not a matcher"),
])
def test_bad_matchers_are_configuration_errors(value: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        validate_settings({"alertmanager": {"matchers": value}}, "f.yaml")
    assert "alertmanager.matchers" in str(error.value)


def test_bad_component_label_and_incident_key() -> None:
    with pytest.raises(ConfigError, match=r"alertmanager\.component_label"):
        validate_settings({"alertmanager": {"component_label": "a-b"}}, "f.yaml")
    with pytest.raises(ConfigError, match=r"alertmanager\.incident_key"):
        validate_settings({"alertmanager": {"incident_key": "alertname"}}, "f.yaml")


def alert(status: str = "firing", start: datetime = T, end: datetime | None = None,
          fingerprint: str = "aaaa", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": "Down", "severity": "critical", **labels},
            "annotations": {"summary": "it is down"}, "startsAt": start.isoformat(),
            "endsAt": (end or datetime(1, 1, 1, tzinfo=UTC)).isoformat(),
            "generatorURL": "http://prom/graph", "fingerprint": fingerprint}


def notification(*alerts: dict[str, Any], group_key: str = '{}:{alertname="Down"}',
                 **extra: Any) -> bytes:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return json.dumps({"version": "4", "groupKey": group_key, "status": status,
                       "receiver": "df", "groupLabels": {}, "commonLabels": {},
                       "commonAnnotations": {}, "externalURL": "http://am",
                       "truncatedAlerts": 0, "alerts": list(alerts), **extra}).encode()


def test_a_firing_alert_hides_its_end() -> None:
    parsed = parse_notification(notification(alert()))
    assert parsed.alerts[0].ends_at is None and parsed.alerts[0].resolved_at is None
    resolved = parse_notification(notification(alert("resolved", end=at(5))))
    assert resolved.alerts[0].resolved_at == at(5)


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"version": "3", "alerts": []}).encode(), "version '3' is not supported"),
    (json.dumps({"alerts": []}).encode(), "version None"),
    (notification({"status": "firing"}), "alerts.0"),
    (notification(alert(status="pending")), "alerts.0.status"),
])
def test_bad_notifications_say_why(body: bytes, message: str) -> None:
    with pytest.raises(BadNotification, match=message):
        parse_notification(body)


def obs(status: str = "firing", *alerts: tuple[str, datetime], end: datetime | None = None,
        subject: str = "fp:aaaa") -> Observation:
    return Observation(subject, status, tuple(alerts) or (("aaaa", T),),  # type: ignore[arg-type]
                       end if status == "resolved" else None, {"alertname": "Down"})


def run(mode: str, *steps: Observation) -> list[tuple[str, datetime, datetime | None]]:
    """Every upsert the steps stage, in order (as ids, creation and resolution)."""
    state: Episode | None = None
    staged = []
    for step in steps:
        new, changes = decide(state, step, mode)  # type: ignore[arg-type]
        if new is not None:
            state = Episode.from_json(new.to_json())   # as it comes back from Redis
        staged += [(c.incident_id, c.created_at, c.resolved_at) for c in changes]
    return staged


EPOCH = int(T.timestamp())
ID = f"alertmanager:aaaa:{EPOCH}"


@pytest.mark.parametrize(("name", "steps", "expected"), [
    ("fires", [obs()], [(ID, T, None)]),
    ("repeats are the same incident", [obs(), obs()], [(ID, T, None), (ID, T, None)]),
    ("resolves with endsAt", [obs(), obs("resolved", end=at(30))],
     [(ID, T, None), (ID, T, at(30))]),
    ("a resolved alert re-sent changes nothing",
     [obs(), obs("resolved", end=at(30)), obs("resolved", end=at(30))],
     [(ID, T, None), (ID, T, at(30))]),
    ("a late firing never reopens a resolved incident",
     [obs(), obs("resolved", end=at(30)), obs()],
     [(ID, T, None), (ID, T, at(30))]),
    ("a re-fire after resolution is a new incident",
     [obs(), obs("resolved", end=at(30)), obs("firing", ("aaaa", at(40)))],
     [(ID, T, None), (ID, T, at(30)),
      (f"alertmanager:aaaa:{EPOCH + 2400}", at(40), None)]),
    ("resolved only: opened and resolved at once", [obs("resolved", end=at(5))],
     [(ID, T, at(5))]),
    ("a re-fire whose resolution was missed closes the open incident at the new start",
     [obs(), obs("firing", ("aaaa", at(40)))],
     [(ID, T, None), (ID, T, at(40)), (f"alertmanager:aaaa:{EPOCH + 2400}", at(40), None)]),
    ("an older episode delivered late changes nothing",
     [obs("firing", ("aaaa", at(40))), obs()],
     [(f"alertmanager:aaaa:{EPOCH + 2400}", at(40), None)]),
    ("never resolved before it started", [obs("resolved", end=at(-5))], [(ID, T, T)]),
])
def test_fingerprint_episodes(name: str, steps: list[Observation],
                              expected: list[tuple[str, datetime, datetime | None]]) -> None:
    assert run("fingerprint", *steps) == expected, name


GID = "alertmanager:group:g1:" + str(EPOCH)


def gobs(status: str, *alerts: tuple[str, datetime], end: datetime | None = None
         ) -> Observation:
    return obs(status, *alerts, end=end, subject="group:g1")


@pytest.mark.parametrize(("name", "steps", "expected"), [
    ("an alert joining the group is the same incident",
     [gobs("firing", ("a", T)), gobs("firing", ("a", T), ("b", at(5)))],
     [(GID, T, None), (GID, T, None)]),
    ("resolved when every alert is",
     [gobs("firing", ("a", T), ("b", at(5))), gobs("resolved", ("a", T), ("b", at(5)),
                                                   end=at(20))],
     [(GID, T, None), (GID, T, at(20))]),
    ("a late firing of the resolved group changes nothing",
     [gobs("firing", ("a", T)), gobs("resolved", ("a", T), end=at(20)),
      gobs("firing", ("a", T))],
     [(GID, T, None), (GID, T, at(20))]),
    ("the group firing again after resolution is a new incident",
     [gobs("firing", ("a", T)), gobs("resolved", ("a", T), end=at(20)),
      gobs("firing", ("a", at(30)))],
     [(GID, T, None), (GID, T, at(20)),
      (f"alertmanager:group:g1:{EPOCH + 1800}", at(30), None)]),
    ("a late resolution of an older episode does not close the new one",
     [gobs("firing", ("a", at(30))), gobs("resolved", ("a", T), end=at(20))],
     [(f"alertmanager:group:g1:{EPOCH + 1800}", at(30), None)]),
])
def test_group_episodes(name: str, steps: list[Observation],
                        expected: list[tuple[str, datetime, datetime | None]]) -> None:
    assert run("group_key", *steps) == expected, name


def test_observations_keep_only_matching_alerts_and_group_by_mode() -> None:
    body = parse_notification(notification(
        alert(fingerprint="a", component="api"),
        alert("resolved", end=at(3), fingerprint="b", component="api"),
        alert(fingerprint="c", severity="warning")))
    matchers = parse_matchers(["severity=critical"])
    alone = observations(body, matchers, "fingerprint")
    assert [(o.subject, o.status, o.url) for o in alone] == [
        ("fp:a", "firing", "http://prom/graph"), ("fp:b", "resolved", "http://prom/graph")]
    (group,) = observations(body, matchers, "group_key")
    assert group.status == "firing" and len(group.alerts) == 2
    assert group.subject.startswith("group:") and group.labels["component"] == "api"
    assert group.url == "http://am"
    assert observations(body, parse_matchers(["severity=page"]), "group_key") == []


@pytest.mark.parametrize(("template", "title"), [
    ("{alertname}", "Down"),
    ("{alertname}: {summary}", "Down: it is down"),
    ("{missing}", ""),
    ("{alertname} on {instance}", "Down on"),
])
def test_titles(template: str, title: str) -> None:
    assert render_title(template, {"alertname": "Down"}, {"summary": "it is down"}) == title


def test_an_empty_title_falls_back_to_the_alert_name() -> None:
    decided = decide(None, obs(), "fingerprint")[1][0]
    incident = to_incident(decided, "{nothing}")
    assert incident.summary == "Down" and incident.status == "firing"
    assert incident.products == ()
