"""An in-process GitHub REST API: commit search, commits, compare, with its contracts.

Serves the three endpoints commit resolution uses, the way api.github.com
answers them (``shared/reference/webrca-github-apis.md``):

- ``GET /search/commits?q=hash:<sha>``: every repository (forks included) with
  a commit whose SHA starts with ``<sha>``;
- ``GET /repos/{owner}/{repo}/commits/{sha}``: 404 for an unknown repository
  or commit;
- ``GET /repos/{owner}/{repo}/compare/{base}...{head}``: ``ahead``, ``behind``,
  ``identical`` or ``diverged`` from the real commit graph; commits oldest
  first, at most 250 without pagination, ``page``/``per_page`` (max 100)
  otherwise, with a ``Link`` header.

Every answer carries ``X-RateLimit-Limit/Remaining/Reset/Resource`` per
resource (``core``, ``search``) and an ``ETag``; ``If-None-Match`` with the
current ETag answers 304 without using the limit. Faults on demand: 5xx,
dropped connections, secondary limits (403/429 with ``Retry-After``),
exhausted primary limits (with a reset a fraction of a second away, for fast
tests), and a required token (401 without it).

Scripting it::

    with FakeGitHub() as github:
        shas = github.add_repo("org/svc", commits=5)        # linear history
        side = github.add_commits("org/svc", 2, parent=shas[2])   # a branch
        github.add_repo("someone/svc", fork_of="org/svc")
        github.fail("compare", status=502, times=2)
        ...  # point github.api_url at github.url
        assert github.count("search") == 1
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from doraforwarder.testing.http_fake import BackgroundServer, FakeServer

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)
COMPARE_UNPAGINATED_MAX = 250
MAX_PER_PAGE = 100
WINDOWS = {"core": 3600.0, "search": 60.0}


@dataclass
class FakeCommit:
    sha: str
    message: str
    author_date: datetime | None
    committer_date: datetime
    parents: list[str]
    index: int
    """Creation order within its repository: compare lists oldest first by it."""


@dataclass
class FakePullRequest:
    """A merged (or open) pull request, as DevLake's GitHub plugin collects it."""

    repo: str
    number: int
    title: str
    commits: list[str]
    merge_commit_sha: str | None
    created_at: datetime
    merged_at: datetime | None
    first_commit_at: datetime | None
    """Author date of the PR's earliest commit (coding time starts here)."""
    first_review_at: datetime | None = None
    """First review or comment by someone other than the author."""


@dataclass
class FakeRepo:
    full_name: str
    fork: bool = False
    commits: dict[str, FakeCommit] = field(default_factory=dict)
    head: str | None = None
    pull_requests: dict[int, FakePullRequest] = field(default_factory=dict)


@dataclass
class Fault:
    kind: str
    times: int
    status: int | None = None
    retry_after: float | None = None
    drop: bool = False
    message: str = "Server Error"


@dataclass
class Limit:
    limit: int
    remaining: int
    reset: float


@dataclass(frozen=True)
class RecordedRequest:
    kind: str
    """``search``, ``commit``, ``compare`` or ``other``."""
    path: str
    query: str
    status: int
    conditional: bool
    """The request carried If-None-Match."""
    authorized: bool


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kind_of(path: str) -> str:
    if path.startswith("/search/commits"):
        return "search"
    if "/compare/" in path:
        return "compare"
    if "/commits/" in path:
        return "commit"
    return "other"


