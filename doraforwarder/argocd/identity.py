"""Who an Application is for DevLake: component, cluster, environment.

Explicit annotations win (``doraforwarder.io/component``, ``/cluster``,
``/environment``), so odd names never need code changes. Otherwise the
reference rules apply: the app name is ``<component>-<cluster>`` for one of
``argocd.known_clusters`` (longest suffix wins, so ``prod-east-1`` beats
``east-1``); with no known clusters the component is the app name and the
cluster the destination.

The environment, first answer wins: the ``doraforwarder.io/environment``
annotation; ``argocd.environment_rules`` in order (each a regular expression
searched in one field); the reference's path rules when a source has a path;
``argocd.default_environment``. Chart sources have no path, so without a
rule they take the default rather than a silent PRODUCTION.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from doraforwarder.argocd.model import (
    ANNOTATION_CLUSTER,
    ANNOTATION_COMPONENT,
    ANNOTATION_ENVIRONMENT,
    AppView,
)
from doraforwarder.config import ArgoCDConfig, EnvironmentRule
from doraforwarder.records import Environment

_PATH_ENVIRONMENTS: tuple[tuple[Environment, frozenset[str]], ...] = (
    ("PRODUCTION", frozenset({"production", "prod"})),
    ("STAGING", frozenset({"staging", "stage"})),
    ("DEVELOPMENT", frozenset({"development", "dev"})),
)


@dataclass(frozen=True, slots=True)
class Identity:
    component: str
    cluster: str
    environment: Environment


@dataclass(frozen=True, slots=True)
class Skip:
    """The app is not forwarded; ``reason`` says why, for debug logs and tests."""

    reason: str


def environment_from_path(path: str) -> Environment:
    """``/production/`` or ``/prod/`` -> PRODUCTION, ``stag(e|ing)`` -> STAGING, ``dev(elopment)``
    -> DEVELOPMENT, as a directory or as the last segment; PRODUCTION otherwise.

    Production is checked first, as the reference does, so
    ``overlays/production/dev-tools`` stays PRODUCTION.
    """
    segments = {segment.lower() for segment in path.split("/") if segment}
    for environment, names in _PATH_ENVIRONMENTS:
        if segments & names:
            return environment
    return "PRODUCTION"


def split_known_cluster(name: str, known_clusters: list[str]) -> tuple[str, str] | None:
    """``build-service-prod-east-1`` -> (``build-service``, ``prod-east-1``).

    The longest matching suffix wins.
    """
    matches = [
        cluster
        for cluster in known_clusters
        if cluster and name.endswith(f"-{cluster}") and len(name) > len(cluster) + 1
    ]
    best = max(matches, key=len, default=None)
    if best is None:
        return None
    return name[: -len(best) - 1], best


def destination_cluster(view: AppView) -> str:
    """Destination name, else the host of the destination server, else empty."""
    if view.destination_name:
        return view.destination_name
    if view.destination_server:
        host = urlsplit(view.destination_server).hostname
        return host or view.destination_server
    return ""


def _rule_fields(view: AppView, matcher: str) -> list[str]:
    """The values of ``view`` a rule's matcher is searched in (any may match)."""
    if matcher == "path":
        return [source.path for source in view.sources if source.path]
    if matcher == "repo_url":
        return [source.repo_url for source in view.sources]
    if matcher == "app":
        return [view.name]
    if matcher == "namespace":
        return [view.namespace]
    if matcher == "project":
        return [view.project]
    if matcher == "destination_namespace":
        return [view.destination_namespace]
    if matcher == "destination":
        return [value for value in (view.destination_name, view.destination_server) if value]
    raise ValueError(f"unknown environment rule matcher {matcher}")


def rule_matches(rule: EnvironmentRule, view: AppView) -> bool:
    matcher, pattern = rule.matcher
    return any(pattern.search(value) for value in _rule_fields(view, matcher))


def resolve_environment(view: AppView, config: ArgoCDConfig) -> Environment:
    """Annotation, then ``environment_rules``, then path rules (with a path), then the default."""
    annotated = view.annotations.get(ANNOTATION_ENVIRONMENT, "")
    if annotated:
        return cast(Environment, annotated.upper())
    for rule in config.environment_rules:
        if rule_matches(rule, view):
            return rule.environment
    if view.source_path:
        return environment_from_path(view.source_path)
    return config.default_environment


def resolve_identity(view: AppView, config: ArgoCDConfig) -> Identity | Skip:
    """Identity of ``view`` under ``config``, or why it is not forwarded."""
    if not config.all_namespaces and view.namespace not in config.namespaces:
        return Skip(f"namespace {view.namespace} is not watched")
    component = view.annotations.get(ANNOTATION_COMPONENT, "")
    cluster = view.annotations.get(ANNOTATION_CLUSTER, "")
    if not (component and cluster):
        if config.known_clusters:
            split = split_known_cluster(view.name, config.known_clusters)
            if split is not None:
                component = component or split[0]
                cluster = cluster or split[1]
            elif not cluster:
                return Skip(f"name {view.name} ends with no known cluster")
            else:
                component = component or view.name
        else:
            component = component or view.name
            cluster = cluster or destination_cluster(view)
            if not cluster:
                return Skip("no cluster: no annotation, destination name or server")
    if component in config.components_to_ignore:
        return Skip(f"component {component} is ignored")
    environment = resolve_environment(view, config)
    if environment not in config.environments:
        return Skip(f"environment {environment} is not forwarded")
    return Identity(component=component, cluster=cluster, environment=environment)
