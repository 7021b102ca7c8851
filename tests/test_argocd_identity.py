"""Component, cluster and environment of an Application (pure, table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from doraforwarder.argocd.identity import (
    Identity,
    Skip,
    environment_from_path,
    resolve_identity,
    split_known_cluster,
)
from doraforwarder.argocd.model import parse_application
from doraforwarder.config import ArgoCDConfig
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
