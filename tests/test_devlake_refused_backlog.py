"""A refused target's backlog: a bounded share in memory, the rest parked in Redis.

DevLake refuses the build team's key (an unknown key: 403). Its entries, five
times ``delivery.refused_max_held`` and partly ahead of the global target's in
the stream, must not all be held in memory, and must not hold up the global
target. Once DevLake accepts the key, every one of them arrives exactly once,
without a restart, also across replicas and restarts. Real redis-server, the
strict fake DevLake over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from doraforwarder.config import LoadedConfig, Secrets, Settings
from doraforwarder.context import AppContext
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.devlake.refused import parked_target, parking_member, take_back_allowance
from doraforwarder.devlake.schedule import Held
from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.outbox import OutboxEntry, StreamItem, Target
from doraforwarder.streams import GroupConsumer, ensure_group
from doraforwarder.testing.fake_devlake import FakeDevLake
from tests.devlake_support import (
    RunningService,
    deployment_entry,
    deployment_payload,
    eventually,
    issue_entries,
    stage,
)

GLOBAL = Target(kind="connection_id", value="1")
BUILD = Target(kind="connection_name", value="team-build", team="build")
CAP = 20
REFUSED = 5 * CAP
"""The refused target's entries: five times the cap."""
BUILD_KEY = "build-key"


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=None, connections={1: "global", 6: "team-build"}) as fake:
        fake.add_api_key("admin-wide-key", "/plugins/webhook/.*")
        yield fake  # BUILD_KEY is unknown to it until a test adds it: 403 invalid key


def context_for(redis: aioredis.Redis, base_url: str, **delivery: Any) -> AppContext:
    settings = Settings.model_validate({
        "integration": {"devlake": {
            "enabled": True, "base_url": base_url, "project_id": "1", "timeout_seconds": 2,
            "refused_recheck": "100ms",
            "teams": [{"name": "build", "connection_name": "team-build",
                       "token_env": "BUILD_KEY"}]}},
        "delivery": {"initial_backoff": "2ms", "max_backoff": "20ms", "claim_idle": "300ms",
                     "refused_max_held": CAP, **delivery},
    })
    secrets = Secrets(devlake_webhook_token=SecretStr("admin-wide-key"),
                      devlake_keys={"BUILD_KEY": SecretStr(BUILD_KEY)})
    config = LoadedConfig(settings=settings, secrets=secrets, source="test")
    return AppContext(config=config, redis=redis, keys=Keys("test"))


class WatchedPool(DeliveryPool):
    """Records the most entries (and stored size) of the refused target it held at once.

    Entries are held by reads, reclaims and take-backs, and before the first
    403 by workers: the peak is taken after each of those and at every park.
    """

    peak = 0
    peak_bytes = 0

    def _hold(self, item: StreamItem) -> None:
        super()._hold(item)
        self._note_peak()

    async def _parks_surplus(self, held: Held) -> bool:
        parked = await super()._parks_surplus(held)
        self._note_peak()
        return parked

    def _note_peak(self) -> None:
        if BUILD.key in self.refused:
            self.peak = max(self.peak, self.schedule.count(BUILD.key))
            self.peak_bytes = max(self.peak_bytes, self.schedule.size_of(BUILD.key))


