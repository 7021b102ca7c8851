"""Which DevLake targets receive a record, and at which URL.

Every record goes to the global target; a deployment also goes to each team
whose ``argocd_components`` lists its component, an incident to each team
whose ``webrca_products`` lists one of its products. Two teams naming the same
target share one delivery: DevLake would only upsert the same record twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from doraforwarder.config import DevLakeConfig, TeamConfig

TargetKind = Literal["connection_id", "connection_name", "project_name"]
RecordKind = Literal["deployment", "issue", "close"]


class Target(BaseModel):
    """Where a record goes in DevLake: a webhook connection (by id or name) or a project."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TargetKind
    value: str
    team: str = "global"
    """``global`` or the team name; for logs and metrics only."""

    @property
    def key(self) -> str:
        """Identity of the destination: two teams naming the same target share it."""
        return f"{self.kind}:{self.value}"


def _target(team: str, project_id: str | None, connection_name: str | None,
            project_name: str | None) -> Target:
    if project_id:
        return Target(kind="connection_id", value=project_id, team=team)
    if connection_name:
        return Target(kind="connection_name", value=connection_name, team=team)
    if project_name:
        return Target(kind="project_name", value=project_name, team=team)
    raise ValueError(f"{team}: no target configured")


def team_target(team: TeamConfig) -> Target:
    return _target(team.name, team.project_id, team.connection_name, team.project_name)


def global_target(config: DevLakeConfig) -> Target:
    return _target("global", config.project_id, config.connection_name, config.project_name)


def _unique(targets: Iterable[Target]) -> list[Target]:
    seen: set[str] = set()
    unique = []
    for target in targets:
        if target.key not in seen:
            seen.add(target.key)
            unique.append(target)
    return unique


class Router:
    """Pure routing over the ``integration.devlake`` section."""

    def __init__(self, config: DevLakeConfig) -> None:
        self.config = config
        self.global_target = global_target(config)

    def for_component(self, component: str) -> list[Target]:
        """Targets of a deployment of ``component``: global first, then teams in file order."""
        teams = (team_target(t) for t in self.config.teams if component in t.argocd_components)
        return _unique([self.global_target, *teams])

    def for_products(self, products: Iterable[str]) -> list[Target]:
        """Targets of an incident touching ``products``.

        DevLake takes issues only through webhook connections, so targets
        given as a project name are left out here.
        """
        wanted = set(products)
        teams = (team_target(t) for t in self.config.teams if wanted & set(t.webrca_products))
        targets = _unique([self.global_target, *teams])
        return [target for target in targets if target.kind != "project_name"]


def target_url(base_url: str, api_prefix: str, target: Target) -> str:
    """The URL of ``target`` itself: its webhook connection, or its project.

    ``base_url`` may end in ``/`` or not; ``api_prefix`` is ``/api/rest``
    through config-ui or ``/api`` directly on the DevLake server. A GET of it
    tells whether the target exists (``doctor`` uses it).
    """
    base = base_url.rstrip("/")
    prefix = "/" + api_prefix.strip("/") if api_prefix.strip("/") else ""
    value = quote(target.value, safe="")
    if target.kind == "project_name":
        return f"{base}{prefix}/projects/{value}"
    if target.kind == "connection_id":
        return f"{base}{prefix}/plugins/webhook/connections/{value}"
    return f"{base}{prefix}/plugins/webhook/connections/by-name/{value}"


def endpoint(base_url: str, api_prefix: str, target: Target, kind: RecordKind,
             record_id: str = "") -> str:
    """The URL to POST ``kind`` to ``target``; ``record_id`` is the issue key for ``close``."""
    if target.kind == "project_name" and kind != "deployment":
        raise ValueError(
            f"DevLake accepts only deployments by project name; {kind} to project "
            f"{target.value!r} needs a connection id or name"
        )
    webhook = target_url(base_url, api_prefix, target)
    if kind == "deployment":
        return f"{webhook}/deployments"
    if kind == "issue":
        return f"{webhook}/issues"
    return f"{webhook}/issue/{quote(record_id, safe='')}/close"
