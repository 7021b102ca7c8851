"""The DevLake sink: workers that drain the outbox stream into DevLake.

One feeder reads new outbox entries with the consumer group
(``keys.OUTBOX_GROUP``, through :class:`doraforwarder.streams.GroupConsumer`)
into an in-memory schedule; ``delivery.workers`` workers take entries that are
due and post them. An entry stays pending in
Redis until DevLake accepted it (then ``XACK`` + ``XDEL``) or refused it for
good (then it moves to the dead letters), so a crash loses nothing: another
worker or replica reclaims it with ``XAUTOCLAIM`` after ``delivery.claim_idle``.

Draining a backlog must cost little per entry: entries are read up to 250 at a
time, acknowledged in batches after their 2xx (:class:`AckBatcher`, one
transaction per wake-up instead of one per entry), and handed to workers
without locks or polling (:class:`Schedule`).

Retries never block other entries: a failed entry gets its own next-attempt
time (exponential backoff with full jitter, ``Retry-After`` for 429) and
workers go on with other due entries. Entries held here are kept fresh in
Redis so a healthy replica's retrying entries are not mistaken for a crashed
one's.

Ownership is explicit (see :mod:`doraforwarder.streams`): an entry is sent,
acknowledged or dead-lettered only by the consumer it is pending for. A
replica that stalled past ``claim_idle`` (its entries taken over by another)
learns it from its heartbeat, which refreshes only what is still its own, or,
before a send, from Redis itself when its last confirmation is older than two
thirds of ``claim_idle``; it then lets the entry go. So two running replicas
never both send an entry; a send already under way when its replica stalled
(or was killed) may be sent again by the one that takes it over.

Ordered entries (issues and their close calls) are sent under a short
per-order-key lock that only the entry's owner can take
(:class:`doraforwarder.outbox.ordering.OrderLock`), and the order check
(:func:`doraforwarder.outbox.ordering.order_gate`) runs under that lock; see
the contract in :mod:`doraforwarder.outbox`.

A target DevLake refuses (401/403) may stay refused for hours with a backlog
of any size, ahead of other targets' entries in the stream. Its entries are
kept in memory up to ``delivery.refused_max_held`` entries and
``refused_max_held_bytes`` of stored size (one is retried every
``refused_recheck``; they do not take the other targets' room); every further
one is *parked*: handed over, in the consumer group, to the member
``parked:<target key>`` that no process uses (:meth:`GroupConsumer.hand_over
<doraforwarder.streams.GroupConsumer.hand_over>`). So the feeder reads on past
the refused target's backlog holding a bounded number of its entries. A parked
entry is still in the stream and pending in the group: as durable as any
pending entry, still counted in the outbox, and still blocking later entries of
its order key. Housekeeping reclaims only from real members, so nobody takes
parked entries for a crashed replica's. Any replica that does not hold the
target as refused takes parked entries back (:meth:`GroupConsumer.take_from
<doraforwarder.streams.GroupConsumer.take_from>`, one script: two replicas
never get the same entry) as room allows: after the recheck was accepted, or
just after a start (a replica that did not know the target was refused learns
it from the first answer and parks the surplus again: at most ``max_held``
entries of churn per start). While refused, a replica takes parked entries
back only to fill its in-memory share up to the cap, so the recheck never runs
out of entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.context import AppContext
from doraforwarder.devlake.client import (
    Answer,
    DevLakeClient,
    DryRunPrinter,
    Refusal,
    Sender,
    Verdict,
    awaits_connection,
    classify,
    connection_just_created,
    refusal,
)
from doraforwarder.devlake.payloads import contract_body
from doraforwarder.devlake.routing import (
    Router,
    Target,
    endpoint,
    project_connection_name,
    scope_path,
)
from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.logging import get_logger
from doraforwarder.outbox.consuming import ack_delivered, ack_delivered_many, dead_letter
from doraforwarder.outbox.entries import OutboxEntry, StreamItem, redis_seconds
from doraforwarder.outbox.ordering import OrderLock, order_gate
from doraforwarder.storage import report_data_lost
from doraforwarder.streams import GroupConsumer, RawEntries, consumer_name

log = get_logger("devlake")


@dataclass
class RefusedTarget:
    """A target DevLake refuses (401/403): its entries wait, one is tried per recheck."""

    target: Target
    refusal: Refusal
    explanation: str
    since: str
    next_try: float
    """Monotonic time when the next entry of this target may be sent."""

    def snapshot(self) -> dict[str, Any]:
        return {"state": "refused", "team": self.target.team, "cause": self.refusal.cause,
                "status": self.refusal.status, "reason": self.explanation,
                "since": self.since}


def _refused_key(target_key: str) -> str:
    """The park key of a refused target's waiting entries."""
    return f"refused:{target_key}"


PARKING_PREFIX = "parked:"
"""Group members holding a refused target's surplus entries: ``parked:<target key>``."""


def parking_member(target_key: str) -> str:
    """The consumer-group member a refused target's surplus entries are parked under."""
    return f"{PARKING_PREFIX}{target_key}"


def parked_target(member: str) -> str | None:
    """The target key of a parking member; None for a real consumer."""
    return member[len(PARKING_PREFIX):] if member.startswith(PARKING_PREFIX) else None


def take_back_allowance(refused: bool, held_of_target: int, cap: int, room: int) -> int:
    """How many parked entries of a target this replica may take back now.

    Not refused here (accepted again, or unknown since this replica started):
    as many as there is room for. Refused: only enough to keep ``cap`` of its
    entries in memory (they take no room), so one is always there for the recheck.
    """
    if refused:
        return max(0, cap - held_of_target)
    return max(0, room)


@dataclass
class Held:
    """An entry this process holds (read, not yet acknowledged), with its retry state."""

    item: StreamItem
    backoff: Backoff
    size: int = 0
    """The entry's stored size (:func:`stored_size`), what a refused target's share counts."""
    attempts: int = 0
    last_reason: str | None = None
    first_failure: float | None = None
    confirmed: float = field(default_factory=time.monotonic)
    """Monotonic time at or before which Redis last reset the entry's idle time while it
    was this consumer's (read, reclaim, heartbeat, lock): nobody else can take it over
    before ``confirmed + claim_idle``."""
    lost: bool = False
    """The heartbeat found the entry another consumer's: never send or acknowledge it."""


