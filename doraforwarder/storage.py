"""The Redis client, built from ``storage.redis``, in each supported topology.

Everything durable (app state, dedupe claims, streams, the outbox, incident
fingerprints) lives in Redis; this module is the one place that turns the
configuration into a client:

- ``standalone``: one server (``address`` or ``url``, ``rediss://`` for TLS).
- ``sentinel``: the master Sentinel names; the client asks the Sentinels again
  whenever a connection breaks, so a failover is a burst of connection errors
  the callers already retry with backoff. A master demoted to replica answers
  writes with READONLY; redis-py's Sentinel connection turns that into a
  ``ConnectionError`` and reconnects to whichever server is master now.
- ``cluster``: every key carries one hash tag (:attr:`RedisConfig.keyspace`),
  so every key the daemon uses is in one slot, served by one primary. The
  client talks to that primary directly (:class:`SlotOwnerConnectionPool`
  asks the startup nodes which node owns the slot, like a Sentinel pool asks
  for the master), so WATCH/MULTI, Lua, pipelined MGET and SCAN work exactly
  as on one server. A MOVED answer (the slot moved after a failover or a
  resharding) drops the connection and the next one asks again. redis-py's
  own cluster client is not used for the daemon's traffic: its asyncio
  transactions run immediate-mode commands (GET after WATCH) on a second
  event loop in a thread, which breaks with non-Redis errors while a node
  restarts.

After a transaction that creates stream entries (deployments detected,
outbox entries staged) the client can issue ``WAIT`` on the same connection,
so the write is on ``wait_replicas`` replicas before the daemon moves on;
see :class:`ReplicatedPipeline`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection
from redis.asyncio.sentinel import Sentinel
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisError

from doraforwarder.backoff import wait_or_stop
from doraforwarder.config import RedisConfig
from doraforwarder.context import AppContext
from doraforwarder.logging import get_logger

log = get_logger("storage")

_COMMON: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "health_check_interval": 30,
}
_STAGING_COMMANDS = frozenset({"XADD", "EVAL", "EVALSHA"})
"""Commands after which a transaction may have created a stream entry."""


class _ReplicaAcknowledgements:
    """Logs when writes stop (and start again) reaching enough replicas, once per change."""

    def __init__(self) -> None:
        self.short = False
        self.short_writes = 0

    def record(self, acked: int, wanted: int, timeout_ms: int) -> None:
        if acked < wanted:
            self.short_writes += 1
            if not self.short:
                log.warning(
                    "writes not confirmed by enough replicas; a failover now could lose them",
                    replicas_acked=acked, replicas_wanted=wanted, timeout_ms=timeout_ms,
                )
            self.short = True
        elif self.short:
            log.info("writes confirmed by replicas again", replicas_acked=acked,
                     unconfirmed_writes=self.short_writes)
            self.short = False
            self.short_writes = 0


_REPLICAS = _ReplicaAcknowledgements()


class ReplicatedPipeline(Pipeline):
    """A pipeline that, after a transaction creating stream entries, waits for replicas.

    ``WAIT n timeout`` counts the replicas that acknowledged every write made
    *on this connection*, so it runs on the transaction's own connection,
    before the pipeline returns it to the pool. Fewer acknowledgements than
    asked for (within ``wait_timeout``) are logged, not raised: the
    transaction did commit on the master, and retrying it would stage the
    entries twice.
    """

    wait_replicas = 0
    wait_timeout_ms = 0
    replicas_acked: int | None = None

    async def _execute_transaction(
        self, connection: Any, commands: Any, raise_on_error: bool
    ) -> list[Any]:
        result: list[Any] = await super()._execute_transaction(
            connection, commands, raise_on_error
        )
        if self.wait_replicas and any(
            str(args[0]).upper() in _STAGING_COMMANDS for args, _ in commands
        ):
            await connection.send_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            acked = int(await connection.read_response())
            self.replicas_acked = acked
            _REPLICAS.record(acked, self.wait_replicas, self.wait_timeout_ms)
        return result


def _replicated_client_class(config: RedisConfig) -> type[aioredis.Redis]:
    """A Redis subclass whose transaction pipelines wait for ``wait_replicas``."""
    wanted = config.replicas_to_wait_for
    timeout_ms = max(1, int(config.wait_timeout.total_seconds() * 1000))

    class _Pipeline(ReplicatedPipeline):
        wait_replicas = wanted
        wait_timeout_ms = timeout_ms

    class _Redis(aioredis.Redis):
        def pipeline(self, transaction: bool = True,
                     shard_hint: Any = None) -> Pipeline:
            return _Pipeline(self.connection_pool, self.response_callbacks,
                             transaction, shard_hint)

    return _Redis


def _tls_options(config: RedisConfig) -> dict[str, Any]:
    tls = config.tls
    if not tls.enabled and not (config.url or "").startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if tls.ca_file:
        options["ssl_ca_certs"] = tls.ca_file
    if tls.cert_file:
        options["ssl_certfile"] = tls.cert_file
        options["ssl_keyfile"] = tls.key_file
    return options


def connect(config: RedisConfig) -> aioredis.Redis:
    """An asyncio client; it connects lazily, so a down Redis is not an error here.

    Callers see connection errors on first use and retry with
    :mod:`doraforwarder.backoff`; the daemon reports not-ready meanwhile. The
    cluster client speaks the same command API as :class:`redis.asyncio.Redis`
    and is returned under that type so callers stay topology-agnostic.
    """
    if config.mode == "sentinel":
        return _connect_sentinel(config)
    if config.mode == "cluster":
        return _connect_cluster(config)
    options = {**_COMMON, "retry_on_timeout": False}
    if config.tls.enabled or config.url:
        options.update(_tls_options(config))
    client_class = (_replicated_client_class(config) if config.replicas_to_wait_for
                    else aioredis.Redis)
    client: aioredis.Redis = client_class.from_url(config.connection_url(), **options)
    return client


def _auth(config: RedisConfig) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if config.username:
        options["username"] = config.username
    if config.password:
        options["password"] = config.password
    return options


def sentinel_of(config: RedisConfig) -> Sentinel:
    """The Sentinel client for ``config`` (also used to report the current master)."""
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": 5, "socket_timeout": 5, **_ssl_flag(config),
    }
    if config.sentinel_password is not None:
        sentinel_options["password"] = config.sentinel_password.get_secret_value()
        if config.username:
            sentinel_options["username"] = config.username
    # Through a Callable: redis-py typed Sentinel's constructor only in later releases, and a
    # ``type: ignore`` would be an error under the newer ones (and the lock moves between them).
    make_sentinel: Callable[..., Sentinel] = Sentinel
    return make_sentinel(
        config.server_addresses(),
        sentinel_kwargs=sentinel_options,
        db=config.database,
        **_COMMON,
        **_auth(config),
        **_ssl_flag(config),
    )


def _ssl_flag(config: RedisConfig) -> dict[str, Any]:
    """``ssl=True`` for clients built from host and port (not from a URL)."""
    return {"ssl": True, **_tls_options(config)} if config.tls.enabled else {}


def _connect_sentinel(config: RedisConfig) -> aioredis.Redis:
    client: aioredis.Redis = sentinel_of(config).master_for(
        config.sentinel.master,
        redis_class=_replicated_client_class(config),
    )
    return client


class SlotOwnerConnection(Connection):
    """A connection to whichever primary owns the daemon's slot right now."""

    def __init__(self, **kwargs: Any) -> None:
        self.owner_pool: SlotOwnerConnectionPool = kwargs.pop("owner_pool")
        super().__init__(**kwargs)

    async def connect(self) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.owner_pool.owner()
        try:
            await super().connect()  # type: ignore[no-untyped-call]
        except (RedisError, OSError):
            # The owner may be gone for good (its replica took the slot over):
            # ask the cluster again on the next attempt.
            self.owner_pool.forget_owner()
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except MovedError as exc:
            # The slot has a new owner (failover, resharding): forget the old
            # one; the caller's retry connects to the new owner.
            self.owner_pool.forget_owner()
            await self.disconnect()
            raise RedisConnectionError(f"the keys' slot moved: {exc}") from exc


