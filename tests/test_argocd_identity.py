"""Component, cluster and environment of an Application (pure, table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from doraforwarder.argocd.identity import (
    Identity,
    Skip,
    environment_from_path,
    resolve_environment,
    resolve_identity,
    split_known_cluster,
)
from doraforwarder.argocd.parse import parse_application
from doraforwarder.config import ArgoCDConfig, ConfigError, validate_settings
from doraforwarder.testing.argocd_objects import application


@pytest.mark.parametrize(("path", "environment"), [
    ("components/svc/production", "PRODUCTION"),
    ("components/svc/prod/overlay", "PRODUCTION"),
    ("components/svc/staging", "STAGING"),
    ("stage/svc", "STAGING"),
    ("components/svc/development", "DEVELOPMENT"),
    ("dev", "DEVELOPMENT"),
    ("overlays/production/dev-tools", "PRODUCTION"),
    ("components/svc/prod/dev", "PRODUCTION"),
    ("components/devtools/base", "PRODUCTION"),
    ("components/Staging/", "STAGING"),
    ("", "PRODUCTION"),
    ("testing/svc", "PRODUCTION"),
])
def test_environment_from_path(path: str, environment: str) -> None:
    assert environment_from_path(path) == environment


@pytest.mark.parametrize(("name", "clusters", "split"), [
    ("build-service-prod-east-1", ["prod-east-1"], ("build-service", "prod-east-1")),
    ("build-service-prod-east-1", ["east-1", "prod-east-1"], ("build-service", "prod-east-1")),
    ("build-service-prod-east-1", ["prod-east-1", "east-1"], ("build-service", "prod-east-1")),
    ("svc-east-1", ["prod-east-1", "east-1"], ("svc", "east-1")),
    ("east-1", ["east-1"], None),
    ("svc-west", ["east"], None),
    ("svceast", ["east"], None),
    ("svc-east", ["", "east"], ("svc", "east")),
])
def test_split_known_cluster(name: str, clusters: list[str],
                             split: tuple[str, str] | None) -> None:
    assert split_known_cluster(name, clusters) == split


def view(name: str = "svc-east", namespace: str = "argocd", **kwargs: Any) -> Any:
    return parse_application(application(name, namespace, **kwargs))


C = "doraforwarder.io/component"
K = "doraforwarder.io/cluster"
E = "doraforwarder.io/environment"


@pytest.mark.parametrize(("obj", "config", "want"), [
    (view(), {}, Identity("svc-east", "kubernetes.default.svc", "PRODUCTION")),
    (view(destination_server="https://api.prod.example.com:6443"), {},
     Identity("svc-east", "api.prod.example.com", "PRODUCTION")),
    (view(destination_name="prod-1"), {}, Identity("svc-east", "prod-1", "PRODUCTION")),
    (view(destination_server=""), {}, Skip("no cluster: no annotation, destination name or server")),
    (view(), {"known_clusters": ["east"]}, Identity("svc", "east", "PRODUCTION")),
    (view(), {"known_clusters": ["west"]}, Skip("name svc-east ends with no known cluster")),
    (view(annotations={K: "special"}), {"known_clusters": ["west"]},
     Identity("svc-east", "special", "PRODUCTION")),
    (view(annotations={C: "api"}), {"known_clusters": ["east"]},
     Identity("api", "east", "PRODUCTION")),
    (view(annotations={C: "api", K: "c1"}), {"known_clusters": ["east"]},
     Identity("api", "c1", "PRODUCTION")),
    (view(annotations={C: "api"}), {}, Identity("api", "kubernetes.default.svc", "PRODUCTION")),
    (view(), {"known_clusters": ["east"], "components_to_ignore": ["svc"]},
     Skip("component svc is ignored")),
    (view(annotations={C: "monitoring"}), {"components_to_ignore": ["monitoring"]},
     Skip("component monitoring is ignored")),
    (view(path="components/svc/staging"), {}, Skip("environment STAGING is not forwarded")),
    (view(path="components/svc/staging"), {"environments": ["production", "staging"]},
     Identity("svc-east", "kubernetes.default.svc", "STAGING")),
    (view(path="components/svc/staging", annotations={E: "production"}), {},
     Identity("svc-east", "kubernetes.default.svc", "PRODUCTION")),
    (view(annotations={E: "testing"}), {"environments": ["TESTING"]},
     Identity("svc-east", "kubernetes.default.svc", "TESTING")),
    (view(namespace="other"), {}, Skip("namespace other is not watched")),
    (view(namespace="other"), {"namespaces": ["*"]},
     Identity("svc-east", "kubernetes.default.svc", "PRODUCTION")),
    (view(sources=[{"repoURL": "https://x/charts", "chart": "c"},
                   {"repoURL": "https://x/gitops", "path": "apps/dev"}]), {},
     Skip("environment DEVELOPMENT is not forwarded")),
])
def test_resolve_identity(obj: Any, config: dict[str, Any], want: Identity | Skip) -> None:
    settings = ArgoCDConfig(**{"namespaces": ["argocd"], **config})
    assert resolve_identity(obj, settings) == want


# --- environment rules ------------------------------------------------------------------

CHART = {"repoURL": "https://charts.example.com", "chart": "svc", "targetRevision": "1.4.2"}
VALUES = {"repoURL": "https://github.com/example/values", "ref": "values",
          "targetRevision": "main"}


def rule(**kwargs: str) -> dict[str, str]:
    return kwargs


@pytest.mark.parametrize(("obj", "rules", "default", "want"), [
    # no rule: path rules, then the default for a source without a path
    (view(path="components/svc/staging"), [], "PRODUCTION", "STAGING"),
    (view(path="components/svc/base"), [], "STAGING", "PRODUCTION"),
    (view(sources=[CHART]), [], "PRODUCTION", "PRODUCTION"),
    (view(sources=[CHART]), [], "STAGING", "STAGING"),
    (view(sources=[CHART, VALUES]), [], "DEVELOPMENT", "DEVELOPMENT"),
    # each matcher
    (view(path="components/svc/production"), [rule(path="/production$", environment="TESTING")],
     "PRODUCTION", "TESTING"),
    (view("svc-stage"), [rule(app="-stage$", environment="STAGING")], "PRODUCTION", "STAGING"),
    (view(namespace="argocd-stage"), [rule(namespace="stage", environment="staging")],
     "PRODUCTION", "STAGING"),
    (view(project="team-a-staging"), [rule(project="staging", environment="STAGING")],
     "PRODUCTION", "STAGING"),
    (view(destination_namespace="svc-dev"),
     [rule(destination_namespace="-dev$", environment="DEVELOPMENT")], "PRODUCTION",
     "DEVELOPMENT"),
    (view(destination_name="stage-cluster"), [rule(destination="^stage-", environment="STAGING")],
     "PRODUCTION", "STAGING"),
    (view(destination_server="https://api.stage.example.com:6443"),
     [rule(destination=r"\.stage\.", environment="STAGING")], "PRODUCTION", "STAGING"),
    (view(sources=[CHART, VALUES]), [rule(repo_url="example/values", environment="STAGING")],
     "PRODUCTION", "STAGING"),
    (view(sources=[CHART, {**VALUES, "path": "envs/stage"}]),
     [rule(path="envs/stage", environment="STAGING")], "PRODUCTION", "STAGING"),
    # order: first match wins; no match falls through to the path rules
    (view(project="staging"), [rule(project="staging", environment="STAGING"),
                               rule(app=".", environment="TESTING")], "PRODUCTION", "STAGING"),
    (view(project="other", path="components/svc/dev"),
     [rule(project="staging", environment="STAGING")], "PRODUCTION", "DEVELOPMENT"),
    # re.search, not a full match
    (view("my-app-canary"), [rule(app="canary", environment="TESTING")], "PRODUCTION", "TESTING"),
    # the annotation beats every rule
    (view(annotations={E: "production"}, project="staging"),
     [rule(project="staging", environment="STAGING")], "STAGING", "PRODUCTION"),
])
def test_environment_precedence(obj: Any, rules: list[dict[str, str]], default: str,
                                want: str) -> None:
    settings = ArgoCDConfig(namespaces=["*"], environment_rules=rules,
                            default_environment=default)
    assert resolve_environment(obj, settings) == want


def test_a_staging_chart_app_is_not_forwarded_as_production() -> None:
    settings = ArgoCDConfig(namespaces=["argocd"], environment_rules=[
        {"destination_namespace": "-staging$", "environment": "STAGING"}])
    obj = view(sources=[CHART, VALUES], destination_namespace="svc-staging")
    assert resolve_identity(obj, settings) == Skip("environment STAGING is not forwarded")


@pytest.mark.parametrize(("rules", "problem"), [
    ([{"environment": "STAGING"}], "argocd.environment_rules.0: needs exactly one matcher"),
    ([{"app": "x", "environment": "STAGING"}, {"app": "a", "path": "b", "environment": "STAGING"}],
     "argocd.environment_rules.1: needs exactly one matcher"),
    ([{"path": "(", "environment": "STAGING"}],
     "argocd.environment_rules.0: path: invalid regular expression"),
    ([{"repo_url": "[a-", "environment": "STAGING"}],
     "argocd.environment_rules.0: repo_url: invalid regular expression"),
    ([{"app": "x", "environment": "moon"}], "argocd.environment_rules.0.environment"),
    ([{"app": "x", "environment": "STAGING", "cluster": "y"}],
     "argocd.environment_rules.0.cluster: unknown key"),
])
def test_invalid_environment_rules_are_configuration_errors(
    rules: list[dict[str, str]], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_settings({"argocd": {"environment_rules": rules}}, "config.yaml")
    assert problem in str(caught.value)
