"""DeliveryPool against the fake DevLake over real HTTP, with a real redis-server."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from doraforwarder import outbox
from doraforwarder.devlake.client import DryRunPrinter
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.keys import OUTBOX_GROUP
from doraforwarder.outbox import OutboxEntry, Target
from doraforwarder.server import bound_port, start_http
from doraforwarder.testing.fake_devlake import FakeDevLake
from tests.devlake_support import (
    GLOBAL,
    TOKEN,
    RunningService,
    deployment_entry,
    deployment_payload,
    devlake_section,
    eventually,
    issue_entries,
    make_context,
    stage,
)

TEAM = Target(kind="connection_name", value="team-build", team="build")
PROJECT = Target(kind="project_name", value="DORA", team="release")


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=TOKEN, connections={1: "global", 6: "team-build"},
                     projects=["DORA"]) as fake:
        yield fake


def counter(context, name: str, **labels: str) -> float:
    value = context.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def outbox_empty(redis: aioredis.Redis, context) -> bool:
    return await outbox_length(redis, context, 0)


async def outbox_length(redis: aioredis.Redis, context, length: int) -> bool:
    return await redis.xlen(context.keys.outbox_stream) == length


async def test_delivers_to_every_target_and_acknowledges(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    entries = [deployment_entry(f"svc:{n}", target)
               for n in range(3) for target in (GLOBAL, TEAM, PROJECT)]
    await stage(redis_client, context.keys, entries)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context), what="outbox drained")
    assert devlake.deployment_ids(1) == {"svc:0", "svc:1", "svc:2"}
    assert devlake.deployment_ids(6) == {"svc:0", "svc:1", "svc:2"}
    project_connection = devlake.project_connection("DORA")
    assert project_connection is not None
    assert devlake.deployment_ids(project_connection) == {"svc:0", "svc:1", "svc:2"}
    assert {p.authorization for p in devlake.posts()} == {f"Bearer {TOKEN}"}
    # nine records, plus the project route's first call: it creates DORA_deployments and
    # answers 404 (DevLake v1.0.3), and calls in flight meanwhile 400: all sent again
    assert len(devlake.accepted()) == 9
    assert [p.status for p in devlake.posts() if p.status != 200].count(404) == 1
    assert {p.status for p in devlake.posts()} <= {200, 400, 404}
    info = await redis_client.xpending(context.keys.outbox_stream, OUTBOX_GROUP)
    assert info["pending"] == 0
    assert counter(context, "doraforwarder_records_sent_total", kind="deployment",
                   target="connection_id:1") == 3
    assert counter(context, "doraforwarder_deployments_sent_total",
                   target="connection_name:team-build") == 3
    assert counter(context, "doraforwarder_delivery_latency_seconds_count") == 9
    assert len(context.status.recent_deployments) == 9
    assert context.status.recent_deployments[0]["id"].startswith("svc:")
    assert context.readiness.is_ready()


async def test_long_outage_of_errors_and_refused_connections_loses_nothing(
    redis_client, devlake
) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    ids = [f"svc:{n}" for n in range(25)]
    await stage(redis_client, context.keys, [deployment_entry(i) for i in ids])
    devlake.fail_always(503)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: len(devlake.posts(status=503)) >= 200, what="many 503s")
        devlake.stop()  # connection refused
        await eventually(
            lambda: counter(context, "doraforwarder_delivery_retries_total",
                            reason="network") >= 100, what="many refused connections")
        devlake.fail_next(30, 502)
        devlake.start()
        devlake.clear_faults()
        devlake.fail_next(40, 500)
        await eventually(lambda: outbox_empty(redis_client, context), what="outbox drained")
    assert devlake.deployment_ids(1) == set(ids)
    accepted = [p.record_id for p in devlake.accepted("deployment")]
    assert sorted(accepted) == sorted(ids)  # each delivered once, under its own id
    assert counter(context, "doraforwarder_delivery_retries_total", reason="server_error") >= 200
    assert await redis_client.xlen(context.keys.dead_stream) == 0


async def test_429_waits_for_retry_after(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    await stage(redis_client, context.keys, [deployment_entry("svc:1")])
    devlake.rate_limit_next(1, retry_after=0.3)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
    limited, accepted = devlake.posts()
    assert limited.status == 429 and accepted.status == 200
    assert accepted.at - limited.at >= 0.29  # max_backoff is 20ms: Retry-After won
    assert counter(context, "doraforwarder_delivery_retries_total", reason="rate_limited") == 1


async def test_a_rate_limited_target_does_not_hold_up_the_others(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url, teams=[
        {"name": "build", "connection_name": "team-build", "argocd_components": ["svc"]}]),
        delivery={"workers": 1, "max_backoff": "1h"})
    ids = [f"svc:{n}" for n in range(6)]
    await stage(redis_client, context.keys, [deployment_entry(ids[0])]
                + [deployment_entry(i, TEAM) for i in ids[1:]])
    devlake.rate_limit_next(1, retry_after=3600)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: len(devlake.deployment_ids(6)) == 5, what="five delivered")
        # acknowledgements follow the 2xx in batches: wait for them, not just the posts
        await eventually(lambda: outbox_length(redis_client, context, 1),
                         what="the five acknowledged, the limited one kept")
    assert devlake.deployment_ids(6) == set(ids[1:])
    assert devlake.deployment_ids(1) == set()


async def test_retry_after_is_capped_by_max_retry_after(redis_client, devlake) -> None:
    """``Retry-After: 999999999`` once parked the entry (and its target) until a restart."""
    context = make_context(redis_client, devlake_section(devlake.url),
                           delivery={"max_retry_after": "300ms"})
    await stage(redis_client, context.keys, [deployment_entry("svc:1")])
    devlake.rate_limit_next(1, retry_after=999999999)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context), timeout=10)
    limited, accepted = devlake.posts()
    assert limited.status == 429 and accepted.status == 200
    assert 0.29 <= accepted.at - limited.at < 5


async def test_a_429_pauses_every_entry_of_its_target(redis_client, devlake) -> None:
    """Entries of the limited target wait out Retry-After, unsent; another target goes on."""
    context = make_context(redis_client, devlake_section(devlake.url, teams=[
        {"name": "build", "connection_name": "team-build", "argocd_components": ["svc"]}]),
        delivery={"workers": 2})
    limited_ids = [f"svc:{n}" for n in range(5)]
    other_ids = [f"other:{n}" for n in range(5)]
    await stage(redis_client, context.keys, [deployment_entry(limited_ids[0])])
    devlake.rate_limit_next(1, retry_after=1)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: len(devlake.posts(status=429)) == 1, what="the 429")
        await eventually(lambda: GLOBAL.key in context.status.devlake_targets,
                         what="the pause in the status")
        shown = context.status.devlake_targets[GLOBAL.key]
        assert shown["state"] == "rate_limited" and "until" in shown
        await stage(redis_client, context.keys,
                    [deployment_entry(i) for i in limited_ids[1:]]
                    + [deployment_entry(i, TEAM) for i in other_ids])
        await eventually(lambda: outbox_empty(redis_client, context), timeout=20)
    (limited,) = devlake.posts(status=429)
    to_global = [p for p in devlake.posts(status=200) if p.connection_id == 1]
    to_team = [p for p in devlake.posts(status=200) if p.connection_id == 6]
    assert {p.record_id for p in to_global} == set(limited_ids)
    assert {p.record_id for p in to_team} == set(other_ids)
    assert min(p.at for p in to_global) - limited.at >= 0.99  # no request to it meanwhile
    assert max(p.at for p in to_team) - limited.at < 0.99  # the other target went on
    assert len(devlake.posts()) == 11
    assert context.status.devlake_targets == {}  # accepted again: no longer shown


async def test_timeouts_are_retried(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url, timeout_seconds=0.1))
    await stage(redis_client, context.keys, [deployment_entry("svc:slow")])
    devlake.slow(1.0)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: counter(context, "doraforwarder_delivery_retries_total",
                                         reason="timeout") >= 2, what="timeouts")
        devlake.slow(0)
        await eventually(lambda: outbox_empty(redis_client, context))
    assert devlake.deployment_ids(1) == {"svc:slow"}


async def test_400_goes_to_dead_letters_and_requeue_delivers_it(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    await stage(redis_client, context.keys, [deployment_entry("svc:bad"),
                                             deployment_entry("svc:good")])
    devlake.fail_next(1, 400)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
        dead = await outbox.read_stream(redis_client, context.keys.dead_stream)
        assert len(dead) == 1
        fields = dead[0].fields
        assert fields["status"] == "400"
        assert fields["reason"].startswith("rejected: HTTP 400")
        assert "injected failure" in fields["body"]
        assert counter(context, "doraforwarder_dead_lettered_total", reason="rejected") == 1
        await eventually(lambda: context.status.dead_letters == 1, what="status dead letters")
        assert len(devlake.deployment_ids(1)) == 1
        await outbox.requeue(redis_client, context.keys, dead[0].id)
        await eventually(lambda: len(devlake.deployment_ids(1)) == 2, what="requeued delivered")
        await eventually(lambda: outbox_empty(redis_client, context))
    assert await redis_client.xlen(context.keys.dead_stream) == 0


async def test_a_body_past_config_ui_limit_is_dead_lettered_as_too_large(
        redis_client, devlake) -> None:
    """config-ui's nginx answers 413 past its client_max_body_size (20m; smaller here, as a
    user's proxy may set it): retrying cannot pass it, the dead letter says why and what to do."""
    context = make_context(redis_client, devlake_section(devlake.url))
    big = deployment_payload("svc:big")
    big["deploymentCommits"][0]["commitMsg"] = "x" * 2000
    devlake.config_ui_max_body = 1500
    await stage(redis_client, context.keys, [
        OutboxEntry(kind="deployment", target=GLOBAL, record_id="svc:big", payload=big),
        deployment_entry("svc:small")])
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
    dead = await outbox.read_stream(redis_client, context.keys.dead_stream)
    assert len(dead) == 1 and dead[0].fields["status"] == "413"
    reason = dead[0].fields["reason"]
    assert reason.startswith("too_large: HTTP 413 from POST ")
    size = len(json.dumps(big, separators=(",", ":")))
    assert f"the body ({size} bytes)" in reason and "client_max_body_size" in reason
    assert counter(context, "doraforwarder_dead_lettered_total", reason="too_large") == 1
    assert devlake.deployment_ids(1) == {"svc:small"}


