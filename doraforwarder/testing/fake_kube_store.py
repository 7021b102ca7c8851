"""The fake Kubernetes API server's Applications: the store and how it is read.

What a real API server (its watch cache over etcd) promises about one
resource, apart from authentication and routing: every write bumps the
``resourceVersion`` and becomes an event; a list is paged with ``limit`` and
continue tokens of the real shape from one consistent snapshot; a watch
replays the events after its ``resourceVersion`` then streams live ones, with
BOOKMARKs on the real schedule, and a version older than the kept history gets
the 410 ERROR event. :class:`KubeStore` is the base of
:class:`~doraforwarder.testing.fake_kube.FakeKube` rather than an object of
its own so that tests keep scripting and tuning the one fake
(``kube.apply``, ``kube.bookmark_interval``).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from doraforwarder.testing.http_fake import FakeServer

API_VERSION = "argoproj.io/v1alpha1"
CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You "
    "can start a new list without the continue parameter, or use the continue token in "
    "this response to retrieve the remainder of the results. Continuing with the provided "
    "token results in an inconsistent list - objects that were created, modified, or "
    "deleted between the time the first chunk was returned and now may show up in the list.")
"""The real API server's 410 message for a continue token etcd compacted away."""
MAX_SNAPSHOTS = 64
"""List snapshots kept for continue tokens (oldest dropped first)."""


