"""The WebRCA poller end to end: fake SSO + WebRCA over HTTP, a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from structlog.testing import capture_logs

from doraforwarder.config import LoadedConfig, Secrets, validate_settings
from doraforwarder.context import AppContext
from doraforwarder.devlake.payloads import IssuePayload
from doraforwarder.devlake.plan import Planner
from doraforwarder.keys import Keys
from doraforwarder.outbox import OutboxEntry
from doraforwarder.testing.fake_webrca import FakeWebRCA
from doraforwarder.testing.redis_server import RedisServer
from doraforwarder.webrca.lease import RedisLease
from doraforwarder.webrca.poller import WebRCAPoller

GOOD = "offline-token-good"
PollerFactory = Callable[..., WebRCAPoller]


@pytest.fixture
def fake() -> Iterator[FakeWebRCA]:
    with FakeWebRCA((GOOD,)) as server:
        yield server


def make_context(redis: aioredis.Redis, fake: FakeWebRCA, *, offline: str | None = GOOD,
                 products: list[str] | None = None, page_size: int = 2,
                 close_resolved: bool = False, teams: list[dict[str, Any]] | None = None,
                 devlake_enabled: bool = True, dry_run: bool = False,
                 products_absent: bool = False) -> AppContext:
    devlake: dict[str, Any] = {"enabled": devlake_enabled, "teams": teams or []}
    if devlake_enabled:
        devlake.update(base_url="http://devlake.invalid", project_id="1")
    webrca = {"enabled": True, "api_url": fake.api_url, "token_url": fake.token_url,
              "products": products or [], "page_size": page_size,
              "close_resolved": close_resolved, "timeout_seconds": 5}
    if products_absent:
        del webrca["products"]
    settings = validate_settings({
        "webrca": webrca,
        "argocd": {"enabled": False},
        "integration": {"devlake": devlake},
    }, "test")
    secrets = Secrets(offline_token=SecretStr(offline) if offline is not None else None)
    config = LoadedConfig(settings=settings, secrets=secrets, source="test")
    return AppContext(config=config, redis=redis, keys=Keys("test"), dry_run=dry_run)


@pytest.fixture
async def make_poller(redis_client: aioredis.Redis,
                      fake: FakeWebRCA) -> AsyncIterator[PollerFactory]:
    created: list[WebRCAPoller] = []

    def factory(redis: aioredis.Redis | None = None, *, interval_ms: float = 60_000,
                attempts: int = 3, lease_ttl_ms: int = 10_000, max_pages: int = 1000,
                **settings: Any) -> WebRCAPoller:
        context = make_context(redis or redis_client, fake, **settings)
        planner = Planner.from_settings(context.settings, context.dry_run)
        poller = WebRCAPoller(context, planner=planner, interval_ms=interval_ms, retry_base_ms=1,
                              retry_cap_ms=5, attempts=attempts,
                              lease_ttl_ms=lease_ttl_ms, max_pages=max_pages)
        created.append(poller)
        return poller

    yield factory
    for poller in created:
        await poller.aclose()


async def outbox(poller: WebRCAPoller) -> list[OutboxEntry]:
    """Every staged entry; issue payloads must pass the DevLake contract."""
    context = poller.context
    rows = await context.redis.xrange(context.keys.outbox_stream)
    entries = [OutboxEntry.from_fields(fields) for _, fields in rows]
    for entry in entries:
        if entry.kind == "issue":
            payload = IssuePayload.model_validate(entry.payload)
            assert payload.body() == entry.payload
            assert entry.record_id == payload.issue_key
            assert entry.order_key == f"issue:{entry.target.key}:{entry.record_id}"
        else:
            assert entry.kind == "close" and entry.payload == {}
    return entries


def seed(fake: FakeWebRCA, count: int, **fields: Any) -> list[str]:
    ids = [f"ITN-2025-{n:05d}" for n in range(1, count + 1)]
    for incident_id in ids:
        fake.add_incident(incident_id, **fields)
        fake.tick()
    return ids


# --- pages, tokens ------------------------------------------------------------------

async def test_three_pages_with_a_short_last_page(fake: FakeWebRCA,
                                                  make_poller: PollerFactory) -> None:
    ids = seed(fake, 5)
    poller = make_poller()
    report = await poller.poll_once()
    assert (report.outcome, report.incidents, report.changed, report.pages) == ("ok", 5, 5, 3)
    assert [(r["page"], r["size"]) for r in fake.incident_requests] == [(1, 2), (2, 2), (3, 2)]
    entries = await outbox(poller)
    assert [e.record_id for e in entries] == ids
    assert {e.target.key for e in entries} == {"connection_id:1"}
    first = entries[0].payload
    assert first == {
        "issueKey": "ITN-2025-00001", "title": "Outage ITN-2025-00001",
        "description": "What happened in ITN-2025-00001", "type": "INCIDENT",
        "status": "IN_PROGRESS", "originalStatus": "investigating",
        "createdDate": "2025-03-01T10:00:00+00:00", "severity": "major",
        "component": "konflux", "url": "https://web-rca.devshift.net/incident/ITN-2025-00001",
    }
    context = poller.context
    assert context.readiness.is_ready("webrca")
    assert context.status.last_webrca_poll is not None
    assert context.status.last_webrca_poll["outcome"] == "ok"
    assert context.status.last_webrca_poll["changed"] == 5
    stored = json.loads(await context.redis.get(context.keys.webrca_last_poll))
    assert stored == context.status.last_webrca_poll
    assert await context.redis.hlen(context.keys.incident_fingerprints) == 5
    metrics = context.metrics
    assert metrics.incidents_seen._value.get() == 5
    assert metrics.incidents_changed._value.get() == 5
    assert metrics.webrca_polls.labels("ok")._value.get() == 1


async def test_total_caps_pagination(fake: FakeWebRCA, make_poller: PollerFactory) -> None:
    seed(fake, 4)
    report = await make_poller().poll_once()
    assert (report.outcome, report.pages, report.changed) == ("ok", 2, 4)
    assert len(fake.incident_requests) == 2  # no empty third page


async def test_a_server_that_never_ends_pages_is_cut_by_total(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 5)
    fake.endless = True
    report = await make_poller().poll_once()
    assert report.outcome == "ok"
    assert len(fake.incident_requests) == 3


async def test_without_total_the_hard_page_limit_applies(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 5)
    fake.endless = True
    fake.announce_total = False
    with capture_logs() as logs:
        report = await make_poller(max_pages=4).poll_once()
    assert report.outcome == "ok" and report.pages == 4
    assert len(fake.incident_requests) == 4
    assert any(entry["event"] == "webrca page limit reached; later pages not read"
               for entry in logs)


async def test_token_is_cached_across_pages_and_polls(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 5)
    poller = make_poller()
    await poller.poll_once()
    await poller.poll_once()
    assert len(fake.incident_requests) == 6
    assert fake.token_exchanges == 1


async def test_token_expiring_mid_pagination(fake: FakeWebRCA,
                                             make_poller: PollerFactory) -> None:
    ids = seed(fake, 5)
    fake.expire_tokens_after(1)
    poller = make_poller()
    report = await poller.poll_once()
    assert (report.outcome, report.changed) == ("ok", 5)
    assert [(r["page"], r["status"]) for r in fake.incident_requests] == [
        (1, 200), (2, 401), (2, 200), (3, 200)]
    assert fake.token_exchanges == 2
    assert [e.record_id for e in await outbox(poller)] == ids


async def test_invalid_offline_token(fake: FakeWebRCA, make_poller: PollerFactory) -> None:
    seed(fake, 2)
    poller = make_poller(offline="offline-token-revoked")
    with capture_logs() as logs:
        report = await poller.poll_once()
        again = await poller.poll_once()
    assert report.outcome == again.outcome == "configuration_error"
    readiness = poller.context.readiness
    assert readiness.reasons() == ["webrca: offline token rejected (invalid_grant)"]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 2  # once per poll
    assert errors[0]["reason"] == "offline token rejected (invalid_grant)"
    assert "offline-token-revoked" not in repr(logs)
    assert "offline-token-revoked" not in json.dumps(poller.context.status.snapshot())
    assert fake.incident_requests == []
    assert await outbox(poller) == []
    # The operator fixes the token in SSO: the next poll works and /readyz is green.
    fake.offline_tokens.add("offline-token-revoked")
    assert (await poller.poll_once()).outcome == "ok"
    assert readiness.is_ready("webrca")


async def test_missing_offline_token(fake: FakeWebRCA, make_poller: PollerFactory) -> None:
    poller = make_poller(offline=None)
    report = await poller.poll_once()
    assert report.outcome == "configuration_error"
    assert poller.context.readiness.reasons() == [
        "webrca: OFFLINE_TOKEN is not set; WebRCA cannot be polled"]
    assert fake.token_exchanges == 0 and fake.token_rejections == 0


async def test_secrets_never_reach_logs(fake: FakeWebRCA, make_poller: PollerFactory) -> None:
    seed(fake, 3)
    fake.expire_tokens_after(1)
    with capture_logs() as logs:
        await make_poller().poll_once()
    text = repr(logs)
    assert GOOD not in text
    assert fake.token_exchanges == 2
    for access_token in fake._access_tokens:
        assert access_token not in text


# --- what is sent ---------------------------------------------------------------------

async def test_product_filter_and_team_routing(fake: FakeWebRCA,
                                               make_poller: PollerFactory) -> None:
    fake.add_incident("ITN-1", products=["konflux"])
    fake.add_incident("ITN-2", products=["rhtap"])
    fake.add_incident("ITN-3", products=["rhtap", "konflux"])
    fake.add_incident("ITN-4", products=[])
    teams = [{"name": "build", "project_id": "6", "webrca_products": ["konflux"]},
             {"name": "rhtap", "project_id": "7", "webrca_products": ["rhtap"]}]
    poller = make_poller(products=["konflux"], teams=teams)
    report = await poller.poll_once()
    assert (report.incidents, report.changed) == (2, 2)
    routed = {(e.record_id, e.target.key, e.payload["component"]) for e in await outbox(poller)}
    assert routed == {
        ("ITN-1", "connection_id:1", "konflux"), ("ITN-1", "connection_id:6", "konflux"),
        ("ITN-3", "connection_id:1", "konflux"), ("ITN-3", "connection_id:6", "konflux"),
        ("ITN-3", "connection_id:7", "konflux"),
    }


async def test_no_product_filter_takes_every_incident(fake: FakeWebRCA,
                                                      make_poller: PollerFactory) -> None:
    fake.add_incident("ITN-1", products=["rhtap", "konflux"])
    fake.add_incident("ITN-2", products=[])
    poller = make_poller()
    assert (await poller.poll_once()).changed == 2
    payloads = {e.record_id: e.payload for e in await outbox(poller)}
    assert payloads["ITN-1"]["component"] == "rhtap"
    assert "component" not in payloads["ITN-2"]


async def test_products_absent_forwards_konflux_only_as_the_reference(
        fake: FakeWebRCA, make_poller: PollerFactory) -> None:
    # The reference's file has no webrca.products: it forwards konflux incidents only,
    # each with component "konflux", whatever else the incident touches.
    fake.add_incident("ITN-1", products=["konflux"])
    fake.add_incident("ITN-2", products=["rhtap"])
    fake.add_incident("ITN-3", products=["rhtap", "konflux"])
    fake.add_incident("ITN-4", products=[])
    poller = make_poller(products_absent=True)
    assert poller.settings.products == ["konflux"] and poller.settings.products_defaulted
    assert (await poller.poll_once()).changed == 2
    components = {e.record_id: e.payload["component"] for e in await outbox(poller)}
    assert components == {"ITN-1": "konflux", "ITN-3": "konflux"}


async def test_updated_at_bumps_send_nothing(fake: FakeWebRCA,
                                             make_poller: PollerFactory) -> None:
    seed(fake, 3)
    fake.add_incident("ITN-resolved", status="resolved", resolved_at=None, last_changed_at=None)
    poller = make_poller()
    assert (await poller.poll_once()).changed == 4
    for _ in range(3):
        fake.tick(10)
        fake.bump_updated_at()
        report = await poller.poll_once()
        assert (report.outcome, report.incidents, report.changed) == ("ok", 4, 0)
    assert len(await outbox(poller)) == 4


async def test_real_changes_are_sent_again(fake: FakeWebRCA,
                                           make_poller: PollerFactory) -> None:
    seed(fake, 2)
    poller = make_poller()
    await poller.poll_once()
    fake.update_incident("ITN-2025-00002", severity="critical", summary="Worse")
    fake.add_incident("ITN-new")
    assert (await poller.poll_once()).changed == 2
    entries = await outbox(poller)
    assert [e.record_id for e in entries[2:]] == ["ITN-2025-00002", "ITN-new"]
    assert entries[2].payload["severity"] == "critical"
    assert entries[2].payload["title"] == "Worse"


async def test_resolve_then_reopen(fake: FakeWebRCA, make_poller: PollerFactory) -> None:
    fake.add_incident("ITN-1")
    poller = make_poller()
    await poller.poll_once()
    fake.tick(90)
    fake.resolve("ITN-1")
    assert (await poller.poll_once()).changed == 1
    fake.tick(30)
    fake.reopen("ITN-1", status="monitoring")
    assert (await poller.poll_once()).changed == 1
    fake.tick(30)
    fake.resolve("ITN-1", status="closed", resolved_at=None)
    assert (await poller.poll_once()).changed == 1
    states = [(e.payload["status"], e.payload["originalStatus"], e.payload.get("resolutionDate"))
              for e in await outbox(poller)]
    assert states == [
        ("IN_PROGRESS", "investigating", None),
        ("DONE", "resolved", "2025-03-01T11:30:00+00:00"),
        ("IN_PROGRESS", "monitoring", None),
        ("DONE", "closed", "2025-03-01T12:30:00+00:00"),  # last_changed_at fallback
    ]


async def test_close_entries_follow_the_upsert(fake: FakeWebRCA,
                                               make_poller: PollerFactory) -> None:
    fake.add_incident("ITN-1", products=["konflux"])
    teams = [{"name": "build", "connection_name": "build-hook", "webrca_products": ["konflux"]}]
    poller = make_poller(close_resolved=True, teams=teams)
    await poller.poll_once()
    fake.tick()
    fake.resolve("ITN-1")
    await poller.poll_once()
    entries = [(e.kind, e.target.key, e.order_key) for e in await outbox(poller)]
    assert entries == [
        ("issue", "connection_id:1", "issue:connection_id:1:ITN-1"),
        ("issue", "connection_name:build-hook", "issue:connection_name:build-hook:ITN-1"),
        ("issue", "connection_id:1", "issue:connection_id:1:ITN-1"),
        ("close", "connection_id:1", "issue:connection_id:1:ITN-1"),
        ("issue", "connection_name:build-hook", "issue:connection_name:build-hook:ITN-1"),
        ("close", "connection_name:build-hook", "issue:connection_name:build-hook:ITN-1"),
    ]


async def test_restart_sends_nothing_new(durable_redis_server: RedisServer,
                                         fake: FakeWebRCA, make_poller: PollerFactory) -> None:
    seed(fake, 5)
    client = aioredis.Redis.from_url(durable_redis_server.url, decode_responses=True)
    first = make_poller(client)
    assert (await first.poll_once()).changed == 5
    await first.aclose()
    await client.aclose()
    durable_redis_server.restart()
    fake.tick(5)
    fake.bump_updated_at()
    client = aioredis.Redis.from_url(durable_redis_server.url, decode_responses=True)
    try:
        second = make_poller(client)
        report = await second.poll_once()
        assert (report.outcome, report.incidents, report.changed) == ("ok", 5, 0)
        assert len(await outbox(second)) == 5
        fake.resolve("ITN-2025-00003")
        assert (await second.poll_once()).changed == 1
    finally:
        await client.aclose()


# --- bad answers ------------------------------------------------------------------------

@pytest.mark.parametrize(("page", "fault", "staged_first", "what"), [
    (2, "invalid_json", 3, "invalid_json"),
    (2, "missing_items", 3, "missing_items"),
    (1, "item_missing_incident_id", 4, "missing_incident_id"),
    (3, "item_missing_created_at", 4, "missing_created_at"),
    (1, "item_bad_date", 4, "bad_date"),
    (2, "not_an_object", 4, "not_an_object"),
    (2, "deeply_nested", 3, "too_deep"),  # once a RecursionError out of poll_once
])
async def test_malformed_pages(fake: FakeWebRCA, make_poller: PollerFactory, page: int,
                               fault: Any, staged_first: int, what: str) -> None:
    ids = seed(fake, 5)
    fake.malform_page(page, fault)
    poller = make_poller()
    with capture_logs() as logs:
        report = await poller.poll_once()
    assert (report.outcome, report.changed, report.malformed) == ("partial", staged_first, 1)
    assert report.pages == 3
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["page"] == page
    assert errors[0]["problem"] == what
    assert poller.context.metrics.webrca_malformed.labels(what)._value.get() == 1
    assert poller.context.readiness.is_ready("webrca")
    # The next poll (the server behaves again) catches up on what was skipped.
    report = await poller.poll_once()
    assert (report.outcome, report.changed) == ("ok", 5 - staged_first)
    assert sorted(e.record_id for e in await outbox(poller)) == ids


async def test_an_unforeseen_error_is_a_poll_outcome_never_an_exception(
    fake: FakeWebRCA, make_poller: PollerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``poll_once`` never raises: the polling loop must outlive what nobody foresaw."""
    import doraforwarder.webrca.client as client

    seed(fake, 3)
    real = client.read_page
    calls = 0

    def flaky(text: str, number: int) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return real(text, number)

    monkeypatch.setattr(client, "read_page", flaky)
    poller = make_poller()
    with capture_logs() as logs:
        report = await poller.poll_once()
    assert (report.outcome, report.detail) == ("error", "unexpected RuntimeError")
    assert any(e["event"].startswith("webrca poll failed unexpectedly") for e in logs)
    assert (await poller.poll_once()).outcome == "ok"


