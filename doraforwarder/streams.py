"""Redis streams read with consumer groups, and both ends of the deployments stream.

Detection stages a :class:`~doraforwarder.records.DetectedDeployment` on the
``deployments`` stream inside the caller's transaction (:func:`stage_detected`,
through the :class:`StageDetected` object the daemon hands the ArgoCD source);
the resolver stage reads it back (:func:`read_detected`). Both ends live here
so the source never stands on the stage that consumes it.

:class:`GroupConsumer` is the one consumer-group member the resolver stage and
the outbox delivery share: it reads new entries (``XREADGROUP``), reclaims
entries a crashed member left pending longer than the claim-idle time
(``XAUTOCLAIM``, or ``XCLAIM`` with that idle time, which Redis checks again
as it claims), and keeps the entries it works on fresh so a slow entry is not
mistaken for a crashed one.

Ownership is explicit: an entry is this member's while it is pending for it
in the group, and only then. A member that stalled longer than the claim-idle
time (a paused VM, a starved CPU) may find its entries taken over by another;
the heartbeat (:meth:`GroupConsumer.refresh`) refreshes only the entries still
pending for this member and says which those are, so a stalled member learns
it lost the others instead of taking them back (a plain ``XCLAIM ... JUSTID``
would, and both members would then send them), and
:meth:`GroupConsumer.ack_owned` acknowledges only entries still its own. Both
are one Lua script each that checks the owner in ``XPENDING`` and writes only
``XCLAIM``/``XACK``/``XDEL``: commands Redis runs over ``maxmemory`` (it judges
a script by its first write command), so draining keeps working when Redis is
full.

It can also *park* entries under a member name no process uses
(:meth:`GroupConsumer.hand_over`) and take them back later
(:meth:`GroupConsumer.take_from`): a parked entry stays in the stream and in
the group's pending list, so it is as safe as any pending entry while no
process holds it in memory. :meth:`GroupConsumer.reclaim_from` reclaims only
from the members it is given, so parked entries are not reclaimed as if
their member had crashed (``XAUTOCLAIM`` cannot skip a member).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from doraforwarder.backoff import wait_or_stop
from doraforwarder.keys import Keys
from doraforwarder.records import DetectedDeployment, DetectedIncident
from doraforwarder.storage import LuaScript

DEPLOYMENT_FIELD = "deployment"

RawEntries = list[tuple[str, dict[str, str]]]

class StageDetected(Protocol):
    """How a source stages what it detected inside its own transaction.

    Both calls only queue commands on ``pipe``, a MULTI the caller executes
    together with its state change: what is detected is staged exactly when
    the state saying so is written, never one without the other.
    """

    def deployment(self, pipe: Pipeline, deployment: DetectedDeployment) -> None: ...

    def incident(self, pipe: Pipeline, incident: DetectedIncident) -> None: ...


@dataclass(frozen=True)
class StreamStaging:
    """Deployments onto the ``deployments`` stream; incidents to ``incidents`` when given.

    Without an ``incidents`` stager an incident raises: losing one silently is
    the one outcome not allowed (the daemon always hands one in).
    """

    keys: Keys
    incidents: Callable[[Pipeline, DetectedIncident], None] | None = None

    def deployment(self, pipe: Pipeline, deployment: DetectedDeployment) -> None:
        stage_detected(pipe, self.keys, deployment)

    def incident(self, pipe: Pipeline, incident: DetectedIncident) -> None:
        if self.incidents is None:
            raise RuntimeError(f"no incident staging configured for {incident.key}")
        self.incidents(pipe, incident)


def stage_detected(pipe: Pipeline, keys: Keys, deployment: DetectedDeployment) -> None:
    """Queue the XADD of ``deployment`` on ``pipe`` (a transaction the caller executes)."""
    pipe.xadd(keys.deployments_stream, {DEPLOYMENT_FIELD: deployment.model_dump_json()})


def read_detected(fields: Mapping[str, str]) -> DetectedDeployment:
    """The deployment of a ``deployments`` stream entry (KeyError, ValidationError if bad)."""
    return DetectedDeployment.model_validate_json(fields[DEPLOYMENT_FIELD])


def raw_entries(raw: Any) -> RawEntries:
    """Typed view of ``XRANGE``/``XAUTOCLAIM`` entries (decoded client); skips deleted ones."""
    return [(str(entry_id), dict(fields)) for entry_id, fields in raw or [] if fields is not None]


def read_group_entries(raw: Any) -> RawEntries:
    """Typed view of an ``XREADGROUP`` answer over one or more streams."""
    entries: RawEntries = []
    for _stream, stream_entries in raw or []:
        entries.extend(raw_entries(stream_entries))
    return entries


def _pairs(flat: list[Any]) -> dict[str, str]:
    """Stream entry fields as a Lua script returns them (a flat list) -> dict."""
    return {str(flat[n]): str(flat[n + 1]) for n in range(0, len(flat) - 1, 2)}


def consumer_name() -> str:
    """A consumer-group member name unique per process.

    A restarted process must not inherit a dead one's entries implicitly:
    they are reclaimed explicitly after ``delivery.claim_idle``.
    """
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def ensure_group(redis: aioredis.Redis, stream: str, group: str) -> bool:
    """Create the consumer group (and the stream) if missing; True when it had to.

    Reads of a new group start at the beginning of the stream. The group is
    looked up first (``XINFO GROUPS``, a read): Redis refuses ``XGROUP
    CREATE`` over ``maxmemory`` even when the group exists, and a full Redis
    must not keep the workers from starting and draining it.
    """
    try:
        groups = await redis.xinfo_groups(stream)
    except aioredis.ResponseError:
        groups = []  # no such key: the stream is missing too
    if any(str(found.get("name")) == group for found in groups):
        return False
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except aioredis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def missing_group(exc: BaseException) -> bool:
    """Whether Redis answered that the stream or its consumer group does not exist.

    ``NOGROUP`` (from a command, or from one inside a script) once the group
    was created means Redis lost its data: a restart without persistence,
    ``FLUSHALL``, a failover to an empty replica.
    """
    return isinstance(exc, aioredis.ResponseError) and "NOGROUP" in str(exc)


HEARTBEAT_BATCH = 500
"""Entry ids refreshed per ``XCLAIM`` call."""

_PENDING_FOR = """
local function pending_for(member, first)
  local owned = {}
  for i = first, #ARGV do
    local found = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
    if found[1] and found[1][2] == member then
      owned[#owned + 1] = ARGV[i]
    end
  end
  return owned
end
"""
"""Lua: the ids among ``ARGV[first..]`` pending for ``member`` in group ``ARGV[1]``, the
ownership check every script that moves, refreshes or acknowledges entries starts with."""

_HAND_OVER = LuaScript(_PENDING_FOR + """
local moved = pending_for(ARGV[2], 4)
if #moved > 0 then
  local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[3], '0'}
  for _, id in ipairs(moved) do claim[#claim + 1] = id end
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return moved
""")
"""KEYS: stream. ARGV: group, from member, to member, entry ids. Moves only the ids
pending for ``from``, in one step: an entry another member took meanwhile stays its.
Handed from a member to itself, the ids are refreshed: ``XCLAIM`` resets their idle
time (``JUSTID`` leaves the delivery count alone), see :meth:`GroupConsumer.refresh`."""

_TAKE_FROM = LuaScript("""
local found = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])
if #found == 0 then
  return {}
