"""An in-process Kubernetes API server for ArgoCD Applications, with faults on demand.

Speaks what the daemon uses of the real API, with its semantics:

- ``GET /apis/argoproj.io/v1alpha1[/namespaces/{ns}]/applications``: list
  (``limit``/``continue`` pages from one consistent snapshot) with
  ``metadata.resourceVersion``; with ``watch=true``, a chunked stream of JSON
  lines (``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``) replaying every event
  after the given ``resourceVersion``, then live ones, until
  ``timeoutSeconds``; a version older than the compaction horizon gets one
  ``ERROR`` event with a 410 Status, then the stream closes.
- ``GET .../namespaces/{ns}/applications/{name}``: get.
- Discovery of the group (``GET /apis``, ``/apis/argoproj.io``, ``/apis/argoproj.io/v1alpha1``),
  as the Application CRD of argo-cd serves it.
- Bearer token checked (401 otherwise); with :attr:`FakeKube.permissions`
  set, every request authorized against them as RBAC would (403 with the real
  server's message otherwise).
- ``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews``: answered
  from :attr:`FakeKube.permissions` (everything allowed when None), as a real
  server answers from the caller's RBAC; every authenticated user may ask.
- Every request is recorded as the authorization question it asks (verb,
  group, resource, namespace or cluster scope) in :attr:`FakeKube.calls` and in
  the process-wide :data:`LEDGER`, so the RBAC tests can check that the
  manifests grant every call the test suite made, and nothing more.
- ``POST /apis/authentication.k8s.io/v1/tokenreviews`` and
  ``POST /apis/authorization.k8s.io/v1/subjectaccessreviews``: answered from
  :attr:`FakeKube.reviewed_tokens` (token -> user name or :class:`KubeUser`, with its
  groups, extra and audiences), :attr:`FakeKube.access` (user -> namespaces where
  ``list applications`` is allowed; ``get`` is not, as the manifests' reader Role) and
  :attr:`FakeKube.group_access` (group -> namespaces). A TokenReview authenticates a
  token only for an audience it asks that the token was issued for (none asked: the
  API server's own, :data:`API_AUDIENCES`), and names it in ``status.audiences``.
  An access review is judged like the real authorizers judge it: only from the
  ``user``, ``groups`` and ``extra`` *in the review* (the API server looks
  nothing up: a review that leaves out the groups loses what they grant), and
  an ``extra`` holding OpenShift token scopes (:data:`SCOPES_EXTRA`) restricts
  the answer as OpenShift's scope authorizer does (a review that leaves out
  the extra gets the unscoped user's rights: the escalation it must not give).

Scripting API (thread-safe, call it from tests or ``doraforwarder demo``):
:meth:`FakeKube.apply` / :meth:`create` / :meth:`delete` (each bumps the
resourceVersion), :meth:`compact` (expire history), :meth:`drop_watches`,
:meth:`fail_next` (5xx, 429 + Retry-After, dropped connections; also on the
pages after a list's first), :meth:`hold_next` (a failure held until released),
:meth:`bookmark`, :meth:`write_kubeconfig`, and request counters.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import json
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from doraforwarder.ops.permissions import APPLICATIONS, APPLICATIONS_GROUP, Permission, granted
from doraforwarder.testing.http_fake import BackgroundServer, FakeServer

API_PREFIX = "/apis/argoproj.io/v1alpha1"
API_VERSION = "argoproj.io/v1alpha1"
SERVICE_ACCOUNT_USER = "system:serviceaccount:doraforwarder:doraforwarder"
"""Who the fake's bearer token authenticates as (in 403 messages)."""
TOKEN_REVIEW = Permission("create", "authentication.k8s.io", "tokenreviews", None)
ACCESS_REVIEW = Permission("create", "authorization.k8s.io", "subjectaccessreviews", None)
SELF_ACCESS_REVIEW = Permission("create", "authorization.k8s.io", "selfsubjectaccessreviews", None)

CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You "
    "can start a new list without the continue parameter, or use the continue token in "
    "this response to retrieve the remainder of the results. Continuing with the provided "
    "token results in an inconsistent list - objects that were created, modified, or "
    "deleted between the time the first chunk was returned and now may show up in the list.")
"""The real API server's 410 message for a continue token etcd compacted away."""
MAX_SNAPSHOTS = 64
"""List snapshots kept for continue tokens (oldest dropped first)."""

LEDGER: dict[Permission, str] = {}
"""Every authorization question the daemon (its client's ``User-Agent``
``doraforwarder/...``) asked any FakeKube of this process, with the first
request (method and path) that asked it: the daemon's API calls over the whole
test session, read by ``tests/test_rbac.py``. Tests that call the fake with
clients of their own are left out."""
DAEMON_AGENT = "doraforwarder/"


def _applications(verb: str, namespace: str | None) -> Permission:
    return Permission(verb, APPLICATIONS_GROUP, APPLICATIONS, namespace)


def forbidden_message(call: Permission, user: str = SERVICE_ACCOUNT_USER) -> str:
    """The message a real API server gives with its 403."""
    resource = f"{call.resource}.{call.group}" if call.group else call.resource
    where = (f'in the namespace "{call.namespace}"' if call.namespace is not None
             else "at the cluster scope")
    return (f'{resource} is forbidden: User "{user}" cannot {call.verb} resource '
            f'"{call.resource}" in API group "{call.group}" {where}')

API_AUDIENCES = ("https://kubernetes.default.svc",)
"""The API server's own audiences: a TokenReview without ``audiences`` asks for these."""

SCOPES_EXTRA = "scopes.authorization.openshift.io"
"""The ``extra`` key under which OpenShift names an OAuth token's scopes."""


@dataclass(frozen=True)
class KubeUser:
    """A user as a TokenReview returns it (``status.user``)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ("system:authenticated",)
    extra: dict[str, list[str]] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()
    """Audiences the token was issued for; empty: the API server's own
    (:data:`API_AUDIENCES`, what a ServiceAccount token has by default)."""

    def user_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        if self.extra:
            info["extra"] = {key: list(values) for key, values in self.extra.items()}
        return info


def scoped_namespaces(scopes: list[str], granted: set[str]) -> set[str]:
    """Of the namespaces ``granted``, those a token limited to ``scopes`` may still read.

    As OpenShift's scope authorizer: ``user:full`` keeps every grant,
    ``role:<role>:<namespace>`` (optionally ending ``:!``) keeps that namespace
    (``*``: all), and the other scopes (``user:info``, ``user:check-access``,
    ``user:list-projects``...) allow no Application at all.
    """
    kept: set[str] = set()
    for scope in scopes:
        if scope == "user:full":
            return set(granted)
        parts = str(scope).split(":")
        if parts[0] == "role" and len(parts) >= 3:
            kept |= set(granted) if parts[2] == "*" else {parts[2]} & granted
    return kept


@dataclass
class Fault:
    """What the next matching request gets instead of an answer."""

    status: int = 500
    """HTTP status, or 0 to drop the connection without answering."""
    retry_after: int | None = None
    kind: str = "any"
    """``list``, ``watch``, ``get`` or ``any``; ``continue``: a list request for a page
    after the first (it carries a continue token), i.e. a list failing midway."""
    hold: asyncio.Event | None = None
    """When set, the request waits (counted as ``held``) until :meth:`Hold.release`."""

    def matches(self, kind: str, request: web.Request) -> bool:
        if self.kind == "continue":
            return kind == "list" and bool(request.query.get("continue"))
        return self.kind in ("any", kind)


@dataclass(eq=False)
class _Watch:
    namespace: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    bookmark: bool = False


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Hold:
    """A request held by :meth:`FakeKube.hold_next`; :meth:`release` lets it fail."""

    def __init__(self, kube: FakeKube) -> None:
        self._kube = kube
        self.event = asyncio.Event()
        """Waited for on the server's loop, so only set there."""

    def release(self) -> None:
        async def release() -> None:
            self.event.set()

        self._kube.server.call(release())


