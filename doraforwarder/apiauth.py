"""Who may read the application inventory: no one checked, static tokens, or Kubernetes.

``server.api_auth`` picks the mode:

- ``none``: anyone who reaches the port. The default only when the server
  listens on loopback; on any other address it must be set explicitly, and
  a warning is logged at start.
- ``token``: a bearer token among ``API_TOKENS`` (comma-separated) or the
  lines of the file named by ``API_TOKENS_FILE``, compared in constant time.
- ``kubernetes``: the bearer token is checked with a TokenReview, and the
  user it names with a SubjectAccessReview for ``get`` on
  ``applications.argoproj.io`` in each namespace of the inventory; the
  answer holds only the namespaces allowed. Results are cached briefly (by a
  digest of the token, never the token itself), so a polling agent costs the
  API server a couple of requests a minute.

Refusals are 401 (no token, a malformed header, a token not accepted) or 403
(a known user allowed nowhere); their bodies never contain the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from doraforwarder.config import Settings
from doraforwarder.logging import get_logger

log = get_logger("api")

TOKENS_ENV = "API_TOKENS"
TOKENS_FILE_ENV = "API_TOKENS_FILE"
_BEARER = re.compile(r"Bearer ([A-Za-z0-9\-._~+/]+=*)")


class Refused(Exception):
    """A request that may not read the inventory; ``status`` is 401, 403 or 503."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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

    def may_get_applications(self, user: _User, namespace: str) -> bool: ...


class KubernetesReviews:
    """TokenReview and SubjectAccessReview through the official client (blocking calls)."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self._client: Any = None

    def _api_client(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def token_review(self, token: str) -> _User | None:
        from kubernetes.client import AuthenticationV1Api, V1TokenReview, V1TokenReviewSpec

        review = AuthenticationV1Api(self._api_client()).create_token_review(
            V1TokenReview(spec=V1TokenReviewSpec(token=token))
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        return _User(
            username=user.username or "",
            uid=user.uid or "",
            groups=tuple(user.groups or ()),
            extra=dict(user.extra or {}),
        )

    def may_get_applications(self, user: _User, namespace: str) -> bool:
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
                        verb="get", group="argoproj.io", resource="applications",
                        namespace=namespace,
                    ),
                )
            )
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


class KubernetesAccess:
    """TokenReview + SubjectAccessReview per namespace, cached for ``ttl`` seconds."""

    mode = "kubernetes"

    def __init__(
        self,
        reviews: _Reviews,
        *,
        ttl: float = 30.0,
        size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviews = reviews
        self._users = _TTLCache(ttl, size, clock)
        self._decisions = _TTLCache(ttl, size * 8, clock)

    async def allowed_namespaces(
        self, header: str | None, namespaces: Iterable[str]
    ) -> frozenset[str] | None:
        token = bearer_token(header)
        digest = hashlib.sha256(token.encode()).digest()
        known, user = self._users.get(digest)
        if not known:
            user = await self._call(self._reviews.token_review, token)
            self._users.put(digest, user)
        if user is None:
            raise Refused(401, "the bearer token is not accepted")
        allowed = set()
        for namespace in sorted(set(namespaces)):
            known, may = self._decisions.get((digest, namespace))
            if not known:
                may = await self._call(self._reviews.may_get_applications, user, namespace)
                self._decisions.put((digest, namespace), may)
            if may:
                allowed.add(namespace)
        if not allowed:
            raise Refused(403, "not allowed to get applications.argoproj.io in any namespace")
        return frozenset(allowed)

    @staticmethod
    async def _call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:  # the API server's answer decides nothing: try again later
            log.warning("access review failed", error=type(exc).__name__)
            raise Refused(503, "the Kubernetes API cannot review the token now") from None


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
    from doraforwarder.argocd.kube import build_api_client

    return KubernetesAccess(KubernetesReviews(lambda: build_api_client(settings.argocd)))
