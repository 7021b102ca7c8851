"""What an outbox entry is: one (record, DevLake target) delivery job, as stored.

Stream fields: ``entry`` (the :class:`OutboxEntry` JSON) and, for ordered
entries, ``seq``. Dead letters keep both plus ``outbox_id``, ``reason``,
``status``, ``body`` (truncated) and ``failed_at`` (:func:`dead_fields`), so
a requeue puts them back exactly as they were.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from doraforwarder.devlake.routing import RecordKind, Target

BODY_LIMIT = 2000
"""Characters of a DevLake answer kept in a dead letter."""


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
    def from_fields(cls, fields: Mapping[str, str]) -> OutboxEntry:
        return cls.model_validate_json(fields["entry"])


@dataclass
class StreamItem:
    """An outbox (or dead-letter) stream entry as read from Redis."""

    id: str
    fields: dict[str, str]
    entry: OutboxEntry | None = None
    """None when the ``entry`` field is missing or not a valid :class:`OutboxEntry`."""
    error: str | None = None
    """Why ``entry`` could not be read."""
    seq: int | None = None
    read_at: float | None = None
    """Redis's clock (``TIME``, epoch seconds) when the item was read: its age is
    measured on the clock that stamped its id, so a daemon clock off by minutes
    does not move the outbox-age alert."""

    @classmethod
    def parse(cls, entry_id: str, fields: Mapping[str, str]) -> StreamItem:
        item = cls(id=entry_id, fields=dict(fields))
        try:
            item.entry = OutboxEntry.from_fields(fields)
        except KeyError:
            item.error = "the stream entry has no 'entry' field"
        except ValidationError as exc:
            item.error = f"the stream entry is not a valid outbox entry: {_first_error(exc)}"
        seq = fields.get("seq")
        if seq is not None and seq.isdigit():
            item.seq = int(seq)
        return item

    @property
    def ordered(self) -> bool:
        return self.entry is not None and self.entry.order_key is not None \
            and self.seq is not None

    @property
    def age_seconds(self) -> float:
        """Seconds since the stream id's timestamp (when it entered this stream), on
        Redis's clock when :attr:`read_at` is known (else this process's)."""
        return self.age_at(self.read_at if self.read_at is not None else time.time())

    def age_at(self, now_s: float) -> float:
        """Seconds from the stream id's timestamp (Redis's clock) to ``now_s``."""
        millis = int(self.id.split("-", 1)[0])
        return max(0.0, now_s - millis / 1000.0)


def redis_seconds(answer: tuple[int, int] | list[int] | Any) -> float:
    """Epoch seconds from a ``TIME`` answer (``(seconds, microseconds)``)."""
    seconds, micros = answer
    return int(seconds) + int(micros) / 1_000_000


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {error['msg']}" if location else str(error["msg"])


def dead_fields(fields: Mapping[str, str], *, source_id: str, reason: str,
                status: int | None = None, body: str = "") -> dict[str, str]:
    """The dead-letter stream fields for an entry refused for good."""
    dead = {key: value for key, value in fields.items() if key in ("entry", "seq")}
    if "entry" not in dead:
        dead["raw"] = repr(dict(fields))[:BODY_LIMIT]
    dead.update(
        outbox_id=source_id,
        reason=reason,
        status="" if status is None else str(status),
        body=body[:BODY_LIMIT],
        failed_at=f"{time.time():.3f}",
    )
    return dead
