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

The parts, one module each: the Applications and their list/watch semantics
(:mod:`.fake_kube_store`: resourceVersions, continue tokens, BOOKMARKs, 410s),
authentication and authorization (:mod:`.fake_kube_auth`: RBAC, reviews, token
scopes, the ledger); here, the aiohttp app that routes requests to them, admits
each (401/403/injected faults), answers discovery, and restarts.

Scripting API (thread-safe, call it from tests or ``doraforwarder demo``):
:meth:`FakeKube.apply` / :meth:`create` / :meth:`delete` (each bumps the
resourceVersion), :meth:`compact` (expire history), :meth:`drop_watches`,
:meth:`fail_next` (5xx, 429 + Retry-After, dropped connections; also on the
pages after a list's first), :meth:`hold_next` (a failure held until released),
:meth:`bookmark`, :meth:`write_kubeconfig`, and request counters.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from doraforwarder.ops.permissions import Permission
from doraforwarder.testing import fake_kube_auth as auth
from doraforwarder.testing.fake_kube_auth import (
    ACCESS_REVIEW,
    SELF_ACCESS_REVIEW,
    TOKEN_REVIEW,
    KubeUser,
    applications_call,
    forbidden_message,
)
from doraforwarder.testing.fake_kube_store import API_VERSION, KubeStore, status_body
from doraforwarder.testing.http_fake import BackgroundServer

API_PREFIX = "/apis/argoproj.io/v1alpha1"


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


class FakeKube(KubeStore):
    """The fake API server; start with ``with FakeKube() as kube:`` or :meth:`start`."""

    def __init__(
        self,
        *,
        token: str = "fake-kube-token",
        max_events: int = 100_000,
        first_resource_version: int = 1000,
    ) -> None:
        super().__init__(max_events=max_events, first_resource_version=first_resource_version)
        self.token = token
        self._faults: deque[Fault] = deque()
        self.requests: Counter[str] = Counter()
        """Requests by kind: ``list``, ``watch``, ``get``, ``unauthorized``, ``faulted``."""
        self.request_log: list[tuple[str, str]] = []
        self.calls: list[Permission] = []
        """Every request as the authorization question it asks, in order."""
        self._unready_watches = 0
        """Watch requests still to refuse with 429 after :meth:`restart`."""
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

    def reset_counts(self) -> None:
        self.requests.clear()
        self.request_log.clear()
        self.calls.clear()

    def allows(self, call: Permission) -> bool:
        """Whether :attr:`permissions` grant ``call`` (SelfSubjectAccessReviews: always)."""
        return auth.allows(self.permissions, call)

    # --- HTTP -------------------------------------------------------------------------
    async def _admit(
        self, request: web.Request, kind: str, call: Permission
    ) -> web.StreamResponse | None:
        """Count the request; answer it here when it is unauthorized, forbidden or faulted."""
        self.requests[kind] += 1
        self.request_log.append((kind, request.path_qs))
        self.calls.append(call)
        auth.record_call(call, request.headers.get("User-Agent", ""),
                         f"{request.method} {request.path}")
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
        review["status"] = auth.token_review_status(review.get("spec") or {},
                                                    self.reviewed_tokens)
        return web.json_response(review, status=201)

    async def _access_review(self, request: web.Request) -> web.StreamResponse:
        refused = await self._admit(request, "subjectaccessreview", ACCESS_REVIEW)
        if refused is not None:
            return refused
        review = await request.json()
        allowed = auth.access_review_allowed(review.get("spec") or {}, self.review_verbs,
                                             self.access, self.group_access)
        review["status"] = {"allowed": allowed}
        return web.json_response(review, status=201)

    async def _self_access_review(self, request: web.Request) -> web.StreamResponse:
        refused = await self._admit(request, "selfsubjectaccessreview", SELF_ACCESS_REVIEW)
        if refused is not None:
            return refused
        review = await request.json()
        attributes = (review.get("spec") or {}).get("resourceAttributes")
        if not isinstance(attributes, dict):  # nonResourceAttributes: not modelled
            return web.json_response(
                status_body(400, "BadRequest", "resourceAttributes is required"), status=400)
        review["status"] = auth.self_review_status(
            self.allows(auth.self_review_call(attributes)))
        return web.json_response(review, status=201)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        refused = await self._admit(
            request, "get", applications_call("get", request.match_info["namespace"]))
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
        refused = await self._admit(request, verb, applications_call(verb, namespace))
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
