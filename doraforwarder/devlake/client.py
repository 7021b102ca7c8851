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
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol, TextIO

import httpx
from pydantic import SecretStr

from doraforwarder import __version__
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


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class Sender(Protocol):
    """Something that delivers one validated body to one URL."""

    async def deliver(self, entry: OutboxEntry, url: str, body: dict[str, Any] | None
                      ) -> Answer: ...

    async def aclose(self) -> None: ...


class DevLakeClient:
    """httpx client for the DevLake webhook routes."""

    def __init__(self, token: SecretStr | None, timeout_seconds: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"User-Agent": f"doraforwarder/{__version__}", "Accept": "application/json"}
        if token is not None and token.get_secret_value():
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self.has_token = "Authorization" in headers
        self._http = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout_seconds), transport=transport,
            follow_redirects=False,
        )

    async def request(self, method: str, url: str, body: dict[str, Any] | None = None
                      ) -> Answer:
        """Send one request; every failure is an :class:`Answer`, never an exception."""
        try:
            if body is None:
                response = await self._http.request(method, url)
            else:
                response = await self._http.request(method, url, json=body)
        except httpx.TimeoutException as exc:
            return Answer(None, failure="timeout", error=f"{type(exc).__name__}: {exc}")
        except httpx.HTTPError as exc:  # connection refused/reset, protocol errors
            return Answer(None, failure="network", error=f"{type(exc).__name__}: {exc}")
        return Answer(
            status=response.status_code,
            body=response.text[:BODY_LIMIT],
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    async def deliver(self, entry: OutboxEntry, url: str, body: dict[str, Any] | None
                      ) -> Answer:
        return await self.request("POST", url, body)

    async def get(self, url: str) -> Answer:
        """GET (connection look-ups for ``doctor``)."""
        return await self.request("GET", url)

    async def aclose(self) -> None:
        await self._http.aclose()


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
