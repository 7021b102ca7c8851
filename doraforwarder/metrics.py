"""Prometheus metrics, one registry per daemon so tests can run several.

Names start with ``doraforwarder_``. Every long wait (rate limits, DevLake
outages, watch restarts) has a gauge or counter here, so operators see it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from doraforwarder import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# ``*_created`` series double every counter's cardinality and no dashboard reads
# them; prometheus-client only offers this switch process-wide.
disable_created_metrics()  # type: ignore[no-untyped-call]

DEPENDENCIES = ("redis", "kubernetes", "devlake", "github", "webrca")
"""What ``doraforwarder_dependency_up`` reports on, one series each."""


class Metrics:
    """All metrics of one daemon instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.on_dependency: Callable[[str, bool, str], None] | None = None
        """Told of every success and failure (the status board's dependency map)."""
        r = self.registry
        # The process itself
        self.build_info = Info("doraforwarder_build", "Version of the running forwarder.",
                               registry=r)
        self.build_info.info({"version": __version__})
        self.ready = Gauge("doraforwarder_ready", "1 when /readyz answers 200, else 0.",
                           registry=r)
        self.dependency_up = Gauge(
            "doraforwarder_dependency_up",
            "1 while the last exchange with the dependency worked, 0 while it fails.",
            ["dependency"], registry=r,
        )
        self.dependency_last_success = Gauge(
            "doraforwarder_dependency_last_success_timestamp_seconds",
            "Unix time of the last successful exchange with each dependency.",
            ["dependency"], registry=r,
        )
        # ArgoCD source
        self.events_seen = Counter(
            "doraforwarder_argocd_events", "Watch events received, by type.", ["type"], registry=r
        )
        self.events_noop = Counter(
            "doraforwarder_argocd_noop_events",
            "Events decided in memory as nothing to do (refresh only).",
            registry=r,
        )
        self.watch_restarts = Counter(
            "doraforwarder_argocd_watch_restarts",
            "Watches restarted, by namespace and reason.",
            ["namespace", "reason"],
            registry=r,
        )
        self.relists = Counter(
            "doraforwarder_argocd_relists", "Full re-lists (start, 410 Gone).", ["namespace"],
            registry=r,
        )
        self.apps_tracked = Gauge(
            "doraforwarder_argocd_apps_tracked", "Applications with state in memory.", registry=r
        )
        self.apps_by_environment = Gauge(
            "doraforwarder_argocd_apps_by_environment",
            "Tracked Applications by the DORA environment they were classified in.",
            ["environment"], registry=r,
        )
        self.malformed_objects = Counter(
            "doraforwarder_argocd_malformed_objects",
            "Application objects skipped because a field is missing or mistyped.",
            ["field"],
            registry=r,
        )
        self.deployments_detected = Counter(
            "doraforwarder_deployments_detected",
            "Deployments decided, by result.",
            ["result"],
            registry=r,
        )
        self.deployments_pending = Gauge(
            "doraforwarder_deployments_pending_health",
            "Syncs waiting for health to settle.",
            registry=r,
        )
        self.lane_queue_depth = Gauge(
            "doraforwarder_argocd_queue_depth", "Events waiting for a decision lane.", registry=r
        )
        # Commits
        self.github_requests = Counter(
            "doraforwarder_github_requests", "GitHub API requests, by kind and status.",
            ["kind", "status"], registry=r,
        )
        self.github_rate_limit_remaining = Gauge(
            "doraforwarder_github_rate_limit_remaining",
            "X-RateLimit-Remaining of the last GitHub answer, by resource.",
            ["resource"],
            registry=r,
        )
        self.github_rate_limit_waiting = Gauge(
            "doraforwarder_github_rate_limit_wait_seconds",
            "Seconds left to wait for the GitHub rate limit to reset (0 when not waiting).",
            registry=r,
        )
        self.commits_truncated = Counter(
            "doraforwarder_commit_ranges_truncated",
            "Commit ranges cut at github.max_commits.",
            registry=r,
        )
        self.commits_unresolved = Counter(
            "doraforwarder_commits_unresolved",
            "Image SHAs whose repository or details could not be resolved.",
            ["reason"],
            registry=r,
        )
        self.resolve_queue_depth = Gauge(
            "doraforwarder_resolve_queue_depth",
            "Detected deployments waiting for commit resolution.",
            registry=r,
        )
        # Delivery
        self.deployments_sent = Counter(
            "doraforwarder_deployments_sent",
            "Deployment records accepted by DevLake, by target.",
            ["target"],
            registry=r,
        )
        self.records_sent = Counter(
            "doraforwarder_records_sent",
            "Records accepted by DevLake, by kind and target.",
            ["kind", "target"],
            registry=r,
        )
        self.delivery_retries = Counter(
            "doraforwarder_delivery_retries",
            "Delivery attempts that will be retried, by reason.",
            ["reason"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "doraforwarder_outbox_depth", "Entries waiting in the outbox.", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "doraforwarder_outbox_oldest_age_seconds",
            "Age of the oldest entry waiting in the outbox (0 when it is empty).",
            registry=r,
        )
        self.deliveries = Counter(
            "doraforwarder_deliveries",
            "Delivery attempts, by target and outcome (delivered, retry, refused, dead).",
            ["target", "outcome"], registry=r,
        )
        self.target_refused = Gauge(
            "doraforwarder_devlake_target_refused",
            "1 while DevLake refuses a target (401/403), by target and cause.",
            ["target", "cause"], registry=r,
        )
        self.refused_waiting = Gauge(
            "doraforwarder_devlake_refused_entries",
            "Entries of a refused (401/403) target waiting, by target and where: memory "
            "(held by this replica, at most delivery.refused_max_held) or redis (parked).",
            ["target", "where"], registry=r,
        )
        self.deployments_without_commits = Counter(
            "doraforwarder_deployments_without_commits",
            "Deployments sent with no resolvable source commit, by reason.",
            ["reason"], registry=r,
        )
        self.dead_letters = Gauge(
            "doraforwarder_dead_letters", "Entries in the dead-letter stream.", registry=r
        )
        self.dead_lettered = Counter(
            "doraforwarder_dead_lettered", "Entries moved to dead letters, by reason.",
            ["reason"], registry=r,
        )
        self.delivery_latency = Histogram(
            "doraforwarder_delivery_latency_seconds",
            "From enqueue to DevLake acknowledgement.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 1800, 7200),
            registry=r,
        )
        # WebRCA
        self.incidents_seen = Counter(
            "doraforwarder_webrca_incidents_seen", "Incidents read from WebRCA.", registry=r
        )
        self.incidents_changed = Counter(
            "doraforwarder_webrca_incidents_changed",
            "Incidents new or changed, enqueued for DevLake.",
            registry=r,
        )
        self.webrca_malformed = Counter(
            "doraforwarder_webrca_malformed", "Malformed WebRCA pages or items.", ["what"],
            registry=r,
        )
        self.webrca_polls = Counter(
            "doraforwarder_webrca_polls", "WebRCA polls, by outcome.", ["outcome"], registry=r
        )
        # Alertmanager
        self.alertmanager_notifications = Counter(
            "doraforwarder_alertmanager_notifications",
            "Alertmanager notifications received on /api/v1/alertmanager, by answer "
            "(accepted, bad_request, too_large, unauthorized, unavailable).",
            ["outcome"], registry=r,
        )
        self.alertmanager_incidents_staged = Counter(
            "doraforwarder_alertmanager_incidents_staged",
            "Incident upserts from Alertmanager alerts staged for DevLake (new or changed).",
            registry=r,
        )
        # Sources in general
        self.source_last_success = Gauge(
            "doraforwarder_source_last_success_timestamp_seconds",
            "Unix time of the last successful action of each source.",
            ["source"],
            registry=r,
        )
        self.redis_errors = Counter(
            "doraforwarder_redis_errors", "Redis operations that failed.", ["operation"], registry=r
        )
        self.redis_data_lost = Counter(
            "doraforwarder_redis_data_lost",
            "Times this process found that Redis lost its data (restart without persistence, "
            "FLUSHALL, failover to an empty replica), by what showed it: marker (the key "
            "written at start is gone or new) or group (a consumer group was missing and was "
            "recreated).", ["evidence"], registry=r,
        )
        for evidence in ("marker", "group"):  # exported at 0, so increase() sees the first
            self.redis_data_lost.labels(evidence)
        self.redis_loss_backfills = Counter(
            "doraforwarder_redis_loss_backfills",
            "Backfills of ArgoCD's kept history this process ran by itself after Redis lost "
            "its data, by outcome: requested (a loss found), done, failed.", ["outcome"],
            registry=r,
        )
        for outcome in ("requested", "done", "failed"):
            self.redis_loss_backfills.labels(outcome)
        self.redis_loss_backfill_staged = Counter(
            "doraforwarder_redis_loss_backfill_staged",
            "Deployments staged again by the backfills after a Redis data loss.", registry=r,
        )

    def mark_success(self, source: str) -> None:
        """Record that ``source`` (argocd, webrca, devlake, github) just worked."""
        now = time.time()
        self.source_last_success.labels(source).set(now)
        dependency = "kubernetes" if source == "argocd" else source
        self.dependency_up.labels(dependency).set(1)
        self.dependency_last_success.labels(dependency).set(now)
        if self.on_dependency is not None:
            self.on_dependency(dependency, True, "")

    def mark_failure(self, dependency: str, error: str = "") -> None:
        """Record that the last exchange with ``dependency`` failed (``error``: the cause)."""
        self.dependency_up.labels(dependency).set(0)
        if self.on_dependency is not None:
            self.on_dependency(dependency, False, error)

    def render(self) -> bytes:
        return generate_latest(self.registry)
