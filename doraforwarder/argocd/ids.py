"""The one place that formats and parses deployment ids, dedupe keys, claims and incident keys.

Ids are deterministic, so a redelivery of the same deployment is an upsert
in DevLake, never a second deployment. Each team target gets its own copy of
the id (``devlake/target_ids.py``), so no two DevLake projects share a
deployment row or an incident link. A single-source deployment keeps the format
``<component>:<revision>:<deployedAt epoch>[:<cluster>][:failed]`` that
existing installations already sent (changing it would send everything
again). A multi-source deployment is identified by *every* source's
revision (a values-only change is a deployment of its own), in a compact
form that keeps ids under DevLake's 255 characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from doraforwarder.config import ArgoCDConfig
from doraforwarder.records import DIGEST_PREFIX, MAX_ID_LENGTH, DetectedDeployment, id_digest

MAX_REVISION_KEY_LENGTH = 120
SHORT_SHA = 12

_HEX_SHA = re.compile(r"[0-9a-f]{12,64}")
_UNSAFE_IN_KEY = frozenset("+: ")


def revision_key(revisions: Sequence[str]) -> str:
    """What identifies the deployed revisions inside ids and dedupe keys.

    One revision: itself, unchanged. Several (multi-source): each git SHA
    shortened to 12 hex characters, other revisions (chart versions) whole,
    joined with ``+``; a ``sha256-`` digest of them all when that would be
    long or ambiguous (a revision containing ``+``, ``:`` or a space).
    """
    if len(revisions) == 1:
        return revisions[0]
    if not revisions:
        return "unknown"
    parts = [
        revision[:SHORT_SHA] if _HEX_SHA.fullmatch(revision.lower()) else revision
        for revision in revisions
    ]
    compact = "+".join(parts)
    if len(compact) <= MAX_REVISION_KEY_LENGTH and not any(
        not part or _UNSAFE_IN_KEY & set(part) for part in parts
    ):
        return compact
    return DIGEST_PREFIX + id_digest("\n".join(revisions))[:40]


def deployment_revision_key(deployment: DetectedDeployment) -> str:
    """The revision key of a decided deployment: all its sources' revisions when it has several."""
    if len(deployment.sources) > 1:
        return revision_key([source.revision for source in deployment.sources])
    return deployment.revision


def deployment_id(
    component: str,
    revision: str,
    deployed_at: datetime,
    *,
    cluster: str | None = None,
    failed: bool = False,
) -> str:
    """``<component>:<revision>:<epoch>[:<cluster>][:failed]``: deterministic, so resends upsert.

    ``revision`` is a :func:`revision_key`. An id that would still exceed
    :data:`MAX_ID_LENGTH` (absurdly long names) becomes
    ``<component, cut>:sha256-<digest of the full id>``.
    """
    parts = [component, revision, str(int(deployed_at.timestamp()))]
    if cluster is not None:
        parts.append(cluster)
    if failed:
        parts.append("failed")
    full = ":".join(parts)
    if len(full) <= MAX_ID_LENGTH:
        return full
    return f"{component[:100]}:{DIGEST_PREFIX}{id_digest(full)}"


def dedupe_key(
    component: str, revision: str, *, cluster: str | None = None, failed: bool = False
) -> str:
    """The scope inside which one deployment of a revision is enough.

    Scope ``component`` (the reference behaviour): one per component+revision
    whatever the cluster; scope ``cluster``: pass ``cluster`` for one per cluster.
    Failed attempts have their own scope, so a failure never hides a success.
    ``revision`` is a :func:`revision_key`.
    """
    parts = [component, revision]
    if cluster is not None:
        parts.append(cluster)
    if failed:
        parts.append("failed")
    return ":".join(parts)


def scope_cluster(config: ArgoCDConfig, cluster: str) -> str | None:
    return cluster if config.dedupe_scope == "cluster" else None


def deployment_dedupe_key(deployment: DetectedDeployment, config: ArgoCDConfig) -> str:
    return dedupe_key(
        deployment.component,
        deployment_revision_key(deployment),
        cluster=scope_cluster(config, deployment.cluster),
        failed=deployment.history_id is None,
    )


def claim_value(app: str, deployment_id_: str) -> str:
    """What a dedupe key holds: ``"<namespace>/<app> <deployment id>"``."""
    return f"{app} {deployment_id_}"


@dataclass(frozen=True, slots=True)
class Claim:
    app: str
    deployment_id: str


def parse_claim(value: str) -> Claim:
    """The inverse of :func:`claim_value` (a value without a space is an app alone)."""
    app, _, deployment = value.partition(" ")
    return Claim(app=app, deployment_id=deployment)


def deployed_at_of(deployment_id_: str) -> datetime | None:
    """When a deployment happened, read back from its id (``<component>:<revision>:<epoch>...``).

    None when the id carries no readable time. Component names and revision
    keys never hold ``:``, so the epoch is always the third part.
    """
    parts = deployment_id_.split(":")
    if len(parts) >= 3 and parts[2].isdigit():
        return datetime.fromtimestamp(int(parts[2]), UTC)
    return None


def claim_deployed_at(claim: str) -> datetime | None:
    """When the deployment holding a dedupe claim happened (None when unreadable)."""
    return deployed_at_of(parse_claim(claim).deployment_id)


def incident_key(namespace: str, name: str, degraded_since: datetime) -> str:
    """``argocd:<namespace>/<app>:<degraded-since epoch>``: one key per Degraded spell."""
    return f"argocd:{namespace}/{name}:{int(degraded_since.timestamp())}"
