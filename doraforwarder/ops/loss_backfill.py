"""The daemon backfills by itself after Redis lost its data under it.

:class:`~doraforwarder.storage.RedisWatch` finds the loss (the marker gone or
written again) and calls :meth:`LossBackfill.trigger` with the last time it
saw the marker present. This service waits a few seconds (the relist the
watch requested at the same time decides every Application first, so a sync
made between the loss and the relist is in the history read here), then runs
the same code as ``doraforwarder backfill --since``
(:class:`~doraforwarder.ops.backfill.Backfill`: plan, stage) from
:func:`~doraforwarder.loss_window.choose_since`; the daemon's own resolvers
and senders deliver what it staged.

One at a time: a loss found while a backfill runs moves the start earlier
(if it is) and runs once more after it. With two replicas both find the loss
and both backfill; each deployment is staged once anyway (the ``backfilled``
set, under ``WATCH``, see :meth:`Backfill._stage_once`: the second replica
counts it ``already staged``), and DevLake updates a record sent again under
its id.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from doraforwarder.backoff import wait_or_stop
from doraforwarder.context import AppContext
from doraforwarder.logging import get_logger
from doraforwarder.loss_window import choose_since
from doraforwarder.ops.backfill import Backfill, Selection, list_applications

log = get_logger("loss-backfill")

SETTLE_SECONDS = 5.0
"""Between finding the loss and listing the Applications: the relist goes first."""


class LossBackfill:
    """Backfills ArgoCD's kept history after each loss this process finds, one at a time."""

    name = "loss-backfill"

    def __init__(self, context: AppContext, settle: float = SETTLE_SECONDS) -> None:
        self.context = context
        self.settle = settle
        self._since: datetime | None = None
        self._why = ""
        self._wanted = asyncio.Event()

    def trigger(self, marker_seen_at: datetime | None) -> None:
        """Redis lost its data (called in the event loop by the watch)."""
        now = datetime.now(UTC)
        since, why = choose_since(now, self.context.unconfirmed.oldest(), marker_seen_at)
        if self._since is None or since < self._since:
            self._since, self._why = since, why
        self._wanted.set()
        self.context.metrics.redis_loss_backfills.labels("requested").inc()
        self.context.status.redis_loss_backfill = {
            **(self.context.status.redis_loss_backfill or {}),
            "state": "waiting", "since": self._since.isoformat(timespec="seconds"),
            "why": self._why}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiter = asyncio.create_task(self._wanted.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set() or await wait_or_stop(stop, self.settle):
                return
            self._wanted.clear()
            since, why = self._since, self._why
            self._since = None
            if since is not None:
                await self.backfill(since, why)

    async def backfill(self, since: datetime, why: str) -> int | None:
        """Stage what ArgoCD keeps since ``since``; the count staged, None if it failed."""
        context = self.context
        status = {"since": since.isoformat(timespec="seconds"), "why": why,
                  "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
        context.status.redis_loss_backfill = {**status, "state": "running"}
        log.warning("backfilling after redis lost its data", since=status["since"], why=why)
        started = time.monotonic()
        try:
            backfill = Backfill(context, Selection(since=since))
            settings = context.settings.argocd
            objects = await asyncio.to_thread(lambda: list(list_applications(settings, None)))
            kept, duplicates = await backfill.plan(objects)
            outcomes = await backfill.stage(kept)
        except Exception as exc:  # Redis or the API server failing: said, the daemon goes on
            error = f"{type(exc).__name__}: {exc}"
            context.metrics.redis_loss_backfills.labels("failed").inc()
            context.status.redis_loss_backfill = {**status, "state": "failed", "error": error}
            log.error("backfill after redis lost its data failed", since=status["since"],
                      error=error, hint="run `doraforwarder backfill --since "
                                        f"{status['since']}` once Redis and the API server answer")
            return None
        staged = sum(1 for outcome in outcomes if outcome.action == "staged")
        already = sum(1 for outcome in outcomes if outcome.action == "already staged")
        context.metrics.redis_loss_backfills.labels("done").inc()
        context.metrics.redis_loss_backfill_staged.inc(staged)
        context.status.redis_loss_backfill = {
            **status, "state": "done", "staged": staged, "already_staged": already,
            "duplicates": len(duplicates),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        log.warning("backfilled after redis lost its data", since=status["since"], why=why,
                    applications=len(objects), staged=staged, already_staged=already,
                    duplicates=len(duplicates), seconds=round(time.monotonic() - started, 3))
        return staged