class SlotOwnerSSLConnection(SlotOwnerConnection, SSLConnection):
    pass


class SlotOwnerConnectionPool(ConnectionPool):
    """Connections to the primary serving ``slot``, found through the startup nodes."""

    def __init__(self, startup_nodes: list[tuple[str, int]], slot: int, *,
                 ssl: bool = False, **kwargs: Any) -> None:
        kwargs["connection_class"] = SlotOwnerSSLConnection if ssl else SlotOwnerConnection
        super().__init__(**kwargs)
        self.connection_kwargs["owner_pool"] = self
        self.startup_nodes = list(startup_nodes)
        self.slot = slot
        self.last_owner: tuple[str, int] | None = None
        self._owner: tuple[str, int] | None = None
        self._probe_kwargs = {k: v for k, v in kwargs.items()
                              if k not in ("connection_class", "max_connections", "db")}
        self._probe_class = SSLConnection if ssl else Connection

    def forget_owner(self) -> None:
        self._owner = None

    async def owner(self) -> tuple[str, int]:
        if self._owner is None:
            self._owner = await self._discover()
            self.last_owner = self._owner
        return self._owner

    async def _discover(self) -> tuple[str, int]:
        """Ask each known node in turn which primary serves the slot."""
        candidates = list(dict.fromkeys(
            [*([self.last_owner] if self.last_owner else []), *self.startup_nodes]))
        errors: list[str] = []
        for host, port in candidates:
            probe = aioredis.Redis(
                connection_pool=ConnectionPool(
                    connection_class=self._probe_class, host=host, port=port,
                    **self._probe_kwargs))
            try:
                slots = await probe.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                for start, end, primary, *_ in slots:
                    if int(start) <= self.slot <= int(end):
                        owner_host = primary[0] or host
                        if isinstance(owner_host, bytes):
                            owner_host = owner_host.decode()
                        return str(owner_host), int(primary[1])
                errors.append(f"{host}:{port}: no node serves slot {self.slot}")
            except (RedisError, OSError) as exc:
                errors.append(f"{host}:{port}: {type(exc).__name__}: {exc}")
            finally:
                await probe.aclose()
        raise RedisConnectionError("no cluster node named the owner of the daemon's slot ("
                                   + "; ".join(errors) + ")")


