"""What the daemon remembers about one Application between events (and restarts).

Stored as JSON under ``Keys.app_state(namespace, name)``. It is the memory
that makes detection exact: the baseline (last deployment, whose images are
the base of the next commit range), the highest history id already taken into
account, the syncs seen but not decided yet (waiting for the operation to
finish or for health to settle), the last failed operation reported, and the
current Degraded spell (so an incident is opened and resolved once each).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from doraforwarder.records import Environment, GitSource

SCHEMA_VERSION = 1


class StateModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Baseline(StateModel):
    """The deployment currently on the cluster, as far as we decided."""

    history_id: int | None = None
    revision: str = ""
    revisions: list[str] = Field(default_factory=list)
    """Every source's revision (empty in states written before it was kept)."""
    sources: list[GitSource] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)
    deployed_at: datetime | None = None

    def all_revisions(self) -> list[str]:
        if self.revisions:
            return list(self.revisions)
        if self.sources:
            return [source.revision for source in self.sources]
        return [self.revision]


class PendingSync(StateModel):
    """A history entry seen but not decided yet."""

    history_id: int
    revision: str
    revisions: list[str]
    sources: list[GitSource] = Field(default_factory=list)
    started_at: datetime
    deployed_at: datetime
    deadline: datetime
    """When to stop waiting for the operation or for health (``argocd.health_timeout``)."""
    images: list[str] | None = None
    """Images read from the settled state; None until it settled."""


class DegradedSpell(StateModel):
    """The app's current (or last) Degraded spell, for incidents."""

    since: datetime
    """When it turned Degraded: the incident's creation time and key."""
    open_at: datetime | None = None
    """When the spell becomes an incident (``since + incident_after``); None once opened,
    or when it is not to be reported (Degraded before the app was first seen)."""
    opened: bool = False
    """The open incident was emitted."""
    resolved_at: datetime | None = None
    """When it was Healthy again, or the app was deleted; set once the spell is over (and,
    if opened, resolved)."""
    revision: str = ""
    component: str = ""
    cluster: str = ""
    environment: Environment | None = None
    """Who the open incident was for (set when it opened): a deletion, which comes with no
    view of the app, resolves it for the same DevLake targets. Empty in spells stored
    before they were kept; the next view of the app fills them in."""


class AppState(StateModel):
    schema_version: int = SCHEMA_VERSION
    uid: str = ""
    created_at: datetime | None = None
    """``metadata.creationTimestamp`` of the object ``uid`` names (tells a late view of a
    deleted predecessor from a re-creation)."""
    baseline: Baseline | None = None
    last_history_id: int | None = None
    pending: list[PendingSync] = Field(default_factory=list)
    last_failure_at: datetime | None = None
    """``finishedAt`` of the last failed operation taken into account."""
    deleted_at: datetime | None = None
    """Set when the Application was deleted; the key then expires after ``argocd.state_ttl``."""
    degraded: DegradedSpell | None = None

    def dump(self) -> str:
        return self.model_dump_json(exclude_defaults=False)

    @property
    def next_deadline(self) -> datetime | None:
        """The next time detection wants to look at the app again without a new event:
        a pending sync's deadline, or when a Degraded spell becomes an incident."""
        moments = [pending.deadline for pending in self.pending]
        spell = self.degraded
        if spell is not None and spell.resolved_at is None and spell.open_at is not None:
            moments.append(spell.open_at)
        return min(moments, default=None)


class CorruptState(ValueError):
    """A stored state that no longer parses (hand-edited, or a schema change)."""


def load_state(raw: str | bytes | None) -> AppState | None:
    if raw is None:
        return None
    try:
        return AppState.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptState(
            f"stored application state does not parse: {exc.error_count()} errors"
        ) from exc
