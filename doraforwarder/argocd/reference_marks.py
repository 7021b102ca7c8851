"""What the reference already sent, read from its Redis marks, so a switch counts nothing twice.

The reference (redhat-appstudio/dora-metrics) keeps, under the same
``storage.redis.key_prefix``:

- ``devlake-revision:<revision>:<component>`` = ``"sent"`` (TTL 30 days), written once DevLake
  accepted a deployment of that gitops revision of that component. The DevLake id it sent
  is the revision itself, and while the mark lives it sends no other deployment of that
  revision of that component, whatever the cluster or time;
- ``deployment:<app>:<cluster>`` (its JSON record of the last sync it handled, 30 days),
  ``processed:<sha>:<app>:<cluster>`` and ``devlake:<sha>:<component>`` (``"processed"``,
  30 days), ``lock:processing:<app>:<cluster>:<revision>`` (``"locked"``, 5 minutes),
  ``cache:<key>`` (JSON).

None of those names is one of ours (:mod:`doraforwarder.keys`), so they sit beside our keys
untouched: doraforwarder never writes nor deletes them, and reads only the first. A mark's
remaining TTL says when the reference wrote it (30 days minus what is left), which is all
a switch needs: a sync of that component and revision deployed up to that moment was sent
by the reference (or, by its rule, is the same deployment on another cluster), and so is a
sync on another cluster within ``argocd.dedupe_window`` after it (the rest of a rollout
that straddles the switch). Pure functions; the reads live with their callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from doraforwarder.config import ArgoCDConfig
from doraforwarder.records import DetectedDeployment

MARK_TTL = timedelta(days=30)
"""How long the reference keeps a ``devlake-revision`` mark (its ``MarkRevisionSentToDevLake``)."""
REFERENCE_APP = "reference"
"""The app named in the claim of a deployment the reference sent (never an ``ns/app``)."""


@dataclass(frozen=True, slots=True)
class ReferenceMark:
    """The reference sent this component's revision to DevLake."""

    revision: str
    marked_at: datetime | None
    """When (from the mark's TTL); None for a mark without a TTL (time unknown)."""


def mark_from_pttl(revision: str, pttl_ms: int, now: datetime) -> ReferenceMark | None:
    """The mark a ``PTTL`` answer describes: -2 (no key) is none, -1 (no TTL) an undated one."""
    if pttl_ms == -2:
        return None
    if pttl_ms < 0:
        return ReferenceMark(revision, None)
    age = MARK_TTL - timedelta(milliseconds=min(pttl_ms, int(MARK_TTL.total_seconds() * 1000)))
    return ReferenceMark(revision, now - age)


def may_be_marked(deployment: DetectedDeployment) -> bool:
    """Whether the reference could have sent this deployment at all.

    It sends only successful syncs (never a failed operation), and keys them by
    ``status.sync.revision``, which a multi-source app leaves empty.
    """
    return (deployment.result == "SUCCESS" and deployment.history_id is not None
            and len(deployment.sources) <= 1 and bool(deployment.revision))


def sent_by_reference(deployment: DetectedDeployment, mark: ReferenceMark | None,
                      config: ArgoCDConfig) -> bool:
    """Whether sending ``deployment`` would count again what the reference already sent.

    Up to the mark: the reference handled it (sent it, under the revision as id, or
    skipped it as a copy of the one it sent). After it: the same deployment on another
    cluster while ``dedupe_window`` lasts (scope ``component``, as the reference); with
    ``dedupe_scope: cluster`` every cluster's sync after the mark is a deployment of its own.
    An undated mark covers every sync of the revision (never count twice).
    """
    if mark is None or not may_be_marked(deployment) or mark.revision != deployment.revision:
        return False
    if mark.marked_at is None:
        return True
    horizon = mark.marked_at
    if config.dedupe_scope == "component":
        horizon += config.dedupe_window
    return deployment.deployed_at <= horizon


def reference_claim(revision: str) -> str:
    """The dedupe claim standing for the reference's deployment (its DevLake id: the revision)."""
    return f"{REFERENCE_APP} {revision}"
