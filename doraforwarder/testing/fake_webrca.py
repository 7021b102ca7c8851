"""In-process fake of Red Hat SSO (token exchange) and the WebRCA incidents API.

It enforces the real contracts: form-encoded refresh-token exchange with
Keycloak-style errors, bearer access tokens that expire, 1-based pages with
``page``/``size``/``total``. Tests (and ``doraforwarder demo``) drive it
through a Python API: add, update, resolve and reopen incidents, bump
``updated_at`` the way WebRCA's background jobs do, and inject faults
(malformed pages, 5xx, 429, tokens expiring in the middle of a pagination).

State is shared between the test thread and the server thread, so every
access goes through one lock.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiohttp import web

from doraforwarder.testing.http_fake import BackgroundServer, FakeServer

TOKEN_PATH = "/auth/realms/redhat-external/protocol/openid-connect/token"
INCIDENTS_PATH = "/api/web-rca/v1/incidents"

PageFault = Literal[
    "invalid_json",
    "missing_items",
    "item_missing_incident_id",
    "item_missing_created_at",
    "item_bad_date",
    "not_an_object",
    "deeply_nested",
]


def iso(value: datetime) -> str:
    """WebRCA's time format (UTC, ``Z``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Fault:
    status: int
    retry_after: float | None = None


