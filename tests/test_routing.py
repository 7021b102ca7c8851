"""Team routing and endpoint URLs: pure tables."""

from __future__ import annotations

from typing import Any

import pytest

from doraforwarder.config import DevLakeConfig
from doraforwarder.devlake.routing import Router, endpoint
from doraforwarder.outbox import Target


def config(teams: list[dict[str, Any]], **global_target: str) -> DevLakeConfig:
    return DevLakeConfig.model_validate({
        "base_url": "https://devlake.example.com",
        **(global_target or {"project_id": "1"}),
        "teams": teams,
    })


TEAMS = [
    {"name": "build", "project_id": "6", "argocd_components": ["build-service", "shared"],
     "webrca_products": ["konflux"]},
    {"name": "integration", "connection_name": "integration-hook",
     "argocd_components": ["integration-service", "shared"], "webrca_products": ["rhtap"]},
    {"name": "release", "project_name": "Release Project",
     "argocd_components": ["release-service", "shared"], "webrca_products": ["konflux"]},
    {"name": "build-again", "project_id": "6", "argocd_components": ["image-controller",
                                                                      "build-service-2"]},
    {"name": "also-global", "project_id": "1", "argocd_components": ["build-service"]},
]

ROUTES = [
    ("no teams", [], "build-service", ["connection_id:1"]),
    ("component in no team", TEAMS, "monitoring", ["connection_id:1"]),
    ("one team", TEAMS, "integration-service",
     ["connection_id:1", "connection_name:integration-hook"]),
    ("component in three teams", TEAMS, "shared",
     ["connection_id:1", "connection_id:6", "connection_name:integration-hook",
      "project_name:Release Project"]),
    ("team naming the global target: sent once", TEAMS, "build-service",
     ["connection_id:1", "connection_id:6"]),
    ("by project", TEAMS, "release-service", ["connection_id:1", "project_name:Release Project"]),
]


@pytest.mark.parametrize(("case", "teams", "component", "expected"), ROUTES,
                         ids=[r[0] for r in ROUTES])
def test_deployment_routing(case: str, teams: list[dict[str, Any]], component: str,
                            expected: list[str]) -> None:
    targets = Router(config(teams)).for_component(component)
    assert [t.key for t in targets] == expected
    assert targets[0].team == "global"


def test_same_target_in_two_teams_is_sent_once() -> None:
    teams = [{"name": "a", "project_id": "6", "argocd_components": ["x"]},
             {"name": "b", "project_id": "6", "argocd_components": ["y", "x2"]},
             {"name": "c", "connection_name": "hook", "argocd_components": ["x"]},
             {"name": "d", "connection_name": "hook", "argocd_components": ["x3"]}]
    router = Router(config(teams))
    assert [t.key for t in router.for_component("x")] == [
        "connection_id:1", "connection_id:6", "connection_name:hook"]


@pytest.mark.parametrize(
    ("global_target", "expected"),
    [({"project_id": "3"}, "connection_id:3"),
     ({"connection_name": "global-hook"}, "connection_name:global-hook"),
     ({"project_name": "DORA"}, "project_name:DORA")],
)
def test_global_target_forms(global_target: dict[str, str], expected: str) -> None:
    assert [t.key for t in Router(config([], **global_target)).for_component("c")] == [expected]


INCIDENTS = [
    ("no products", [], ["connection_id:1"]),
    ("konflux: two teams, project target skipped", ["konflux"],
     ["connection_id:1", "connection_id:6"]),
    ("rhtap", ["rhtap"], ["connection_id:1", "connection_name:integration-hook"]),
    ("both", ["rhtap", "konflux"],
     ["connection_id:1", "connection_id:6", "connection_name:integration-hook"]),
    ("unknown product", ["openshift"], ["connection_id:1"]),
]


@pytest.mark.parametrize(("case", "products", "expected"), INCIDENTS,
                         ids=[i[0] for i in INCIDENTS])
def test_incident_routing(case: str, products: list[str], expected: list[str]) -> None:
    assert [t.key for t in Router(config(TEAMS)).for_products(products)] == expected


BY_ID = Target(kind="connection_id", value="6")
BY_NAME = Target(kind="connection_name", value="team build/x")
BY_PROJECT = Target(kind="project_name", value="My Project")

URLS = [
    ("https://d.example", "/api/rest", BY_ID, "deployment", "",
     "https://d.example/api/rest/plugins/webhook/connections/6/deployments"),
    ("https://d.example/", "/api/rest", BY_ID, "deployment", "",
     "https://d.example/api/rest/plugins/webhook/connections/6/deployments"),
    ("https://d.example/", "api/rest/", BY_ID, "issue", "",
     "https://d.example/api/rest/plugins/webhook/connections/6/issues"),
    ("https://d.example", "/api", BY_ID, "issue", "",
     "https://d.example/api/plugins/webhook/connections/6/issues"),
    ("https://d.example/devlake/", "/api", BY_ID, "close", "INC 1/2",
     "https://d.example/devlake/api/plugins/webhook/connections/6/issue/INC%201%2F2/close"),
    ("https://d.example", "/api/rest", BY_NAME, "deployment", "",
     "https://d.example/api/rest/plugins/webhook/connections/by-name/team%20build%2Fx/deployments"),
    ("https://d.example", "/api/rest", BY_NAME, "close", "K-1",
     "https://d.example/api/rest/plugins/webhook/connections/by-name/team%20build%2Fx/issue/K-1/close"),
    ("https://d.example", "/api/rest", BY_PROJECT, "deployment", "",
     "https://d.example/api/rest/projects/My%20Project/deployments"),
    ("https://d.example/", "/api", BY_PROJECT, "deployment", "",
     "https://d.example/api/projects/My%20Project/deployments"),
]


@pytest.mark.parametrize(("base", "prefix", "target", "kind", "record", "url"), URLS)
def test_endpoint(base: str, prefix: str, target: Target, kind: Any, record: str,
                  url: str) -> None:
    assert endpoint(base, prefix, target, kind, record) == url


@pytest.mark.parametrize("kind", ["issue", "close"])
def test_issues_cannot_go_to_a_project(kind: Any) -> None:
    with pytest.raises(ValueError, match="only deployments by project name"):
        endpoint("https://d.example", "/api/rest", BY_PROJECT, kind, "K")