def pool_for(context: AppContext, consumer: str) -> WatchedPool:
    # max_held below the cap: the refused target's share is what bounds its entries.
    return WatchedPool(context, consumer=consumer, max_held=CAP // 2)


def backlog() -> list[OutboxEntry]:
    """Half the refused entries ahead of everything, the other half interleaved."""
    ahead = [deployment_entry(f"build:{n}", BUILD) for n in range(REFUSED // 2)]
    mixed = [entry for n in range(REFUSED // 2, REFUSED)
             for entry in (deployment_entry(f"build:{n}", BUILD),
                           deployment_entry(f"global:{n}", GLOBAL))]
    return ahead + mixed


def build_ids() -> set[str]:
    return {f"build:{n}" for n in range(REFUSED)}


def global_ids() -> set[str]:
    return {f"global:{n}" for n in range(REFUSED // 2, REFUSED)}


async def pending_by_member(redis: aioredis.Redis, context: AppContext) -> dict[str, int]:
    summary = await redis.xpending(context.keys.outbox_stream, OUTBOX_GROUP)
    return {str(c["name"]): int(c["pending"]) for c in summary["consumers"]}


def waiting_gauge(context: AppContext, where: str) -> float | None:
    return context.metrics.registry.get_sample_value(
        "doraforwarder_devlake_refused_entries", {"target": BUILD.key, "where": where})


async def outbox_length_is(redis: aioredis.Redis, context: AppContext, length: int) -> bool:
    return await redis.xlen(context.keys.outbox_stream) == length


async def all_delivered(redis: aioredis.Redis, context: AppContext) -> bool:
    summary = await redis.xpending(context.keys.outbox_stream, OUTBOX_GROUP)
    return await redis.xlen(context.keys.outbox_stream) == 0 and summary["pending"] == 0


def accepted_ids(devlake: FakeDevLake, connection: int) -> list[str]:
    return sorted(p.record_id for p in devlake.accepted("deployment")
                  if p.connection_id == connection)


async def test_a_refused_backlog_is_bounded_in_memory_and_delivered_once_fixed(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    context = context_for(redis_client, devlake.url)
    await stage(redis_client, context.keys, backlog())
    pool = pool_for(context, "a")
    parked_member = parking_member(BUILD.key)
    async with RunningService(pool):
        # (a) The other target flows past the refused one's backlog.
        await eventually(lambda: devlake.deployment_ids(1) == global_ids(),
                         what="every global entry delivered while build is refused")
        await eventually(lambda: pool.parked.get(BUILD.key) == REFUSED - CAP,
                         what="build's surplus parked in Redis")
        await eventually(lambda: outbox_length_is(redis_client, context, REFUSED),
                         what="the global entries acknowledged, build's all kept")
        assert BUILD.key in pool.refused
        assert pool.schedule.count(BUILD.key) == CAP
        assert pool.peak <= CAP
        assert await pending_by_member(redis_client, context) == {
            "a": CAP, parked_member: REFUSED - CAP}

        def shown() -> bool:
            target = context.status.snapshot()["devlake_targets"].get(BUILD.key, {})
            return target.get("held") == CAP and target.get("parked") == REFUSED - CAP

        await eventually(shown, what="held and parked counts in the status")
        assert context.status.snapshot()["devlake_targets"][BUILD.key]["state"] == "refused"
        assert waiting_gauge(context, "memory") == CAP
        assert waiting_gauge(context, "redis") == REFUSED - CAP
        assert devlake.deployment_ids(6) == set()
        assert len(devlake.posts(status=403)) < REFUSED  # rechecks, not one per entry

        # (b) The key is fixed in DevLake: everything arrives, once, without a restart.
        devlake.add_api_key(BUILD_KEY, "/plugins/webhook/.*")
        await eventually(lambda: all_delivered(redis_client, context),
                         what="outbox and pending list empty")
        await eventually(lambda: waiting_gauge(context, "redis") == 0, what="gauge back to 0")
        assert waiting_gauge(context, "memory") == 0
        assert context.status.snapshot()["devlake_targets"] == {}
        assert pool.peak <= CAP
    assert devlake.deployment_ids(6) == build_ids()
    assert accepted_ids(devlake, 6) == sorted(build_ids())  # each exactly once
    assert accepted_ids(devlake, 1) == sorted(global_ids())


async def test_two_replicas_share_a_refused_backlog_and_deliver_it_once(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    context_a = context_for(redis_client, devlake.url)
    context_b = context_for(redis_client, devlake.url)
    await stage(redis_client, context_a.keys, backlog())
    pool_a, pool_b = pool_for(context_a, "a"), pool_for(context_b, "b")
    async with RunningService(pool_a), RunningService(pool_b):
        await eventually(lambda: devlake.deployment_ids(1) == global_ids(),
                         what="every global entry delivered while build is refused")

        async def all_waiting() -> bool:
            pending = await pending_by_member(redis_client, context_a)
            return sum(pending.values()) == REFUSED and \
                await redis_client.xlen(context_a.keys.outbox_stream) == REFUSED

        await eventually(all_waiting, what="build's entries all pending, none lost")
        assert pool_a.peak <= CAP and pool_b.peak <= CAP
        devlake.add_api_key(BUILD_KEY, "/plugins/webhook/.*")
        await eventually(lambda: all_delivered(redis_client, context_a),
                         what="outbox and pending list empty")
    assert accepted_ids(devlake, 6) == sorted(build_ids())  # once, not once per replica
    assert accepted_ids(devlake, 1) == sorted(global_ids())


async def test_parked_entries_left_by_a_stopped_replica_are_delivered_by_the_next(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    context = context_for(redis_client, devlake.url)
    await stage(redis_client, context.keys, backlog())
    first = pool_for(context, "first")
    async with RunningService(first):
        await eventually(lambda: first.parked.get(BUILD.key) == REFUSED - CAP,
                         what="build's surplus parked")
        await eventually(lambda: outbox_length_is(redis_client, context, REFUSED),
                         what="the global entries delivered and acknowledged")
    # Held by nobody now: CAP pending for the stopped replica, the rest parked.
    assert await pending_by_member(redis_client, context) == {
        "first": CAP, parking_member(BUILD.key): REFUSED - CAP}
    devlake.add_api_key(BUILD_KEY, "/plugins/webhook/.*")
    fixed = context_for(redis_client, devlake.url)
    async with RunningService(pool_for(fixed, "second")):
        await eventually(lambda: all_delivered(redis_client, fixed),
                         what="parked and stale entries delivered")
    assert accepted_ids(devlake, 6) == sorted(build_ids())


async def test_entries_held_before_the_refusal_was_known_are_shed_to_the_cap(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    """Room for more than the cap: the first batch is read before the first 403."""
    context = context_for(redis_client, devlake.url)
    await stage(redis_client, context.keys,
                [deployment_entry(f"build:{n}", BUILD) for n in range(REFUSED)])
    pool = WatchedPool(context, consumer="a", max_held=REFUSED)
    async with RunningService(pool):
        await eventually(lambda: pool.parked.get(BUILD.key) == REFUSED - CAP,
                         what="the surplus shed to Redis")
        assert pool.schedule.count(BUILD.key) == CAP
        # The newest were parked: the oldest stay in memory, for the rechecks.
        kept = {held.item.entry.record_id for held in pool.schedule.held.values()
                if held.item.entry is not None}
        assert kept == {f"build:{n}" for n in range(CAP)}
        assert await pending_by_member(redis_client, context) == {
            "a": CAP, parking_member(BUILD.key): REFUSED - CAP}
        devlake.add_api_key(BUILD_KEY, "/plugins/webhook/.*")
        await eventually(lambda: all_delivered(redis_client, context), what="all delivered")
    assert accepted_ids(devlake, 6) == sorted(build_ids())


async def test_issues_of_a_refused_target_keep_their_order_through_parking(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    context = context_for(redis_client, devlake.url)
    keys = [f"INC-{n}" for n in range(CAP)]
    for key in keys:  # 3 ordered entries per issue: 3x the cap in all
        await stage(redis_client, context.keys,
                    issue_entries(key, "TODO", "DONE", close=True, target=BUILD))
    pool = pool_for(context, "a")
    async with RunningService(pool):
        await eventually(lambda: pool.parked.get(BUILD.key) == 2 * CAP,
                         what="the surplus parked")
        devlake.add_api_key(BUILD_KEY, "/plugins/webhook/.*")
        await eventually(lambda: all_delivered(redis_client, context), what="all delivered")
    for key in keys:
        sequence = [(p.kind, p.body and p.body["status"])
                    for p in devlake.accepted() if p.record_id == key]
        assert sequence == [("issue", "TODO"), ("issue", "DONE"), ("close", None)], key
        issue = devlake.issue(6, key)
        assert issue is not None and issue["closed"] is True


def big_entry(record_id: str, rows: int) -> OutboxEntry:
    """A deployment the way ``deployment_commits: range`` makes them: one row per commit."""
    payload = deployment_payload(record_id)
    row = payload["deploymentCommits"][0]
    payload["deploymentCommits"] = [{**row, "commitSha": f"{n:040x}"} for n in range(rows)]
    return OutboxEntry(kind="deployment", target=BUILD, record_id=record_id, payload=payload)


async def test_a_refused_backlog_is_bounded_by_size_as_well_as_by_count(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    """Entries of 100 commit rows: the size bound, not the count, decides what is held."""
    entries = [big_entry(f"build:{n}", rows=100) for n in range(REFUSED)]
    size = max(len(entry.model_dump_json()) for entry in entries) + len("entry")
    per_size = 4  # entries that fit in the size bound: far fewer than CAP
    context = context_for(redis_client, devlake.url, refused_max_held_bytes=per_size * size)
    await stage(redis_client, context.keys, entries)
    pool = WatchedPool(context, consumer="a", max_held=REFUSED)  # room for all: one read
    async with RunningService(pool):
        await eventually(lambda: pool.parked.get(BUILD.key, 0) >= REFUSED - per_size,
                         what="everything beyond the size bound parked in Redis")
        assert 1 <= pool.schedule.count(BUILD.key) <= per_size
        assert pool.schedule.size_of(BUILD.key) <= per_size * size
        rechecks = len(devlake.posts(status=403))
        await eventually(lambda: len(devlake.posts(status=403)) >= rechecks + 3,
                         what="three more rechecks (and take-back rounds)")
        assert pool.peak <= per_size and pool.peak_bytes <= per_size * size
        devlake.add_api_key(BUILD_KEY, "/plugins/webhook/.*")
        await eventually(lambda: all_delivered(redis_client, context), what="all delivered")
    assert accepted_ids(devlake, 6) == sorted(build_ids())  # each exactly once


async def test_one_entry_larger_than_the_size_bound_is_still_held_for_the_recheck(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    context = context_for(redis_client, devlake.url, refused_max_held_bytes=100)
    await stage(redis_client, context.keys, [big_entry(f"build:{n}", rows=5) for n in range(3)])
    pool = WatchedPool(context, consumer="a", max_held=10)
    async with RunningService(pool):
        await eventually(lambda: pool.parked.get(BUILD.key) == 2, what="two parked")
        assert pool.schedule.count(BUILD.key) == 1
        devlake.add_api_key(BUILD_KEY, "/plugins/webhook/.*")
        await eventually(lambda: all_delivered(redis_client, context), what="all delivered")
    assert accepted_ids(devlake, 6) == [f"build:{n}" for n in range(3)]


# --- the consumer-group moves parking rests on ---------------------------------------


async def test_parked_entries_are_not_reclaimed_and_are_taken_back_once(
    redis_client: aioredis.Redis,
) -> None:
    name = "test:stream"
    for n in range(6):
        await redis_client.xadd(name, {"entry": str(n)})
    await ensure_group(redis_client, name, "g")
    one = GroupConsumer(redis_client, name, "g", "one", claim_idle_s=0.05)
    two = GroupConsumer(redis_client, name, "g", "two", claim_idle_s=0.05)
    ids = [entry_id for entry_id, _ in await one.read_new(6)]
    # Only what "one" holds moves: an id pending for another member stays there.
    assert await one.hand_over([*ids[:5], "0-1"], "parked:x") == ids[:5]
    assert await two.hand_over([ids[5]], "parked:x") == []
    await asyncio.sleep(0.2)  # a lower bound: every entry is idle past claim_idle after it
    members = await one.members()
    assert members == {"one": 1, "parked:x": 5}
    live = [m for m, n in members.items() if n and parked_target(m) is None]
    assert [e for e, _ in await two.reclaim_from(live, 10)] == [ids[5]]
    # Two takers at once never get the same entry.
    taken = await asyncio.gather(one.take_from("parked:x", 3), two.take_from("parked:x", 3))
    got = [entry_id for batch in taken for entry_id, _ in batch]
    assert sorted(got) == sorted(ids[:5])
    assert all(fields["entry"].isdigit() for batch in taken for _, fields in batch)
    assert (await one.members())["parked:x"] == 0


@pytest.mark.parametrize(("refused", "held", "room", "allowed"), [
    (False, 0, 100, 100),   # not refused here (accepted again, or unknown): room decides
    (False, 0, 0, 0),
    (False, 50, -3, 0),
    (True, 0, 100, CAP),    # refused: only up to the in-memory share, room or not
    (True, 0, 0, CAP),
    (True, CAP - 1, 100, 1),
    (True, CAP, 100, 0),
    (True, CAP + 5, 100, 0),
])
def test_how_many_parked_entries_a_replica_takes_back(refused: bool, held: int, room: int,
                                                      allowed: int) -> None:
    assert take_back_allowance(refused, held, CAP, room) == allowed


def test_parking_member_names_round_trip() -> None:
    member = parking_member(BUILD.key)
    assert member == "parked:connection_name:team-build"
    assert parked_target(member) == BUILD.key
    assert parked_target("host-12-abc123") is None
