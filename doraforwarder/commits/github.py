"""A small GitHub REST client: the three calls commit resolution needs, done politely.

Politeness is the whole point: commit search allows about 30 requests a
minute and the core API 5,000 an hour (60 without a token), so the client

- reads the rate-limit headers of every answer and waits for the reset
  instead of failing (primary limit), or for ``Retry-After`` (secondary limit);
- sends ``If-None-Match`` with the ETag of the last answer for the same URL
  (kept in Redis with its body), because a 304 does not count against the limit;
- retries network errors and 5xx with capped, jittered backoff.

Every wait ends at the caller's deadline (:class:`Call`) and at its stop
event: past the deadline a request gets one attempt and no waits
(:class:`DeadlineExceeded`); once ``stop`` is set it raises
:class:`asyncio.CancelledError` promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.exceptions import RedisError

from doraforwarder import bodies, http_backend
from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.commits.plan import Candidate, compare_pages
from doraforwarder.commits.ratelimit import (
    SECONDARY_DEFAULT_WAIT,
    RateLimitBoard,
    parse_rate_limit,
    resource_of,
    throttle_of,
)
from doraforwarder.context import AppContext, Readiness
from doraforwarder.keys import Keys
from doraforwarder.logging import get_logger
from doraforwarder.metrics import Metrics

API_VERSION = "2022-11-28"
PER_PAGE = 100
ETAG_TTL_SECONDS = 24 * 3600
"""How long an ETag and its body stay in Redis (compare pages can be large)."""
READINESS = "github"


class GitHubError(Exception):
    """GitHub answered with an error that waiting will not cure."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(f"GitHub {kind} request answered {status}: {detail}")
        self.status = status
        self.kind = kind


class NotFound(GitHubError):
    """Unknown repository or commit (404, or 422 "No commit found")."""


class DeadlineExceeded(Exception):
    """The deployment's ``github.resolve_timeout`` passed before an answer came."""


