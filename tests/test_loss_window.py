"""How far back the daemon backfills after Redis lost its data (loss_window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from doraforwarder.loss_window import MARGIN, MAX_WINDOW, Unconfirmed, choose_since

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


@pytest.mark.parametrize(("oldest", "seen", "since", "why"), [
    # Nothing pending: the loss happened after the last look at the marker.
    (None, NOW - 1 * M / 60, NOW - M / 60 - MARGIN, "last look at the marker"),
    # A deployment waited (DevLake down): its ArgoCD time is earlier, it wins.
    (NOW - 40 * M, NOW - M / 60, NOW - 40 * M - MARGIN, "oldest deployment staged"),
    # A relist detected a sync that finished before the last marker look: still the earliest.
    (NOW - 3 * M, NOW - 2 * M, NOW - 3 * M - MARGIN, "oldest deployment staged"),
    # The marker look is earlier than anything pending (a slow check): it wins.
    (NOW - 1 * M, NOW - 2 * M, NOW - 2 * M - MARGIN, "last look at the marker"),
    # Nothing known at all: from now (minus the margin).
    (None, None, NOW - MARGIN, "nothing known"),
    # A record pending for days: bounded by the maximum window.
    (NOW - 30 * 24 * 60 * M, NOW - M / 60, NOW - MAX_WINDOW, "bounded by the maximum window"),
    # A skewed clock put a deployment in the future: never later than now.
    (NOW + 60 * M, None, NOW - MARGIN, "in the future"),
])
def test_choose_since(oldest: datetime | None, seen: datetime | None, since: datetime,
                      why: str) -> None:
    chosen, reason = choose_since(NOW, oldest, seen)
    assert chosen == since
    assert why in reason


def test_unconfirmed_forgets_what_was_staged_before_the_queues_were_seen_empty() -> None:
    ledger = Unconfirmed()
    assert ledger.oldest() is None
    ledger.staged("a", NOW - 10 * M, at=100.0)
    ledger.staged("b", NOW - 20 * M, at=105.0)
    assert ledger.oldest() == NOW - 20 * M
    ledger.settled(before=103.0)  # the queues were empty at 103: "a" was delivered
    assert ledger.oldest() == NOW - 20 * M and set(ledger.entries) == {"b"}
    ledger.settled(before=105.5)
    assert ledger.oldest() is None
