"""An httpcore network backend on asyncio's own transports, for the httpx clients.

Under asyncio, httpcore reaches the socket through anyio, and anyio pays on
every read and write for what this daemon never uses (a cancel scope with
its own timer, an exception-mapping context manager, a checkpoint per send),
and answers ``is_readable`` (asked of every idle keep-alive connection each
time the pool hands one out) with ``getpeername`` plus a ``poll`` syscall.
Draining a DevLake backlog is thousands of small POSTs on a few kept-alive
connections, so that overhead was most of the daemon's CPU per record.

:class:`AsyncioBackend` implements httpcore's public
``AsyncNetworkBackend`` interface on an :class:`asyncio.Protocol`: the
protocol buffers what arrives, a read returns buffered bytes at once or
waits on one future (with a ``call_later`` timer for the timeout), a write
hands the bytes to the transport and waits only when the transport pushes
back, and a server's close of an idle connection is known from state. TLS
goes through ``loop.start_tls``, proxies and Unix sockets through the same
code, and every failure is raised as the httpcore exception anyio's backend
would raise, so httpx maps it exactly as before.

httpx has no public switch for the network backend, so :func:`install`
sets it on the connection pools of a client's transports (its own and the
proxy mounts ``trust_env`` made). It reports what it could not reach and
leaves those pools on anyio: a future httpx that moves the attribute slows
delivery down, never breaks it. :func:`async_client` builds every httpx
client of the daemon (DevLake, GitHub, SSO and WebRCA) that way.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import sniffio

from doraforwarder import bodies
from doraforwarder.logging import get_logger

log = get_logger("http")

SocketOption = httpcore.SOCKET_OPTION

READ_HIGH_WATER = 256 * 1024
"""Bytes buffered before the protocol stops reading the socket (resumes below a quarter)."""


class _Waiter:
    """One coroutine waiting for a protocol event (HTTP/1.1 never reads or writes twice at once)."""

    def __init__(self, timeout_error: type[httpcore.TimeoutException]) -> None:
        self._timeout_error = timeout_error
        self._future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout_s: float | None) -> None:
        """Until :meth:`wake`; after ``timeout_s`` seconds the timeout error instead.

        One loop timer, cancelled when the event comes: cheaper than
        ``asyncio.timeout`` (no context manager, no task bookkeeping).
        """
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()
        timer = None if timeout_s is None else loop.call_later(timeout_s, _expire, future)
        try:
            await future
        except _Expired:
            raise self._timeout_error(f"no progress within {timeout_s}s") from None
        finally:
            self._future = None
            if timer is not None:
                timer.cancel()


class _Buffering(asyncio.Protocol):
    """Keeps what the server sends until httpcore reads it, and the connection's state."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        """The server closed its side, or the connection is lost."""
        self.error: BaseException | None = None
        self.reading_paused = False
        self._writing_paused = False
        self._readable = _Waiter(httpcore.ReadTimeout)
        self._drained = _Waiter(httpcore.WriteTimeout)

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._readable.wake()
        if len(self.buffer) > READ_HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True

    def eof_received(self) -> bool:
        self.closed = True
        self._readable.wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._readable.wake()
        self._drained.wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._drained.wake()

    # -- what the stream waits for -------------------------------------------------

    async def readable(self, timeout_s: float | None) -> None:
        """Until there are bytes to read or the connection is closed."""
        if not self.buffer and not self.closed:
            await self._readable.wait(timeout_s)

    async def drained(self, timeout_s: float | None) -> None:
        """Until the transport takes more bytes (it paused us), or the connection is lost."""
        if self._writing_paused and not self.closed:
            await self._drained.wait(timeout_s)


