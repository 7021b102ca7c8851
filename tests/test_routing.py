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
    ("konflux: two teams, the project's connection too", ["konflux"],
     ["connection_id:1", "connection_id:6", "project_name:Release Project"]),
    ("rhtap", ["rhtap"], ["connection_id:1", "connection_name:integration-hook"]),
    ("both", ["rhtap", "konflux"],
     ["connection_id:1", "connection_id:6", "connection_name:integration-hook",
      "project_name:Release Project"]),
    ("unknown product", ["openshift"], ["connection_id:1"]),
]


@pytest.mark.parametrize(("case", "products", "expected"), INCIDENTS,
                         ids=[i[0] for i in INCIDENTS])
def test_incident_routing(case: str, products: list[str], expected: list[str]) -> None:
    assert [t.key for t in Router(config(TEAMS)).for_products(products)] == expected


BY_ID = Target(kind="connection_id", value="6")
BY_NAME = Target(kind="connection_name", value="team build")
BY_PROJECT = Target(kind="project_name", value="My Project")
H = "https://d.example"


def _urls() -> list[tuple[str, str, Target, str, str, str]]:
    rows = []
    for prefix in ("/api/rest", "/rest"):
        root = f"{H}{prefix}/plugins/webhook"
        rows += [
            (H, prefix, BY_ID, "deployment", "", f"{root}/connections/6/deployments"),
            (H + "/", prefix, BY_ID, "issue", "", f"{root}/connections/6/issues"),
            (H, prefix + "/", BY_ID, "close", "INC 1",
             f"{root}/connections/6/issue/INC%201/close"),
            (H, prefix, BY_NAME, "deployment", "",
             f"{root}/connections/by-name/team%20build/deployments"),
            (H, prefix, BY_NAME, "issue", "", f"{root}/connections/by-name/team%20build/issues"),
            (H, prefix, BY_NAME, "close", "K-1",
             f"{root}/connections/by-name/team%20build/issue/K-1/close"),
            (H, prefix, BY_PROJECT, "deployment", "",
             f"{root}/projects/My%20Project/deployments"),
            (H, prefix, BY_PROJECT, "issue", "",
             f"{root}/connections/by-name/My%20Project_deployments/issues"),
            (H, prefix, BY_PROJECT, "close", "K-1",
             f"{root}/connections/by-name/My%20Project_deployments/issue/K-1/close"),
        ]
    rows.append((H + "/devlake/", "rest", BY_ID, "deployment", "",
                 f"{H}/devlake/rest/plugins/webhook/connections/6/deployments"))
    return rows


@pytest.mark.parametrize(("base", "prefix", "target", "kind", "record", "url"), _urls())
def test_endpoint(base: str, prefix: str, target: Target, kind: Any, record: str,
                  url: str) -> None:
    assert endpoint(base, prefix, target, kind, record) == url


ESCAPES = [
    # Go's URL.EscapedPath: these stay raw, everything else is %XX in uppercase.
    ("a-b_c.d~e", "a-b_c.d~e"),
    ("$&+,:;=@", "$&+,:;=@"),
    ("team build", "team%20build"),
    ("é", "%C3%A9"),
    ("50%", "50%25"),
    ("a?b#c", "a%3Fb%23c"),
    ('q"<>', "q%22%3C%3E"),
]


@pytest.mark.parametrize(("name", "escaped"), ESCAPES)
@pytest.mark.parametrize("prefix", ["/api/rest", "/rest"])
def test_names_are_escaped_as_go_does(prefix: str, name: str, escaped: str) -> None:
    target = Target(kind="connection_name", value=name)
    assert endpoint(H, prefix, target, "deployment") == \
        f"{H}{prefix}/plugins/webhook/connections/by-name/{escaped}/deployments"


@pytest.mark.parametrize(("name", "bracket"), [(c * 2 + "x", c) for c in "!'()*[]"])
def test_bang_quote_parens_star_brackets_only_route_on_rest(name: str, bracket: str) -> None:
    target = Target(kind="connection_name", value=name)
    with pytest.raises(ValueError, match="nginx"):
        endpoint(H, "/api/rest", target, "deployment")
    url = endpoint(H, "/rest", target, "deployment")
    assert f"%{ord(bracket):02X}" in url


@pytest.mark.parametrize("prefix", ["/api/rest", "/rest"])
@pytest.mark.parametrize("kind", ["connection_name", "project_name"])
def test_a_slash_in_a_name_is_never_routed(prefix: str, kind: Any) -> None:
    with pytest.raises(ValueError, match="'/'"):
        endpoint(H, prefix, Target(kind=kind, value="a/b"), "deployment")


@pytest.mark.parametrize("prefix", ["/api", "/", "", "/api/v1", "/plugins"])
def test_other_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="/api/rest"):
        endpoint(H, prefix, BY_ID, "deployment")


def test_token_envs_per_target() -> None:
    teams = [{"name": "a", "project_id": "6", "token_env": "TEAM_A_KEY",
              "argocd_components": ["x"]},
             {"name": "b", "connection_name": "hook", "argocd_components": ["y"]},
             {"name": "c", "project_name": "P", "token_env": "P_KEY",
              "argocd_components": ["z"]}]
    router = Router(config(teams))
    assert router.token_envs() == {"connection_id:1": "DEVLAKE_WEBHOOK_TOKEN",
                                   "connection_id:6": "TEAM_A_KEY",
                                   "connection_name:hook": "DEVLAKE_WEBHOOK_TOKEN",
                                   "project_name:P": "P_KEY"}
    custom = DevLakeConfig.model_validate({"base_url": H, "project_id": "1",
                                           "token_env": "GLOBAL_KEY", "teams": teams})
    assert Router(custom).token_envs()["connection_name:hook"] == "GLOBAL_KEY"