end
local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[3], '0'}
for _, pending in ipairs(found) do claim[#claim + 1] = pending[1] end
return redis.call(unpack(claim))
""")
"""KEYS: stream. ARGV: group, from member, to member, count. The oldest ``count``
entries pending for ``from``, moved to ``to`` and returned (deleted ones are dropped);
two callers never get the same entry."""

_ACK_OWNED = LuaScript(_PENDING_FOR + """
local owned = pending_for(ARGV[2], 3)
if #owned == 0 then
  return {0}
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(owned))
local removed = redis.call('XDEL', KEYS[1], unpack(owned))
local answer = {removed}
for _, id in ipairs(owned) do answer[#answer + 1] = id end
return answer
""")
"""KEYS: stream. ARGV: group, member, entry ids. Acknowledges and deletes the ids still
pending for ``member``; returns ``{deleted, acknowledged ids...}``. ``XACK`` first: the
script runs over ``maxmemory``."""

HAND_OVER_BATCH = 250
"""Entry ids moved per script call (a Lua call's arguments stay small)."""


async def ack_owned(redis: aioredis.Redis, stream: str, group: str, consumer: str,
                    entry_ids: Iterable[str]) -> tuple[int, set[str]]:
    """Acknowledge and delete the entries still pending for ``consumer``.

    Returns how many were deleted and the ids acknowledged; the others belong
    to another member now (or are gone), which decides their fate.
    """
    ids = list(entry_ids)
    deleted, acked = 0, set[str]()
    for start in range(0, len(ids), HEARTBEAT_BATCH):
        answer = await _ACK_OWNED.run(redis, [stream], [
            group, consumer, *ids[start:start + HEARTBEAT_BATCH]])
        deleted += int(answer[0])
        acked.update(str(entry_id) for entry_id in answer[1:])
    return deleted, acked


@dataclass
class GroupConsumer:
    """One member of a consumer group on one stream.

    ``claim_idle_s`` is how long an entry may sit unrefreshed before another
    member may take it over; :attr:`heartbeat_s` (a third of it) is how often
    held entries should be refreshed.
    """

    redis: aioredis.Redis
    stream: str
    group: str
    consumer: str
    claim_idle_s: float = field(kw_only=True)
    read_block_s: float = field(default=0.5, kw_only=True)
    _reclaim_after: float = field(default=0.0, init=False, repr=False)
    """Monotonic time before which :meth:`take_one` does not look for entries to reclaim."""

    @property
    def reclaim_every_s(self) -> float:
        """How often :meth:`take_one` looks for entries to reclaim while none are found.

        An entry becomes reclaimable only after ``claim_idle_s``, so looking on
        every read (each worker every ``read_block_s``: most of an idle
        daemon's Redis commands) finds nothing; a tenth of it takes a crashed
        worker's entry over at most ``1.1 * claim_idle_s`` after its last refresh.
        """
        return self.claim_idle_s / 10

    @property
    def _claim_idle_ms(self) -> int:
        return max(1, int(self.claim_idle_s * 1000))

    @property
    def heartbeat_s(self) -> float:
        return self.claim_idle_s / 3

    async def ensure_group(self) -> bool:
        return await ensure_group(self.redis, self.stream, self.group)

    async def recover(self, exc: BaseException) -> bool:
        """Recreate the group if ``exc`` says it is missing; True when it was recreated.

        Entries staged after the loss are then read as usual; what the loss
        took (entries, pending lists) is gone and cannot be rebuilt here. A
        failure to recreate (Redis down again, or full) is left to the
        caller's next retry, which lands here again.
        """
        if not missing_group(exc):
            return False
        try:
            return await self.ensure_group()
        except RedisError:
            return False

    async def read_new(self, count: int, *, block: bool = True) -> RawEntries:
        """Up to ``count`` entries never delivered to any member.

        Waits up to the read block for one when ``block``, else answers at once.
        """
        answer = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count,
            block=max(1, int(self.read_block_s * 1000)) if block else None,
        )
        return read_group_entries(answer)

    async def reclaim(self, count: int, cursor: str = "0-0") -> tuple[str, RawEntries]:
        """Entries left pending too long by any member, taken over; returns the next cursor."""
        answer = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self._claim_idle_ms, start_id=cursor,
            count=count,
        )
        return str(answer[0]), raw_entries(answer[1])

    async def take_one(self) -> tuple[tuple[str, dict[str, str]] | None, bool]:
        """One entry to work on: a reclaimed one first, else a new one.

        Returns the entry (None when nothing came within the read block) and
        whether it was reclaimed from another member. Reclaims are looked for
        at most every :attr:`reclaim_every_s` while none are found.
        """
        now = time.monotonic()
        if now >= self._reclaim_after:
            _, claimed = await self.reclaim(1)
            if claimed:
                return claimed[0], True  # more may be waiting: look again next time
            self._reclaim_after = now + self.reclaim_every_s
        entries = await self.read_new(1)
        return (entries[0] if entries else None), False

    async def members(self) -> dict[str, int]:
        """Every member of the group (live, gone or parking) -> entries pending for it."""
        info = await self.redis.xinfo_consumers(self.stream, self.group)
        return {str(member["name"]): int(member["pending"]) for member in info}

    async def reclaim_from(self, members: Iterable[str], count: int) -> RawEntries:
        """Up to ``count`` entries left idle too long by ``members``, taken over.

        ``XCLAIM`` with the claim-idle time checks the idle time again when it
        claims, so an entry its holder refreshed meanwhile stays with it.
        """
        claimed: RawEntries = []
        for member in members:
            while len(claimed) < count:
                wanted = min(100, count - len(claimed))
                rows = await self.redis.xpending_range(
                    self.stream, self.group, "-", "+", wanted, consumername=member,
                    idle=self._claim_idle_ms)
                ids: list[str | bytes | int | memoryview] = [
                    str(row["message_id"]) for row in rows]
                if not ids:
                    break
                taken = raw_entries(await self.redis.xclaim(
                    self.stream, self.group, self.consumer, self._claim_idle_ms, ids))
                claimed.extend(taken)
                if not taken or len(ids) < wanted:
                    break
        return claimed

    async def hand_over(self, entry_ids: Iterable[str], member: str) -> list[str]:
        """Make entries pending for this consumer pending for ``member``; returns the ids moved.

        Ids no longer pending for this consumer (another one reclaimed them)
        are left where they are.
        """
        ids = list(entry_ids)
        moved: list[str] = []
        for start in range(0, len(ids), HAND_OVER_BATCH):
            answer = await _HAND_OVER.run(self.redis, [self.stream], [
                self.group, self.consumer, member, *ids[start:start + HAND_OVER_BATCH]])
            moved.extend(str(entry_id) for entry_id in answer or [])
        return moved

    async def take_from(self, member: str, count: int) -> RawEntries:
        """The oldest ``count`` entries pending for ``member``, now pending for this one."""
        answer = await _TAKE_FROM.run(self.redis, [self.stream],
                                      [self.group, member, self.consumer, str(count)])
        return [(str(entry_id), _pairs(fields)) for entry_id, fields in answer or []
                if fields is not None]

    async def refresh(self, entry_ids: Iterable[str]) -> set[str]:
        """Reset the idle time of the entries still this member's; returns those ids.

        An id missing from the answer is no longer this member's (another
        member took it over after this one stalled past the claim-idle time,
        or it was acknowledged): it must not be sent, acknowledged or
        refreshed by this member any more.
        """
        ids = list(entry_ids)
        owned: set[str] = set()
        for start in range(0, len(ids), HEARTBEAT_BATCH):
            answer = await _HAND_OVER.run(self.redis, [self.stream], [
                self.group, self.consumer, self.consumer,
                *ids[start:start + HEARTBEAT_BATCH]])
            owned.update(str(entry_id) for entry_id in answer or [])
        return owned

    async def ack_owned(self, entry_ids: Iterable[str]) -> tuple[int, set[str]]:
        """:func:`ack_owned` for this member."""
        return await ack_owned(self.redis, self.stream, self.group, self.consumer, entry_ids)

    @contextlib.asynccontextmanager
    async def kept_fresh(self, entry_id: str) -> AsyncIterator[None]:
        """Refresh ``entry_id`` every :attr:`heartbeat_s` while the block runs.

        The heartbeat ends on an event as well as by cancellation, so a cancel
        swallowed inside the Redis client cannot leave it running.
        """
        done = asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_fresh(entry_id, done))
        try:
            yield
        finally:
            done.set()
            heartbeat.cancel()
            await asyncio.wait({heartbeat})

    async def _keep_fresh(self, entry_id: str, done: asyncio.Event) -> None:
        interval = max(self.heartbeat_s, 0.01)
        while not await wait_or_stop(done, interval):
            with contextlib.suppress(RedisError):
                await self.refresh([entry_id])

    def retire(self, pipe: Pipeline, *entry_ids: str) -> None:
        """Queue the acknowledgement and deletion of finished entries on ``pipe``."""
        pipe.xack(self.stream, self.group, *entry_ids)
        pipe.xdel(self.stream, *entry_ids)
