"""Hostile answers: a huge body, an unrequested gzip bomb; every client reads a bounded prefix.

A real loopback server (asyncio streams) answers each client of the daemon
(DevLake, GitHub, WebRCA, SSO) with a 256 MiB body or a gzip body that
inflates to 256 MiB. The client's peak Python memory (``tracemalloc``) stays
a few MiB, the server could only push what the socket buffers hold before
the client hung up, and the error is one line.
"""

from __future__ import annotations

import asyncio
import functools
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from doraforwarder import bodies, http_backend
from doraforwarder.apiauth import OpenShiftUsers, Refused
from doraforwarder.commits.github import Call, GitHubClient, GitHubError
from doraforwarder.devlake.client import DevLakeClient
from doraforwarder.keys import Keys
from doraforwarder.metrics import Metrics
from doraforwarder.webrca.client import IncidentsClient, TokenSource, TransientError

HUGE = 256 * 1024 * 1024
CHUNK = b"x" * 65536
PEAK_LIMIT = 24 * 1024 * 1024
"""Peak Python allocations while one request runs (the body limits are 8 KiB-16 MiB;
the hostile bodies are 256 MiB)."""

T = TypeVar("T")


@functools.cache
def gzip_bomb() -> bytes:
    """gzip of 256 MiB of zeros: about 256 KiB on the wire."""
    z = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1024 * 1024)
    return b"".join([z.compress(zeros) for _ in range(256)]) + z.flush()


@dataclass
class Hostile:
    """What the server answers, and how many body bytes it managed to send."""

    status: int = 500
    gzip: bool = False
    sent: int = 0
    requests: list[bytes] = field(default_factory=list)