class FakeKube(FakeServer):
    """The fake API server; start with ``with FakeKube() as kube:`` or :meth:`start`."""

    def __init__(
        self,
        *,
        token: str = "fake-kube-token",
        max_events: int = 100_000,
        first_resource_version: int = 1000,
    ) -> None:
        self.token = token
        self.max_events = max_events
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._events: list[tuple[int, str, dict[str, Any]]] = []
        self._event_rvs: list[int] = []
        self._rv = first_resource_version
        self._horizon = first_resource_version
        """Watches from a resourceVersion below this get 410."""
        self._faults: deque[Fault] = deque()
        self._watches: set[_Watch] = set()
        self._snapshots: dict[tuple[int, str | None], list[dict[str, Any]]] = {}
        """List snapshots by (resourceVersion, namespace): what continue tokens page
        through, kept until :meth:`compact` (a real server keeps them in its watch
        cache or reads etcd at that revision until etcd compacts it)."""
        self.requests: Counter[str] = Counter()
        """Requests by kind: ``list``, ``watch``, ``get``, ``unauthorized``, ``faulted``."""
        self.request_log: list[tuple[str, str]] = []
        self.calls: list[Permission] = []
        """Every request as the authorization question it asks, in order."""
        self._unready_watches = 0
        """Watch requests still to refuse with 429 after :meth:`restart`."""
        self.bookmark_interval = 60.0
        """Seconds between the BOOKMARKs of a watch that asked for them (the real
        watch cache sends one a minute)."""
        self.bookmark_before_timeout = 2.0
        """A BOOKMARK goes this long before ``timeoutSeconds`` ends the watch, as the
        real server sends one (none when the watch is shorter than this)."""
        self.permissions: set[Permission] | None = None
        """What the token's user may do (RBAC as :func:`granted` reads it); None: anything."""
        self.reviewed_tokens: dict[str, str | KubeUser] = {}
        """Bearer tokens a TokenReview authenticates, and the user each names (a bare
        name is a user in the one group ``system:authenticated``, without extra)."""
        self.access: dict[str, set[str]] = {}
        """User -> namespaces where a SubjectAccessReview allows reading
        applications.argoproj.io (with a verb of :attr:`review_verbs`)."""
        self.group_access: dict[str, set[str]] = {}
        """Group -> namespaces where a SubjectAccessReview naming that group allows it."""
        self.review_verbs: frozenset[str] = frozenset({"list", "watch"})
        """What :attr:`access` grants: list and watch, as the Role the manifests give a
        reader (no ``get``), so a review asking for ``get`` is refused."""
        app = web.Application()
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        app.router.add_post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews", self._access_review
        )
        app.router.add_post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self._self_access_review
        )
        app.router.add_get("/apis", self._discovery_groups)
        app.router.add_get("/apis/", self._discovery_groups)
        app.router.add_get("/apis/argoproj.io", self._discovery_group)
        app.router.add_get(API_PREFIX, self._discovery_resources)
        app.router.add_get(f"{API_PREFIX}/applications", self._collection)
        app.router.add_get(f"{API_PREFIX}/namespaces/{{namespace}}/applications", self._collection)
        app.router.add_get(
            f"{API_PREFIX}/namespaces/{{namespace}}/applications/{{name}}", self._get
        )
        self.server = BackgroundServer(app)

    # --- server lifecycle -------------------------------------------------------------
    def stop(self) -> None:
        """Stop listening: clients get connection refused (open watches are dropped).

        The socket closes first: a watcher reconnecting after its watch dropped
        must meet the outage, not slip in before it.
        """
        super().stop()
        self.drop_watches()

    def close(self) -> None:
        self.drop_watches()
        super().close()

    def restart(self, *, unready_watches: int = 1) -> None:
        """Restart as a real API server restarts (seen on apiextensions-apiserver v0.36.3).

        Open watches are cut; the watch cache is rebuilt from etcd at the current
        revision, so a watch from any older resourceVersion (one the client saw before
        later writes to other namespaces, say) gets the 410 ERROR event (``too old
        resource version``) and the client must list again;
        while the cache fills, the first ``unready_watches`` watch requests are
        answered 429 ``storage is (re)initializing`` with ``Retry-After: 1``
        (lists are served meanwhile: the real server reads them from etcd).
        Continue tokens stay valid (etcd still holds their revision).
        """
        self.stop()

        async def rebuild() -> None:
            self._events.clear()
            self._event_rvs.clear()
            self._horizon = self._rv
            self._unready_watches = unready_watches

        self.start()
        self.server.call(rebuild())

    def write_kubeconfig(self, path: Path, *, token: str | None = None) -> Path:
        """A kubeconfig pointing at this server (plain HTTP, bearer token)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "fake", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "fake", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

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

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        retry_after: int | None = None,
        kind: str = "any",
    ) -> None:
        """The next ``count`` matching requests fail (status 0 = connection dropped)."""
        for _ in range(count):
            self._faults.append(Fault(status=status, retry_after=retry_after, kind=kind))

    def hold_next(self, status: int = 500, *, kind: str = "any") -> Hold:
        """The next matching request waits, unanswered, until the returned
        :meth:`Hold.release`, then fails with ``status``: a test looks at the
        client while its request is in flight (a list stopped midway)."""
        hold = Hold(self)
        self._faults.append(Fault(status=status, kind=kind, hold=hold.event))
        return hold

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def reset_counts(self) -> None:
        self.requests.clear()
        self.request_log.clear()
        self.calls.clear()

    def allows(self, call: Permission) -> bool:
        """Whether :attr:`permissions` grant ``call`` (SelfSubjectAccessReviews: always)."""
        return call == SELF_ACCESS_REVIEW or self.permissions is None or granted(
            call, self.permissions)

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

    # --- HTTP -------------------------------------------------------------------------
    async def _admit(
        self, request: web.Request, kind: str, call: Permission
    ) -> web.StreamResponse | None:
        """Count the request; answer it here when it is unauthorized, forbidden or faulted."""
        self.requests[kind] += 1
        self.request_log.append((kind, request.path_qs))
        self.calls.append(call)
        if request.headers.get("User-Agent", "").startswith(DAEMON_AGENT):
            LEDGER.setdefault(call, f"{request.method} {request.path}")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.requests["unauthorized"] += 1
            return web.json_response(status_body(401, "Unauthorized", "Unauthorized"), status=401)
        if not self.allows(call):
            self.requests["forbidden"] += 1
            body = status_body(403, "Forbidden", forbidden_message(call))
            body["details"] = {"group": call.group, "kind": call.resource}
            return web.json_response(body, status=403)
        for fault in list(self._faults):
            if fault.matches(kind, request):
                self._faults.remove(fault)
                if fault.hold is not None:
                    self.requests["held"] += 1
                    await fault.hold.wait()
                self.requests["faulted"] += 1
                if fault.status == 0:
                    assert request.transport is not None
                    request.transport.close()
                    raise asyncio.CancelledError  # aiohttp stops handling a closed connection
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                reason = {429: "TooManyRequests", 410: "Expired"}.get(fault.status,
                                                                      "InternalError")
                return web.json_response(
                    status_body(fault.status, reason, "injected fault"),
                    status=fault.status,
                    headers=headers,
                )
        return None

    # Discovery: non-resource URLs every authenticated user may read (system:discovery).
    @staticmethod
    def _api_group() -> dict[str, Any]:
        version = {"groupVersion": API_VERSION, "version": API_VERSION.split("/")[1]}
        return {"kind": "APIGroup", "apiVersion": "v1", "name": "argoproj.io",
                "versions": [version], "preferredVersion": version}

    async def _discovery_groups(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(status_body(401, "Unauthorized", "Unauthorized"), status=401)
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": [self._api_group()]})

    async def _discovery_group(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(status_body(401, "Unauthorized", "Unauthorized"), status=401)
        return web.json_response(self._api_group())

    async def _discovery_resources(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(status_body(401, "Unauthorized", "Unauthorized"), status=401)
        return web.json_response({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION,
            "resources": [{
                "name": "applications", "singularName": "application", "namespaced": True,
                "kind": "Application", "shortNames": ["app", "apps"],
                "verbs": ["delete", "deletecollection", "get", "list", "patch", "create",
                          "update", "watch"],
            }]})

    async def _token_review(self, request: web.Request) -> web.StreamResponse:
        refused = await self._admit(request, "tokenreview", TOKEN_REVIEW)
        if refused is not None:
            return refused
        review = await request.json()
        spec = review.get("spec") or {}
        user = self.reviewed_tokens.get(str(spec.get("token", "")))
        if isinstance(user, str):
            user = KubeUser(user)
        # As the API server: the token must be valid for one of the audiences asked
        # (its own when none are), and the status names those it matched.
        asked = list(spec.get("audiences") or API_AUDIENCES)
        matched = [a for a in asked if a in (user.audiences or API_AUDIENCES)] if user else []
        review["status"] = (
            {"authenticated": True, "user": user.user_info(), "audiences": matched}
            if user is not None and matched
            else {"authenticated": False, "error": "invalid bearer token"}
        )
        return web.json_response(review, status=201)

    async def _access_review(self, request: web.Request) -> web.StreamResponse:
        refused = await self._admit(request, "subjectaccessreview", ACCESS_REVIEW)
        if refused is not None:
            return refused
        review = await request.json()
        spec = review.get("spec") or {}
        attributes = spec.get("resourceAttributes") or {}
        allowed = (
            attributes.get("verb") in self.review_verbs
            and attributes.get("group") == "argoproj.io"
            and attributes.get("resource") == "applications"
            and attributes.get("namespace") in self._granted(spec)
        )
        review["status"] = {"allowed": allowed}
        return web.json_response(review, status=201)

    def _granted(self, spec: dict[str, Any]) -> set[str]:
        """Namespaces a review's subject may read: its user's and its groups' grants (only
        the groups the review names), narrowed by the token scopes its extra names."""
        granted = set(self.access.get(str(spec.get("user")), set()))
        for group in spec.get("groups") or []:
            granted |= self.group_access.get(str(group), set())
        scopes = (spec.get("extra") or {}).get(SCOPES_EXTRA)
        if scopes is not None:
            granted &= scoped_namespaces(scopes, granted)
        return granted

    async def _self_access_review(self, request: web.Request) -> web.StreamResponse:
        refused = await self._admit(request, "selfsubjectaccessreview", SELF_ACCESS_REVIEW)
        if refused is not None:
            return refused
        review = await request.json()
        attributes = (review.get("spec") or {}).get("resourceAttributes")
        if not isinstance(attributes, dict):  # nonResourceAttributes: not modelled
            return web.json_response(
                status_body(400, "BadRequest", "resourceAttributes is required"), status=400)
        asked = Permission(str(attributes.get("verb") or ""), str(attributes.get("group") or ""),
                           str(attributes.get("resource") or ""),
                           str(attributes.get("namespace") or "") or None)
        allowed = self.allows(asked)
        review["status"] = {"allowed": allowed} if allowed else {"allowed": False, "reason": ""}
        return web.json_response(review, status=201)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        refused = await self._admit(
            request, "get", _applications("get", request.match_info["namespace"]))
        if refused is not None:
            return refused
        obj = self._objects.get((request.match_info["namespace"], request.match_info["name"]))
        if obj is None:
            return web.json_response(status_body(404, "NotFound", "not found"), status=404)
        return web.json_response(obj)

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info.get("namespace")
        watching = request.query.get("watch") in ("true", "1")
        verb = "watch" if watching else "list"
        refused = await self._admit(request, verb, _applications(verb, namespace))
        if refused is not None:
            return refused
        if watching:
            if self._unready_watches > 0:
                self._unready_watches -= 1
                body = status_body(429, "TooManyRequests", "storage is (re)initializing")
                body["details"] = {"retryAfterSeconds": 1}
                return web.json_response(body, status=429, headers={"Retry-After": "1"})
            return await self._watch(request, namespace)
        return self._list(request, namespace)

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
