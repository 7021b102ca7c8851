"""Which DevLake targets receive a record, and at which URL.

Every record goes to the global target; a deployment also goes to each team
whose ``argocd_components`` lists its component, an incident to each team
whose ``webrca_products`` lists one of its products. Two teams naming the same
target share one delivery: DevLake would only upsert the same record twice.

URLs are DevLake's own routes, ``{prefix}/plugins/webhook/...`` with
``prefix`` ``/api/rest`` (config-ui) or ``/rest`` (the backend), names
escaped as DevLake's Go router expects (:mod:`doraforwarder.webhook_paths`):

- connection id: ``connections/{id}/deployments``, ``.../issues``,
  ``.../issue/{key}/close``;
- connection name: the same under ``connections/by-name/{name}/``;
- project name: deployments to ``projects/{name}/deployments`` (which finds
  or creates the connection ``{name}_deployments`` in the project), issues
  and closes to that connection by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from doraforwarder.webhook_paths import Prefix, escape_segment, normalize_prefix, unroutable_reason

if TYPE_CHECKING:
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
        """Targets of an incident touching ``products``: global first, then teams.

        A project target takes issues through the webhook connection its
        project route creates (``<projectName>_deployments``, by name), see
        :func:`endpoint`.
        """
        wanted = set(products)
        teams = (team_target(t) for t in self.config.teams if wanted & set(t.webrca_products))
        return _unique([self.global_target, *teams])

    def token_envs(self) -> dict[str, str]:
        """Target key -> the environment variable naming its API key."""
        envs = {self.global_target.key: self.config.token_env}
        for team in self.config.teams:
            envs.setdefault(team_target(team).key, self.config.team_token_env(team))
        return envs

    def targets(self) -> list[Target]:
        """Every configured target once: global first, then teams in file order."""
        return _unique([self.global_target, *map(team_target, self.config.teams)])


def project_connection_name(project_name: str) -> str:
    """The webhook connection DevLake's project route finds or creates for a project."""
    return f"{project_name}_deployments"


def api_base(base_url: str, api_prefix: str) -> str:
    """``base_url`` (with or without ``/``) plus the prefix, as DevLake routes it.

    Raises ValueError for a prefix DevLake does not have (``/api``, ...).
    """
    return base_url.rstrip("/") + normalize_prefix(api_prefix)


def _segment(value: str, prefix: Prefix, what: str) -> str:
    reason = unroutable_reason(value, prefix)
    if reason is not None:
        raise ValueError(f"DevLake cannot route {what} {value!r}: {reason}")
    return escape_segment(value)


def connection_url(base_url: str, api_prefix: str, target: Target) -> str:
    """The webhook connection that takes ``target``'s records (a project's: by name).

    Only routes below it exist for POST (``.../deployments``, ``.../issues``);
    a GET of it through ``/rest`` is never covered by the connection's own key.
    """
    prefix = normalize_prefix(api_prefix)
    root = f"{api_base(base_url, prefix)}/plugins/webhook/connections"
    if target.kind == "connection_id":
        return f"{root}/{_segment(target.value, prefix, 'connection id')}"
    name = target.value if target.kind == "connection_name" \
        else project_connection_name(target.value)
    return f"{root}/by-name/{_segment(name, prefix, 'connection name')}"


def project_deployments_url(base_url: str, api_prefix: str, project_name: str) -> str:
    """DevLake 1.0.3+'s project route: finds or creates ``<project>_deployments`` first."""
    prefix = normalize_prefix(api_prefix)
    return (f"{api_base(base_url, prefix)}/plugins/webhook/projects/"
            f"{_segment(project_name, prefix, 'project name')}/deployments")


def endpoint(base_url: str, api_prefix: str, target: Target, kind: RecordKind,
             record_id: str = "") -> str:
    """The URL to POST ``kind`` to ``target``; ``record_id`` is the issue key for ``close``.

    Deployments to a project go to the project route; its issues go to the
    connection that route creates, by name. Raises ValueError for what DevLake
    can never route.
    """
    if kind == "deployment" and target.kind == "project_name":
        return project_deployments_url(base_url, api_prefix, target.value)
    webhook = connection_url(base_url, api_prefix, target)
    if kind == "deployment":
        return f"{webhook}/deployments"
    if kind == "issue":
        return f"{webhook}/issues"
    key = _segment(record_id, normalize_prefix(api_prefix), "issue key")
    return f"{webhook}/issue/{key}/close"


def scope_path(url: str, base_url: str, api_prefix: str) -> str:
    """The path DevLake matches a key's allowed path against (without the prefix)."""
    base = api_base(base_url, api_prefix)
    return url[len(base):] if url.startswith(base) else url
