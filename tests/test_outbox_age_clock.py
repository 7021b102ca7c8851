"""The outbox age is measured on Redis's clock, the one that stamps stream ids (issue 19, 9).

A daemon whose clock runs an hour ahead of Redis's once reported a fresh
entry as an hour old (the stale-outbox alert fires for nothing); one an
hour behind reported an hour-old backlog as 0 s (the alert never fires).
The gauge, ``/api/v1/status``, ``outbox stats`` and ``outbox list`` all read
the age against ``TIME``. Real redis-server; the daemon's clock is skewed.
"""

from __future__ import annotations

import time
import types

import pytest
import redis.asyncio as aioredis

from doraforwarder import outbox
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.outbox import entries
from tests.devlake_support import deployment_entry, devlake_section, make_context


@pytest.mark.parametrize(("skew", "age"), [(3600.0, 5.0), (-3600.0, 3600.0)],
                         ids=["daemon-ahead", "daemon-behind"])
async def test_outbox_age_is_measured_on_redis_clock(
        redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, skew: float,
        age: float) -> None:
    context = make_context(redis_client, devlake_section("http://devlake.invalid"))
    seconds, micros = await redis_client.time()
    stamped = int((seconds + micros / 1e6 - age) * 1000)
    await redis_client.xadd(context.keys.outbox_stream,
                            deployment_entry("svc:1").to_fields(),  # type: ignore[arg-type]
                            id=f"{stamped}-0")
    real = time.time
    monkeypatch.setattr(entries, "time", types.SimpleNamespace(time=lambda: real() + skew))

    pool = DeliveryPool(context)
    await pool._update_gauges()
    stats = await outbox.outbox_stats(redis_client, context.keys)
    (item,) = await outbox.read_stream(redis_client, context.keys.outbox_stream)
    gauge = context.metrics.registry.get_sample_value("doraforwarder_outbox_oldest_age_seconds")
    for measured in (gauge, context.status.outbox_oldest_age_seconds,
                     stats.oldest_age_seconds, item.age_seconds):
        assert measured == pytest.approx(age, abs=30), measured
