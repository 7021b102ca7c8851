"""A target DevLake refuses, and where its surplus entries are parked in Redis.

The pure part of the refused-target rules (the state kept per target, the
parking member's name, how many parked entries may be taken back): the pool
applies them in :mod:`doraforwarder.devlake.target_waits` and
:mod:`doraforwarder.devlake.intake`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doraforwarder.devlake.client import Refusal
from doraforwarder.devlake.routing import Target


@dataclass
class RefusedTarget:
    """A target DevLake refuses (401/403): its entries wait, one is tried per recheck."""

    target: Target
    refusal: Refusal
    explanation: str
    since: str
    next_try: float
    """Monotonic time when the next entry of this target may be sent."""

    def snapshot(self) -> dict[str, Any]:
        return {"state": "refused", "team": self.target.team, "cause": self.refusal.cause,
                "status": self.refusal.status, "reason": self.explanation,
                "since": self.since}


PARKING_PREFIX = "parked:"
"""Group members holding a refused target's surplus entries: ``parked:<target key>``."""


def parking_member(target_key: str) -> str:
    """The consumer-group member a refused target's surplus entries are parked under."""
    return f"{PARKING_PREFIX}{target_key}"

def parked_target(member: str) -> str | None:
    """The target key of a parking member; None for a real consumer."""
    return member[len(PARKING_PREFIX):] if member.startswith(PARKING_PREFIX) else None

def take_back_allowance(refused: bool, held_of_target: int, cap: int, room: int) -> int:
    """How many parked entries of a target this replica may take back now.

    Not refused here (accepted again, or unknown since this replica started):
    as many as there is room for. Refused: only enough to keep ``cap`` of its
    entries in memory (they take no room), so one is always there for the recheck.
    """
    if refused:
        return max(0, cap - held_of_target)
    return max(0, room)
