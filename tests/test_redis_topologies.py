"""The storage layer in every Redis topology, against real servers.

Standalone, Sentinel (master + replica + three Sentinels), a three-master
Redis Cluster and a TLS-only server: the same transactions (WATCH/MULTI on app
state and dedupe claims), Lua scripts (ordered outbox staging), consumer
groups and SCAN run on each. A few ArgoCD scenarios of ``test_argocd_watch``
run again through a harness that connects the way the daemon does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import WatchError

from doraforwarder import outbox
from doraforwarder.argocd.source import ArgoCDSource
from doraforwarder.argocd.vanished import find_gone
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.config import (
    ConfigError,
    LoadedConfig,
    RedisConfig,
    Secrets,
    Settings,
    StorageConfig,
    load_config,
)
from doraforwarder.context import AppContext
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.keys import Keys
from doraforwarder.storage import RedisWatch, SlotOwnerConnectionPool, connect
from doraforwarder.streams import StreamStaging
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.redis_server import (
    ClusterGroup,
    RedisServer,
    SentinelGroup,
    TlsFiles,
)
from doraforwarder.webrca.lease import RedisLease
from tests import test_argocd_watch as watch_scenarios
from tests.conftest import SENTINEL_PASSWORD
from tests.devlake_support import (
    TOKEN,
    RunningService,
    deployment_entry,
    devlake_section,
    eventually,
    issue_entries,
    make_context,
    stage,
)

MODES = ["standalone", "sentinel", "cluster", "tls"]


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "message"), [
    ({"mode": "sentinel", "sentinel": {"addresses": ["h:1"]}},
     "storage.redis: sentinel.master is required when mode is sentinel"),
    ({"mode": "sentinel", "sentinel": {"master": "m"}},
     "storage.redis: sentinel.addresses needs at least one host:port when mode is sentinel"),
    ({"mode": "sentinel", "sentinel": {"master": "m", "addresses": ["nohost"]}},
     "sentinel.addresses: 'nohost' is not host:port"),
    ({"mode": "cluster"}, "cluster.addresses needs at least one host:port when mode is cluster"),
    ({"mode": "cluster", "cluster": {"addresses": ["h:99999"]}},
     "cluster.addresses: 'h:99999' is not host:port"),
    ({"mode": "cluster", "cluster": {"addresses": ["h:1"]}, "database": 2},
     "database must be 0 when mode is cluster"),
    ({"mode": "sentinel", "sentinel": {"master": "m", "addresses": ["h:1"]},
      "url": "redis://h:1"}, "url is for mode standalone"),
    ({"url": "redis://h:1", "tls": {"enabled": True}}, "tls.enabled needs a rediss:// url"),
    ({"tls": {"enabled": True, "cert_file": __file__}},
     "tls.cert_file and tls.key_file go together"),
    ({"tls": {"enabled": True, "ca_file": "/nonexistent/ca.pem"}},
     "tls.ca_file: '/nonexistent/ca.pem' is not a readable file"),
    ({"mode": "galaxy"}, "storage.redis.mode"),
    ({"sentinel": {"master": "m", "adresses": []}}, "storage.redis.sentinel.adresses: unknown key"),
])
def test_invalid_sections_name_the_key(tmp_path: Path, section: dict[str, Any],
                                       message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"storage: {{redis: {_flow(section)}}}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)


def _flow(value: Any) -> str:
    """YAML flow style for a small mapping (JSON is valid YAML)."""
    import json
    return json.dumps(value)


@pytest.mark.parametrize(("section", "keyspace", "wait"), [
    ({}, "dora-metrics", 0),
    ({"key_prefix": "team:"}, "team", 0),
    ({"mode": "sentinel", "sentinel": {"master": "m", "addresses": ["h:1"]}}, "dora-metrics", 1),
    ({"mode": "sentinel", "sentinel": {"master": "m", "addresses": ["h:1"]},
      "wait_replicas": 0}, "dora-metrics", 0),
    ({"mode": "cluster", "cluster": {"addresses": ["h:1"]}}, "{dora-metrics}", 0),
    ({"mode": "cluster", "cluster": {"addresses": ["h:1"]}, "key_prefix": "{x}"}, "{x}", 0),
])
def test_keyspace_and_replica_waits_per_mode(section: dict[str, Any], keyspace: str,
                                             wait: int) -> None:
    config = RedisConfig.model_validate(section)
    assert config.keyspace == keyspace
    assert config.replicas_to_wait_for == wait
    assert Keys(config.keyspace).app_state("ns", "a").startswith(keyspace + ":")


def test_standalone_connection_url_is_unchanged_and_username_joins_it() -> None:
    assert RedisConfig().connection_url() == "redis://localhost:6379/0"
    assert RedisConfig(password="pw").connection_url() == "redis://:pw@localhost:6379/0"
    with_user = RedisConfig(password="pw", username="dora")
    assert with_user.connection_url() == "redis://dora:pw@localhost:6379/0"
    assert with_user.display_url() == "redis://dora:***@localhost:6379/0"
    assert RedisConfig(tls={"enabled": True}).connection_url().startswith("rediss://")


@pytest.mark.parametrize("from_file", [False, True])
def test_sentinel_password_comes_from_the_environment_and_never_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, from_file: bool) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("storage: {redis: {mode: sentinel, sentinel: {master: m, "
                    "addresses: ['h:26379']}}}\n")
    if from_file:
        secret = tmp_path / "sentinel-password"
        secret.write_text("s3ntinel\n")
        monkeypatch.setenv("REDIS_SENTINEL_PASSWORD_FILE", str(secret))
    else:
        monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "s3ntinel")
    loaded = load_config(path)
    password = loaded.settings.storage.redis.sentinel_password
    assert password is not None and password.get_secret_value() == "s3ntinel"
    assert "s3ntinel" in loaded.secrets.values()
    assert "s3ntinel" not in repr(loaded) + str(loaded.redacted())
    assert loaded.settings.storage.redis.display_url() == "sentinel://h:26379/m"


def test_an_unreadable_sentinel_password_file_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("storage: {redis: {}}\n")
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_PASSWORD_FILE"):
        load_config(path)


# --- one client per topology -----------------------------------------------------------------


def redis_section(mode: str, request: pytest.FixtureRequest,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The ``storage.redis`` mapping that reaches the session's server of ``mode``."""
    if mode == "standalone":
        server: RedisServer = request.getfixturevalue("redis_server")
        return {"address": server.address}
    if mode == "sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", SENTINEL_PASSWORD)
        return {"mode": "sentinel",
                "sentinel": {"master": group.MASTER_NAME, "addresses": group.addresses}}
    if mode == "cluster":
        cluster: ClusterGroup = request.getfixturevalue("redis_cluster")
        return {"mode": "cluster", "cluster": {"addresses": cluster.addresses}}
    tls_server: RedisServer = request.getfixturevalue("tls_redis_server")
    files: TlsFiles = request.getfixturevalue("tls_files")
    return {"address": tls_server.address,
            "tls": {"enabled": True, "ca_file": str(files.ca_cert),
                    "cert_file": str(files.client_cert), "key_file": str(files.client_key)}}


