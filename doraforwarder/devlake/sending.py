"""The workers of a delivery pool: one attempt at an entry, and what its answer means.

An attempt checks the entry is still this consumer's, that its target is not
waiting, builds the DevLake body and URL, sends (an ordered entry under its
key's lock, after the order check) and then acknowledges, retries or
dead-letters it according to the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from doraforwarder.devlake.client import (
    Answer,
    Sender,
    awaits_connection,
    classify,
    connection_just_created,
)
from doraforwarder.devlake.payloads import MAX_DEPLOYMENT_COMMITS, contract_body
from doraforwarder.devlake.routing import (
    endpoint,
)
from doraforwarder.devlake.schedule import Held
from doraforwarder.devlake.target_waits import TargetWaits
from doraforwarder.logging import get_logger
from doraforwarder.outbox.consuming import ack_delivered, dead_letter
from doraforwarder.outbox.ordering import OrderLock, order_gate

log = get_logger("devlake")


class Sending(TargetWaits):
    """Workers: attempt, send, and settle each entry."""

    async def _work(self, sender: Sender) -> None:
        while (held := await self.schedule.take()) is not None:
            try:
                await self._attempt(held, sender)
            except RedisError as exc:
                self.context.metrics.redis_errors.labels("delivery").inc()
                delay = 0.0 if await self._recovered(exc) else held.backoff.next_delay()
                log.warning("redis error while delivering, will retry", entry=held.item.id,
                            error=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 3))
                self.schedule.put(held, delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = held.backoff.next_delay()
                log.exception("unexpected error while delivering, will retry",
                              entry=held.item.id, retry_in=round(delay, 3))
                self.schedule.put(held, delay)

    async def _attempt(self, held: Held, sender: Sender) -> None:
        item = held.item
        entry = item.entry
        if not await self._still_ours(held):
            self._let_go(held)
            return
        if entry is None:
            await self._dead(held, "unreadable", item.error or "unreadable entry")
            return
        if self._waits_paused(held, entry):
            return
        try:
            body: dict[str, Any] | None = contract_body(entry.kind, entry.payload)
        except (ValidationError, KeyError) as exc:
            await self._dead(held, "invalid_payload", f"payload breaks the DevLake contract: {exc}")
            return
        if entry.kind == "close":
            body = None
        devlake = self.settings.integration.devlake
        try:
            url = endpoint(devlake.base_url, devlake.api_prefix, entry.target, entry.kind,
                           entry.record_id)
        except ValueError as exc:
            await self._dead(held, "unroutable", str(exc))
            return
        if await self._waits_refused(held, entry):
            return
        if not item.ordered or entry.order_key is None:
            await self._send(held, sender, url, body)
            return
        await self._attempt_ordered(held, sender, url, body)

    async def _attempt_ordered(self, held: Held, sender: Sender, url: str,
                               body: dict[str, Any] | None) -> None:
        """Send an ordered entry under its key's lock, taken only while the entry is ours.

        The order check runs under the lock. Two entries of one key can both
        pass a check only when an operator's ``outbox requeue`` puts an older
        state back after the newer one was checked; with each check made before
        its lock, the requeued one, checked before the newer was acknowledged,
        would lock afterwards and be sent over it. Under the lock it is checked
        after that acknowledgement and dropped as obsolete
        (``tests/test_outbox_ownership.py``). A consumer that lost the entry to
        another cannot take the lock at all.
        """
        item = held.item
        entry = item.entry
        assert entry is not None and entry.order_key is not None
        lock = OrderLock(self.redis, self.keys, entry.order_key, self.consumer,
                         ttl_s=self.settings.integration.devlake.timeout_seconds * 2 + 5)
        started = time.monotonic()
        locked = await lock.acquire(item)
        if locked == "not_owned":
            held.lost = True
            self._let_go(held)
            return
        if locked == "busy":
            self.schedule.put(held, self.recheck)
            return
        held.confirmed = started
        try:
            gate = await order_gate(self.redis, self.keys, item)
            if gate.verdict == "obsolete":
                log.info("dropping obsolete entry: a later state was already delivered",
                         entry=item.id, order_key=entry.order_key, seq=item.seq,
                         delivered_seq=gate.delivered)
                await self._finish(held)
            elif gate.verdict == "blocked":
                self.schedule.park(held, entry.order_key, self.recheck)
            else:
                await self._send(held, sender, url, body)
        finally:
            with contextlib.suppress(RedisError):
                await lock.release()

    async def _send(self, held: Held, sender: Sender, url: str,
                    body: dict[str, Any] | None) -> None:
        entry = held.item.entry
        assert entry is not None
        held.attempts += 1
        answer = await sender.deliver(entry, url, body)
        verdict = classify(answer)
        if verdict.action == "ack":
            await self._delivered(held, answer)
        elif verdict.action == "auth":
            await self._refuse(held, answer, url)
        elif (verdict.reason == "not_found" and entry.target.kind == "project_name"
              and entry.kind != "deployment" and awaits_connection(answer)):
            await self._await_connection(held, answer, url)
        elif (entry.target.kind == "project_name" and entry.kind == "deployment"
              and connection_just_created(answer)):
            await self._retry(held, verdict, answer, url)
        elif verdict.reason == "too_large":
            await self._dead(held, verdict.reason, _too_large(answer, url, body), answer)
        elif verdict.reason == "too_many_commits":
            rows = len((body or {}).get("deploymentCommits") or [])
            await self._dead(held, verdict.reason, (
                f"HTTP 500 from POST {url}: DevLake cannot store {rows} commit rows in one "
                "deployment (it writes them in one MySQL statement of at most 65535 "
                f"placeholders; {MAX_DEPLOYMENT_COMMITS} fit v1.0.3 and main 420e494b, the most "
                "the forwarder sends), and fails so every time: lower github.max_commits (per "
                "repository) so that later deployments fit"),
                answer)
        elif verdict.action == "dead":
            await self._dead(held, verdict.reason, _describe(answer, url), answer)
        else:
            await self._retry(held, verdict, answer, url)

    async def _delivered(self, held: Held, answer: Answer) -> None:
        item = held.item
        entry = item.entry
        assert entry is not None
        await self._finish(held)
        metrics = self.context.metrics
        metrics.records_sent.labels(entry.kind, entry.target.key).inc()
        metrics.delivery_latency.observe(max(0.0, time.time() - entry.enqueued_at))
        metrics.mark_success("devlake")
        self._accepted(entry.target)
        if held.first_failure is not None:
            log.info("delivered after retries", entry=item.id, kind=entry.kind,
                     record=entry.record_id, target=entry.target.key, attempts=held.attempts,
                     waited=round(time.monotonic() - held.first_failure, 3))
        else:
            log.debug("delivered", entry=item.id, kind=entry.kind, record=entry.record_id,
                      target=entry.target.key)
        if entry.kind == "deployment":
            metrics.deployments_sent.labels(entry.target.key).inc()
            self.context.status.recent_deployments.appendleft(_summary(entry))

    async def _finish(self, held: Held) -> None:
        """Acknowledge a delivered or obsolete entry and let its order key move on.

        Unordered entries are acknowledged in batches by :class:`AckBatcher`;
        an ordered one right away, since its successor waits for its key to
        advance in Redis.
        """
        if not held.item.ordered:
            self._acks.add(held)
            return
        await ack_delivered(self.redis, self.keys, held.item, consumer=self.consumer)
        self._acked([held])

    async def _dead(self, held: Held, reason: str, detail: str,
                    answer: Answer | None = None) -> None:
        item = held.item
        entry = item.entry
        dead_id = await dead_letter(
            self.redis, self.keys, item, reason=f"{reason}: {detail}",
            status=answer.status if answer else None, body=answer.body if answer else "",
            consumer=self.consumer,
        )
        if dead_id is None:
            self._let_go(held)
            return
        self.schedule.release(item.id)
        self._room.set()
        self.context.metrics.dead_lettered.labels(reason).inc()
        log.error(
            "moved to dead letters",
            entry=item.id,
            dead_id=dead_id,
            reason=reason,
            detail=detail,
            kind=entry.kind if entry else None,
            record=entry.record_id if entry else None,
            target=entry.target.key if entry else None,
            hint="inspect with 'doraforwarder outbox dead', retry with "
                 "'doraforwarder outbox requeue ID'",
        )
        if entry is not None and entry.order_key is not None:
            self.schedule.wake(entry.order_key)


def _describe(answer: Answer, url: str) -> str:
    if answer.status is None:
        return f"{answer.error} (POST {url})"
    text = " ".join(answer.body.split())[:300]
    return f"HTTP {answer.status} from POST {url}: {text}" if text else \
        f"HTTP {answer.status} from POST {url}"

def _too_large(answer: Answer, url: str, body: dict[str, Any] | None) -> str:
    """A 413's detail: the body's size and where the limit is (no retry can pass it)."""
    size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return (f"HTTP 413 from POST {url}: the body ({size} bytes) is larger than the proxy "
            "in front of DevLake accepts (config-ui's nginx.conf sets client_max_body_size "
            "20m; DevLake itself sets no limit): raise that limit, then requeue it (or "
            "lower github.max_commits so that later deployments fit)")


def _summary(entry: Any) -> dict[str, Any]:
    payload = entry.payload
    return {
        "id": entry.record_id,
        "name": payload.get("name"),
        "result": payload.get("result"),
        "environment": payload.get("environment"),
        "finished": payload.get("finishedDate"),
        "commits": len(payload.get("deploymentCommits") or []),
        "target": entry.target.key,
        "team": entry.target.team,
        "delivered_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
