"""The deployment decision: (Application view, stored state, settings, now) -> records.

Pure: no I/O, no clock, no randomness, so every rule below is a table test.

- An Application without ``status`` (not reconciled yet) waits: nothing is
  decided or stored (:attr:`Decision.waiting`).
- First sight of an app records a baseline and emits nothing (no flood on
  the first start); a sync caught while still running is the exception: it is
  followed to its end.
- Every history id above the stored one is a *candidate*. ArgoCD appends the
  entry while the operation is still Running, before the app is Synced,
  before ``summary.images`` shows the new images and before health reflects
  the new pods, so a candidate is decided only from a *settled* state: the
  operation Succeeded with ``finishedAt`` and a comparison ran after it
  finished (``reconciledAt >= finishedAt``), whether the app is then Synced
  or OutOfSync (ignored differences, mutating webhooks: the operation is the
  fact of the sync, the sync status is not).
- Settled health Healthy/Unknown -> SUCCESS, Degraded -> FAILURE (SUCCESS
  with ``argocd.failures_as_incidents``: it reached production, and the
  change failure is told by an incident), anything else waits until
  ``argocd.health_timeout`` and then takes ``argocd.unsettled_result``.
  A candidate superseded by a newer entry before it settled is still a
  deployment (result ``unsettled_result``), with the images known for it.
- A failed attempt (phase Failed/Error, or Running with ``finishedAt`` and
  "Retrying attempt #N") with a ``finishedAt`` not seen before is a FAILURE
  attempt, of the resolved revision (``syncResult``); it does not move the
  baseline (commit ranges stay anchored on what really runs).
- A multi-source sync is identified by every source's revision: a change of
  any one is a deployment (:func:`~doraforwarder.argocd.ids.revision_key`).
- With ``argocd.failures_as_incidents``, a production app Degraded for longer
  than ``argocd.incident_after`` yields an open incident, and the same
  incident resolved once it is Healthy again (or deleted: :func:`mark_deleted`);
  the spell is remembered in the state so each is emitted once
  (:attr:`Decision.recheck_at` asks to look again when the spell would
  become an incident).
- A sync of the revision and images already deployed changed nothing: the
  state advances, nothing is sent.
- A view older than the stored state (:func:`stale_reason`: another replica,
  or this one before a restart, already decided from a newer one) decides
  nothing: the state never moves backwards and nothing is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from doraforwarder.argocd.degraded import spell_incident, track_degraded
from doraforwarder.argocd.deployment_records import (
    deployment_record,
    failed_attempt,
)
from doraforwarder.argocd.identity import Identity, Skip, resolve_identity
from doraforwarder.argocd.ids import (
    claim_value,
    dedupe_key,
    deployment_dedupe_key,
    deployment_id,
    incident_key,
    scope_cluster,
)
from doraforwarder.argocd.model import (
    AppView,
)
from doraforwarder.argocd.settled import (
    SETTLED_FAILURE,
    SETTLED_SUCCESS,
    baseline_of,
    candidate_revisions,
    is_settled,
    pending_sync,
    sync_in_flight,
)
from doraforwarder.argocd.state import AppState, Baseline, PendingSync
from doraforwarder.config import ArgoCDConfig
from doraforwarder.records import DetectedDeployment, DetectedIncident, Result

__all__ = [
    "Decision",
    "claim_value",
    "decide",
    "dedupe_key",
    "deployment_dedupe_key",
    "deployment_id",
    "mark_deleted",
    "scope_cluster",
    "stale_reason",
]


@dataclass(frozen=True)
class Decision:
    """The new state (None: forget the app) and the deployments it produces."""

    state: AppState | None
    deployments: list[DetectedDeployment] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    changed: bool = False
    """Whether ``state`` differs from the stored one (else nothing is written)."""
    stale: bool = False
    """The view was older than the stored state: nothing was decided from it."""
    incidents: list[DetectedIncident] = field(default_factory=list)
    """Incidents opened or resolved by this decision (``argocd.failures_as_incidents``)."""
    waiting: bool = False
    """The Application has no status yet (not reconciled): nothing was decided, not malformed."""

    @property
    def recheck_at(self) -> datetime | None:
        """When to decide again from the same view if no event comes first."""
        return self.state.next_deadline if self.state is not None else None


# --- the decision -------------------------------------------------------------------


def stale_reason(view: AppView, stored: AppState) -> str | None:
    """Why ``view`` is older than what ``stored`` already took into account, or None.

    Replicas (and one replica's lanes after a re-list) may decide an app from
    views of different ages: the state in Redis can already reflect a newer
    object than the view at hand. Deciding from the older view would read the
    newer pending sync as "superseded" (sent early, with the old images) and
    move the baseline back. Only semantic orderings are used, never the
    opaque ``resourceVersion``:

    - the same object (same uid) never lowers its latest history id: ArgoCD
      appends ids and trims the oldest entries only;
    - operations on one app run one after the other, so an operation that
      finished (or, still running, started) before the last failure recorded
      belongs to an older view;
    - a different uid whose object was created before the stored one is the
      deleted predecessor, not a re-creation.
    """
    recreated = bool(stored.uid and view.uid and stored.uid != view.uid)
    if recreated:
        if (
            view.created_at is not None
            and stored.created_at is not None
            and view.created_at < stored.created_at
        ):
            return (
                f"view of uid {view.uid} created {view.created_at.isoformat()}, before the "
                f"stored uid {stored.uid} ({stored.created_at.isoformat()})"
            )
        return None
    if stored.last_history_id is not None:
        latest_id = view.latest.id if view.latest is not None else -1
        if latest_id < stored.last_history_id:
            return (
                f"view's latest history id {latest_id} is below the stored "
                f"{stored.last_history_id}"
            )
    operation = view.operation
    if operation is not None and stored.last_failure_at is not None:
        moment = operation.finished_at or operation.started_at
        if moment is not None and moment < stored.last_failure_at:
            return (
                f"view's operation ({operation.phase}, {moment.isoformat()}) is older than the "
                f"failure recorded at {stored.last_failure_at.isoformat()}"
            )
    return None


def decide(view: AppView, stored: AppState | None, config: ArgoCDConfig, now: datetime) -> Decision:
    """Advance ``stored`` with what ``view`` shows; return the deployments that completes."""
    if not view.has_status:
        return Decision(
            state=stored, reasons=["not reconciled yet (no status): waiting"], waiting=True
        )
    if stored is not None:
        stale = stale_reason(view, stored)
        if stale is not None:
            return Decision(state=stored, reasons=[f"stale view ignored: {stale}"], stale=True)
    identity = resolve_identity(view, config)
    if isinstance(identity, Skip):
        return Decision(
            state=None, reasons=[f"skipped: {identity.reason}"], changed=stored is not None
        )
    if stored is None:
        return _first_sight(view, config, now)
    return _follow(view, stored, identity, config, now)


def _first_sight(view: AppView, config: ArgoCDConfig, now: datetime) -> Decision:
    latest = view.latest
    operation = view.operation
    last_failure = (
        operation.finished_at if operation is not None and operation.failed_attempt else None
    )
    in_flight = latest is not None and sync_in_flight(view, latest)
    if latest is not None and in_flight:
        previous = view.history[-2] if len(view.history) > 1 else None
        state = AppState(
            uid=view.uid,
            created_at=view.created_at,
            baseline=baseline_of(previous, view.images),
            last_history_id=latest.id,
            pending=[pending_sync(view, latest, now + config.health_timeout)],
            last_failure_at=last_failure,
        )
        reasons = [f"first sight: sync {latest.id} in progress, following it"]
        # The running sync may already be settled enough to decide: run the rules once.
        decision = _follow(view, state, _identity_of(view, config), config, now)
        return Decision(
            decision.state,
            decision.deployments,
            reasons + decision.reasons,
            True,
            incidents=decision.incidents,
        )
    baseline = baseline_of(latest, view.images)
    spell, _, spell_reasons = track_degraded(
        view,
        None,
        _identity_of(view, config),
        config,
        now,
        baseline.revision if baseline is not None else "",
        first_sight=True,
    )
    state = AppState(
        uid=view.uid,
        created_at=view.created_at,
        baseline=baseline,
        last_history_id=latest.id if latest is not None else None,
        last_failure_at=last_failure,
        degraded=spell,
    )
    where = f"history id {latest.id}" if latest is not None else "no history"
    reasons = [f"first sight: baseline at {where}, nothing sent", *spell_reasons]
    return Decision(state, [], reasons, True)


def _identity_of(view: AppView, config: ArgoCDConfig) -> Identity:
    identity = resolve_identity(view, config)
    assert isinstance(identity, Identity)
    return identity


def _follow(
    view: AppView, stored: AppState, identity: Identity, config: ArgoCDConfig, now: datetime
) -> Decision:
    reasons: list[str] = []
    deployments: list[DetectedDeployment] = []
    baseline = stored.baseline
    pending = list(stored.pending)
    last_history_id = stored.last_history_id
    last_failure_at = stored.last_failure_at
    uid = stored.uid
    created_at = stored.created_at

    recreated = bool(stored.uid and view.uid and stored.uid != view.uid)
    if recreated:
        reasons.append("application was re-created: its history starts again")
        uid = view.uid
        created_at = view.created_at
        known_until = baseline.deployed_at if baseline is not None else None
        new_entries = [
            e for e in view.history if known_until is None or e.deployed_at > known_until
        ]
        pending = []
        # Ids restart with the new object: everything after its current history is new.
        last_history_id = view.history[-1].id if view.history else -1
    else:
        uid = uid or view.uid
        new_entries = [e for e in view.history if last_history_id is None or e.id > last_history_id]
    for entry in new_entries:
        pending.append(pending_sync(view, entry, now + config.health_timeout))
        reasons.append(f"sync {entry.id} ({entry.revision}) seen, waiting for it to settle")
    if new_entries:
        last_history_id = new_entries[-1].id

    # Failed attempts: ArgoCD writes no history entry for them. One is sent after the
    # syncs before it (below), in the order they happened: a catch-up that finds
    # syncs and then a failed operation must not give the failure their images.
    operation = view.operation
    failed = (
        operation
        if operation is not None
        and operation.failed_attempt
        and operation.finished_at is not None
        and (last_failure_at is None or operation.finished_at > last_failure_at)
        else None
    )
    failed_started = (
        (failed.started_at or failed.finished_at) if failed is not None else None
    )

    latest = view.latest
    settled = is_settled(view)
    still_pending: list[PendingSync] = []
    for candidate in sorted(pending, key=lambda p: p.history_id):
        is_latest = latest is not None and candidate.history_id == latest.id
        verdict: Result | None = None
        images = candidate.images
        if is_latest and settled:
            images = list(view.images)
            health = view.health_status or "Unknown"
            if health in SETTLED_SUCCESS:
                verdict = "SUCCESS"
                why = f"health {health}"
            elif health in SETTLED_FAILURE:
                verdict = "SUCCESS" if config.failures_as_incidents else "FAILURE"
                why = f"health {health}"
            elif now >= candidate.deadline:
                verdict = config.unsettled_result
                why = f"health still {health} after {config.health_timeout}"
            else:
                still_pending.append(candidate.model_copy(update={"images": images}))
                reasons.append(f"sync {candidate.history_id}: health {health}, waiting")
                continue
        elif latest is not None and latest.id > candidate.history_id:
            verdict = config.unsettled_result
            why = "superseded by a newer sync before it settled"
        elif failed_started is not None and candidate.deployed_at <= failed_started:
            # A later operation ran (and failed): this sync will never settle on its own.
            # The app still runs what the failed operation could not replace.
            verdict = config.unsettled_result
            why = "a later sync operation failed before it settled"
            if is_latest:
                images = list(view.images)
        elif now >= candidate.deadline:
            verdict = config.unsettled_result
            why = f"operation did not settle within {config.health_timeout}"
        else:
            still_pending.append(candidate)
            continue
        final_images = images if images is not None else (baseline.images if baseline else [])
        if (
            baseline is not None
            and candidate_revisions(candidate) == baseline.all_revisions()
            and final_images == baseline.images
        ):
            reasons.append(
                f"sync {candidate.history_id}: same revision and images as deployed, nothing sent"
            )
        else:
            deployments.append(
                deployment_record(
                    view, identity, candidate, verdict, final_images, baseline, config, now, why
                )
            )
            reasons.append(f"sync {candidate.history_id}: {verdict} ({why})")
        baseline = Baseline(
            history_id=candidate.history_id,
            revision=candidate.revision,
            revisions=candidate_revisions(candidate),
            sources=candidate.sources,
            images=final_images,
            deployed_at=candidate.deployed_at,
        )

    if failed is not None and failed.finished_at is not None:
        last_failure_at = failed.finished_at
        deployments.append(failed_attempt(view, identity, baseline, config, now))
        reasons.append(f"operation {failed.phase} at {failed.finished_at.isoformat()}")

    spell, incidents, spell_reasons = track_degraded(
        view,
        stored.degraded,
        identity,
        config,
        now,
        baseline.revision if baseline is not None else "",
    )
    reasons.extend(spell_reasons)
    state = AppState(
        uid=uid,
        created_at=created_at,
        baseline=baseline,
        last_history_id=last_history_id,
        pending=still_pending,
        last_failure_at=last_failure_at,
        deleted_at=None,
        degraded=spell,
    )
    if state.created_at is None and state != stored:
        # States written before creation times were kept learn it with their next change.
        state = state.model_copy(update={"created_at": view.created_at})
    if stored.deleted_at is not None:
        reasons.append("application is back")
    return Decision(state, deployments, reasons, changed=state != stored, incidents=incidents)


def mark_deleted(
    stored: AppState | None, now: datetime, uid: str = "", *, namespace: str, name: str
) -> Decision:
    """The Application ``namespace/name`` is gone: keep its state for ``argocd.state_ttl``.

    ``uid`` is the deleted object's (empty when unknown, e.g. absent from a
    re-list): the deletion of an earlier object of the same name, seen late,
    must not end the state of its re-created successor.

    A Degraded spell under way ends here: a deleted app serves no traffic, so
    the failure is over. If the spell was an open incident, that incident is
    resolved now, under the key it was opened with and for the identity kept
    in the spell (no view of the app comes with a deletion), so DevLake closes
    the one issue and counts the time to restore. A re-created app starts its
    spells afresh.
    """
    if stored is None or stored.deleted_at is not None:
        return Decision(stored, [], ["deleted: nothing stored"], changed=False)
    if uid and stored.uid and uid != stored.uid:
        return Decision(
            stored, [], [f"deletion of uid {uid} ignored: state is uid {stored.uid}"], stale=True
        )
    reasons = ["deleted"]
    incidents: list[DetectedIncident] = []
    spell = stored.degraded
    if spell is not None and spell.resolved_at is None:
        spell = spell.model_copy(update={"open_at": None, "resolved_at": now})
        if not spell.opened:
            reasons.append("Degraded spell over (deleted) before it became an incident")
        elif not spell.component or spell.environment is None:
            reasons.append(
                f"incident {incident_key(namespace, name, spell.since)} left open: its spell "
                "was stored before the incident's component was kept"
            )
        else:
            identity = Identity(spell.component, spell.cluster, spell.environment)
            incidents.append(spell_incident(namespace, name, identity, spell, now, deleted=True))
            reasons.append("incident resolved: application deleted")
    state = stored.model_copy(update={"deleted_at": now, "degraded": spell})
    return Decision(state, [], reasons, changed=True, incidents=incidents)
