"""``doraforwarder status``: what ``/api/v1/status`` shows, read from Redis.

Works without the daemon: outbox depth and oldest age, dead letters, the last
WebRCA poll, the applications with stored state, the open Alertmanager
incidents (the alerts or groups whose latest episode Redis holds unresolved),
and whether Redis lost its data (the daemon's marker, see
:class:`doraforwarder.storage.RedisWatch`). What only a running daemon knows
(readiness, dependencies, recent deliveries, the last notification each
process accepted or refused) is named as not available here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import redis.asyncio as aioredis

from doraforwarder import outbox
from doraforwarder.alertmanager.episodes import Episode
from doraforwarder.commands.common import print_json
from doraforwarder.config import load_config
from doraforwarder.keys import Keys
from doraforwarder.redis_errors import redis_failure
from doraforwarder.storage import connect, read_marker

OFFLINE = ["ready", "dependencies", "last_deployments", "sources",
           "alertmanager.last_accepted", "alertmanager.last_refused"]
"""Fields of ``/api/v1/status`` only the running daemon knows."""


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    redis_config = config.settings.storage.redis
    where = redis_config.display_url()
    try:
        status = asyncio.run(read_status(connect(redis_config), Keys(redis_config.keyspace)))
        status["alertmanager"]["enabled"] = config.settings.alertmanager.enabled
    except aioredis.RedisError as exc:
        print(f"doraforwarder status: {redis_failure(exc, redis_config)}", file=sys.stderr)
        return 1
    status["redis"] = where
    if args.output == "json":
        print_json(status)
    else:
        print(render(status))
    return 0


async def read_status(redis: aioredis.Redis, keys: Keys) -> dict[str, Any]:
    try:
        stats = await outbox.outbox_stats(redis, keys)
        last_poll = await redis.get(keys.webrca_last_poll)
        marker = read_marker(await redis.get(keys.redis_marker))
        apps = 0
        async for _ in redis.scan_iter(match=keys.app_state_pattern(), count=1000):
            apps += 1
        alerts = await _alert_incidents(redis, keys)
    finally:
        await redis.aclose()
    return {
        "outbox_depth": stats.outbox,
        "outbox_in_delivery": stats.pending,
        "outbox_oldest_age_seconds": round(stats.oldest_age_seconds or 0.0, 3),
        "dead_letters": stats.dead,
        "last_webrca_poll": json.loads(last_poll) if last_poll else None,
        "apps_with_state": apps,
        "alertmanager": alerts,
        "redis_data": _redis_data(marker),
        "not_available_offline": OFFLINE,
    }


async def _alert_incidents(redis: aioredis.Redis, keys: Keys, batch: int = 500
                           ) -> dict[str, Any]:
    """Open alert incidents: subjects whose stored latest episode is not resolved.

    Counted from the subjects' state (kept ``alertmanager.state_ttl`` after
    their last notification), not from the fingerprints hash, which WebRCA
    shares and which keeps an incident whose state expired.
    """
    subjects = opened = 0
    names: list[str] = []

    async def count() -> None:
        nonlocal subjects, opened
        for text in await redis.mget(names):
            if text is None:   # expired between SCAN and MGET
                continue
            subjects += 1
            episode = Episode.from_json(text)
            opened += episode is not None and episode.resolved_at is None
        names.clear()

    async for name in redis.scan_iter(match=keys.alertmanager_subject_pattern(), count=1000):
        names.append(name)
        if len(names) >= batch:
            await count()
    if names:
        await count()
    return {"open_incidents": opened, "alerts_or_groups": subjects}


def _redis_data(marker: dict[str, Any] | None) -> dict[str, Any]:
    """What the daemon's marker says about Redis keeping its data (see storage.RedisWatch)."""
    if marker is None:
        return {"kept_since": None, "lost_at": None, "detected_by": None}
    return {"kept_since": marker.get("since"), "lost_at": marker.get("lost_at"),
            "detected_by": marker.get("detected_by")}


def _redis_data_text(data: dict[str, Any]) -> str:
    if data["lost_at"]:
        return (f"LOST at {data['lost_at']} (found by {data['detected_by']}): what was staged "
                "and not delivered before then is gone")
    if data["kept_since"]:
        return f"kept since {data['kept_since']}"
    return "no marker (no daemon ran on this Redis yet, or its data was lost since)"


def _alerts_text(alerts: dict[str, Any]) -> str:
    text = (f"{alerts['open_incidents']} open incidents "
            f"({alerts['alerts_or_groups']} alerts or groups remembered)")
    if alerts.get("enabled") is False:
        text += "; alertmanager.enabled is false in this file"
    return text


def render(status: dict[str, Any]) -> str:
    poll = status["last_webrca_poll"]
    poll_text = "never (or WebRCA is off)" if poll is None else \
        f"{poll.get('at', '?')}: {poll.get('outcome', '?')}, {poll.get('incidents', '?')} incidents"
    return "\n".join([
        f"redis:            {status['redis']}",
        f"redis data:       {_redis_data_text(status['redis_data'])}",
        f"outbox:           {status['outbox_depth']} waiting "
        f"({status['outbox_in_delivery']} being delivered), oldest "
        f"{status['outbox_oldest_age_seconds']:.0f}s",
        f"dead letters:     {status['dead_letters']}",
        f"last WebRCA poll: {poll_text}",
        f"applications:     {status['apps_with_state']} with stored state",
        f"alertmanager:     {_alerts_text(status['alertmanager'])}",
        f"not available offline: {', '.join(status['not_available_offline'])} "
        "(ask the running daemon: GET /api/v1/status)",
    ])