async def test_malformed_first_page_without_total_ends_the_poll(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 5)
    fake.malform_page(1, "invalid_json")
    report = await make_poller().poll_once()
    assert (report.outcome, report.pages, report.changed) == ("partial", 1, 0)


async def test_transient_errors_are_retried_within_the_poll(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 3)
    fake.fail_requests(1, 503)
    fake.fail_requests(1, 429, retry_after=0.001)
    poller = make_poller(attempts=3)
    report = await poller.poll_once()
    assert (report.outcome, report.changed) == ("ok", 3)


async def test_an_outage_ends_the_poll_until_the_next_interval(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 3)
    poller = make_poller(attempts=3)
    fake.fail_requests(3, 502)
    report = await poller.poll_once()
    assert report.outcome == "unavailable" and "502" in (report.detail or "")
    assert poller.context.readiness.reasons() == [
        "webrca: last poll failed: WebRCA answered 502 on page 1"]
    assert poller.context.metrics.webrca_polls.labels("unavailable")._value.get() == 1
    fake.server.stop()
    await poller.aclose()  # kept-alive connections would outlive the listener
    assert (await poller.poll_once()).outcome == "unavailable"
    fake.server.start()
    assert (await poller.poll_once()).changed == 3
    assert poller.context.readiness.is_ready("webrca")


