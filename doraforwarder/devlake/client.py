"""Talking to DevLake: one POST per outbox entry, and what its answer means.

:class:`DevLakeClient` posts with ``Authorization: Bearer <key>``, the key of
the entry's target (``token_env`` of the global target or of the team; by
default ``DEVLAKE_WEBHOOK_TOKEN``), and never raises for a failed delivery:
every outcome (an HTTP status, a timeout, a refused connection) comes back
as an :class:`Answer`, which the pure :func:`classify` turns into what to do with the entry. The
:class:`DryRunPrinter` has the same ``deliver`` method and prints instead, so
``run --dry-run`` and ``backfill --dry-run`` share one code path with real
delivery.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

import httpx
from pydantic import SecretStr

from doraforwarder import __version__, bodies, http_backend
from doraforwarder.backoff import parse_retry_after
from doraforwarder.outbox import BODY_LIMIT, OutboxEntry

FailureKind = Literal["timeout", "network"]

PARSED_URLS = 256
"""How many distinct URLs a client keeps parsed."""


@dataclass(frozen=True)
class Answer:
    """The outcome of one request: an HTTP status, or a failure before any status."""

    status: int | None
    body: str = ""
    retry_after: float | None = None
    """Seconds from ``Retry-After`` (429/503), when DevLake sent one."""
    failure: FailureKind | None = None
    error: str | None = None
    """What went wrong before a status arrived (``ConnectError: ...``)."""


Action = Literal["ack", "retry", "auth", "dead"]


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    """Metric label: sent, timeout, network, rate_limited, server_error, auth, rejected,
    not_found, too_large, too_many_commits, client_error, unexpected_status."""


def classify(answer: Answer) -> Verdict:
    """What to do with an entry after ``answer`` (the delivery rules, in one place).

    2xx: done, whatever the body says. DevLake's webhook answers 200 once the
    record is stored and nothing else with a 2xx, so the status alone decides;
    a proxy that answered 2xx without forwarding (a captive portal, a
    misrouted ingress) would make a record count as delivered that never
    arrived: put none such between the daemon and DevLake. Timeouts, network
    errors, 408, 428 (DevLake is migrating its
    database), 429 and 5xx: transient, retry with backoff forever (DevLake
    also answers 500 for a body that is not a JSON object, but every body is
    checked against the contract before it is sent, so a 500 here is
    DevLake's own trouble). 401/403: the target's key is
    refused, keep the entry (the target waits, see :func:`refusal`). 413:
    a proxy's body limit (config-ui's nginx: ``client_max_body_size 20m``;
    DevLake's backend has none), dead-letter, named ``too_large``; so is
    DevLake's 500 for more commit rows than one MySQL statement holds
    (``too_many_commits``: it fails the same way every time). Other
    4xx: retrying cannot help, dead-letter. Anything else (a redirect): retry,
    it is most likely a proxy in the way.
    """
    status = answer.status
    if status is None:
        return Verdict("retry", answer.failure or "network")
    if 200 <= status < 300:
        return Verdict("ack", "sent")
    if status in (401, 403):
        return Verdict("auth", "auth")
    if status == 429:
        return Verdict("retry", "rate_limited")
    if status == 408:
        return Verdict("retry", "timeout")
    if status == 428:
        return Verdict("retry", "migrating")
    if status >= 500:
        if TOO_MANY_ROWS in answer.body:
            return Verdict("dead", "too_many_commits")
        return Verdict("retry", "server_error")
    if status in (400, 422):
        return Verdict("dead", "rejected")
    if status == 404:
        return Verdict("dead", "not_found")
    if status == 413:
        return Verdict("dead", "too_large")
    if 400 <= status < 500:
        return Verdict("dead", "client_error")
    return Verdict("retry", "unexpected_status")


TOO_MANY_ROWS = "Prepared statement contains too many placeholders"
"""DevLake's 500 for a deployment of more commit rows than it can store (the planner keeps
at most :data:`~doraforwarder.devlake.payloads.MAX_DEPLOYMENT_COMMITS`; a DevLake whose table
has more columns could still refuse fewer)."""



RefusalCause = Literal["missing_key", "malformed_key", "invalid_key", "expired_key", "scope",
                       "auth_enabled", "refused"]

GLOBAL_SCOPE = "/plugins/webhook/.*"
"""The allowed path of a DevLake API key that covers every webhook route."""


@dataclass(frozen=True)
class Refusal:
    """Why DevLake refused a target's key (401/403), from DevLake's own message."""

    cause: RefusalCause
    status: int
    message: str
    """DevLake's message (``path doesn't match api key's scope``); never holds the key."""

    def explain(self, path: str, token_env: str) -> str:
        """What is wrong and what to do, for the operator (no secret in it)."""
        if self.cause == "scope":
            return (f"the API key's scope does not cover {path}; use a key whose allowed "
                    f"path covers {GLOBAL_SCOPE} or set token_env for this team")
        if self.cause == "missing_key":
            return (f"no API key was sent: set {token_env} (or {token_env}_FILE) to a "
                    "DevLake API key")
        if self.cause == "malformed_key":
            return (f"DevLake cannot read the API key in {token_env} (empty or not a key): "
                    "set it to a DevLake API key")
        if self.cause == "invalid_key":
            return (f"DevLake does not know the API key in {token_env} (deleted, or from "
                    "another DevLake): create an API key and set it there")
        if self.cause == "expired_key":
            return f"the API key in {token_env} has expired: create a new one and set it there"
        if self.cause == "auth_enabled":
            return ("DevLake runs with AUTH_ENABLED=true, which rejects every API key on /rest "
                    "in builds without apache/devlake#8913 (seen at 420e494b): set "
                    "AUTH_ENABLED=false on DevLake, or run a build with that fix")
        return f"HTTP {self.status}: {self.message or 'no message'}"


