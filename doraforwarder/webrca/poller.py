"""The WebRCA source: poll incidents, hand DevLake what changed.

Every ``webrca.interval`` (first poll at start) the replica holding the
Redis lease reads every page of incidents, keeps the wanted products, has
the planner it was handed turn each into outbox entries and a fingerprint,
and compares that fingerprint with the one stored in Redis. New and changed
incidents are staged through :mod:`doraforwarder.incident_staging` (the
outbox entries in the same ``MULTI``/``EXEC`` as their new fingerprint), so
a crash can neither lose a change nor send it twice, and a restart sends
nothing already sent.

The transaction ``WATCH``es the fingerprints and the lease: a replica whose
lease expired mid-poll cannot stage anything, and two replicas never stage
the same change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.context import AppContext
from doraforwarder.incident_staging import (
    Batch,
    IncidentPlanning,
    PlannedIncident,
    stage_incidents,
)
from doraforwarder.logging import get_logger
from doraforwarder.webrca.client import (
    ConfigurationError,
    IncidentsClient,
    TokenSource,
    TransientError,
    webrca_http,
)
from doraforwarder.webrca.lease import RedisLease
from doraforwarder.webrca.pages import HARD_PAGE_LIMIT, PageRead, is_last_page, page_limit
from doraforwarder.webrca.parse import MalformedIncident, parse_incident, wanted_product

log = get_logger("webrca")

READINESS = "webrca"


class _LeaseLost(Exception):
    pass


class _Interrupted(Exception):
    pass


@dataclass
class PollReport:
    """What one poll did; shown on the status board and stored in Redis."""

    at: str
    outcome: str
    """ok | partial | unavailable | configuration_error | skipped | lease_lost |
    interrupted | error | disabled"""
    incidents: int = 0
    """Distinct incidents of the wanted products read."""
    changed: int = 0
    """Incidents staged for DevLake (new or changed)."""
    pages: int = 0
    malformed: int = 0
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class _PollState:
    pages: int = 0
    malformed: int = 0
    changed: int = 0
    wanted: set[str] = field(default_factory=set)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class WebRCAPoller:
    """The ``webrca`` service. Timing parameters are in milliseconds (tests shrink them)."""

    name = "webrca"

    def __init__(
        self,
        context: AppContext,
        *,
        planner: IncidentPlanning[Any],
        interval_ms: float | None = None,
        retry_base_ms: float = 1_000,
        retry_cap_ms: float = 60_000,
        attempts: int = 4,
        lease_ttl_ms: int = 60_000,
        max_pages: int = HARD_PAGE_LIMIT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.context = context
        self.settings = context.settings.webrca
        interval = (interval_ms / 1000 if interval_ms is not None
                    else self.settings.interval.total_seconds())
        self.interval = max(interval, 0.001)
        self.retry_base = retry_base_ms / 1000
        self.retry_cap = max(retry_cap_ms, retry_base_ms) / 1000
        self.attempts = max(1, attempts)
        self.max_pages = max(1, max_pages)
        self.planner: IncidentPlanning[Any] | None = planner if planner.active else None
        self.lease = RedisLease(context.redis, context.keys.webrca_lease,
                                timedelta(milliseconds=lease_ttl_ms))
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._client: IncidentsClient | None = None
        self._tokens: TokenSource | None = None
        self._polled_here = False
        self.last_report: PollReport | None = None
        self._reports = asyncio.Condition()
        self.polls = 0

    # --- lifecycle -------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        if self.planner is None:
            log.info("webrca polling off: integration.devlake is disabled, "
                     "incidents would have nowhere to go")
            self.context.readiness.forget(READINESS)
            await stop.wait()
            return
        self.context.readiness.require(READINESS, "first poll not done")
        log.info("webrca polling", api_url=self.settings.api_url, interval_s=self.interval,
                 products=self.settings.products or "all")
        try:
            while not stop.is_set():
                await self.poll_once(stop)
                if await wait_or_stop(stop, self.interval):
                    break
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._http = self._client = self._tokens = None

    @property
    def tokens(self) -> TokenSource:
        """The access-token cache (created with the HTTP client)."""
        self._incidents_client()
        assert self._tokens is not None
        return self._tokens

    def _incidents_client(self) -> IncidentsClient:
        """The HTTP client of this run (and its token cache), created on first use."""
        if self._client is None:
            self._http = webrca_http(self.context.config, self._transport)
            self._tokens = TokenSource.for_config(self._http, self.context.config)
            self._client = IncidentsClient(self._http, self.settings.api_url, self._tokens)
        return self._client

    async def wait_for_polls(self, count: int) -> PollReport:
        """Wait until ``count`` polls (skips included) finished; for tests and the demo.

        Bound it with ``asyncio.timeout`` at the call site.
        """
        async with self._reports:
            await self._reports.wait_for(lambda: self.polls >= count)
        assert self.last_report is not None
        return self.last_report

    # --- one poll --------------------------------------------------------------
    async def poll_once(self, stop: asyncio.Event | None = None) -> PollReport:
        """Poll if this replica gets the lease; never raises (the outcome says what happened)."""
        stop = stop or asyncio.Event()
        if self.planner is None:
            report = PollReport(_now(), "disabled")
        else:
            try:
                report = await self._leased_poll(self.planner, stop)
            except Exception as exc:  # a bug or a peer we did not foresee: the next poll comes
                log.exception("webrca poll failed unexpectedly; next try at the next interval")
                report = PollReport(_now(), "error", detail=f"unexpected {type(exc).__name__}")
        await self._record(report)
        return report

    async def _leased_poll(self, planner: IncidentPlanning[Any], stop: asyncio.Event
                           ) -> PollReport:
        try:
            acquired = await self.lease.acquire()
        except RedisError as exc:
            self.context.metrics.redis_errors.labels("webrca_lease").inc()
            return PollReport(_now(), "error", detail=f"Redis: {exc}")
        if not acquired:
            log.debug("another replica is polling webrca")
            return PollReport(_now(), "skipped", detail="another replica holds the lease")
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(lost), name="webrca-lease-renewal")
        try:
            return await self._poll(planner, stop, lost)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(RedisError):
                await self.lease.release()

    async def _renew(self, lost: asyncio.Event) -> None:
        period = self.lease.ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            try:
                if not await self.lease.renew():
                    log.warning("webrca lease lost while polling; stopping this poll")
                    lost.set()
                    return
            except RedisError as exc:
                self.context.metrics.redis_errors.labels("webrca_lease").inc()
                log.warning("webrca lease renewal failed", error=str(exc))

    async def _poll(self, planner: IncidentPlanning[Any], stop: asyncio.Event,
                    lost: asyncio.Event) -> PollReport:
        state = _PollState()
        started = _now()

        def report(outcome: str, detail: str | None = None) -> PollReport:
            return PollReport(started, outcome, len(state.wanted), state.changed, state.pages,
                              state.malformed, detail)

        size = self.settings.page_size
        limit = self.max_pages
        total: int | None = None
        number = 1
        try:
            while True:
                if stop.is_set():
                    raise _Interrupted()
                if lost.is_set():
                    raise _LeaseLost()
                page = await self._fetch(number, size, stop)
                state.pages += 1
                if page.total is not None:
                    total = page.total
                    limit = page_limit(total, size, self.max_pages)
                await self._process(page, planner, state)
                if is_last_page(page, size, limit, total):
                    if (page.number >= self.max_pages and page.problem is None
                            and len(page.items) >= size):
                        log.warning("webrca page limit reached; later pages not read",
                                    pages=page.number, total=total)
                    break
                number += 1
        except ConfigurationError as exc:
            log.error("webrca poll failed: configuration problem", reason=str(exc))
            return report(exc.outcome, str(exc))
        except TransientError as exc:
            log.warning("webrca poll failed, next try at the next interval", reason=str(exc),
                        attempts=self.attempts)
            return report(exc.outcome, str(exc))
        except _LeaseLost:
            return report("lease_lost", "the lease expired during the poll")
        except _Interrupted:
            return report("interrupted", "stopping")
        except RedisError as exc:
            self.context.metrics.redis_errors.labels("webrca_stage").inc()
            log.warning("webrca poll failed on Redis", error=str(exc))
            return report("error", f"Redis: {exc}")
        if state.malformed:
            return report("partial", f"{state.malformed} malformed page(s) or item(s); "
                                     "retried next poll")
        return report("ok")

    async def _fetch(self, number: int, size: int, stop: asyncio.Event) -> PageRead:
        """One page, retried with backoff on transient trouble (``attempts`` in all)."""
        client = self._incidents_client()
        backoff = Backoff(self.retry_base, self.retry_cap)
        attempt = 1
        while True:
            try:
                return await client.fetch_page(number, size)
            except TransientError as exc:
                if attempt >= self.attempts:
                    raise
                delay = backoff.next_delay()
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.retry_cap))
                log.warning("webrca request failed, retrying", reason=str(exc), page=number,
                            attempt=attempt, retry_in_s=round(delay, 3))
                if await wait_or_stop(stop, delay):
                    raise _Interrupted() from None
                attempt += 1

    async def _process(self, page: PageRead, planner: IncidentPlanning[Any],
                       state: _PollState) -> None:
        """Check the items of one page and stage the new and changed incidents."""
        metrics = self.context.metrics
        if page.problem is not None:
            state.malformed += 1
            metrics.webrca_malformed.labels(page.problem).inc()
            log.error("malformed webrca page", page=page.number, problem=page.problem,
                      detail=page.detail)
            return
        plans: dict[str, PlannedIncident] = {}
        for index, item in enumerate(page.items):
            plan = self._plan(item, page.number, index, planner, state)
            if plan is not None:
                plans[plan.incident.incident_id] = plan
        if plans:
            state.changed += await self._stage(planner, list(plans.values()))

    def _plan(self, item: Any, page: int, index: int, planner: IncidentPlanning[Any],
              state: _PollState) -> PlannedIncident | None:
        metrics = self.context.metrics
        try:
            incident = parse_incident(item)
        except MalformedIncident as exc:
            state.malformed += 1
            metrics.webrca_malformed.labels(exc.what).inc()
            log.error("malformed webrca incident", page=page, index=index,
                      incident_id=exc.incident_id, problem=exc.what, detail=str(exc))
            return None
        metrics.incidents_seen.inc()
        component = wanted_product(incident.products, self.settings.products)
        if component is None:
            return None
        state.wanted.add(incident.incident_id)
        try:
            plan: PlannedIncident = planner.plan_incident(incident, component)
        except ValidationError as exc:
            state.malformed += 1
            metrics.webrca_malformed.labels("contract").inc()
            log.error("webrca incident breaks the DevLake issue contract", page=page,
                      index=index, incident_id=incident.incident_id,
                      detail=str(exc).replace("\n", "; "))
            return None
        return plan

    async def _stage(self, planner: IncidentPlanning[Any], plans: list[PlannedIncident]) -> int:
        """Stage the changed plans with their fingerprints, while this replica holds the lease."""
        keys = self.context.keys

        async def prepare(pipe: Pipeline) -> Batch:
            if await pipe.get(keys.webrca_lease) != self.lease.owner:
                raise _LeaseLost()
            return Batch(plans)

        staged = await stage_incidents(self.context.redis, keys, planner, prepare,
                                       watch=(keys.webrca_lease,))
        self.context.metrics.incidents_changed.inc(len(staged.changed))
        for p in staged.changed:
            log.info("incident staged for devlake", incident_id=p.incident.incident_id,
                     status=p.incident.status, targets=p.target_keys,
                     new=staged.previous.get(p.incident.incident_id) is None)
        return len(staged.changed)

    # --- reporting ---------------------------------------------------------------
    async def _record(self, report: PollReport) -> None:
        context = self.context
        context.metrics.webrca_polls.labels(report.outcome).inc()
        readiness = context.readiness
        if report.outcome in ("ok", "partial"):
            self._polled_here = True
            context.metrics.mark_success("webrca")
            readiness.ready(READINESS)
        elif report.outcome == "configuration_error":
            readiness.not_ready(READINESS, report.detail or "configuration problem")
        elif report.outcome in ("unavailable", "error"):
            readiness.not_ready(READINESS, f"last poll failed: {report.detail}")
            context.metrics.mark_failure("webrca", report.detail or report.outcome)
        elif report.outcome == "skipped" and not self._polled_here:
            readiness.ready(READINESS)
        if report.outcome in ("ok", "partial"):
            log.info("webrca poll done", **report.as_dict())
        status = report.as_dict()
        if report.outcome == "skipped":
            stored = await self._stored_last_poll()
            status = dict(stored, polled_by="another replica") if stored else status
        elif report.outcome not in ("disabled", "interrupted"):
            try:
                await context.redis.set(context.keys.webrca_last_poll, json.dumps(status))
            except RedisError:
                context.metrics.redis_errors.labels("webrca_status").inc()
        context.status.last_webrca_poll = status
        self.last_report = report
        async with self._reports:
            self.polls += 1
            self._reports.notify_all()

    async def _stored_last_poll(self) -> dict[str, Any] | None:
        try:
            text = await self.context.redis.get(self.context.keys.webrca_last_poll)
        except RedisError:
            return None
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
