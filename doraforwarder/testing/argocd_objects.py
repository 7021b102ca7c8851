"""Builders for ArgoCD Application objects, and the writes ArgoCD makes during a sync.

:func:`application` builds one object. :class:`LiveApp` plays an application
over time: :meth:`LiveApp.sync` returns the successive objects ArgoCD writes
during an automated sync, in ArgoCD's order (operation Running -> history
entry appended while still Running -> Succeeded with finishedAt -> comparison:
Synced, new ``summary.images``, health Progressing -> Healthy or Degraded),
:meth:`LiveApp.fail` a failed sync, :meth:`LiveApp.refresh` the refresh-only
write that is most of the traffic. Push them to :class:`FakeKube` in order.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

GITOPS_REPO = "https://github.com/example/gitops"
IN_CLUSTER = "https://kubernetes.default.svc"
T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


def ts(moment: datetime) -> str:
    """Kubernetes time format (RFC 3339, seconds, Z)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha(seed: object) -> str:
    """A deterministic 40-hex commit SHA for ``seed``."""
    return hashlib.sha1(str(seed).encode()).hexdigest()


def image(name: str, seed: object, registry: str = "quay.io/example") -> str:
    """``quay.io/example/<name>:<sha of seed>``."""
    return f"{registry}/{name}:{sha(seed)}"


def source(path: str, repo_url: str = GITOPS_REPO, target_revision: str = "main") -> dict[str, Any]:
    return {"repoURL": repo_url, "path": path, "targetRevision": target_revision}


