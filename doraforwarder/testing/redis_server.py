"""Real ``redis-server`` processes on free loopback ports in temporary directories.

Used by the test suite and by ``doraforwarder demo``. With ``appendonly``
the data survives :meth:`RedisServer.restart`, which durability tests use to
prove nothing is lost across a Redis restart.

Beyond one server: :class:`SentinelGroup` (a master, a replica and three
Sentinels), :class:`ClusterGroup` (a three-master Redis Cluster) and
:func:`make_tls_files` (a throw-away CA with server and client certificates)
let tests run the daemon against every topology it supports. Every readiness
wait polls the server's own answer (PING, ``cluster_state:ok``, the Sentinels'
view of the master), never a fixed sleep.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import redis

from doraforwarder.testing.http_fake import free_port


class RedisServerUnavailable(RuntimeError):
    """``redis-server`` is not installed."""


class RedisServer:
    def __init__(self, *, appendonly: bool = False, password: str | None = None,
                 directory: str | None = None, extra_args: list[str] | None = None,
                 tls: TlsFiles | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerUnavailable(
                "redis-server is not on PATH (apt-get install redis-server)"
            )
        self.binary = binary
        self.appendonly = appendonly
        self.password = password
        self._tmp = (
            None if directory else tempfile.TemporaryDirectory(prefix="doraforwarder-redis-")
        )
        self.directory = Path(directory) if directory else Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = free_port()
        self._started = False
        """Started at least once: a restart keeps the port."""
        self.extra_args = list(extra_args or [])
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        """Start and wait for PING; a port taken meanwhile (the free-port race) is re-picked.

        Only at the first start: a restart keeps its port, which Sentinels and
        cluster peers know the server by.
        """
        if self._started:
            return self._start_once()
        for _ in range(4):
            try:
                return self._start_once()
            except PortTaken:
                self.port = free_port()
        return self._start_once()

    def _start_once(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]
        if self.tls is not None:
            args[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            args += [
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca_cert),
                "--tls-auth-clients", "optional",
            ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_listening()
        self._started = True
        return self

    def _wait_until_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                if "Address already in use" in log:
                    raise PortTaken(f"port {self.port} was taken before redis-server bound it")
                raise RuntimeError(f"redis-server exited at start: {log}")
            try:
                if self._answers_ping():
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not listen on port {self.port} within {timeout}s")

    def _answers_ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
            sock: socket.socket = raw
            if self.tls is not None:
                context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
                sock = context.wrap_socket(raw, server_hostname="localhost")
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH", b"-LOADING")) and not reply.startswith(
                b"-LOADING")

    def client(self) -> redis.Redis:
        """A synchronous client for fixtures' own checks (not for the daemon)."""
        tls: dict[str, Any] = (
            {"ssl": True, "ssl_ca_certs": str(self.tls.ca_cert)} if self.tls is not None else {})
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           decode_responses=True, socket_timeout=5, **tls)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, kill: bool = False) -> None:
        """Stop and start on the same port and directory (AOF data is reloaded)."""
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        self.stop(kill=True)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; on timeout say what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and the certificates it signed (PEM files)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


class PortTaken(RuntimeError):
    """Another process bound the free port between picking it and redis-server binding it."""


class TlsUnavailable(RuntimeError):
    """The installed redis-server was built without TLS, or openssl is missing."""


