"""Reading HTTP answers with a bound: the one place every client reads a body.

A peer we talk to (DevLake, GitHub, WebRCA, SSO, or a proxy in front of
them) may answer with a body of any size: a 300 MiB error page, or a small
gzip answer we never asked for that decompresses to gigabytes. Reading it
whole before cutting it to the 2,000 characters we keep would take the pod
past its memory limit, and a 5xx retried forever makes that a crash loop.

So every client asks for no encoding (``Accept-Encoding: identity``, set by
:func:`doraforwarder.http_backend.async_client` and the DevLake client's own
headers), streams the answer and stops after ``limit`` *decoded* bytes,
then closes the response (the connection is dropped rather than drained).
A ``gzip`` or ``deflate`` body sent anyway is inflated with ``max_length``,
so no more than ``limit`` bytes ever come out of zlib; any other encoding
(``br``, ``zstd``...) is not decoded at all. :func:`read_prefix` works on
the transport-level responses of the DevLake client and :func:`fetch` on
an ``httpx.AsyncClient`` (GitHub, WebRCA, SSO): both end in the same
reading loop.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import httpx

ACCEPT_ENCODING = "identity"
"""What every client sends as ``Accept-Encoding``: answers are small, and unencoded."""

ERROR_LIMIT = 8 * 1024
"""Decoded bytes kept of an answer only read for its message (2,000 characters are kept)."""

DOCUMENT_LIMIT = 16 * 1024 * 1024
"""Decoded bytes a document we parse may have (a GitHub compare page, a WebRCA page)."""

TOKEN_LIMIT = 1024 * 1024
"""Decoded bytes of an SSO token answer."""

TRUNCATED = "doraforwarder.body_truncated"
"""``response.extensions`` key: True when :func:`fetch` stopped before the body's end."""

UNDECODED = "doraforwarder.body_undecoded"
"""``response.extensions`` key: the Content-Encoding :func:`fetch` did not decode, if any."""

_RAW_SLACK = 64 * 1024
_STEP = 256 * 1024


@dataclass(frozen=True)
class Body:
    """At most ``limit`` decoded bytes of an answer, and whether that was all of it."""

    data: bytes
    truncated: bool
    undecoded: str | None = None
    """The Content-Encoding that was not decoded (``data`` is then empty)."""

    def describe(self) -> str:
        """A note for an error body that could not be read (empty when it could)."""
        if self.undecoded:
            return f"(body in Content-Encoding {self.undecoded}, not requested, not read)"
        return ""


class TooLarge(Exception):
    """A document longer than its limit; the message is one line, without the body."""


class _Inflater:
    """zlib with ``max_length``: never produces more than asked for."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._first = True
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip"
                                     else zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> tuple[bytes, bytes]:
        """At most ``room`` (> 0) bytes out of ``data``, and the input left over."""
        try:
            out = self._z.decompress(data, room)
        except zlib.error:
            if not (self._first and self._encoding == "deflate"):
                raise
            # "deflate" is often sent raw, without the zlib header (RFC 9110 says otherwise).
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._z.decompress(data, room)
        self._first = False
        return out, self._z.unconsumed_tail

    @property
    def finished(self) -> bool:
        """The compressed stream's end was reached (a full window may still be pending)."""
        return self._z.eof


def _encoding(headers: httpx.Headers) -> str:
    value = headers.get("Content-Encoding", "")
    return ",".join(part.strip().lower() for part in value.split(",")
                    if part.strip() and part.strip().lower() != "identity")


async def read_prefix(response: httpx.Response, limit: int, *, keep_partial: bool = True
                      ) -> Body:
    """At most ``limit`` decoded bytes of ``response``'s body, read from its raw stream.

    Reads no more than about ``limit`` raw bytes either; the caller closes
    the response (``aclose``), which drops the connection when the body
    was not read to its end. A body in an encoding other than gzip or
    deflate is not read. Without ``keep_partial``, a truncated body comes
    back empty (a document that must be whole): its bytes are not copied.
    """
    encoding = _encoding(response.headers)
    if encoding and encoding not in ("gzip", "deflate", "x-gzip"):
        return Body(b"", truncated=True, undecoded=encoding)
    inflater = _Inflater("gzip" if encoding == "x-gzip" else encoding) if encoding else None
    kept = bytearray()
    size = raw = 0
    raw_limit = limit * 2 + _RAW_SLACK
    truncated = False
    stream: Any = response.stream
    try:
        async for chunk in stream:
            raw += len(chunk)
            room = limit - size
            if inflater is not None:
                pending = chunk
                while pending and not truncated:
                    if room <= 0:  # more input once the limit is reached
                        truncated = True
                        break
                    # Small steps: zlib allocates its whole max_length for each call.
                    out, pending = inflater.feed(pending, min(room, _STEP))
                    kept += out
                    size += len(out)
                    room = limit - size
            else:
                out = chunk[:room]
                truncated = len(chunk) > room
                kept += out
                size += len(out)
            if truncated:
                break
            if raw >= raw_limit:
                truncated = True
                break
    except zlib.error:
        return Body(bytes(kept) if keep_partial else b"", True, f"{encoding} (corrupt)")
    if inflater is not None and size >= limit and not inflater.finished:
        truncated = True
    return Body(b"" if truncated and not keep_partial else bytes(kept), truncated)


async def fetch(client: httpx.AsyncClient, method: str, url: str, *, limit: int,
                error_limit: int = ERROR_LIMIT, **options: Any) -> httpx.Response:
    """``client.request(method, url, **options)``, reading at most ``limit`` decoded bytes.

    ``limit`` applies to a 2xx answer; any other is only read for its
    message, up to ``error_limit``.

    The answer comes back fully read, holding that prefix (without
    ``Content-Encoding``, so ``.json()`` and ``.text`` work on it);
    ``extensions[TRUNCATED]`` says whether the body went on, and
    ``extensions[UNDECODED]`` names an encoding it was not decoded from.
    A 2xx body that went on comes back empty: only a whole one is of use.
    Use :func:`whole` for a document that must be complete.
    """
    request = client.build_request(method, url, **options)
    response = await client.send(request, stream=True)
    try:
        document = 200 <= response.status_code < 300
        body = await read_prefix(response, limit if document else error_limit,
                                 keep_partial=not document)
    finally:
        await response.aclose()
    headers = httpx.Headers([(k, v) for k, v in response.headers.multi_items()
                             if k.lower() not in ("content-encoding", "content-length",
                                                  "transfer-encoding")])
    return httpx.Response(
        response.status_code, headers=headers, content=body.data, request=request,
        extensions={**response.extensions, TRUNCATED: body.truncated,
                    UNDECODED: body.undecoded})


def whole(response: httpx.Response, what: str, limit: int) -> httpx.Response:
    """``response`` when :func:`fetch` read all of its body, else :class:`TooLarge`."""
    undecoded = response.extensions.get(UNDECODED)
    if undecoded:
        raise TooLarge(f"{what} came in Content-Encoding {undecoded}, which was not "
                       "requested; not read")
    if response.extensions.get(TRUNCATED):
        raise TooLarge(f"{what} is larger than {limit // 1024} KiB; not read")
    return response


def note(response: httpx.Response) -> str:
    """An error answer's text, or a note saying why it could not be read."""
    undecoded = response.extensions.get(UNDECODED)
    if undecoded:
        return Body(b"", True, undecoded).describe()
    return response.text
