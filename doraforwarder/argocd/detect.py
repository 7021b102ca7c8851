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

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from doraforwarder.argocd.identity import Identity, Skip, resolve_identity
from doraforwarder.argocd.ids import (
    claim_value,
    dedupe_key,
    deployment_dedupe_key,
    deployment_id,
    incident_key,
    parse_claim,
    revision_key,
    scope_cluster,
)
from doraforwarder.argocd.model import (
    AppView,
    HistoryEntry,
    app_key,
    deployed_sources,
    git_sources,
    gitops_revision,
)
from doraforwarder.argocd.state import AppState, Baseline, DegradedSpell, PendingSync
from doraforwarder.config import ArgoCDConfig
from doraforwarder.records import DetectedDeployment, DetectedIncident, GitSource, Result

__all__ = [
    "Decision",
    "DedupeOutcome",
    "apply_dedupe",
    "claim_value",
    "decide",
    "dedupe_key",
    "deployment_dedupe_key",
    "deployment_id",
    "history_deployments",
    "is_settled",
    "mark_deleted",
    "scope_cluster",
    "stale_reason",
    "track_degraded",
]

SETTLED_SUCCESS = frozenset({"Healthy", "Unknown"})
SETTLED_FAILURE = frozenset({"Degraded"})


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


# --- dedupe -------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupeOutcome:
    kept: list[DetectedDeployment]
    claims: dict[str, str]
    """Dedupe scope key -> claim value to write (with TTL = ``argocd.dedupe_window``)."""
    reasons: list[str]


def apply_dedupe(
    deployments: list[DetectedDeployment],
    holders: Mapping[str, str | None],
    config: ArgoCDConfig,
) -> DedupeOutcome:
    """Drop deployments whose scope another app already claimed within the window.

    ``holders`` maps each scope key to its current claim (``"<app> <id>"``) or
    None. The same app deploying a revision again (a rollback, a re-sync that
    changed images) is a new deployment; another app (another cluster) with
    the same component+revision inside the window is the same deployment.
    """
    current = dict(holders)
    kept: list[DetectedDeployment] = []
    claims: dict[str, str] = {}
    reasons: list[str] = []
    for deployment in deployments:
        key = deployment_dedupe_key(deployment, config)
        holder = current.get(key)
        holder_app = parse_claim(holder).app if holder else None
        if holder_app is not None and holder_app != deployment.app:
            reasons.append(f"{deployment.id}: duplicate of {holder} (dedupe scope {key})")
            continue
        kept.append(deployment)
        claims[key] = current[key] = claim_value(deployment.app, deployment.id)
    return DedupeOutcome(kept=kept, claims=claims, reasons=reasons)


# --- settled state ------------------------------------------------------------------


def is_settled(view: AppView) -> bool:
    """The last operation succeeded and a comparison after it already ran (Synced or not)."""
    operation = view.operation
    if operation is None or operation.phase != "Succeeded" or operation.finished_at is None:
        return False
    return view.reconciled_at is None or view.reconciled_at >= operation.finished_at


def _in_flight(view: AppView, entry: HistoryEntry) -> bool:
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


def _pending(view: AppView, entry: HistoryEntry, deadline: datetime) -> PendingSync:
    return PendingSync(
        history_id=entry.id,
        revision=entry.revision,
        revisions=list(entry.revisions),
        sources=entry.git_sources(),
        started_at=started_at(view, entry),
        deployed_at=entry.deployed_at,
        deadline=deadline,
    )


def _baseline(entry: HistoryEntry | None, images: tuple[str, ...]) -> Baseline | None:
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


def _first_sight(view: AppView, config: ArgoCDConfig, now: datetime) -> Decision:
    latest = view.latest
    operation = view.operation
    last_failure = (
        operation.finished_at if operation is not None and operation.failed_attempt else None
    )
    in_flight = latest is not None and _in_flight(view, latest)
    if latest is not None and in_flight:
        previous = view.history[-2] if len(view.history) > 1 else None
        state = AppState(
            uid=view.uid,
            created_at=view.created_at,
            baseline=_baseline(previous, view.images),
            last_history_id=latest.id,
            pending=[_pending(view, latest, now + config.health_timeout)],
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
    baseline = _baseline(latest, view.images)
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
        pending.append(_pending(view, entry, now + config.health_timeout))
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
            and _revisions(candidate) == baseline.all_revisions()
            and final_images == baseline.images
        ):
            reasons.append(
                f"sync {candidate.history_id}: same revision and images as deployed, nothing sent"
            )
        else:
            deployments.append(
                _deployment(
                    view, identity, candidate, verdict, final_images, baseline, config, now, why
                )
            )
            reasons.append(f"sync {candidate.history_id}: {verdict} ({why})")
        baseline = Baseline(
            history_id=candidate.history_id,
            revision=candidate.revision,
            revisions=_revisions(candidate),
            sources=candidate.sources,
            images=final_images,
            deployed_at=candidate.deployed_at,
        )

    if failed is not None and failed.finished_at is not None:
        last_failure_at = failed.finished_at
        deployments.append(_failed_attempt(view, identity, baseline, config, now))
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


