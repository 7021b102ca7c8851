"""``doraforwarder outbox stats|list|dead|requeue|drop``: inspect and repair delivery.

Works on the Redis of the configuration file, while the daemon runs or not:
every change is one atomic Redis operation the running workers cope with.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from doraforwarder import outbox
from doraforwarder.commands.common import print_json
from doraforwarder.config import RedisConfig, format_duration, load_config
from doraforwarder.keys import Keys
from doraforwarder.redis_errors import redis_failure
from doraforwarder.storage import connect


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    redis_config = config.settings.storage.redis
    return asyncio.run(_run(args, connect(redis_config), Keys(redis_config.keyspace),
                            redis_config))


async def _run(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys,
               redis_config: RedisConfig) -> int:
    where = redis_config.display_url()
    try:
        action = args.action
        as_json = args.output == "json"
        if action == "stats":
            stats = await outbox.outbox_stats(redis, keys)
            print_json(dataclasses.asdict(stats)) if as_json else print(format_stats(stats, where))
        elif action in ("list", "dead"):
            stream = keys.outbox_stream if action == "list" else keys.dead_stream
            items = await outbox.read_stream(redis, stream, args.limit)
            total = await redis.xlen(stream)
            if as_json:
                print_json({"total": total, "entries": [_as_dict(item) for item in items]})
            elif action == "list":
                print(format_outbox(items, total, ever_used=await _ever_used(redis, keys)))
            else:
                print(format_dead(items, total))
        elif action == "requeue":
            return await _requeue(args, redis, keys)
        elif action == "drop":
            stream = await outbox.drop(redis, keys, args.id)
            where_from = "the outbox" if stream == "outbox" else "the dead letters"
            print(f"dropped {args.id} from {where_from}")
        return 0
    except outbox.RepairError as exc:
        print(f"doraforwarder outbox: {exc}", file=sys.stderr)
        return 1
    except aioredis.ConnectionError as exc:
        print(f"doraforwarder outbox: {redis_failure(exc, redis_config)}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


async def _ever_used(redis: aioredis.Redis, keys: Keys) -> bool:
    """Whether anything was ever staged: the outbox stream exists once it was (even empty)."""
    return bool(await redis.exists(keys.outbox_stream, keys.dead_stream))


def _as_dict(item: outbox.StreamItem) -> dict[str, Any]:
    entry = item.entry
    return {
        "id": item.id,
        "age_seconds": round(item.age_seconds, 3),
        "kind": entry.kind if entry else None,
        "target": entry.target.key if entry else None,
        "team": entry.target.team if entry else None,
        "record_id": entry.record_id if entry else None,
        "order": f"{entry.order_key}#{item.seq}" if entry and entry.order_key else None,
        "error": item.error,
        "reason": item.fields.get("reason"),
        "status": item.fields.get("status"),
        "failed_at": item.fields.get("failed_at"),
    }


async def _requeue(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    if not args.all:
        new_id = await outbox.requeue(redis, keys, args.id)
        print(f"requeued {args.id} as outbox entry {new_id}")
        return 0
    moved, errors = await outbox.requeue_all(redis, keys)
    for dead_id, new_id in moved:
        print(f"requeued {dead_id} as outbox entry {new_id}")
    for error in errors:
        print(f"skipped: {error}")
    print(f"{len(moved)} requeued, {len(errors)} skipped")
    return 1 if errors else 0


# --- rendering (pure) --------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) if rows else len(headers[i])
              for i in range(len(headers))]
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def age(seconds: float | None) -> str:
    """An age to the second, written as durations are in the configuration (``1h5m3s``)."""
    return "-" if seconds is None else format_duration(timedelta(seconds=int(seconds)))


def _describe(item: outbox.StreamItem) -> tuple[str, str, str]:
    entry = item.entry
    if entry is None:
        return "?", "(unreadable)", item.error or ""
    target = entry.target.key if entry.target.team == "global" \
        else f"{entry.target.key} ({entry.target.team})"
    return entry.kind, target, entry.record_id


def format_stats(stats: outbox.OutboxStats, where: str) -> str:
    lines = [
        f"redis:          {where}",
        f"outbox:         {stats.outbox} entries waiting for DevLake "
        f"({stats.pending} being delivered or retried)",
        f"oldest entry:   {age(stats.oldest_age_seconds)}",
        f"dead letters:   {stats.dead}",
    ]
    if stats.by_kind:
        lines.append("by kind:        " + ", ".join(
            f"{kind}={count}" for kind, count in sorted(stats.by_kind.items())))
    if stats.by_target:
        lines += ["", table(["TARGET", "WAITING"],
                            [[t, str(n)] for t, n in sorted(stats.by_target.items())])]
    if stats.consumers:
        lines += ["", table(["CONSUMER", "HOLDING"],
                            [[c, str(n)] for c, n in sorted(stats.consumers.items())])]
    if stats.dead_by_reason:
        lines += ["", table(["DEAD REASON", "COUNT"],
                            [[r, str(n)] for r, n in sorted(stats.dead_by_reason.items())])]
    return "\n".join(lines)


def _listing(items: Sequence[outbox.StreamItem], total: int, header: list[str],
             row: Callable[[outbox.StreamItem], list[str]]) -> str:
    text = table(header, [row(item) for item in items])
    if total > len(items):
        text += f"\n... {total - len(items)} more (use --limit)"
    return text


def _outbox_row(item: outbox.StreamItem) -> list[str]:
    kind, target, record = _describe(item)
    order = f"{item.entry.order_key}#{item.seq}" if item.entry and item.entry.order_key else "-"
    return [item.id, kind, target, age(item.age_seconds), order, record]


def _dead_row(item: outbox.StreamItem) -> list[str]:
    kind, target, record = _describe(item)
    failed = item.fields.get("failed_at", "")
    when = age(time.time() - float(failed)) + " ago" if failed else "-"
    reason = " ".join(item.fields.get("reason", "").split())
    return [item.id, kind, target, record, item.fields.get("status") or "-", when, reason[:160]]


def format_outbox(items: Sequence[outbox.StreamItem], total: int, ever_used: bool = True) -> str:
    if not items and not ever_used:
        return "no outbox yet: nothing was ever staged in this Redis (check storage.redis)"
    if not items:
        return "the outbox is empty: everything was delivered"
    return _listing(items, total, ["ID", "KIND", "TARGET", "AGE", "ORDER", "RECORD"],
                    _outbox_row)


def format_dead(items: Sequence[outbox.StreamItem], total: int) -> str:
    if not items:
        return "no dead letters"
    text = _listing(items, total,
                    ["ID", "KIND", "TARGET", "RECORD", "STATUS", "FAILED", "REASON"], _dead_row)
    text += "\n\nrequeue after fixing the cause: doraforwarder outbox requeue ID | --all"
    return text
