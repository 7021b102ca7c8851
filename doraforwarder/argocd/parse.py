"""Application JSON -> :class:`~doraforwarder.argocd.model.AppView`, and its cheap twin.

:func:`parse_application` turns the plain JSON the watch hands us into an
:class:`~doraforwarder.argocd.model.AppView` holding only the fields detection
needs, or raises :class:`~doraforwarder.argocd.model.MalformedApplication`
naming the application and the *one* field that is missing or mistyped, so the
watcher can log a single actionable warning and carry on with the next object.

:func:`fingerprint` is the cheap twin used on every watch event: a 16-byte
digest of the raw values detection depends on. Two events with equal fingerprints
lead to the same decision, so the second one (a refresh, the common case) is
dropped in memory without parsing, Redis or API calls.
"""

from __future__ import annotations

from datetime import datetime
from hashlib import blake2b
from typing import Any

from doraforwarder.argocd.model import (
    ANNOTATION_CLUSTER,
    ANNOTATION_COMPONENT,
    ANNOTATION_ENVIRONMENT,
    ANNOTATIONS,
    ENVIRONMENTS,
    HEALTH_STATUSES,
    OPERATION_PHASES,
    SYNC_STATUSES,
    TERMINAL_PHASES,
    AppView,
    HistoryEntry,
    HydratorView,
    MalformedApplication,
    OperationView,
    SourceView,
    app_key,
    deployed_sources,
    parse_time,
)

MAX_IMAGES = 500
"""More images than this is not an application, it is a bug upstream: skip it."""
MAX_IMAGE_LENGTH = 1024
MAX_HISTORY = 1000


