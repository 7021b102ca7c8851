"""The entries a delivery pool holds, and when each may be tried next.

Apart from the pool so the hand-over to workers (no locks, no polling; see
:class:`Schedule`) and the per-target accounting (how many entries and how
many bytes of each target are held, what bounds memory) can be read and
table-tested on their own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from doraforwarder.backoff import Backoff
from doraforwarder.outbox.entries import StreamItem


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
                if held_target(self.held[entry_id]) == target_key]

    def put(self, held: Held, delay: float = 0.0) -> None:
        """Hold ``held`` (new, or back from a worker) and make it due after ``delay``."""
        entry_id = held.item.id
        if entry_id not in self.held:
            target = held_target(held)
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
        target = held_target(held)
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

def id_order(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (milliseconds, sequence)."""
    millis, _, seq = entry_id.partition("-")
    return (int(millis), int(seq or 0)) if millis.isdigit() and seq.isdigit() else (0, 0)

def held_target(held: Held) -> str | None:
    entry = held.item.entry
    return entry.target.key if entry is not None else None