async def test_more_commit_rows_than_devlake_stores_are_dead_lettered(redis_client,
                                                                     devlake) -> None:
    """DevLake v1.0.3 and main 420e494b answer 500 (MySQL: too many placeholders) to a
    deployment of more than 2114 commit rows, every time: dead letter, not retried forever."""
    context = make_context(redis_client, devlake_section(devlake.url))
    big = deployment_payload("svc:big")
    row = big["deploymentCommits"][0]
    big["deploymentCommits"] = [row | {"commitSha": f"{n:040x}"} for n in range(2115)]
    fits = deployment_payload("svc:fits")
    fits["deploymentCommits"] = big["deploymentCommits"][:2114]
    await stage(redis_client, context.keys, [
        OutboxEntry(kind="deployment", target=GLOBAL, record_id="svc:big", payload=big),
        OutboxEntry(kind="deployment", target=GLOBAL, record_id="svc:fits", payload=fits)])
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
    dead = await outbox.read_stream(redis_client, context.keys.dead_stream)
    assert len(dead) == 1 and dead[0].fields["status"] == "500"
    reason = dead[0].fields["reason"]
    assert reason.startswith("too_many_commits: HTTP 500 from POST ")
    assert "cannot store 2115 commit rows" in reason and "github.max_commits" in reason
    assert devlake.deployment_ids(1) == {"svc:fits"}


