"""The fake DevLake's tables, keys and route handlers: what the backend stores and answers.

The base of :class:`~doraforwarder.testing.fake_devlake.FakeDevLake` rather than an
object of its own (as :class:`~doraforwarder.testing.fake_kube_store.KubeStore` is
of the fake Kubernetes API), so tests keep scripting and inspecting the one fake
(``devlake.add_project``, ``devlake.deployment_ids``). The server (the doors,
path handling, faults, holding requests) is in :mod:`.fake_devlake`; this module
holds the state behind it: connections and their keys, projects, the
``cicd_deployments``, deployment-commit and issue rows, every request answered,
DevLake's key check and its route handlers. Every attribute is guarded by
``_lock``; the handlers are called with it held.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from doraforwarder.testing.fake_devlake_bodies import (
    DecodeError,
    Invalid,
    check_deployment,
    check_issue,
    parse_devlake_date,
)
from doraforwarder.testing.fake_devlake_records import (
    ApiKey,
    Posted,
    Project,
    connection_key_value,
    deployment_commit_row_id,
)
from doraforwarder.testing.fake_devlake_routing import (
    SUCCESS,
    HandlerError,
    Route,
    devlake_error,
    middleware_error,
)
from doraforwarder.testing.http_fake import FakeServer

GLOBAL_ALLOWED_PATH = "/plugins/webhook/.*"
NAME_LIMIT = 100


MAX_DEPLOYMENT_COMMITS = 65535 // 31
"""2114: DevLake saves a deployment's commit rows in one INSERT, MySQL takes at most 65535
placeholders and ``cicd_deployment_commits`` has 31 columns (2115 rows answered 500 on the
real v1.0.3 and main 420e494b, 2114 stored)."""


class DevLakeStore(FakeServer):
    """Connections, keys, projects and the rows DevLake keeps; subclasses set ``self.server``."""

    def __init__(self, token: str | None, connections: Mapping[int, str] | None,
                 projects: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self.token = token
        """The global key; None (and no other key added) accepts any request."""
        self.api_keys: dict[str, ApiKey] = {}
        self._keys_added = False
        self.connections: dict[int, str] = {}
        self.projects: dict[str, Project] = {}
        self._created: dict[int, int] = {}
        """Project-route connections -> the request number that created them."""
        self._arrivals = 0
        self.deployments: dict[tuple[int, str], dict[str, Any]] = {}
        """Deployment bodies as accepted, per (connection, id)."""
        self.cicd_deployments: dict[str, dict[str, Any]] = {}
        """DevLake's ``cicd_deployments``: one row per raw id, whatever the connection."""
        self.deployment_commits: dict[tuple[int, str, str, str], dict[str, Any]] = {}
        """DevLake's ``cicd_deployment_commits``, per (connection, id, repoUrl, sha)."""
        self.issues: dict[tuple[int, str], dict[str, Any]] = {}
        """Issue bodies as upserted, per (connection, issueKey)."""
        self.webhook_pull_requests: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[Posted] = []
        if token is not None:
            self.api_keys[token] = ApiKey(token, GLOBAL_ALLOWED_PATH)
        for connection_id, name in (connections if connections is not None
                                    else {1: "global"}).items():
            self.add_connection(connection_id, name)
        for project in projects:
            self.add_project(project)

    # --- configuration ------------------------------------------------------------------

    def add_connection(self, connection_id: int, name: str) -> str:
        """A webhook connection, created as DevLake's UI does: with its own key (returned)."""
        key = connection_key_value(connection_id)
        with self._lock:
            self.connections[connection_id] = name
            self.api_keys[key] = ApiKey(key, f"/plugins/webhook/connections/{connection_id}/.*",
                                        connection_id=connection_id)
        return key

    def connection_key(self, connection_id: int) -> str:
        """The key created with connection ``connection_id``."""
        with self._lock:
            for key in self.api_keys.values():
                if key.connection_id == connection_id:
                    return key.key
        raise KeyError(f"connection {connection_id} has no key of its own")

    def add_api_key(self, key: str, allowed_path: str = ".*", expired: bool = False) -> None:
        """A key an administrator creates (``allowed_path`` is a Go regexp, searched)."""
        with self._lock:
            self.api_keys[key] = ApiKey(key, allowed_path, expired=expired)
            self._keys_added = True

    def expire_key(self, key: str) -> None:
        with self._lock:
            self.api_keys[key].expired = True

    def set_token(self, token: str | None) -> None:
        """Replace the global key (None: no global key; then no check unless keys were added)."""
        with self._lock:
            if self.token is not None:
                self.api_keys.pop(self.token, None)
            self.token = token
            if token is not None:
                self.api_keys[token] = ApiKey(token, GLOBAL_ALLOWED_PATH)

    def add_project(self, name: str, blueprint: bool = True,
                    connections: Iterable[int] = ()) -> None:
        with self._lock:
            project = self.projects.setdefault(name, Project(name, blueprint))
            project.blueprint = project.blueprint or blueprint
            for connection_id in connections:
                if connection_id not in project.connection_ids:
                    project.connection_ids.append(connection_id)

    def attach(self, project: str, connection_id: int) -> None:
        """Add a connection to the project's blueprint (the project must have one)."""
        with self._lock:
            found = self.projects[project]
            if not found.blueprint:
                raise ValueError(f"project {project} has no blueprint")
            if connection_id not in self.connections:
                raise KeyError(f"no connection {connection_id}")
            if connection_id not in found.connection_ids:
                found.connection_ids.append(connection_id)

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
            return self._connection_named(name)

    def project_connection(self, project: str) -> int | None:
        """The ``<project>_deployments`` connection the project route created or found."""
        with self._lock:
            found = self.projects.get(project)
            if found is None:
                return None
            for connection_id in found.connection_ids:
                if self.connections.get(connection_id) == f"{project}_deployments":
                    return connection_id
            return None

    def commit_rows(self, connection_ids: Iterable[int] | None = None
                    ) -> list[dict[str, Any]]:
        """Deployment-commit rows (copies), of the given connections or all."""
        wanted = None if connection_ids is None else set(connection_ids)
        with self._lock:
            return [dict(row) for key, row in self.deployment_commits.items()
                    if wanted is None or key[0] in wanted]

    def issue_rows(self, connection_ids: Iterable[int] | None = None
                   ) -> list[tuple[int, dict[str, Any]]]:
        """(connection, issue body) pairs, of the given connections or all."""
        wanted = None if connection_ids is None else set(connection_ids)
        with self._lock:
            return [(key[0], dict(issue)) for key, issue in self.issues.items()
                    if wanted is None or key[0] in wanted]

    def project_connections(self, project: str) -> list[int]:
        with self._lock:
            return list(self.projects[project].connection_ids)

    def project_names(self) -> list[str]:
        with self._lock:
            return list(self.projects)

    # --- DevLake's key check and route handlers ---------------------------------------

    def _check_key(self, header: str | None, path: str) -> web.Response | None:
        """DevLake's ``CheckAuthorizationHeader`` on the path without ``/rest``."""
        with self._lock:
            if self.token is None and not self._keys_added:
                return None
            if not header:
                return middleware_error(401, "token is missing")
            value = header.removeprefix("Bearer ")
            if value == header or not value:
                return middleware_error(401, "token is not present or malformed")
            key = self.api_keys.get(value)
            if key is None:
                return middleware_error(403, "api key is invalid")
            if key.expired:
                return middleware_error(403, "api key has expired")
            try:
                matched = re.search(key.allowed_path, path) is not None
            except re.error as exc:
                return middleware_error(500, str(exc))
            if not matched:
                return middleware_error(403, "path doesn't match api key's scope")
            return None

    def _connection_named(self, name: str) -> int | None:
        for connection_id, connection_name in self.connections.items():
            if connection_name == name:
                return connection_id
        return None

    def _connection(self, ref: tuple[str, str]) -> int:
        kind, value = ref
        if kind == "id":
            if not value.isascii() or not value.isdigit() or int(value) < 1:
                raise HandlerError(400, "invalid connectionId")
            if int(value) not in self.connections:
                raise HandlerError(404, "record not found")
            return int(value)
        if len(value) > NAME_LIMIT:
            raise HandlerError(400, "invalid connectionName")
        found = self._connection_named(value)
        if found is None:
            raise HandlerError(404, "record not found")
        return found

    def _project_connection(self, name: str, arrival: int = 2**62) -> int:
        """The project route's ``getOrCreateConnection``: runs before the body is read.

        Not atomic in DevLake: a request that looked the connection up while
        another was creating it tries to create it too and is refused with
        400 ``the connection name already exists``. Requests held together
        (:meth:`hold`) look it up as they arrive.
        """
        if len(name) > NAME_LIMIT:
            raise HandlerError(400, "invalid projectName")
        project = self.projects.get(name)
        if project is None:
            raise HandlerError(404, f"could not find project [{name}] in DB")
        if not project.blueprint:
            raise HandlerError(400, f"project has no blueprint: {name}")
        wanted = f"{name}_deployments"
        for connection_id in project.connection_ids:
            if self.connections.get(connection_id) == wanted:
                if self._created.get(connection_id, 0) >= arrival:
                    raise HandlerError(400, "the connection name already exists")
                return connection_id
        if self._connection_named(wanted) is not None:
            raise HandlerError(400, "the connection name already exists")
        connection_id = max(self.connections, default=0) + 1
        self.connections[connection_id] = wanted  # no key of its own
        project.connection_ids.append(connection_id)
        self._created[connection_id] = self._arrivals
        # DevLake v1.0.3 (and 420e494) returns the lookup's not-found error after creating
        # and attaching the connection (a shadowed ``err`` in getOrCreateConnection): the
        # call that creates it stores nothing and answers 404; the next one is stored.
        raise HandlerError(404, "record not found")

    def _serve(self, route: Route, body: dict[str, Any] | None, arrival: int = 2**62
               ) -> tuple[web.Response, Route, int | None]:
        """Route handlers; called with the lock held."""
        if route.kind == "connections":
            listing = [self._connection_json(i) for i in sorted(self.connections)]
            return web.json_response(listing), route, None
        if route.kind == "create_connection":
            return self._create_connection(body), route, None
        if route.project is not None:
            connection_id = self._project_connection(route.project, arrival)
        else:
            assert route.connection_ref is not None
            connection_id = self._connection(route.connection_ref)
        if route.kind == "connection":
            return web.json_response(self._connection_json(connection_id)), route, connection_id
        try:
            if route.kind == "deployment":
                check_deployment(body)
                assert body is not None
                self._store_deployment(connection_id, body)
            elif route.kind == "issue":
                check_issue(body)
                assert body is not None
                self.issues[(connection_id, body["issueKey"])] = dict(body)
            elif route.kind == "pull_request":
                self.webhook_pull_requests.append((connection_id, dict(body or {})))
            else:
                assert route.issue_key is not None
                issue = self.issues.get((connection_id, route.issue_key))
                if issue is None:
                    raise HandlerError(404, "issue not found")
                issue["status"] = "DONE"
                issue["originalStatus"] = ""
                issue["closed"] = True
        except DecodeError as exc:
            return web.json_response(str(exc), status=400), route, connection_id
        except Invalid as exc:
            detail = str(exc)
            if detail.startswith("input json error: "):
                return web.json_response({
                    "success": False, "message": f"input json error (400): {detail[18:]}",
                    "causes": [detail[18:]], "data": None}, status=400), route, connection_id
            return devlake_error(400, detail), route, connection_id
        except HandlerError as exc:
            return devlake_error(exc.status, exc.message), route, connection_id
        return web.json_response(SUCCESS), route, connection_id

    def _connection_json(self, connection_id: int) -> dict[str, Any]:
        return {"id": connection_id, "name": self.connections[connection_id]}

    def _create_connection(self, body: dict[str, Any] | None) -> web.Response:
        name = (body or {}).get("name")
        if not isinstance(name, str) or not name:
            return devlake_error(400, "name is required")
        if self._connection_named(name) is not None:
            return devlake_error(400, "the connection name already exists")
        connection_id = max(self.connections, default=0) + 1
        key = connection_key_value(connection_id)
        self.connections[connection_id] = name
        self.api_keys[key] = ApiKey(key, f"/plugins/webhook/connections/{connection_id}/.*",
                                    connection_id=connection_id)
        return web.json_response({**self._connection_json(connection_id),
                                  "apiKey": {"apiKey": key}})

    def _store_deployment(self, connection_id: int, body: dict[str, Any]) -> None:
        """Rows as DevLake writes them (called with the lock held, after the checks).

        More rows than one MySQL statement can hold fail as on v1.0.3 and main
        420e494b: 500, nothing stored (:data:`MAX_DEPLOYMENT_COMMITS`).
        """
        if len(body["deploymentCommits"]) > MAX_DEPLOYMENT_COMMITS:
            raise HandlerError(500, "Error 1390 (HY000): Prepared statement contains too many "
                                    "placeholders")
        deployment_id: str = body["id"]
        environment = body.get("environment") or "PRODUCTION"
        started = parse_devlake_date(body["startedDate"])
        finished = parse_devlake_date(body["finishedDate"])
        created = parse_devlake_date(body.get("createdDate") or body["startedDate"])
        scope = f"webhook:{connection_id}"
        self.deployments[(connection_id, deployment_id)] = dict(body)
        for commit in body["deploymentCommits"]:
            key = (connection_id, deployment_id, commit["repoUrl"], commit["commitSha"])
            self.deployment_commits[key] = {
                "id": deployment_commit_row_id(connection_id, deployment_id,
                                               commit["repoUrl"], commit["commitSha"]),
                "connection_id": connection_id,
                "cicd_scope_id": scope,
                "cicd_deployment_id": deployment_id,
                "repo_url": commit["repoUrl"],
                "commit_sha": commit["commitSha"],
                "ref_name": commit.get("refName") or "",
                "started_date": parse_devlake_date(commit["startedDate"]),
                "finished_date": parse_devlake_date(commit["finishedDate"]),
                "created_date": parse_devlake_date(commit.get("createdDate") or "") or created,
                "environment": environment,
                "result": commit.get("result") or "SUCCESS",
                "status": commit.get("status") or "DONE",
            }
        first = body["deploymentCommits"][0]
        self.cicd_deployments[deployment_id] = {
            "id": deployment_id, "cicd_scope_id": scope, "environment": environment,
            "result": body.get("result") or "SUCCESS",
            "status": first.get("status") or "DONE",
            "name": body.get("name") or "", "display_title": body.get("displayTitle") or "",
            "started_date": started, "finished_date": finished, "created_date": created,
        }