def _revisions(candidate: PendingSync) -> list[str]:
    return list(candidate.revisions) or [candidate.revision]


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
            incidents.append(_spell_incident(namespace, name, identity, spell, now, deleted=True))
            reasons.append("incident resolved: application deleted")
    state = stored.model_copy(update={"deleted_at": now, "degraded": spell})
    return Decision(state, [], reasons, changed=True, incidents=incidents)


# --- records ------------------------------------------------------------------------


def _record(view: AppView, identity: Identity, baseline: Baseline | None, config: ArgoCDConfig,
            now: datetime, *, key: str, at: datetime, failed: bool = False,
            **fields: Any) -> DetectedDeployment:
    """A deployment of ``view``: the id and the fields every record shares, plus ``fields``."""
    return DetectedDeployment(
        id=deployment_id(identity.component, key, at,
                         cluster=scope_cluster(config, identity.cluster), failed=failed),
        app_namespace=view.namespace,
        app_name=view.name,
        component=identity.component,
        cluster=identity.cluster,
        environment=identity.environment,
        previous_images=baseline.images if baseline is not None else [],
        detected_at=now,
        **fields,
    )


def _deployment(
    view: AppView,
    identity: Identity,
    candidate: PendingSync,
    result: Result,
    images: list[str],
    baseline: Baseline | None,
    config: ArgoCDConfig,
    now: datetime,
    why: str,
) -> DetectedDeployment:
    return _record(
        view, identity, baseline, config, now,
        key=revision_key(_revisions(candidate)), at=candidate.deployed_at,
        result=result,
        revision=candidate.revision,
        sources=candidate.sources,
        history_id=candidate.history_id,
        started_at=candidate.started_at,
        deployed_at=candidate.deployed_at,
        images=images,
        message=why,
    )


def _failed_attempt(
    view: AppView,
    identity: Identity,
    baseline: Baseline | None,
    config: ArgoCDConfig,
    now: datetime,
) -> DetectedDeployment:
    operation = view.operation
    assert operation is not None and operation.finished_at is not None
    revisions = operation.revisions or tuple(s.target_revision for s in view.sources)
    if view.hydrator is not None and operation.revisions:
        deployed, revisions = deployed_sources((view.hydrator.sync,), revisions, view.hydrator)
    else:
        deployed = view.sources
    revision = gitops_revision(deployed, revisions) or "unknown"
    sources: list[GitSource] = git_sources(deployed, revisions)
    key = revision_key(list(revisions)) if len(revisions) > 1 else revision
    return _record(
        view, identity, baseline, config, now,
        key=key, at=operation.finished_at, failed=True,
        result="FAILURE",
        revision=revision,
        sources=sources,
        history_id=None,
        started_at=operation.started_at or operation.finished_at,
        deployed_at=operation.finished_at,
        images=list(view.images),
        message=operation.message or f"sync operation {operation.phase}",
    )


def history_deployments(
    view: AppView, config: ArgoCDConfig, now: datetime
) -> list[DetectedDeployment]:
    """Every ``status.history`` entry of one app as a deployment, with the live path's ids.

    For ``backfill``: old entries carry no images (ArgoCD keeps none), so only
    the latest entry of a settled app gets the current images; the result is
    SUCCESS except a latest entry whose settled health is Degraded (without
    ``argocd.failures_as_incidents``).
    """
    identity = resolve_identity(view, config)
    if isinstance(identity, Skip):
        return []
    records: list[DetectedDeployment] = []
    previous: Baseline | None = None
    settled = is_settled(view)
    for entry in view.history:
        candidate = _pending(view, entry, entry.deployed_at)
        is_latest = entry is view.latest
        images = list(view.images) if is_latest and settled else []
        result: Result = (
            "FAILURE"
            if is_latest
            and settled
            and view.health_status in SETTLED_FAILURE
            and not config.failures_as_incidents
            else "SUCCESS"
        )
        records.append(
            _deployment(
                view, identity, candidate, result, images, previous, config, now, "backfill"
            )
        )
        previous = Baseline(
            history_id=entry.id,
            revision=entry.revision,
            revisions=list(entry.revisions),
            images=images,
        )
    return records


# --- incidents ----------------------------------------------------------------------