def _connect_cluster(config: RedisConfig) -> aioredis.Redis:
    pool = SlotOwnerConnectionPool(
        config.server_addresses(),
        key_slot(f"{config.keyspace}:slot".encode()),
        ssl=config.tls.enabled,
        **_COMMON,
        **_auth(config),
        **_tls_options(config),
    )
    client: aioredis.Redis = _replicated_client_class(config)(connection_pool=pool)
    return client


@dataclass
class RedisHealth:
    """What ``/api/v1/status`` shows about Redis: where it is and how it has been."""

    mode: str
    address: str = ""
    """The server the daemon writes to: the master (sentinel), the node of the keys' slot
    (cluster) or the configured address (standalone)."""
    last_error: str | None = None
    last_error_at: float | None = None
    reconnects: int = 0
    """Times Redis answered again after failing."""
    master_changes: int = 0
    healthy: bool = True
    _since: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "address": self.address,
            "healthy": self.healthy,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "reconnects": self.reconnects,
            "master_changes": self.master_changes,
        }


async def current_address(context: AppContext, sentinel: Sentinel | None = None) -> str:
    """The server the daemon's writes go to now."""
    config = context.settings.storage.redis
    if config.mode == "sentinel":
        asked = sentinel if sentinel is not None else sentinel_of(config)
        host, port = await asked.discover_master(config.sentinel.master)
        return f"{host}:{port}"
    if config.mode == "cluster":
        pool = context.redis.connection_pool
        if isinstance(pool, SlotOwnerConnectionPool):
            host, port = await pool.owner()
            return f"{host}:{port}"
        return ""
    return config.address if not config.url else config.display_url()