async def test_an_outage_on_page_two_keeps_page_one(fake: FakeWebRCA,
                                                    make_poller: PollerFactory) -> None:
    seed(fake, 5)
    poller = make_poller(attempts=2)
    poller_fetch = poller._fetch

    async def fail_after_first(number: int, size: int, stop: asyncio.Event) -> Any:
        if number == 2:
            fake.fail_requests(2, 500)
        return await poller_fetch(number, size, stop)

    poller._fetch = fail_after_first  # type: ignore[method-assign]
    report = await poller.poll_once()
    assert (report.outcome, report.changed) == ("unavailable", 2)
    poller._fetch = poller_fetch  # type: ignore[method-assign]
    assert (await poller.poll_once()).changed == 3


# --- replicas ----------------------------------------------------------------------------

async def test_only_one_replica_polls(fake: FakeWebRCA, make_poller: PollerFactory) -> None:
    seed(fake, 5)
    one, two = make_poller(), make_poller()
    reports = await asyncio.gather(one.poll_once(), two.poll_once())
    assert sorted(r.outcome for r in reports) == ["ok", "skipped"]
    assert len(fake.incident_requests) == 3
    assert len(await outbox(one)) == 5
    skipped = two if reports[1].outcome == "skipped" else one
    # The lease was given back: the other replica polls next time, and sends nothing new.
    assert await one.context.redis.get(one.context.keys.webrca_lease) is None
    report = await skipped.poll_once()
    assert (report.outcome, report.changed) == ("ok", 0)


