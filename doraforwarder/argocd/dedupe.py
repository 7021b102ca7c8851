"""One deployment per component and revision, whichever app saw it first.

Several Applications (one per cluster) often deploy the same component at the
same revision; DevLake must count it once. The rule is pure (claims come in,
claims to write go out) so the watcher and ``backfill`` apply it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from doraforwarder.argocd.ids import (
    claim_value,
    deployment_dedupe_key,
    parse_claim,
)
from doraforwarder.config import ArgoCDConfig
from doraforwarder.records import DetectedDeployment


@dataclass(frozen=True)
class DedupeOutcome:
    """The deployments kept, the claims to write for them, and why others were dropped."""

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