class FakeGitHub(FakeServer):
    """A scriptable fake of api.github.com on a loopback port."""

    def __init__(
        self,
        *,
        web_url: str = "https://github.com",
        token: str | None = None,
        core_limit: int = 5000,
        search_limit: int = 30,
        path_prefix: str = "",
    ) -> None:
        """``path_prefix="/api/v3"`` and a ``web_url`` of your own make a GitHub Enterprise."""
        self.web_url = web_url.rstrip("/")
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        now = time.time()
        self.limits = {
            "core": Limit(core_limit, core_limit, now + WINDOWS["core"]),
            "search": Limit(search_limit, search_limit, now + WINDOWS["search"]),
        }
        self._lock = threading.Lock()
        app = web.Application()
        self.path_prefix = path_prefix.rstrip("/")
        prefix = self.path_prefix
        app.router.add_get(f"{prefix}/rate_limit", self._rate_limit)
        app.router.add_get(f"{prefix}/search/commits", self._search)
        app.router.add_get(f"{prefix}/repos/{{owner}}/{{repo}}/commits/{{ref}}", self._commit)
        app.router.add_get(f"{prefix}/repos/{{owner}}/{{repo}}/compare/{{basehead}}",
                           self._compare)
        self.server = BackgroundServer(app)

    # --- lifecycle --------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The API base URL (what ``github.api_url`` should be)."""
        return self.server.url + self.path_prefix

    # --- repositories and histories -----------------------------------------------------
    def add_repo(
        self,
        full_name: str,
        commits: int | Sequence[str] = 0,
        *,
        fork_of: str | None = None,
        start: datetime = DEFAULT_START,
        step: timedelta = timedelta(hours=1),
    ) -> list[str]:
        """Create ``owner/name`` with a linear history; returns its SHAs oldest first.

        ``commits`` is a count or the list of messages. ``fork_of`` copies that
        repository's commits into a fork (same SHAs, ``fork: true`` in search).
        """
        with self._lock:
            repo = FakeRepo(full_name, fork=fork_of is not None)
            if fork_of is not None:
                source = self._repo(fork_of)
                repo.commits = dict(source.commits)
                repo.head = source.head
            self.repos[full_name.lower()] = repo
        copied = [c.sha for c in sorted(repo.commits.values(), key=lambda c: c.index)]
        return copied + self.add_commits(full_name, commits, start=start, step=step)

    def add_commits(
        self,
        full_name: str,
        commits: int | Sequence[str] = 1,
        *,
        parent: str | None = None,
        start: datetime | None = None,
        step: timedelta = timedelta(hours=1),
    ) -> list[str]:
        """Append a linear run of commits after ``parent`` (default: the repository head).

        A ``parent`` other than the head starts a branch; the head moves to the
        last new commit either way. Returns the new SHAs oldest first.
        """
        messages = ([f"{full_name.split('/')[-1]}: change {i + 1}" for i in range(commits)]
                    if isinstance(commits, int) else list(commits))
        created: list[str] = []
        with self._lock:
            repo = self._repo(full_name)
            previous = parent if parent is not None else repo.head
            last = repo.commits[previous] if previous else None
            when = start or (last.committer_date + step if last else DEFAULT_START)
            for message in messages:
                sha = self._commit_sha(full_name, len(repo.commits), message, previous)
                commit = FakeCommit(sha=sha, message=message, author_date=when,
                                    committer_date=when + timedelta(minutes=1),
                                    parents=[previous] if previous else [],
                                    index=len(repo.commits))
                repo.commits[sha] = commit
                created.append(sha)
                previous = sha
                when += step
            repo.head = previous
        return created

    def add_commit(
        self,
        full_name: str,
        *,
        sha: str | None = None,
        message: str = "a commit",
        parent: str | None = None,
        author_date: datetime | None = DEFAULT_START,
        committer_date: datetime | None = None,
        parents: Sequence[str] | None = None,
    ) -> str:
        """One commit with full control (a chosen SHA, no author date, a merge's ``parents``)."""
        with self._lock:
            repo = self._repo(full_name)
            previous = parent if parent is not None else repo.head
            links = list(parents) if parents is not None else ([previous] if previous else [])
            sha = (sha or self._commit_sha(full_name, len(repo.commits), message,
                                           ",".join(links))).lower()
            repo.commits[sha] = FakeCommit(
                sha=sha, message=message, author_date=author_date,
                committer_date=committer_date or author_date or DEFAULT_START,
                parents=links, index=len(repo.commits),
            )
            repo.head = sha
        return sha

    def add_pull_request(
        self,
        full_name: str,
        number: int,
        title: str = "",
        *,
        commits: Sequence[str] | None = None,
        head: str | None = None,
        merge_commit_sha: str | None = None,
        created_at: datetime,
        merged_at: datetime | None = None,
        first_commit_at: datetime | None = None,
        first_review_at: datetime | None = None,
    ) -> FakePullRequest:
        """A pull request of ``full_name``: its ``commits`` (or ``head`` and what it
        adds to the merge's first parent) and its merge commit.

        ``first_commit_at`` defaults to the earliest author date of its commits.
        """
        with self._lock:
            repo = self._repo(full_name)
            listed = list(commits) if commits is not None else []
            if commits is None and head is not None:
                base: set[str] = set()
                merge = repo.commits.get(merge_commit_sha or "")
                if merge is not None and merge.parents:
                    base = self._ancestry(repo, merge.parents[0])
                listed = sorted(self._ancestry(repo, head) - base,
                                key=lambda sha: repo.commits[sha].index)
            if first_commit_at is None:
                dates = [repo.commits[sha].author_date for sha in listed
                         if sha in repo.commits and repo.commits[sha].author_date]
                first_commit_at = min((d for d in dates if d is not None), default=None)
            pull = FakePullRequest(
                repo=repo.full_name, number=number, title=title or f"PR #{number}",
                commits=listed, merge_commit_sha=merge_commit_sha, created_at=created_at,
                merged_at=merged_at, first_commit_at=first_commit_at,
                first_review_at=first_review_at,
            )
            repo.pull_requests[number] = pull
            return pull

    def pull_requests(self, full_names: Sequence[str] | None = None) -> list[FakePullRequest]:
        """Pull requests of the given repositories (all when None), by repository and number."""
        with self._lock:
            wanted = None if full_names is None else {n.lower() for n in full_names}
            return [pull for key, repo in sorted(self.repos.items())
                    if wanted is None or key in wanted
                    for _, pull in sorted(repo.pull_requests.items())]

    def parents_of(self, full_names: Sequence[str] | None = None) -> dict[str, list[str]]:
        """The commit graph (sha -> parent shas) of the given repositories (all when None),
        as DevLake's gitextractor stores it in ``commit_parents``.
        """
        with self._lock:
            wanted = None if full_names is None else {n.lower() for n in full_names}
            return {sha: list(commit.parents) for key, repo in self.repos.items()
                    if wanted is None or key in wanted
                    for sha, commit in repo.commits.items()}

    def commit(self, full_name: str, sha: str) -> FakeCommit:
        with self._lock:
            return self._repo(full_name).commits[sha]

    def _repo(self, full_name: str) -> FakeRepo:
        try:
            return self.repos[full_name.lower()]
        except KeyError:
            raise KeyError(f"fake GitHub has no repository {full_name}") from None

    @staticmethod
    def _commit_sha(full_name: str, index: int, message: str, parent: str | None) -> str:
        text = f"{full_name}\0{index}\0{message}\0{parent or ''}"
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    # --- faults and limits ------------------------------------------------------------------
    def fail(self, kind: str = "*", status: int = 503, times: int = 1) -> None:
        """The next ``times`` requests of ``kind`` answer ``status`` (``*``: any kind)."""
        with self._lock:
            self._faults.append(Fault(kind, times, status=status))

    def drop(self, kind: str = "*", times: int = 1) -> None:
        """The next ``times`` requests of ``kind`` get their connection closed, no answer."""
        with self._lock:
            self._faults.append(Fault(kind, times, drop=True))

    def secondary_limit(
        self, kind: str = "*", *, status: int = 403, retry_after: float = 0.05, times: int = 1
    ) -> None:
        """The next ``times`` requests of ``kind`` hit a secondary rate limit."""
        with self._lock:
            self._faults.append(Fault(kind, times, status=status, retry_after=retry_after,
                                      message="You have exceeded a secondary rate limit."))

    def exhaust(self, resource: str = "core", reset_in: float = 0.1) -> None:
        """Use up the primary limit of ``resource``; it refills ``reset_in`` seconds later."""
        with self._lock:
            limit = self.limits[resource]
            limit.remaining = 0
            limit.reset = time.time() + reset_in

    def set_limit(self, resource: str, limit: int, *, remaining: int | None = None,
                  reset_in: float | None = None) -> None:
        with self._lock:
            self.limits[resource] = Limit(
                limit, limit if remaining is None else remaining,
                time.time() + (WINDOWS[resource] if reset_in is None else reset_in),
            )

    # --- what happened -----------------------------------------------------------------------
    def count(self, kind: str | None = None, *, status: int | None = None) -> int:
        """Requests received, of ``kind`` and answered ``status`` when given."""
        with self._lock:
            return sum(1 for r in self.requests
                       if (kind is None or r.kind == kind)
                       and (status is None or r.status == status))

    def counts(self) -> dict[str, int]:
        """Requests by kind, e.g. ``{"search": 1, "commit": 2}``."""
        with self._lock:
            return dict(Counter(r.kind for r in self.requests))

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- HTTP ------------------------------------------------------------------------------
    async def _rate_limit(self, request: web.Request) -> web.StreamResponse:
        """``GET /rate_limit``: free of charge, as on GitHub (used by ``doctor``)."""
        authorization = request.headers.get("Authorization", "")
        with self._lock:
            core = self._refill("core")
            if self.token is not None and authorization not in (f"Bearer {self.token}",
                                                                f"token {self.token}"):
                return self._json(401, {"message": "Bad credentials"}, "core", core)
            resources = {
                name: {"limit": self._refill(name).limit,
                       "remaining": max(self._refill(name).remaining, 0),
                       "reset": int(self._refill(name).reset)}
                for name in self.limits
            }
            return self._json(200, {"resources": resources, "rate": resources["core"]},
                              "core", core)

    async def _search(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, self._search_body)

    async def _commit(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, self._commit_body)

    async def _compare(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, self._compare_body)

    def _serve(self, request: web.Request, body_of: Any) -> web.StreamResponse:
        kind = _kind_of(request.path[len(self.path_prefix):])
        resource = "search" if kind == "search" else "core"
        conditional = "If-None-Match" in request.headers
        authorization = request.headers.get("Authorization", "")
        with self._lock:
            limit = self._refill(resource)
            response = self._answer(request, kind, resource, limit, authorization, body_of)
            self.requests.append(RecordedRequest(
                kind=kind, path=request.path, query=request.query_string,
                status=response.status if response is not None else 0,
                conditional=conditional, authorized=bool(authorization)))
        if response is None:  # a dropped connection
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never written: the connection is gone
        return response

    def _answer(self, request: web.Request, kind: str, resource: str, limit: Limit,
                authorization: str, body_of: Any) -> web.Response | None:
        if self.token is not None and authorization not in (f"Bearer {self.token}",
                                                            f"token {self.token}"):
            return self._json(401, {"message": "Bad credentials"}, resource, limit)
        fault = self._take_fault(kind)
        if fault is not None:
            if fault.drop:
                return None
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            return self._json(fault.status or 503, {"message": fault.message}, resource, limit,
                              headers)
        if limit.remaining <= 0:
            return self._json(403, {"message": "API rate limit exceeded"}, resource, limit)
        status, body, extra = body_of(request)
        text = json.dumps(body, sort_keys=True)
        etag = 'W/"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
        if status == 200 and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={**self._rate_headers(resource, limit),
                                                     "ETag": etag})
        limit.remaining -= 1
        headers = dict(extra)
        if status == 200:
            headers["ETag"] = etag
        return self._json(status, body, resource, limit, headers, text)

    def _take_fault(self, kind: str) -> Fault | None:
        for fault in self._faults:
            if fault.kind in ("*", kind) and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _refill(self, resource: str) -> Limit:
        limit = self.limits[resource]
        now = time.time()
        if now >= limit.reset:
            limit.remaining = limit.limit
            limit.reset = now + WINDOWS[resource]
        return limit

    @staticmethod
    def _rate_headers(resource: str, limit: Limit) -> dict[str, str]:
        reset = f"{limit.reset:.3f}" if limit.reset != int(limit.reset) else str(int(limit.reset))
        return {"X-RateLimit-Limit": str(limit.limit),
                "X-RateLimit-Remaining": str(max(limit.remaining, 0)),
                "X-RateLimit-Reset": reset, "X-RateLimit-Resource": resource,
                "X-RateLimit-Used": str(limit.limit - max(limit.remaining, 0))}

    def _json(self, status: int, body: Any, resource: str, limit: Limit,
              headers: dict[str, str] | None = None, text: str | None = None) -> web.Response:
        return web.Response(status=status, text=text or json.dumps(body, sort_keys=True),
                            content_type="application/json",
                            headers={**self._rate_headers(resource, limit), **(headers or {})})

    # --- bodies (called under the lock) ---------------------------------------------------
    def _commit_json(self, repo: FakeRepo, commit: FakeCommit) -> dict[str, Any]:
        author: dict[str, Any] = {"name": "Dev", "email": "dev@example.com"}
        if commit.author_date is not None:
            author["date"] = _iso(commit.author_date)
        return {
            "sha": commit.sha,
            "html_url": f"{self.web_url}/{repo.full_name}/commit/{commit.sha}",
            "commit": {
                "message": commit.message,
                "author": author,
                "committer": {"name": "GitHub", "email": "noreply@github.com",
                              "date": _iso(commit.committer_date)},
            },
            "parents": [{"sha": parent} for parent in commit.parents],
        }

    def _search_body(self, request: web.Request) -> tuple[int, Any, dict[str, str]]:
        query = request.query.get("q", "")
        terms = dict(term.split(":", 1) for term in query.split() if ":" in term)
        prefix = terms.get("hash", "").lower()
        if len(prefix) < 4:
            return 422, {"message": "Validation Failed",
                         "errors": [{"message": "hash: qualifier needs at least 4 characters"}]}, {}
        items = []
        for repo in self.repos.values():
            for commit in repo.commits.values():
                if commit.sha.startswith(prefix):
                    item = self._commit_json(repo, commit)
                    item["repository"] = {"full_name": repo.full_name, "fork": repo.fork,
                                          "html_url": f"{self.web_url}/{repo.full_name}",
                                          "private": False}
                    item["score"] = 1.0
                    items.append(item)
        per_page = min(int(request.query.get("per_page", "30")), MAX_PER_PAGE)
        return 200, {"total_count": len(items), "incomplete_results": False,
                     "items": items[:per_page]}, {}

    def _find(self, request: web.Request) -> FakeRepo | None:
        return self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}"
                              .lower())

    @staticmethod
    def _lookup(repo: FakeRepo, ref: str) -> FakeCommit | None:
        ref = ref.lower()
        if ref in repo.commits:
            return repo.commits[ref]
        matches = [c for sha, c in repo.commits.items() if len(ref) >= 4 and sha.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def _commit_body(self, request: web.Request) -> tuple[int, Any, dict[str, str]]:
        repo = self._find(request)
        commit = self._lookup(repo, request.match_info["ref"]) if repo else None
        if repo is None or commit is None:
            return 404, {"message": "Not Found"}, {}
        return 200, self._commit_json(repo, commit), {}

    def _ancestry(self, repo: FakeRepo, sha: str) -> set[str]:
        seen: set[str] = set()
        todo = [sha]
        while todo:
            current = todo.pop()
            if current in seen or current not in repo.commits:
                continue
            seen.add(current)
            todo.extend(repo.commits[current].parents)
        return seen

    def _compare_body(self, request: web.Request) -> tuple[int, Any, dict[str, str]]:
        repo = self._find(request)
        base_ref, dots, head_ref = request.match_info["basehead"].partition("...")
        base = self._lookup(repo, base_ref) if repo and dots else None
        head = self._lookup(repo, head_ref) if repo and dots else None
        if repo is None or base is None or head is None:
            return 404, {"message": "Not Found"}, {}
        ahead_set = self._ancestry(repo, head.sha) - self._ancestry(repo, base.sha)
        behind_set = self._ancestry(repo, base.sha) - self._ancestry(repo, head.sha)
        if not ahead_set and not behind_set:
            status = "identical"
        elif not behind_set:
            status = "ahead"
        elif not ahead_set:
            status = "behind"
        else:
            status = "diverged"
        ahead = sorted((repo.commits[s] for s in ahead_set), key=lambda c: c.index)
        extra: dict[str, str] = {}
        if "page" in request.query or "per_page" in request.query:
            per_page = min(int(request.query.get("per_page", "30")), MAX_PER_PAGE)
            page = max(int(request.query.get("page", "1")), 1)
            listed = ahead[(page - 1) * per_page : page * per_page]
            last = max(1, math.ceil(len(ahead) / per_page))
            base_url = f"{request.url.with_query(None)}?per_page={per_page}"
            links = [f'<{base_url}&page={last}>; rel="last"']
            if page < last:
                links.insert(0, f'<{base_url}&page={page + 1}>; rel="next"')
            extra["Link"] = ", ".join(links)
        else:
            listed = ahead[:COMPARE_UNPAGINATED_MAX]
        return 200, {
            "status": status,
            "ahead_by": len(ahead_set),
            "behind_by": len(behind_set),
            "total_commits": len(ahead_set),
            "base_commit": self._commit_json(repo, base),
            "commits": [self._commit_json(repo, c) for c in listed],
            "html_url": f"{self.web_url}/{repo.full_name}/compare/{base.sha}...{head.sha}",
        }, extra