async def test_a_skipping_replica_shows_the_last_poll_of_the_other(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 1)
    one, two = make_poller(), make_poller()
    await one.poll_once()
    await RedisLease(one.context.redis, one.context.keys.webrca_lease,
                     timedelta(seconds=10)).acquire()
    report = await two.poll_once()
    assert report.outcome == "skipped"
    assert two.context.readiness.is_ready("webrca")
    assert two.context.status.last_webrca_poll == dict(
        one.context.status.last_webrca_poll or {}, polled_by="another replica")


async def test_a_poller_that_lost_its_lease_stages_nothing(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 3)
    poller = make_poller()
    context = poller.context
    fetch = poller._fetch

    async def stolen(number: int, size: int, stop: asyncio.Event) -> Any:
        # The lease expired and another replica took it while this page was in flight.
        await context.redis.set(context.keys.webrca_lease, "someone-else")
        return await fetch(number, size, stop)

    poller._fetch = stolen  # type: ignore[method-assign]
    report = await poller.poll_once()
    assert report.outcome == "lease_lost"
    assert await outbox(poller) == []
    assert await context.redis.get(context.keys.webrca_lease) == "someone-else"


async def test_lease_renewal_and_safe_release(redis_client: aioredis.Redis) -> None:
    mine = RedisLease(redis_client, "lease", timedelta(seconds=10))
    theirs = RedisLease(redis_client, "lease", timedelta(seconds=10))
    assert await mine.acquire()
    assert not await theirs.acquire()
    assert not await theirs.renew()
    assert not await theirs.release()
    assert await mine.renew()
    assert await redis_client.pttl("lease") > 5_000
    assert await mine.release()
    assert await theirs.acquire()
    assert not await mine.release()
    assert await theirs.holder() == theirs.owner


