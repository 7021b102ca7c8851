"""What the daemon does when the Redis master changes under it (Sentinel failover).

A failover can leave the previous master up, and a master, for a while: a
Sentinel turns it into a replica only once it reports its role again (about
10 s), and everything written to it meanwhile is flushed when it resyncs. The
daemon's connections must follow the Sentinels' answer at once, not when they
happen to break.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from doraforwarder.config import load_config
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.storage import RedisWatch, connect
from doraforwarder.testing.redis_server import RedisServerUnavailable, SentinelGroup, wait_for


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    try:
        with SentinelGroup(keep_logs_in=tmp_path / "redis-logs") as started:
            yield started
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))


def split_brain(group: SentinelGroup) -> None:
    """The replica becomes a master and the Sentinels name it, the old master stays a master."""
    group.replica.client().replicaof("NO", "ONE")
    for port in group.sentinel_ports:
        sentinel = group.sentinel_client(port)
        sentinel.execute_command("SENTINEL", "REMOVE", group.MASTER_NAME)
        sentinel.execute_command("SENTINEL", "MONITOR", group.MASTER_NAME, "127.0.0.1",
                                 str(group.replica.port), "2")
    wait_for(lambda: group.master_address() == group.replica.address,
             "the Sentinels to name the former replica")
    assert group.master.client().info("replication")["role"] == "master"


async def test_after_a_master_change_no_write_goes_to_the_previous_master(
        group: SentinelGroup, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    addresses = ", ".join(group.addresses)
    path.write_text(f"storage: {{redis: {{mode: sentinel, sentinel: {{master: {group.MASTER_NAME}, "
                    f"addresses: [{addresses}]}}}}}}\n")
    config = load_config(path)
    client = connect(config.settings.storage.redis)
    try:
        context = AppContext(config=config, redis=client,
                             keys=Keys(config.settings.storage.redis.keyspace))
        watch = RedisWatch(context)
        changes: list[str] = []
        watch.on_master_change.append(lambda: changes.append(watch.health.master_changes))
        await client.set("probe", "before")  # leaves an idle connection to the master
        await watch.check()
        assert watch.health.address == group.master.address
        split_brain(group)
        await watch.check()
        assert watch.health.master_changes == 1
        assert changes == [1]
        await client.set("probe", "after")
        assert group.replica.client().get("probe") == "after"
        assert group.master.client().get("probe") == "before"
    finally:
        await client.aclose()