def history_entry(
    entry_id: int,
    revision: str | list[str],
    deployed_at: datetime,
    *,
    started_at: datetime | None = None,
    sources: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One ``status.history`` entry (a list of revisions makes it multi-source)."""
    entry: dict[str, Any] = {
        "id": entry_id,
        "deployedAt": ts(deployed_at),
        "deployStartedAt": ts(started_at or deployed_at - timedelta(seconds=5)),
        "initiatedBy": {"automated": True},
    }
    if isinstance(revision, list):
        entry["revisions"] = list(revision)
        if sources is not None:
            entry["sources"] = copy.deepcopy(sources)
    else:
        entry["revision"] = revision
        if sources:
            entry["source"] = copy.deepcopy(sources[0])
    return entry


def application(
    name: str,
    namespace: str = "argocd",
    *,
    path: str | None = None,
    sources: list[dict[str, Any]] | None = None,
    destination_server: str = IN_CLUSTER,
    destination_name: str | None = None,
    annotations: dict[str, str] | None = None,
    history: list[dict[str, Any]] | None = None,
    images: list[str] | None = None,
    health: str = "Healthy",
    sync: str = "Synced",
    operation_state: dict[str, Any] | None = None,
    reconciled_at: datetime = T0,
) -> dict[str, Any]:
    """One Application object as the API server returns it (minus server-set metadata)."""
    spec_sources = sources or [source(path or f"components/{name}/production")]
    spec: dict[str, Any] = {
        "project": "default",
        "destination": {"server": destination_server, "namespace": name},
    }
    if destination_name is not None:
        spec["destination"] = {"name": destination_name, "namespace": name}
    if len(spec_sources) == 1 and sources is None:
        spec["source"] = spec_sources[0]
    else:
        spec["sources"] = spec_sources
    history = history or []
    last = history[-1] if history else None
    revision_of_last = (last.get("revision") or (last.get("revisions") or [""])[0]) if last else ""
    status: dict[str, Any] = {
        "sync": {"status": sync, "revision": revision_of_last},
        "health": {"status": health},
        "history": history,
        "summary": {"images": list(images or [])},
        "reconciledAt": ts(reconciled_at),
    }
    if operation_state is not None:
        status["operationState"] = operation_state
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }


def operation_state(
    phase: str,
    revision: str | list[str],
    started_at: datetime,
    finished_at: datetime | None = None,
    message: str = "",
) -> dict[str, Any]:
    sync: dict[str, Any] = (
        {"revisions": list(revision)} if isinstance(revision, list) else {"revision": revision}
    )
    state: dict[str, Any] = {
        "phase": phase,
        "message": message
        or {
            "Running": "one or more tasks are running",
            "Succeeded": "successfully synced (all tasks run)",
        }.get(phase, ""),
        "operation": {"sync": sync, "initiatedBy": {"automated": True}},
        "startedAt": ts(started_at),
        "syncResult": dict(sync),
    }
    if finished_at is not None:
        state["finishedAt"] = ts(finished_at)
    return state


class LiveApp:
    """An Application evolving as ArgoCD writes it; every method returns full snapshots.

    Starts settled: one history entry (id 0) for ``revision``, Synced,
    Healthy, with ``images``. The clock starts at ``start`` and each write
    advances it by ``step``.
    """

    def __init__(
        self,
        name: str,
        namespace: str = "argocd",
        *,
        revision: str | list[str] | None = None,
        images: list[str] | None = None,
        start: datetime = T0,
        step: timedelta = timedelta(seconds=10),
        **kwargs: Any,
    ) -> None:
        self.now = start
        self.step = step
        revision = revision if revision is not None else sha(f"{name}-initial")
        self.next_id = 1
        entry = history_entry(
            0, revision, self.now - timedelta(minutes=5), sources=kwargs.get("sources")
        )
        self.obj = application(
            name,
            namespace,
            history=[entry],
            images=images or [image(name, "initial")],
            operation_state=operation_state(
                "Succeeded",
                revision,
                self.now - timedelta(minutes=6),
                self.now - timedelta(minutes=5),
            ),
            reconciled_at=self.now,
            **kwargs,
        )

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.obj["status"]
        return status

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.obj)

    def _tick(self) -> datetime:
        self.now += self.step
        return self.now

    def refresh(self) -> dict[str, Any]:
        """A refresh: only ``reconciledAt`` moves (the no-op event)."""
        self.status["reconciledAt"] = ts(self._tick())
        return self.snapshot()

    def sync(
        self,
        revision: str | list[str],
        images: list[str] | None = None,
        *,
        health: str = "Healthy",
    ) -> list[dict[str, Any]]:
        """The writes of one successful sync; ``health`` is where it ends
        (``Progressing`` stops before health settles)."""
        steps: list[dict[str, Any]] = []
        status = self.status
        started = self._tick()
        status["sync"]["status"] = "OutOfSync"
        status["operationState"] = operation_state("Running", revision, started)
        steps.append(self.snapshot())
        entry = history_entry(
            self.next_id,
            revision,
            self._tick(),
            started_at=started,
            sources=self.obj["spec"].get("sources"),
        )
        self.next_id += 1
        status["history"] = [*status["history"], entry][-10:]
        steps.append(self.snapshot())
        finished = self._tick()
        status["operationState"] = operation_state("Succeeded", revision, started, finished)
        status["sync"] = {
            "status": "Synced",
            "revision": revision if isinstance(revision, str) else revision[0],
        }
        steps.append(self.snapshot())
        status["summary"] = {
            "images": list(images if images is not None else status["summary"]["images"])
        }
        status["health"] = {"status": "Progressing"}
        status["reconciledAt"] = ts(self._tick())
        steps.append(self.snapshot())
        if health != "Progressing":
            steps.append(self.set_health(health))
        return steps

    def set_health(self, health: str) -> dict[str, Any]:
        self.status["health"] = {"status": health}
        self.status["reconciledAt"] = ts(self._tick())
        return self.snapshot()

    def fail(
        self,
        revision: str,
        *,
        phase: str = "Failed",
        message: str = "one or more objects failed to apply",
    ) -> list[dict[str, Any]]:
        """The writes of a failed sync: no history entry, operation Failed/Error."""
        status = self.status
        started = self._tick()
        status["sync"]["status"] = "OutOfSync"
        status["operationState"] = operation_state("Running", revision, started)
        first = self.snapshot()
        status["operationState"] = operation_state(phase, revision, started, self._tick(), message)
        status["reconciledAt"] = ts(self._tick())
        return [first, self.snapshot()]

    @property
    def last_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.status["history"][-1]
        return entry
