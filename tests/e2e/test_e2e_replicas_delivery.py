"""Two real daemon processes draining one outbox on one real redis-server into a slow DevLake.

What the README promises about duplicates is what these prove:

- while both replicas run, no entry is POSTed twice;
- when one stalls longer than ``delivery.claim_idle`` (SIGSTOP: a paused VM, a
  starved CPU) or is killed (``kill -9``), the other takes its entries over, and
  the only entries POSTed twice are those the stalled or killed one had already
  POSTed and not yet acknowledged: its sends in flight. Before ownership was
  checked, a stalled replica's heartbeat took back every entry the other had
  taken over, and both sent them.

The backlog is staged straight into the outbox (no ArgoCD needed): the race is
the delivery's alone. DevLake answers each POST after a delay, so each replica
holds many entries while few are in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.testing.world import FakeWorld
from tests.devlake_support import deployment_entry, issue_entries, stage
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import KEY_PREFIX, DaemonProcess, base_overrides, wait_for

KEYS = Keys(KEY_PREFIX)
RECORDS = 300
ISSUES = 30
CLAIM_IDLE_S = 2.0
DEVLAKE_DELAY_S = 0.1
WORKERS = 4


def overrides(claim_idle_s: float = CLAIM_IDLE_S) -> dict[str, object]:
    return base_overrides(delivery={"claim_idle": f"{int(claim_idle_s)}s", "workers": WORKERS})


def stage_backlog(world: FakeWorld, count: int, issues: int = 0) -> set[str]:
    """``count`` deployments, then (ordered) each of ``issues`` incidents opened and resolved."""
    assert world.redis is not None
    records = [f"svc:{n}" for n in range(count)]

    async def run() -> None:
        client: aioredis.Redis = aioredis.Redis.from_url(world.redis.url,  # type: ignore[union-attr]
                                                         decode_responses=True)
        try:
            await stage(client, KEYS, [deployment_entry(record) for record in records])
            for n in range(issues):
                await stage(client, KEYS, issue_entries(f"INC-{n}", "TODO", "DONE"))
        finally:
            await client.aclose()

    asyncio.run(run())
    return set(records)


def posted(world: FakeWorld) -> Counter[str]:
    """POSTs of each staged deployment, whatever DevLake answered."""
    return Counter(str(p.record_id) for p in world.devlake.posts("deployment"))


def start_pair(daemons: DaemonFactory, claim_idle_s: float = CLAIM_IDLE_S
               ) -> tuple[DaemonProcess, DaemonProcess]:
    first = daemons(overrides(claim_idle_s), name="replica-a")
    second = daemons(overrides(claim_idle_s), name="replica-b")
    first.wait_ready()
    second.wait_ready()
    return first, second


def drained(store: redis.Redis) -> Callable[[], bool]:
    def check() -> bool:
        pending = store.xpending(KEYS.outbox_stream, OUTBOX_GROUP)
        return store.xlen(KEYS.outbox_stream) == 0 and int(pending["pending"]) == 0
    return check


def wait_all_posted(world: FakeWorld, store: redis.Redis, records: set[str]) -> None:
    wait_for(lambda: set(posted(world)) >= records and drained(store)(), 90,
             lambda: f"{len(records - set(posted(world)))} records never posted, outbox "
                     f"{store.xlen(KEYS.outbox_stream)}")


def pending_of(store: redis.Redis, daemon: DaemonProcess) -> dict[str, str]:
    """Entry id -> record id of the entries pending for ``daemon``'s consumer."""
    assert daemon.process is not None
    mark = f"-{daemon.process.pid}-"
    found: dict[str, str] = {}
    for member in store.xinfo_consumers(KEYS.outbox_stream, OUTBOX_GROUP):
        if mark not in str(member["name"]):
            continue
        rows = store.xpending_range(KEYS.outbox_stream, OUTBOX_GROUP, "-", "+", 10_000,
                                    consumername=member["name"])
        for row in rows:
            entry_id = str(row["message_id"])
            for _, fields in store.xrange(KEYS.outbox_stream, entry_id, entry_id):
                found[entry_id] = str(json.loads(fields["entry"])["record_id"])
    return found


def busier(store: redis.Redis, pair: tuple[DaemonProcess, DaemonProcess]) -> DaemonProcess:
    """The replica holding more entries (the one whose loss shows most)."""
    return max(pair, key=lambda daemon: len(pending_of(store, daemon)))


def first_posts(world: FakeWorld) -> dict[str, float]:
    """Record id -> when DevLake answered its first POST (the fake records at the answer)."""
    first: dict[str, float] = {}
    for post in world.devlake.posts("deployment"):
        first.setdefault(str(post.record_id), post.at)
    return first


