"""Run an aiohttp application on a loopback port in a background thread."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BackgroundServer:
    """An aiohttp app served from its own thread and event loop.

    ``stop()`` closes the listening socket (clients then see *connection
    refused*); ``start()`` again serves on the same port, which is how the
    fakes simulate an outage and a restart.
    """

    def __init__(self, app: web.Application, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        # A port picked by free_port() may be taken (by any process's outgoing connection, an
        # ephemeral port) before the first bind: only then, and only for a picked port, the
        # server moves to another one. Restarts keep the port: that is how a fake restarts.
        self._may_move = port is None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=f"fake-http-{self.port}")
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._site: web.BaseSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop from any thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(fn)

    async def _start(self) -> None:
        if self._runner is None:
            self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                         shutdown_timeout=0.5)
            await self._runner.setup()
        self._site = web.SockSite(self._runner, self._listening_socket())
        await self._site.start()
        self._may_move = False

    def _listening_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or not self._may_move:
                sock.close()
                raise
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        sock.setblocking(False)
        return sock

    async def _stop_listening(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _cleanup(self) -> None:
        await self._stop_listening()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> BackgroundServer:
        """Listen (again): after :meth:`stop`, serves the same app on the same port."""
        if self._site is None:
            self.call(self._start())
        return self

    def stop(self) -> None:
        """Stop listening (clients get connection refused) but keep state."""
        self.call(self._stop_listening())

    def close(self) -> None:
        try:
            self.call(self._cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeServer:
    """Lifecycle shared by the fakes: ``with Fake() as fake:``, ``stop()``/``start()``, ``url``.

    Subclasses set ``self.server`` to their :class:`BackgroundServer` and
    extend :meth:`stop` or :meth:`close` when they hold more than a socket.
    """

    server: BackgroundServer

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> Self:
        """Listen (again, after :meth:`stop`: same port, same state)."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop listening: clients get connection refused until :meth:`start`."""
        self.server.stop()

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


AsyncHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