async def test_the_lease_is_renewed_during_a_long_poll(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    """A poll that outlives the lease keeps it through renewals.

    The slow page fetch waits for four renewals (two seconds, longer than the
    1.5 s TTL) instead of sleeping for a fixed window, so a stalled machine
    makes the test slower, never wrong: each renewal has a second of slack.
    """
    seed(fake, 3)
    poller = make_poller(lease_ttl_ms=1_500)
    fetch = poller._fetch
    renew = poller.lease.renew
    renewed = asyncio.Condition()
    renewals = 0

    async def counting_renew() -> bool:
        nonlocal renewals
        kept = await renew()
        async with renewed:
            renewals += kept
            renewed.notify_all()
        return kept

    async def slow(number: int, size: int, stop: asyncio.Event) -> Any:
        async with renewed, asyncio.timeout(30):
            await renewed.wait_for(lambda: renewals >= 4)  # outlived the first TTL
        return await fetch(number, size, stop)

    poller.lease.renew = counting_renew  # type: ignore[method-assign]
    poller._fetch = slow  # type: ignore[method-assign]
    report = await poller.poll_once()
    assert (report.outcome, report.changed) == ("ok", 3)
    assert renewals >= 4


# --- the service loop ---------------------------------------------------------------------

async def test_run_polls_at_start_and_every_interval(fake: FakeWebRCA,
                                                     make_poller: PollerFactory) -> None:
    seed(fake, 3)
    poller = make_poller(interval_ms=10)
    readiness = poller.context.readiness
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    async with asyncio.timeout(10):
        first = await poller.wait_for_polls(1)
        assert first.changed == 3
        fake.resolve("ITN-2025-00001")
        await poller.wait_for_polls(poller.polls + 2)  # a full poll after the change
    assert readiness.is_ready("webrca")
    stop.set()
    async with asyncio.timeout(5):
        await task
    entries = await outbox(poller)
    assert len(entries) == 4 and entries[-1].payload["status"] == "DONE"


async def test_readiness_waits_for_the_first_poll(fake: FakeWebRCA,
                                                  make_poller: PollerFactory) -> None:
    fake.fail_requests(100, 503)
    poller = make_poller(attempts=1)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    async with asyncio.timeout(10):
        await poller.wait_for_polls(1)
    assert not poller.context.readiness.is_ready("webrca")
    stop.set()
    async with asyncio.timeout(5):
        await task


async def test_devlake_disabled_means_no_polling(fake: FakeWebRCA,
                                                 make_poller: PollerFactory) -> None:
    seed(fake, 2)
    poller = make_poller(devlake_enabled=False)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(poller.run(stop))
        await asyncio.sleep(0)
        stop.set()
        async with asyncio.timeout(5):
            await task
    assert [e["event"] for e in logs] == [
        "webrca polling off: integration.devlake is disabled, incidents would have nowhere to go"]
    assert poller.context.readiness.is_ready()
    assert fake.incident_requests == []
    assert (await poller.poll_once()).outcome == "disabled"


async def test_dry_run_without_devlake_still_stages_payloads(
    fake: FakeWebRCA, make_poller: PollerFactory
) -> None:
    seed(fake, 1)
    poller = make_poller(devlake_enabled=False, dry_run=True)
    assert (await poller.poll_once()).changed == 1
    assert [e.target.key for e in await outbox(poller)] == ["connection_name:dry-run"]
