"""Talking to DevLake: one POST per outbox entry, and what its answer means.

:class:`DevLakeClient` posts with ``Authorization: Bearer $DEVLAKE_WEBHOOK_TOKEN``
and never raises for a failed delivery: every outcome (an HTTP status, a
timeout, a refused connection) comes back as an :class:`Answer`, which the
pure :func:`classify` turns into what to do with the entry. The
:class:`DryRunPrinter` has the same ``deliver`` method and prints instead, so
``run --dry-run`` and ``backfill --dry-run`` share one code path with real
delivery.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

import httpx
from pydantic import SecretStr

from doraforwarder import __version__
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
    not_found, client_error, unexpected_status."""


def classify(answer: Answer) -> Verdict:
    """What to do with an entry after ``answer`` (the delivery rules, in one place).

    2xx: done. Timeouts, network errors, 408, 429 and 5xx: transient, retry
    with backoff forever. 401/403: the token is wrong, keep the entry and retry
    slowly. Other 4xx: retrying cannot help, dead-letter. Anything else (a
    redirect): retry, it is most likely a proxy in the way.
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
    if status >= 500:
        return Verdict("retry", "server_error")
    if status in (400, 422):
        return Verdict("dead", "rejected")
    if status == 404:
        return Verdict("dead", "not_found")
    if 400 <= status < 500:
        return Verdict("dead", "client_error")
    return Verdict("retry", "unexpected_status")


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
                 pool_size: int = 8) -> None:
        headers = {"User-Agent": f"doraforwarder/{__version__}", "Accept": "application/json"}
        if token is not None and token.get_secret_value():
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self.has_token = "Authorization" in headers
        self.timeout_seconds = timeout_seconds
        self._headers = headers
        self._post_headers = {**headers, "Content-Type": "application/json"}
        self._urls: dict[str, tuple[httpx.URL, httpx.AsyncBaseTransport]] = {}
        self._extensions = {"timeout": httpx.Timeout(timeout_seconds).as_dict()}
        size = max(1, pool_size)
        self.http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size,
                                keepalive_expiry=30),
            trust_env=True,
        )

    async def request(self, method: str, url: str, body: dict[str, Any] | None = None
                      ) -> Answer:
        """Send one request; every failure is an :class:`Answer`, never an exception.

        The request goes straight to the transport the client's own mounts
        and proxy settings chose for the URL: the client layer above it
        (auth flow, redirect loop, cookie extraction, event hooks) has
        nothing to do here (no auth flow, no redirects followed, no
        cookies), yet costs as much CPU per request as the transport.
        """
        content = None if body is None else _compact_json(body).encode()
        try:
            parsed, transport = self._route(url)
            request = httpx.Request(method, parsed, content=content,
                                    headers=self._post_headers if content is not None
                                    else self._headers, extensions=self._extensions)
            response = await transport.handle_async_request(request)
            try:
                raw = await _read(response)
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
            body=_text(raw[:BODY_LIMIT * 4], _charset(response.headers.get("Content-Type"))
                       )[:BODY_LIMIT],
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
        return await self.request("POST", url, body)

    async def get(self, url: str) -> Answer:
        """GET (look-ups of connections and projects, as ``doctor`` does)."""
        return await self.request("GET", url)

    async def aclose(self) -> None:
        await self.http.aclose()


async def _read(response: httpx.Response) -> bytes:
    """The body; straight from the stream when it is not content-encoded (we never ask)."""
    if "Content-Encoding" in response.headers:
        return await response.aread()
    return b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]


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
