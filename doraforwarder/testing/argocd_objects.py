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


def chart_source(
    chart: str, version: str, repo_url: str = "https://charts.example.com"
) -> dict[str, Any]:
    """A Helm repository chart source (no path; its revision is the chart version)."""
    return {"repoURL": repo_url, "chart": chart, "targetRevision": version}


def values_source(repo_url: str = GITOPS_REPO, ref: str = "values") -> dict[str, Any]:
    """A ``$values`` git source of a multi-source app (a ``ref``, no path)."""
    return {"repoURL": repo_url, "ref": ref, "targetRevision": "main"}


def hydrator_spec(
    dry_path: str,
    *,
    repo_url: str = GITOPS_REPO,
    target_branch: str = "environments/production",
    sync_path: str | None = None,
) -> dict[str, Any]:
    """``spec.sourceHydrator``: what developers write (dry) and where it is hydrated to."""
    return {
        "drySource": {"repoURL": repo_url, "path": dry_path, "targetRevision": "main"},
        "syncSource": {"targetBranch": target_branch, "path": sync_path or dry_path},
    }


def hydrator_status(dry_sha: str, hydrated_sha: str) -> dict[str, Any]:
    """``status.sourceHydrator`` after a successful hydration."""
    return {"lastSuccessfulOperation": {"drySHA": dry_sha, "hydratedSHA": hydrated_sha}}


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
        # As ArgoCD writes them: an empty singular revision and source beside the lists.
        entry["revision"] = ""
        entry["source"] = {"repoURL": ""}
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
    project: str = "default",
    destination_namespace: str | None = None,
    health_since: datetime | None = None,
    source_hydrator: dict[str, Any] | None = None,
    hydrated: dict[str, Any] | None = None,
    with_status: bool = True,
) -> dict[str, Any]:
    """One Application object as the API server returns it (minus server-set metadata).

    ``source_hydrator`` (see :func:`hydrator_spec`) replaces ``spec.source``;
    ``hydrated`` is ``status.sourceHydrator``; ``with_status=False`` is an
    Application the controller has not reconciled yet.
    """
    spec_sources = sources or [source(path or f"components/{name}/production")]
    spec: dict[str, Any] = {
        "project": project,
        "destination": {"server": destination_server, "namespace": destination_namespace or name},
    }
    if destination_name is not None:
        spec["destination"] = {"name": destination_name, "namespace": destination_namespace or name}
    if source_hydrator is not None:
        spec["sourceHydrator"] = copy.deepcopy(source_hydrator)
    elif len(spec_sources) == 1 and sources is None:
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
    if health_since is not None:
        status["health"]["lastTransitionTime"] = ts(health_since)
    if operation_state is not None:
        status["operationState"] = operation_state
    if hydrated is not None:
        status["sourceHydrator"] = copy.deepcopy(hydrated)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    obj: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": metadata,
        "spec": spec,
    }
    if with_status:
        obj["status"] = status
    return obj


def operation_state(
    phase: str,
    revision: str | list[str],
    started_at: datetime,
    finished_at: datetime | None = None,
    message: str = "",
    *,
    resolved: str | list[str] | None = None,
) -> dict[str, Any]:
    """``status.operationState``; ``revision`` is requested, ``resolved`` (default: the same)
    is what ``syncResult`` records (a SHA where the request was ``HEAD`` or a branch)."""
    sync: dict[str, Any] = (
        {"revisions": list(revision)} if isinstance(revision, list) else {"revision": revision}
    )
    resolved = resolved if resolved is not None else revision
    result: dict[str, Any] = (
        {"revisions": list(resolved)} if isinstance(resolved, list) else {"revision": resolved}
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
        "syncResult": result,
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
        sync_status: str = "Synced",
        record_transition: bool = False,
    ) -> list[dict[str, Any]]:
        """The writes of one successful sync; ``health`` is where it ends
        (``Progressing`` stops before health settles); ``sync_status`` what the
        comparison after it finds (``OutOfSync``: ignored differences done wrong)."""
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
            "status": sync_status,
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
            steps.append(self.set_health(health, record_transition=record_transition))
        return steps

    def set_health(self, health: str, *, record_transition: bool = False) -> dict[str, Any]:
        """A comparison that changes health; ``record_transition`` sets
        ``lastTransitionTime`` to this write's time, as ArgoCD 3.x does."""
        moment = self._tick()
        self.status["health"] = {"status": health}
        if record_transition:
            self.status["health"]["lastTransitionTime"] = ts(moment)
        self.status["reconciledAt"] = ts(moment)
        return self.snapshot()

    def advance(self, delta: timedelta) -> datetime:
        """Let time pass without any write; returns the new time."""
        self.now += delta
        return self.now

    def retrying_fail(
        self,
        revision: str,
        attempts: int = 1,
        *,
        resolved: str | None = None,
        final_phase: str | None = "Failed",
        message: str = "one or more objects failed to apply",
    ) -> list[dict[str, Any]]:
        """A sync failing ``attempts`` times with retries (phase ``Running``, ``finishedAt``
        set, "Retrying attempt #N"), then, with ``final_phase``, the final failure."""
        status = self.status
        started = self._tick()
        status["sync"]["status"] = "OutOfSync"
        steps: list[dict[str, Any]] = []
        for attempt in range(1, attempts + 1):
            running = operation_state("Running", revision, started, resolved=resolved)
            running["message"] = f"Retrying operation. Attempt #{attempt}" if attempt > 1 else (
                "one or more tasks are running"
            )
            status["operationState"] = running
            steps.append(self.snapshot())
            status["operationState"] = operation_state(
                "Running",
                revision,
                started,
                self._tick(),
                f"{message}. Retrying attempt #{attempt} at 10:05AM.",
                resolved=resolved,
            )
            status["reconciledAt"] = ts(self._tick())
            steps.append(self.snapshot())
        if final_phase is not None:
            status["operationState"] = operation_state(
                final_phase,
                revision,
                started,
                self._tick(),
                f"{message} (retried {attempts} times).",
                resolved=resolved,
            )
            status["reconciledAt"] = ts(self._tick())
            steps.append(self.snapshot())
        return steps

    def fail(
        self,
        revision: str,
        *,
        phase: str = "Failed",
        message: str = "one or more objects failed to apply",
        resolved: str | None = None,
    ) -> list[dict[str, Any]]:
        """The writes of a failed sync: no history entry, operation Failed/Error.

        ``revision`` is the requested one; ``resolved`` what ``syncResult`` records."""
        status = self.status
        started = self._tick()
        status["sync"]["status"] = "OutOfSync"
        status["operationState"] = operation_state("Running", revision, started, resolved=resolved)
        first = self.snapshot()
        status["operationState"] = operation_state(
            phase, revision, started, self._tick(), message, resolved=resolved
        )
        status["reconciledAt"] = ts(self._tick())
        return [first, self.snapshot()]

    @property
    def last_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.status["history"][-1]
        return entry