@dataclass(eq=False)
class _Watch:
    """An open watch: woken by each write, told to drop or to send a BOOKMARK now."""

    namespace: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    bookmark: bool = False


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``Status`` object, the body of every error answer (and of the ERROR event)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class KubeStore(FakeServer):
    """The Applications of a fake API server, their history, and their list and watch.

    Subclasses set ``self.server`` (their routes call :meth:`_list` and :meth:`_watch`).
    """

    def __init__(self, *, max_events: int, first_resource_version: int) -> None:
        self.max_events = max_events
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._events: list[tuple[int, str, dict[str, Any]]] = []
        self._event_rvs: list[int] = []
        self._rv = first_resource_version
        self._horizon = first_resource_version
        """Watches from a resourceVersion below this get 410."""
        self._watches: set[_Watch] = set()
        self._snapshots: dict[tuple[int, str | None], list[dict[str, Any]]] = {}
        """List snapshots by (resourceVersion, namespace): what continue tokens page
        through, kept until :meth:`compact` (a real server keeps them in its watch
        cache or reads etcd at that revision until etcd compacts it)."""
        self.bookmark_interval = 60.0
        """Seconds between the BOOKMARKs of a watch that asked for them (the real
        watch cache sends one a minute)."""
        self.bookmark_before_timeout = 2.0
        """A BOOKMARK goes this long before ``timeoutSeconds`` ends the watch, as the
        real server sends one (none when the watch is shorter than this)."""

    # --- scripting API (any thread) ---------------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._rv

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an Application (MODIFIED when it exists); returns the stored copy."""
        return self.server.call(self._write(copy.deepcopy(obj)))

    def apply_all(self, objects: list[dict[str, Any]]) -> None:
        """Apply several objects in order in one hop to the server thread (fast bursts)."""

        async def write_all() -> None:
            for obj in objects:
                await self._write(copy.deepcopy(obj))

        self.server.call(write_all())

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = _key(obj)
        if key in self._objects:
            raise ValueError(f"application {key[0]}/{key[1]} already exists")
        return self.apply(obj)

    def delete(self, namespace: str, name: str) -> None:
        self.server.call(self._delete(namespace, name))

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._objects[(namespace, name)])

    def objects(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for _, o in sorted(self._objects.items())]

    def compact(self) -> int:
        """Forget every event so far: a watch from any older version gets 410."""

        async def compact() -> int:
            self._events.clear()
            self._event_rvs.clear()
            self._snapshots.clear()
            self._horizon = self._rv
            return self._rv

        return self.server.call(compact())

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream."""

        async def drop() -> None:
            for watch in self._watches:
                watch.dropped = True
                watch.wake.set()

        if self.server.loop.is_running():
            self.server.call(drop())

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion on every open watch."""

        async def mark() -> None:
            for watch in self._watches:
                watch.bookmark = True
                watch.wake.set()

        self.server.call(mark())

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    # --- storage (server loop only) ---------------------------------------------------
    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    async def _write(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = _key(obj)
        existing = self._objects.get(key)
        metadata = obj.setdefault("metadata", {})
        metadata.setdefault("namespace", key[0])
        metadata.setdefault("uid", existing["metadata"]["uid"] if existing else str(uuid.uuid4()))
        metadata["resourceVersion"] = str(self._bump())
        obj.setdefault("apiVersion", API_VERSION)
        obj.setdefault("kind", "Application")
        self._objects[key] = obj
        self._record("MODIFIED" if existing else "ADDED", obj)
        return copy.deepcopy(obj)

    async def _delete(self, namespace: str, name: str) -> None:
        obj = self._objects.pop((namespace, name))
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self._record("DELETED", obj)

    def _record(self, event_type: str, obj: dict[str, Any]) -> None:
        self._events.append((self._rv, event_type, obj))
        self._event_rvs.append(self._rv)
        if len(self._events) > self.max_events:
            excess = len(self._events) - self.max_events
            self._horizon = self._event_rvs[excess - 1]
            del self._events[:excess]
            del self._event_rvs[:excess]
        for watch in self._watches:
            watch.wake.set()

    # --- list and watch (server loop only) --------------------------------------------
    def _list(self, request: web.Request, namespace: str | None) -> web.StreamResponse:
        """A page of a list, as a real API server pages it.

        The continue token is the real one's shape (base64url of
        ``{"v":"meta.k8s.io/v1","rv":N,"start":"<last key>\\u0000"}``) and, as on
        a real server, may be used again: each page is cut from the snapshot
        taken at ``rv``. A token whose snapshot was compacted away is 410
        Expired with the real message and an inconsistent continue token
        (``rv`` -1); a token that does not decode is 400 BadRequest.
        """
        token = request.query.get("continue")
        start = ""
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                snapshot_rv, start = int(decoded["rv"]), str(decoded["start"])
                if decoded.get("v") != "meta.k8s.io/v1" or snapshot_rv == 0:
                    raise ValueError("not a continue token")
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response(status_body(
                    400, "BadRequest", f"invalid continue token: {exc}"), status=400)
            items = self._snapshots.get((snapshot_rv, namespace))
            if items is None:
                body = status_body(410, "Expired", CONTINUE_EXPIRED)
                body["metadata"] = {"continue": _continue_token(-1, start)}
                return web.json_response(body, status=410)
        else:
            snapshot_rv = self._rv
            items = self._snapshots.get((snapshot_rv, namespace))
            if items is None:
                items = sorted(
                    (copy.deepcopy(obj) for key, obj in self._objects.items()
                     if namespace is None or key[0] == namespace),
                    key=lambda obj: _list_key(obj, namespace))
        keys = [_list_key(obj, namespace) for obj in items]
        first = bisect.bisect_right(keys, start) if start else 0
        metadata: dict[str, Any] = {"resourceVersion": str(snapshot_rv)}
        limit = int(request.query.get("limit") or 0)
        page = items[first:first + limit] if limit else items[first:]
        remaining = len(items) - first - len(page)
        if limit and remaining > 0:
            self._snapshots[(snapshot_rv, namespace)] = items
            while len(self._snapshots) > MAX_SNAPSHOTS:
                del self._snapshots[next(iter(self._snapshots))]
            metadata["continue"] = _continue_token(snapshot_rv, keys[first + len(page) - 1])
            metadata["remainingItemCount"] = remaining
        return web.json_response(
            {
                "apiVersion": API_VERSION,
                "kind": "ApplicationList",
                "metadata": metadata,
                "items": page,
            }
        )

    async def _watch(self, request: web.Request, namespace: str | None) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        since = request.query.get("resourceVersion") or "0"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # The real schedule: a BOOKMARK each minute, and one shortly before the timeout.
        next_mark = loop.time() + self.bookmark_interval
        final_mark = deadline - self.bookmark_before_timeout
        final_marked = final_mark <= loop.time()
        watch = _Watch(namespace)
        self._watches.add(watch)
        try:
            if since == "0":
                cursor = self._rv
                initial = [
                    copy.deepcopy(obj)
                    for key, obj in sorted(self._objects.items())
                    if namespace is None or key[0] == namespace
                ]
                for obj in initial:
                    await _send(response, "ADDED", obj)
            else:
                cursor = int(since)
                if cursor < self._horizon:
                    await _send(
                        response,
                        "ERROR",
                        status_body(
                            410, "Expired", f"too old resource version: {cursor} ({self._horizon})"
                        ),
                    )
                    await response.write_eof()
                    return response
            while True:
                watch.wake.clear()
                start = bisect.bisect_right(self._event_rvs, cursor)
                for rv, event_type, obj in self._events[start:]:
                    cursor = rv
                    if namespace is None or obj["metadata"]["namespace"] == namespace:
                        await _send(response, event_type, obj)
                if watch.dropped:
                    if request.transport is not None:
                        request.transport.close()
                    return response
                now = loop.time()
                due = watch.bookmark or now >= next_mark or (
                    not final_marked and now >= final_mark)
                if due:
                    watch.bookmark = False
                    if now >= final_mark:
                        final_marked = True
                    next_mark = now + self.bookmark_interval
                    if bookmarks:
                        await _send(
                            response,
                            "BOOKMARK",
                            {
                                "kind": "Application",
                                "apiVersion": API_VERSION,
                                "metadata": {"resourceVersion": str(cursor)},
                            },
                        )
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if self._event_rvs and self._event_rvs[-1] > cursor:
                    continue
                wait = min(remaining, next_mark - now)
                if not final_marked:
                    wait = min(wait, max(0.0, final_mark - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.wake.wait(), timeout=max(wait, 0.001))
            await response.write_eof()
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        finally:
            self._watches.discard(watch)


async def _send(response: web.StreamResponse, event_type: str, obj: dict[str, Any]) -> None:
    await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")


def _list_key(obj: dict[str, Any], namespace: str | None) -> str:
    """Where an object sorts in a list, and its continue token's ``start``: its etcd key
    below the list's prefix (``name`` in a namespace, ``namespace/name`` cluster-wide),
    compared as bytes as etcd does."""
    metadata = obj["metadata"]
    if namespace is not None:
        return str(metadata["name"])
    return f"{metadata.get('namespace') or 'default'}/{metadata['name']}"


def _continue_token(resource_version: int, last_key: str) -> str:
    """A continue token as the real API server encodes one (``storage.EncodeContinue``)."""
    token = {"v": "meta.k8s.io/v1", "rv": resource_version, "start": last_key + "\x00"}
    return base64.urlsafe_b64encode(
        json.dumps(token, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or "default"), str(metadata["name"]))