def redis_has_tls() -> bool:
    """Whether this redis-server build knows the TLS directives (Debian's does).

    An invalid configuration makes redis-server name the first directive it
    rejects without starting: a build without TLS rejects ``tls-port``.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        return False
    probe = subprocess.run(
        [binary, "--tls-port", "0", "--doraforwarder-probe", "yes"],
        capture_output=True, text=True, check=False, timeout=10,
    )
    return "tls-port" not in probe.stdout + probe.stderr


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA plus a server certificate for 127.0.0.1/localhost and a client certificate.

    Uses the ``openssl`` command line so the tests need no extra Python package.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsUnavailable("openssl is not on PATH (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True,
                       capture_output=True, timeout=60)

    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", "-new", *key_args, "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=doraforwarder test CA")
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", "-new", *key_args, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=doraforwarder test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return TlsFiles(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


class _Group:
    """``with Group() as group:`` for servers started together: a start that fails halfway
    (one server up, the next refused) still closes what it started."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class SentinelGroup(_Group):
    """A master, one replica and three Sentinels watching them, all on loopback.

    :meth:`kill_master` SIGKILLs the master and returns once the Sentinels
    agree the replica is the new master, so a test can assert on what the
    daemon did across a real failover without guessing how long it takes.
    """

    MASTER_NAME = "doramaster"

    def __init__(self, *, sentinel_password: str | None = None,
                 keep_logs_in: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="doraforwarder-sentinel-")
        root = Path(self._tmp.name)
        self.keep_logs_in = keep_logs_in
        """Where :meth:`close` copies every server's and Sentinel's log (a test's tmp_path)."""
        self.sentinel_password = sentinel_password
        self.master = RedisServer(directory=str(root / "master"), appendonly=True)
        self.replica = RedisServer(directory=str(root / "replica"), appendonly=True)
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinel_processes: list[subprocess.Popen[bytes]] = []
        self.root = root

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def start(self) -> Self:
        for server in (self.master, self.replica):
            server.directory.mkdir(parents=True, exist_ok=True)
        self.master.start()
        self.replica.start()
        wait_for(lambda: _info(self.replica.client(), "replication").get(
            "master_link_status") == "up", "the replica to sync from the master")
        for index, port in enumerate(self.sentinel_ports):
            directory = self.root / f"sentinel-{index}"
            directory.mkdir()
            lines = [
                f"port {port}", "bind 127.0.0.1", f"dir {directory}",
                f"logfile {directory / 'sentinel.log'}",
                f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {self.MASTER_NAME} 1000",
                f"sentinel failover-timeout {self.MASTER_NAME} 10000",
                f"sentinel parallel-syncs {self.MASTER_NAME} 1",
            ]
            if self.sentinel_password:
                lines.append(f"requirepass {self.sentinel_password}")
            config = directory / "sentinel.conf"
            config.write_text("\n".join(lines) + "\n")
            self.sentinel_processes.append(subprocess.Popen(
                [self.master.binary, str(config), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.sentinel_ports:
            wait_for(lambda port=port: self._sentinel_ready(port),  # type: ignore[misc]
                     f"the Sentinel on port {port} to see the master, replica and peers")
        return self

    def sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.sentinel_password,
                           decode_responses=True, socket_timeout=5)

    def master_address(self) -> str:
        """The master the first reachable Sentinel names now."""
        for port in self.sentinel_ports:
            try:
                host, master_port = _ask(self.sentinel_client(port),
                    "SENTINEL", "get-master-addr-by-name", self.MASTER_NAME)
                return f"{host}:{master_port}"
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError("no Sentinel answered")

    def _sentinel_ready(self, port: int) -> bool:
        client = self.sentinel_client(port)
        master = _ask(client, "SENTINEL", "get-master-addr-by-name", self.MASTER_NAME)
        replicas = _ask(client, "SENTINEL", "replicas", self.MASTER_NAME)
        peers = _ask(client, "SENTINEL", "sentinels", self.MASTER_NAME)
        return bool(master) and len(replicas) >= 1 and len(peers) >= 2

    def kill_master(self, *, rejoin: bool = True,
                    while_rejoining: Callable[[RedisServer, RedisServer], None] | None = None,
                    ) -> str:
        """SIGKILL the master; return the promoted replica's address once all agree.

        With ``rejoin`` the killed server starts again (as Kubernetes restarts a
        pod) and the call returns once it has become the new master's replica.
        ``while_rejoining(rejoining, master)`` runs after that restart, before its
        first sync is awaited.
        """
        self._wait_promotable_replica()
        old = self.master_address()
        current = self.master if old == self.master.address else self.replica
        promoted = self.replica if current is self.master else self.master
        current.stop(kill=True)
        wait_for(lambda: self._promoted_everywhere(promoted),
                 f"the Sentinels to promote {promoted.address}", 60)
        if rejoin:
            # As a Sentinel-managed pod does: start as the replica of the master the
            # Sentinels name, never as the master it was. And not promotable
            # (replica-priority 0) until its first sync is done: until then it holds
            # the data it had when it was killed. A switch resets a Sentinel's failover
            # timer, and on a loaded machine a Sentinel whose fresh link to the new
            # master got no answer for down-after-milliseconds (1 s) fails over again
            # at once; with this server promotable it picked it, unsynced, and every
            # write the new master took was lost (a CI run: +switch-master, +sdown of
            # the new master 1 s later, +selected-slave of the restarted server).
            current.extra_args = ["--replicaof", "127.0.0.1", str(promoted.port),
                                  "--replica-priority", "0"]
            current.start()
            if while_rejoining is not None:
                while_rejoining(current, promoted)

            def rejoined() -> bool:
                named = self.master_address()
                if named != promoted.address:
                    raise RuntimeError(f"the Sentinels failed over again, to {named}, while "
                                       f"{current.address} rejoined (see their logs)")
                return _info(current.client(), "replication").get(
                    "master_link_status") == "up" and _info(promoted.client(), "replication").get(
                    "connected_slaves") == 1

            wait_for(rejoined, f"{current.address} to rejoin as a replica", 60)
            current.client().config_set("replica-priority", 100)
            current.extra_args = ["--replicaof", "127.0.0.1", str(promoted.port)]
        return promoted.address

    def _promoted_everywhere(self, promoted: RedisServer) -> bool:
        """Every Sentinel names ``promoted`` as the master, and it says it is one."""
        for port in self.sentinel_ports:
            host, master_port = _ask(self.sentinel_client(port),
                "SENTINEL", "get-master-addr-by-name", self.MASTER_NAME)
            if f"{host}:{master_port}" != promoted.address:
                return False
        return _info(promoted.client(), "replication").get("role") == "master"

    def fail_over_to_empty_replica(self) -> str:
        """The replica restarts without its data and the Sentinels promote it before it syncs.

        What happens in Kubernetes when a replica pod without persistence restarts and a
        failover picks it before its first full sync is done: the new master is empty, and
        the old one, made its replica, flushes what it held. Deterministic: the master is
        told to hold full syncs (a diskless sync waits ``repl-diskless-sync-delay`` for more
        replicas to join) so the restarted replica stays empty, connected and promotable;
        then ``SENTINEL FAILOVER`` promotes it. Returns its address once every Sentinel
        names it and the old master has become its replica (and so lost the data too).
        """
        self._wait_promotable_replica()
        master = self.master if self.master_address() == self.master.address else self.replica
        replica = self.replica if master is self.master else self.master
        master.client().config_set("repl-diskless-sync", "yes")
        master.client().config_set("repl-diskless-sync-delay", 3600)
        replica.stop(kill=True)
        shutil.rmtree(replica.directory / "appendonlydir", ignore_errors=True)  # no persistence
        (replica.directory / "dump.rdb").unlink(missing_ok=True)
        replica.extra_args = ["--replicaof", "127.0.0.1", str(master.port)]
        replica.start()

        def waiting_for_its_first_sync() -> bool:
            replicas = [value for name, value in _info(master.client(), "replication").items()
                        if name.startswith("slave") and isinstance(value, dict)]
            return (any(value.get("port") == replica.port and value.get("state") == "wait_bgsave"
                        for value in replicas)
                    and replica.client().dbsize() == 0)

        wait_for(waiting_for_its_first_sync, f"{replica.address} to wait for its first sync")

        def failover_started() -> bool:
            try:
                _ask(self.sentinel_client(self.sentinel_ports[0]),
                     "SENTINEL", "FAILOVER", self.MASTER_NAME)
            except redis.ResponseError as exc:
                if "NOGOODSLAVE" in str(exc):  # no fresh INFO of the restarted replica yet
                    return False
                raise
            return True

        wait_for(failover_started, f"a Sentinel to accept failing over to {replica.address}")
        wait_for(lambda: self._promoted_everywhere(replica),
                 f"the Sentinels to promote the empty {replica.address}", 60)
        master.client().config_set("repl-diskless-sync-delay", 5)
        replica.client().config_set("repl-diskless-sync-delay", 0)

        def old_master_flushed() -> bool:
            return _info(master.client(), "replication").get(
                "master_link_status") == "up" and _info(replica.client(), "replication").get(
                "connected_slaves") == 1

        wait_for(old_master_flushed, f"{master.address} to become the empty master's replica",
                 60)
        return replica.address

    def _wait_promotable_replica(self) -> None:
        """Every Sentinel sees the master's replica connected and promotable (priority > 0).

        A server that rejoined is made promotable once synced; the Sentinels learn its
        new priority from their next INFO (every 10 s), which a second kill awaits here.
        """
        def promotable() -> bool:
            for port in self.sentinel_ports:
                replicas = _ask(self.sentinel_client(port),
                                "SENTINEL", "replicas", self.MASTER_NAME)
                if not any(_promotable(_pairs(replica)) for replica in replicas):
                    return False
            return True

        wait_for(promotable, "the Sentinels to see a promotable replica", 60)

    def close(self) -> None:
        for process in self.sentinel_processes:
            process.kill()
            process.wait()
        self.sentinel_processes = []
        self.master.stop(kill=True)
        self.replica.stop(kill=True)
        if self.keep_logs_in is not None:
            self.keep_logs_in.mkdir(parents=True, exist_ok=True)
            for log_file in sorted(self.root.glob("*/*.log")):
                shutil.copyfile(log_file, self.keep_logs_in / f"{log_file.parent.name}.log")
        self.master.close()
        self.replica.close()
        self._tmp.cleanup()


class ClusterGroup(_Group):
    """A three-master Redis Cluster (no replicas) on loopback, with AOF on every node.

    :meth:`restart_node` stops one node and starts it again on the same port
    and data; it returns once the cluster reports ``cluster_state:ok``.
    """

    def __init__(self, size: int = 3) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="doraforwarder-cluster-")
        root = Path(self._tmp.name)
        self.nodes: list[RedisServer] = []
        for index in range(size):
            directory = root / f"node-{index}"
            directory.mkdir()
            self.nodes.append(RedisServer(
                directory=str(directory), appendonly=True,
                extra_args=["--cluster-enabled", "yes",
                            "--cluster-config-file", str(directory / "nodes.conf"),
                            "--cluster-node-timeout", "2000",
                            "--cluster-port", str(free_port())]))

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def start(self) -> Self:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerUnavailable("redis-cli is not on PATH (apt-get install redis-tools)")
        subprocess.run(
            [cli, "--cluster", "create", *self.addresses,
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60)
        self.wait_ok()
        return self

    def wait_ok(self) -> None:
        for node in self.nodes:
            wait_for(lambda node=node: _cluster_ok(node),  # type: ignore[misc]
                     f"cluster_state:ok on {node.address}", 60)

    def node_of_slot_for(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now."""
        client = self.nodes[0].client()
        slot = int(_ask(client, "CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in _ask(client, "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                port = int(primary[1])
                return next(node for node in self.nodes if node.port == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def restart_node(self, node: RedisServer, *, kill: bool = False,
                     while_down: Callable[[], None] | None = None) -> None:
        node.stop(kill=kill)
        if while_down is not None:
            while_down()
        node.start()
        self.wait_ok()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self._tmp.cleanup()


def _ask(client: redis.Redis, *args: object) -> Any:
    """One command through the synchronous client (redis-py leaves it untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _pairs(reply: Any) -> dict[str, str]:
    """A Sentinel's flat ``[name, value, ...]`` answer about one instance, as a dict."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}


def _promotable(replica: dict[str, str]) -> bool:
    flags = set(replica.get("flags", "").split(","))
    return (not flags & {"s_down", "o_down", "disconnected"}
            and int(replica.get("slave-priority", "0")) > 0)


def _info(client: redis.Redis, section: str) -> dict[str, object]:
    answer: dict[str, object] = client.info(section)
    return answer


def _cluster_ok(node: RedisServer) -> bool:
    """The node says ``cluster_state:ok`` and knows every slot's owner."""
    info: dict[str, object] = _ask(node.client(), "CLUSTER INFO")
    return info.get("cluster_state") == "ok" and str(info.get("cluster_slots_ok")) == "16384"
