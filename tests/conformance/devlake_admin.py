"""Setting DevLake up through its API, as a user does in config-ui, and taking it down again.

Every call goes through the open API (``{prefix}/...``) with the user's API
key, so the suite needs nothing but the URL and the key. What it creates is
recorded and removed in reverse order by :meth:`Admin.cleanup`, whatever
failed in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conformance.settings import Conformance

FINISHED = {"TASK_COMPLETED", "TASK_FAILED", "TASK_CANCELLED", "TASK_PARTIAL"}


class DevLakeError(Exception):
    """DevLake answered a setup call with an error (status and body, never the key)."""


@dataclass
class Admin:
    """``Admin(conformance)``: projects, webhook connections, API keys, blueprint runs."""

    conformance: Conformance
    client: httpx.Client = field(init=False)
    undo: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.conformance.url + self.conformance.prefix,
            headers={"Authorization": f"Bearer {self.conformance.key}"}, timeout=60)

    def call(self, method: str, path: str, body: Any = None, *,
             ok: tuple[int, ...] = (200, 201)) -> Any:
        answer = self.client.request(method, path, json=body)
        if answer.status_code == 401 and '"unauthorized"' in answer.text:
            raise DevLakeError(
                f"{method} {self.conformance.prefix}{path} -> 401 unauthorized with an API key: "
                "this DevLake runs with AUTH_ENABLED=true, which drops the key's user on /rest "
                "(apache/devlake#8913, open at 420e494b): no API key works, the daemon's neither")
        if answer.status_code not in ok:
            raise DevLakeError(f"{method} {self.conformance.prefix}{path} -> "
                               f"{answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else None

    # --- what a user creates --------------------------------------------------------------

    def project(self, name: str) -> int:
        """A project with the DORA metric on; returns its blueprint's id."""
        created = self.call("POST", "/projects", {
            "name": name, "description": "doraforwarder conformance (throwaway)",
            "enable": True,
            "metrics": [{"pluginName": "dora", "pluginOption": {}, "enable": True}],
        })
        self.undo.append((f"project {name}", lambda: self.call(
            "DELETE", f"/projects/{name}", ok=(200, 204, 404))))
        blueprint = created.get("blueprint") or self.call("GET", f"/projects/{name}")["blueprint"]
        return int(blueprint["id"])

    def webhook_connection(self, name: str) -> dict[str, Any]:
        """A webhook connection; the answer holds its id and its own API key (``apiKey``)."""
        created: dict[str, Any] = self.call("POST", "/plugins/webhook/connections",
                                            {"name": name})
        connection_id = int(created["id"])
        self.undo.append((f"connection {name}", lambda: self.call(
            "DELETE", f"/plugins/webhook/connections/{connection_id}", ok=(200, 204, 404))))
        return created

    def forget_connection_named(self, name: str) -> None:
        """Remove at clean-up a connection DevLake created itself (the project route's)."""
        def delete() -> None:
            for connection in self.call("GET", "/plugins/webhook/connections") or []:
                if connection.get("name") == name:
                    self.call("DELETE", f"/plugins/webhook/connections/{connection['id']}",
                              ok=(200, 204, 404))
        self.undo.append((f"connection {name}", delete))

    def attach(self, blueprint_id: int, connection_ids: list[int]) -> None:
        self.call("PATCH", f"/blueprints/{blueprint_id}", {
            "connections": [{"pluginName": "webhook", "connectionId": cid, "scopes": []}
                            for cid in connection_ids]})

    def blueprint_connections(self, blueprint_id: int) -> list[int]:
        blueprint = self.call("GET", f"/blueprints/{blueprint_id}")
        return [int(c["connectionId"]) for c in blueprint.get("connections") or []
                if c.get("pluginName") == "webhook"]

    def api_key(self, name: str, allowed_path: str) -> str:
        """A key an administrator creates (Settings -> API keys); returns its secret."""
        created = self.call("POST", "/api-keys", {
            "name": name, "expiredAt": None, "allowedPath": allowed_path, "type": "devlake"})
        key_id = created["id"]
        self.undo.append((f"api key {name}", lambda: self.call(
            "DELETE", f"/api-keys/{key_id}", ok=(200, 204, 404))))
        return str(created["apiKey"])

    def post_pull_request(self, connection_id: int, body: dict[str, Any]) -> None:
        self.call("POST", f"/plugins/webhook/connections/{connection_id}/pull_requests", body)

    # --- running the DORA computation -------------------------------------------------------

    def run_blueprint(self, blueprint_id: int, timeout: float = 600) -> dict[str, Any]:
        """Trigger the blueprint (what its schedule does) and wait for its pipeline to end."""
        pipeline = self.call("POST", f"/blueprints/{blueprint_id}/trigger",
                             {"skipCollectors": False, "fullSync": False})
        deadline = time.monotonic() + timeout
        while True:
            state: dict[str, Any] = self.call("GET", f"/pipelines/{pipeline['id']}")
            if state.get("status") in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise DevLakeError(f"pipeline {pipeline['id']} still {state.get('status')} "
                                   f"after {timeout:.0f}s")
            time.sleep(1)

    # --- taking it down -----------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove everything created, newest first; returns what could not be removed."""
        failed = []
        while self.undo:
            what, undo = self.undo.pop()
            try:
                undo()
            except (DevLakeError, httpx.HTTPError) as exc:
                failed.append(f"{what}: {exc}")
        self.client.close()
        return failed
