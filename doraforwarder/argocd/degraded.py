"""Incidents from Degraded spells (``argocd.failures_as_incidents``).

A production app not Healthy for longer than ``argocd.incident_after`` opens
an incident, resolved when it is Healthy again or deleted; the spell kept in
the state makes each open and resolve happen once, under one key.
"""

from __future__ import annotations

from datetime import datetime

from doraforwarder.argocd.identity import Identity
from doraforwarder.argocd.ids import (
    incident_key,
)
from doraforwarder.argocd.model import (
    AppView,
    app_key,
)
from doraforwarder.argocd.state import DegradedSpell
from doraforwarder.config import ArgoCDConfig
from doraforwarder.records import DetectedIncident


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
    return spell_incident(view.namespace, view.name, identity, spell, now)


def spell_incident(
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
