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


# --- sized applications for the scale cases ----------------------------------------------

MARKER = "99999999"
"""Stands for the app's index in a template (8 digits: valid inside names and hex SHAs)."""

SIZES = {"3KB": (10, 1, False), "30KB": (40, 10, True)}
"""Size class -> (managed resources, history entries, managedFields): what makes an
Application 3 KB or 30 KB of JSON in production."""


def sized_app(index: int | str, resources: int, history: int,
              managed_fields: bool, namespace: str = "argocd") -> dict[str, Any]:
    """A settled Application with ``resources`` managed resources and ``history`` entries."""
    tag = index if isinstance(index, str) else f"{index:08d}"
    component = f"component-{tag}"
    cluster = CLUSTERS[int(tag) % len(CLUSTERS)] if tag.isdigit() else CLUSTERS[0]
    revision = "0" * 32 + tag
    app = LiveApp(
        f"{component}-{cluster}", namespace,
        revision=revision,
        images=[f"quay.io/example/{component}:{revision}", image("sidecar-proxy", "stable")],
        start=datetime(2025, 1, 1, tzinfo=UTC),
        sources=[source(f"components/{component}/overlays/production/{cluster}")],
    )
    for n in range(1, history):
        sync_revision = f"{n:08x}" + "0" * 24 + tag
        app.sync(sync_revision, [f"quay.io/example/{component}:{sync_revision}",
                                 image("sidecar-proxy", "stable")])
    obj = app.obj
    obj["metadata"].update({
        "labels": {"app.kubernetes.io/part-of": "platform", "team": "team-a",
                   "argocd.argoproj.io/instance": f"{component}-{cluster}"},
        "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        "generation": 42,
        "creationTimestamp": "2024-06-01T10:00:00Z",
        "uid": f"{tag}-0000-4000-8000-000000000000",
    })
    if managed_fields:
        obj["metadata"]["managedFields"] = [
            {"apiVersion": "argoproj.io/v1alpha1", "fieldsType": "FieldsV1",
             "manager": manager, "operation": "Update", "time": "2025-01-01T10:00:00Z",
             "fieldsV1": {"f:status": {f"f:{f}": {} for f in (
                 "controllerNamespace", "health", "history", "operationState", "reconciledAt",
                 "resources", "sourceType", "summary", "sync")},
                 "f:spec": {".": {}, "f:destination": {".": {}, "f:namespace": {},
                                                       "f:server": {}},
                            "f:project": {}, "f:source": {".": {}, "f:path": {},
                                                          "f:repoURL": {},
                                                          "f:targetRevision": {}}}}}
            for manager in ("argocd-application-controller", "argocd-server", "kubectl")
        ]
    obj["spec"]["syncPolicy"] = {"automated": {"prune": True, "selfHeal": True},
                                 "syncOptions": ["CreateNamespace=false", "ServerSideApply=true"]}
    obj["status"]["resources"] = [
        {"group": "apps" if n % 5 == 0 else "", "version": "v1",
         "kind": KINDS[n % len(KINDS)], "namespace": component,
         "name": f"{component}-{KINDS[n % len(KINDS)].lower()}-{n}",
         "status": "Synced", "health": {"status": "Healthy"},
         **({"syncWave": n % 3, "requiresPruning": False,
             "health": {"status": "Healthy", "message": "deployment rolled out, "
                        f"{n % 4 + 1} of {n % 4 + 1} replicas available"}}
            if managed_fields else {})}
        for n in range(resources)
    ]
    if managed_fields:
        # What kubectl apply and the last sync leave behind: big, and never read.
        obj["metadata"]["annotations"] = {
            "kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                 "metadata": {"name": obj["metadata"]["name"], "namespace": namespace},
                 "spec": obj["spec"]})}
        obj["status"]["operationState"]["syncResult"]["resources"] = [
            {"group": r["group"], "version": "v1", "kind": r["kind"], "namespace": component,
             "name": r["name"], "status": "Synced", "message": f"{r['kind'].lower()}/"
             f"{r['name']} configured", "hookPhase": "Running", "syncPhase": "Sync"}
            for r in obj["status"]["resources"]]
    obj["status"]["sourceType"] = "Kustomize"
    obj["status"]["controllerNamespace"] = "argocd"
    return obj


class Templates:
    """Encoded Applications with the index left as :data:`MARKER`, filled in by ``bytes.replace``.

    Generating 100,000 objects of up to 30 KB as dicts takes longer than what
    is measured; replacing a marker in ready bytes takes microseconds.
    """

    def __init__(self, size: str, resource_version: int = 1000) -> None:
        resources, history, managed = SIZES[size] if size in SIZES else _parse_mix(size)
        obj = sized_app(MARKER, resources, history, managed)
        obj["metadata"]["resourceVersion"] = str(resource_version)
        self.object = json.dumps(obj, separators=(",", ":")).encode()
        obj["status"]["reconciledAt"] = "2025-01-02T00:00:00Z"
        obj["metadata"]["resourceVersion"] = "RVRVRVRV"
        self.refresh_event = json.dumps({"type": "MODIFIED", "object": obj},
                                        separators=(",", ":")).encode() + b"\n"
        self.added_event = b'{"type":"ADDED","object":' + self.object + b"}\n"

    def app(self, index: int) -> bytes:
        return self.object.replace(MARKER.encode(), b"%08d" % index)

    def added(self, index: int) -> bytes:
        return self.added_event.replace(MARKER.encode(), b"%08d" % index)

    def refresh(self, index: int, resource_version: int) -> bytes:
        return (self.refresh_event.replace(MARKER.encode(), b"%08d" % index)
                .replace(b"RVRVRVRV", str(resource_version).encode()))


def _parse_mix(size: str) -> tuple[int, int, bool]:
    """``"r<resources>h<history>[m]"``: a size between the two classes."""
    body, managed = (size[:-1], True) if size.endswith("m") else (size, False)
    resources, history = body[1:].split("h")
    return int(resources), int(history), managed


MIX = ["r10h1", "r14h2", "r18h3", "r22h4", "r26h5m", "r30h6m", "r34h8m", "r40h10m"]
"""Sizes from 3 KB to 30 KB (every ``status.resources`` 10-40 entries) for the catch-up."""
