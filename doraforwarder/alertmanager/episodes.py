"""Which incident an alert (or alert group) is in: pure decisions over plain data.

A *subject* is what one incident is opened for: an alert (its fingerprint)
or an alert group (its ``groupKey``), as ``alertmanager.incident_key`` says.
An *episode* is one firing spell of a subject, from its first firing
notification to its resolution: one DevLake incident, under an id built from
the subject and the episode's start (``alertmanager:<fingerprint>:<epoch>``),
so a re-fire after resolution is a new incident and a retry is the same one.

Alertmanager re-sends (``repeat_interval``), retries failed posts, and an HA
pair may deliver an old notification late. Each alert is known by its
fingerprint and ``startsAt`` (Alertmanager keeps ``startsAt`` across an
alert's life and gives a re-fire a new one), so:

- a notification holding only alerts the episode already saw, or alerts
  that started before it, changes nothing once the episode is resolved (a
  late firing never reopens a resolved incident) and is a repeat while open;
- an alert that started after the subject's last resolution opens a new
  episode; with ``fingerprint`` an alert that re-fired while its episode
  looked open (its resolution was never received) closes that episode at the
  new start.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from doraforwarder.alertmanager.matchers import Matcher, matches_all
from doraforwarder.alertmanager.webhook import Alert, AlertStatus, Notification
from doraforwarder.records import Incident

IncidentKey = Literal["fingerprint", "group_key"]
MAX_ALERTS = 500
"""Alerts remembered per episode (the latest by start); older ones are repeats anyway."""
ID_STEM = "alertmanager"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Observation:
    """What one notification says of one subject (only the alerts that are incidents)."""

    subject: str
    """``fp:<fingerprint>`` or ``group:<digest of the group key>``: names the Redis state."""
    status: AlertStatus
    alerts: tuple[tuple[str, datetime], ...]
    """(fingerprint, startsAt) of each alert that is an incident."""
    ends_at: datetime | None
    """The latest end of its resolved alerts (resolved only)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    url: str = ""

    @property
    def id_stem(self) -> str:
        kind, _, value = self.subject.partition(":")
        return f"{ID_STEM}:{value}" if kind == "fp" else f"{ID_STEM}:{kind}:{value}"


