"""Reading a sync's progress from an Application view: settled, in flight, started when.

ArgoCD writes a history entry before the sync is over, so whether a state is
*settled* decides when a deployment may be told; these rules, and the state
records (pending sync, baseline) built from history entries, are shared by
the live decision and ``backfill``.
"""

from __future__ import annotations

from datetime import datetime

from doraforwarder.argocd.model import (
    AppView,
    HistoryEntry,
)
from doraforwarder.argocd.state import Baseline, PendingSync

SETTLED_SUCCESS = frozenset({"Healthy", "Unknown"})
SETTLED_FAILURE = frozenset({"Degraded"})


def is_settled(view: AppView) -> bool:
    """The last operation succeeded and a comparison after it already ran (Synced or not)."""
    operation = view.operation
    if operation is None or operation.phase != "Succeeded" or operation.finished_at is None:
        return False
    return view.reconciled_at is None or view.reconciled_at >= operation.finished_at


def sync_in_flight(view: AppView, entry: HistoryEntry) -> bool:
    """Whether the operation that wrote ``entry`` is still running or not compared yet.

    A drifted app (OutOfSync long after its last sync) is *not* in flight:
    a comparison ran after the operation finished.
    """
    operation = view.operation
    if (
        operation is None
        or operation.started_at is None
        or operation.started_at > entry.deployed_at
    ):
        return False
    if operation.phase == "Running":
        return True
    return (
        operation.phase == "Succeeded"
        and operation.finished_at is not None
        and view.reconciled_at is not None
        and view.reconciled_at < operation.finished_at
    )


def started_at(view: AppView, entry: HistoryEntry) -> datetime:
    """When the sync of ``entry`` started: ``deployStartedAt``, else its operation's start.

    The operation counts only when it is the one that wrote the entry (it
    started before the entry's ``deployedAt`` and did not finish before it);
    with neither, the sync is taken to have started when it was deployed.
    """
    if entry.started_at is not None:
        return entry.started_at
    operation = view.operation
    if (
        operation is not None
        and operation.started_at is not None
        and operation.started_at <= entry.deployed_at
        and (operation.finished_at is None or operation.finished_at >= entry.deployed_at)
    ):
        return operation.started_at
    return entry.deployed_at


def pending_sync(view: AppView, entry: HistoryEntry, deadline: datetime) -> PendingSync:
    """``entry`` as a candidate waiting to settle, decided at the latest at ``deadline``."""
    return PendingSync(
        history_id=entry.id,
        revision=entry.revision,
        revisions=list(entry.revisions),
        sources=entry.git_sources(),
        started_at=started_at(view, entry),
        deployed_at=entry.deployed_at,
        deadline=deadline,
    )


def baseline_of(entry: HistoryEntry | None, images: tuple[str, ...]) -> Baseline | None:
    """What runs after ``entry`` (with ``images``): the next commit range starts here."""
    if entry is None:
        return None
    return Baseline(
        history_id=entry.id,
        revision=entry.revision,
        revisions=list(entry.revisions),
        sources=entry.git_sources(),
        images=list(images),
        deployed_at=entry.deployed_at,
    )


def candidate_revisions(candidate: PendingSync) -> list[str]:
    """Every source's revision of a candidate (one, for a single-source app)."""
    return list(candidate.revisions) or [candidate.revision]