def stored_size(fields: dict[str, str]) -> int:
    """Characters of an entry's stream fields (names and values): its size in Redis.

    Held in memory a parsed entry takes about 3.7 times that (``tracemalloc``:
    the raw fields are kept beside the parsed payload), and the process grows
    by about 6 times what it holds (RSS, with sending and the allocator), so a
    bound on this size bounds memory too, whatever ``deployment_commits`` makes
    of an entry (one commit row, or hundreds with ``range``).
    """
    return sum(len(name) + len(value) for name, value in fields.items())


LOST_TOLD_EVERY_S = 10.0
"""At most one warning per this many seconds about entries taken over (the rest: debug)."""

_TIMER_SLACK = 0.0005
"""Seconds a timer may fire early (the loop's clock resolution) and still count as due."""


@dataclass(order=True)
class _Slot:
    due: float
    tie: int
    entry_id: str = field(compare=False)
    token: int = field(compare=False)


class Schedule:
    """Held entries and when each may be tried next; workers take whichever is due.

    An entry is either waiting here (due now, or later in the heap) or in a
    worker's hands, never both. Ordered entries blocked behind an earlier one
    are *parked* under their order key and woken when that key makes progress
    here (with a timed recheck in case the progress happens on another
    replica).

    Single-threaded asyncio needs no lock: a due entry goes straight to a
    worker already waiting (its future), or into a FIFO the next ``take``
    pops; later entries wait in a heap behind one timer. Putting an entry
    wakes at most one worker, so many workers cost nothing while idle.
    Rescheduling an entry gives it a new token; heap slots and FIFO places
    with an old token are stale and skipped.
    """

    def __init__(self) -> None:
        self.held: dict[str, Held] = {}
        self._waiting: dict[str, int] = {}
        """Entry id -> token of its current place (FIFO or heap), for entries not in a worker."""
        self._ready: deque[tuple[str, int]] = deque()
        self._heap: list[_Slot] = []
        self._timer: asyncio.TimerHandle | None = None
        self._takers: deque[asyncio.Future[Held | None]] = deque()
        self._parked: dict[str, set[str]] = {}
        self._park_key: dict[str, str] = {}
        """Entry id -> the key it is parked under (so forgetting it leaves no trace)."""
        self._by_target: dict[str, int] = {}
        """Target key -> how many entries of that target are held."""
        self._bytes_by_target: dict[str, int] = {}
        """Target key -> the stored size of the entries of that target held."""
        self._tokens = itertools.count()
        self._closed = False

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.held

    def is_waiting(self, entry_id: str) -> bool:
        """Held and not in a worker's hands (nor handed over for acknowledgement)."""
        return entry_id in self._waiting

    def count(self, target_key: str) -> int:
        """How many entries of ``target_key`` are held (waiting or in a worker)."""
        return self._by_target.get(target_key, 0)

    def size_of(self, target_key: str) -> int:
        """The stored size (:func:`stored_size`) of the entries of ``target_key`` held."""
        return self._bytes_by_target.get(target_key, 0)

    def total_size(self) -> int:
        """The stored size of every held entry (of every target)."""
        return sum(self._bytes_by_target.values())

    def waiting_of(self, target_key: str) -> list[Held]:
        """The held entries of ``target_key`` not in a worker's hands (a scan: seldom)."""
        return [self.held[entry_id] for entry_id in self._waiting
                if _target_key(self.held[entry_id]) == target_key]

    def put(self, held: Held, delay: float = 0.0) -> None:
        """Hold ``held`` (new, or back from a worker) and make it due after ``delay``."""
        entry_id = held.item.id
        if entry_id not in self.held:
            target = _target_key(held)
            if target is not None:
                self._by_target[target] = self._by_target.get(target, 0) + 1
                self._bytes_by_target[target] = self._bytes_by_target.get(target, 0) + held.size
        self.held[entry_id] = held
        token = next(self._tokens)
        self._waiting[entry_id] = token
        if delay > 0:
            heapq.heappush(self._heap, _Slot(time.monotonic() + delay, token, entry_id, token))
            self._arm_timer()
        else:
            self._make_due(entry_id, token)

    def park(self, held: Held, order_key: str, recheck: float) -> None:
        self._parked.setdefault(order_key, set()).add(held.item.id)
        self._park_key[held.item.id] = order_key
        self.put(held, recheck)

    def wake(self, order_key: str) -> None:
        """Make entries parked under ``order_key`` due now."""
        for entry_id in self._parked.pop(order_key, set()):
            self._park_key.pop(entry_id, None)
            held = self.held.get(entry_id)
            if held is not None and entry_id in self._waiting:
                self.put(held)

    def release(self, entry_id: str) -> None:
        """Forget an entry (acknowledged, dead-lettered, dropped, parked in Redis)."""
        held = self.held.pop(entry_id, None)
        self._waiting.pop(entry_id, None)
        park_key = self._park_key.pop(entry_id, None)
        if park_key is not None:
            self._parked.get(park_key, set()).discard(entry_id)
        if held is None:
            return
        target = _target_key(held)
        if target is not None:
            left = self._by_target.get(target, 0) - 1
            if left > 0:
                self._by_target[target] = left
                self._bytes_by_target[target] = self._bytes_by_target.get(target, 0) - held.size
            else:
                self._by_target.pop(target, None)
                self._bytes_by_target.pop(target, None)

    async def take(self) -> Held | None:
        """Wait for the next due entry; None once closed."""
        while not self._closed:
            while self._ready:
                entry_id, token = self._ready.popleft()
                if self._waiting.get(entry_id) == token:
                    del self._waiting[entry_id]
                    return self.held[entry_id]
            taker: asyncio.Future[Held | None] = asyncio.get_running_loop().create_future()
            self._takers.append(taker)
            try:
                return await taker
            except asyncio.CancelledError:
                handed = taker.result() if taker.done() and not taker.cancelled() else None
                if handed is not None and handed.item.id in self.held:
                    self.put(handed)  # handed over just as this worker was cancelled
                raise
        return None

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._takers:
            taker = self._takers.popleft()
            if not taker.done():
                taker.set_result(None)

    def _make_due(self, entry_id: str, token: int) -> None:
        while self._takers:
            taker = self._takers.popleft()
            if not taker.done():
                del self._waiting[entry_id]
                taker.set_result(self.held[entry_id])
                return
        self._ready.append((entry_id, token))

    def _arm_timer(self) -> None:
        if not self._heap or self._closed:
            return
        first = self._heap[0].due
        if self._timer is not None:
            if self._timer.when() <= first:
                return
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(first, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = time.monotonic() + _TIMER_SLACK
        while self._heap and self._heap[0].due <= now:
            slot = heapq.heappop(self._heap)
            if self._waiting.get(slot.entry_id) == slot.token:
                self._make_due(slot.entry_id, slot.token)
        self._arm_timer()


def _id_order(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (milliseconds, sequence)."""
    millis, _, seq = entry_id.partition("-")
    return (int(millis), int(seq or 0)) if millis.isdigit() and seq.isdigit() else (0, 0)


def _target_key(held: Held) -> str | None:
    entry = held.item.entry
    return entry.target.key if entry is not None else None


class AckBatcher:
    """Acknowledges delivered entries in batches: one transaction per wake-up.

    Workers hand over an entry once DevLake answered 2xx (never before); the
    batcher acknowledges and deletes everything handed over since its last
    round in one ``MULTI XACK XDEL`` (:func:`doraforwarder.outbox.ack_delivered_many`),
    then calls ``on_acked`` so the entries stop being held. Until then they
    stay held (and kept fresh by the heartbeat), so nothing retries them. A
    crash between the 2xx and the acknowledgement means one more delivery of
    the same record after a restart: an upsert, harmless. Only unordered
    entries come here; an ordered entry's key must advance before its
    successor is looked at, so those are acknowledged one by one.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, on_acked: Callable[[list[Held]], None],
                 on_error: Callable[[Exception, Backoff, asyncio.Event], Awaitable[None]],
                 max_batch: int = 500, linger_s: float = 0.02, *, consumer: str) -> None:
        self._redis = redis
        self._keys = keys
        self._consumer = consumer
        """Only entries still pending for this consumer are acknowledged."""
        self._on_acked = on_acked
        self._on_error = on_error
        self._max_batch = max_batch
        self._linger_s = linger_s
        """How long a small batch waits for more: draining a backlog, each wake-up
        otherwise acknowledges the four or five entries the workers finished since
        the last one, and a Redis transaction per handful costs more CPU than the
        deliveries. The delay holds no record back (DevLake already has them)."""
        self._pending: list[Held] = []
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, held: Held) -> None:
        self._pending.append(held)
        self._ready.set()

    def wake(self) -> None:
        """Make :meth:`run` look at ``halt`` (called when halting)."""
        self._ready.set()

    async def run(self, halt: asyncio.Event) -> None:
        """Acknowledge batches until ``halt``; whatever is left then is for :meth:`flush`."""
        backoff = Backoff(0.2, 10.0)
        while not halt.is_set():
            if not self._pending:
                self._ready.clear()
                await self._ready.wait()
                continue
            if len(self._pending) < self._max_batch and self._linger_s > 0:
                await wait_or_stop(halt, self._linger_s)
            try:
                await self._flush_batch()
                backoff.reset()
            except RedisError as exc:
                await self._on_error(exc, backoff, halt)

    async def flush(self) -> None:
        """Acknowledge everything handed over so far (at shutdown; errors propagate)."""
        while self._pending:
            await self._flush_batch()

    async def _flush_batch(self) -> None:
        batch = self._pending[:self._max_batch]
        await ack_delivered_many(self._redis, self._keys, [held.item.id for held in batch],
                                 consumer=self._consumer)
        del self._pending[:len(batch)]
        self._on_acked(batch)


