"""A fake Apache DevLake webhook API that enforces the real contract and fails on demand.

Serves every webhook route of ``shared/reference/devlake-webhook.md`` under
both prefixes (``/api/rest`` through config-ui, ``/api`` directly): by
connection id, by connection name, and deployments by project name. Bodies
are checked the way DevLake checks them (400 with a message), the bearer
token too (401 without one, 403 with a wrong one). Accepted records are
upserted like DevLake does (deployments by connection and id, issues by
connection and issue key), so tests and ``doraforwarder demo`` can look at
the final state and count the posts.

Faults: :meth:`FakeDevLake.fail_next` / :meth:`fail_always` (any status,
default 503), :meth:`rate_limit_next` (429 with ``Retry-After``),
:meth:`slow` (answers late, for client timeouts), :meth:`hold` /
:meth:`release` (requests wait until released: a client can be killed
mid-request), and :meth:`stop` / :meth:`start` (connection refused).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self
from urllib.parse import unquote

from aiohttp import web

from doraforwarder.testing.http_fake import BackgroundServer, FakeServer

ENVIRONMENTS = ("PRODUCTION", "STAGING", "TESTING", "DEVELOPMENT")
ISSUE_STATUSES = ("TODO", "DONE", "IN_PROGRESS")
_DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S",
)


def parse_devlake_date(value: object) -> datetime | None:
    """A date as DevLake's webhook plugin parses it; None when it would refuse it."""
    if not isinstance(value, str) or not value:
        return None
    for form in _DATE_FORMATS:
        try:
            return datetime.strptime(value, form)
        except ValueError:
            continue
    try:  # RFC 3339, DevLake's last resort
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class Invalid(Exception):
    """A body DevLake would refuse with 400."""


def _require_string(body: Mapping[str, Any], name: str, where: str = "") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise Invalid(f"{where}{name} is required")
    return value


def _optional_string(body: Mapping[str, Any], name: str, where: str = "") -> None:
    if name in body and body[name] is not None and not isinstance(body[name], str):
        raise Invalid(f"{where}{name} must be a string")


def _require_date(body: Mapping[str, Any], name: str, where: str = "") -> datetime:
    if body.get(name) in (None, ""):
        raise Invalid(f"{where}{name} is required")
    parsed = parse_devlake_date(body[name])
    if parsed is None:
        raise Invalid(f"{where}{name}: cannot parse {body[name]!r} as a date")
    return parsed


def _optional_date(body: Mapping[str, Any], name: str, where: str = "") -> None:
    if body.get(name) not in (None, "") and parse_devlake_date(body[name]) is None:
        raise Invalid(f"{where}{name}: cannot parse {body[name]!r} as a date")


def check_deployment(body: Any) -> None:
    """DevLake's checks of a webhook deployment (``WebhookDeploymentReq``)."""
    if not isinstance(body, dict):
        raise Invalid("input json error: the body must be a JSON object")
    _require_string(body, "id")
    _require_date(body, "startedDate")
    _require_date(body, "finishedDate")
    _optional_date(body, "createdDate")
    environment = body.get("environment")
    if environment not in (None, "") and environment not in ENVIRONMENTS:
        raise Invalid(f"environment must be one of {' '.join(ENVIRONMENTS)}")
    for name in ("displayTitle", "name", "result", "originalEnvironment"):
        _optional_string(body, name)
    commits = body.get("deploymentCommits")
    if not commits:
        raise Invalid("deployment_commits is empty")
    if not isinstance(commits, list):
        raise Invalid("deploymentCommits must be a list")
    for index, commit in enumerate(commits):
        where = f"deploymentCommits[{index}]."
        if not isinstance(commit, dict):
            raise Invalid(f"{where[:-1]} must be an object")
        _require_string(commit, "repoUrl", where)
        _require_string(commit, "commitSha", where)
        _require_date(commit, "startedDate", where)
        _require_date(commit, "finishedDate", where)
        _optional_date(commit, "createdDate", where)
        for name in ("refName", "commitMsg", "displayTitle", "name", "result", "status",
                     "repoId"):
            _optional_string(commit, name, where)


