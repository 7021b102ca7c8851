"""``POST /api/v1/alertmanager`` over real HTTP and a real Redis: who may post, what is staged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import SecretStr

from doraforwarder.alertmanager.receiver import AlertReceiver
from doraforwarder.alertmanager.webhook import parse_notification
from doraforwarder.apiauth import OpenAccess, StaticTokens
from doraforwarder.config import LoadedConfig, Secrets, validate_settings
from doraforwarder.context import AppContext
from doraforwarder.daemon import Daemon
from doraforwarder.devlake.plan import Planner
from doraforwarder.keys import Keys
from doraforwarder.outbox import OutboxEntry
from doraforwarder.server import AlertInbox, bound_port, build_app
from doraforwarder.testing.world import FakeWorld
from tests.alertmanager_support import Alertmanager
from tests.alertmanager_support import binary as am_binary
from tests.devlake_support import eventually

T = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
TOKEN = "receiver-test-token-0000"


def settings(**alertmanager: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1"},
        "alertmanager": {"enabled": True, **alertmanager},
        "integration": {"devlake": {
            "enabled": True, "base_url": "http://devlake.invalid", "project_id": "1",
            "teams": [{"name": "team-a", "project_id": "2", "argocd_components": ["api"]}]}},
    }


def context_of(redis: aioredis.Redis, document: dict[str, Any]) -> AppContext:
    config = LoadedConfig(settings=validate_settings(document, "test"),
                          secrets=Secrets(devlake_webhook_token=SecretStr("k")), source="test")
    return AppContext(config=config, redis=redis, keys=Keys("t"))


def body(status: str = "firing", start: datetime = T, end: datetime | None = None,
         severity: str = "critical") -> bytes:
    alert = {"status": status, "labels": {"alertname": "Down", "severity": severity,
                                          "component": "api"},
             "annotations": {}, "startsAt": start.isoformat(),
             "endsAt": (end or datetime(1, 1, 1, tzinfo=UTC)).isoformat(),
             "generatorURL": "", "fingerprint": "f00d"}
    return json.dumps({"version": "4", "groupKey": "{}:{}", "status": status,
                       "receiver": "df", "externalURL": "http://am", "alerts": [alert]}).encode()


@pytest.fixture
async def served(redis_client: aioredis.Redis
                 ) -> AsyncIterator[tuple[AppContext, AlertInbox, str]]:
    context = context_of(redis_client, settings(max_body="2KiB"))
    inbox = AlertInbox(OpenAccess())
    runner = web.AppRunner(build_app(context, OpenAccess(), inbox))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield context, inbox, f"http://127.0.0.1:{bound_port(runner)}/api/v1/alertmanager"
    await runner.cleanup()


async def outbox(redis: aioredis.Redis) -> list[tuple[str, str, str]]:
    """(target, issue key, status) of every staged entry, in order."""
    found = []
    for _, fields in await redis.xrange(Keys("t").outbox_stream):
        entry = OutboxEntry.model_validate_json(fields["entry"])
        found.append((entry.target.key, entry.record_id, entry.payload["status"]))
    return found


async def test_each_change_is_staged_once(served: tuple[AppContext, AlertInbox, str],
                                          redis_client: aioredis.Redis) -> None:
    context, inbox, url = served
    inbox.receiver = AlertReceiver(context, Planner.from_settings(context.settings, False))
    async with httpx.AsyncClient() as client:
        first = await client.post(url, content=body())
        assert first.status_code == 200, first.text
        assert first.json() == {"status": "accepted", "alerts": 1, "incidents": 1, "staged": 1}
        again = await client.post(url, content=body())           # a retry or a repeat
        assert again.json()["staged"] == 0
        key = f"alertmanager:f00d:{int(T.timestamp())}"
        fingerprints = Keys("t").incident_fingerprints
        assert list(await redis_client.hkeys(fingerprints)) == [key]
        resolved = await client.post(url, content=body("resolved", end=T + timedelta(minutes=9)))
        assert resolved.json()["staged"] == 1
        assert await redis_client.hkeys(fingerprints) == []   # only open incidents kept
        for late in (body("resolved", end=T + timedelta(minutes=9)), body()):
            assert (await client.post(url, content=late)).json()["staged"] == 0
        ignored = await client.post(url, content=body(severity="warning"))
        assert ignored.json() == {"status": "accepted", "alerts": 1, "incidents": 0,
                                  "staged": 0}
    assert await outbox(redis_client) == [
        ("connection_id:1", key, "TODO"), ("connection_id:2", key, "TODO"),
        ("connection_id:1", key, "DONE"), ("connection_id:2", key, "DONE")]


async def test_two_replicas_receiving_the_same_notification_stage_it_once(
        redis_server: Any, redis_client: aioredis.Redis) -> None:
    """An HA pair of Alertmanagers posts to two replicas at once: one incident, once."""
    clients = [aioredis.Redis.from_url(redis_server.url, decode_responses=True)
               for _ in range(4)]
    receivers = [AlertReceiver(context_of(c, settings()), Planner.from_settings(
        context_of(c, settings()).settings, False)) for c in clients]
    notification = parse_notification(body())
    results = await asyncio.gather(*(r.receive(notification) for r in receivers))
    assert sorted(r.staged for r in results) == [0, 0, 0, 1]
    assert len(await outbox(redis_client)) == 2
    for client in clients:
        await client.aclose()


async def test_a_late_firing_never_reopens_a_resolved_incident(
        redis_client: aioredis.Redis) -> None:
    """Sticky resolution, and its cost: the same alert firing again with the same
    ``startsAt`` after its resolution (an HA peer's late notification, or an alert
    Alertmanager resolved on ``resolve_timeout`` that its sender resumes) is ignored;
    only a new ``startsAt`` opens an incident (a new one)."""
    context = context_of(redis_client, settings())
    receiver = AlertReceiver(context, Planner.from_settings(context.settings, False))
    staged = [(await receiver.receive(parse_notification(b))).staged for b in (
        body(), body("resolved", end=T + timedelta(minutes=9)),
        body(), body(start=T), body(start=T + timedelta(minutes=20)))]
    assert staged == [1, 1, 0, 0, 1]
    keys = [key for target, key, _ in await outbox(redis_client)
            if target == "connection_id:1"]
    assert keys == [f"alertmanager:f00d:{int(T.timestamp())}"] * 2 + [
        f"alertmanager:f00d:{int((T + timedelta(minutes=20)).timestamp())}"]


async def test_close_resolved_applies_to_alert_incidents(redis_client: aioredis.Redis) -> None:
    """``webrca.close_resolved`` is the planner's: a resolved alert incident is closed too."""
    document = settings()
    document["webrca"] = {"close_resolved": True}
    document["integration"]["devlake"]["teams"] = []
    context = context_of(redis_client, document)
    receiver = AlertReceiver(context, Planner.from_settings(context.settings, False))
    for sent in (body(), body("resolved", end=T + timedelta(minutes=9))):
        await receiver.receive(parse_notification(sent))
    entries = [OutboxEntry.model_validate_json(fields["entry"])
               for _, fields in await redis_client.xrange(Keys("t").outbox_stream)]
    assert [(e.kind, e.payload.get("status")) for e in entries] == [
        ("issue", "TODO"), ("issue", "DONE"), ("close", None)]


