"""Building deployment records from an Application view: live, failed attempts, backfill.

One place makes every :class:`~doraforwarder.records.DetectedDeployment`, so
the live path and ``backfill`` give the same sync the same id and fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from doraforwarder.argocd.identity import Identity, Skip, resolve_identity
from doraforwarder.argocd.ids import (
    deployment_id,
    revision_key,
    scope_cluster,
)
from doraforwarder.argocd.model import (
    AppView,
    deployed_sources,
    git_sources,
    gitops_revision,
)
from doraforwarder.argocd.settled import (
    SETTLED_FAILURE,
    candidate_revisions,
    is_settled,
    pending_sync,
)
from doraforwarder.argocd.state import Baseline, PendingSync
from doraforwarder.config import ArgoCDConfig
from doraforwarder.records import DetectedDeployment, GitSource, Result


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


def deployment_record(
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
    """The deployment of a settled (or superseded, or timed-out) ``candidate``."""
    return _record(
        view, identity, baseline, config, now,
        key=revision_key(candidate_revisions(candidate)), at=candidate.deployed_at,
        result=result,
        revision=candidate.revision,
        sources=candidate.sources,
        history_id=candidate.history_id,
        started_at=candidate.started_at,
        deployed_at=candidate.deployed_at,
        images=images,
        message=why,
    )


def failed_attempt(
    view: AppView,
    identity: Identity,
    baseline: Baseline | None,
    config: ArgoCDConfig,
    now: datetime,
) -> DetectedDeployment:
    """A FAILURE record for the failed operation of ``view``, of the revision it resolved."""
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
        candidate = pending_sync(view, entry, entry.deployed_at)
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
            deployment_record(
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