def check_issue(body: Any) -> None:
    """DevLake's checks of a webhook issue (``WebhookIssueRequest``)."""
    if not isinstance(body, dict):
        raise Invalid("input json error: the body must be a JSON object")
    _require_string(body, "issueKey")
    _require_string(body, "title")
    status = _require_string(body, "status")
    if status not in ISSUE_STATUSES:
        raise Invalid(f"status must be one of {' '.join(ISSUE_STATUSES)}")
    _require_string(body, "originalStatus")
    _require_date(body, "createdDate")
    _optional_date(body, "resolutionDate")
    _optional_date(body, "updatedDate")
    if "storyPoint" in body and body["storyPoint"] is not None \
            and not isinstance(body["storyPoint"], int | float):
        raise Invalid("storyPoint must be a number")
    lead = body.get("leadTimeMinutes")
    if lead is not None and (not isinstance(lead, int) or lead < 0):
        raise Invalid("leadTimeMinutes must be an unsigned integer")
    for name in ("originalEstimateMinutes", "timeSpentMinutes", "timeRemainingMinutes"):
        if body.get(name) is not None and not isinstance(body[name], int):
            raise Invalid(f"{name} must be an integer")


@dataclass(frozen=True)
class Posted:
    """One request the fake answered (kept for assertions)."""

    method: str
    path: str
    kind: str
    """deployment, issue, close, connection, other."""
    connection_id: int | None
    record_id: str | None
    status: int
    body: Any
    authorization: str | None
    at: float


@dataclass
class _Faults:
    fail_count: int = 0
    fail_status: int = 503
    fail_forever: bool = False
    rate_limit_count: int = 0
    drop_count: int = 0
    retry_after: str = "1"
    delay: float = 0.0


@dataclass
class _Route:
    kind: str
    connection_ref: tuple[str, str] | None = None
    """("id", "6") or ("name", "team-build")."""
    project: str | None = None
    issue_key: str | None = None


def _route(method: str, raw_path: str) -> _Route | None:
    """Match a path of either prefix to a webhook route."""
    path = raw_path.split("?", 1)[0]
    for prefix in ("/api/rest/", "/api/"):
        if path.startswith(prefix):
            parts = [unquote(p) for p in path[len(prefix):].split("/")]
            break
    else:
        return None
    if parts[:1] == ["projects"] and len(parts) >= 2:
        if len(parts) == 3 and parts[2] == "deployments" and method == "POST":
            return _Route("deployment", project=parts[1])
        if len(parts) == 2 and method == "GET":
            return _Route("project", project=parts[1])
        return None
    if parts[:3] != ["plugins", "webhook", "connections"]:
        return None
    rest = parts[3:]
    if not rest and method == "GET":
        return _Route("connections")
    if rest[:1] == ["by-name"] and len(rest) >= 2:
        ref, rest = ("name", rest[1]), rest[2:]
    elif rest:
        ref, rest = ("id", rest[0]), rest[1:]
    else:
        return None
    if not rest and method == "GET":
        return _Route("connection", connection_ref=ref)
    if method != "POST":
        return None
    if rest == ["deployments"]:
        return _Route("deployment", connection_ref=ref)
    if rest == ["issues"]:
        return _Route("issue", connection_ref=ref)
    if len(rest) == 3 and rest[0] == "issue" and rest[2] == "close":
        return _Route("close", connection_ref=ref, issue_key=rest[1])
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "message": message, "causes": []},
                             status=status)


