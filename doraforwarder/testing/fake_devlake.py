"""A fake Apache DevLake (backend plus config-ui's nginx) as strict as the real one.

One server plays both doors of a real installation:

- config-ui's nginx: ``/api/rest/...`` is proxied to the backend's ``/rest/...``
  (nginx decodes the path and re-escapes it its own way), ``/api/...`` to the
  backend's ``/...`` with the raw path kept (the UI's own session: no API key);
- the backend: webhook routes under ``/plugins/webhook/...``, the same under
  ``/rest/plugins/webhook/...`` behind the API-key check.

What the backend does is modelled step by step: the key check (``Bearer``,
invalid, expired, the key's ``allowedPath`` searched unanchored in the
decoded path without ``/rest``), Go's path escaping rules (a path whose raw
form is not Go's own escaping of it is routed on the raw form, which under
``/rest`` is gin's 404), gin's trailing-slash redirect (which drops
``/rest``), the route table (id, by-name, legacy and project routes), the
body binding (not a JSON object: 500), the project route's find-or-create of
``<project>_deployments`` before the body is validated, body decoding (bad
dates and types: 400 with a bare JSON string) and validation (400 with
DevLake's error body), and storage the way DevLake keeps it: one
``cicd_deployments`` row per raw deployment id shared by every connection,
one deployment-commit row per (connection, deployment id, repoUrl, sha) with
the row's own result, issues upserted per (connection, issueKey) on the
board ``webhook:<connection>``, and close setting the status only.

Faults: :meth:`FakeDevLake.fail_next` / :meth:`fail_always` (any status,
default 503), :meth:`rate_limit_next` (429 with ``Retry-After``),
:meth:`slow` (answers late, for client timeouts), :meth:`hold` /
:meth:`release` (requests wait until released: a client can be killed
mid-request), and :meth:`stop` / :meth:`start` (connection refused).

config-ui's nginx answers some requests itself, as the real one does (its
nginx.conf run on nginx 1.22 in front of DevLake v1.0.3): 413 past
``config_ui_max_body`` (``client_max_body_size 20m``), 401 asking for basic
auth when ``config_ui_login`` is set (its ``ADMIN_USER``/``ADMIN_PASS``:
every ``/api/`` path but ``/api/rest/``, which is ``auth_basic off``, so the
API key's ``Bearer`` passes untouched), and 502 while ``backend_down`` (the
backend's own door then cuts the connection).

The server is here (the doors, path handling, faults, holding requests); the
tables, keys and route handlers behind it in :mod:`.fake_devlake_store` (its
base class); its pure parts beside them: :mod:`.fake_devlake_routing` (paths
and routes), :mod:`.fake_devlake_bodies` (dates, decoding, validation),
:mod:`.fake_devlake_records` (keys, projects, requests answered).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from doraforwarder.testing.fake_devlake_records import Posted
from doraforwarder.testing.fake_devlake_routing import (
    CONFIG_UI_MAX_BODY,
    BadEscape,
    HandlerError,
    Route,
    backend_view,
    devlake_error,
    gin_404,
    match_route,
    middleware_error,
    nginx_page,
    peek_route,
    record_id_of,
    redirects,
    request_kind,
    through_config_ui,
)
from doraforwarder.testing.fake_devlake_store import DevLakeStore
from doraforwarder.testing.http_fake import BackgroundServer


@dataclass
class _Faults:
    fail_count: int = 0
    fail_status: int = 503
    fail_forever: bool = False
    rate_limit_count: int = 0
    drop_count: int = 0
    retry_after: str = "1"
    delay: float = 0.0


class FakeDevLake(DevLakeStore):
    """The fake; ``with FakeDevLake() as devlake: devlake.url ...``.

    ``token`` is a global key (allowed path ``/plugins/webhook/.*``), as the
    reference setup uses; ``None`` (and no key added with :meth:`add_api_key`)
    turns the key check off. Every connection gets its own key,
    :meth:`connection_key`, scoped to ``/plugins/webhook/connections/<id>/.*``.
    """

    def __init__(self, token: str | None = "devlake-test-token",
                 connections: Mapping[int, str] | None = None,
                 projects: Iterable[str] = (), port: int | None = None,
                 version: str = "v1.0.3@fake") -> None:
        self.version = version
        """What ``GET /version`` (``/api/version`` through config-ui) answers."""
        super().__init__(token, connections, projects)
        self._faults = _Faults()
        self._down = False
        self._held = threading.Condition(self._lock)
        self.waiting = 0
        """Requests currently held by :meth:`hold`."""
        self.config_ui_login: tuple[str, str] | None = None
        """config-ui's ``ADMIN_USER``/``ADMIN_PASS``: its nginx asks for them on ``/api/``
        paths other than ``/api/rest/``."""
        self.config_ui_max_body = CONFIG_UI_MAX_BODY
        """config-ui's ``client_max_body_size``: a larger body is answered 413 there."""
        self.backend_down = False
        """DevLake's backend is down behind a running config-ui: 502 through ``/api/``."""
        app = web.Application(client_max_size=256 * 1024 * 1024)  # the backend sets no limit
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

    # --- faults -------------------------------------------------------------------------

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

    # --- serving ----------------------------------------------------------------------

    def _public(self, method: str, path: str) -> web.Response | None:
        """DevLake's ``GET /version`` and ``GET /ping``; None for any other request."""
        if method != "GET":
            return None
        if path == "/version":
            return web.json_response({"version": self.version})
        return web.Response(status=200) if path == "/ping" else None

    def _config_ui_answer(self, request: web.Request) -> web.Response | None:
        """What config-ui's nginx answers itself, in its order: size, password, backend."""
        raw = request.raw_path
        if not raw.startswith("/api/"):
            if self.backend_down and request.transport is not None:
                request.transport.abort()
                return web.Response(status=503)  # never reaches the client
            return None
        if (request.content_length or 0) > self.config_ui_max_body:
            return nginx_page(413)
        login = self.config_ui_login
        if login is not None and not raw.startswith("/api/rest/"):
            given = request.headers.get("Authorization", "")
            wanted = "Basic " + base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
            if given != wanted:
                return nginx_page(401)
        return nginx_page(502) if self.backend_down else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        answered = self._config_ui_answer(request)
        if answered is not None:
            return answered
        body_text = await request.text()
        with self._lock:
            self._arrivals += 1
            arrival = self._arrivals
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
        body: Any
        try:
            body = json.loads(body_text) if body_text.strip() else None
        except json.JSONDecodeError as exc:
            body = _Unparsable(f"invalid character in JSON: {exc.msg}")
        response, route, connection_id = self._answer(request, body, arrival)
        with self._lock:
            self.requests.append(Posted(
                method=request.method, path=request.path,
                kind=request_kind(route), connection_id=connection_id,
                record_id=record_id_of(route, body), status=response.status,
                body=None if isinstance(body, _Unparsable) else body,
                authorization=request.headers.get("Authorization"), at=time.time(),
            ))
        return response

    def _injected(self) -> web.Response | None:
        with self._lock:
            faults = self._faults
            if faults.fail_forever or faults.fail_count > 0:
                if not faults.fail_forever:
                    faults.fail_count -= 1
                return devlake_error(faults.fail_status, "injected failure")
            if faults.rate_limit_count > 0:
                faults.rate_limit_count -= 1
                response = middleware_error(429, "too many requests")
                response.headers["Retry-After"] = faults.retry_after
                return response
        return None

    def _answer(self, request: web.Request, body: Any, arrival: int = 2**62
                ) -> tuple[web.Response, Route | None, int | None]:
        raw = request.raw_path.split("?", 1)[0]
        injected = self._injected()
        if injected is not None:
            return injected, peek_route(request.method, raw), None
        try:
            forwarded = through_config_ui(raw)
            if forwarded is None and raw.startswith("/api"):
                return web.Response(status=200, text="<html>config-ui</html>",
                                    content_type="text/html"), None, None
            path, raw_path = backend_view(forwarded if forwarded is not None else raw)
        except BadEscape:
            return web.Response(status=400, text="400 Bad Request"), None, None
        public = self._public(request.method, path)
        if public is not None:  # no key, outside /rest
            return public, None, None
        if path.startswith("/rest"):
            path = path[len("/rest"):]
            refused = self._check_key(request.headers.get("Authorization"), path)
            if refused is not None:
                return refused, None, None
            if raw_path is not None:  # gin routes on the raw path, which still says /rest
                return gin_404(), None, None
            public = self._public(request.method, path)
            if public is not None:  # /rest/version: a key whose scope covers it
                return public, None, None
            route = match_route(request.method, path)
        elif raw_path is not None:
            route, path = match_route(request.method, raw_path, raw=True), raw_path
        else:
            route = match_route(request.method, path)
        if route is None:
            if redirects(path):
                status = 301 if request.method == "GET" else 307
                return web.Response(status=status, headers={"Location": path[:-1]}), None, None
            return gin_404(), None, None
        if isinstance(body, _Unparsable) or not isinstance(body, dict | None):
            message = body.text if isinstance(body, _Unparsable) else (
                "json: cannot unmarshal into Go value of type map[string]interface {}")
            return web.json_response({"success": False, "message": message, "causes": None,
                                      "data": None}, status=500), route, None
        with self._lock:
            try:
                return self._serve(route, body, arrival)
            except HandlerError as exc:
                return devlake_error(exc.status, exc.message), route, None



@dataclass(frozen=True)
class _Unparsable:
    text: str = field(repr=False)