async def test_unknown_connection_is_dead_lettered_until_fixed(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    missing = Target(kind="connection_id", value="42", team="ghost")
    await stage(redis_client, context.keys, [deployment_entry("svc:1", missing)])
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: redis_client.xlen(context.keys.dead_stream), what="dead")
        dead = await outbox.read_stream(redis_client, context.keys.dead_stream)
        assert dead[0].fields["status"] == "404"
        assert dead[0].fields["reason"].startswith("not_found")
        devlake.add_connection(42, "ghost")
        moved, errors = await outbox.requeue_all(redis_client, context.keys)
        assert len(moved) == 1 and not errors
        await eventually(lambda: devlake.deployment_ids(42) == {"svc:1"}, what="delivered")


async def test_payload_breaking_the_contract_is_never_sent(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    bad = deployment_payload("svc:1") | {"deploymentCommits": []}
    await stage(redis_client, context.keys, [
        OutboxEntry(kind="deployment", target=GLOBAL, record_id="svc:1", payload=bad),
        OutboxEntry(kind="issue", target=PROJECT, record_id="K", payload={}),
    ])
    await redis_client.xadd(context.keys.outbox_stream, {"garbage": "1"})
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
    dead = await outbox.read_stream(redis_client, context.keys.dead_stream)
    reasons = sorted(d.fields["reason"].split(":")[0] for d in dead)
    assert reasons == ["invalid_payload", "invalid_payload", "unreadable"]
    assert devlake.posts() == []


async def test_refused_key_waits_and_is_named_but_readyz_stays_ready(
    redis_client, devlake
) -> None:
    context = make_context(redis_client, devlake_section(devlake.url, refused_recheck="50ms"),
                           token="wrong-token")
    await stage(redis_client, context.keys, [deployment_entry(f"svc:{n}") for n in range(5)])
    runner = await start_http(context, "127.0.0.1", 0)
    port = bound_port(runner)
    try:
        async with httpx.AsyncClient() as http, RunningService(DeliveryPool(context)):
            await eventually(lambda: len(devlake.posts(status=403)) >= 3, what="403 rechecks")
            assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            status = (await http.get(f"http://127.0.0.1:{port}/api/v1/status")).json()
            refused = status["devlake_targets"]["connection_id:1"]
            assert refused["state"] == "refused" and refused["cause"] == "invalid_key"
            assert "DEVLAKE_WEBHOOK_TOKEN" in refused["reason"]
            assert "wrong-token" not in json.dumps(status)
            assert gauge(context, "connection_id:1", "invalid_key") == 1
            assert await redis_client.xlen(context.keys.outbox_stream) == 5  # kept
            devlake.set_token("wrong-token")  # the operator fixes the key in DevLake
            await eventually(lambda: outbox_empty(redis_client, context))
            status = (await http.get(f"http://127.0.0.1:{port}/api/v1/status")).json()
            assert status["devlake_targets"] == {}
    finally:
        await runner.cleanup()
    assert devlake.deployment_ids(1) == {f"svc:{n}" for n in range(5)}
    assert len(devlake.posts(status=200)) == 5
    assert gauge(context, "connection_id:1", "invalid_key") == 0


def gauge(context, target: str, cause: str) -> float | None:
    return context.metrics.registry.get_sample_value(
        "doraforwarder_devlake_target_refused", {"target": target, "cause": cause})


async def test_missing_token_is_401_and_kept(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url, refused_recheck="50ms"),
                           token=None)
    await stage(redis_client, context.keys, [deployment_entry("svc:1")])
    pool = DeliveryPool(context)
    async with RunningService(pool):
        await eventually(lambda: len(devlake.posts(status=401)) >= 2, what="401s")
        assert pool.refused["connection_id:1"].refusal.cause == "missing_key"
        assert context.readiness.is_ready()
    assert await redis_client.xlen(context.keys.outbox_stream) == 1