class FakeDevLake(FakeServer):
    """The fake; ``with FakeDevLake() as devlake: devlake.url ...``."""

    def __init__(self, token: str | None = "devlake-test-token",
                 connections: Mapping[int, str] | None = None,
                 projects: Iterable[str] = (), port: int | None = None) -> None:
        self.token = token
        """Accepted API key; None accepts any request (even without a header)."""
        self.connections: dict[int, str] = dict(
            connections if connections is not None else {1: "global"}
        )
        self.projects: dict[str, int | None] = {name: None for name in projects}
        self.deployments: dict[tuple[int, str], dict[str, Any]] = {}
        self.deployment_commits: dict[tuple[int, str, str, str], dict[str, Any]] = {}
        self.issues: dict[tuple[int, str], dict[str, Any]] = {}
        self.requests: list[Posted] = []
        self._faults = _Faults()
        self._down = False
        self._lock = threading.Lock()
        self._held = threading.Condition(self._lock)
        self.waiting = 0
        """Requests currently held by :meth:`hold`."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = BackgroundServer(app, port=port)
        self._gate: asyncio.Event = self.server.call(self._new_open_gate())

    @staticmethod
    async def _new_open_gate() -> asyncio.Event:
        gate = asyncio.Event()
        gate.set()
        return gate

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Listen (again, after :meth:`stop`: same port, same state)."""
        with self._lock:
            self._down = False
        return super().start()

    def stop(self) -> None:
        """Stop listening: clients get connection refused; state is kept.

        Connections a client keeps alive are cut too, at their next request,
        as when a real server goes down.
        """
        with self._lock:
            self._down = True
        super().stop()

    def close(self) -> None:
        self.release()
        super().close()

    # --- configuration and faults ---------------------------------------------------

    def add_connection(self, connection_id: int, name: str) -> None:
        with self._lock:
            self.connections[connection_id] = name

    def add_project(self, name: str) -> None:
        with self._lock:
            self.projects.setdefault(name, None)

    def set_token(self, token: str | None) -> None:
        with self._lock:
            self.token = token

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status``."""
        with self._lock:
            self._faults.fail_count, self._faults.fail_status = count, status

    def fail_always(self, status: int = 503) -> None:
        """Answer every request with ``status`` until :meth:`clear_faults`."""
        with self._lock:
            self._faults.fail_forever, self._faults.fail_status = True, status

    def rate_limit_next(self, count: int, retry_after: float | str = 1) -> None:
        """Answer the next ``count`` requests with 429 and ``Retry-After``."""
        with self._lock:
            self._faults.rate_limit_count = count
            self._faults.retry_after = str(retry_after)

    def drop_next(self, count: int) -> None:
        """Cut the connection of the next ``count`` requests without answering."""
        with self._lock:
            self._faults.drop_count = count

    def slow(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each request (0 to stop)."""
        with self._lock:
            self._faults.delay = seconds

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = _Faults()

    def hold(self) -> None:
        """Keep every new request waiting, unanswered, until :meth:`release`."""
        self.server.call(self._set_gate(False))

    def release(self) -> None:
        self.server.call(self._set_gate(True))

    async def _set_gate(self, open_: bool) -> None:
        if open_:
            self._gate.set()
        else:
            self._gate.clear()

    def wait_for_held(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block until ``count`` requests are being held."""
        with self._held:
            if not self._held.wait_for(lambda: self.waiting >= count, timeout):
                raise TimeoutError(f"{self.waiting} requests held, wanted {count}")

    # --- inspection ---------------------------------------------------------------------

    def posts(self, kind: str | None = None, status: int | None = None) -> list[Posted]:
        with self._lock:
            return [
                p for p in self.requests
                if p.method == "POST" and (kind is None or p.kind == kind)
                and (status is None or p.status == status)
            ]

    def accepted(self, kind: str | None = None) -> list[Posted]:
        return self.posts(kind, status=200)

    def deployment(self, connection_id: int, deployment_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.deployments.get((connection_id, deployment_id))

    def issue(self, connection_id: int, issue_key: str) -> dict[str, Any] | None:
        with self._lock:
            return self.issues.get((connection_id, issue_key))

    def deployment_ids(self, connection_id: int) -> set[str]:
        with self._lock:
            return {key[1] for key in self.deployments if key[0] == connection_id}

    def connection_id(self, name: str) -> int | None:
        with self._lock:
            for connection_id, connection_name in self.connections.items():
                if connection_name == name:
                    return connection_id
            return None

    def project_connection(self, project: str) -> int | None:
        with self._lock:
            return self.projects.get(project)

    # --- serving ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body_text = await request.text()
        try:
            body: Any = json.loads(body_text) if body_text else None
        except json.JSONDecodeError:
            body = _Unparsable(body_text)
        with self._held:
            holding = not self._gate.is_set()
            if holding:
                self.waiting += 1
                self._held.notify_all()
        if holding:
            try:
                await self._gate.wait()
            finally:
                with self._held:
                    self.waiting -= 1
        with self._lock:
            delay = self._faults.delay
            drop = self._down or self._faults.drop_count > 0
            if self._faults.drop_count > 0 and not self._down:
                self._faults.drop_count -= 1
        if drop:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)  # never reaches the client
        if delay:
            await asyncio.sleep(delay)
        route = _route(request.method, request.raw_path)
        response, connection_id = self._answer(request, route, body)
        with self._lock:
            self.requests.append(Posted(
                method=request.method, path=request.path,
                kind=route.kind if route else "other", connection_id=connection_id,
                record_id=_record_id(route, body), status=response.status,
                body=None if isinstance(body, _Unparsable) else body,
                authorization=request.headers.get("Authorization"), at=time.time(),
            ))
        return response

    def _answer(self, request: web.Request, route: _Route | None, body: Any
                ) -> tuple[web.Response, int | None]:
        with self._lock:
            faults = self._faults
            if faults.fail_forever or faults.fail_count > 0:
                if not faults.fail_forever:
                    faults.fail_count -= 1
                return _error(faults.fail_status, "injected failure"), None
            if faults.rate_limit_count > 0:
                faults.rate_limit_count -= 1
                response = _error(429, "too many requests")
                response.headers["Retry-After"] = faults.retry_after
                return response, None
            token = self.token
        if token is not None:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return _error(401, "authentication required: missing API key"), None
            if header.removeprefix("Bearer ") != token:
                return _error(403, "forbidden: invalid API key"), None
        if route is None:
            return _error(404, f"no route {request.method} {request.path}"), None
        if isinstance(body, _Unparsable):
            return _error(400, "input json error: body is not JSON"), None
        with self._lock:
            return self._serve(route, body)

    def _connection(self, ref: tuple[str, str] | None) -> int | None:
        if ref is None:
            return None
        kind, value = ref
        if kind == "id":
            if value.isdigit() and int(value) in self.connections:
                return int(value)
            return None
        for connection_id, name in self.connections.items():
            if name == value:
                return connection_id
        return None

    def _serve(self, route: _Route, body: Any) -> tuple[web.Response, int | None]:
        """Route handlers; called with the lock held."""
        if route.kind == "connections":
            listing = [{"id": i, "name": n} for i, n in sorted(self.connections.items())]
            return web.json_response(listing), None
        if route.kind == "project":
            if route.project not in self.projects:
                return _error(404, f"project {route.project} not found"), None
            return web.json_response({"name": route.project}), None
        if route.project is not None:
            if route.project not in self.projects:
                return _error(404, f"project {route.project} not found"), None
            connection_id = self.projects[route.project]
            if connection_id is None:
                connection_id = max(self.connections, default=0) + 1
                self.connections[connection_id] = route.project
                self.projects[route.project] = connection_id
        else:
            found = self._connection(route.connection_ref)
            if found is None:
                return _error(404, "record not found: no such webhook connection"), None
            connection_id = found
        if route.kind == "connection":
            return web.json_response(
                {"id": connection_id, "name": self.connections[connection_id]}
            ), connection_id
        try:
            if route.kind == "deployment":
                check_deployment(body)
                self._store_deployment(connection_id, body)
            elif route.kind == "issue":
                check_issue(body)
                self.issues[(connection_id, body["issueKey"])] = dict(body)
            else:
                assert route.issue_key is not None
                issue = self.issues.get((connection_id, route.issue_key))
                if issue is None:
                    return _error(404, f"issue {route.issue_key} not found"), connection_id
                issue["status"] = "DONE"
                issue["closed"] = True
        except Invalid as exc:
            return _error(400, str(exc)), connection_id
        return web.json_response(None), connection_id

    def _store_deployment(self, connection_id: int, body: dict[str, Any]) -> None:
        self.deployments[(connection_id, body["id"])] = dict(body)
        for commit in body["deploymentCommits"]:
            key = (connection_id, body["id"], commit["repoUrl"], commit["commitSha"])
            self.deployment_commits[key] = dict(commit)


@dataclass(frozen=True)
class _Unparsable:
    text: str = field(repr=False)


def _record_id(route: _Route | None, body: Any) -> str | None:
    if route is None:
        return None
    if route.kind == "close":
        return route.issue_key
    if isinstance(body, dict):
        value = body.get("id") if route.kind == "deployment" else body.get("issueKey")
        return value if isinstance(value, str) else None
    return None