class _Reader:
    """Field accessors that raise :class:`MalformedApplication` with the field path."""

    def __init__(self, app: str) -> None:
        self.app = app

    def fail(self, field: str, problem: str) -> MalformedApplication:
        return MalformedApplication(self.app, field, problem)

    def mapping(self, value: Any, field: str, *, required: bool = False) -> dict[str, Any]:
        if value is None:
            if required:
                raise self.fail(field, "is missing")
            return {}
        if not isinstance(value, dict):
            raise self.fail(field, f"must be an object, got {type(value).__name__}")
        return value

    def items(self, value: Any, field: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(field, f"must be a list, got {type(value).__name__}")
        return value

    def text(self, value: Any, field: str, *, required: bool = False) -> str:
        if value is None:
            if required:
                raise self.fail(field, "is missing")
            return ""
        if not isinstance(value, str):
            raise self.fail(field, f"must be a string, got {type(value).__name__}")
        if required and not value:
            raise self.fail(field, "is empty")
        return value

    def choice(self, value: Any, field: str, allowed: frozenset[str]) -> str | None:
        if value is None:
            return None
        text = self.text(value, field)
        if text not in allowed:
            raise self.fail(field, f"has unknown value {text[:40]!r}")
        return text

    def time(self, value: Any, field: str, *, required: bool = False) -> datetime | None:
        text = self.text(value, field, required=required)
        if not text:
            return None
        try:
            return parse_time(text)
        except ValueError:
            raise self.fail(field, f"is not an RFC 3339 time: {text[:40]!r}") from None

    def revisions(self, entry: dict[str, Any], field: str, *, required: bool) -> tuple[str, ...]:
        many = entry.get("revisions")
        if many is not None:
            values = self.items(many, f"{field}.revisions")
            if not values and required:
                raise self.fail(f"{field}.revisions", "is empty")
            return tuple(
                self.text(item, f"{field}.revisions[{i}]", required=True)
                for i, item in enumerate(values)
            )
        one = self.text(entry.get("revision"), f"{field}.revision", required=required)
        return (one,) if one else ()

    def source(self, value: Any, field: str) -> SourceView:
        data = self.mapping(value, field, required=True)
        return SourceView(
            repo_url=self.text(data.get("repoURL"), f"{field}.repoURL", required=True),
            path=self.text(data.get("path"), f"{field}.path"),
            target_revision=self.text(data.get("targetRevision"), f"{field}.targetRevision"),
            chart=self.text(data.get("chart"), f"{field}.chart"),
        )

    def sources(self, holder: dict[str, Any], field: str) -> tuple[SourceView, ...]:
        if holder.get("sources") is not None:
            return tuple(
                self.source(item, f"{field}.sources[{i}]")
                for i, item in enumerate(self.items(holder["sources"], f"{field}.sources"))
            )
        if holder.get("source") is not None:
            return (self.source(holder["source"], f"{field}.source"),)
        return ()


def _identify(obj: Any) -> tuple[str, str]:
    """Namespace and name, or the best label we can give a broken object."""
    if not isinstance(obj, dict):
        raise MalformedApplication(
            "<unknown>", "object", f"must be an object, got {type(obj).__name__}"
        )
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise MalformedApplication("<unknown>", "metadata", "is missing or not an object")
    name, namespace = metadata.get("name"), metadata.get("namespace")
    shown = [part if isinstance(part, str) else "?" for part in (namespace, name)]
    reader = _Reader("/".join(shown))
    return reader.text(namespace, "metadata.namespace", required=True), reader.text(
        name, "metadata.name", required=True
    )


def parse_application(obj: Any) -> AppView:
    """Validate the fields detection uses.

    Raises :class:`MalformedApplication` on the first bad one.
    """
    namespace, name = _identify(obj)
    r = _Reader(app_key(namespace, name))
    metadata: dict[str, Any] = obj["metadata"]
    raw_annotations = r.mapping(metadata.get("annotations"), "metadata.annotations")
    annotations: dict[str, str] = {}
    for annotation in ANNOTATIONS:
        if annotation in raw_annotations:
            field = f"metadata.annotations[{annotation}]"
            annotations[annotation] = r.text(raw_annotations[annotation], field, required=True)
    if ANNOTATION_ENVIRONMENT in annotations:
        r.choice(
            annotations[ANNOTATION_ENVIRONMENT].upper(),
            f"metadata.annotations[{ANNOTATION_ENVIRONMENT}]",
            ENVIRONMENTS,
        )

    spec = r.mapping(obj.get("spec"), "spec", required=True)
    raw_status = obj.get("status")
    hydrator = _hydrator(r, spec, r.mapping(raw_status, "status"))
    if hydrator is not None:
        sources: tuple[SourceView, ...] = (hydrator.dry,)
        history_sources: tuple[SourceView, ...] = (hydrator.sync,)
    else:
        sources = history_sources = r.sources(spec, "spec")
    if not sources:
        raise r.fail(
            "spec.source", "is missing (none of spec.source, spec.sources, spec.sourceHydrator)"
        )
    destination = r.mapping(spec.get("destination"), "spec.destination")
    project = r.text(spec.get("project"), "spec.project")
    destination_namespace = r.text(destination.get("namespace"), "spec.destination.namespace")

    identity: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "uid": r.text(metadata.get("uid"), "metadata.uid"),
        "resource_version": r.text(metadata.get("resourceVersion"), "metadata.resourceVersion"),
        "created_at": _optional_time(metadata.get("creationTimestamp")),
        "annotations": annotations,
        "sources": sources,
        "destination_server": r.text(destination.get("server"), "spec.destination.server"),
        "destination_name": r.text(destination.get("name"), "spec.destination.name"),
        "project": project,
        "destination_namespace": destination_namespace,
        "hydrator": hydrator,
    }
    if raw_status is None:
        return AppView(**identity, has_status=False)
    status = r.mapping(raw_status, "status", required=True)
    sync = r.mapping(status.get("sync"), "status.sync")
    health = r.mapping(status.get("health"), "status.health")
    summary = r.mapping(status.get("summary"), "status.summary")

    return AppView(
        **identity,
        health_since=_optional_time(health.get("lastTransitionTime")),
        sync_status=r.choice(sync.get("status"), "status.sync.status", SYNC_STATUSES),
        health_status=r.choice(health.get("status"), "status.health.status", HEALTH_STATUSES),
        history=_history(r, status.get("history"), history_sources, hydrator),
        operation=_operation(r, status.get("operationState")),
        images=_images(r, summary.get("images")),
        reconciled_at=r.time(status.get("reconciledAt"), "status.reconciledAt"),
    )