async def drop_connections(redis: aioredis.Redis) -> None:
    """Close the pool's idle connections; those in use close when they are given back.

    After a failover the previous master may still be up and still a master for
    a while: a Sentinel only turns it into a replica once it reports its role
    again (about 10 s; meanwhile it takes writes, and loses them when it
    resyncs). A Sentinel-managed pool asks the Sentinels for the master only
    when it opens a connection, so without this its open connections keep
    writing to the previous master (seen in a test: 10 s of detections
    written there and flushed).
    """
    pool = redis.connection_pool
    await pool.update_active_connections_for_reconnect()  # type: ignore[no-untyped-call]
    await pool.disconnect(inuse_connections=False)


def report_data_lost(context: AppContext, evidence: str, detail: str) -> None:
    """Say loudly that Redis lost its data: an error log line, a metric, the status.

    ``evidence`` is what showed it (``marker``, ``group``). What was staged
    and not yet delivered before the loss is gone; what is detected and
    staged from now on is delivered as usual (the consumer groups are
    recreated on ``NOGROUP``).
    """
    previous = context.status.redis_data_lost or {}
    context.status.redis_data_lost = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "evidence": evidence,
        "detail": detail, "times": int(previous.get("times", 0)) + 1}
    context.metrics.redis_data_lost.labels(evidence).inc()
    log.error("redis lost its data", evidence=evidence, detail=detail,
              hint="records staged and not yet delivered before the loss are gone; unless "
                   "storage.redis.backfill_on_data_loss is false, the daemon lists every "
                   "application again and sends the syncs ArgoCD still keeps from before the "
                   "loss again, under the same ids (`backfilling after redis lost its data`); "
                   "otherwise `doraforwarder backfill --since <a time before the loss>` does; "
                   "run Redis with appendonly and a replica, see docs/redis.md")