def track_degraded(
    view: AppView,
    spell: DegradedSpell | None,
    identity: Identity,
    config: ArgoCDConfig,
    now: datetime,
    revision: str,
    *,
    first_sight: bool = False,
) -> tuple[DegradedSpell | None, list[DetectedIncident], list[str]]:
    """Follow the app's Degraded spells; return the spell to store and the incidents due.

    Only with ``argocd.failures_as_incidents`` and for production apps. A
    spell starts when the app is Degraded (at ``status.health.lastTransitionTime``,
    else now) and lasts until the app is Healthy again (Progressing after
    Degraded is not a recovery); it becomes an open incident once it lasted
    ``incident_after`` (the caller rechecks at :attr:`DegradedSpell.open_at`),
    and ends when the app is Healthy again (or deleted: :func:`mark_deleted`), resolving
    the incident if one was opened; the spell keeps who it was for. A
    spell under way at first sight is remembered but never reported (no
    flood on the first start). The ended spell stays stored, so a late view
    of it (Degraded since before the recovery) starts nothing again.
    """
    if not config.failures_as_incidents or identity.environment != "PRODUCTION":
        return spell, [], []
    if spell is not None and spell.opened and spell.resolved_at is None and not spell.component:
        # Opened before spells kept who the incident is for: learn it, for a deletion.
        spell = _with_identity(spell, identity)
    health = view.health_status
    since = view.health_since
    incidents: list[DetectedIncident] = []
    reasons: list[str] = []
    if health == "Degraded":
        start = since or now
        if spell is not None and spell.resolved_at is None:
            if spell.open_at is not None and since is not None and since < spell.since:
                # ArgoCD's own transition time is better than when we first saw it.
                spell = spell.model_copy(
                    update={"since": since, "open_at": since + config.incident_after}
                )
        elif spell is not None and spell.resolved_at is not None and start <= spell.resolved_at:
            return spell, [], [f"Degraded since {start.isoformat()}: that spell is over"]
        else:
            spell = DegradedSpell(
                since=start,
                open_at=None if first_sight else start + config.incident_after,
                revision=revision,
            )
            reasons.append(
                f"Degraded since {start.isoformat()}"
                + (" (before first sight: not reported)" if first_sight else "")
            )
    elif health == "Healthy" and spell is not None and spell.resolved_at is None:
        if since is not None and since < spell.since:
            return spell, [], ["Healthy since before the Degraded spell: older view"]
        spell = spell.model_copy(update={"open_at": None, "resolved_at": since or now})
        if spell.opened:
            incidents.append(_incident(view, identity, spell, now))
            reasons.append("incident resolved: Healthy again")
        else:
            reasons.append("Degraded spell over before it became an incident")
    if (
        health != "Healthy"
        and spell is not None
        and spell.resolved_at is None
        and spell.open_at is not None
        and now >= spell.open_at
    ):
        spell = _with_identity(
            spell.model_copy(update={"open_at": None, "opened": True}), identity
        )
        incidents.append(_incident(view, identity, spell, now))
        reasons.append(f"incident opened: not Healthy for more than {config.incident_after}")
    return spell, incidents, reasons


def _with_identity(spell: DegradedSpell, identity: Identity) -> DegradedSpell:
    return spell.model_copy(update={
        "component": identity.component,
        "cluster": identity.cluster,
        "environment": identity.environment,
    })


def _incident(
    view: AppView, identity: Identity, spell: DegradedSpell, now: datetime
) -> DetectedIncident:
    return _spell_incident(view.namespace, view.name, identity, spell, now)


def _spell_incident(
    namespace: str,
    name: str,
    identity: Identity,
    spell: DegradedSpell,
    now: datetime,
    *,
    deleted: bool = False,
) -> DetectedIncident:
    """The incident of ``spell``: open, or resolved (Healthy again, or ``deleted``).

    The key depends on the app and ``spell.since`` only, which no longer
    moves once the spell opened: the open and the resolved record share it.
    """
    if spell.resolved_at is None:
        ended = "."
    elif deleted:
        ended = (
            f"; the application was deleted at {spell.resolved_at.isoformat()} before it was "
            "Healthy again: resolved then, as a deleted application serves no traffic."
        )
    else:
        ended = f"; Healthy again at {spell.resolved_at.isoformat()}."
    revision = f" with revision {spell.revision}" if spell.revision else ""
    return DetectedIncident(
        key=incident_key(namespace, name, spell.since),
        app_namespace=namespace,
        app_name=name,
        component=identity.component,
        cluster=identity.cluster,
        environment=identity.environment,
        status="resolved" if spell.resolved_at is not None else "open",
        created_at=spell.since,
        resolved_at=spell.resolved_at,
        resolved_by="Deleted" if deleted else "Healthy",
        title=f"{identity.component} Degraded in {identity.cluster}",
        description=(
            f"ArgoCD application {app_key(namespace, name)} ({identity.environment}) turned "
            f"Degraded at {spell.since.isoformat()}{revision}{ended}"
        ),
        revision=spell.revision,
        detected_at=now,
    )