async def test_issue_states_arrive_in_order_and_close_after_the_upsert(
    redis_client, devlake
) -> None:
    context = make_context(redis_client, devlake_section(devlake.url),
                           delivery={"workers": 8})
    keys = [f"INC-{n}" for n in range(6)]
    for key in keys:  # each producer transaction: upsert(s), then close
        await stage(redis_client, context.keys,
                    issue_entries(key, "TODO", "IN_PROGRESS", "DONE", close=True))
    devlake.fail_next(7, 503)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context), what="outbox drained")
    for key in keys:
        sequence = [(p.kind, p.body and p.body["status"])
                    for p in devlake.accepted() if p.record_id == key]
        assert sequence == [("issue", "TODO"), ("issue", "IN_PROGRESS"), ("issue", "DONE"),
                            ("close", None)], key
        assert devlake.issue(1, key)["closed"] is True


async def test_close_waits_for_the_issue_even_across_retries(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url),
                           delivery={"workers": 4})
    await stage(redis_client, context.keys, issue_entries("INC-1", "DONE", close=True))
    devlake.fail_next(10, 503)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
    kinds = [p.kind for p in devlake.posts()]
    assert kinds[-2:] == ["issue", "close"] and kinds.count("close") == 1
    assert all(p.kind == "issue" for p in devlake.posts(status=503))
    assert [p.status for p in devlake.posts("close")] == [200]


