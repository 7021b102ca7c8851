"""Who may read the application inventory: no one checked, static tokens, or Kubernetes.

``server.api_auth`` picks the mode:

- ``none``: anyone who reaches the port. The default only when the server
  listens on loopback; on any other address it must be set explicitly, and
  a warning is logged at start.
- ``token``: a bearer token among ``API_TOKENS`` (comma-separated) or the
  lines of the file named by ``API_TOKENS_FILE``, compared in constant time.
- ``openshift``: as the reference, the bearer token is shown to the OpenShift user
  API (``server.openshift.api_url``), and only users with an e-mail address of
  ``server.openshift.email_domains`` (default ``redhat.com``) are admitted.
- ``kubernetes``: the bearer token is checked with a TokenReview for the
  audiences of ``server.kubernetes.audiences`` (default ``doraforwarder``: a
  token that reads the inventory is no key to the API server), and the user
  it names with a SubjectAccessReview for ``list`` (the inventory is a list)
  on ``applications.argoproj.io`` in each namespace of the inventory; the
  answer holds only the namespaces allowed. Each review waits at most
  ``server.kubernetes.timeout``. Results are cached briefly (by a digest of
  the token, never the token itself), so a polling agent costs the API
  server a couple of requests a minute; failed TokenReviews are limited to
  ``unknown_tokens_per_minute``, past which an unknown token gets 429
  without a review (random tokens cannot flood the API server).

Refusals are 401 (no token, a malformed header, a token not accepted), 403
(a known user allowed nowhere), 429 (too many unknown tokens) or 503 (the
reviewer did not answer); their bodies never contain the token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from doraforwarder import bodies, http_backend
from doraforwarder.config import Settings
from doraforwarder.logging import get_logger

log = get_logger("api")

TOKENS_ENV = "API_TOKENS"
TOKENS_FILE_ENV = "API_TOKENS_FILE"
_BEARER = re.compile(r"Bearer ([A-Za-z0-9\-._~+/]+=*)")


class Refused(Exception):
    """A request that may not read the inventory; ``status`` is 401, 403, 429 or 503."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        """Seconds to wait (429), sent as ``Retry-After``."""


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, else :class:`Refused` (401)."""
    if not header:
        raise Refused(401, "a bearer token is required")
    match = _BEARER.fullmatch(header.strip())
    if match is None:
        raise Refused(401, "the Authorization header is not a bearer token")
    return match.group(1)


class Authorizer(Protocol):
    mode: str

    async def allowed_namespaces(
        self, header: str | None, namespaces: Iterable[str]
    ) -> frozenset[str] | None:
        """The namespaces the caller may read (None: all), or :class:`Refused`."""
        ...


class OpenAccess:
    mode = "none"

    async def allowed_namespaces(
        self, header: str | None, namespaces: Iterable[str]
    ) -> frozenset[str] | None:
        return None


class StaticTokens:
    """Bearer tokens from the environment, compared with :func:`hmac.compare_digest`."""

    mode = "token"

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [token.encode() for token in tokens if token]

    def __len__(self) -> int:
        return len(self._tokens)

    async def allowed_namespaces(
        self, header: str | None, namespaces: Iterable[str]
    ) -> frozenset[str] | None:
        offered = bearer_token(header).encode()
        matched = False
        for token in self._tokens:  # every token compared: the time says nothing of which
            matched |= hmac.compare_digest(offered, token)
        if not matched:
            raise Refused(401, "the bearer token is not accepted")
        return None


def tokens_from_environment(environ: dict[str, str] | None = None) -> list[str]:
    """``API_TOKENS`` (comma-separated) plus ``API_TOKENS_FILE`` (one per line or comma)."""
    env = os.environ if environ is None else environ
    tokens = [part.strip() for part in env.get(TOKENS_ENV, "").split(",")]
    path = env.get(TOKENS_FILE_ENV, "")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{TOKENS_FILE_ENV}: cannot read {path} ({exc.strerror})") from None
        for line in text.splitlines():
            if not line.strip().startswith("#"):
                tokens.extend(part.strip() for part in line.split(","))
    return [token for token in tokens if token]


@dataclass(frozen=True, slots=True)
class _User:
    username: str
    uid: str
    groups: tuple[str, ...]
    extra: dict[str, list[str]]


class _Reviews(Protocol):
    def token_review(self, token: str) -> _User | None: ...

    def may_list_applications(self, user: _User, namespace: str) -> bool: ...


API_SERVER_AUDIENCES: tuple[str, ...] = ()
"""``audiences`` for a TokenReview that accepts what the API server itself accepts."""


