"""How producers stage outbox entries and dead letters inside their own transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis.asyncio.client import Pipeline

from doraforwarder.keys import Keys
from doraforwarder.outbox.entries import OutboxEntry
from doraforwarder.outbox.ordering import stage_ordered


def stage_entries(pipe: Pipeline, keys: Keys, entries: Iterable[OutboxEntry]) -> None:
    """Queue the staging of ``entries`` on ``pipe`` (a transaction the caller executes).

    See :mod:`doraforwarder.outbox` for what is written and the ordering it buys.
    """
    for entry in entries:
        if entry.order_key is None:
            pipe.xadd(keys.outbox_stream, entry.to_fields())  # type: ignore[arg-type]
        else:
            stage_ordered(pipe, keys, entry.order_key, entry.model_dump_json())


def stage_dead(pipe: Pipeline, keys: Keys, fields: Mapping[str, str]) -> None:
    """Queue the XADD of a dead letter (built by :func:`dead_fields`) on ``pipe``."""
    pipe.xadd(keys.dead_stream, dict(fields))  # type: ignore[arg-type]
