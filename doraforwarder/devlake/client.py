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
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

from doraforwarder import __version__
from doraforwarder.backoff import parse_retry_after
from doraforwarder.outbox import BODY_LIMIT, OutboxEntry

FailureKind = Literal["timeout", "network"]


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
    """HTTP client for the DevLake webhook routes: one keep-alive pool for every worker.

    Built on aiohttp rather than httpx: draining a backlog is one small POST
    after another, and httpx/httpcore spend about 0.85 ms of CPU per request
    here (a failed ``import sniffio`` on every request among it) against
    about 0.12 ms for aiohttp, which made the daemon CPU-bound at ~400
    records/s on two cores. ``pool_size`` caps the connections (keep-alive,
    reused): one per delivery worker is all that is ever used.

    Proxies come from ``HTTP(S)_PROXY``/``NO_PROXY`` as with any client
    here, looked up once per host: aiohttp's own ``trust_env`` re-reads the
    environment and ``~/.netrc`` in a thread for every request, which cost a
    third of the delivery CPU.
    """

    def __init__(self, token: SecretStr | None, timeout_seconds: float, *,
                 pool_size: int = 8) -> None:
        headers = {"User-Agent": f"doraforwarder/{__version__}", "Accept": "application/json"}
        if token is not None and token.get_secret_value():
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self.has_token = "Authorization" in headers
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._pool_size = max(1, pool_size)
        self._session: aiohttp.ClientSession | None = None
        self._env_proxies = urllib.request.getproxies()
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _http(self) -> aiohttp.ClientSession:
        """The session, created on first use: aiohttp wants a running event loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30),
                json_serialize=_compact_json,
            )
        return self._session

    def _proxy(self, url: str) -> str | None:
        """The proxy for ``url`` from the environment (None: connect directly)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxies:
            host = parts.hostname or ""
            bypass = bool(self._env_proxies) and bool(urllib.request.proxy_bypass(host))
            self._proxies[key] = None if bypass else self._env_proxies.get(parts.scheme)
        return self._proxies[key]

    async def request(self, method: str, url: str, body: dict[str, Any] | None = None
                      ) -> Answer:
        """Send one request; every failure is an :class:`Answer`, never an exception."""
        try:
            async with self._http().request(method, url, json=body, proxy=self._proxy(url),
                                            allow_redirects=False) as response:
                raw = await response.read()
                return Answer(
                    status=response.status,
                    body=_text(raw[:BODY_LIMIT * 4], response.charset)[:BODY_LIMIT],
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError as exc:
            return Answer(None, failure="timeout",
                          error=f"{type(exc).__name__}: no answer within {self._timeout.total}s")
        except (aiohttp.ClientError, OSError) as exc:  # refused, reset, protocol errors
            return Answer(None, failure="network", error=f"{type(exc).__name__}: {exc}")

    async def deliver(self, entry: OutboxEntry, url: str, body: dict[str, Any] | None
                      ) -> Answer:
        return await self.request("POST", url, body)

    async def get(self, url: str) -> Answer:
        """GET (connection look-ups for ``doctor``)."""
        return await self.request("GET", url)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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
