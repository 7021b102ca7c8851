"""The Sentinel test fixture's failover: a killed master rejoins without ever being promoted stale.

``SentinelGroup.kill_master`` restarts the killed server as the new master's
replica. Until its first sync it holds the data it had when it was killed; a
second failover to it then (a Sentinel marking the new master down a second
after the switch, on a loaded machine) lost every write the new master took
and made the end-to-end failover test flaky. The restart is not promotable
until it synced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from doraforwarder.testing.redis_server import (
    RedisServer,
    RedisServerUnavailable,
    SentinelGroup,
    wait_for,
)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    try:
        with SentinelGroup(keep_logs_in=tmp_path / "redis-logs") as started:
            yield started
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))


def _replica_seen_by(group: SentinelGroup, port: int, server: RedisServer) -> dict[str, str]:
    replicas = group.sentinel_client(port).execute_command(
        "SENTINEL", "replicas", group.MASTER_NAME)
    for replica in replicas:
        fields = (replica if isinstance(replica, dict)
                  else dict(zip(replica[::2], replica[1::2], strict=True)))
        if f"{fields.get('ip')}:{fields.get('port')}" == server.address:
            return {str(k): str(v) for k, v in fields.items()}
    return {}


@pytest.mark.timeout(120)
def test_a_killed_master_is_not_promoted_before_its_first_sync(group: SentinelGroup) -> None:
    # Hold every full sync back until the test lets it go: the window in which the
    # restarted server still has only the data it had when it was killed.
    for server in (group.master, group.replica):
        server.client().config_set("repl-diskless-sync-delay", 3600)
    seen_unsynced: list[dict[str, str]] = []

    def while_rejoining(rejoining: RedisServer, master: RedisServer) -> None:
        def every_sentinel_sees_it_up() -> bool:
            views = [_replica_seen_by(group, port, rejoining) for port in group.sentinel_ports]
            seen_unsynced[:] = views
            return all(view.get("flags") == "slave" and view.get("master-port") == str(
                master.port) for view in views)

        wait_for(every_sentinel_sees_it_up, f"every Sentinel to see {rejoining.address} up")
        assert rejoining.client().info("replication")["master_link_status"] == "down"
        with pytest.raises(redis.ResponseError, match="NOGOODSLAVE"):
            group.sentinel_client(group.sentinel_ports[0]).execute_command(
                "SENTINEL", "FAILOVER", group.MASTER_NAME)
        master.client().config_set("repl-diskless-sync-delay", 0)

    first = group.master_address()
    promoted = group.kill_master(while_rejoining=while_rejoining)
    assert promoted != first
    assert group.master_address() == promoted
    assert all(view["slave-priority"] == "0" for view in seen_unsynced)
    rejoined = group.master if promoted == group.replica.address else group.replica
    assert rejoined.client().config_get("replica-priority") == {"replica-priority": "100"}
    assert rejoined.client().info("replication")["master_link_status"] == "up"


@pytest.mark.timeout(120)
def test_a_failover_to_an_empty_replica_leaves_no_data_anywhere(group: SentinelGroup) -> None:
    first = group.master_address()
    writer = (group.master if first == group.master.address else group.replica).client()
    writer.set("kept?", "no")
    assert writer.wait(1, 5000) == 1
    promoted = group.fail_over_to_empty_replica()
    assert promoted != first and group.master_address() == promoted
    for server in (group.master, group.replica):
        assert server.client().dbsize() == 0, server.address
    new_master = group.master if promoted == group.master.address else group.replica
    assert new_master.client().info("replication")["role"] == "master"


def test_the_logs_are_kept_where_asked(tmp_path: Path) -> None:
    try:
        with SentinelGroup(keep_logs_in=tmp_path / "logs"):
            pass
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    kept = sorted(path.name for path in (tmp_path / "logs").iterdir())
    assert kept == ["master.log", "replica.log", "sentinel-0.log", "sentinel-1.log",
                    "sentinel-2.log"]
    assert "+monitor master" in (tmp_path / "logs" / "sentinel-0.log").read_text()