def refusal(answer: Answer) -> Refusal:
    """Read DevLake's 401/403 answer (its middleware's ``message``) as a cause."""
    message = _message(answer.body)
    text = message.lower()
    status = answer.status or 0
    cause: RefusalCause = "refused"
    if "token is missing" in text:
        cause = "missing_key"
    elif "not present or malformed" in text:
        cause = "malformed_key"
    elif "api key is invalid" in text:
        cause = "invalid_key"
    elif "expired" in text:
        cause = "expired_key"
    elif "scope" in text:
        cause = "scope"
    elif status == 401 and text == "unauthorized":
        # RequireAuth's answer after the key was accepted: AUTH_ENABLED=true drops its user
        cause = "auth_enabled"
    return Refusal(cause, status, message)


def _message(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:200]
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])[:200]
    return parsed[:200] if isinstance(parsed, str) else " ".join(body.split())[:200]


def connection_just_created(answer: Answer) -> bool:
    """A project route's answer while DevLake creates ``<project>_deployments``: send again.

    DevLake v1.0.3 (and its main branch at 420e494) creates the project's
    connection, attaches it to the project's blueprint, then answers the
    lookup's ``record not found`` (a shadowed error in the webhook plugin's
    ``getOrCreateConnection``) without storing the deployment; the next call
    finds the connection and stores it. Calls that looked the connection up
    while it was being created try to create it too and get 400 ``the
    connection name already exists``. A missing project says ``could not find
    project [name] in DB``, and an unknown route (DevLake before 1.0.3) is
    gin's plain ``404 page not found``: those stay refusals. (A connection
    of that name left unattached to the project also answers the 400: it
    retries, logged with DevLake's message, until it is attached.)
    """
    message = _message(answer.body).lower()
    return ((answer.status == 404 and message.startswith("record not found"))
            or (answer.status == 400
                and message.startswith("the connection name already exists")))


def awaits_connection(answer: Answer) -> bool:
    """A 404 for a project's ``<project>_deployments`` connection that does not exist yet.

    DevLake answers ``record not found`` for an unknown connection name and
    ``issue not found`` when the connection exists but the issue does not.
    """
    return answer.status == 404 and "issue not found" not in _message(answer.body).lower()


class Sender(Protocol):
    """Something that delivers one validated body to one URL."""

    async def deliver(self, entry: OutboxEntry, url: str, body: dict[str, Any] | None
                      ) -> Answer: ...

    async def aclose(self) -> None: ...


