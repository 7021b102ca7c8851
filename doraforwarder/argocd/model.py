"""A typed view of one ArgoCD Application object: what detection reads of it.

:class:`AppView` and its parts hold only the fields detection needs; the
constants name the values ArgoCD writes. Reading them from the watch's JSON
(tolerant, one actionable error per broken object) and the cheap fingerprint
of that JSON are :mod:`doraforwarder.argocd.parse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from doraforwarder.records import GitSource

ANNOTATION_COMPONENT = "doraforwarder.io/component"
ANNOTATION_CLUSTER = "doraforwarder.io/cluster"
ANNOTATION_ENVIRONMENT = "doraforwarder.io/environment"
ANNOTATIONS = (ANNOTATION_COMPONENT, ANNOTATION_CLUSTER, ANNOTATION_ENVIRONMENT)

SYNC_STATUSES = frozenset({"Synced", "OutOfSync", "Unknown"})
HEALTH_STATUSES = frozenset(
    {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
)
OPERATION_PHASES = frozenset({"Running", "Succeeded", "Failed", "Error", "Terminating"})
FAILED_PHASES = frozenset({"Failed", "Error"})
RETRY_MARKER = "Retrying attempt #"
"""In ``operationState.message`` of a failed attempt ArgoCD will retry."""
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Error"})
ENVIRONMENTS = frozenset({"PRODUCTION", "STAGING", "TESTING", "DEVELOPMENT"})


class MalformedApplication(ValueError):
    """An Application object detection cannot use, naming the field at fault."""

    def __init__(self, app: str, field: str, problem: str) -> None:
        super().__init__(f"application {app}: field {field} {problem}")
        self.app = app
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class SourceView:
    """One entry of ``spec.source`` / ``spec.sources`` (or of a history entry)."""

    repo_url: str
    path: str = ""
    target_revision: str = ""
    chart: str = ""
    """Set for a Helm chart source: its revisions are chart versions, not git commits."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One completed sync: ``status.history[]``."""

    id: int
    revisions: tuple[str, ...]
    sources: tuple[SourceView, ...]
    deployed_at: datetime
    started_at: datetime | None = None

    @property
    def revision(self) -> str:
        """The gitops commit: the first git (non-chart) source's revision, else the first."""
        return gitops_revision(self.sources, self.revisions)

    def git_sources(self) -> list[GitSource]:
        return git_sources(self.sources, self.revisions)


@dataclass(frozen=True, slots=True)
class OperationView:
    """``status.operationState``: the last (or running) sync operation."""

    phase: str
    started_at: datetime | None
    finished_at: datetime | None
    message: str = ""
    revisions: tuple[str, ...] = ()
    """The resolved revisions (``syncResult``), else the requested ones."""

    @property
    def retrying(self) -> bool:
        """A failed attempt ArgoCD will retry: ``Running`` with ``finishedAt`` set."""
        return (
            self.phase == "Running"
            and self.finished_at is not None
            and RETRY_MARKER in self.message
        )

    @property
    def failed_attempt(self) -> bool:
        """A failed sync attempt (final or to be retried), identified by its ``finishedAt``."""
        return self.finished_at is not None and (self.phase in FAILED_PHASES or self.retrying)


@dataclass(frozen=True, slots=True)
class HydratorView:
    """``spec.sourceHydrator`` and what ``status.sourceHydrator`` says of its last run.

    What a developer wrote is the dry commit; what ArgoCD syncs is the
    hydrated commit the hydrator pushed to ``syncSource.targetBranch``.
    """

    dry: SourceView
    sync: SourceView
    dry_sha: str = ""
    hydrated_sha: str = ""

    def deployed(self, revision: str) -> tuple[SourceView, str]:
        """The source and revision a synced (hydrated) ``revision`` stands for.

        The dry commit when the last successful hydration produced that
        revision (or does not say which one it produced), else the hydrated
        commit in the sync source.
        """
        if self.dry_sha and (not self.hydrated_sha or self.hydrated_sha == revision):
            return self.dry, self.dry_sha
        return self.sync, revision


@dataclass(frozen=True, slots=True)
class AppView:
    """What detection reads from one Application object."""

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    created_at: datetime | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[SourceView, ...] = ()
    destination_server: str = ""
    destination_name: str = ""
    sync_status: str | None = None
    health_status: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    operation: OperationView | None = None
    images: tuple[str, ...] = ()
    reconciled_at: datetime | None = None
    project: str = ""
    destination_namespace: str = ""
    health_since: datetime | None = None
    """``status.health.lastTransitionTime`` (when ArgoCD records it)."""
    hydrator: HydratorView | None = None
    has_status: bool = True
    """False for an Application the controller has not reconciled yet (no ``status``)."""

    @property
    def key(self) -> str:
        return app_key(self.namespace, self.name)

    @property
    def latest(self) -> HistoryEntry | None:
        return self.history[-1] if self.history else None

    @property
    def source_path(self) -> str:
        """The first non-empty source path: what the environment rules look at."""
        for source in self.sources:
            if source.path:
                return source.path
        return ""


def app_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def git_sources(sources: tuple[SourceView, ...], revisions: tuple[str, ...]) -> list[GitSource]:
    """Pair sources with the revisions deployed from them (by position, as ArgoCD does).

    Every source is listed, chart sources included (with their chart name and
    version as revision); the name is historical.
    """
    result = []
    for index, source in enumerate(sources):
        revision = revisions[index] if index < len(revisions) else source.target_revision
        result.append(
            GitSource(
                repo_url=source.repo_url, revision=revision, path=source.path, chart=source.chart
            )
        )
    return result


def gitops_revision(sources: tuple[SourceView, ...], revisions: tuple[str, ...]) -> str:
    """The first git source's revision (the gitops commit), else the first revision."""
    for index, source in enumerate(sources):
        if not source.chart and index < len(revisions) and revisions[index]:
            return revisions[index]
    return revisions[0] if revisions else ""


def parse_time(text: str) -> datetime:
    """RFC 3339 as Kubernetes writes it; a naive value is taken as UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def deployed_sources(
    sources: tuple[SourceView, ...], revisions: tuple[str, ...], hydrator: HydratorView | None
) -> tuple[tuple[SourceView, ...], tuple[str, ...]]:
    """The sources and revisions a sync deployed, the dry commit standing for a hydrated one."""
    if hydrator is None or len(revisions) != 1:
        return sources, revisions
    source, revision = hydrator.deployed(revisions[0])
    return (source,), (revision,)