def redis_config(section: dict[str, Any], tmp_path: Path) -> RedisConfig:
    """Through ``load_config``, so environment secrets apply as in the daemon."""
    path = tmp_path / "redis-config.yaml"
    path.write_text(f"storage: {{redis: {_flow(section)}}}\n")
    return load_config(path).settings.storage.redis


@pytest.fixture(params=MODES)
def topology(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> RedisConfig:
    return redis_config(redis_section(request.param, request, monkeypatch), tmp_path)


@pytest.fixture
async def store(topology: RedisConfig) -> AsyncIterator[aioredis.Redis]:
    client = connect(topology)
    await client.flushall()
    yield client
    await client.aclose()


async def test_transactions_watch_and_detect_conflicts(topology: RedisConfig,
                                                       store: aioredis.Redis) -> None:
    keys = Keys(topology.keyspace)
    state, claim = keys.app_state("argocd", "app"), keys.dedupe("svc:abc")
    await store.set(state, "v1")
    async with store.pipeline(transaction=True) as pipe:
        await pipe.watch(state, claim)
        assert await pipe.get(state) == "v1"
        assert await pipe.mget([claim, keys.dedupe("other")]) == [None, None]
        await store.set(claim, "someone else")  # a competing writer, outside the pipeline
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.set(state, "v2")
        pipe.set(claim, "me")
        with pytest.raises(WatchError):
            await pipe.execute()
    assert await store.get(state) == "v1"
    assert await store.get(claim) == "someone else"
    async with store.pipeline(transaction=True) as pipe:
        await pipe.watch(state)
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.set(state, "v2")
        pipe.xadd(keys.deployments_stream, {"deployment": "{}"})
        await pipe.execute()
    assert await store.get(state) == "v2"
    assert await store.xlen(keys.deployments_stream) == 1


async def test_lua_staging_groups_and_scan(topology: RedisConfig, store: aioredis.Redis) -> None:
    keys = Keys(topology.keyspace)
    await stage(store, keys, issue_entries("K", "TODO", "DONE", close=True))
    await stage(store, keys, [deployment_entry("d1")])
    items = await outbox.read_stream(store, keys.outbox_stream)
    assert len(items) == 4
    await outbox.ensure_group(store, keys.outbox_stream, "delivery")
    verdicts = [(await outbox.order_gate(store, keys, item)).verdict for item in items]
    assert verdicts[0] == "ready"
    assert await outbox.ack_delivered(store, keys, items[0])
    stats = await outbox.outbox_stats(store, keys)
    assert stats.outbox == 3
    for name in ("a", "b", "c"):
        await store.set(keys.app_state("argocd", name), "{}")
    found = {key async for key in store.scan_iter(match=keys.app_state_pattern(), count=500)}
    assert found == {keys.app_state("argocd", n) for n in ("a", "b", "c")}
    # The start-up scan for apps deleted while no replica ran (one slot in cluster mode).
    gone = [app async for batch in find_gone(store, keys, WatchScope("argocd"),
                                             {("argocd", "a")}, lambda ns, n: False, batch=1)
            for app in batch]
    assert sorted(gone) == [("argocd", "b"), ("argocd", "c")]
    lease = RedisLease(store, keys.webrca_lease, timedelta(seconds=5))
    assert await lease.acquire()
    assert await lease.renew()
    assert await lease.release()
    assert await lease.holder() is None


async def test_staged_entries_are_delivered_once(topology: RedisConfig, store: aioredis.Redis
                                                 ) -> None:
    with FakeDevLake(token=TOKEN, connections={1: "global"}) as devlake:
        context = make_context(store, devlake_section(devlake.url), prefix=topology.keyspace)
        entries = [deployment_entry(f"svc:{n}") for n in range(5)]
        await stage(store, context.keys, entries)
        async with RunningService(DeliveryPool(context)):
            await eventually(lambda: _outbox_empty(store, context), what="outbox drained")
        assert devlake.deployment_ids(1) == {f"svc:{n}" for n in range(5)}
        assert len(devlake.posts()) == 5


async def _outbox_empty(redis: aioredis.Redis, context: AppContext) -> bool:
    return await redis.xlen(context.keys.outbox_stream) == 0


async def test_sentinel_transactions_wait_for_the_replica(request: pytest.FixtureRequest,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    config = redis_config(redis_section("sentinel", request, monkeypatch), tmp_path)
    client = connect(config)
    try:
        keys = Keys(config.keyspace)
        async with client.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.outbox_stream, {"entry": "{}"})
            await pipe.execute()
            assert getattr(pipe, "replicas_acked", None) == 1
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        replica = group.replica if group.master_address() == group.master.address else group.master
        assert replica.client().xlen(keys.outbox_stream) >= 1
    finally:
        await client.aclose()


async def test_redis_watch_reports_the_topology(topology: RedisConfig, store: aioredis.Redis
                                                ) -> None:
    settings = Settings(storage=StorageConfig(redis=topology))
    context = AppContext(config=LoadedConfig(settings=settings, secrets=Secrets(), source="t"),
                         redis=store, keys=Keys(topology.keyspace))
    watch = RedisWatch(context)
    await watch.check()
    status = context.status.snapshot()["redis"]
    assert status["mode"] == topology.mode
    assert status["healthy"] is True
    assert status["address"].startswith("127.0.0.1:")
    assert status["last_error"] is None


# --- ArgoCD scenarios through the daemon's own connection -------------------------------------


class TopologyHarness(watch_scenarios.Harness):
    """``test_argocd_watch``'s harness, connected through :func:`connect` in one topology."""

    def __init__(self, kube: FakeKube, section: dict[str, Any], redis: aioredis.Redis,
                 keyspace: str, tmp_path: Path) -> None:
        super().__init__(kube, None, redis, tmp_path)  # type: ignore[arg-type]
        self.section = section
        self.keys = Keys(keyspace)

    def config(self, argocd: str = "") -> Any:
        path = self.tmp_path / f"config-{len(self.running)}.yaml"
        namespaces = "" if "namespaces" in argocd else "namespaces: [argocd], "
        path.write_text(
            f"argocd: {{kubeconfig: '{self.kubeconfig}', {namespaces}workers: 4"
            f"{', ' + argocd if argocd else ''}}}\n"
            f"storage: {{redis: {_flow(self.section)}}}\n"
        )
        return load_config(path)

    async def start(self, argocd: str = "", *, clock: Any = None,
                    **kwargs: Any) -> watch_scenarios.Running:
        config = self.config(argocd)
        context = AppContext(config=config, redis=connect(config.settings.storage.redis),
                             keys=self.keys)
        options: dict[str, Any] = {"timing": watch_scenarios.FAST, "sweep_interval": 0.02,
                                   "stage": StreamStaging(self.keys)}
        if clock is not None:
            options["clock"] = clock
        options.update(kwargs)
        source = ArgoCDSource(context, **options)
        stop = asyncio.Event()
        running = watch_scenarios.Running(source, context, stop,
                                          asyncio.create_task(source.run(stop)))
        self.running.append(running)
        await eventually(lambda: context.readiness.reasons() == [] and bool(source.watchers)
                         and all(w.listed_once.is_set() for w in source.watchers),
                         what="initial list")
        await self.settle(running)
        return running


@pytest.fixture(params=["sentinel", "cluster", "tls"])
async def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                  kube: FakeKube, tmp_path: Path) -> AsyncIterator[TopologyHarness]:
    section = redis_section(request.param, request, monkeypatch)
    config = redis_config(section, tmp_path)
    client = connect(config)
    await client.flushall()
    h = TopologyHarness(kube, section, client, config.keyspace, tmp_path)
    try:
        yield h
    finally:
        await h.stop_all()
        await client.aclose()


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