class _Expired(Exception):
    """Set on a waiter by its timer (never escapes this module)."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection, plain or TLS, as httpcore reads and writes it."""

    def __init__(self, transport: asyncio.Transport, protocol: _Buffering) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int,
                   timeout: float | None = None,  # noqa: ASYNC109 (httpcore's API)
                   ) -> bytes:
        protocol = self._protocol
        await protocol.readable(timeout)
        buffer = protocol.buffer
        if not buffer:
            if protocol.error is not None:
                raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
            return b""  # end of stream: httpcore decides what that means
        data = bytes(buffer[:max_bytes])
        del buffer[:max_bytes]
        if protocol.reading_paused and len(buffer) < READ_HIGH_WATER // 4:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes,
                    timeout: float | None = None,  # noqa: ASYNC109 (httpcore's API)
                    ) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if protocol.error is not None or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        await protocol.drained(timeout)
        if protocol.error is not None:
            raise httpcore.WriteError(str(protocol.error) or type(protocol.error).__name__)

    async def aclose(self) -> None:
        if not self._transport.is_closing():
            self._transport.close()
            await asyncio.sleep(0)  # let the loop run connection_lost: the socket is closed

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's API)
                        ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, self._protocol, ssl_context,
                                                 server_hostname=server_hostname)
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout}s") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:  # the connection was lost during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        assert isinstance(transport, asyncio.Transport)
        self._protocol.transport = transport
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # asked of idle connections: a close or stray bytes
            return self._protocol.closed or bool(self._protocol.buffer)
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens :class:`AsyncioStream` connections (TCP or a Unix socket)."""

    async def connect_tcp(self, host: str, port: int,
                          timeout: float | None = None,  # noqa: ASYNC109 (httpcore's API)
                          local_address: str | None = None,
                          socket_options: Iterable[SocketOption] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        return await _connect(
            loop.create_connection(_Buffering, host, port, local_addr=local),
            timeout, socket_options)

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109 (httpcore's API)
                                  socket_options: Iterable[SocketOption] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await _connect(loop.create_unix_connection(_Buffering, path),
                              timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(opening: Any, timeout_s: float | None,
                   socket_options: Iterable[SocketOption] | None) -> AsyncioStream:
    try:
        async with asyncio.timeout(timeout_s):
            transport, protocol = await opening
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"no connection within {timeout_s}s") from None
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
    sock: socket.socket | None = transport.get_extra_info("socket")
    for option in socket_options or ():  # asyncio already sets TCP_NODELAY
        if sock is not None:
            sock.setsockopt(*option)
    return AsyncioStream(transport, protocol)


def declare_asyncio() -> None:
    """Tell sniffio, for this task and the tasks it starts, that the loop is asyncio.

    httpcore and anyio ask :func:`sniffio.current_async_library` several times
    per request; undeclared, every answer is found by calling
    ``asyncio.current_task()``. Setting sniffio's documented context variable
    answers it at once. Call it at the top of the daemon's main coroutine.
    """
    sniffio.current_async_library_cvar.set("asyncio")


def install(client: httpx.AsyncClient, backend: httpcore.AsyncNetworkBackend | None = None
            ) -> list[str]:
    """Put ``backend`` (default :class:`AsyncioBackend`) under every pool of ``client``.

    Returns what could not be switched (empty when all were), for a log line:
    a custom transport, or an httpx whose transports keep their pool elsewhere.
    """
    chosen = backend or AsyncioBackend()
    missed: list[str] = []
    transports = [("default", client._transport),
                  *((str(pattern.pattern), transport)
                    for pattern, transport in client._mounts.items())]
    for name, transport in transports:
        if transport is None:  # a mount that disables a URL pattern
            continue
        pool = getattr(transport, "_pool", None)
        if isinstance(pool, httpcore.AsyncConnectionPool) and hasattr(pool, "_network_backend"):
            pool._network_backend = chosen
        else:
            missed.append(name)
    return missed


def async_client(**options: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient(**options)`` on :class:`AsyncioBackend`, asking for no encoding.

    A ``transport`` given in ``options`` (a test's mock) is left as it is.
    Pools that cannot be switched are named in one warning.
    """
    client = httpx.AsyncClient(**options)
    # Never httpx's "gzip, deflate, br, zstd": bodies are read with a bound (bodies.py).
    client.headers["Accept-Encoding"] = bodies.ACCEPT_ENCODING
    if options.get("transport") is None:
        missed = install(client)
        if missed:
            log.warning("some httpx connection pools stay on anyio (slower, still correct)",
                        transports=missed, httpx=httpx.__version__)
    return client
