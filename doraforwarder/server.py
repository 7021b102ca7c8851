"""HTTP endpoints: the reference's two, plus readiness, metrics and status.

- ``GET /`` and ``GET /api/v1/health``: the reference JSON shapes, unchanged.
  Liveness only: answering proves the process and its event loop are alive.
- ``GET /readyz``: 503 only while starting (before the first complete list of
  Applications) or when the process cannot work at all (Redis unreachable for
  longer than ``server.ready_grace``); outages of DevLake, WebRCA or GitHub keep
  it 200 and show in the status, the metrics and the logs instead.
- ``GET /metrics``: Prometheus text (``doraforwarder_ready`` mirrors ``/readyz``).
- ``GET /api/v1/status``: what the daemon is doing, as JSON, with a
  ``dependencies`` map (up/down, since, last error, last success).
- ``GET /api/v1/argocd/applications`` (JSON) and ``.../applications.toon``
  (TOON, for language-model agents): the application inventory, from the
  watch's memory; behind ``server.api_auth``.
- ``POST /api/v1/alertmanager`` (with ``alertmanager.enabled``): Alertmanager's
  webhook notifications (version 4) become incidents. A bearer token among
  ``API_TOKENS`` is required; without any token configured, only a server
  listening on loopback takes notifications. Bodies above
  ``alertmanager.max_body`` are answered 413 unread.

Nothing served here ever contains a secret: the status board holds no tokens
and the metrics carry none.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from redis.exceptions import RedisError

from doraforwarder import __version__
from doraforwarder.alertmanager.receiver import AlertReceiver
from doraforwarder.alertmanager.webhook import BadNotification, parse_notification
from doraforwarder.apiauth import (
    TOKENS_ENV,
    TOKENS_FILE_ENV,
    Authorizer,
    OpenAccess,
    Refused,
    StaticTokens,
    build_authorizer,
    tokens_from_environment,
)
from doraforwarder.config import Settings
from doraforwarder.context import AppContext
from doraforwarder.inventory import (
    InventoryEntry,
    inventory_document,
    inventory_json,
    inventory_toon,
)
from doraforwarder.logging import get_logger
from doraforwarder.metrics import CONTENT_TYPE

log = get_logger("api")

CONTEXT_KEY = web.AppKey("context", AppContext)
AUTHORIZER_KEY = web.AppKey("authorizer", Authorizer)


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration.String`` (``1h2m3.5s``), as the reference does."""
    if seconds < 1:
        return f"{seconds * 1000:.3f}ms".rstrip("0").rstrip(".") if seconds else "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.6f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def go_time(moment: datetime) -> str:
    """A UTC time as Go's ``encoding/json`` writes a ``time.Time`` (RFC 3339, fraction trimmed)."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def go_json_response(document: dict[str, Any], status: int = 200) -> web.Response:
    """JSON with the reference's bytes and ``Content-Type`` (Fiber's ``c.JSON``)."""
    return web.Response(body=inventory_json(document), status=status,
                        content_type="application/json")


async def root(request: web.Request) -> web.Response:
    # The reference answers a fiber.Map: Go writes its keys sorted.
    return go_json_response(
        {"docs": "/api/v1/health", "message": "DORA Metrics Server", "version": __version__}
    )


async def health(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    return go_json_response(
        {
            "status": "healthy",
            "timestamp": go_time(datetime.now(UTC)),
            "version": __version__,
            "uptime": go_duration(time.time() - context.started_at),
        }
    )


_GO_HTML = str.maketrans({"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;"})


@web.middleware
async def reference_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths and methods answered as the reference's error handler answers them.

    Fiber's ``Cannot GET /path`` (the raw path, HTML-escaped) and ``Method Not Allowed``,
    in the reference's ``{"error": true, "message": ...}``, so clients that parse its
    errors parse ours.
    """
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        return go_json_response({"error": True, "message": "Method Not Allowed"}, 405)
    except web.HTTPNotFound:
        path = request.raw_path.split("?", 1)[0].translate(_GO_HTML)
        return go_json_response({"error": True, "message": f"Cannot {request.method} {path}"},
                                404)


async def check_readiness(context: AppContext) -> list[str]:
    """Ping Redis; the reasons ``/readyz`` is 503 (none: ready); sets ``doraforwarder_ready``."""
    try:
        await context.redis.ping()
    except Exception as exc:  # any failure to answer is "not ready", never a 500
        cause = f"Redis does not answer ({type(exc).__name__})"
        context.readiness.not_ready("redis", cause)
        context.metrics.mark_failure("redis", cause)
    else:
        context.readiness.ready("redis")
        context.metrics.mark_success("redis")
    reasons = context.readiness.blocking_reasons()
    context.metrics.ready.set(0 if reasons else 1)
    return reasons


async def readyz(request: web.Request) -> web.Response:
    reasons = await check_readiness(request.app[CONTEXT_KEY])
    if reasons:
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready", "reasons": []})