test_argocd_single_sync = watch_scenarios.test_single_sync_is_one_exact_record
test_argocd_rapid_syncs = watch_scenarios.test_rapid_syncs_are_each_a_deployment
test_argocd_restart_catches_up = watch_scenarios.test_restart_catches_up_syncs_made_while_down
test_argocd_replica_pair = watch_scenarios.test_replica_pair_produces_each_deployment_once
test_argocd_same_revision_two_clusters = watch_scenarios.test_same_revision_on_two_clusters



async def test_cluster_client_follows_the_slot_when_it_answers_moved(
        request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cluster: ClusterGroup = request.getfixturevalue("redis_cluster")
    config = redis_config(redis_section("cluster", request, monkeypatch), tmp_path)
    client = connect(config)
    try:
        pool = client.connection_pool
        assert isinstance(pool, SlotOwnerConnectionPool)
        keys = Keys(config.keyspace)
        owner = cluster.node_of_slot_for(keys.outbox_stream)
        other = next(node for node in cluster.nodes if node is not owner)
        await client.set(keys.app_state("ns", "a"), "1")
        assert await pool.owner() == ("127.0.0.1", owner.port)
        await pool.disconnect()
        pool._owner = ("127.0.0.1", other.port)  # as if the slot had moved away from here
        with pytest.raises(RedisConnectionError, match="slot moved"):
            await client.get(keys.app_state("ns", "a"))
        assert await client.get(keys.app_state("ns", "a")) == "1"  # the retry asks again
        assert await pool.owner() == ("127.0.0.1", owner.port)
    finally:
        await client.aclose()