class KubernetesReviews:
    """TokenReview and SubjectAccessReview through the official client (blocking calls).

    ``audiences`` go into every TokenReview; a review that authenticates the
    token without naming one of them back (``status.audiences``) is taken as a
    refusal, as the API documents for audience-aware clients. Each call waits
    at most ``timeout_s`` (the client's ``_request_timeout``).
    """

    def __init__(self, client_factory: Callable[[], Any], *,
                 audiences: Iterable[str] = ("doraforwarder",),
                 timeout_s: float = 10.0) -> None:
        self._factory = client_factory
        self._client: Any = None
        self.audiences = tuple(audiences)
        self.timeout_s = timeout_s

    def _api_client(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def token_review(self, token: str) -> _User | None:
        from kubernetes.client import AuthenticationV1Api, V1TokenReview, V1TokenReviewSpec

        review = AuthenticationV1Api(self._api_client()).create_token_review(
            V1TokenReview(spec=V1TokenReviewSpec(token=token,
                                                 audiences=list(self.audiences) or None)),
            _request_timeout=self.timeout_s,
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        if self.audiences and not set(status.audiences or ()) & set(self.audiences):
            return None  # a reviewer blind to audiences: the token may be for anyone
        user = status.user
        return _User(
            username=user.username or "",
            uid=user.uid or "",
            groups=tuple(user.groups or ()),
            extra=dict(user.extra or {}),
        )

    def may_list_applications(self, user: _User, namespace: str) -> bool:
        from kubernetes.client import (
            AuthorizationV1Api,
            V1ResourceAttributes,
            V1SubjectAccessReview,
            V1SubjectAccessReviewSpec,
        )

        review = AuthorizationV1Api(self._api_client()).create_subject_access_review(
            V1SubjectAccessReview(
                spec=V1SubjectAccessReviewSpec(
                    user=user.username,
                    uid=user.uid or None,
                    groups=list(user.groups) or None,
                    extra=user.extra or None,
                    resource_attributes=V1ResourceAttributes(
                        verb="list", group="argoproj.io", resource="applications",
                        namespace=namespace,
                    ),
                )
            ),
            _request_timeout=self.timeout_s,
        )
        return bool(review.status is not None and review.status.allowed)


class _TTLCache:
    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> tuple[bool, Any]:
        item = self._items.get(key)
        if item is None or item[0] <= self.clock():
            self._items.pop(key, None)
            return False, None
        return True, item[1]

    def put(self, key: Any, value: Any) -> None:
        self._items[key] = (self.clock() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class _Bucket:
    """A token bucket: ``per_minute`` takes a minute, bursts of as many."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.capacity = float(max(1, per_minute))
        self.rate = self.capacity / 60.0
        self.clock = clock
        self._level = self.capacity
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now

    def empty(self) -> bool:
        self._refill()
        return self._level < 1.0

    def take(self) -> None:
        self._refill()
        self._level = max(0.0, self._level - 1.0)

    def seconds_to_one(self) -> int:
        self._refill()
        return max(1, math.ceil((1.0 - self._level) / self.rate))


class KubernetesAccess:
    """TokenReview + SubjectAccessReview per namespace, cached for ``ttl`` seconds.

    Failed TokenReviews draw on a bucket of ``unknown_per_minute``; once it
    is empty, a token the cache does not know is refused (429) without a
    review until the bucket refills, so a caller trying random tokens costs
    the API server at most that many reviews a minute. Known tokens (cached)
    are answered as before.
    """

    mode = "kubernetes"

    def __init__(
        self,
        reviews: _Reviews,
        *,
        ttl: float = 30.0,
        size: int = 1024,
        unknown_per_minute: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviews = reviews
        self._users = _TTLCache(ttl, size, clock)
        self._decisions = _TTLCache(ttl, size * 8, clock)
        self._unknown = _Bucket(unknown_per_minute, clock)

    async def allowed_namespaces(
        self, header: str | None, namespaces: Iterable[str]
    ) -> frozenset[str] | None:
        token = bearer_token(header)
        digest = hashlib.sha256(token.encode()).digest()
        known, user = self._users.get(digest)
        if not known:
            if self._unknown.empty():
                log.warning("too many unknown tokens: reviews paused")
                raise Refused(429, "too many unknown tokens; try again later",
                              retry_after=self._unknown.seconds_to_one())
            user = await self._call(self._reviews.token_review, token)
            self._users.put(digest, user)
            if user is None:
                self._unknown.take()
        if user is None:
            raise Refused(401, "the bearer token is not accepted")
        allowed = set()
        for namespace in sorted(set(namespaces)):
            known, may = self._decisions.get((digest, namespace))
            if not known:
                may = await self._call(self._reviews.may_list_applications, user, namespace)
                self._decisions.put((digest, namespace), may)
            if may:
                allowed.add(namespace)
        if not allowed:
            raise Refused(403, "not allowed to list applications.argoproj.io in any namespace")
        return frozenset(allowed)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        # The client's _request_timeout bounds each socket read; this bounds the whole call
        # (a reviewer trickling bytes), leaving the blocking thread to finish on its own.
        timeout_s = getattr(self._reviews, "timeout_s", None)
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args),
                                          None if timeout_s is None else timeout_s * 2)
        except Exception as exc:  # the API server's answer decides nothing: try again later
            log.warning("access review failed", error=type(exc).__name__)
            raise Refused(503, "the Kubernetes API cannot review the token now") from None


def _jwt_email(token: str) -> str | None:
    """The ``email`` (else ``preferred_username``) claim of a JWT, unverified.

    Read only after the user API accepted the token, as the reference does when the
    user object's name is not an e-mail address (an SSO token names its user there).
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    for claim in ("email", "preferred_username"):
        value = claims.get(claim)
        if isinstance(value, str) and value:
            return value
    return None


class OpenShiftUsers:
    """Admit a bearer token whose OpenShift user has an e-mail address of an allowed domain.

    ``GET {api_url}/apis/user.openshift.io/v1/users/~`` with the caller's token names its
    user: 401/403 there is a 401 here, a user without an allowed address a 403, an API that
    does not answer in time a 503. The address is the user's name when it holds an ``@``
    (OCM names users by address), else the token's ``email`` claim. Admitted tokens are
    remembered for ``cache_ttl`` by their digest (never the token itself); refusals are not,
    so a user fixed upstream is admitted at once.
    """

    mode = "openshift"

    def __init__(
        self,
        user_url: str,
        email_domains: Iterable[str],
        *,
        timeout: float = 10.0,
        ttl: float = 60.0,
        size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = user_url
        self._domains = tuple(domain.lower() for domain in email_domains)
        self._timeout = timeout
        self._admitted = _TTLCache(ttl, size, clock)
        self.lookups = 0
        """Requests sent to the user API (cache misses)."""

    async def allowed_namespaces(
        self, header: str | None, namespaces: Iterable[str]
    ) -> frozenset[str] | None:
        # Refusals carry the reference's own sentences, so its clients read ours.
        if not header:
            raise Refused(401, "Authorization header is required")
        try:
            token = bearer_token(header)
        except Refused:
            raise Refused(401, "Invalid Authorization header format. Expected: Bearer <token>"
                          ) from None
        digest = hashlib.sha256(token.encode()).digest()
        known, _ = self._admitted.get(digest)
        if known:
            return None
        email = await self._email(token)
        domain = email.rpartition("@")[2].lower() if "@" in email else ""
        if domain not in self._domains:
            allowed = " or ".join(f"@{d}" for d in self._domains)
            raise Refused(403, f"Access denied. Only {allowed} email addresses are allowed")
        self._admitted.put(digest, True)
        return None

    async def _email(self, token: str) -> str:
        self.lookups += 1
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            async with http_backend.async_client(timeout=self._timeout) as client:
                answer = await bodies.fetch(client, "GET", self._url, limit=bodies.TOKEN_LIMIT,
                                            headers=headers)
        except httpx.HTTPError as exc:
            log.warning("the OpenShift user API did not answer", error=type(exc).__name__)
            raise Refused(503, "the OpenShift user API cannot check the token now") from None
        if answer.status_code in (401, 403):
            raise Refused(401, "Invalid or expired token")
        if answer.status_code != 200:
            log.warning("the OpenShift user API failed", status=answer.status_code)
            raise Refused(503, "the OpenShift user API cannot check the token now")
        try:
            user = bodies.whole(answer, "the OpenShift user API's answer",
                                bodies.TOKEN_LIMIT).json()
        except bodies.TooLarge as exc:
            log.warning("the OpenShift user API failed", error=str(exc))
            raise Refused(503, "the OpenShift user API cannot check the token now") from None
        except (ValueError, RecursionError):
            user = None
        metadata = user.get("metadata") if isinstance(user, dict) else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(name, str) and "@" in name:
            return name
        return _jwt_email(token) or ""


def build_authorizer(settings: Settings) -> Authorizer:
    """The configured mode, with a warning when the inventory is open or unusable."""
    server = settings.server
    mode = server.effective_api_auth
    if mode == "none":
        if not server.listens_on_loopback:
            log.warning(
                "the application inventory is served without authentication",
                host=server.host,
                api_auth="none",
            )
        return OpenAccess()
    if mode == "token":
        try:
            tokens = StaticTokens(tokens_from_environment())
        except ValueError as exc:
            log.error("API tokens unusable, the inventory refuses every request", error=str(exc))
            tokens = StaticTokens(())
        if not len(tokens):
            log.warning(
                "no API token configured: the application inventory refuses every request",
                api_auth="token",
                set=f"{TOKENS_ENV} or {TOKENS_FILE_ENV}",
            )
        return tokens
    if mode == "openshift":
        openshift = server.openshift
        return OpenShiftUsers(openshift.user_url, openshift.email_domains,
                              timeout=openshift.timeout.total_seconds(),
                              ttl=openshift.cache_ttl.total_seconds())
    from doraforwarder.argocd.kube import build_api_client

    kube = server.kubernetes
    return KubernetesAccess(
        KubernetesReviews(lambda: build_api_client(settings.argocd), audiences=kube.audiences,
                          timeout_s=kube.timeout.total_seconds()),
        ttl=kube.cache_ttl.total_seconds(), unknown_per_minute=kube.unknown_tokens_per_minute)
