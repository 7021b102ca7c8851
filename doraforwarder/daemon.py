"""Wiring and lifecycle: HTTP first, then Redis, then sources and workers.

Start order matters for operators: the HTTP server comes up at once so the
liveness probe passes and ``/readyz`` can say *why* the daemon is not ready
(Redis down, a source failing). A Redis that does not answer at start is
retried with backoff for as long as it takes; the process never crash-loops.

Stop (SIGTERM/SIGINT): intake stops first, workers finish the request in hand
or leave the entry in its stream (pending entries are reclaimed on the next
start), then Redis and HTTP close; the whole stop takes at most
``server.shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis

from doraforwarder import http_backend
from doraforwarder.alertmanager.receiver import AlertReceiver
from doraforwarder.argocd.source import ArgoCDSource
from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.commits.stage import PipelineStaging, ResolverPool
from doraforwarder.config import LoadedConfig
from doraforwarder.context import AppContext, Service
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.devlake.plan import Planner
from doraforwarder.dryrun import DryRunSpace, dry_run_keys
from doraforwarder.keys import Keys
from doraforwarder.logging import get_logger
from doraforwarder.ops.loss_backfill import LossBackfill
from doraforwarder.server import AlertInbox, alert_inbox, bound_port, start_http
from doraforwarder.storage import RedisWatch, connect
from doraforwarder.webrca.poller import WebRCAPoller

log = get_logger("daemon")

ServicesFactory = Callable[[AppContext], Sequence[Service]]


def build_services(context: AppContext) -> list[Service]:
    """The sources and worker pools the configuration enables, wired together.

    Sources know nothing of DevLake: the ArgoCD source is handed the staging
    that puts a detected deployment on the deployments stream and plans an
    ArgoCD incident into outbox entries (in its own transaction), the WebRCA
    poller the planner that turns an incident into outbox entries.
    """
    settings = context.settings
    planner = Planner.from_settings(settings, context.dry_run)
    watch = RedisWatch(context)
    services: list[Service] = [watch]
    if settings.argocd.enabled:
        staging = PipelineStaging(context.keys, planner)
        source = ArgoCDSource(context, stage=staging)
        watch.on_master_change.append(source.relist)
        services.append(source)
        if settings.storage.redis.backfill_on_data_loss and not context.dry_run:
            autofill = LossBackfill(context)
            watch.on_data_lost.append(lambda _seen: source.relist())
            watch.on_data_lost.append(autofill.trigger)
            services.append(autofill)
        services.append(ResolverPool(context, planner=planner))
    if settings.webrca.enabled:
        services.append(WebRCAPoller(context, planner=planner))
    if settings.integration.devlake.enabled or context.dry_run:
        services.append(DeliveryPool(context))
    return services


async def wait_for_redis(context: AppContext, stop: asyncio.Event) -> bool:
    """Ping until Redis answers; False when asked to stop first."""
    backoff = Backoff(base=0.5, cap=30.0)
    url = context.settings.storage.redis.display_url()
    context.readiness.not_ready("redis", f"waiting for Redis at {url}")
    while not stop.is_set():
        try:
            await context.redis.ping()
        except Exception as exc:  # connection refused, auth, timeouts: all retried
            delay = backoff.next_delay()
            context.metrics.redis_errors.labels("ping").inc()
            # Logged once per cause (by the dependency board), retried quietly.
            context.metrics.mark_failure("redis", f"{url}: {type(exc).__name__}: {exc}")
            if await wait_or_stop(stop, delay):
                return False
            continue
        context.readiness.ready("redis")
        context.metrics.mark_success("redis")
        log.info("redis reachable", redis=url)
        return True
    return False


class Daemon:
    """One running doraforwarder: HTTP, Redis, and the enabled services."""

    def __init__(
        self,
        config: LoadedConfig,
        *,
        dry_run: bool = False,
        services_factory: ServicesFactory = build_services,
        redis: aioredis.Redis | None = None,
    ) -> None:
        """``redis`` replaces the configured connection (the demo's embedded store)."""
        settings = config.settings
        prefix = settings.storage.redis.keyspace
        self.context = AppContext(
            config=config,
            redis=redis if redis is not None else connect(settings.storage.redis),
            keys=dry_run_keys(prefix) if dry_run else Keys(prefix),
            dry_run=dry_run,
        )
        self._dry_run = DryRunSpace(self.context.redis, prefix, self.context.keys) \
            if dry_run else None
        self.stop = asyncio.Event()
        self.port: int | None = None
        self.alerts: AlertInbox | None = None
        """The HTTP server's Alertmanager inbox (its receiver is handed over once Redis answers)."""
        self._services_factory = services_factory

    def request_stop(self) -> None:
        if not self.stop.is_set():
            log.info("stop requested")
        self.stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop)

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        settings = self.context.settings
        http_backend.declare_asyncio()
        self._install_signal_handlers()
        runner = await start_http(self.context, settings.server.host, settings.server.port_number)
        self.port = bound_port(runner)
        inbox = self.alerts = alert_inbox(runner)
        log.info(
            "http listening",
            host=settings.server.host,
            port=self.port,
            environment=settings.server.environment,
            config=self.context.config.source,
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            if await wait_for_redis(self.context, self.stop):
                if self._dry_run is not None:
                    await self._dry_run.start(self.stop)
                services = list(self._services_factory(self.context))
                self._hand_over_alerts(inbox)
                for service in services:
                    self.context.status.sources[service.name] = "starting"
                    task = asyncio.create_task(
                        self._supervise(service), name=f"service:{service.name}"
                    )
                    tasks.append(task)
                log.info("started", services=[service.name for service in services])
            await self.stop.wait()
        finally:
            await self._shutdown(tasks)
            if self._dry_run is not None:
                with contextlib.suppress(Exception):  # Redis gone: a later dry run cleans up
                    await self._dry_run.close()
            await runner.cleanup()
            await self.context.redis.aclose()
        log.info("stopped")
        return 0

    def _hand_over_alerts(self, inbox: AlertInbox) -> None:
        """Give the HTTP server its Alertmanager receiver (when enabled and DevLake is on)."""
        settings = self.context.settings
        if not settings.alertmanager.enabled:
            return
        planner = Planner.from_settings(settings, self.context.dry_run)
        if not planner.active:
            inbox.unavailable = ("integration.devlake is disabled: incidents would have "
                                 "nowhere to go")
            log.warning("alertmanager notifications refused: integration.devlake is disabled")
            return
        inbox.receiver = AlertReceiver(self.context, planner)
        log.info("alertmanager receiver ready", path="/api/v1/alertmanager",
                 incident_key=settings.alertmanager.incident_key,
                 matchers=settings.alertmanager.matchers or "every alert")

    async def _supervise(self, service: Service) -> None:
        """Run a service; if it crashes, log, mark not ready and restart it with backoff."""
        backoff = Backoff(base=1.0, cap=60.0)
        while not self.stop.is_set():
            try:
                self.context.status.sources[service.name] = "running"
                await service.run(self.stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next_delay()
                self.context.status.sources[service.name] = f"error: {type(exc).__name__}"
                self.context.readiness.not_ready(
                    f"service {service.name}", f"crashed ({type(exc).__name__}), restarting"
                )
                log.exception("service crashed, restarting", service=service.name, retry_in=delay)
                if await wait_or_stop(self.stop, delay):
                    return
                self.context.readiness.ready(f"service {service.name}")
            finally:
                if self.stop.is_set():
                    self.context.status.sources[service.name] = "stopped"

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        self.stop.set()
        if not tasks:
            return
        timeout = self.context.settings.server.shutdown_timeout.total_seconds()
        _, pending = await asyncio.wait(tasks, timeout=max(0.1, timeout - 1.0))
        for task in pending:
            log.warning("service did not stop in time, cancelling", task=task.get_name())
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
