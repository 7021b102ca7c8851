"""Durable delivery: the outbox stream, its entries, and how producers stage them.

Producers (deployment resolution, the WebRCA poller) never send anything
themselves: they stage outbox entries into the same Redis transaction
(``MULTI``/``EXEC`` pipeline) as the state change that produced them, so a
crash can neither lose a record nor produce it twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio.client import Pipeline

from doraforwarder.store import Keys

TargetKind = Literal["connection_id", "connection_name", "project_name"]
RecordKind = Literal["deployment", "issue", "close"]


class Target(BaseModel):
    """Where a record goes in DevLake: a webhook connection (by id or name) or a project."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TargetKind
    value: str
    team: str = "global"
    """``global`` or the team name; for logs and metrics only."""

    @property
    def key(self) -> str:
        """Identity of the destination: two teams naming the same target share it."""
        return f"{self.kind}:{self.value}"


class OutboxEntry(BaseModel):
    """One (record, target) delivery job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RecordKind
    target: Target
    record_id: str
    """Deployment id or issue key: DevLake's upsert key within the target."""
    payload: dict[str, Any]
    """The DevLake JSON body, already validated against the contract models."""
    order_key: str | None = None
    """Entries with the same order key are delivered in enqueue order (issues)."""
    enqueued_at: float = Field(default_factory=time.time)

    def to_fields(self) -> dict[str, str]:
        return {"entry": self.model_dump_json()}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> OutboxEntry:
        return cls.model_validate_json(fields["entry"])


def stage_entries(pipe: Pipeline, keys: Keys, entries: Iterable[OutboxEntry]) -> None:
    """Queue the XADDs of ``entries`` on ``pipe`` (a transaction the caller executes)."""
    for entry in entries:
        pipe.xadd(keys.outbox_stream, entry.to_fields())  # type: ignore[arg-type]
