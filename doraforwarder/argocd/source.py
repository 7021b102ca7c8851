"""The ArgoCD source: watch Applications, decide deployments, stage them in Redis.

Wiring of the parts: one :class:`~doraforwarder.argocd.watcher.ApplicationWatcher`
thread per scope feeds the :class:`~doraforwarder.argocd.intake.Intake` (no-ops
end there), which queues changed apps on ordered :class:`~doraforwarder.argocd.lanes.Lanes`;
each lane decides (:mod:`~doraforwarder.argocd.detect`) and commits
(:mod:`~doraforwarder.argocd.persist`) what it has queued, apps of distinct keys
together (a catch-up is thousands), each app's events in order. A sweeper
re-decides apps whose pending sync reached its deadline and keeps ``/readyz``
honest about namespaces that cannot be watched.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes.client import ApiClient, CustomObjectsApi
from redis.exceptions import RedisError

from doraforwarder.argocd.detect import Decision, decide, mark_deleted
from doraforwarder.argocd.identity import (
    Skip,
    destination_cluster,
    resolve_environment,
    resolve_identity,
)
from doraforwarder.argocd.intake import Deleted, Intake, Job, Observed, Recheck
from doraforwarder.argocd.kube import KubeAccessError, build_api_client
from doraforwarder.argocd.lanes import Lanes
from doraforwarder.argocd.model import (
    ANNOTATION_CLUSTER,
    ANNOTATION_COMPONENT,
    AppView,
    app_key,
)
from doraforwarder.argocd.persist import Committed, Decide, Pending, commit_batch, commit_decision
from doraforwarder.argocd.state import AppState
from doraforwarder.argocd.vanished import find_gone
from doraforwarder.argocd.watcher import ApplicationWatcher, WatchScope, WatchTiming
from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.context import AppContext
from doraforwarder.inventory import reference_split
from doraforwarder.logging import get_logger
from doraforwarder.streams import StageDetected

log = get_logger("argocd")

READINESS = "argocd"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ArgoCDSource:
    """Service: follows Application syncs and stages detected deployments."""

    name = "argocd"

    def __init__(
        self,
        context: AppContext,
        *,
        stage: StageDetected,
        clock: Clock = utc_now,
        timing: WatchTiming | None = None,
        sweep_interval: float = 5.0,
        unwatched_grace: float = 120.0,
        redis_retry: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.context = context
        self.config = context.settings.argocd
        self._stage = stage
        self.clock = clock
        self.timing = timing or WatchTiming(watch_timeout=self.config.watch_timeout.total_seconds())
        self.sweep_interval = sweep_interval
        self.unwatched_grace = unwatched_grace
        self.redis_retry = redis_retry
        self.watchers: list[ApplicationWatcher] = []
        self.intake: Intake | None = None
        self._lanes: Lanes[Job] | None = None
        self._views: dict[str, AppView] = {}
        """Last view of apps with a pending sync (what a deadline re-decides from)."""
        self._deadlines: dict[str, datetime] = {}
        self._pending_counts: dict[str, int] = {}
        self._listed: set[str] = set()
        self._environments: dict[str, str] = {}
        """App key -> the environment it is classified in (shown per environment)."""
        self._environment_counts: dict[str, int] = {}
        """How many apps each environment of ``_environments`` has (kept as they change)."""
        self._forgetting: set[asyncio.Task[None]] = set()
        self.found_gone: dict[str, int] = {}
        """Scope label -> apps found deleted while not watched, by the scan after its
        first complete list (set once that scan finished)."""
        self._stop = asyncio.Event()

    @property
    def scopes(self) -> list[WatchScope]:
        if self.config.all_namespaces:
            return [WatchScope(None)]
        return [WatchScope(namespace) for namespace in self.config.namespaces]

    # --- lifecycle ------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        readiness = self.context.readiness
        readiness.require(READINESS, "initial list not done")
        api_client = await self._api_client(stop)
        if api_client is None:
            return
        if readiness.forget("config") is not None:
            log.info("kubernetes configuration usable again")
        self.context.status.sources[self.name] = "running"
        loop = asyncio.get_running_loop()
        metrics = self.context.metrics
        lanes: Lanes[Job] = Lanes(
            self.config.workers,
            self.config.queue_size,
            self._handle,
            on_depth=metrics.lane_queue_depth.set,
            handle_batch=self._handle_batch,
            key_of=_job_key,
        )
        self._lanes = lanes
        intake = Intake(
            lanes.submit_from_thread,
            metrics,
            lambda scope, present: _call_soon(loop, self._on_listed, scope, present),
            lanes.submit_many_from_thread,
            clock=self.clock,
        )
        self.intake = intake
        self.context.status.watched_namespaces = [scope.label for scope in self.scopes]
        thread_stop = threading.Event()
        api = CustomObjectsApi(api_client)
        self.watchers = [
            ApplicationWatcher(api, scope, intake, metrics, thread_stop, self.timing)
            for scope in self.scopes
        ]
        lanes_stop = asyncio.Event()
        lanes_task = asyncio.create_task(lanes.run(lanes_stop), name="argocd-lanes")
        await asyncio.sleep(0)  # the lanes bind to this loop before threads submit
        threads = [
            threading.Thread(
                target=watcher.run, name=f"argocd-watch-{watcher.scope.label}", daemon=True
            )
            for watcher in self.watchers
        ]
        for thread in threads:
            thread.start()
        sweeper = asyncio.create_task(self._sweep(stop), name="argocd-sweeper")
        log.info(
            "watching applications",
            namespaces=[s.label for s in self.scopes],
            workers=self.config.workers,
        )
        try:
            await stop.wait()
        finally:
            thread_stop.set()
            for watcher in self.watchers:
                watcher.interrupt()
            lanes_stop.set()
            sweeper.cancel()
            scans = list(self._forgetting)  # a scan may wait on a lane that no longer drains
            for scan in scans:
                scan.cancel()
            await asyncio.gather(lanes_task, sweeper, *scans, return_exceptions=True)
            await asyncio.to_thread(_join, threads, 5.0)
            await asyncio.to_thread(api_client.close)

    async def _api_client(self, stop: asyncio.Event) -> ApiClient | None:
        """The Kubernetes client, retried quietly while the kubeconfig is unusable.

        One error line per distinct cause (never a traceback, never a crash
        loop); the cause stays visible in ``/readyz`` and ``/api/v1/status``
        until a retry works. None when asked to stop first.
        """
        backoff = Backoff(1.0, 300.0)
        last_cause: str | None = None
        while not stop.is_set():
            try:
                return await asyncio.to_thread(build_api_client, self.config)
            except KubeAccessError as exc:
                cause = str(exc)
            self.context.readiness.not_ready(READINESS, cause)
            self.context.readiness.not_ready("config", cause)
            self.context.status.sources[self.name] = "error: no Kubernetes access"
            self.context.metrics.mark_failure("kubernetes", cause)
            delay = backoff.next_delay()
            if cause != last_cause:
                log.error(cause + "; retrying quietly with backoff until it is fixed")
                last_cause = cause
            if await wait_or_stop(stop, delay):
                return None
        return None

    def _on_listed(self, scope: WatchScope, present: set[tuple[str, str]]) -> None:
        first = scope.label not in self._listed
        self._listed.add(scope.label)
        self._update_readiness()
        self.context.status.apps_tracked = self.intake.apps_tracked if self.intake else 0
        if first:
            task = asyncio.get_running_loop().create_task(self._forget_vanished(scope, present))
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)

    def _update_readiness(self) -> None:
        now = time.monotonic()
        for watcher in self.watchers:
            since = watcher.failing_since
            if since is not None:
                self.context.metrics.mark_failure(
                    "kubernetes", f"namespace {watcher.scope.label}: {watcher.last_error}")
            if since is not None and now - since > self.unwatched_grace:
                self.context.readiness.not_ready(
                    READINESS,
                    f"namespace {watcher.scope.label} not watched for {int(now - since)}s "
                    f"({watcher.last_error})",
                )
                return
        missing = [s.label for s in self.scopes if s.label not in self._listed]
        if missing:
            self.context.readiness.not_ready(
                READINESS, f"initial list not done: {', '.join(missing)}"
            )
        else:
            self.context.readiness.ready(READINESS)
            if all(watcher.failing_since is None for watcher in self.watchers):
                self.context.metrics.mark_success("argocd")  # every watch runs

    async def _sweep(self, stop: asyncio.Event) -> None:
        """Deadlines of pending syncs, and readiness of the watches.

        Nothing stops it but ``stop``: a round that fails is logged and the
        next one comes (a dead sweeper would leave every pending sync
        undecided and ``/readyz`` frozen, silently).
        """
        while not await wait_or_stop(stop, self.sweep_interval):
            try:
                await self.recheck_due()
                self._update_readiness()
                self.context.status.apps_tracked = (
                    self.intake.apps_tracked if self.intake else 0)
            except Exception:
                log.exception("argocd sweeper round failed; the next one comes")

    def relist(self) -> None:
        """Decide every Application again from a fresh list (the daemon calls it after a Redis
        master change).

        A failover can lose what the previous master acknowledged and never
        passed on: a detection (state, dedupe claim and stream entry, one
        transaction) is then simply absent from the new master. The syncs are
        still in the Applications' ``status.history``, and the objects did not
        change, so only a list that decides every object again finds them;
        the apps whose state survived decide to nothing. Costs one list per
        watched scope.
        """
        if self.intake is None:
            return
        for watcher in self.watchers:
            self.intake.decide_all_next_list(watcher.scope)
            watcher.request_relist()
        log.info("listing applications again to decide each against the new redis master",
                 namespaces=[watcher.scope.label for watcher in self.watchers])

    async def drained(self) -> None:
        """Wait until every event queued so far is decided (tests, benchmarks)."""
        if self._forgetting:  # the scan after a first list queues deletions too
            await asyncio.gather(*self._forgetting, return_exceptions=True)
        if self._lanes is not None:
            await self._lanes.join()

    def caught_up(self, resource_version: int) -> bool:
        """Whether every watcher handed over all events up to ``resource_version``."""
        return bool(self.watchers) and all(
            watcher.resource_version is not None
            and int(watcher.resource_version) >= resource_version
            for watcher in self.watchers
        )

    async def recheck_due(self) -> int:
        """Queue a re-decision for every app whose pending deadline passed; returns how many."""
        if self._lanes is None:
            return 0
        now = self.clock()
        due = [key for key, deadline in self._deadlines.items() if deadline <= now]
        for key in due:
            self._deadlines.pop(key, None)
            namespace, name = key.split("/", 1)
            await self._lanes.submit(key, Recheck(namespace, name))
        return len(due)

    async def _forget_vanished(self, scope: WatchScope, present: set[tuple[str, str]]) -> None:
        """Apps with state in Redis but deleted while no process watched: mark them deleted.

        Runs once per scope, after its first complete list (see
        :mod:`~doraforwarder.argocd.vanished`); each app found gone takes the
        deletion path of an app absent from a re-list. A Redis failure starts
        the scan again after a backoff (apps already queued are not queued twice).
        """
        assert self._lanes is not None
        queued: set[tuple[str, str]] = set()
        backoff = Backoff(*self.redis_retry)
        while not self._stop.is_set():
            try:
                async for gone in find_gone(self.context.redis, self.context.keys, scope,
                                            present, self._seen):
                    for namespace, name in gone:
                        if (namespace, name) in queued:
                            continue
                        queued.add((namespace, name))
                        await self._lanes.submit(app_key(namespace, name),
                                                 Deleted(namespace, name, unless_seen=True))
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                self.context.metrics.redis_errors.labels("argocd_scan").inc()
                log.warning("redis unavailable, scan of stored application states retried",
                            namespace=scope.label, error=f"{type(exc).__name__}: {exc}",
                            retry_in=round(delay, 3))
                await wait_or_stop(self._stop, delay)
                continue
            self.found_gone[scope.label] = len(queued)
            log.info("applications deleted while not watched", namespace=scope.label,
                     count=len(queued))
            return

    def _seen(self, namespace: str, name: str) -> bool:
        return self.intake is not None and self.intake.tracks(namespace, name)

    # --- decisions ------------------------------------------------------------------
    async def _handle(self, job: Job) -> None:
        prepared = self._prepare(job)
        if prepared is None:
            return
        committed = await self._commit(prepared.namespace, prepared.name, prepared.decide)
        if committed is not None:
            self._after(job.key, prepared.view, committed)

    async def _handle_batch(self, jobs: list[Job]) -> None:
        """Decide a lane's queued jobs (distinct apps) together: a catch-up's thousands."""
        prepared = [(job, p) for job in jobs if (p := self._prepare(job)) is not None]
        if not prepared:
            return
        if len(prepared) == 1:
            job, one = prepared[0]
            committed = await self._commit(one.namespace, one.name, one.decide)
            if committed is not None:
                self._after(job.key, one.view, committed)
            return
        try:
            results = await commit_batch(
                self.context.redis, self.context.keys, self.config,
                [Pending(p.namespace, p.name, p.decide) for _, p in prepared], self._stage,
            )
        except (RedisError, OSError) as exc:
            # One at a time, each retried until Redis answers: deciding again is
            # harmless, what was committed is what the next read finds.
            self.context.metrics.redis_errors.labels("argocd_decision").inc()
            log.warning("redis unavailable, batch decided one at a time",
                        apps=len(prepared), error=f"{type(exc).__name__}: {exc}")
            for job, one in prepared:
                committed = await self._commit(one.namespace, one.name, one.decide)
                if committed is None:
                    return
                self._after(job.key, one.view, committed)
            return
        for (job, one), committed in zip(prepared, results, strict=True):
            self._after(job.key, one.view, committed)

    def _prepare(self, job: Job) -> _Prepared | None:
        """The bookkeeping before a decision, and the decision to take (None: nothing to do)."""
        if isinstance(job, Deleted) and job.unless_seen and self._seen(job.namespace, job.name):
            return None  # met since the scan found it gone: it exists
        now = self.clock()
        if isinstance(job, Observed):
            now = min(now, job.seen_at or now)  # judged as of when the view was current
            view: AppView | None = job.view
            namespace, name = job.view.namespace, job.view.name
            self._classified(job.key, resolve_environment(job.view, self.config))
        else:
            if isinstance(job, Deleted):
                self._classified(job.key, None)
            namespace, name = job.namespace, job.name
            view = self._views.get(job.key) if isinstance(job, Recheck) else None
            if isinstance(job, Recheck) and view is None:
                return None
        if isinstance(job, Observed):
            self._remember(job.view)
        elif isinstance(job, Deleted):
            self.context.inventory.remove(namespace, name)
        decide_fn: Decide
        if view is None:
            uid = job.uid if isinstance(job, Deleted) else ""

            def decide_fn(stored: AppState | None) -> Decision:
                return mark_deleted(stored, now, uid, namespace=namespace, name=name)
        else:
            current = view

            def decide_fn(stored: AppState | None) -> Decision:
                return decide(current, stored, self.config, now)

        return _Prepared(namespace, name, decide_fn, view)

    def _remember(self, view: AppView) -> None:
        """Record the app in the inventory (served from memory, never from the API)."""
        identity = resolve_identity(view, self.config)
        annotated = (view.annotations.get(ANNOTATION_COMPONENT, ""),
                     view.annotations.get(ANNOTATION_CLUSTER, ""))
        if self.config.known_clusters:
            # As the reference's inventory names it (the names its users' dashboards
            # show), unless an annotation says otherwise.
            split = reference_split(view.name, self.config.known_clusters)
            component, cluster = annotated[0] or split[0], annotated[1] or split[1]
        elif isinstance(identity, Skip):
            # Listed all the same (an ignored component, an environment not forwarded).
            component = annotated[0] or view.name
            cluster = annotated[1] or destination_cluster(view)
        else:
            component, cluster = identity.component, identity.cluster
        self.context.inventory.put(
            namespace=view.namespace,
            name=view.name,
            component=component,
            cluster=cluster,
            health=view.health_status,
            sync=view.sync_status,
            images=view.images,
            forwarded=not isinstance(identity, Skip),
        )

    def _classified(self, key: str, environment: str | None) -> None:
        """Keep the per-environment app counts (``/api/v1/status``, the gauge) current."""
        before = self._environments.get(key)
        if environment == before:
            return
        counts = self._environment_counts
        if environment is None:
            self._environments.pop(key, None)
        else:
            self._environments[key] = environment
            counts[environment] = counts.get(environment, 0) + 1
        if before is not None:
            counts[before] -= 1
            if not counts[before]:
                del counts[before]
        gauge = self.context.metrics.apps_by_environment
        for env in {environment, before} - {None}:
            assert env is not None
            gauge.labels(env).set(counts.get(env, 0))
        self.context.status.apps_by_environment = dict(sorted(counts.items()))

    async def _commit(self, namespace: str, name: str, decide_fn: Decide) -> Committed | None:
        backoff = Backoff(*self.redis_retry)
        while not self._stop.is_set():
            try:
                return await commit_decision(
                    self.context.redis, self.context.keys, self.config, namespace, name, decide_fn,
                    self._stage,
                )
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                self.context.metrics.redis_errors.labels("argocd_decision").inc()
                log.warning(
                    "redis unavailable, decision retried",
                    app=f"{namespace}/{name}",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                )
                await wait_or_stop(self._stop, delay)
        return None

    def _after(self, key: str, view: AppView | None, committed: Committed) -> None:
        metrics = self.context.metrics
        decision = committed.decision
        state = decision.state
        if decision.stale:
            # Nothing was decided from an old view: the newer one this replica will see
            # (or another replica already saw) sets the pending bookkeeping, not this one.
            self._deadlines.pop(key, None)
        elif state is not None and state.next_deadline is not None and view is not None:
            self._views[key] = view
            deadline = state.next_deadline
            if deadline is not None:
                self._deadlines[key] = deadline
            self._pending_counts[key] = len(state.pending)
        else:
            self._views.pop(key, None)
            self._deadlines.pop(key, None)
            self._pending_counts.pop(key, None)
        metrics.deployments_pending.set(sum(self._pending_counts.values()))
        for deployment in committed.staged:
            self.context.unconfirmed.staged(deployment.id, deployment.deployed_at)
            metrics.deployments_detected.labels(deployment.result).inc()
            log.info(
                "deployment detected",
                id=deployment.id,
                app=deployment.app,
                component=deployment.component,
                cluster=deployment.cluster,
                result=deployment.result,
                revision=deployment.revision,
                history_id=deployment.history_id,
                why=deployment.message,
            )
        for incident in decision.incidents:
            log.info("application incident detected", key=incident.key, app=incident.app,
                     component=incident.component, status=incident.status,
                     since=incident.created_at.isoformat())
        for reason in committed.dedupe_reasons:
            log.info("deployment deduplicated", app=key, reason=reason)
        if decision.reasons:
            log.debug(
                "application decided",
                app=key,
                reasons=decision.reasons,
                conflicts=committed.conflicts,
            )
        metrics.mark_success("argocd")


@dataclass(frozen=True, slots=True)
class _Prepared:
    namespace: str
    name: str
    decide: Decide
    view: AppView | None


def _job_key(job: Job) -> str:
    return job.key


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    loop.call_soon_threadsafe(fn, *args)


def _join(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
