"""The world both implementations run in, for ``test_reference_binary.py``.

One fake Kubernetes API, GitHub, WebRCA and OpenShift user API; per implementation its own
fake DevLake and its own redis-server, unless a side shares another's (the switch). The
reference hard-codes https://sso.redhat.com, https://api.github.com and
https://api.openshift.com, and its configuration names a DevLake on the Internet: each
process gets ``HTTPS_PROXY``, a loopback CONNECT proxy that terminates TLS with a throwaway
CA (``SSL_CERT_FILE``) and relays to the fakes, so the configuration file stays the
reference's and nothing leaves the loopback. client-go sends no bearer token over plain HTTP,
so the reference reaches the fake API server over TLS as well.
"""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_devlake_records import Posted
from doraforwarder.testing.fake_github import FakeGitHub
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.fake_webrca import FakeWebRCA
from doraforwarder.testing.http_fake import BackgroundServer, free_port
from doraforwarder.testing.redis_server import RedisServer

GITHUB_TOKEN = "gh-side-by-side"
DEVLAKE_TOKEN = "devlake-side-by-side"
OFFLINE_TOKEN = "offline-side-by-side"
KUBE_TOKEN = "kube-side-by-side"
API_TOKEN = "api-side-by-side"
OPENSHIFT_USERS = {"tok-alice": "alice@redhat.com", "tok-bob": "bob@example.com"}
CONNECTIONS = {1: "global", 2: "integration", 3: "ui", 4: "mintmaker", 5: "infra",
               6: "build", 7: "release", 8: "pipelines"}
FIXED_HOSTS = ("sso.redhat.com", "api.github.com", "api.openshift.com")
"""What the reference hard-codes (SSO, GitHub, the OpenShift user API)."""


