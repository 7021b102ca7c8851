"""The asyncio network backend under httpx: real sockets, real TLS, a real CONNECT proxy.

Each test runs a small asyncio server on loopback that can misbehave on
purpose (close an idle keep-alive connection, never answer, answer a
megabyte) and checks what the DevLake client makes of it, so the backend
is held to what httpcore's anyio backend does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpcore
import httpx
import pytest

from doraforwarder import http_backend
from doraforwarder.devlake.client import DevLakeClient
from doraforwarder.testing.redis_server import TlsUnavailable, make_tls_files

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback HTTP/1.1 server whose behaviour each test chooses."""

    def __init__(self, respond: Callable[[bytes], bytes | None], *,
                 close_after_each: bool = False) -> None:
        self.respond = respond
        self.close_after_each = close_after_each
        self.connections = 0
        self.requests: list[bytes] = []
        self.idle: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append(body)
                answer = self.respond(body)
                if answer is None:  # never answer
                    await asyncio.sleep(3600)
                writer.write(answer)
                await writer.drain()
                if self.close_after_each:
                    break
                self.idle.append(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close_idle(self) -> None:
        """Close every kept-alive connection, as a server's idle timeout does."""
        for writer in self.idle:
            writer.close()
        self.idle.clear()


def ok(body: bytes = b'{"success":true}') -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


@asynccontextmanager
async def serving(handler: Handler, ssl_context: ssl.SSLContext | None = None
                  ) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_every_pool_of_the_client_gets_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    client = DevLakeClient(None, timeout_seconds=1)
    pools = [client.http._transport, *client.http._mounts.values()]
    backends = {type(getattr(t, "_pool")._network_backend) for t in pools if t is not None}
    assert backends == {http_backend.AsyncioBackend}
    assert len(pools) >= 3  # the direct transport and the two proxy mounts


def test_a_transport_without_a_pool_is_reported_not_broken() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    assert http_backend.install(client) == ["default"]


async def test_requests_reuse_one_kept_alive_connection() -> None:
    server = Server(lambda body: ok())
    async with serving(server.handle) as port:
        client = DevLakeClient(None, timeout_seconds=5, pool_size=1)
        try:
            for n in range(50):
                answer = await client.post(f"http://127.0.0.1:{port}/x", {"n": n})
                assert (answer.status, answer.body) == (200, '{"success":true}')
        finally:
            await client.aclose()
    assert server.connections == 1
    assert server.requests[-1] == b'{"n":49}'


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    server = Server(lambda body: ok())
    async with serving(server.handle) as port:
        client = DevLakeClient(None, timeout_seconds=5, pool_size=1)
        try:
            assert (await client.post(f"http://127.0.0.1:{port}/x", {})).status == 200
            server.close_idle()
            pool = client.http._transport._pool  # type: ignore[attr-defined]
            for _ in range(500):  # until the close reached the client's side
                if all(c.has_expired() for c in pool.connections):
                    break
                await asyncio.sleep(0.01)
            assert (await client.post(f"http://127.0.0.1:{port}/x", {})).status == 200
        finally:
            await client.aclose()
    assert server.connections == 2


async def test_closing_after_each_answer_costs_a_connection_not_a_failure() -> None:
    server = Server(lambda body: ok(), close_after_each=True)
    async with serving(server.handle) as port:
        client = DevLakeClient(None, timeout_seconds=5, pool_size=1)
        try:
            statuses = [(await client.post(f"http://127.0.0.1:{port}/x", {})).status
                        for _ in range(5)]
        finally:
            await client.aclose()
    assert statuses == [200] * 5


async def test_no_answer_is_a_timeout() -> None:
    server = Server(lambda body: None)
    async with serving(server.handle) as port:
        client = DevLakeClient(None, timeout_seconds=0.3)
        try:
            answer = await client.post(f"http://127.0.0.1:{port}/x", {})
        finally:
            await client.aclose()
    assert (answer.status, answer.failure) == (None, "timeout")


async def test_a_server_that_stops_reading_is_a_write_timeout() -> None:
    """The body outgrows the socket buffers and the transport pushes back: the wait is bounded."""
    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async with serving(never_read) as port:
        client = DevLakeClient(None, timeout_seconds=0.5)
        try:
            answer = await client.post(f"http://127.0.0.1:{port}/x", {"x": "y" * 32_000_000})
        finally:
            await client.aclose()
    assert (answer.status, answer.failure) == (None, "timeout")


async def test_a_refused_connection_is_a_network_failure() -> None:
    async with serving(Server(lambda body: ok()).handle) as port:
        pass  # the port is closed again
    client = DevLakeClient(None, timeout_seconds=2)
    try:
        answer = await client.post(f"http://127.0.0.1:{port}/x", {})
    finally:
        await client.aclose()
    assert (answer.status, answer.failure) == (None, "network")
    assert answer.error is not None and answer.error.startswith("ConnectError")


async def test_large_bodies_both_ways_arrive_whole() -> None:
    """More than the read high-water mark back, and a body larger than socket buffers out."""
    big_answer = b"x" * (3 * http_backend.READ_HIGH_WATER + 17)
    server = Server(lambda body: ok(big_answer))
    async with serving(server.handle) as port:
        pool = httpcore.AsyncConnectionPool(network_backend=http_backend.AsyncioBackend())
        async with pool:
            sent = b"y" * (8 * 1024 * 1024)
            response = await pool.request("POST", f"http://127.0.0.1:{port}/x", content=sent)
    assert response.status == 200
    assert response.content == big_answer
    assert server.requests == [sent]


async def test_a_cancelled_request_leaves_the_pool_usable() -> None:
    answers = iter([None, ok()])
    server = Server(lambda body: next(answers))
    async with serving(server.handle) as port:
        client = DevLakeClient(None, timeout_seconds=5, pool_size=1)
        try:
            hanging = asyncio.create_task(client.post(f"http://127.0.0.1:{port}/x", {}))
            while not server.requests:
                await asyncio.sleep(0.01)
            hanging.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hanging
            assert (await client.post(f"http://127.0.0.1:{port}/x", {})).status == 200
        finally:
            await client.aclose()


async def test_unix_socket(tmp_path: Path) -> None:
    server = Server(lambda body: ok())
    path = str(tmp_path / "devlake.sock")
    unix = await asyncio.start_unix_server(server.handle, path)
    try:
        pool = httpcore.AsyncConnectionPool(uds=path,
                                            network_backend=http_backend.AsyncioBackend())
        async with pool:
            response = await pool.request("POST", "http://devlake/x", content=b"{}")
    finally:
        unix.close()
    assert (response.status, response.content) == (200, b'{"success":true}')


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    try:
        files = make_tls_files(tmp_path_factory.mktemp("tls"))
    except TlsUnavailable as exc:
        pytest.skip(str(exc))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)
    return context, files.ca_cert