async def test_refusals(served: tuple[AppContext, AlertInbox, str]) -> None:
    context, inbox, url = served
    async with httpx.AsyncClient() as client:
        starting = await client.post(url, content=body())
        assert starting.status_code == 503           # no receiver yet: Alertmanager retries
        inbox.receiver = AlertReceiver(context, Planner.from_settings(context.settings, False))
        large = await client.post(url, content=b" " * 3000)
        assert large.status_code == 413 and "alertmanager.max_body" in large.json()["error"]

        async def chunks() -> AsyncIterator[bytes]:   # chunked, no Content-Length
            for _ in range(64):
                yield b" " * 1024

        chunked = await client.post(url, content=chunks())
        assert chunked.status_code == 413
        bad = await client.post(url, content=b'{"version": "4"}')
        assert bad.status_code == 400 and "groupKey" in bad.json()["error"]
        inbox.authorizer = StaticTokens([TOKEN])
        anonymous = await client.post(url, content=body())
        assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
        wrong = await client.post(url, content=body(), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "nope" not in wrong.text
        right = await client.post(url, content=body(),
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200
        inbox.authorizer = None                       # no token, not on loopback
        closed = await client.post(url, content=body(),
                                   headers={"Authorization": f"Bearer {TOKEN}"})
        assert closed.status_code == 401 and "API_TOKENS" in closed.json()["error"]
    board = context.status.snapshot()["alertmanager"]
    assert board["last_accepted"]["alerts"] == 1 and board["last_refused"]["status"] == 401
    assert TOKEN not in json.dumps(board)
    counted = context.metrics.alertmanager_notifications
    assert {o: counted.labels(o)._value.get() for o in
            ("accepted", "unavailable", "too_large", "bad_request", "unauthorized")} == {
        "accepted": 1, "unavailable": 1, "too_large": 2, "bad_request": 1, "unauthorized": 3}


@pytest.mark.parametrize(("host", "tokens", "kind"), [
    ("127.0.0.1", "", "none"),
    ("127.0.0.1", TOKEN, "token"),
    ("0.0.0.0", TOKEN, "token"),
    ("0.0.0.0", "", None),
])
def test_who_may_post(monkeypatch: pytest.MonkeyPatch, host: str, tokens: str,
                      kind: str | None) -> None:
    monkeypatch.setenv("API_TOKENS", tokens)
    document = settings()
    document["server"]["host"] = host
    inbox = AlertInbox.for_settings(validate_settings(document, "test"))
    assert (inbox.authorizer.mode if inbox.authorizer else None) == kind


async def test_the_route_exists_only_when_enabled(redis_client: aioredis.Redis) -> None:
    context = context_of(redis_client, settings(enabled=False))
    runner = web.AppRunner(build_app(context, OpenAccess()))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"http://127.0.0.1:{bound_port(runner)}/api/v1/alertmanager", content=body())
    await runner.cleanup()
    assert answer.status_code == 404


# --- group_key, against the real Alertmanager --------------------------------------------


async def wait_outbox(redis: aioredis.Redis, count: int, timeout: float = 20.0
                      ) -> list[tuple[str, str, str]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await outbox(redis)
        if len(found) >= count:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"outbox holds {found}, wanted {count} entries")
        await asyncio.sleep(0.05)


@pytest.mark.skipif(am_binary() is None, reason="prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
async def test_group_key_incidents_from_the_real_alertmanager(
        redis_client: aioredis.Redis, tmp_path: Path) -> None:
    """One incident per alert group: open while any alert fires, closed when all resolved,
    a new one when the group fires again."""
    document = settings(incident_key="group_key", title="{alertname} ({component})")
    document["integration"]["devlake"]["teams"] = []
    context = context_of(redis_client, document)
    inbox = AlertInbox(StaticTokens([TOKEN]))
    inbox.receiver = AlertReceiver(context, Planner.from_settings(context.settings, False))
    runner = web.AppRunner(build_app(context, OpenAccess(), inbox))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{bound_port(runner)}/api/v1/alertmanager"
    now = datetime.now(UTC).replace(microsecond=0)
    labels = {"alertname": "Down", "severity": "critical", "component": "api"}
    try:
        with Alertmanager(tmp_path / "am", url, token=TOKEN, group_by=["alertname"]) as am:
            start = now - timedelta(minutes=30)
            starts = {"a": start + timedelta(minutes=1), "b": start + timedelta(minutes=2)}
            for instance, starts_at in starts.items():
                await asyncio.to_thread(am.post, {**labels, "instance": instance},
                                        starts_at=starts_at)
            (opened,) = await wait_outbox(redis_client, 1)
            key = opened[1]
            assert key.startswith("alertmanager:group:") and opened[2] == "TODO"
            await asyncio.to_thread(am.post, {**labels, "instance": "a"},
                                    starts_at=starts["a"], ends_at=now - timedelta(minutes=20))
            served = context.metrics.alertmanager_notifications.labels("accepted")
            seen = served._value.get()
            async with asyncio.timeout(20):          # the group re-sent, b still firing
                while served._value.get() < seen + 2:
                    await asyncio.sleep(0.05)
            assert len(await outbox(redis_client)) == 1
            await asyncio.to_thread(am.post, {**labels, "instance": "b"},
                                    starts_at=starts["b"], ends_at=now - timedelta(minutes=10))
            resolved = (await wait_outbox(redis_client, 2))[1]
            assert resolved == ("connection_id:1", key, "DONE")
            await asyncio.to_thread(am.post, {**labels, "instance": "a"},
                                    starts_at=now - timedelta(minutes=5))
            again = (await wait_outbox(redis_client, 3))[2]
            assert again[1] != key and again[2] == "TODO"
    finally:
        await runner.cleanup()
    entries = [OutboxEntry.model_validate_json(fields["entry"])
               for _, fields in await redis_client.xrange(Keys("t").outbox_stream)]
    assert [e.payload["title"] for e in entries] == ["Down (api)"] * 3
    assert entries[0].payload["createdDate"] == (start + timedelta(minutes=1)).isoformat()
    assert entries[1].payload["resolutionDate"] == (now - timedelta(minutes=10)).isoformat()


# --- the daemon hands the receiver over ------------------------------------------------------


@pytest.mark.parametrize("devlake", [True, False])
async def test_the_daemon_serves_notifications_once_redis_answers(
        tmp_path: Path, devlake: bool) -> None:
    """With DevLake on, the running daemon stages notifications; off, it answers 503 saying
    why (Alertmanager retries), never 200 for incidents that would go nowhere."""
    with FakeWorld(tmp_path / "world", redis_appendonly=False) as world:
        daemon = Daemon(world.config({
            "argocd": {"enabled": False}, "webrca": {"enabled": False},
            "alertmanager": {"enabled": True},
            "integration": {"devlake": {"enabled": devlake}}}))
        task = asyncio.create_task(daemon.run())
        try:
            await eventually(lambda: daemon.alerts is not None and (
                daemon.alerts.receiver is not None
                or "integration.devlake" in daemon.alerts.unavailable), what="the hand-over")
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"http://127.0.0.1:{daemon.port}/api/v1/alertmanager", content=body())
            if devlake:
                assert answer.status_code == 200 and answer.json()["staged"] == 1
                await eventually(lambda: len(world.devlake.accepted("issue")) == 1,
                                 what="the incident in DevLake")
            else:
                assert answer.status_code == 503
                assert "integration.devlake is disabled" in answer.json()["error"]
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 30)