def assert_only_in_flight_sent_again(world: FakeWorld, held: dict[str, str],
                                     at: float) -> list[str]:
    """Every record POSTed twice was held by the lost replica and POSTed by it before ``at``.

    A POST already under way at ``at`` is answered (and recorded) up to
    DevLake's delay later; the slack covers a loaded machine.
    """
    twice = sorted(record for record, count in posted(world).items() if count > 1)
    first = first_posts(world)
    held_records = set(held.values())
    slack = DEVLAKE_DELAY_S + 1.0
    wrong = [f"{record} (first POST {first[record] - at:+.2f}s after the loss, "
             f"{'held' if record in held_records else 'not held'} by the lost replica)"
             for record in twice
             if record not in held_records or first[record] > at + slack]
    assert not wrong, f"POSTed twice without being in flight when the replica was lost: {wrong}"
    return twice


def test_two_running_replicas_never_post_an_entry_twice(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    world.devlake.slow(DEVLAKE_DELAY_S)
    # A claim_idle no scheduling hiccup of a loaded test machine reaches: both really run.
    pair = start_pair(daemons, claim_idle_s=10)
    records = stage_backlog(world, RECORDS, issues=ISSUES)
    wait_all_posted(world, store, records)
    for daemon in pair:
        assert daemon.terminate() == 0
    twice = {record: count for record, count in posted(world).items() if count > 1}
    assert not twice, f"POSTed more than once while both replicas ran: {twice}"
    assert set(posted(world)) == records
    # incidents: each state once, the opening before the resolution, under the per-issue lock
    sent: dict[str, list[str]] = {}
    for post in world.devlake.posts("issue"):
        sent.setdefault(str(post.record_id), []).append(str(post.body["status"]))
    wrong = {key: states for key, states in sent.items() if states != ["TODO", "DONE"]}
    assert not wrong and len(sent) == ISSUES, f"incident states sent: {wrong or sent}"


def test_a_stalled_replica_posts_again_only_what_it_had_in_flight(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    world.devlake.slow(DEVLAKE_DELAY_S)
    pair = start_pair(daemons)
    records = stage_backlog(world, RECORDS)
    wait_for(lambda: len(posted(world)) >= 2 * WORKERS, 30, lambda: "no POST yet")
    stalled = busier(store, pair)
    assert stalled.process is not None
    os.kill(stalled.process.pid, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        held = pending_of(store, stalled)
        assert len(held) > 2 * WORKERS, "the stalled replica should hold a backlog"
        # The other replica takes every one of them over (they idle past claim_idle).
        wait_for(lambda: not pending_of(store, stalled), 30,
                 lambda: f"{len(pending_of(store, stalled))} entries still with the stalled one")
    finally:
        os.kill(stalled.process.pid, signal.SIGCONT)
    wait_all_posted(world, store, records)
    for daemon in pair:
        assert daemon.terminate() == 0
    twice = assert_only_in_flight_sent_again(world, held, stopped_at)
    print(f"stalled replica held {len(held)}; POSTed twice: {len(twice)}")
    # in flight: one POST per worker, plus the accepted ones awaiting their batched ack
    assert len(twice) <= 4 * WORKERS, f"more POSTed twice than could be in flight: {twice}"
    let_go = [line for line in stalled.lines()
              if str(line.get("event", "")).startswith("outbox entries taken over")]
    assert let_go and all(line["level"] == "warning" for line in let_go), \
        "the stalled replica should warn that it let its entries go"
    assert len(let_go) < len(held) / 10, f"one warning per stall, not per entry: {len(let_go)}"


def test_after_kill_9_only_what_the_killed_replica_had_in_flight_is_posted_again(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    world.devlake.slow(DEVLAKE_DELAY_S)
    pair = start_pair(daemons)
    records = stage_backlog(world, RECORDS)
    wait_for(lambda: len(posted(world)) >= 2 * WORKERS, 30, lambda: "no POST yet")
    killed = busier(store, pair)
    survivor = pair[1] if killed is pair[0] else pair[0]
    killed.kill()
    killed_at = time.time()
    held = pending_of(store, killed)
    wait_all_posted(world, store, records)
    assert survivor.terminate() == 0
    twice = assert_only_in_flight_sent_again(world, held, killed_at)
    print(f"killed replica held {len(held)}; POSTed twice: {len(twice)}")
    # in flight: one POST per worker, plus the accepted ones awaiting their batched ack
    assert len(twice) <= 4 * WORKERS, f"more POSTed twice than could be in flight: {twice}"
