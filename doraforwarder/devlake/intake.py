"""Reading outbox entries into a delivery pool, within its bounds on count and size.

New entries are read only while there is room (``max_held`` entries and
``delivery.max_held_bytes`` of stored size); a refused target's entries take
no room but are capped on their own, the surplus parked in Redis and taken
back when room allows (see :mod:`doraforwarder.devlake.refused`).
"""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import RedisError

from doraforwarder.backoff import Backoff
from doraforwarder.devlake.pool_state import DeliveryState
from doraforwarder.devlake.refused import parking_member, take_back_allowance
from doraforwarder.devlake.schedule import Held, stored_size
from doraforwarder.logging import get_logger
from doraforwarder.outbox.entries import StreamItem
from doraforwarder.streams import RawEntries

log = get_logger("devlake")


class Intake(DeliveryState):
    """The feeder: reading, holding, parking and taking back entries."""

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
