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
import base64
import hashlib
import hmac
import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

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
        token = bearer_token(header)
        digest = hashlib.sha256(token.encode()).digest()
        known, _ = self._admitted.get(digest)
        if known:
            return None
        email = await self._email(token)
        domain = email.rpartition("@")[2].lower() if "@" in email else ""
        if domain not in self._domains:
            allowed = ", ".join(f"@{d}" for d in self._domains)
            raise Refused(403, f"access denied: only {allowed} e-mail addresses are allowed")
        self._admitted.put(digest, True)
        return None

    async def _email(self, token: str) -> str:
        self.lookups += 1
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                answer = await client.get(self._url, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("the OpenShift user API did not answer", error=type(exc).__name__)
            raise Refused(503, "the OpenShift user API cannot check the token now") from None
        if answer.status_code in (401, 403):
            raise Refused(401, "the bearer token is not accepted")
        if answer.status_code != 200:
            log.warning("the OpenShift user API failed", status=answer.status_code)
            raise Refused(503, "the OpenShift user API cannot check the token now")
        try:
            user = answer.json()
        except ValueError:
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

    return KubernetesAccess(KubernetesReviews(lambda: build_api_client(settings.argocd)))