async def test_requeued_old_state_never_overwrites_a_newer_one(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url), delivery={"workers": 1})
    await stage(redis_client, context.keys, issue_entries("INC-1", "TODO", "DONE"))
    devlake.fail_next(1, 400)  # the TODO state is refused
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
        assert devlake.issue(1, "INC-1")["status"] == "DONE"
        moved, _ = await outbox.requeue_all(redis_client, context.keys)
        assert len(moved) == 1
        await eventually(lambda: outbox_empty(redis_client, context))
    assert devlake.issue(1, "INC-1")["status"] == "DONE"
    assert len(devlake.accepted("issue")) == 1


async def test_dry_run_prints_one_json_line_per_entry_and_sends_nothing(
    redis_client, devlake, capsys
) -> None:
    context = make_context(redis_client, devlake_section(devlake.url), dry_run=True)
    await stage(redis_client, context.keys,
                [deployment_entry("svc:1"), deployment_entry("svc:1", TEAM),
                 *issue_entries("INC-1", "DONE", close=True)])
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith('{"target"')]
    assert [(line["kind"], line["target"]) for line in lines] == [
        ("deployment", "connection_id:1"), ("deployment", "connection_name:team-build"),
        ("issue", "connection_id:1"), ("close", "connection_id:1")]
    assert lines[0]["url"] == f"{devlake.url}/api/rest/plugins/webhook/connections/1/deployments"
    assert lines[0]["payload"] == deployment_payload("svc:1")
    assert lines[3]["payload"] is None
    assert devlake.posts() == []


async def test_dry_run_printer_is_reusable_on_its_own() -> None:
    stream = io.StringIO()
    printer = DryRunPrinter(stream)
    entry = deployment_entry("svc:1")
    answer = await printer.deliver(entry, "http://x/deployments", entry.payload)
    assert answer.status == 200
    assert json.loads(stream.getvalue())["record_id"] == "svc:1"
    assert stream.getvalue().count("\n") == 1


async def test_entries_of_a_crashed_consumer_are_reclaimed(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    await stage(redis_client, context.keys, [deployment_entry(f"svc:{n}") for n in range(4)])
    await outbox.ensure_group(redis_client, context.keys.outbox_stream, OUTBOX_GROUP)
    taken = await redis_client.xreadgroup(OUTBOX_GROUP, "crashed-worker",
                                          {context.keys.outbox_stream: ">"}, count=3)
    assert len(taken[0][1]) == 3
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: outbox_empty(redis_client, context))
    assert devlake.deployment_ids(1) == {f"svc:{n}" for n in range(4)}
    info = await redis_client.xpending(context.keys.outbox_stream, OUTBOX_GROUP)
    assert info["pending"] == 0


async def test_held_retrying_entries_are_not_stolen_by_another_replica(
    redis_client, devlake
) -> None:
    """A replica retrying for longer than claim_idle keeps its entries fresh."""
    context_a = make_context(redis_client, devlake_section(devlake.url),
                             delivery={"claim_idle": "150ms", "initial_backoff": "400ms",
                                       "max_backoff": "400ms"})
    context_b = make_context(redis_client, devlake_section(devlake.url),
                             delivery={"claim_idle": "150ms"})
    await stage(redis_client, context_a.keys, [deployment_entry("svc:1")])
    devlake.fail_always(503)
    async with RunningService(DeliveryPool(context_a, consumer="a")):
        await eventually(lambda: len(devlake.posts()) >= 1, what="first attempt by a")
        async with RunningService(DeliveryPool(context_b, consumer="b")):
            await eventually(lambda: len(devlake.posts()) >= 3, what="a few retries")
            info = await redis_client.xpending(context_a.keys.outbox_stream, OUTBOX_GROUP)
            assert [c["name"] for c in info["consumers"]] == ["a"]
            devlake.clear_faults()
            await eventually(lambda: outbox_empty(redis_client, context_a))