async def metrics(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    await check_readiness(context)
    return web.Response(body=context.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def status(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    blocking = await check_readiness(context)
    body = context.status.snapshot()
    body["version"] = __version__
    body["ready"] = not blocking
    body["not_ready_reasons"] = blocking
    body["degraded"] = context.readiness.advisory_reasons()
    body["dependencies"] = context.dependencies.snapshot()
    body["dry_run"] = context.dry_run
    return web.json_response(body)


async def _visible_inventory(request: web.Request) -> list[InventoryEntry] | web.Response:
    """The inventory entries the caller may read, or the refusal (never echoing the token)."""
    context = request.app[CONTEXT_KEY]
    entries = context.inventory.snapshot()
    namespaces = {entry.namespace for entry in entries}
    argocd = context.settings.argocd
    if not argocd.all_namespaces:
        namespaces.update(argocd.namespaces)
    try:
        allowed = await request.app[AUTHORIZER_KEY].allowed_namespaces(
            request.headers.get("Authorization"), namespaces
        )
    except Refused as refused:
        headers = {"WWW-Authenticate": 'Bearer realm="doraforwarder"'} \
            if refused.status == 401 else {}
        if refused.retry_after is not None:
            headers["Retry-After"] = str(refused.retry_after)
        answer = go_json_response({"error": refused.message}, refused.status)
        answer.headers.update(headers)
        return answer
    if allowed is None:
        return entries
    return [entry for entry in entries if entry.namespace in allowed]


def _order(request: web.Request) -> list[str]:
    """The watched namespaces in configuration order (none with ``["*"]``)."""
    argocd = request.app[CONTEXT_KEY].settings.argocd
    return [] if argocd.all_namespaces else list(argocd.namespaces)


async def applications(request: web.Request) -> web.Response:
    visible = await _visible_inventory(request)
    if isinstance(visible, web.Response):
        return visible
    return web.Response(body=inventory_json(inventory_document(visible, _order(request))),
                        content_type="application/json")


async def applications_toon(request: web.Request) -> web.Response:
    visible = await _visible_inventory(request)
    if isinstance(visible, web.Response):
        return visible
    document = inventory_document(visible, _order(request))
    return web.Response(body=inventory_toon(document).encode(), content_type="text/plain")


class AlertInbox:
    """Who may post Alertmanager notifications, and the receiver once the daemon has one.

    The receiver is handed over after Redis answered (the HTTP server starts
    first); until then, and when incidents have nowhere to go, notifications
    get 503 and Alertmanager retries them.
    """

    def __init__(self, authorizer: Authorizer | None, unavailable: str | None = None) -> None:
        self.authorizer = authorizer
        """None: no token configured on a non-loopback server, every post refused."""
        self.receiver: AlertReceiver | None = None
        self.unavailable = unavailable or "the daemon is starting (waiting for Redis)"

    @classmethod
    def for_settings(cls, settings: Settings) -> AlertInbox:
        """Tokens from ``API_TOKENS(_FILE)`` when any; else open only on a loopback host."""
        try:
            tokens = tokens_from_environment()
        except ValueError as exc:
            log.error("API tokens unusable, Alertmanager notifications are refused",
                      error=str(exc))
            return cls(StaticTokens(()))
        if tokens:
            return cls(StaticTokens(tokens))
        if settings.server.listens_on_loopback:
            return cls(OpenAccess())
        log.warning("no API token configured: Alertmanager notifications are refused "
                    "(a server not on loopback needs one)",
                    set=f"{TOKENS_ENV} or {TOKENS_FILE_ENV}")
        return cls(None)


INBOX_KEY = web.AppKey("alert-inbox", AlertInbox)


async def _bounded_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None past ``limit`` bytes (then the rest is never read)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def alertmanager(request: web.Request) -> web.Response:
    """One Alertmanager notification: 200 once its incidents are staged (or ignored).

    400 (Alertmanager does not retry it) for a body that is no notification;
    401 without an accepted token; 413 past ``alertmanager.max_body``; 503
    (retried by Alertmanager) while Redis or DevLake's routing is unavailable.
    """
    context = request.app[CONTEXT_KEY]
    inbox = request.app[INBOX_KEY]
    counted = context.metrics.alertmanager_notifications

    def refuse(status: int, message: str, outcome: str) -> web.Response:
        counted.labels(outcome).inc()
        context.status.alertmanager["last_refused"] = {
            "at": go_time(datetime.now(UTC)), "status": status, "reason": message}
        answer = go_json_response({"error": message}, status)
        if status == 401:
            answer.headers["WWW-Authenticate"] = 'Bearer realm="doraforwarder"'
        return answer

    if inbox.authorizer is None:
        return refuse(401, f"no API token is configured ({TOKENS_ENV}): notifications are "
                           "refused on a server not listening on loopback", "unauthorized")
    try:
        await inbox.authorizer.allowed_namespaces(request.headers.get("Authorization"), ())
    except Refused as refused:
        return refuse(401, refused.message, "unauthorized")
    limit = int(context.settings.alertmanager.max_body)
    body = await _bounded_body(request, limit)
    if body is None:
        log.warning("alertmanager notification refused: too large", limit_bytes=limit)
        return refuse(413, f"the notification is larger than {limit} bytes "
                           "(alertmanager.max_body); lower the webhook's max_alerts", "too_large")
    try:
        notification = parse_notification(body)
    except BadNotification as exc:
        log.error("alertmanager notification refused", reason=str(exc))
        return refuse(400, f"not an Alertmanager notification: {exc}", "bad_request")
    receiver = inbox.receiver
    if receiver is None:
        return refuse(503, inbox.unavailable, "unavailable")
    try:
        received = await receiver.receive(notification)
    except RedisError as exc:
        context.metrics.redis_errors.labels("alertmanager").inc()
        log.warning("alertmanager notification not staged: Redis failed; Alertmanager retries",
                    error=str(exc))
        return refuse(503, "Redis is unavailable; retry", "unavailable")
    counted.labels("accepted").inc()
    context.status.alertmanager["last_accepted"] = {
        "at": go_time(datetime.now(UTC)), "status": notification.status,
        "alerts": received.alerts, "incidents": received.incidents, "staged": received.staged}
    return go_json_response({"status": "accepted", "alerts": received.alerts,
                             "incidents": received.incidents, "staged": received.staged})


CORS_METHODS = "GET,OPTIONS"
CORS_HEADERS = "Origin,Content-Type,Accept,Authorization"


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """CORS as the reference answers it (Fiber's middleware with ``AllowOrigins: "*"``).

    A request without ``Origin`` is not a CORS request and passes untouched; a
    preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204
    on any path, before routing; any other request with an allowed ``Origin`` gets
    ``Access-Control-Allow-Origin``. ``server.cors_allow_origins`` lists the
    origins (``*``: any, the default; empty: no CORS headers at all).
    """
    allow_all = "*" in origins
    allowed = {origin.lower().rstrip("/") for origin in origins}

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin", "").lower()
        preflight = request.method == "OPTIONS"
        if not origin or (preflight and "Access-Control-Request-Method" not in request.headers):
            response = await handler(request)
            if not allow_all or (origin and preflight):
                _vary(response, "Origin")
            return response
        allow_origin = "*" if allow_all else origin if origin in allowed else ""
        if not preflight:
            try:
                response = await handler(request)
            except web.HTTPException as refusal:  # a 404 or 405 carries the headers too
                _simple_cors(refusal, allow_all, allow_origin)
                raise
            _simple_cors(response, allow_all, allow_origin)
            return response
        answer = web.Response(status=204)
        for name in ("Access-Control-Request-Method", "Access-Control-Request-Headers", "Origin"):
            _vary(answer, name)
        if allow_origin:
            answer.headers["Access-Control-Allow-Origin"] = allow_origin
        answer.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        answer.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        return answer

    return cors


def _simple_cors(response: web.StreamResponse, allow_all: bool, allow_origin: str) -> None:
    if not allow_all:
        _vary(response, "Origin")
    if allow_origin:
        response.headers["Access-Control-Allow-Origin"] = allow_origin


def _vary(response: web.StreamResponse, name: str) -> None:
    present = response.headers.get("Vary")
    response.headers["Vary"] = f"{present}, {name}" if present else name


def build_app(context: AppContext, authorizer: Authorizer | None = None,
              inbox: AlertInbox | None = None) -> web.Application:
    origins = tuple(context.settings.server.cors_allow_origins)
    middlewares = [cors_middleware(origins)] if origins else []
    app = web.Application(middlewares=[*middlewares, reference_errors])
    app[CONTEXT_KEY] = context
    app[AUTHORIZER_KEY] = authorizer or build_authorizer(context.settings)
    app[INBOX_KEY] = inbox or AlertInbox.for_settings(context.settings)
    if context.settings.alertmanager.enabled:
        app.router.add_post("/api/v1/alertmanager", alertmanager)
    app.router.add_get("/api/v1/argocd/applications", applications)
    app.router.add_get("/api/v1/argocd/applications.toon", applications_toon)
    app.router.add_get("/", root)
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", status)
    return app


async def start_http(context: AppContext, host: str, port: int) -> web.AppRunner:
    """Start serving; returns the runner (``await runner.cleanup()`` stops it)."""
    runner = web.AppRunner(build_app(context), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def alert_inbox(runner: web.AppRunner) -> AlertInbox:
    """Where the daemon hands the Alertmanager receiver over once it has one."""
    assert runner.app is not None
    return runner.app[INBOX_KEY]


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful with port 0 in tests)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTP server is not listening")