def make_certificates(directory: Path, devlake_host: str) -> Path:
    """A throwaway CA and a server certificate for the proxied hosts and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=side-by-side-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
            "-subj", "/CN=side-by-side")
    hosts = (*FIXED_HOSTS, devlake_host)
    names = ",".join([*(f"DNS:{host}" for host in hosts), "IP:127.0.0.1"])
    (directory / "ext").write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n"
                                   "keyUsage=critical,digitalSignature,keyEncipherment\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "leaf.crt", "-days", "2", "-extfile", "ext")
    return directory


class _TlsRelay:
    """A loopback TCP server on its own thread; subclasses relay to a fake."""

    def __init__(self, certificates: Path) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certificates / "leaf.crt", certificates / "leaf.key")
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def serve(self, tls: bool) -> None:
        async def start() -> None:
            self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port,
                                                     ssl=self.ctx if tls else None)
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    @staticmethod
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    port: int) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class ConnectProxy(_TlsRelay):
    """``HTTPS_PROXY`` for one process: CONNECT host:443 -> TLS -> the fake for that host."""

    def __init__(self, certificates: Path, routes: Mapping[str, int]) -> None:
        super().__init__(certificates)
        self.routes = dict(routes)
        self.hits: collections.Counter[str] = collections.Counter()
        self.refused: list[str] = []
        self.serve(tls=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.split()
            host = parts[1].rsplit(":", 1)[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] != "CONNECT" or host not in self.routes:
                self.refused.append(line.strip())  # never forwarded anywhere
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await writer.start_tls(self.ctx)
            self.hits[host] += 1
            await self.relay(reader, writer, self.routes[host])
        except (OSError, ssl.SSLError):
            writer.close()


class TlsFront(_TlsRelay):
    """HTTPS in front of a plain-HTTP fake (the API server, for client-go)."""

    def __init__(self, certificates: Path, target_port: int) -> None:
        super().__init__(certificates)
        self.target = target_port
        self.serve(tls=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.relay(reader, writer, self.target)
        except OSError:
            writer.close()


def openshift_app(webrca: FakeWebRCA) -> web.Application:
    """api.openshift.com: the user API (``users/~``) and, behind it, WebRCA's incidents."""

    async def user(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in OPENSHIFT_USERS:
            return web.json_response({"kind": "Status", "status": "Failure", "code": 401,
                                      "message": "Unauthorized"}, status=401)
        return web.json_response({"kind": "User", "apiVersion": "user.openshift.io/v1",
                                  "metadata": {"name": OPENSHIFT_USERS[token]},
                                  "identities": [], "groups": []})

    async def forward(request: web.Request) -> web.Response:
        async with httpx.AsyncClient() as client:
            answer = await client.request(
                request.method, webrca.url + request.path_qs,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                content=await request.read())
        content_type = answer.headers.get("content-type", "application/json").split(";")[0]
        return web.Response(status=answer.status_code, body=answer.content,
                            content_type=content_type)

    app = web.Application()
    app.router.add_get("/apis/user.openshift.io/v1/users/~", user)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


class Fakes:
    """What both implementations see: the API server, GitHub, WebRCA and the user API."""

    def __init__(self, directory: Path, now: datetime, devlake_host: str) -> None:
        self.devlake_host = devlake_host
        self.certificates = make_certificates(directory / "certs", devlake_host)
        self.kube = FakeKube(token=KUBE_TOKEN).start()
        self.github = FakeGitHub(token=GITHUB_TOKEN).start()
        self.webrca = FakeWebRCA((OFFLINE_TOKEN,), start=now).start()
        self.openshift = BackgroundServer(openshift_app(self.webrca)).start()
        self.kube_tls = TlsFront(self.certificates, self.kube.server.port)

    def close(self) -> None:
        for part in (self.kube, self.github, self.webrca):
            part.close()
        self.openshift.close()
        self.kube_tls.close()


class Side:
    """One implementation: its DevLake, Redis, proxy, working directory and process."""

    def __init__(self, name: str, command: list[str], directory: Path, config_text: str,
                 fakes: Fakes, *, kube_over_tls: bool, path: str,
                 share: Side | None = None) -> None:
        self.name = name
        self.command = command
        self.owner = share is None
        if share is not None:  # the switch: the same DevLake and the same Redis
            self.devlake, self.redis = share.devlake, share.redis
        else:
            self.devlake = FakeDevLake(token=DEVLAKE_TOKEN, connections=CONNECTIONS).start()
            (directory / "redis").mkdir(parents=True, exist_ok=True)
            self.redis = RedisServer(appendonly=True, directory=str(directory / "redis"))
            self.redis.start()
        self.proxy = ConnectProxy(fakes.certificates, {
            "sso.redhat.com": fakes.webrca.server.port,
            "api.github.com": fakes.github.server.port,
            "api.openshift.com": fakes.openshift.port,
            fakes.devlake_host: self.devlake.server.port,
        })
        self.dir = directory / "app"
        (self.dir / "configs").mkdir(parents=True, exist_ok=True)
        (self.dir / "configs" / "config.yaml").write_text(config_text)
        home = directory / "home"
        kubeconfig = home / ".kube" / "config"
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        fakes.kube.write_kubeconfig(kubeconfig, token=KUBE_TOKEN)
        if kube_over_tls:
            config = json.loads(kubeconfig.read_text())
            config["clusters"][0]["cluster"] = {
                "server": f"https://127.0.0.1:{fakes.kube_tls.port}",
                "certificate-authority": str(fakes.certificates / "ca.crt")}
            kubeconfig.write_text(json.dumps(config))
        self.port = free_port()
        self.env = {
            "PATH": path, "HOME": str(home), "PORT": str(self.port),
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.redis.port),
            "HTTPS_PROXY": self.proxy.url, "https_proxy": self.proxy.url,
            "NO_PROXY": "127.0.0.1,localhost", "SSL_CERT_FILE": str(fakes.certificates / "ca.crt"),
            "GITHUB_TOKEN": GITHUB_TOKEN, "DEVLAKE_WEBHOOK_TOKEN": DEVLAKE_TOKEN,
            "OFFLINE_TOKEN": OFFLINE_TOKEN, "API_TOKENS": API_TOKEN,
        }
        self.log_path = directory / "process.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {datetime.now(UTC).isoformat()}\n".encode())
            self.proc = subprocess.Popen(self.command, cwd=self.dir, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: "
                                     f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(f"{self.name} did not answer /api/v1/health within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def new_posts(self) -> list[Posted]:
        posts = self.devlake.posts()
        fresh, self.seen = posts[self.seen:], len(posts)
        return fresh

    def close(self) -> None:
        self.stop()
        self.proxy.close()
        if self.owner:
            self.devlake.close()
            self.redis.close()


def settle(sides: list[Side], minimum: float = 6.0, quiet: float = 4.0,
           maximum: float = 45.0) -> None:
    """Wait until no DevLake received anything for ``quiet`` seconds (after ``minimum``)."""
    start = last_change = time.monotonic()
    counts = [len(side.devlake.posts()) for side in sides]
    while time.monotonic() - start < maximum:
        time.sleep(0.5)
        now = [len(side.devlake.posts()) for side in sides]
        if now != counts:
            counts, last_change = now, time.monotonic()
        elif time.monotonic() - start >= minimum and time.monotonic() - last_change >= quiet:
            return


def summary(post: Posted) -> tuple[Any, ...]:
    """What a post means for the dashboard: kind, connection, id, result or status."""
    body = post.body if isinstance(post.body, dict) else {}
    if post.kind == "deployment":
        return ("deployment", post.connection_id, body.get("id"), body.get("result"),
                len(body.get("deploymentCommits") or []))
    if post.kind == "issue":
        return ("issue", post.connection_id, body.get("issueKey"), body.get("status"),
                body.get("component"), body.get("resolutionDate"))
    return (post.kind, post.connection_id, post.path)


def copy_launcher(launcher: Path, side: Side) -> None:
    shutil.copy(launcher, side.dir / "main")
    (side.dir / "main").chmod(0o755)