async def test_nothing_is_acknowledged_before_devlake_answers(redis_client, devlake) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    await stage(redis_client, context.keys, [deployment_entry(f"svc:{n}") for n in range(3)])
    devlake.hold()
    async with RunningService(DeliveryPool(context)):
        await asyncio.to_thread(devlake.wait_for_held, 3)
        assert await redis_client.xlen(context.keys.outbox_stream) == 3
        info = await redis_client.xpending(context.keys.outbox_stream, OUTBOX_GROUP)
        assert info["pending"] == 3
        devlake.release()
        await eventually(lambda: outbox_empty(redis_client, context), what="outbox drained")
    assert devlake.deployment_ids(1) == {"svc:0", "svc:1", "svc:2"}


async def test_first_deployments_of_a_project_target_in_parallel_are_all_delivered(
        redis_client, devlake) -> None:
    """DevLake v1.0.3 (real server): the call that creates ``DORA_deployments`` answers
    404, calls that looked it up meanwhile 400 ``the connection name already exists``;
    both are sent again, none is dead-lettered (the real run lost team-b's first one)."""
    context = make_context(redis_client, devlake_section(devlake.url),
                           delivery={"workers": 4})
    await stage(redis_client, context.keys,
                [deployment_entry(f"svc:{n}", PROJECT) for n in range(3)])
    devlake.hold()
    async with RunningService(DeliveryPool(context)):
        await asyncio.to_thread(devlake.wait_for_held, 3)
        devlake.release()
        await eventually(lambda: outbox_empty(redis_client, context), what="outbox drained")
    assert sorted(p.status for p in devlake.posts() if p.status != 200) == [400, 400, 404]
    project_connection = devlake.project_connection("DORA")
    assert project_connection is not None
    assert devlake.deployment_ids(project_connection) == {"svc:0", "svc:1", "svc:2"}
    assert await redis_client.xlen(context.keys.dead_stream) == 0


async def test_stopping_acknowledges_what_was_delivered_and_keeps_the_rest(
    redis_client, devlake
) -> None:
    """Acknowledgements are batched; stopping must not leave a delivered entry behind."""
    context = make_context(redis_client, devlake_section(devlake.url),
                           delivery={"workers": 4})
    await stage(redis_client, context.keys, [deployment_entry(f"svc:{n}") for n in range(30)])
    devlake.hold()
    service = RunningService(DeliveryPool(context))
    async with service:
        await asyncio.to_thread(devlake.wait_for_held, 4)
        service.stop_event.set()  # stop while four posts are in flight ...
        for _ in range(5):
            await asyncio.sleep(0)
        devlake.release()  # ... and answered 2xx afterwards
        await service.stop()
    assert len(devlake.deployment_ids(1)) == 4
    assert await redis_client.xlen(context.keys.outbox_stream) == 26
    info = await redis_client.xpending(context.keys.outbox_stream, OUTBOX_GROUP)
    assert info["pending"] == 26  # read but never sent: reclaimed by the next consumer


async def test_a_backlog_is_read_and_acknowledged_in_batches(redis_client, devlake) -> None:
    """Draining a backlog costs a few Redis round trips per hundred entries, not per entry."""
    context = make_context(redis_client, devlake_section(devlake.url),
                           delivery={"workers": 4})
    records = 1200
    await stage(redis_client, context.keys,
                [deployment_entry(f"svc:{n}") for n in range(records)])
    await redis_client.config_resetstat()
    async with RunningService(DeliveryPool(context, max_held=400)):
        await eventually(lambda: outbox_empty(redis_client, context), what="outbox drained")
    stats = await redis_client.info("commandstats")
    reads = stats["cmdstat_xreadgroup"]["calls"]
    acks = stats["cmdstat_xack"]["calls"]
    assert len(devlake.deployment_ids(1)) == records
    assert reads <= records // 50, f"{reads} XREADGROUP for {records} entries"
    assert acks <= records // 10, f"{acks} XACK for {records} entries"