@dataclass(frozen=True)
class Call:
    """What bounds one resolution: a wall-clock deadline and the daemon's stop event."""

    deadline: float
    """Epoch seconds (wall clock, so a restart does not reset it)."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def seconds_left(self) -> float:
        return self.deadline - time.time()


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    message: str
    author_date: datetime | None
    url: str | None

    def to_json(self) -> str:
        return json.dumps({
            "sha": self.sha,
            "message": self.message,
            "author_date": self.author_date.isoformat() if self.author_date else None,
            "url": self.url,
        })

    @classmethod
    def from_json(cls, text: str) -> CommitInfo:
        data = json.loads(text)
        date = data.get("author_date")
        return cls(
            sha=str(data["sha"]),
            message=str(data.get("message") or ""),
            author_date=datetime.fromisoformat(date) if date else None,
            url=data.get("url"),
        )


@dataclass(frozen=True)
class CompareResult:
    status: str
    """``ahead``, ``behind``, ``identical`` or ``diverged``."""
    total: int
    commits: list[CommitInfo]
    """Oldest first; the newest ``keep`` of the range when it was longer."""
    truncated: bool = False


def _parse_date(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def commit_info(data: Any) -> CommitInfo:
    """A commit object of the commit or compare API; KeyError/TypeError if malformed."""
    commit = data["commit"]
    author = commit.get("author") or {}
    committer = commit.get("committer") or {}
    return CommitInfo(
        sha=str(data["sha"]).lower(),
        message=str(commit.get("message") or ""),
        author_date=_parse_date(author.get("date")) or _parse_date(committer.get("date")),
        url=data.get("html_url") if isinstance(data.get("html_url"), str) else None,
    )


def _slim_commit(item: Any) -> dict[str, Any]:
    commit = item.get("commit") or {}
    return {
        "sha": item.get("sha"),
        "html_url": item.get("html_url"),
        "commit": {
            "message": commit.get("message"),
            "author": {"date": (commit.get("author") or {}).get("date")},
            "committer": {"date": (commit.get("committer") or {}).get("date")},
        },
    }


def slim(kind: str, body: Any) -> dict[str, Any]:
    """Only the fields resolution reads, so Redis never holds patches or file lists.

    Commit and compare answers carry every changed file with its diff; kept
    whole for their ETags they could weigh megabytes each.
    """
    if not isinstance(body, dict):
        raise TypeError("not a JSON object")
    if kind == "commit":
        return _slim_commit(body)
    if kind == "compare":
        return {"status": body.get("status"), "total_commits": body.get("total_commits"),
                "ahead_by": body.get("ahead_by"),
                "commits": [_slim_commit(item) for item in body.get("commits") or []
                            if isinstance(item, dict)]}
    if kind == "search":
        items = []
        for item in body.get("items") or []:
            if isinstance(item, dict) and isinstance(item.get("repository"), dict):
                repository = item["repository"]
                items.append({"sha": item.get("sha"), "repository": {
                    "html_url": repository.get("html_url"), "fork": repository.get("fork")}})
        return {"total_count": body.get("total_count"), "items": items}
    return body


class GitHubClient:
    """GitHub REST calls with ETags, rate-limit waits and retries."""

    def __init__(
        self,
        *,
        api_url: str,
        token: SecretStr | None,
        redis: aioredis.Redis,
        keys: Keys,
        metrics: Metrics,
        readiness: Readiness | None = None,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        secondary_default_wait_s: float = SECONDARY_DEFAULT_WAIT,
        rate_limits: RateLimitBoard | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self._readiness = readiness
        self._owns_http = client is None
        self._http = client or http_backend.async_client(timeout=timeout_s)
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = max(backoff_cap_s, backoff_base_s)
        self._secondary_default_wait_s = secondary_default_wait_s
        self._board = rate_limits or RateLimitBoard.of(metrics)
        self._auth_failed = False
        self.log = get_logger("github")

    @classmethod
    def for_context(cls, context: AppContext, client: httpx.AsyncClient | None = None
                    ) -> GitHubClient:
        """The daemon's GitHub client as configured (the resolver and ``doctor`` use it)."""
        github = context.settings.github
        return cls(
            api_url=github.api_url, token=context.config.secrets.github_token,
            redis=context.redis, keys=context.keys, metrics=context.metrics,
            readiness=context.readiness, rate_limits=context.github_rate_limits, client=client,
            timeout_s=github.timeout_seconds,
            backoff_base_s=github.initial_backoff.total_seconds(),
            backoff_cap_s=github.max_backoff.total_seconds(),
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- the three calls -----------------------------------------------------------
    async def search_commit(self, sha: str, call: Call) -> list[Candidate]:
        """Every repository holding a commit whose SHA starts with ``sha``."""
        body = await self.get_json("search", "/search/commits",
                                   {"q": f"hash:{sha}", "per_page": str(PER_PAGE)}, call)
        candidates: list[Candidate] = []
        for item in body.get("items") or []:
            try:
                repository = item["repository"]
                candidates.append(Candidate(repo_url=str(repository["html_url"]),
                                            sha=str(item["sha"]).lower(),
                                            fork=bool(repository.get("fork", False))))
            except (KeyError, TypeError):
                self.log.warning("skipping malformed commit search item", sha=sha)
        return candidates

    async def commit(self, owner: str, repo: str, sha: str, call: Call) -> CommitInfo:
        path = f"/repos/{quote(owner)}/{quote(repo)}/commits/{quote(sha)}"
        body = await self.get_json("commit", path, {}, call)
        try:
            return commit_info(body)
        except (KeyError, TypeError, AttributeError):
            raise GitHubError(200, "commit", f"malformed commit {owner}/{repo}@{sha}") from None

    async def compare(
        self, owner: str, repo: str, base: str, head: str, keep: int, call: Call
    ) -> CompareResult:
        """``compare(base...head)``: the newest ``keep`` commits of the range, oldest first."""
        path = f"/repos/{quote(owner)}/{quote(repo)}/compare/{quote(base)}...{quote(head)}"
        first = await self.get_json("compare", path, {"page": "1", "per_page": str(PER_PAGE)},
                                    call)
        status = str(first.get("status") or "")
        try:
            total = int(first.get("total_commits") or first.get("ahead_by") or 0)
        except (TypeError, ValueError):
            raise GitHubError(200, "compare", f"malformed compare {owner}/{repo}") from None
        if status != "ahead":
            return CompareResult(status=status, total=total, commits=[])
        start, pages = compare_pages(total, keep, PER_PAGE)
        commits: list[CommitInfo] = []
        for page in pages:
            body = first if page == 1 else await self.get_json(
                "compare", path, {"page": str(page), "per_page": str(PER_PAGE)}, call)
            for offset, item in enumerate(body.get("commits") or []):
                if (page - 1) * PER_PAGE + offset < start:
                    continue
                try:
                    commits.append(commit_info(item))
                except (KeyError, TypeError, AttributeError):
                    self.log.warning("skipping malformed compare commit", repo=f"{owner}/{repo}")
        return CompareResult(status=status, total=total, commits=commits,
                             truncated=total > keep)

    async def rate_limit(self) -> httpx.Response:
        """One ``GET /rate_limit`` with the daemon's headers: no retry, no cache (``doctor``)."""
        return await bodies.fetch(self._http, "GET", self.api_url + "/rate_limit",
                                  limit=bodies.TOKEN_LIMIT, headers=self._headers(None))

    # --- transport ----------------------------------------------------------------------
    async def get_json(
        self, kind: str, path: str, params: dict[str, str], call: Call
    ) -> dict[str, Any]:
        """GET ``path`` as JSON: ETag-aware, waiting out rate limits, retrying failures."""
        url = self.api_url + path + (f"?{urlencode(params)}" if params else "")
        resource = resource_of(path)
        backoff = Backoff(self._backoff_base_s, self._backoff_cap_s)
        attempted = False
        while True:
            blocked = self._board.wait_needed(resource, time.time())
            if blocked > 0:
                await self._rate_limit_wait(blocked, call, resource=resource, kind=kind,
                                            limit="primary")
            if attempted and call.seconds_left() <= 0:
                raise DeadlineExceeded(f"{kind} {path}")
            attempted = True
            cached = await self._cached_etag(url)
            headers = self._headers(cached[0] if cached else None)
            try:
                response = await self._send(url, headers, call)
            except httpx.TransportError as exc:
                self._metrics.github_requests.labels(kind, "error").inc()
                self._metrics.mark_failure("github", f"unreachable: {type(exc).__name__}")
                delay = backoff.next_delay()
                await self._retry_wait(delay, call, "GitHub unreachable, retrying",
                                       kind=kind, error=type(exc).__name__)
                continue
            now = time.time()
            self._metrics.github_requests.labels(kind, str(response.status_code)).inc()
            self._board.observe(parse_rate_limit(response.headers, resource), now)
            if response.status_code == 304 and cached is not None:
                self._healthy()
                stored: dict[str, Any] = json.loads(cached[1])
                return stored
            if response.status_code == 200:
                try:
                    body = slim(kind, bodies.whole(response, f"answer to {path}",
                                                   bodies.DOCUMENT_LIMIT).json())
                except bodies.TooLarge as exc:
                    raise GitHubError(200, kind, str(exc)) from None
                except (ValueError, TypeError, AttributeError, RecursionError):
                    raise GitHubError(200, kind, f"answer to {path} is not a JSON object"
                                      ) from None
                self._healthy()
                await self._store_etag(url, response.headers.get("etag"), body)
                return body
            throttle = throttle_of(response.status_code, response.headers, response.text, now)
            if throttle is not None:
                seconds = throttle.seconds
                if seconds is None:
                    seconds = max(self._secondary_default_wait_s, backoff.next_delay())
                elif seconds <= 0:
                    seconds = backoff.next_delay()  # reset already past: clocks disagree
                self._board.block(resource, now + seconds)
                await self._rate_limit_wait(seconds, call, resource=resource, kind=kind,
                                            limit=throttle.kind, status=response.status_code)
                continue
            if response.status_code >= 500:
                self._metrics.mark_failure("github", f"HTTP {response.status_code}")
                delay = backoff.next_delay()
                await self._retry_wait(delay, call, "GitHub answered a server error, retrying",
                                       kind=kind, status=response.status_code)
                continue
            if response.status_code in (401, 403):
                # A revoked or rotating token, or a permission being fixed: the answer
                # can change, so retry (slowly) until the deadline rather than ship a
                # deployment without its commits for good.
                self._auth_rejected(kind, response.status_code)
                delay = backoff.next_delay()
                await self._retry_wait(delay, call, "GitHub refused the request, retrying",
                                       kind=kind, status=response.status_code)
                continue
            raise self._error(kind, response)

    def _headers(self, etag: str | None) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "doraforwarder"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        if etag:
            headers["If-None-Match"] = etag
        return headers

    async def _send(self, url: str, headers: dict[str, str], call: Call) -> httpx.Response:
        """The request, abandoned as soon as ``call.stop`` is set."""
        request = asyncio.ensure_future(bodies.fetch(
            self._http, "GET", url, limit=bodies.DOCUMENT_LIMIT, headers=headers))
        stopping = asyncio.ensure_future(call.stop.wait())
        try:
            await asyncio.wait({request, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (request, stopping):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        if not request.done() or request.cancelled():
            raise asyncio.CancelledError("stopping")
        return request.result()

    async def _rate_limit_wait(self, seconds: float, call: Call, *, resource: str,
                               **context: Any) -> None:
        """Wait for a rate limit to lift; visible in the log (once) and the wait gauge."""
        self._check_deadline(seconds, call, "rate limit")
        if not self._board.is_waiting(resource):
            self.log.warning("GitHub rate limit reached, waiting", resource=resource,
                             wait_seconds=round(seconds, 3), **context)
        token = self._board.start_wait(resource, seconds)
        try:
            stopped = await wait_or_stop(call.stop, seconds)
        finally:
            self._board.end_wait(token)
        if stopped:
            raise asyncio.CancelledError("stopping")

    async def _retry_wait(self, seconds: float, call: Call, event: str, **context: Any) -> None:
        self._check_deadline(seconds, call, "retry")
        self.log.warning(event, wait_seconds=round(seconds, 3), **context)
        if await wait_or_stop(call.stop, seconds):
            raise asyncio.CancelledError("stopping")

    @staticmethod
    def _check_deadline(seconds: float, call: Call, what: str) -> None:
        """Give up now rather than wait past the deadline (or wait at all once stopping)."""
        if call.stop.is_set():
            raise asyncio.CancelledError("stopping")
        left = call.seconds_left()
        if seconds >= left:
            raise DeadlineExceeded(
                f"{what}: {seconds:.3f}s to wait, {max(left, 0.0):.3f}s left before the deadline"
            )

    def _error(self, kind: str, response: httpx.Response) -> GitHubError:
        status = response.status_code
        try:
            detail = str(response.json().get("message") or "")
        except (ValueError, AttributeError, RecursionError):
            detail = bodies.note(response)[:200]
        if status == 404 or (status == 422 and "no commit found" in detail.lower()):
            return NotFound(status, kind, detail or "not found")
        return GitHubError(status, kind, detail or "error")

    def _auth_rejected(self, kind: str, status: int) -> None:
        """Report a refused token once per episode: log line and ``/readyz`` reason."""
        if self._auth_failed:
            return
        self._auth_failed = True
        reason = (
            "GitHub rejected GITHUB_TOKEN (401)" if status == 401
            else "GitHub refused access (403): check the token's permissions"
        )
        if self._readiness is not None:
            self._readiness.not_ready(READINESS, f"{reason}: commits wait until it is fixed")
        self.log.error("GitHub refused the request; deployments wait for commits until "
                       "github.resolve_timeout", status=status, kind=kind)

    def _healthy(self) -> None:
        self._metrics.mark_success("github")
        if self._auth_failed:
            self._auth_failed = False
            if self._readiness is not None:
                self._readiness.ready(READINESS)

    # --- ETag cache ------------------------------------------------------------------------
    async def _cached_etag(self, url: str) -> tuple[str, str] | None:
        try:
            stored = await self._redis.hgetall(self._keys.github_etag(url))
        except RedisError:
            self._metrics.redis_errors.labels("github_etag").inc()
            return None
        if not stored or "etag" not in stored or "body" not in stored:
            return None
        return str(stored["etag"]), str(stored["body"])

    async def _store_etag(self, url: str, etag: str | None, body: dict[str, Any]) -> None:
        if not etag:
            return
        key = self._keys.github_etag(url)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"etag": etag, "body": json.dumps(body)})
                pipe.expire(key, ETAG_TTL_SECONDS)
                await pipe.execute()
        except RedisError:
            self._metrics.redis_errors.labels("github_etag").inc()