def read_marker(raw: str | bytes | None) -> dict[str, Any] | None:
    """The marker (see :meth:`RedisWatch.check_marker`) as stored; None if absent or unreadable."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class RedisWatch:
    """Checks Redis every second and keeps :class:`RedisHealth` up to date.

    The check reads one of the daemon's own keys, so in cluster mode it goes
    to the node serving the keys' slot and in sentinel mode to the master.
    It logs each change an operator cares about once: Redis unreachable,
    Redis back, a new master after a failover (or the slot on a new node),
    and Redis losing its data (:meth:`check_marker`).
    """

    name = "redis-watch"

    def __init__(self, context: AppContext, interval: float = 1.0) -> None:
        self.context = context
        self.interval = interval
        config = context.settings.storage.redis
        self.health = RedisHealth(mode=config.mode)
        self._sentinel = sentinel_of(config) if config.mode == "sentinel" else None
        context.status.redis = self.health.snapshot()
        self._epoch: str | None = None
        """The marker's epoch as this process last saw it (None before the first look)."""
        self._missing_reported = False
        self.marker_seen_at: datetime | None = None
        """When this process last read the marker with the epoch it knew (Redis had its data)."""
        self.on_data_lost: list[Callable[[datetime | None], None]] = []
        """Called (in the event loop) when the marker shows a loss, with :attr:`marker_seen_at`
        from before it: the ArgoCD source lists again, the daemon backfills (loss_backfill)."""
        self.on_master_change: list[Callable[[], None]] = []
        """Called (in the event loop) after a master change, once the connections to the
        previous master are dropped: the ArgoCD source lists every Application again, so
        a detection the previous master acknowledged and never passed on is made again."""

    async def check_marker(self) -> bool:
        """Find out whether Redis lost its data since the last look.

        A small marker (``keys.redis_marker``: an epoch, when it was written,
        and when a loss was found) is written once (``SET NX``) and never
        deleted or expired. Gone, or back with another epoch (another replica
        found it gone first and wrote a new one), means Redis lost its data:
        a restart without persistence, ``FLUSHALL``, a failover to an empty
        replica. Absent at the first look is a first start on this Redis (or
        a loss while no replica ran: nothing can tell them apart). A refused
        write (a full Redis) is tried again on the next look. True when this
        look found a loss (reported, and :attr:`on_data_lost` called).
        """
        redis, key = self.context.redis, self.context.keys.redis_marker
        looked_at = datetime.now(UTC)
        marker = read_marker(await redis.get(key))
        found = False
        if marker is None:
            lost = self._epoch is not None
            if lost and not self._missing_reported:
                self._missing_reported = True
                report_data_lost(self.context, "marker",
                                 "the marker key written at start is gone")
                self._lost()
                found = True
            now = datetime.now(UTC).isoformat(timespec="seconds")
            fresh = {"epoch": uuid.uuid4().hex, "since": now,
                     "lost_at": now if lost else None,
                     "detected_by": socket.gethostname() if lost else None}
            try:
                await redis.set(key, json.dumps(fresh), nx=True)
            except aioredis.ResponseError as exc:  # OOM: a full Redis; try again next look
                log.debug("could not write the redis marker", error=str(exc))
                return found
            marker = read_marker(await redis.get(key))
            if marker is None:
                return found
        epoch = str(marker.get("epoch"))
        if self._epoch is not None and epoch != self._epoch and not self._missing_reported:
            report_data_lost(self.context, "marker",
                             "the marker key was written again by another replica")
            self._lost()
            found = True
        elif epoch == self._epoch and not found:
            self.marker_seen_at = looked_at
        self._missing_reported = False
        self._epoch = epoch
        return found

    def _lost(self) -> None:
        for callback in self.on_data_lost:
            callback(self.marker_seen_at)
        self.marker_seen_at = None

    async def _queues_empty(self) -> bool:
        """Both queues (deployments stream, outbox) empty: what was staged was delivered."""
        keys = self.context.keys
        async with self.context.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.deployments_stream)
            pipe.xlen(keys.outbox_stream)
            lengths = await pipe.execute()
        return not any(int(length) for length in lengths)

    async def check(self) -> None:
        health = self.health
        try:
            await self.context.redis.exists(self.context.keys.outbox_stream)
            address = await current_address(self.context, self._sentinel)
        except (TimeoutError, RedisError, OSError) as exc:
            health.last_error = f"{type(exc).__name__}: {exc}"
            health.last_error_at = time.time()
            if health.healthy:
                log.warning("redis unreachable", mode=health.mode, address=health.address,
                            error=health.last_error)
                self.context.metrics.redis_errors.labels("watch").inc()
            health.healthy = False
        else:
            if not health.healthy:
                health.reconnects += 1
                log.info("redis reachable again", mode=health.mode, address=address)
            health.healthy = True
            if health.address and address != health.address:
                health.master_changes += 1
                log.warning("redis master changed", mode=health.mode,
                            previous=health.address, address=address)
                await drop_connections(self.context.redis)
                for callback in self.on_master_change:
                    callback()
            health.address = address
            try:
                # The queues before the marker: a loss between the two shows in the marker,
                # so queues emptied by a loss never count as delivered. Nothing unconfirmed
                # (an idle daemon): nothing to settle, no look.
                looked_at = time.time()
                empty = bool(self.context.unconfirmed.entries) and await self._queues_empty()
                if not await self.check_marker() and empty:
                    self.context.unconfirmed.settled(looked_at)
            except (TimeoutError, RedisError, OSError) as exc:
                log.debug("could not check the redis marker", error=f"{type(exc).__name__}: {exc}")
        self.context.status.redis = health.snapshot()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.check()
                if await wait_or_stop(stop, self.interval):
                    return
        finally:
            if self._sentinel is not None:
                for client in self._sentinel.sentinels:
                    await client.aclose()


class LuaScript:
    """A Lua script known by its SHA; loaded into Redis on first use (``EVALSHA``).

    Within a pipeline the script is registered with the pipeline, which loads
    it (``SCRIPT LOAD``) before executing if Redis does not know it yet.
    """

    def __init__(self, text: str) -> None:
        self._script = AsyncScript(None, text.encode())  # type: ignore[arg-type]

    async def run(self, redis: aioredis.Redis, keys: list[str], args: list[str]) -> Any:
        return await self._script(keys=keys, args=args, client=redis)

    def queue(self, pipe: Pipeline, keys: list[str], args: list[str]) -> None:
        pipe.scripts.add(self._script)  # type: ignore[arg-type]
        pipe.evalsha(self._script.sha, len(keys), *keys, *args)