async def test_https_directly(tls: tuple[ssl.SSLContext, Path],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    context, ca = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    server = Server(lambda body: ok())
    async with serving(server.handle, context) as port:
        client = DevLakeClient(None, timeout_seconds=5, pool_size=1)
        try:
            answers = [await client.post(f"https://localhost:{port}/x", {}) for _ in range(3)]
        finally:
            await client.aclose()
    assert [a.status for a in answers] == [200] * 3
    assert server.connections == 1


async def test_an_untrusted_certificate_is_a_network_failure(
        tls: tuple[ssl.SSLContext, Path]) -> None:
    context, _ = tls
    async with serving(Server(lambda body: ok()).handle, context) as port:
        client = DevLakeClient(None, timeout_seconds=5)
        try:
            answer = await client.post(f"https://localhost:{port}/x", {})
        finally:
            await client.aclose()
    assert (answer.status, answer.failure) == (None, "network")
    assert answer.error is not None and "CERTIFICATE_VERIFY_FAILED" in answer.error


async def _tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  seen: list[bytes]) -> None:
    """A CONNECT proxy: the request line, then bytes both ways."""
    head = await reader.readuntil(b"\r\n\r\n")
    seen.append(head.split(b"\r\n")[0])
    host, _, port = head.split()[1].decode().rpartition(":")
    up_reader, up_writer = await asyncio.open_connection(host.replace("localhost", "127.0.0.1"),
                                                         int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_https_through_a_connect_proxy(tls: tuple[ssl.SSLContext, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS started on a stream that is already a tunnel (start_tls on a live connection)."""
    context, ca = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    seen: list[bytes] = []
    server = Server(lambda body: ok())

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _tunnel(reader, writer, seen)

    async with serving(server.handle, context) as port, serving(proxy) as proxy_port:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
        client = DevLakeClient(None, timeout_seconds=5, pool_size=1)
        try:
            answers = [await client.post(f"https://localhost:{port}/x", {}) for _ in range(2)]
        finally:
            await client.aclose()
    assert [a.status for a in answers] == [200, 200]
    assert seen == [f"CONNECT localhost:{port} HTTP/1.1".encode()]
