"""Realistic ArgoCD Applications for the benchmarks (about 4.5 KB of JSON each).

A production Application carries much more than detection reads: labels,
finalizers, history entries, the list of managed resources with their
sync and health status. Benchmarks must parse that weight, so these objects
have it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from doraforwarder.testing.argocd_objects import LiveApp, image, sha, source

CLUSTERS = ("prod-east-1", "prod-west-1", "prod-eu-1", "prod-ap-1")
KINDS = ("Deployment", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding",
         "HorizontalPodAutoscaler",
         )


def live_app(index: int, namespace: str = "argocd") -> LiveApp:
    """A settled app with six history entries and seven managed resources."""
    component = f"component-{index:05d}"
    cluster = CLUSTERS[index % len(CLUSTERS)]
    app = LiveApp(
        f"{component}-{cluster}", namespace,
        revision=sha(f"{index}-0"),
        images=[image(component, f"{index}-0"), image("sidecar-proxy", "stable")],
        start=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=index),
        sources=[source(f"components/{component}/overlays/production/{cluster}")],
    )
    for n in range(1, 6):
        app.sync(sha(f"{index}-{n}"), [image(component, f"{index}-{n}"),
                                       image("sidecar-proxy", "stable")])
    obj = app.obj
    obj["metadata"].update({
        "labels": {"app.kubernetes.io/part-of": "platform", "team": f"team-{index % 7}",
                   "argocd.argoproj.io/instance": f"{component}-{cluster}"},
        "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        "generation": 42 + index,
        "creationTimestamp": "2024-06-01T10:00:00Z",
    })
    obj["spec"]["syncPolicy"] = {"automated": {"prune": True, "selfHeal": True},
                                 "syncOptions": ["CreateNamespace=false", "ServerSideApply=true"],
                                 "retry": {"limit": 5, "backoff": {"duration": "5s",
                                                                   "factor": 2,
                                                                   "maxDuration": "3m"}}}
    obj["status"]["resources"] = [
        {"group": "apps" if kind == "Deployment" else "", "version": "v1", "kind": kind,
         "namespace": component, "name": f"{component}-{kind.lower()}",
         "status": "Synced", "health": {"status": "Healthy"}}
        for kind in KINDS
    ]
    obj["status"]["sourceType"] = "Kustomize"
    obj["status"]["controllerNamespace"] = "argocd"
    return app


def watch_line(event_type: str, obj: dict[str, Any], resource_version: int) -> bytes:
    obj["metadata"]["resourceVersion"] = str(resource_version)
    obj["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
    return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