@dataclass(frozen=True)
class Episode:
    """The stored state of a subject: its latest episode."""

    incident_id: str
    started_at: datetime
    resolved_at: datetime | None
    alerts: tuple[str, ...]
    """``fingerprint@startsAt(ms)`` of every alert the episode saw (bounded)."""

    def to_json(self) -> str:
        return json.dumps({"id": self.incident_id, "start": self.started_at.isoformat(),
                           "resolved": self.resolved_at.isoformat() if self.resolved_at else None,
                           "alerts": list(self.alerts)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Episode | None:
        """The stored episode; None for anything unreadable (then a new one starts)."""
        try:
            data = json.loads(text)
            resolved = data["resolved"]
            return cls(str(data["id"]), datetime.fromisoformat(data["start"]),
                       datetime.fromisoformat(resolved) if resolved else None,
                       tuple(str(a) for a in data["alerts"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Change:
    """An incident upsert to stage: open (``resolved_at`` None) or resolved."""

    incident_id: str
    created_at: datetime
    resolved_at: datetime | None
    observation: Observation


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def alert_key(fingerprint: str, starts_at: datetime) -> str:
    return f"{fingerprint}@{_ms(starts_at)}"


def group_subject(group_key: str) -> str:
    return "group:" + hashlib.sha256(group_key.encode()).hexdigest()[:16]


def _common(mappings: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not mappings:
        return {}
    first = dict(mappings[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in mappings[1:])}


def observations(notification: Notification, matchers: Iterable[Matcher],
                 mode: IncidentKey) -> list[Observation]:
    """The subjects a notification speaks of, with only the alerts that are incidents."""
    wanted = [a for a in notification.alerts if matches_all(matchers, a.labels)]
    if not wanted:
        return []
    if mode == "fingerprint":
        return [_alone(alert) for alert in wanted]
    firing = [a for a in wanted if a.status == "firing"]
    ends = [a.resolved_at for a in wanted if a.resolved_at is not None]
    return [Observation(
        subject=group_subject(notification.group_key),
        status="firing" if firing else "resolved",
        alerts=tuple((a.fingerprint, a.starts_at) for a in wanted),
        ends_at=None if firing else max(ends, default=None),
        labels=_common([a.labels for a in wanted]),
        annotations=_common([a.annotations for a in wanted]),
        url=notification.external_url,
    )]


def _alone(alert: Alert) -> Observation:
    return Observation(subject=f"fp:{alert.fingerprint}", status=alert.status,
                       alerts=((alert.fingerprint, alert.starts_at),),
                       ends_at=alert.resolved_at, labels=alert.labels,
                       annotations=alert.annotations, url=alert.generator_url)


def _incident_id(observation: Observation, start: datetime, previous: Episode | None) -> str:
    candidate = f"{observation.id_stem}:{int(start.timestamp())}"
    if previous is not None and previous.incident_id == candidate:
        candidate = f"{observation.id_stem}:{_ms(start)}"
    return candidate


def _remember(keys: Iterable[str], alerts: Iterable[tuple[str, datetime]]) -> tuple[str, ...]:
    seen = dict.fromkeys(keys)
    seen.update(dict.fromkeys(alert_key(fp, start) for fp, start in alerts))
    ordered = sorted(seen, key=lambda key: int(key.rpartition("@")[2]))
    return tuple(ordered[-MAX_ALERTS:])


def _open(observation: Observation, alerts: Sequence[tuple[str, datetime]],
          previous: Episode | None) -> tuple[Episode, list[Change]]:
    """A new episode for ``alerts``: open, or already resolved when the notification says so."""
    start = min(s for _, s in alerts)
    resolved = None
    if observation.status == "resolved":
        resolved = max(observation.ends_at or start, start)
    episode = Episode(_incident_id(observation, start, previous), start, resolved,
                      _remember((), alerts))
    return episode, [Change(episode.incident_id, start, resolved, observation)]


def decide(state: Episode | None, observation: Observation,
           mode: IncidentKey) -> tuple[Episode | None, list[Change]]:
    """The subject's new state (None: unchanged) and the upserts to stage."""
    alerts = list(observation.alerts)
    if state is None:
        return _open(observation, alerts, None)
    seen = set(state.alerts)
    known = [a for a in alerts if alert_key(*a) in seen]
    fresh = [a for a in alerts if alert_key(*a) not in seen and a[1] > state.started_at
             and (state.resolved_at is None or a[1] >= state.resolved_at)]
    if state.resolved_at is not None:
        if not fresh:
            return None, []  # a repeat, or a late notification of a resolved episode
        return _open(observation, fresh, state)
    if fresh and mode == "fingerprint":
        start = min(s for _, s in fresh)
        closing = Change(state.incident_id, state.started_at, max(start, state.started_at),
                         replace(observation, status="resolved"))
        episode, changes = _open(observation, fresh, state)
        return episode, [closing, *changes]
    if not known and not fresh:
        return None, []  # alerts of an older episode, delivered late
    remembered = _remember(state.alerts, alerts)
    if observation.status == "firing":
        episode = replace(state, alerts=remembered)
        return episode, [Change(state.incident_id, state.started_at, None, observation)]
    resolved = max(observation.ends_at or state.started_at, state.started_at)
    episode = replace(state, alerts=remembered, resolved_at=resolved)
    return episode, [Change(state.incident_id, state.started_at, resolved, observation)]


def render_title(template: str, labels: Mapping[str, str],
                 annotations: Mapping[str, str]) -> str:
    """``{name}``: the annotation ``name``, else the label, else empty."""
    def value(found: re.Match[str]) -> str:
        name = found.group(1)
        return annotations.get(name) or labels.get(name, "")

    return _PLACEHOLDER.sub(value, template).strip(" :-|")


def to_incident(change: Change, title_template: str) -> Incident:
    """The plain incident record of a change (status ``firing`` or ``resolved``)."""
    seen = change.observation
    title = render_title(title_template, seen.labels, seen.annotations) \
        or seen.labels.get("alertname", "") or change.incident_id
    resolved = change.resolved_at is not None
    return Incident(
        incident_id=change.incident_id,
        status="resolved" if resolved else "firing",
        summary=title,
        description=seen.annotations.get("description") or seen.annotations.get("summary"),
        severity=seen.labels.get("severity") or None,
        products=(),
        created_at=change.created_at.astimezone(UTC),
        updated_at=None,
        last_changed_at=None,
        resolved_at=change.resolved_at,
    )
