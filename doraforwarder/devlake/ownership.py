"""Keeping a delivery pool's entries its own, and the outbox gauges fresh.

The housekeeping loop refreshes held entries (so a healthy replica's are
never taken for a crashed one's), lets go of those another consumer took
over after a stall, reclaims what crashed consumers left, and updates the
gauges the stale-outbox alert watches.
"""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import RedisError

from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.devlake.intake import Intake
from doraforwarder.devlake.pool_state import LOST_TOLD_EVERY_S
from doraforwarder.devlake.refused import parked_target
from doraforwarder.devlake.schedule import Held
from doraforwarder.logging import get_logger
from doraforwarder.outbox.entries import StreamItem, redis_seconds

log = get_logger("devlake")


class Ownership(Intake):
    """Housekeeping: heartbeat, reclaim, letting go, gauges."""

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
