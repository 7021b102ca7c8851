"""Two notifications of one alert group racing on real Redis, neither changing the incident.

A group notification that adds an alert to an open episode changes nothing
DevLake is told (same title, same state), so the staging writes no
fingerprint and the fingerprints ``WATCH`` sees nothing: only the ``WATCH`` on
the subject's key (``watch=subject_keys`` in
:meth:`doraforwarder.alertmanager.receiver.AlertReceiver.receive`) keeps a
concurrent update of the same group, read before and written after, from
overwriting the alerts the episode saw. This test forces that race (the other
replica commits between this one's read of the subject and its ``EXEC``) and
fails if that ``WATCH`` is removed.

What a lost alert costs: an alert that joined the group having started before
the episode (it was silenced, inhibited or relabelled into the group) is then
unknown to the episode; its later notifications alone read as a late delivery
of an older episode and are ignored, so its resolution never reaches DevLake.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from doraforwarder.alertmanager.episodes import Episode, group_subject
from doraforwarder.alertmanager.receiver import AlertReceiver, Received
from doraforwarder.alertmanager.webhook import Notification, parse_notification
from doraforwarder.devlake.plan import Planner
from doraforwarder.keys import Keys
from doraforwarder.records import Incident
from doraforwarder.testing.redis_server import RedisServer
from tests.test_alertmanager_receiver import context_of, outbox, settings

T = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
GROUP = '{}:{alertname="Down"}'
LABELS = {"alertname": "Down", "severity": "critical", "component": "api"}


def notification(*alerts: tuple[str, datetime, datetime | None]) -> Notification:
    """A group notification of ``(instance, startsAt, endsAt or None)`` alerts."""
    items = [{"status": "resolved" if end else "firing",
              "labels": {**LABELS, "instance": name}, "annotations": {},
              "startsAt": start.isoformat(),
              "endsAt": (end or datetime(1, 1, 1, tzinfo=UTC)).isoformat(),
              "generatorURL": "", "fingerprint": f"fp-{name}"} for name, start, end in alerts]
    status = "firing" if any(end is None for _, _, end in alerts) else "resolved"
    return parse_notification(json.dumps({
        "version": "4", "groupKey": GROUP, "status": status, "receiver": "df",
        "externalURL": "http://am", "alerts": items}).encode())


class HookedPlanner(Planner):
    """Runs ``before_first`` inside the first transaction, after the subject was read."""

    before_first: Any = None

    def plan_component_incident(self, incident: Incident, component: str | None,
                                url: str | None = None) -> Any:
        hook, self.before_first = self.before_first, None
        if hook is not None:
            hook()
        return super().plan_component_incident(incident, component, url)


def receiver(client: aioredis.Redis) -> AlertReceiver:
    document = settings(incident_key="group_key")
    document["integration"]["devlake"]["teams"] = []
    context = context_of(client, document)
    planner = HookedPlanner.from_settings(context.settings, False)
    return AlertReceiver(context, planner)


async def receive(url: str, seen: Notification) -> Received:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return await receiver(client).receive(seen)
    finally:
        await client.aclose()


async def test_an_alert_joining_the_group_between_read_and_exec_is_not_forgotten(
        redis_server: RedisServer, redis_client: aioredis.Redis) -> None:
    a = ("a", T, None)
    b = ("b", T - timedelta(minutes=5), None)      # started before the episode: not "fresh"
    here = receiver(redis_client)
    assert (await here.receive(notification(a))).staged == 1      # the episode opens

    def other_replica_adds_b() -> None:
        thread = threading.Thread(target=asyncio.run, args=(
            receive(redis_server.url, notification(a, b)),))
        thread.start()
        thread.join(10)
        assert not thread.is_alive()

    assert isinstance(here.planner, HookedPlanner)
    here.planner.before_first = other_replica_adds_b
    repeat = await here.receive(notification(a))    # a repeat, racing the other update
    assert repeat.staged == 0

    subject = Keys("t").alertmanager_subject(group_subject(GROUP))
    stored = Episode.from_json(await redis_client.get(subject) or "")
    assert stored is not None and len(stored.alerts) == 2, \
        "the racing update's alert was overwritten: the subject key is not WATCHed"
    # b alone resolving (a left the group) still closes the incident
    closed = await here.receive(notification(("b", b[1], T + timedelta(minutes=9))))
    assert closed.staged == 1
    assert [status for _, _, status in await outbox(redis_client)] == ["TODO", "DONE"]
