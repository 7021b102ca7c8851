"""The watch-thread side of detection: drop no-ops in memory, parse, hand over.

Runs in the watch threads, before anything reaches asyncio. Objects come
decoded by the watcher (:class:`~doraforwarder.argocd.decode.AppDocument`, only
the fields detection reads) or, when they did not fit that schema, as plain
JSON for the model's tolerant checks. For each object it compares a small
fingerprint (:func:`~doraforwarder.argocd.parse.fingerprint`) with the last one
handed over for that app: equal means the decision would be the same (a
refresh), so the event ends here, costing no parse, no Redis command and no
API request. Anything else is parsed into an
:class:`~doraforwarder.argocd.model.AppView` and queued on the app's lane;
malformed objects are skipped with one warning per app and field.

Memory is what scales with the number of Applications, so per app only a
16-byte digest is kept, and lists are taken page by page: nothing here holds
a reference into a raw object once it has been handed over.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from doraforwarder.argocd.decode import AppDocument, document_fingerprint, to_view
from doraforwarder.argocd.model import AppView, MalformedApplication, app_key
from doraforwarder.argocd.parse import fingerprint, parse_application
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.logging import get_logger
from doraforwarder.metrics import Metrics

log = get_logger("argocd")


@dataclass(frozen=True, slots=True)
class Observed:
    """A changed Application to decide."""

    view: AppView
    seen_at: datetime | None = None
    """When the watch or list delivered ``view``: the decision is judged as of then.

    A lane can fall behind (Redis down, a catch-up): deciding an old view with
    the time it is decided would let a sync's settle deadline pass on a view
    that a newer one, already queued behind it, supersedes (a deployment sent
    with the images of before the sync)."""

    @property
    def key(self) -> str:
        return self.view.key


@dataclass(frozen=True, slots=True)
class Deleted:
    namespace: str
    name: str
    uid: str = ""
    """The deleted object's uid; empty when it vanished from a re-list."""
    unless_seen: bool = False
    """Found gone by the scan after the first list (:mod:`~doraforwarder.argocd.vanished`):
    decided only if the intake has not met the app since (one created after that list
    is alive, though its state was not in the list)."""

    @property
    def key(self) -> str:
        return app_key(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Recheck:
    """A pending sync reached its deadline: decide again with the last view."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        return app_key(self.namespace, self.name)


Job = Observed | Deleted | Recheck
Submit = Callable[[str, Job, threading.Event], bool]
SubmitMany = Callable[[list[tuple[str, Job]], threading.Event], bool]
OnListed = Callable[[WatchScope, set[tuple[str, str]]], None]
Key = tuple[Any, Any]

_INDEX = re.compile(r"\[\d+\]")


def metric_field(field: str) -> str:
    """``status.history[3].id`` -> ``status.history[].id``: bounded label values."""
    return _INDEX.sub("[]", field)


class Intake:
    """Implements :class:`~doraforwarder.argocd.watcher.WatchSink` for the source."""

    def __init__(
        self,
        submit: Submit,
        metrics: Metrics,
        on_listed: OnListed,
        submit_many: SubmitMany | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``submit_many`` hands a list page's jobs over at once (else one ``submit`` each);
        ``clock`` dates each :class:`Observed` (``seen_at``)."""
        self._clock = clock
        self._submit = submit
        self._submit_many = submit_many
        self._metrics = metrics
        self._on_listed = on_listed
        self._fingerprints: dict[Key, bytes | None] = {}
        self._warned: dict[Key, str] = {}
        self._listing: dict[WatchScope, set[tuple[str, str]]] = {}
        """Keys seen so far by each scope's list in progress."""
        self._decide_all: set[WatchScope] = set()
        """Scopes whose next list hands every object over (:meth:`decide_all_next_list`)."""
        self._deciding_all: set[WatchScope] = set()
        """Scopes whose list in progress hands every object over."""
        self._seen = {
            kind: metrics.events_seen.labels(kind) for kind in ("ADDED", "MODIFIED", "DELETED")
        }
        self._noop = metrics.events_noop

    @property
    def apps_tracked(self) -> int:
        return len(self._fingerprints)

    def decide_all_next_list(self, scope: WatchScope) -> None:
        """Hand every object of ``scope``'s next list over, even one whose fingerprint is known.

        After a Redis failover the new master may hold older application
        states than the ones this process decided (a detection the previous
        master acknowledged and never passed on). The fingerprints say the
        objects did not change, so a plain list would skip them; deciding
        them again against what Redis holds now detects those syncs again
        (the rest decides to nothing, as after a restart).
        """
        self._decide_all.add(scope)

    def tracks(self, namespace: str, name: str) -> bool:
        """Whether the app was met (listed or watched) and not deleted since."""
        return (namespace, name) in self._fingerprints

    # --- WatchSink ------------------------------------------------------------------
    def event(self, scope: WatchScope, event_type: str, obj: Any, stop: threading.Event) -> bool:
        self._seen[event_type].inc()
        if event_type == "DELETED":
            return self._deleted(obj, stop)
        return self._observe(obj, stop)

    def listed_page(
        self, scope: WatchScope, objects: list[Any], stop: threading.Event, *, first: bool
    ) -> bool:
        if first or scope not in self._listing:
            self._listing[scope] = set()  # a list cut short before is forgotten
            if scope in self._decide_all:
                self._decide_all.discard(scope)
                self._deciding_all.add(scope)
        present = self._listing[scope]
        every = scope in self._deciding_all
        jobs: list[tuple[str, Job]] = []
        for obj in objects:
            key = _raw_key(obj)
            if key is not None and isinstance(key[0], str) and isinstance(key[1], str):
                present.add(key)
            job = self._changed(obj, every=every)
            if job is None:
                continue
            if self._submit_many is not None:
                jobs.append((job.key, job))
            elif not self._submit(job.key, job, stop):
                return False
        return not jobs or self._submit_many is None or self._submit_many(jobs, stop)

    def listed_done(self, scope: WatchScope, stop: threading.Event) -> bool:
        present = self._listing.pop(scope, set())
        self._deciding_all.discard(scope)
        # Deleted while we were not watching (a 410 gap): no DELETED event will come.
        # Only now: until the list completed, an absent app may be on a later page.
        # list(): other scopes' threads add apps meanwhile (a C-level copy, atomic).
        for key in [
            k for k in list(self._fingerprints) if isinstance(k[0], str) and scope.contains(k[0])
        ]:
            if key not in present:
                self._fingerprints.pop(key, None)
                self._warned.pop(key, None)
                if isinstance(key[1], str) and not self._submit(
                    app_key(key[0], key[1]), Deleted(key[0], key[1]), stop
                ):
                    return False
        self._metrics.apps_tracked.set(len(self._fingerprints))
        self._on_listed(scope, present)
        return True

    # --- internals ------------------------------------------------------------------
    def _observe(self, obj: Any, stop: threading.Event) -> bool:
        job = self._changed(obj)
        return job is None or self._submit(job.key, job, stop)

    def _changed(self, obj: Any, *, every: bool = False) -> Observed | None:
        """The job deciding ``obj``, or None when it changes nothing (a refresh, malformed).

        ``every``: decide it even if its fingerprint is the one last handed over."""
        key = _raw_key(obj)
        document = isinstance(obj, AppDocument)
        current = document_fingerprint(obj) if document else fingerprint(obj)
        if (not every and key is not None and current is not None
                and self._fingerprints.get(key) == current):
            self._noop.inc()
            return None
        try:
            view = to_view(obj) if document else parse_application(obj)
        except MalformedApplication as exc:
            self._malformed(key, exc)
            if key is not None:
                self._fingerprints[key] = current
            return None
        assert key is not None
        self._warned.pop(key, None)
        self._fingerprints[key] = current
        self._metrics.apps_tracked.set(len(self._fingerprints))
        return Observed(view, self._clock() if self._clock is not None else None)

    def _deleted(self, obj: Any, stop: threading.Event) -> bool:
        key = _raw_key(obj)
        if key is None or not isinstance(key[0], str) or not isinstance(key[1], str):
            self._malformed(
                key, MalformedApplication("<unknown>", "metadata", "has no namespace/name")
            )
            return True
        self._fingerprints.pop(key, None)
        self._warned.pop(key, None)
        self._metrics.apps_tracked.set(len(self._fingerprints))
        return self._submit(app_key(*key), Deleted(*key, uid=_raw_uid(obj)), stop)

    def _malformed(self, key: Key | None, exc: MalformedApplication) -> None:
        self._metrics.malformed_objects.labels(metric_field(exc.field)).inc()
        # Objects without a usable name share one slot per field.
        slot = key if key is not None else ("<unknown>", exc.field)
        if self._warned.get(slot) == exc.field:
            return
        self._warned[slot] = exc.field
        log.warning(
            "application skipped: malformed", app=exc.app, field=exc.field, problem=exc.problem
        )


def _raw_uid(obj: Any) -> str:
    if isinstance(obj, AppDocument):
        return obj.uid
    uid = obj["metadata"].get("uid")
    return uid if isinstance(uid, str) else ""


def _raw_key(obj: Any) -> Key | None:
    if isinstance(obj, AppDocument):
        return obj.key
    try:
        metadata = obj["metadata"]
        key = (metadata.get("namespace"), metadata.get("name"))
        hash(key)
    except (KeyError, TypeError, AttributeError):
        return None
    return key
