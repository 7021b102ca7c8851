"""List, then watch, then resume, forever: one thread per watched scope.

The official client is synchronous, so each scope (a namespace, or the whole
cluster for ``namespaces: ["*"]``) runs in its own thread:

1. list (paginated) and hand every object to the sink, page by page as the
   pages arrive (never the whole list at once: with thousands of
   Applications, holding every parsed page is most of the daemon's memory):
   this is the start, and the catch-up after a 410;
2. watch from the list's resourceVersion with bookmarks on, reading the
   chunked response line by line, in batches while events flow
   (:mod:`~doraforwarder.argocd.watch_reader`; one decode per line, of only the fields
   detection reads: :mod:`~doraforwarder.argocd.decode`; we do not use
   ``kubernetes.watch.Watch``: it decodes each line twice, hides ERROR events
   and gives up on dropped connections);
3. when the watch ends (timeout, dropped connection), resume from the last
   resourceVersion seen; on 410 Expired, list again; on errors, retry with
   capped exponential backoff and jitter, forever. Each restart is logged
   and counted.

The resourceVersion advances only after the sink accepted an event, so an
event is never skipped, even when the sink blocks (back-pressure) or the
thread stops midway.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from doraforwarder.argocd.decode import AppDocument, decode_event, decode_page
from doraforwarder.argocd.listing import list_applications
from doraforwarder.argocd.watch_reader import BrokenStream, watch_lines
from doraforwarder.backoff import Backoff, parse_retry_after
from doraforwarder.logging import get_logger
from doraforwarder.metrics import Metrics

log = get_logger("argocd")

OBJECT_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED"})


@dataclass(frozen=True)
class WatchScope:
    """A namespace, or None for one cluster-wide watch."""

    namespace: str | None

    @property
    def label(self) -> str:
        return self.namespace if self.namespace is not None else "*"

    def contains(self, namespace: str) -> bool:
        return self.namespace is None or self.namespace == namespace


class WatchSink(Protocol):
    """Where a watcher delivers objects; calls may block (back-pressure)."""

    def listed_page(
        self, scope: WatchScope, objects: list[Any], stop: threading.Event, *, first: bool
    ) -> bool:
        """One page of a list of the scope; False if interrupted by stop.

        ``first`` starts a new list: pages of a list cut short (an error, a
        410 on the continue token) are forgotten.
        """

    def listed_done(self, scope: WatchScope, stop: threading.Event) -> bool:
        """The list whose pages were delivered completed: anything else in the scope is gone."""

    def event(self, scope: WatchScope, event_type: str, obj: Any, stop: threading.Event) -> bool:
        """One ADDED/MODIFIED/DELETED event; False if interrupted by stop."""


class Expired(Exception):
    """The resourceVersion is older than the server keeps (410): list again."""


@dataclass(frozen=True)
class WatchTiming:
    watch_timeout: float = 300.0
    """``timeoutSeconds`` asked of the server; the read timeout adds a margin."""
    connect_timeout: float = 10.0
    list_timeout: float = 60.0
    retry_base: float = 1.0
    retry_cap: float = 60.0
    page_size: int = 500


class ApplicationWatcher:
    """Keeps one scope listed and watched until :meth:`interrupt`."""

    def __init__(
        self,
        api: CustomObjectsApi,
        scope: WatchScope,
        sink: WatchSink,
        metrics: Metrics,
        stop: threading.Event,
        timing: WatchTiming | None = None,
    ) -> None:
        self.api = api
        self.scope = scope
        self.sink = sink
        self.metrics = metrics
        self.stop = stop
        self.timing = timing or WatchTiming()
        self.backoff = Backoff(self.timing.retry_base, self.timing.retry_cap)
        self.resource_version: str | None = None
        self.listed_once = threading.Event()
        self.failing_since: float | None = None
        """Monotonic time of the first failure in a row (None while healthy)."""
        self.last_error = ""
        self._response: Any = None
        self._lock = threading.Lock()
        self._relist = threading.Event()
        """Set by :meth:`request_relist`: list again instead of resuming the watch."""

    # --- lifecycle ------------------------------------------------------------------
    def interrupt(self) -> None:
        """Unblock a read in progress (called from another thread at stop)."""
        self.stop.set()
        self._shut_response()

    def request_relist(self) -> None:
        """List the scope again as soon as possible (from any thread); the watch resumes after.

        The read in progress is cut; a list in progress completes, then the
        next one starts at once.
        """
        self._relist.set()
        self._shut_response()

    def _shut_response(self) -> None:
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception as exc:  # best effort; the read timeout ends it anyway
                log.debug("watch interrupt failed", error=repr(exc))

    def run(self) -> None:
        """Thread target: list/watch/resume until stop."""
        while not self.stop.is_set():
            try:
                if self._relist.is_set():
                    self._relist.clear()
                    self.resource_version = None
                if self.resource_version is None:
                    self.resource_version = self._list()
                    if self.resource_version is None:
                        return  # stopped while delivering
                started = time.monotonic()
                self._watch()
                reason = "ended"
                # A server that closes watches at once must not make us spin.
                delay = 0.0 if time.monotonic() - started >= 1.0 else self.timing.retry_base
            except Expired:
                reason = "expired"
                self.resource_version = None
                delay = 0.0
            except ApiException as exc:
                if exc.status == 410:
                    reason, delay = "expired", 0.0
                    self.resource_version = None
                else:
                    reason = f"http {exc.status}" if exc.status else "connection"
                    delay = max(self.backoff.next_delay(), _retry_after(exc))
                self._failed(f"{reason}: {exc.reason}")
            except Exception as exc:  # refused, dropped, timeouts, garbage: all retried
                if self.stop.is_set():
                    return
                if self._relist.is_set():  # request_relist() cut the read
                    reason, delay = "relist", 0.0
                else:
                    reason = type(exc).__name__
                    delay = self.backoff.next_delay()
                    self._failed(f"{reason}: {exc}")
            if self.stop.is_set():
                return
            if self._relist.is_set():
                reason, delay = "relist", 0.0
            self.metrics.watch_restarts.labels(self.scope.label, reason).inc()
            log_method = log.debug if reason in ("ended", "relist") else log.warning
            log_method(
                "watch restarting",
                namespace=self.scope.label,
                reason=reason,
                resource_version=self.resource_version,
                retry_in=round(delay, 3),
                error=self.last_error if reason not in ("ended", "expired") else None,
            )
            if delay and self.stop.wait(delay):
                return

    def _failed(self, error: str) -> None:
        self.last_error = error[:300]
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    def _healthy(self) -> None:
        self.failing_since = None
        self.last_error = ""
        self.backoff.reset()

    # --- list -----------------------------------------------------------------------
    def _list(self) -> str | None:
        count = pages = 0
        token: str | None = None
        resource_version = ""
        while True:
            response = self._call(
                watch=False,
                limit=self.timing.page_size,
                _continue=token,
                _request_timeout=(self.timing.connect_timeout, self.timing.list_timeout),
            )
            try:
                data = response.data
            finally:
                response.release_conn()
            try:
                items, metadata = decode_page(data)
            except ValueError:
                raise BrokenStream("list answer is not an object with items") from None
            del data
            if not self.sink.listed_page(self.scope, items, self.stop, first=pages == 0):
                return None
            pages += 1
            count += len(items)
            del items  # the page is handed over: let it go before the next one arrives
            token = metadata.get("continue") or None
            resource_version = metadata.get("resourceVersion") or resource_version
            if not token:
                break
        if not isinstance(resource_version, str) or not resource_version:
            raise BrokenStream("list answer has no metadata.resourceVersion")
        self.metrics.relists.labels(self.scope.label).inc()
        self._healthy()
        log.info(
            "applications listed",
            namespace=self.scope.label,
            count=count,
            resource_version=resource_version,
        )
        if not self.sink.listed_done(self.scope, self.stop):
            return None
        self.listed_once.set()
        return resource_version

    # --- watch ----------------------------------------------------------------------
    def _watch(self) -> None:
        assert self.resource_version is not None
        timeout = max(1, int(self.timing.watch_timeout))
        response = self._call(
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=timeout,
            _request_timeout=(self.timing.connect_timeout, timeout + 30.0),
        )
        with self._lock:
            self._response = response
        try:
            if self.stop.is_set() or self._relist.is_set():
                return  # interrupted while connecting: there was no response to shut yet
            self._healthy()
            for line in watch_lines(response):
                if not self._handle(line):
                    return
        finally:
            with self._lock:
                self._response = None
            response.release_conn()

    def _handle(self, line: bytes) -> bool:
        try:
            event_type, obj = decode_event(line)
        except (ValueError, KeyError, TypeError):
            raise BrokenStream(f"undecodable watch line: {line[:120]!r}") from None
        if event_type in OBJECT_EVENTS:
            if not self.sink.event(self.scope, event_type, obj, self.stop):
                return False
            version = _resource_version(obj)
            if version:
                self.resource_version = version
            return True
        if event_type == "BOOKMARK":
            version = _resource_version(obj)
            if version:
                self.resource_version = version
            return True
        if event_type == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise Expired()
            message = obj.get("message", "") if isinstance(obj, dict) else ""
            raise BrokenStream(f"watch ERROR event {code}: {str(message)[:200]}")
        log.warning(
            "unknown watch event type ignored",
            namespace=self.scope.label,
            type=str(event_type)[:40],
        )
        return True

    def _call(self, **kwargs: Any) -> Any:
        return list_applications(self.api, self.scope.namespace, _preload_content=False,
                                 **kwargs)


def _resource_version(obj: Any) -> str | None:
    if isinstance(obj, AppDocument):
        return obj.resource_version
    try:
        version = obj["metadata"]["resourceVersion"]
    except (KeyError, TypeError):
        return None
    return version if isinstance(version, str) and version else None


def _retry_after(exc: ApiException) -> float:
    """Seconds asked by a 429/503 ``Retry-After`` header (capped at 5 minutes)."""
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    return min(300.0, parse_retry_after(value) or 0.0)
