"""How far back to send history again after Redis lost its data under the running daemon.

When Redis loses its data (``FLUSHALL``, a restart without persistence, a
failover to an empty replica) what was staged and not yet delivered is gone.
ArgoCD still keeps each Application's last syncs (``status.history``), so the
daemon backfills them (:mod:`doraforwarder.ops.loss_backfill`) from a time it
knows is early enough. What it knows lives in this process's memory, not in
Redis (which is what was lost):

- :class:`Unconfirmed`: the deployments this process staged and has not yet
  seen delivered (the queues seen empty after it was staged counts as
  delivered), each with its ArgoCD time;
- when :class:`~doraforwarder.storage.RedisWatch` last saw the marker
  present: whatever was lost was written after that, or was staged and
  waiting (the first point).

:func:`choose_since` is the pure rule; backfill compares it with each sync's
``deployed_at`` (ArgoCD's time), so the ledger keeps ``deployed_at``, not the
time of detection (a relist can detect a sync hours after it finished).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

MARGIN = timedelta(minutes=5)
"""Taken off the chosen time: clocks of ArgoCD and this host differ a little."""
MAX_WINDOW = timedelta(hours=48)
"""The furthest back a backfill after a loss reaches (a pending record deployed long
ago, or a skewed clock, must not make it replay everything ArgoCD keeps)."""


@dataclass
class Unconfirmed:
    """Deployments staged by this process and not yet seen delivered: id -> (deployed_at,
    when staged, ``time.time()``)."""

    entries: dict[str, tuple[datetime, float]] = field(default_factory=dict)

    def staged(self, deployment_id: str, deployed_at: datetime,
               at: float | None = None) -> None:
        self.entries[deployment_id] = (deployed_at, time.time() if at is None else at)

    def settled(self, before: float) -> None:
        """The queues (deployments stream and outbox) were seen empty at ``before``: what was
        staged earlier was delivered (or dead-lettered, or dropped on purpose)."""
        self.entries = {key: value for key, value in self.entries.items()
                        if value[1] >= before}

    def oldest(self) -> datetime | None:
        return min((value[0] for value in self.entries.values()), default=None)


def choose_since(now: datetime, oldest_unconfirmed: datetime | None,
                 marker_seen_at: datetime | None, *, margin: timedelta = MARGIN,
                 max_window: timedelta = MAX_WINDOW) -> tuple[datetime, str]:
    """Pure: (since, why) for the backfill after a loss found at ``now``.

    The earliest of what is known (never later than ``now``), minus ``margin``,
    and never before ``now - max_window``.
    """
    known = [(at, why) for at, why in (
        (oldest_unconfirmed, "oldest deployment staged and not seen delivered"),
        (marker_seen_at, "last look at the marker before the loss")) if at is not None]
    at, why = min(known, default=(now, "nothing known: the loss was found now"),
                  key=lambda item: item[0])
    if at > now:
        at, why = now, f"{why} (in the future: now instead)"
    since = at - margin
    floor = now - max_window
    if since < floor:
        return floor, f"{why} (bounded by the maximum window of {max_window})"
    return since, why
