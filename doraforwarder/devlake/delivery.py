"""The DevLake sink: workers that drain the outbox stream into DevLake.

One feeder reads new outbox entries with the consumer group
(``keys.OUTBOX_GROUP``, through :class:`doraforwarder.streams.GroupConsumer`)
into an in-memory schedule; ``delivery.workers`` workers take entries that are
due and post them. An entry stays pending in
Redis until DevLake accepted it (then ``XACK`` + ``XDEL``) or refused it for
good (then it moves to the dead letters), so a crash loses nothing: another
worker or replica reclaims it with ``XAUTOCLAIM`` after ``delivery.claim_idle``.

Draining a backlog must cost little per entry: entries are read up to 250 at a
time, acknowledged in batches after their 2xx
(:class:`~doraforwarder.devlake.acks.AckBatcher`, one
transaction per wake-up instead of one per entry), and handed to workers
without locks or polling (:class:`~doraforwarder.devlake.schedule.Schedule`).

The pool is built in layers, one module each (see
:mod:`doraforwarder.devlake.pool_state`); this one holds its lifecycle.

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

from redis.exceptions import RedisError

from doraforwarder.devlake.client import (
    DevLakeClient,
    DryRunPrinter,
    Sender,
)
from doraforwarder.devlake.schedule import Schedule
from doraforwarder.devlake.sending import Sending
from doraforwarder.logging import get_logger

log = get_logger("devlake")


class DeliveryPool(Sending):
    """The delivery service: feeder, housekeeping and ``delivery.workers`` workers."""

    name = "delivery"

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
