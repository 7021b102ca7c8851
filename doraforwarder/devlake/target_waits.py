"""Why an entry waits instead of being sent: a retry, a 429, a refused target.

A failed entry gets its own next-attempt time (backoff with full jitter, or
``Retry-After``); a 429 pauses the whole target; a target DevLake refuses
(401/403) has one entry retried per ``refused_recheck`` and the rest held up
to a cap, the surplus parked in Redis; incidents for a project whose
connection does not exist yet wait for its first deployment. Each shows in
``/api/v1/status`` until DevLake accepts the target again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from doraforwarder.devlake.client import (
    Answer,
    Verdict,
    refusal,
)
from doraforwarder.devlake.ownership import Ownership
from doraforwarder.devlake.refused import RefusedTarget
from doraforwarder.devlake.routing import (
    Target,
    project_connection_name,
    scope_path,
)
from doraforwarder.devlake.schedule import Held, held_target, id_order
from doraforwarder.logging import get_logger
from doraforwarder.outbox.entries import OutboxEntry

log = get_logger("devlake")


def _refused_key(target_key: str) -> str:
    """The park key of a refused target's waiting entries."""
    return f"refused:{target_key}"


class TargetWaits(Ownership):
    """Retries and the targets that wait: rate-limited, refused, awaiting a connection."""

    async def _retry(self, held: Held, verdict: Verdict, answer: Answer, url: str) -> None:
        entry = held.item.entry
        assert entry is not None
        if held.first_failure is None:
            held.first_failure = time.monotonic()
        if answer.retry_after is not None and verdict.reason == "rate_limited":
            delay = min(answer.retry_after, self.max_retry_after)
            held.backoff.next_delay()
        else:
            delay = held.backoff.next_delay()
        if verdict.reason == "rate_limited":
            # DevLake (or a proxy) limits the client, not one record: the whole target waits.
            until = time.monotonic() + delay
            self.paused[entry.target.key] = max(until, self.paused.get(entry.target.key, 0.0))
            self._show_paused(entry.target, delay)
        self.context.metrics.delivery_retries.labels(verdict.reason).inc()
        if verdict.reason in ("network", "timeout", "server_error", "unexpected_status"):
            self.context.metrics.mark_failure("devlake", _cause(verdict.reason, answer))
        held.last_reason = verdict.reason
        log.warning(
            "delivery failed, will retry",
            entry=held.item.id,
            kind=entry.kind,
            record=entry.record_id,
            target=entry.target.key,
            reason=verdict.reason,
            status=answer.status,
            error=answer.error,
            attempt=held.attempts,
            retry_in=round(delay, 3),
            url=url,
        )
        self.schedule.put(held, delay)


    def _show_paused(self, target: Target, delay: float) -> None:
        """Name the rate-limited target in ``/api/v1/status`` until DevLake accepts it again."""
        if target.key in self.refused or target.key in self.awaiting:
            return  # a stronger reason to wait is shown already
        until = datetime.now(UTC) + timedelta(seconds=delay)
        self.context.status.devlake_targets[target.key] = {
            "state": "rate_limited", "team": target.team,
            "reason": "DevLake answered 429: every entry of this target waits for its "
                      "Retry-After (at most delivery.max_retry_after)",
            "until": until.isoformat(timespec="seconds")}

    def _waits_paused(self, held: Held, entry: OutboxEntry) -> bool:
        """Put ``held`` back, unsent, while its target is paused by a 429."""
        until = self.paused.get(entry.target.key)
        if until is None:
            return False
        left = until - time.monotonic()
        if left <= 0:
            del self.paused[entry.target.key]
            return False
        self.schedule.put(held, left)
        return True

    async def _waits_refused(self, held: Held, entry: OutboxEntry) -> bool:
        """Park ``held`` if its target is refused and this is not the time to try again.

        One entry per target is sent each ``refused_recheck`` (DevLake's key may
        be fixed without a restart); the others wait, without a request: in
        memory up to ``refused_max_held``, parked in Redis beyond.
        """
        refused = self.refused.get(entry.target.key)
        if refused is None:
            return False
        if await self._parks_surplus(held):
            return True
        now = time.monotonic()
        if now >= refused.next_try:
            refused.next_try = now + self.refused_recheck
            return False
        self.schedule.park(held, _refused_key(entry.target.key), refused.next_try - now)
        self._room.set()
        return True

    async def _refuse(self, held: Held, answer: Answer, url: str) -> None:
        entry = held.item.entry
        assert entry is not None
        target = entry.target
        found = refusal(answer)
        previous = self.refused.get(target.key)
        metrics = self.context.metrics
        self.context.metrics.delivery_retries.labels("auth").inc()
        if held.first_failure is None:
            held.first_failure = time.monotonic()
        if previous is None or previous.refusal.cause != found.cause:
            env = self._token_envs.get(target.key, self.settings.integration.devlake.token_env)
            devlake = self.settings.integration.devlake
            explanation = found.explain(scope_path(url, devlake.base_url, devlake.api_prefix),
                                        env)
            if previous is not None:
                metrics.target_refused.labels(target.key, previous.refusal.cause).set(0)
            refused = RefusedTarget(
                target, found, explanation,
                since=datetime.now(UTC).isoformat(timespec="seconds"),
                next_try=time.monotonic() + self.refused_recheck)
            self.refused[target.key] = refused
            metrics.target_refused.labels(target.key, found.cause).set(1)
            self.context.status.devlake_targets[target.key] = {
                **refused.snapshot(), "held": self.schedule.count(target.key),
                "parked": self.parked.get(target.key, 0)}
            log.error(f"DevLake refuses target {target.key}: {explanation}",
                      target=target.key, team=target.team, cause=found.cause,
                      status=answer.status, token_env=env,
                      hint="its entries wait in the outbox (at most delivery.refused_max_held "
                           "in memory, the rest parked in Redis); one is retried every "
                           "refused_recheck: once the key is fixed they are all delivered, "
                           "no restart needed")
        else:
            log.debug("DevLake still refuses target", target=target.key, cause=found.cause,
                      entry=held.item.id)
        refused = self.refused[target.key]
        self._room.set()
        if await self._parks_surplus(held):
            return
        self.schedule.park(held, _refused_key(target.key),
                           max(refused.next_try - time.monotonic(), 0.001))

    async def _parks_surplus(self, held: Held) -> bool:
        """Bring a refused target back to the cap in memory; True if ``held`` was parked.

        More than the cap are held when entries were read before the target
        was known to be refused (one batch, or taken back after a start). The
        newest waiting ones are parked, so the oldest stay in memory: an
        issue's close then rarely waits in memory for its upsert parked in
        Redis. ``held`` itself (in this worker) is parked only if that is not
        enough.
        """
        target = held_target(held)
        if target is None or not self._over_refused_cap(target):
            return False
        newest = sorted(self.schedule.waiting_of(target), key=lambda h: id_order(h.item.id))
        shed: list[str] = []
        while newest and self._over_refused_cap(target):
            entry_id = newest.pop().item.id
            self.schedule.release(entry_id)
            shed.append(entry_id)
        parks_held = self._over_refused_cap(target)
        if parks_held:
            self.schedule.release(held.item.id)
            shed.append(held.item.id)
        await self._park(target, shed)
        return parks_held

    def _accepted(self, target: Target) -> None:
        """DevLake took an entry of ``target``: it is neither refused nor awaited any more."""
        refused = self.refused.pop(target.key, None)
        if target.key in self.awaiting:
            self.awaiting.discard(target.key)
            log.info(f"connection {project_connection_name(target.value)} exists now: "
                     f"incidents for project {target.value} are delivered", target=target.key)
        if refused is None:
            if target.key not in self.refused:
                self.context.status.devlake_targets.pop(target.key, None)
            return
        self.context.metrics.target_refused.labels(target.key, refused.refusal.cause).set(0)
        self.context.status.devlake_targets.pop(target.key, None)
        log.info(f"DevLake accepts target {target.key} again", target=target.key,
                 team=target.team, held=self.schedule.count(target.key),
                 parked=self.parked.get(target.key, 0))
        self.schedule.wake(_refused_key(target.key))
        self._room.set()  # the feeder takes the parked entries back

    async def _await_connection(self, held: Held, answer: Answer, url: str) -> None:
        """Incidents for a project before its first deployment created the connection: wait."""
        entry = held.item.entry
        assert entry is not None
        target = entry.target
        name = project_connection_name(target.value)
        if target.key not in self.awaiting:
            self.awaiting.add(target.key)
            self.context.status.devlake_targets[target.key] = {
                "state": "awaiting_connection", "team": target.team,
                "reason": f"DevLake has no connection {name} yet; the first deployment to "
                          f"project {target.value} creates it",
                "since": datetime.now(UTC).isoformat(timespec="seconds")}
            log.warning(f"incidents for project {target.value} wait: DevLake has no "
                        f"connection {name} until the first deployment to the project "
                        "creates it", target=target.key, team=target.team, url=url)
        await self._retry(held, Verdict("retry", "awaiting_connection"), answer, url)


def _cause(reason: str, answer: Answer) -> str:
    return f"{reason}: HTTP {answer.status}" if answer.status else f"{reason}: {answer.error}"
