"""The fakes' background server: a port taken before the first bind is no test failure.

CI once failed at a fake DevLake's start with "address already in use": free_port() picked a port
that an outgoing connection (an ephemeral port of any process) took before the fake bound it.
"""

from __future__ import annotations

import socket
import urllib.request

import pytest
from aiohttp import web

from doraforwarder.testing.http_fake import BackgroundServer


def _app() -> web.Application:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def _occupy(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_picked_port_taken_before_the_first_bind_moves_the_server() -> None:
    server = BackgroundServer(_app())
    taken = server.port
    with _occupy(taken), server:
        assert server.port != taken
        assert _get(server.url + "/") == "hello"


def test_a_restart_keeps_its_port() -> None:
    with BackgroundServer(_app()) as server:
        port = server.port
        server.stop()
        server.start()
        assert server.port == port
        assert _get(server.url + "/") == "hello"


def test_a_port_asked_for_is_never_moved() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = BackgroundServer(_app(), port=port)
    try:
        with _occupy(port), pytest.raises(OSError):
            server.start()
    finally:
        server.close()
