"""Decode watch lines and list pages straight into what detection reads, and no more.

Most watch events are refreshes: only ``status.reconciledAt`` (and the
resourceVersion) moved, and the event ends in the intake's fingerprint check.
Building a Python dict of every field of such an object (``status.resources``
alone is most of its bytes) is most of the cost of the no-op path, so lines
are decoded with msgspec into the typed :class:`AppDocument` below: its
Structs declare exactly the fields :func:`~doraforwarder.argocd.parse.parse_application`
reads, unknown fields are skipped in C without building objects, and the
fingerprint is taken from the Structs.

The Structs are strictly typed, the model is tolerant and names the field at
fault. An object that does not fit the schema (a wrong type anywhere in the
declared fields, or a ``null`` where the model tells "present" from "absent")
is decoded again with ``json.loads`` and goes down the model's own path, so
every malformed object is reported exactly as before. A document that fits is
turned into builtins (only the declared fields) and handed to the same
:func:`~doraforwarder.argocd.parse.parse_application`: one set of rules, and the
same :class:`~doraforwarder.argocd.model.AppView`.
"""

from __future__ import annotations

import json
from hashlib import blake2b
from typing import Any

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType, field

from doraforwarder.argocd.model import (
    ANNOTATION_CLUSTER,
    ANNOTATION_COMPONENT,
    ANNOTATION_ENVIRONMENT,
    AppView,
)
from doraforwarder.argocd.parse import parse_application


class _Doc(Struct, omit_defaults=True, forbid_unknown_fields=False, gc=False):
    """Base of the schema: unknown fields skipped, absent (None) fields left out of builtins.

    Reads like the JSON it came from (``doc["metadata"]["name"]``, ``.get``) for
    code written against plain objects; absent fields raise ``KeyError``.
    """

    def __getitem__(self, name: str) -> Any:
        fields: tuple[str, ...] = self.__struct_encode_fields__
        if name not in fields:
            raise KeyError(name)
        value = getattr(self, self.__struct_fields__[fields.index(name)])
        if value is None or isinstance(value, UnsetType):
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default


class Annotations(_Doc):
    # UNSET, not None: the model reports an annotation that is present but null.
    component: str | UnsetType = field(name=ANNOTATION_COMPONENT, default=UNSET)
    cluster: str | UnsetType = field(name=ANNOTATION_CLUSTER, default=UNSET)
    environment: str | UnsetType = field(name=ANNOTATION_ENVIRONMENT, default=UNSET)


class Metadata(_Doc):
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    creationTimestamp: str | None = None
    annotations: Annotations | None = None


class Source(_Doc):
    repoURL: str | None = None
    path: str | None = None
    targetRevision: str | None = None
    chart: str | None = None


class SyncSource(_Doc):
    repoURL: str | None = None
    path: str | None = None
    targetBranch: str | None = None


class SourceHydrator(_Doc):
    drySource: Source | None = None
    syncSource: SyncSource | None = None


class Destination(_Doc):
    server: str | None = None
    name: str | None = None
    namespace: str | None = None


class Spec(_Doc):
    project: str | None = None
    source: Source | None = None
    sources: list[Source] | None = None
    destination: Destination | None = None
    sourceHydrator: SourceHydrator | None = None


class Revisions(_Doc):
    revision: str | None = None
    revisions: list[str] | None = None


class OperationRequest(_Doc):
    sync: Revisions | None = None


class OperationState(_Doc):
    phase: str | None = None
    message: str | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    syncResult: Revisions | None = None
    operation: OperationRequest | None = None


class HistoryItem(_Doc):
    id: int | None = None
    revision: str | None = None
    revisions: list[str] | None = None
    source: Source | None = None
    sources: list[Source] | None = None
    deployedAt: str | None = None
    deployStartedAt: str | None = None


class SyncStatus(_Doc):
    status: str | None = None


class Health(_Doc):
    status: str | None = None
    lastTransitionTime: str | None = None


class Summary(_Doc):
    images: list[str] | None = None


class HydrationResult(_Doc):
    drySHA: str | None = None
    hydratedSHA: str | None = None


class HydratorStatus(_Doc):
    lastSuccessfulOperation: HydrationResult | None = None


class Status(_Doc):
    sync: SyncStatus | None = None
    health: Health | None = None
    summary: Summary | None = None
    history: list[HistoryItem] | None = None
    operationState: OperationState | None = None
    reconciledAt: str | None = None
    sourceHydrator: HydratorStatus | None = None