class FakeWebRCA(FakeServer):
    """SSO token endpoint + WebRCA incidents endpoint on one loopback port."""

    def __init__(
        self,
        offline_tokens: tuple[str, ...] = ("offline-token-good",),
        *,
        client_id: str = "cloud-services",
        expires_in: int = 900,
        start: datetime | None = None,
    ) -> None:
        self.offline_tokens = set(offline_tokens)
        self.client_id = client_id
        self.expires_in = expires_in
        self.clock = start or datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
        """The fake's idea of now for incident times; :meth:`tick` moves it."""
        self._lock = threading.Lock()
        self._incidents: dict[str, dict[str, Any]] = {}
        self._access_tokens: dict[str, float] = {}
        self._page_faults: dict[int, deque[PageFault]] = {}
        self._request_faults: deque[_Fault] = deque()
        self._token_faults: deque[_Fault] = deque()
        self._expire_after_requests: int | None = None
        self.token_exchanges = 0
        self.token_rejections = 0
        self.incident_requests: list[dict[str, Any]] = []
        """Each request: page, size, status answered."""
        self.endless = False
        """Misbehave: always answer full pages, whatever the page number."""
        self.announce_total = True
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_get(INCIDENTS_PATH, self._list)
        self.server = BackgroundServer(app)

    # --- lifecycle --------------------------------------------------------------
    @property
    def token_url(self) -> str:
        return self.server.url + TOKEN_PATH

    @property
    def api_url(self) -> str:
        return self.server.url + INCIDENTS_PATH

    # --- incidents ----------------------------------------------------------------
    def tick(self, minutes: float = 1) -> datetime:
        with self._lock:
            self.clock += timedelta(minutes=minutes)
            return self.clock

    def add_incident(self, incident_id: str, *, products: list[str] | None = None,
                     status: str = "investigating", summary: str | None = None,
                     severity: str = "major", **fields: Any) -> dict[str, Any]:
        """Add an incident created now; ``fields`` override anything (even with None)."""
        with self._lock:
            now = iso(self.clock)
            incident: dict[str, Any] = {
                "id": secrets.token_hex(8),
                "kind": "Incident",
                "href": f"{INCIDENTS_PATH}/{incident_id}",
                "incident_id": incident_id,
                "summary": summary if summary is not None else f"Outage {incident_id}",
                "description": f"What happened in {incident_id}",
                "products": products if products is not None else ["konflux"],
                "incident_type": "incident",
                "status": status,
                "severity": severity,
                "creator": {"name": "sre"},
                "participants": [],
                "timeline": [],
                "created_at": now,
                "updated_at": now,
                "last_changed_at": now,
                "resolved_at": None,
                "closed_at": None,
            }
            incident.update(fields)
            self._incidents[incident_id] = incident
            return copy.deepcopy(incident)

    def update_incident(self, incident_id: str, **fields: Any) -> dict[str, Any]:
        """A real change: moves ``updated_at`` and ``last_changed_at``."""
        with self._lock:
            incident = self._incidents[incident_id]
            now = iso(self.clock)
            incident.update({"updated_at": now, "last_changed_at": now})
            incident.update(fields)
            return copy.deepcopy(incident)

    def resolve(self, incident_id: str, *, status: str = "resolved",
                resolved_at: str | None = "now") -> dict[str, Any]:
        when = iso(self.clock) if resolved_at == "now" else resolved_at
        extra: dict[str, Any] = {"resolved_at": when}
        if status == "closed":
            extra["closed_at"] = iso(self.clock)
        return self.update_incident(incident_id, status=status, **extra)

    def reopen(self, incident_id: str, status: str = "investigating") -> dict[str, Any]:
        return self.update_incident(incident_id, status=status, resolved_at=None, closed_at=None)

    def bump_updated_at(self, incident_ids: list[str] | None = None) -> None:
        """What WebRCA's background jobs do: ``updated_at`` moves, nothing else."""
        with self._lock:
            now = iso(self.clock)
            for incident_id, incident in self._incidents.items():
                if incident_ids is None or incident_id in incident_ids:
                    incident["updated_at"] = now

    def incidents(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._incidents.values()))

    # --- faults -------------------------------------------------------------------
    def malform_page(self, page: int, fault: PageFault, times: int = 1) -> None:
        """The next ``times`` answers for ``page`` carry ``fault``."""
        with self._lock:
            self._page_faults.setdefault(page, deque()).extend([fault] * times)

    def fail_requests(self, count: int = 1, status: int = 503,
                      retry_after: float | None = None) -> None:
        """The next ``count`` incident requests answer ``status``."""
        with self._lock:
            self._request_faults.extend(_Fault(status, retry_after) for _ in range(count))

    def fail_token_requests(self, count: int = 1, status: int = 503) -> None:
        with self._lock:
            self._token_faults.extend(_Fault(status) for _ in range(count))

    def expire_tokens_after(self, requests: int) -> None:
        """Every access token expires once ``requests`` more incident requests were served."""
        with self._lock:
            self._expire_after_requests = requests

    def expire_all_tokens(self) -> None:
        with self._lock:
            self._access_tokens.clear()

    def revoke_offline_token(self, token: str) -> None:
        with self._lock:
            self.offline_tokens.discard(token)

    # --- handlers -----------------------------------------------------------------
    @staticmethod
    def _sso_error(status: int, error: str, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description},
                                 status=status)

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return self._sso_error(400, "invalid_request", "form body expected")
        form = await request.post()
        with self._lock:
            if self._token_faults:
                fault = self._token_faults.popleft()
                return web.Response(status=fault.status, text="upstream trouble")
            if form.get("grant_type") != "refresh_token":
                return self._sso_error(400, "unsupported_grant_type", "Unsupported grant_type")
            if form.get("client_id") != self.client_id:
                return self._sso_error(401, "unauthorized_client", "Invalid client credentials")
            refresh_token = form.get("refresh_token")
            if not isinstance(refresh_token, str) or refresh_token not in self.offline_tokens:
                self.token_rejections += 1
                return self._sso_error(400, "invalid_grant", "Invalid refresh token")
            access_token = secrets.token_urlsafe(24)
            self._access_tokens[access_token] = time.monotonic() + self.expires_in
            self.token_exchanges += 1
            return web.json_response({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "refresh_expires_in": 0,
                "scope": "openid offline_access",
            })

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self._access_tokens.get(token)
        return scheme.lower() == "bearer" and expiry is not None and time.monotonic() < expiry

    async def _list(self, request: web.Request) -> web.Response:
        try:
            page = int(request.query.get("page", "1"))
            size = int(request.query.get("size", "100"))
        except ValueError:
            return web.json_response({"reason": "page and size must be integers"}, status=400)
        if page < 1 or not 1 <= size <= 1000:
            return web.json_response({"reason": "page >= 1 and 1 <= size <= 1000"}, status=400)
        with self._lock:
            record: dict[str, Any] = {"page": page, "size": size}
            self.incident_requests.append(record)
            if not self._authorized(request):
                record["status"] = 401
                return web.json_response({"kind": "Error", "reason": "token expired"},
                                         status=401)
            if self._request_faults:
                fault = self._request_faults.popleft()
                record["status"] = fault.status
                headers = ({"Retry-After": str(fault.retry_after)}
                           if fault.retry_after is not None else {})
                return web.Response(status=fault.status, text="unavailable", headers=headers)
            if self._expire_after_requests is not None:
                self._expire_after_requests -= 1
                if self._expire_after_requests <= 0:
                    self._access_tokens.clear()
                    self._expire_after_requests = None
            record["status"] = 200
            everything = list(self._incidents.values())
            if self.endless:
                items = [dict(everything[i % len(everything)]) for i in range(size)] \
                    if everything else []
            else:
                items = everything[(page - 1) * size: page * size]
            items = copy.deepcopy(items)
            faults = self._page_faults.get(page)
            page_fault = faults.popleft() if faults else None
        document: dict[str, Any] = {"kind": "IncidentList", "page": page, "size": len(items),
                                    "items": items}
        if self.announce_total:
            document["total"] = len(everything)
        return self._faulty(document, page_fault)

    @staticmethod
    def _faulty(document: dict[str, Any], fault: PageFault | None) -> web.Response:
        if fault == "invalid_json":
            return web.Response(text='{"kind": "IncidentList", "items": [', status=200,
                                content_type="application/json")
        if fault == "deeply_nested":  # a hostile peer: nesting past Python's recursion limit
            depth = 100_000
            return web.Response(text='{"kind": "IncidentList", "items": [' + "[" * depth
                                + "]" * depth + "]}", status=200,
                                content_type="application/json")
        if fault == "missing_items":
            document.pop("items")
        items = document.get("items") or []
        if items and fault == "item_missing_incident_id":
            items[0].pop("incident_id")
        elif items and fault == "item_missing_created_at":
            items[0].pop("created_at")
        elif items and fault == "item_bad_date":
            items[0]["created_at"] = "yesterday-ish"
        elif items and fault == "not_an_object":
            items[0] = "ITN-as-a-string"
        return web.Response(text=json.dumps(document), status=200,
                            content_type="application/json")