def _optional_time(value: Any) -> datetime | None:
    """A time only used to order views: unusable is unknown, not a reason to skip the app."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def _hydrator(r: _Reader, spec: dict[str, Any], status: dict[str, Any]) -> HydratorView | None:
    raw = spec.get("sourceHydrator")
    if raw is None:
        return None
    hydrator = r.mapping(raw, "spec.sourceHydrator")
    dry = r.source(hydrator.get("drySource"), "spec.sourceHydrator.drySource")
    sync = r.mapping(
        hydrator.get("syncSource"), "spec.sourceHydrator.syncSource", required=True
    )
    sync_source = SourceView(
        repo_url=r.text(sync.get("repoURL"), "spec.sourceHydrator.syncSource.repoURL")
        or dry.repo_url,
        path=r.text(sync.get("path"), "spec.sourceHydrator.syncSource.path"),
        target_revision=r.text(
            sync.get("targetBranch"), "spec.sourceHydrator.syncSource.targetBranch", required=True
        ),
    )
    hydrated = r.mapping(status.get("sourceHydrator"), "status.sourceHydrator")
    last = r.mapping(
        hydrated.get("lastSuccessfulOperation"), "status.sourceHydrator.lastSuccessfulOperation"
    )
    field = "status.sourceHydrator.lastSuccessfulOperation"
    return HydratorView(
        dry=dry,
        sync=sync_source,
        dry_sha=r.text(last.get("drySHA"), f"{field}.drySHA"),
        hydrated_sha=r.text(last.get("hydratedSHA"), f"{field}.hydratedSHA"),
    )


def _history(
    r: _Reader,
    value: Any,
    spec_sources: tuple[SourceView, ...],
    hydrator: HydratorView | None = None,
) -> tuple[HistoryEntry, ...]:
    raw = r.items(value, "status.history")
    if len(raw) > MAX_HISTORY:
        raise r.fail("status.history", f"has {len(raw)} entries (more than {MAX_HISTORY})")
    entries: list[HistoryEntry] = []
    seen: set[int] = set()
    for index, item in enumerate(raw):
        field = f"status.history[{index}]"
        entry = r.mapping(item, field, required=True)
        entry_id = entry.get("id")
        if isinstance(entry_id, bool) or not isinstance(entry_id, int):
            raise r.fail(
                f"{field}.id", "must be an integer" if entry_id is not None else "is missing"
            )
        if entry_id < 0 or entry_id in seen:
            raise r.fail(f"{field}.id", f"is negative or repeated ({entry_id})")
        seen.add(entry_id)
        sources = _entry_sources(r, entry, field) or spec_sources
        deployed_at = r.time(entry.get("deployedAt"), f"{field}.deployedAt", required=True)
        assert deployed_at is not None
        sources, revisions = deployed_sources(
            sources, r.revisions(entry, field, required=True), hydrator
        )
        entries.append(
            HistoryEntry(
                id=entry_id,
                revisions=revisions,
                sources=sources,
                deployed_at=deployed_at,
                started_at=r.time(entry.get("deployStartedAt"), f"{field}.deployStartedAt"),
            )
        )
    entries.sort(key=lambda e: e.id)
    return tuple(entries)


def _entry_sources(r: _Reader, entry: dict[str, Any], field: str) -> tuple[SourceView, ...]:
    """A history entry's sources; multi-source entries carry an empty ``source``
    (``{repoURL: ""}``) beside ``sources``, which is no source at all."""
    if entry.get("sources") is None:
        single = entry.get("source")
        if isinstance(single, dict) and not single.get("repoURL"):
            return ()
    return r.sources(entry, field)


def _operation(r: _Reader, value: Any) -> OperationView | None:
    if value is None:
        return None
    state = r.mapping(value, "status.operationState")
    phase = r.choice(state.get("phase"), "status.operationState.phase", OPERATION_PHASES)
    if phase is None:
        raise r.fail("status.operationState.phase", "is missing")
    finished_at = r.time(
        state.get("finishedAt"),
        "status.operationState.finishedAt",
        required=phase in TERMINAL_PHASES,
    )
    # The resolved revisions first: the requested one may be HEAD or a branch.
    result = r.mapping(state.get("syncResult"), "status.operationState.syncResult")
    revisions = r.revisions(result, "status.operationState.syncResult", required=False)
    if not revisions:
        operation = r.mapping(state.get("operation"), "status.operationState.operation")
        sync = r.mapping(operation.get("sync"), "status.operationState.operation.sync")
        revisions = r.revisions(sync, "status.operationState.operation.sync", required=False)
    message = state.get("message")
    return OperationView(
        phase=phase,
        started_at=r.time(state.get("startedAt"), "status.operationState.startedAt"),
        finished_at=finished_at,
        message=message if isinstance(message, str) else "",
        revisions=revisions,
    )


def _images(r: _Reader, value: Any) -> tuple[str, ...]:
    images = r.items(value, "status.summary.images")
    if len(images) > MAX_IMAGES:
        raise r.fail("status.summary.images", f"has {len(images)} entries (more than {MAX_IMAGES})")
    for index, image in enumerate(images):
        field = f"status.summary.images[{index}]"
        r.text(image, field, required=True)
        if len(image) > MAX_IMAGE_LENGTH or any(c.isspace() for c in image):
            raise r.fail(field, "is not an image reference")
    return tuple(images)


_NO_FIELDS: dict[str, Any] = {}


def fingerprint(obj: Any) -> bytes | None:
    """A 16-byte digest of the raw values detection depends on, for the "nothing to do" check.

    ``reconciledAt`` changes on every refresh, so it is reduced to whether a
    comparison ran after the last operation finished (the "settled" signal).
    A digest, not the values: one is kept per tracked Application, and the
    values would be references into the parsed object (its sources,
    destination and images), keeping much of it alive. ``repr`` of equal JSON
    values is equal (dict key order aside, which the server keeps stable, and
    a reordering only costs one needless parse). Returns None when the object
    is too broken to fingerprint; the caller then parses it (and reports what
    is wrong).
    """
    values = _fingerprint_values(obj)
    if values is None:
        return None
    return blake2b(repr(values).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _fingerprint_values(obj: Any) -> tuple[Any, ...] | None:
    try:
        metadata = obj["metadata"]
        annotations = metadata.get("annotations") or _NO_FIELDS
        spec = obj["spec"]
        status = obj.get("status")
        if status is None:
            status = _NO_FIELDS
        history = status.get("history") or ()
        last = history[-1] if history else _NO_FIELDS
        operation = status.get("operationState") or _NO_FIELDS
        finished = operation.get("finishedAt")
        reconciled = status.get("reconciledAt")
        health = status.get("health") or _NO_FIELDS
        hydrated = (status.get("sourceHydrator") or _NO_FIELDS).get("lastSuccessfulOperation")
        return (
            "status" in obj,
            spec.get("sourceHydrator"),
            hydrated,
            spec.get("project"),
            health.get("lastTransitionTime"),
            (operation.get("syncResult") or _NO_FIELDS).get("revision"),
            (operation.get("syncResult") or _NO_FIELDS).get("revisions"),
            operation.get("message") if operation.get("phase") == "Running" else None,
            metadata.get("uid"),
            annotations.get(ANNOTATION_COMPONENT),
            annotations.get(ANNOTATION_CLUSTER),
            annotations.get(ANNOTATION_ENVIRONMENT),
            spec.get("source"),
            spec.get("sources"),
            spec.get("destination"),
            (status.get("sync") or _NO_FIELDS).get("status"),
            health.get("status"),
            len(history),
            last.get("id"),
            last.get("deployedAt"),
            operation.get("phase"),
            operation.get("startedAt"),
            finished,
            (status.get("summary") or _NO_FIELDS).get("images"),
            reconciled >= finished if type(reconciled) is str and type(finished) is str else None,
        )
    except (KeyError, TypeError, AttributeError, IndexError):
        return None