class DeliveryPool:
    """The delivery service: feeder, housekeeping and ``delivery.workers`` workers."""

    name = "delivery"

    def __init__(self, context: AppContext, sender: Sender | None = None, *,
                 consumer: str | None = None, max_held: int = 1000,
                 read_block_s: float = 0.5) -> None:
        self.context = context
        self.settings = context.settings
        self.keys = context.keys
        self.redis: aioredis.Redis = context.redis
        self.consumer = consumer or consumer_name()
        self.max_held = max_held
        self.max_held_bytes = int(self.settings.delivery.max_held_bytes)
        """The stored size of the entries held for delivery (a refused target's apart)."""
        self._size_estimate = 0.0
        """The largest stored size of the entries seen lately (decaying): how many a read
        may bring. The largest rather than the mean, so a read stays within the bound."""
        self._sender = sender
        delivery = self.settings.delivery
        self.initial_backoff = max(delivery.initial_backoff.total_seconds(), 0.001)
        self.max_backoff = max(delivery.max_backoff.total_seconds(), self.initial_backoff)
        self.stream = GroupConsumer(
            self.redis, self.keys.outbox_stream, OUTBOX_GROUP, self.consumer,
            claim_idle_s=delivery.claim_idle.total_seconds(), read_block_s=read_block_s,
        )
        self.recheck = min(self.max_backoff, 1.0)
        self.trust_s = delivery.claim_idle.total_seconds() * 2 / 3
        """How long after Redis last confirmed an entry ours it is sent without asking again.
        The heartbeat confirms every third of the claim-idle time, so a healthy process
        never asks; one that stalled asks, and a send starts at least a third of the
        claim-idle time before anyone may take the entry over."""
        self.lost = 0
        self._lost_told_at = -LOST_TOLD_EVERY_S
        """Entries found taken over by another consumer (this one had stalled)."""
        """How soon a blocked or locked ordered entry is looked at again."""
        self.schedule = Schedule()
        self._acks = self._new_ack_batcher()
        self._room = asyncio.Event()
        devlake = self.settings.integration.devlake
        recheck = devlake.refused_recheck or delivery.max_backoff
        self.refused_recheck = max(recheck.total_seconds(), 0.001)
        self.refused: dict[str, RefusedTarget] = {}
        """Targets DevLake refuses now, by target key."""
        self.refused_cap = delivery.refused_max_held
        """Entries of one refused target held in memory; the surplus is parked in Redis."""
        self.refused_cap_bytes = int(delivery.refused_max_held_bytes)
        """Their stored size (:func:`stored_size`) held in memory, at most; at least one
        entry is held whatever its size, so the recheck has one to send."""
        self.parked: dict[str, int] = {}
        """Target key -> entries parked under its member in Redis (as last seen)."""
        self._waiting_shown: set[str] = set()
        """Targets the waiting gauge shows (set back to 0 once they are gone)."""
        self.awaiting: set[str] = set()
        """Project targets whose ``<project>_deployments`` connection does not exist yet."""
        self._token_envs = _token_envs(devlake)
        self.max_retry_after = max(delivery.max_retry_after.total_seconds(), 0.0)
        """The longest ``Retry-After`` obeyed (``delivery.max_retry_after``)."""
        self.paused: dict[str, float] = {}
        """Target key -> monotonic time before which none of its entries is sent (a 429)."""

    def _new_ack_batcher(self) -> AckBatcher:
        return AckBatcher(self.redis, self.keys, self._acked, self._ack_trouble,
                          consumer=self.consumer)

    # --- lifecycle ----------------------------------------------------------------

    def _build_sender(self) -> Sender:
        if self.context.dry_run:
            return DryRunPrinter()
        devlake = self.settings.integration.devlake
        secrets = self.context.config.secrets
        keys = {target: secrets.devlake_key(env) for target, env in self._token_envs.items()}
        client = DevLakeClient(secrets.devlake_key(devlake.token_env), devlake.timeout_seconds,
                               pool_size=self.settings.delivery.workers, target_keys=keys)
        for target in client.targets_without_key:
            env = self._token_envs[target]
            log.warning(f"{env} is not set: DevLake will refuse deliveries to {target}",
                        target=target, token_env=env)
        if not keys and not client.has_token:
            log.warning(f"{devlake.token_env} is not set: DevLake will refuse deliveries")
        return client

    async def run(self, stop: asyncio.Event) -> None:
        sender = self._sender or self._build_sender()
        self.schedule = Schedule()
        self._acks = self._new_ack_batcher()
        await self.stream.ensure_group()
        devlake = self.settings.integration.devlake
        log.info(
            "delivery started",
            workers=self.settings.delivery.workers,
            consumer=self.consumer,
            dry_run=self.context.dry_run,
            base_url=devlake.base_url,
            api_prefix=devlake.api_prefix,
        )
        # Loops watch ``halt``, not ``stop``: when one part crashes the
        # others finish their step instead of being cancelled in the middle.
        halt = asyncio.Event()
        tasks = [
            asyncio.create_task(self._feed(halt), name="delivery:feed"),
            asyncio.create_task(self._housekeep(halt), name="delivery:housekeep"),
            asyncio.create_task(self._acks.run(halt), name="delivery:ack"),
            *(
                asyncio.create_task(self._work(sender), name=f"delivery:worker-{n}")
                for n in range(self.settings.delivery.workers)
            ),
        ]
        stopper = asyncio.create_task(self._close_on_stop(stop, halt))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
        finally:
            await self._halt(halt)
            stopper.cancel()
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            await self._flush_acks()
            await sender.aclose()
            log.info("delivery stopped", held=len(self.schedule))

    async def _close_on_stop(self, stop: asyncio.Event, halt: asyncio.Event) -> None:
        await stop.wait()
        await self._halt(halt)

    async def _halt(self, halt: asyncio.Event) -> None:
        halt.set()
        self.schedule.close()
        self._acks.wake()
        self._room.set()

    async def _flush_acks(self) -> None:
        """Acknowledge what was delivered but not yet acknowledged, before exiting."""
        left = len(self._acks)
        try:
            await asyncio.wait_for(self._acks.flush(), timeout=10)
        except (RedisError, TimeoutError) as exc:
            log.warning("could not acknowledge delivered entries while stopping; they stay "
                        "pending and will be delivered again (an upsert) after a restart",
                        entries=len(self._acks), error=f"{type(exc).__name__}: {exc}")
        else:
            if left:
                log.debug("acknowledged the last delivered entries", entries=left)

    # --- reading --------------------------------------------------------------------

    async def _feed(self, stop: asyncio.Event) -> None:
        """Read new entries while there is room; Redis errors are retried, never fatal.

        Parked entries this replica may take back come first, a batch per
        round, with a read of new entries that does not block in between, so
        a drained backlog does not stop the other targets' new entries.
        """
        backoff = Backoff(0.2, 10.0)
        while not stop.is_set():
            take_back = self._take_back_candidate(self._batch_room())
            if take_back is None and self._batch_room() == 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                if take_back is not None:
                    await self._take_back(*take_back)
                room = self._batch_room()
                if room > 0:
                    started = time.monotonic()
                    entries = await self.stream.read_new(min(room, 250),
                                                          block=take_back is None)
                    await self._take_in(entries, confirmed=started)
            except RedisError as exc:
                await self._redis_trouble("xreadgroup", exc, backoff, stop)
                continue
            backoff.reset()

    def _batch_room(self) -> int:
        """How many entries may be read now; 0 until a batch's worth is free.

        With a backlog, room comes back a few entries at a time, and one
        ``XREADGROUP`` per handful costs more than it brings.
        """
        held = self._held_count()
        room = self.max_held - held
        refill = max(1, self.max_held // 4)
        if room <= 0 or (room < refill and held >= self.settings.delivery.workers):
            return 0
        return self._room_by_size(room)

    def _room_by_size(self, room: int) -> int:
        """``room`` cut to what ``delivery.max_held_bytes`` leaves, at the entries' size.

        A count alone does not bound memory: with ``deployment_commits: range``
        one entry may be 100 KB stored (about 6 times that in the process). Before any
        entry was seen, a read brings a worker's worth; one entry is always
        allowed when none is held, whatever its size.
        """
        if self._size_estimate <= 0:
            return min(room, self.settings.delivery.workers)
        fits = int((self.max_held_bytes - self._held_size()) // self._size_estimate)
        return max(0, min(room, fits if self._held_count() else max(1, fits)))

    def _held_size(self) -> int:
        """The stored size of the held entries that take room (a refused target's do not)."""
        return self.schedule.total_size() - sum(self.schedule.size_of(key)
                                                for key in self.refused)

    def _held_count(self) -> int:
        """Held entries that take room: a refused target's entries do not.

        They may wait for hours (until the key is fixed), and they must not
        keep the other targets' entries from being read; there are at most
        ``refused_max_held`` of them per refused target.
        """
        return len(self.schedule) - sum(self.schedule.count(key) for key in self.refused)

    def _hold(self, item: StreamItem) -> None:
        if item.id in self.schedule:
            return
        held = Held(item=item, backoff=Backoff(self.initial_backoff, self.max_backoff),
                    size=stored_size(item.fields))
        self._size_estimate = max(float(held.size), 0.99 * self._size_estimate)
        self.schedule.put(held)

    async def _take_in(self, entries: RawEntries, *, reclaimed: bool = False,
                       confirmed: float | None = None) -> None:
        """Hold entries just read or reclaimed; a refused target's beyond the cap are parked.

        ``confirmed``: a monotonic time taken before the read that made them ours.
        """
        since = time.monotonic() if confirmed is None else confirmed
        surplus: dict[str, list[str]] = {}
        for entry_id, fields in entries:
            if entry_id in self.schedule:
                continue
            item = StreamItem.parse(entry_id, fields)
            target = item.entry.target.key if item.entry is not None else None
            if target is not None and target in self.refused \
                    and not self._refused_room(target, stored_size(item.fields)):
                surplus.setdefault(target, []).append(entry_id)
                continue
            if reclaimed:
                log.info("reclaimed outbox entry left by another consumer", entry=entry_id)
            self._hold(item)
            held = self.schedule.held.get(entry_id)
            if held is not None:
                held.confirmed = since
        for target, ids in surplus.items():
            await self._park(target, ids)

    def _refused_room(self, target: str, size: int) -> bool:
        """Whether one more entry (of ``size``) of refused ``target`` may be held in memory.

        Both bounds apply: ``refused_max_held`` entries and ``refused_max_held_bytes``
        of stored size; the first entry is always allowed (the recheck needs one).
        """
        count = self.schedule.count(target)
        if count >= self.refused_cap:
            return False
        return count == 0 or self.schedule.size_of(target) + size <= self.refused_cap_bytes

    def _over_refused_cap(self, target: str) -> bool:
        """Whether refused ``target`` holds more than its share (count or size) in memory."""
        count = self.schedule.count(target)
        return count > self.refused_cap or (
            count > 1 and self.schedule.size_of(target) > self.refused_cap_bytes)

    async def _park(self, target: str, entry_ids: list[str]) -> None:
        """Hand a refused target's surplus entries to its parking member in Redis.

        Callers have stopped holding them (so no heartbeat claims them back).
        If this fails they stay pending for this replica, held by nobody, and
        are reclaimed after ``claim_idle``: nothing is lost either way.
        """
        moved = await self.stream.hand_over(entry_ids, parking_member(target))
        if moved:
            first = self.parked.get(target, 0) == 0
            self.parked[target] = self.parked.get(target, 0) + len(moved)
            log_event = log.info if first else log.debug
            log_event(f"parked entries of refused target {target} in Redis: at most "
                      f"{self.refused_cap} wait in memory", target=target, entries=len(moved),
                      parked=self.parked[target])

    def _take_back_candidate(self, room: int) -> tuple[str, int] | None:
        """A target whose parked entries this replica may take back now, and how many."""
        for target, parked in self.parked.items():
            if parked <= 0:
                continue
            refused = target in self.refused
            if refused and self.schedule.size_of(target) >= self.refused_cap_bytes:
                continue  # its share is full by size: taking any back would park it again
            allowance = take_back_allowance(refused, self.schedule.count(target),
                                            self.refused_cap, room)
            if allowance > 0:
                return target, min(allowance, parked, 250)
        return None

    async def _take_back(self, target: str, count: int) -> None:
        """Take up to ``count`` parked entries of ``target`` back into memory."""
        started = time.monotonic()
        entries = await self.stream.take_from(parking_member(target), count)
        left = max(0, self.parked.get(target, 0) - len(entries))
        self.parked[target] = left if len(entries) == count else 0
        if entries:
            log.debug("took parked entries back", target=target, entries=len(entries),
                      parked=self.parked[target], refused=target in self.refused)
        await self._take_in(entries, confirmed=started)

    async def _housekeep(self, stop: asyncio.Event) -> None:
        """Update gauges, keep held entries fresh, reclaim a crashed consumer's entries.

        The gauges come first: they read only the streams, so a consumer-group
        step that fails (a group Redis lost, until it is recreated) cannot
        freeze the outbox-age gauge the stale-outbox alert watches.
        """
        interval = min(max(self.stream.heartbeat_s, 0.02), 5.0)
        backoff = Backoff(0.2, 10.0)
        while not stop.is_set():
            try:
                await self._update_gauges()
                await self._heartbeat()
                await self._reclaim()
                backoff.reset()
            except RedisError as exc:
                await self._redis_trouble("housekeeping", exc, backoff, stop)
                continue
            if await wait_or_stop(stop, interval):
                return

    async def _reclaim(self) -> None:
        """Take over entries real members left idle; note what waits parked per target.

        Parking members are skipped: their entries wait on purpose, and are
        taken back by :meth:`_take_back` only.
        """
        members = await self.stream.members()
        parked = {target: pending for member, pending in members.items()
                  if (target := parked_target(member)) is not None}
        self.parked = {target: n for target, n in parked.items() if n > 0}
        if self._take_back_candidate(self._batch_room()) is not None:
            self._room.set()
        room = self.max_held - self._held_count()
        room = self._room_by_size(room) if room > 0 else 0
        live = [member for member, pending in members.items()
                if pending > 0 and parked_target(member) is None]
        if room > 0 and live:
            started = time.monotonic()
            await self._take_in(await self.stream.reclaim_from(live, room), reclaimed=True,
                                confirmed=started)

    async def _heartbeat(self) -> None:
        """Refresh the held entries still ours; let go of those another consumer took over.

        Only a stall of this process longer than ``claim_idle`` lets another
        consumer take an entry over. Such an entry is that consumer's now: a
        waiting one is forgotten here, one in a worker's hands is marked so
        the worker neither sends nor acknowledges it again.
        """
        ids = list(self.schedule.held)
        if not ids:
            return
        started = time.monotonic()
        owned = await self.stream.refresh(ids)
        for entry_id in ids:
            held = self.schedule.held.get(entry_id)
            if held is None:
                continue
            if entry_id in owned:
                held.confirmed = started
            else:
                held.lost = True
                if self.schedule.is_waiting(entry_id):
                    self._let_go(held)

    async def _still_ours(self, held: Held) -> bool:
        """Whether ``held`` may be sent: Redis confirmed it ours recently enough, or now."""
        if held.lost:
            return False
        if time.monotonic() - held.confirmed < self.trust_s:
            return True
        started = time.monotonic()
        if held.item.id in await self.stream.refresh([held.item.id]):
            held.confirmed = started
            return True
        held.lost = True
        return False

    def _let_go(self, held: Held) -> None:
        """Forget an entry another consumer took over: it is that one's to deliver."""
        self.lost += 1
        now = time.monotonic()
        if now - self._lost_told_at >= LOST_TOLD_EVERY_S:  # a stall loses many at once
            self._lost_told_at = now
            log.warning("outbox entries taken over by another consumer: this process stalled "
                        "longer than delivery.claim_idle (CPU starved, paused); leaving them "
                        "to that one", entry=held.item.id, consumer=self.consumer,
                        taken_over_so_far=self.lost)
        else:
            log.debug("outbox entry taken over by another consumer", entry=held.item.id)
        self.schedule.release(held.item.id)
        self._room.set()
        entry = held.item.entry
        if entry is not None and entry.order_key is not None:
            self.schedule.wake(entry.order_key)

    async def _update_gauges(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.keys.outbox_stream)
            pipe.xlen(self.keys.dead_stream)
            pipe.xrange(self.keys.outbox_stream, "-", "+", count=1)
            pipe.time()  # the age on Redis's clock, the one that stamped the id
            depth, dead, oldest, now = await pipe.execute()
        age = StreamItem(oldest[0][0], {}).age_at(redis_seconds(now)) if oldest else 0.0
        self.context.metrics.outbox_oldest_age.set(age)
        self.context.status.outbox_oldest_age_seconds = age
        self.context.metrics.outbox_depth.set(depth)
        self.context.metrics.dead_letters.set(dead)
        self.context.status.outbox_depth = int(depth)
        self.context.status.dead_letters = int(dead)
        self._show_waiting()

    def _show_waiting(self) -> None:
        """Held and parked entries per refused (or still draining) target: status and gauge."""
        gauge = self.context.metrics.refused_waiting
        shown = set(self.refused) | {t for t, n in self.parked.items() if n > 0}
        for target in shown | self._waiting_shown:
            held = self.schedule.count(target) if target in self.refused else 0
            parked = self.parked.get(target, 0)
            gauge.labels(target, "memory").set(held)
            gauge.labels(target, "redis").set(parked)
            snapshot = self.context.status.devlake_targets.get(target)
            if target in self.refused and snapshot is not None:
                snapshot["held"] = held
                snapshot["parked"] = parked
        self._waiting_shown = shown

    async def _recovered(self, exc: Exception) -> bool:
        """Recreate the outbox's consumer group if ``exc`` is ``NOGROUP``; True if it was."""
        if not await self.stream.recover(exc):
            return False
        report_data_lost(self.context, "group",
                         f"the consumer group {OUTBOX_GROUP} of the outbox stream was missing; "
                         "recreated it")
        return True

    async def _redis_trouble(self, operation: str, exc: Exception, backoff: Backoff,
                             stop: asyncio.Event) -> None:
        if await self._recovered(exc):
            backoff.reset()
            return
        delay = backoff.next_delay()
        self.context.metrics.redis_errors.labels(operation).inc()
        log.warning("redis error in delivery, retrying", operation=operation,
                    error=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 3))
        await wait_or_stop(stop, delay)

    # --- delivering ------------------------------------------------------------------

    async def _work(self, sender: Sender) -> None:
        while (held := await self.schedule.take()) is not None:
            try:
                await self._attempt(held, sender)
            except RedisError as exc:
                self.context.metrics.redis_errors.labels("delivery").inc()
                delay = 0.0 if await self._recovered(exc) else held.backoff.next_delay()
                log.warning("redis error while delivering, will retry", entry=held.item.id,
                            error=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 3))
                self.schedule.put(held, delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = held.backoff.next_delay()
                log.exception("unexpected error while delivering, will retry",
                              entry=held.item.id, retry_in=round(delay, 3))
                self.schedule.put(held, delay)

    async def _attempt(self, held: Held, sender: Sender) -> None:
        item = held.item
        entry = item.entry
        if not await self._still_ours(held):
            self._let_go(held)
            return
        if entry is None:
            await self._dead(held, "unreadable", item.error or "unreadable entry")
            return
        if self._waits_paused(held, entry):
            return
        try:
            body: dict[str, Any] | None = contract_body(entry.kind, entry.payload)
        except (ValidationError, KeyError) as exc:
            await self._dead(held, "invalid_payload", f"payload breaks the DevLake contract: {exc}")
            return
        if entry.kind == "close":
            body = None
        devlake = self.settings.integration.devlake
        try:
            url = endpoint(devlake.base_url, devlake.api_prefix, entry.target, entry.kind,
                           entry.record_id)
        except ValueError as exc:
            await self._dead(held, "unroutable", str(exc))
            return
        if await self._waits_refused(held, entry):
            return
        if not item.ordered or entry.order_key is None:
            await self._send(held, sender, url, body)
            return
        await self._attempt_ordered(held, sender, url, body)

    async def _attempt_ordered(self, held: Held, sender: Sender, url: str,
                               body: dict[str, Any] | None) -> None:
        """Send an ordered entry under its key's lock, taken only while the entry is ours.

        The order check runs under the lock: a state another consumer delivered
        since (after taking the entry over from this one) is then seen, and the
        older state is not sent over it.
        """
        item = held.item
        entry = item.entry
        assert entry is not None and entry.order_key is not None
        lock = OrderLock(self.redis, self.keys, entry.order_key, self.consumer,
                         ttl_s=self.settings.integration.devlake.timeout_seconds * 2 + 5)
        started = time.monotonic()
        locked = await lock.acquire(item)
        if locked == "not_owned":
            held.lost = True
            self._let_go(held)
            return
        if locked == "busy":
            self.schedule.put(held, self.recheck)
            return
        held.confirmed = started
        try:
            gate = await order_gate(self.redis, self.keys, item)
            if gate.verdict == "obsolete":
                log.info("dropping obsolete entry: a later state was already delivered",
                         entry=item.id, order_key=entry.order_key, seq=item.seq,
                         delivered_seq=gate.delivered)
                await self._finish(held)
            elif gate.verdict == "blocked":
                self.schedule.park(held, entry.order_key, self.recheck)
            else:
                await self._send(held, sender, url, body)
        finally:
            with contextlib.suppress(RedisError):
                await lock.release()

    async def _send(self, held: Held, sender: Sender, url: str,
                    body: dict[str, Any] | None) -> None:
        entry = held.item.entry
        assert entry is not None
        held.attempts += 1
        answer = await sender.deliver(entry, url, body)
        verdict = classify(answer)
        if verdict.action == "ack":
            await self._delivered(held, answer)
        elif verdict.action == "auth":
            await self._refuse(held, answer, url)
        elif (verdict.reason == "not_found" and entry.target.kind == "project_name"
              and entry.kind != "deployment" and awaits_connection(answer)):
            await self._await_connection(held, answer, url)
        elif (entry.target.kind == "project_name" and entry.kind == "deployment"
              and connection_just_created(answer)):
            await self._retry(held, verdict, answer, url)
        elif verdict.action == "dead":
            await self._dead(held, verdict.reason, _describe(answer, url), answer)
        else:
            await self._retry(held, verdict, answer, url)

    async def _delivered(self, held: Held, answer: Answer) -> None:
        item = held.item
        entry = item.entry
        assert entry is not None
        await self._finish(held)
        metrics = self.context.metrics
        metrics.records_sent.labels(entry.kind, entry.target.key).inc()
        metrics.delivery_latency.observe(max(0.0, time.time() - entry.enqueued_at))
        metrics.mark_success("devlake")
        self._accepted(entry.target)
        if held.first_failure is not None:
            log.info("delivered after retries", entry=item.id, kind=entry.kind,
                     record=entry.record_id, target=entry.target.key, attempts=held.attempts,
                     waited=round(time.monotonic() - held.first_failure, 3))
        else:
            log.debug("delivered", entry=item.id, kind=entry.kind, record=entry.record_id,
                      target=entry.target.key)
        if entry.kind == "deployment":
            metrics.deployments_sent.labels(entry.target.key).inc()
            self.context.status.recent_deployments.appendleft(_summary(entry))

    async def _finish(self, held: Held) -> None:
        """Acknowledge a delivered or obsolete entry and let its order key move on.

        Unordered entries are acknowledged in batches by :class:`AckBatcher`;
        an ordered one right away, since its successor waits for its key to
        advance in Redis.
        """
        if not held.item.ordered:
            self._acks.add(held)
            return
        await ack_delivered(self.redis, self.keys, held.item, consumer=self.consumer)
        self._acked([held])

    def _acked(self, batch: list[Held]) -> None:
        """Entries acknowledged in Redis: stop holding them, make room, wake their keys."""
        for held in batch:
            self.schedule.release(held.item.id)
            entry = held.item.entry
            if entry is not None and entry.order_key is not None:
                self.schedule.wake(entry.order_key)
        self._room.set()

    async def _ack_trouble(self, exc: Exception, backoff: Backoff, halt: asyncio.Event
                           ) -> None:
        await self._redis_trouble("ack", exc, backoff, halt)

    async def _dead(self, held: Held, reason: str, detail: str,
                    answer: Answer | None = None) -> None:
        item = held.item
        entry = item.entry
        dead_id = await dead_letter(
            self.redis, self.keys, item, reason=f"{reason}: {detail}",
            status=answer.status if answer else None, body=answer.body if answer else "",
            consumer=self.consumer,
        )
        if dead_id is None:
            self._let_go(held)
            return
        self.schedule.release(item.id)
        self._room.set()
        self.context.metrics.dead_lettered.labels(reason).inc()
        log.error(
            "moved to dead letters",
            entry=item.id,
            dead_id=dead_id,
            reason=reason,
            detail=detail,
            kind=entry.kind if entry else None,
            record=entry.record_id if entry else None,
            target=entry.target.key if entry else None,
            hint="inspect with 'doraforwarder outbox dead', retry with "
                 "'doraforwarder outbox requeue ID'",
        )
        if entry is not None and entry.order_key is not None:
            self.schedule.wake(entry.order_key)

    async def _retry(self, held: Held, verdict: Verdict, answer: Answer, url: str) -> None:
        entry = held.item.entry
        assert entry is not None
        if held.first_failure is None:
            held.first_failure = time.monotonic()
        if answer.retry_after is not None and verdict.reason == "rate_limited":
            delay = min(answer.retry_after, self.max_retry_after)
            held.backoff.next_delay()
        else:
            delay = held.backoff.next_delay()
        if verdict.reason == "rate_limited":
            # DevLake (or a proxy) limits the client, not one record: the whole target waits.
            until = time.monotonic() + delay
            self.paused[entry.target.key] = max(until, self.paused.get(entry.target.key, 0.0))
            self._show_paused(entry.target, delay)
        self.context.metrics.delivery_retries.labels(verdict.reason).inc()
        if verdict.reason in ("network", "timeout", "server_error", "unexpected_status"):
            self.context.metrics.mark_failure("devlake", _cause(verdict.reason, answer))
        held.last_reason = verdict.reason
        log.warning(
            "delivery failed, will retry",
            entry=held.item.id,
            kind=entry.kind,
            record=entry.record_id,
            target=entry.target.key,
            reason=verdict.reason,
            status=answer.status,
            error=answer.error,
            attempt=held.attempts,
            retry_in=round(delay, 3),
            url=url,
        )
        self.schedule.put(held, delay)


    def _show_paused(self, target: Target, delay: float) -> None:
        """Name the rate-limited target in ``/api/v1/status`` until DevLake accepts it again."""
        if target.key in self.refused or target.key in self.awaiting:
            return  # a stronger reason to wait is shown already
        until = datetime.now(UTC) + timedelta(seconds=delay)
        self.context.status.devlake_targets[target.key] = {
            "state": "rate_limited", "team": target.team,
            "reason": "DevLake answered 429: every entry of this target waits for its "
                      "Retry-After (at most delivery.max_retry_after)",
            "until": until.isoformat(timespec="seconds")}

    def _waits_paused(self, held: Held, entry: OutboxEntry) -> bool:
        """Put ``held`` back, unsent, while its target is paused by a 429."""
        until = self.paused.get(entry.target.key)
        if until is None:
            return False
        left = until - time.monotonic()
        if left <= 0:
            del self.paused[entry.target.key]
            return False
        self.schedule.put(held, left)
        return True

    # --- refused targets and connections still to be created ------------------------

    async def _waits_refused(self, held: Held, entry: OutboxEntry) -> bool:
        """Park ``held`` if its target is refused and this is not the time to try again.

        One entry per target is sent each ``refused_recheck`` (DevLake's key may
        be fixed without a restart); the others wait, without a request: in
        memory up to ``refused_max_held``, parked in Redis beyond.
        """
        refused = self.refused.get(entry.target.key)
        if refused is None:
            return False
        if await self._parks_surplus(held):
            return True
        now = time.monotonic()
        if now >= refused.next_try:
            refused.next_try = now + self.refused_recheck
            return False
        self.schedule.park(held, _refused_key(entry.target.key), refused.next_try - now)
        self._room.set()
        return True

    async def _refuse(self, held: Held, answer: Answer, url: str) -> None:
        entry = held.item.entry
        assert entry is not None
        target = entry.target
        found = refusal(answer)
        previous = self.refused.get(target.key)
        metrics = self.context.metrics
        self.context.metrics.delivery_retries.labels("auth").inc()
        if held.first_failure is None:
            held.first_failure = time.monotonic()
        if previous is None or previous.refusal.cause != found.cause:
            env = self._token_envs.get(target.key, self.settings.integration.devlake.token_env)
            devlake = self.settings.integration.devlake
            explanation = found.explain(scope_path(url, devlake.base_url, devlake.api_prefix),
                                        env)
            if previous is not None:
                metrics.target_refused.labels(target.key, previous.refusal.cause).set(0)
            refused = RefusedTarget(
                target, found, explanation,
                since=datetime.now(UTC).isoformat(timespec="seconds"),
                next_try=time.monotonic() + self.refused_recheck)
            self.refused[target.key] = refused
            metrics.target_refused.labels(target.key, found.cause).set(1)
            self.context.status.devlake_targets[target.key] = {
                **refused.snapshot(), "held": self.schedule.count(target.key),
                "parked": self.parked.get(target.key, 0)}
            log.error(f"DevLake refuses target {target.key}: {explanation}",
                      target=target.key, team=target.team, cause=found.cause,
                      status=answer.status, token_env=env,
                      hint="its entries wait in the outbox (at most delivery.refused_max_held "
                           "in memory, the rest parked in Redis); one is retried every "
                           "refused_recheck: once the key is fixed they are all delivered, "
                           "no restart needed")
        else:
            log.debug("DevLake still refuses target", target=target.key, cause=found.cause,
                      entry=held.item.id)
        refused = self.refused[target.key]
        self._room.set()
        if await self._parks_surplus(held):
            return
        self.schedule.park(held, _refused_key(target.key),
                           max(refused.next_try - time.monotonic(), 0.001))

    async def _parks_surplus(self, held: Held) -> bool:
        """Bring a refused target back to the cap in memory; True if ``held`` was parked.

        More than the cap are held when entries were read before the target
        was known to be refused (one batch, or taken back after a start). The
        newest waiting ones are parked, so the oldest stay in memory: an
        issue's close then rarely waits in memory for its upsert parked in
        Redis. ``held`` itself (in this worker) is parked only if that is not
        enough.
        """
        target = _target_key(held)
        if target is None or not self._over_refused_cap(target):
            return False
        newest = sorted(self.schedule.waiting_of(target), key=lambda h: _id_order(h.item.id))
        shed: list[str] = []
        while newest and self._over_refused_cap(target):
            entry_id = newest.pop().item.id
            self.schedule.release(entry_id)
            shed.append(entry_id)
        parks_held = self._over_refused_cap(target)
        if parks_held:
            self.schedule.release(held.item.id)
            shed.append(held.item.id)
        await self._park(target, shed)
        return parks_held

    def _accepted(self, target: Target) -> None:
        """DevLake took an entry of ``target``: it is neither refused nor awaited any more."""
        refused = self.refused.pop(target.key, None)
        if target.key in self.awaiting:
            self.awaiting.discard(target.key)
            log.info(f"connection {project_connection_name(target.value)} exists now: "
                     f"incidents for project {target.value} are delivered", target=target.key)
        if refused is None:
            if target.key not in self.refused:
                self.context.status.devlake_targets.pop(target.key, None)
            return
        self.context.metrics.target_refused.labels(target.key, refused.refusal.cause).set(0)
        self.context.status.devlake_targets.pop(target.key, None)
        log.info(f"DevLake accepts target {target.key} again", target=target.key,
                 team=target.team, held=self.schedule.count(target.key),
                 parked=self.parked.get(target.key, 0))
        self.schedule.wake(_refused_key(target.key))
        self._room.set()  # the feeder takes the parked entries back

    async def _await_connection(self, held: Held, answer: Answer, url: str) -> None:
        """Incidents for a project before its first deployment created the connection: wait."""
        entry = held.item.entry
        assert entry is not None
        target = entry.target
        name = project_connection_name(target.value)
        if target.key not in self.awaiting:
            self.awaiting.add(target.key)
            self.context.status.devlake_targets[target.key] = {
                "state": "awaiting_connection", "team": target.team,
                "reason": f"DevLake has no connection {name} yet; the first deployment to "
                          f"project {target.value} creates it",
                "since": datetime.now(UTC).isoformat(timespec="seconds")}
            log.warning(f"incidents for project {target.value} wait: DevLake has no "
                        f"connection {name} until the first deployment to the project "
                        "creates it", target=target.key, team=target.team, url=url)
        await self._retry(held, Verdict("retry", "awaiting_connection"), answer, url)


def _token_envs(devlake: Any) -> dict[str, str]:
    """Target key -> environment variable of its key (empty when DevLake is off)."""
    try:
        return Router(devlake).token_envs()
    except ValueError:
        return {}


def _cause(reason: str, answer: Answer) -> str:
    return f"{reason}: HTTP {answer.status}" if answer.status else f"{reason}: {answer.error}"


def _describe(answer: Answer, url: str) -> str:
    if answer.status is None:
        return f"{answer.error} (POST {url})"
    text = " ".join(answer.body.split())[:300]
    return f"HTTP {answer.status} from POST {url}: {text}" if text else \
        f"HTTP {answer.status} from POST {url}"


def _summary(entry: Any) -> dict[str, Any]:
    payload = entry.payload
    return {
        "id": entry.record_id,
        "name": payload.get("name"),
        "result": payload.get("result"),
        "environment": payload.get("environment"),
        "finished": payload.get("finishedDate"),
        "commits": len(payload.get("deploymentCommits") or []),
        "target": entry.target.key,
        "team": entry.target.team,
        "delivered_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