class DevLakeClient:
    """HTTP client for the DevLake API: one keep-alive pool shared by every worker.

    Draining a backlog is one small POST after another, so everything that
    does not change per request is set once on the ``httpx.AsyncClient``:
    headers, the timeout, the pool limits (``pool_size`` connections, one per
    delivery worker, kept alive and reused) and HTTP/1.1 only. Proxies and
    TLS settings come from the environment through httpx's own ``trust_env``
    (``HTTP(S)_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``), read once when the
    client is built. Doctor uses this client too, so it tests the same path.
    """

    def __init__(self, token: SecretStr | None, timeout_seconds: float, *,
                 pool_size: int = 8,
                 target_keys: Mapping[str, SecretStr | None] | None = None) -> None:
        headers = {"User-Agent": f"doraforwarder/{__version__}", "Accept": "application/json",
                   "Accept-Encoding": bodies.ACCEPT_ENCODING}
        self.has_token = _usable(token)
        self.timeout_seconds = timeout_seconds
        # Built once as httpx.Headers: a request copies them instead of normalising dicts.
        self._headers = httpx.Headers(_with_key(headers, token))
        self._post_headers = httpx.Headers(
            {**_with_key(headers, token), "Content-Type": "application/json"})
        self._target_headers = {
            target: (httpx.Headers({**_with_key(headers, key),
                                    "Content-Type": "application/json"}),
                     httpx.Headers(_with_key(headers, key)))
            for target, key in (target_keys or {}).items()
        }
        """Per target key (``connection_id:6``): POST and bodiless headers with its key."""
        self.targets_without_key = sorted(
            target for target, key in (target_keys or {}).items() if not _usable(key))
        self._urls: dict[str, tuple[httpx.URL, httpx.AsyncBaseTransport]] = {}
        self._extensions = {"timeout": httpx.Timeout(timeout_seconds).as_dict()}
        size = max(1, pool_size)
        self.http = http_backend.async_client(
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size,
                                keepalive_expiry=30),
            trust_env=True,
        )

    async def request(self, method: str, url: str, body: dict[str, Any] | None = None,
                      target: str | None = None) -> Answer:
        """Send one request (with ``target``'s key); every failure is an :class:`Answer`.

        The request goes straight to the transport the client's own mounts
        and proxy settings chose for the URL: the client layer above it
        (auth flow, redirect loop, cookie extraction, event hooks) has
        nothing to do here (no auth flow, no redirects followed, no
        cookies), yet costs as much CPU per request as the transport.
        """
        content = None if body is None else _compact_json(body).encode()
        with_body, bodiless = self._target_headers.get(
            target or "", (self._post_headers, self._headers))
        headers = with_body if content is not None else bodiless
        try:
            parsed, transport = self._route(url)
            request = httpx.Request(method, parsed, content=content, headers=headers,
                                    extensions=self._extensions)
            response = await transport.handle_async_request(request)
            try:
                read = await bodies.read_prefix(response, BODY_LIMIT * 4)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            return Answer(None, failure="timeout",
                          error=f"{type(exc).__name__}: no answer within "
                                f"{self.timeout_seconds}s")
        except (httpx.HTTPError, OSError) as exc:  # refused, reset, protocol errors
            return Answer(None, failure="network", error=f"{type(exc).__name__}: {exc}")
        return Answer(
            status=response.status_code,
            body=(_text(read.data, _charset(response.headers.get("Content-Type")))[:BODY_LIMIT]
                  or read.describe()),
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def _route(self, url: str) -> tuple[httpx.URL, httpx.AsyncBaseTransport]:
        """``url`` parsed, and its transport chosen, once: most entries post to a few URLs.

        The transport is the one the client's mounts give the URL (the
        proxy of ``HTTP(S)_PROXY`` unless ``NO_PROXY`` says otherwise).
        Close URLs carry the issue key, so the cache stops growing at
        :data:`PARSED_URLS` and the rest are resolved every time.
        """
        found = self._urls.get(url)
        if found is None:
            parsed = httpx.URL(url)
            found = parsed, self.http._transport_for_url(parsed)
            if len(self._urls) < PARSED_URLS:
                self._urls[url] = found
        return found

    async def deliver(self, entry: OutboxEntry, url: str, body: dict[str, Any] | None
                      ) -> Answer:
        return await self.request("POST", url, body, target=entry.target.key)

    async def post(self, url: str, body: dict[str, Any] | None,
                   target: str | None = None) -> Answer:
        """POST ``body`` with ``target``'s key (``doctor``'s side-effect-free probes)."""
        return await self.request("POST", url, body, target=target)

    async def get(self, url: str) -> Answer:
        """GET without a key (DevLake's ``/version``)."""
        return await self.request("GET", url)

    async def aclose(self) -> None:
        await self.http.aclose()


def _usable(key: SecretStr | None) -> bool:
    return key is not None and bool(key.get_secret_value())


def _with_key(headers: dict[str, str], key: SecretStr | None) -> dict[str, str]:
    if key is None or not key.get_secret_value():
        return dict(headers)
    return {**headers, "Authorization": f"Bearer {key.get_secret_value()}"}


def _charset(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a ``Content-Type`` (the email parser costs more)."""
    if not content_type or "charset" not in content_type.lower():
        return None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _text(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", "replace")


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dry_run_line(entry: OutboxEntry, url: str, body: dict[str, Any] | None) -> str:
    """One JSON line: where the record would go and what would be posted."""
    return json.dumps(
        {
            "target": entry.target.key,
            "team": entry.target.team,
            "kind": entry.kind,
            "record_id": entry.record_id,
            "url": url,
            "payload": body,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


class DryRunPrinter:
    """A :class:`Sender` that prints :func:`dry_run_line` and reports success."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.printed = 0

    async def deliver(self, entry: OutboxEntry, url: str, body: dict[str, Any] | None
                      ) -> Answer:
        line = dry_run_line(entry, url, body) + "\n"
        stream = self._stream or sys.stdout
        with self._lock:  # one write per line: lines never interleave
            stream.write(line)
            stream.flush()
            self.printed += 1
        return Answer(status=200, body="dry run")

    async def aclose(self) -> None:
        return None
