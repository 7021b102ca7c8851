"""A loopback proxy that gives every request of the daemon to the real DevLake and the fake.

The daemon talks to the tee as to DevLake. The real DevLake's answer is the
one the daemon gets (it decides retries and dead letters); the fake receives
the same request (same path bytes, same key) so that our DORA model computes
from exactly what the real server was sent. Every request the two answer
differently is kept in :attr:`Tee.disagreements`: the fake must accept and
refuse what DevLake accepts and refuses.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import httpx
from aiohttp import web

from doraforwarder.testing.http_fake import BackgroundServer

FORWARDED = ("Authorization", "Content-Type", "Accept")


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    real_status: int
    fake_status: int
    real_body: str
    fake_body: str


class Tee:
    """``with Tee(real_url, fake_url) as tee``: the URL to give the daemon is ``tee.url``."""

    def __init__(self, real_url: str, fake_url: str) -> None:
        self.real_url = real_url.rstrip("/")
        self.fake_url = fake_url.rstrip("/")
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_cleanup.append(self._close_client)
        self.server = BackgroundServer(app)
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return self.server.url

    async def _close_client(self, _: web.Application) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _handle(self, request: web.Request) -> web.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=60)
        body = await request.read()
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        # raw_path: the escaping the daemon chose must reach both servers unchanged
        real, fake = await asyncio.gather(
            self._client.request(request.method, self.real_url + request.raw_path,
                                 content=body, headers=headers),
            self._client.request(request.method, self.fake_url + request.raw_path,
                                 content=body, headers=headers))
        with self._lock:
            self.exchanges.append(Exchange(request.method, request.path, real.status_code,
                                           fake.status_code, real.text[:300], fake.text[:300]))
        return web.Response(status=real.status_code, body=real.content,
                            content_type=real.headers.get("content-type", "application/json")
                            .split(";")[0])

    @property
    def disagreements(self) -> list[Exchange]:
        """Requests the real DevLake and the fake answered with different status classes."""
        with self._lock:
            return [e for e in self.exchanges
                    if e.real_status // 100 != e.fake_status // 100
                    or (e.real_status >= 400 and e.real_status != e.fake_status)]

    def __enter__(self) -> Tee:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()