class AppDocument(_Doc):
    """One Application, holding only what detection reads."""

    metadata: Metadata | None = None
    spec: Spec | None = None
    # UNSET, not None: an object without status is a distinct case from one with status null.
    status: Status | UnsetType | None = UNSET

    @property
    def key(self) -> tuple[str | None, str | None] | None:
        metadata = self.metadata
        return None if metadata is None else (metadata.namespace, metadata.name)

    @property
    def resource_version(self) -> str | None:
        metadata = self.metadata
        version = metadata.resourceVersion if metadata is not None else None
        return version or None

    @property
    def uid(self) -> str:
        metadata = self.metadata
        return (metadata.uid or "") if metadata is not None else ""


class WatchEvent(Struct, forbid_unknown_fields=False, gc=False):
    type: str
    object: AppDocument


class _Page(Struct, forbid_unknown_fields=False):
    items: list[Raw] | None = None
    metadata: dict[str, Any] | None = None


_event_decoder = msgspec.json.Decoder(WatchEvent)
_document_decoder = msgspec.json.Decoder(AppDocument)
_page_decoder = msgspec.json.Decoder(_Page)
_encode = msgspec.json.Encoder().encode

Object = AppDocument | Any
"""A decoded Application: an :class:`AppDocument`, or the raw JSON value when it
does not fit the schema (handled by the tolerant model)."""


def decode_event(line: bytes) -> tuple[Any, Object]:
    """``(type, object)`` of one watch line; raises ``ValueError`` if it is not JSON.

    ERROR events (a ``Status`` object) and objects that do not fit the schema
    come back as plain JSON values.
    """
    try:
        event = _event_decoder.decode(line)
    except msgspec.ValidationError:
        pass
    else:
        if event.type != "ERROR":  # a Status, not an Application
            return event.type, event.object
    raw = json.loads(line)
    return raw["type"], raw["object"]


def decode_object(data: bytes | Raw) -> Object:
    """One Application's JSON: an :class:`AppDocument`, else the plain JSON value."""
    try:
        return _document_decoder.decode(data)
    except msgspec.ValidationError:
        return json.loads(bytes(data))


def decode_page(body: bytes) -> tuple[list[Object], dict[str, Any]]:
    """A list answer: its items (decoded one by one) and its ``metadata``.

    Raises ``ValueError`` when it is not an object with a list of items.
    """
    try:
        page = _page_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ValueError(f"list answer is not an object with items: {exc}") from None
    items = [decode_object(raw) for raw in page.items or ()]
    return items, page.metadata or {}


def to_view(document: AppDocument) -> AppView:
    """The :class:`AppView` of a document (raises ``MalformedApplication`` like the model)."""
    return parse_application(msgspec.to_builtins(document))


def document_fingerprint(document: AppDocument) -> bytes | None:
    """:func:`~doraforwarder.argocd.parse.fingerprint` taken from a document.

    The same values, so equal digests mean the same decision; only the
    bytes hashed differ (this digest is never compared with the model's).
    """
    metadata, spec, status = document.metadata, document.spec, document.status
    if metadata is None or spec is None:
        return None
    has_status = status is not UNSET
    if status is None or isinstance(status, UnsetType):
        status = _NO_STATUS
    annotations = metadata.annotations or _NO_ANNOTATIONS
    history = status.history or ()
    last = history[-1] if history else _NO_ENTRY
    operation = status.operationState or _NO_OPERATION
    result = operation.syncResult or _NO_REVISIONS
    health = status.health or _NO_HEALTH
    hydrated = status.sourceHydrator
    finished, reconciled = operation.finishedAt, status.reconciledAt
    values = (
        has_status,
        spec.sourceHydrator,
        hydrated.lastSuccessfulOperation if hydrated is not None else None,
        spec.project,
        health.lastTransitionTime,
        result.revision,
        result.revisions,
        operation.message if operation.phase == "Running" else None,
        metadata.uid,
        _unset_none(annotations.component),
        _unset_none(annotations.cluster),
        _unset_none(annotations.environment),
        spec.source,
        spec.sources,
        spec.destination,
        status.sync.status if status.sync is not None else None,
        health.status,
        len(history),
        last.id,
        last.deployedAt,
        operation.phase,
        operation.startedAt,
        finished,
        status.summary.images if status.summary is not None else None,
        reconciled >= finished if reconciled is not None and finished is not None else None,
    )
    return blake2b(_encode(values), digest_size=16).digest()


def _unset_none(value: str | UnsetType) -> str | None:
    return None if isinstance(value, UnsetType) else value


_NO_STATUS = Status()
_NO_ANNOTATIONS = Annotations()
_NO_ENTRY = HistoryItem()
_NO_OPERATION = OperationState()
_NO_REVISIONS = Revisions()
_NO_HEALTH = Health()