@asynccontextmanager
async def hostile_server(answer: Hostile) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            answer.requests.append(head)
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            body = gzip_bomb() if answer.gzip else None
            size = len(body) if body is not None else HUGE
            extra = b"Content-Encoding: gzip\r\n" if answer.gzip else b""
            writer.write(b"HTTP/1.1 %d Hostile\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n%s\r\n" % (answer.status, size, extra))
            if body is not None:
                for start in range(0, len(body), len(CHUNK)):
                    writer.write(body[start:start + len(CHUNK)])
                    await writer.drain()
                    answer.sent += len(CHUNK)
            else:
                while answer.sent < HUGE:
                    writer.write(CHUNK)
                    await writer.drain()
                    answer.sent += len(CHUNK)
            await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def peak_of(call: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """``call()``'s result and the peak of Python allocations while it ran."""
    tracemalloc.start()
    try:
        result = await call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def one_line(message: str) -> str:
    assert "\n" not in message and len(message) < 300, message
    return message


@pytest.mark.parametrize("gzip", [False, True], ids=["huge", "gzip-bomb"])
async def test_devlake_error_body_is_a_bounded_prefix(gzip: bool) -> None:
    answer = Hostile(status=500, gzip=gzip)
    async with hostile_server(answer) as url:
        client = DevLakeClient(SecretStr("k"), 10)
        try:
            got, peak = await peak_of(lambda: client.request("POST", url + "/x", {"a": 1}))
        finally:
            await client.aclose()
    assert got.status == 500
    assert 0 < len(got.body) <= 2000
    assert set(got.body) == ({"\0"} if gzip else {"x"})
    assert peak < PEAK_LIMIT, peak
    assert answer.sent < 64 * 1024 * 1024
    assert b"accept-encoding: identity" in answer.requests[0].lower()


async def test_devlake_body_in_an_unknown_encoding_is_not_read() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 502 Bad\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\nabcd")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = DevLakeClient(None, 10)
    try:
        got = await client.request("GET", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    finally:
        await client.aclose()
        server.close()
    assert got.status == 502
    assert got.body == "(body in Content-Encoding br, not requested, not read)"


@pytest.mark.parametrize("gzip", [False, True], ids=["huge", "gzip-bomb"])
async def test_sso_answer_is_bounded(gzip: bool) -> None:
    answer = Hostile(status=200, gzip=gzip)
    async with hostile_server(answer) as url, http_backend.async_client(timeout=10) as http:
        tokens = TokenSource(http, url + "/token", "cloud-services", SecretStr("offline"))
        with pytest.raises(TransientError) as raised:
            await peak_of(lambda: tokens.get())
        tracemalloc.start()
        with pytest.raises(TransientError):
            await tokens.get()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert one_line(str(raised.value)) == "SSO answer is larger than 1024 KiB; not read"
    assert peak < PEAK_LIMIT, peak
    assert b"accept-encoding: identity" in answer.requests[0].lower()


@pytest.mark.parametrize(("status", "gzip"), [(500, False), (500, True), (200, True)],
                         ids=["error-huge", "error-gzip-bomb", "page-gzip-bomb"])
async def test_webrca_answers_are_bounded(status: int, gzip: bool) -> None:
    answer = Hostile(status=status, gzip=gzip)
    async with hostile_server(answer) as url, http_backend.async_client(timeout=10) as http:
        tokens = TokenSource(http, url + "/token", "cloud-services", SecretStr("offline"))
        tokens._access_token, tokens._valid_until = "access", float("inf")
        client = IncidentsClient(http, url + "/incidents", tokens)

        async def page() -> Any:
            try:
                return await client.fetch_page(1, 100)
            except TransientError as exc:
                return exc

        got, peak = await peak_of(page)
    assert peak < PEAK_LIMIT, peak
    if status == 500:
        assert isinstance(got, TransientError)
        assert one_line(str(got)) == "WebRCA answered 500 on page 1"
    else:
        assert got.problem == "too_large"
        assert one_line(got.detail) == "WebRCA page 1 is larger than 16384 KiB; not read"


@pytest.mark.parametrize(("status", "gzip"), [(422, False), (200, True)],
                         ids=["error-huge", "document-gzip-bomb"])
async def test_github_answers_are_bounded(status: int, gzip: bool,
                                          redis_client: aioredis.Redis) -> None:
    answer = Hostile(status=status, gzip=gzip)
    async with hostile_server(answer) as url:
        github = GitHubClient(api_url=url, token=SecretStr("t"), redis=redis_client,
                              keys=Keys("bodies"), metrics=Metrics(), timeout_s=10)
        try:
            async def call() -> Exception:
                try:
                    await github.get_json("commit", "/repos/o/r/commits/abc", {},
                                          Call(deadline=float("inf")))
                except GitHubError as exc:
                    return exc
                raise AssertionError("no error")

            got, peak = await peak_of(call)
        finally:
            await github.aclose()
    assert peak < PEAK_LIMIT, peak
    assert answer.sent < 64 * 1024 * 1024
    if status == 200:
        assert one_line(str(got)) == ("GitHub commit request answered 200: answer to "
                                      "/repos/o/r/commits/abc is larger than 16384 KiB; not read")
    else:
        assert one_line(str(got)).startswith("GitHub commit request answered 422: xxxx")
        assert len(str(got)) < 300


@pytest.mark.parametrize(("status", "gzip"), [(500, False), (200, True)],
                         ids=["error-huge", "user-gzip-bomb"])
async def test_openshift_user_api_answers_are_bounded(status: int, gzip: bool) -> None:
    answer = Hostile(status=status, gzip=gzip)
    async with hostile_server(answer) as url:
        users = OpenShiftUsers(url + "/apis/user.openshift.io/v1/users/~", ["redhat.com"],
                               timeout=10)

        async def call() -> Refused:
            with pytest.raises(Refused) as refused:
                await users.allowed_namespaces("Bearer caller-token", [])
            return refused.value

        got, peak = await peak_of(call)
    assert got.status == 503 and "caller-token" not in got.message
    assert peak < PEAK_LIMIT, peak
    assert b"accept-encoding: identity" in answer.requests[0].lower()


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


@pytest.mark.parametrize(("encoding", "data", "limit", "expected", "truncated"), [
    ("", [b"abc", b"def"], 10, b"abcdef", False),
    ("", [b"abc", b"def"], 6, b"abcdef", False),
    ("", [b"abc", b"defg"], 6, b"abcdef", True),
    ("gzip", [zlib.compress(b"hello" * 10, wbits=zlib.MAX_WBITS | 16)], 100, b"hello" * 10,
     False),
    ("gzip", [zlib.compress(b"a" * 1000, wbits=zlib.MAX_WBITS | 16)], 10, b"a" * 10, True),
    ("deflate", [zlib.compress(b"zz" * 10)], 100, b"zz" * 10, False),
    ("deflate", [zlib.compress(b"zz" * 10, wbits=-zlib.MAX_WBITS)], 100, b"zz" * 10, False),
])
async def test_read_prefix_table(encoding: str, data: list[bytes], limit: int,
                                 expected: bytes, truncated: bool) -> None:
    headers = {"Content-Encoding": encoding} if encoding else {}
    response = httpx.Response(200, headers=headers, stream=_Chunks(data))
    body = await bodies.read_prefix(response, limit)
    assert (body.data, body.truncated) == (expected, truncated)
