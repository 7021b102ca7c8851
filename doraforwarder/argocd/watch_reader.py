"""The lines of a watch answer, read in batches while events flow.

An API server flushes every watch event as its own HTTP chunk, as soon as it
happens. Read as they come, each event wakes the watch thread: a ``poll``
return, a ``recv``, the GIL taken again, and the scheduler's switch, which
together cost the daemon about as much as decoding the event (a third of the
watch thread's time was the kernel waking it, ``bench/README.md``).

So while events flow, the thread lets them pile up before reading: it raises
the socket's receive low-water mark (``SO_RCVLOWAT``, honoured by ``poll`` on
Linux) to :data:`GATHER_BYTES` and waits at most :data:`GATHER_WAIT` seconds,
then reads everything that is there in one go (for TLS, record after record
while the socket holds more). An event that arrives while the stream flows is
read at most :data:`GATHER_WAIT` after the batch before it was handled. The
stream counts as flowing when a read comes less than :data:`GATHER_WAIT`
after the one before; a wait that ends with nothing to read ends the flow,
and the thread then blocks in an ordinary read (low-water mark 1), so an idle
watch costs no wake-up at all and a lone event is read the moment it arrives.
Connection loss, the server's end of the watch, the read timeout and
:meth:`~doraforwarder.argocd.watcher.ApplicationWatcher.interrupt` (a socket
shutdown) all end a wait at once, and the read that follows sees them as before.

The chunk framing is cut here (:class:`ChunkDecoder`), from whatever one read
returned (urllib3 reads a chunk's size line and its body separately, through
layers that only cost here). This applies to an unencoded chunked answer of an
``http.client`` response nothing was read from yet; anything else (gzip, a
``Content-Length`` body, another response type) is read through urllib3.
"""

from __future__ import annotations

import select
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from typing import Any

GATHER_BYTES = 65536
"""Wake when this much has arrived (one read's worth)..."""
GATHER_WAIT = 0.05
"""...or after this many seconds: the most a flowing event waits for company."""
READ_SIZE = 65536
MAX_CHUNK_HEADER = 1024
"""A chunk-size line longer than this is not HTTP: the stream is broken."""


class BrokenFraming(ValueError):
    """The bytes are not HTTP chunked framing."""


class ChunkDecoder:
    """Cuts HTTP/1.1 chunked framing and splits the body into lines, across any reads.

    Copies as little as it can: an API server sends each event as one chunk
    holding one line, and such a chunk becomes its line with one copy (no
    joining of chunks, no splitting of a joined body); a chunk that a read cut
    in two is completed with just the bytes it lacks.
    """

    def __init__(self) -> None:
        self._framed = b""  # an unfinished chunk (header or body) from the reads before
        self._partial = b""  # body after the last newline: the start of a line
        self.ended = False
        """The last chunk (size 0) was seen: the body is complete."""

    def feed(self, data: bytes) -> list[bytes]:
        """The complete, non-empty lines ``data`` finishes (raises :class:`BrokenFraming`)."""
        lines: list[bytes] = []
        if self.ended:
            return lines
        position = 0
        pending, self._framed = self._framed, b""
        if pending:
            lacking = _chunk_length(pending) - len(pending)
            if 0 < lacking <= len(data):  # the header is in: complete that one chunk alone
                if self._cut(pending + data[:lacking], 0, lines) != lacking + len(pending):
                    raise BrokenFraming("chunk framing lost")  # pragma: no cover - cannot happen
                position = lacking
            else:  # a header cut in two, or a chunk longer than this read: rare
                data = pending + data
        if not self.ended:
            self._framed = data[self._cut(data, position, lines):]
        return lines

    def _cut(self, framed: bytes, position: int, lines: list[bytes]) -> int:
        """Appends the lines of the complete chunks from ``position``; returns where they end."""
        while True:
            size_end = framed.find(b"\r\n", position)
            if size_end < 0:
                if len(framed) - position > MAX_CHUNK_HEADER:
                    raise BrokenFraming("chunk size line too long")
                return position
            header = framed[position:size_end]
            try:
                size = int(header.split(b";", 1)[0], 16)
            except ValueError:
                raise BrokenFraming(f"bad chunk size line: {header[:40]!r}") from None
            if size < 0:
                raise BrokenFraming(f"bad chunk size line: {header[:40]!r}")
            start = size_end + 2
            if size == 0:
                self.ended = True
                return start
            end = start + size
            if end + 2 > len(framed):
                return position  # the chunk is not all in yet
            if not framed.startswith(b"\r\n", end):
                raise BrokenFraming("chunk not followed by CRLF")
            if (not self._partial and framed[end - 1] == 10  # b"\n"
                    and framed.find(b"\n", start, end - 1) < 0):
                if end - 1 > start:
                    lines.append(framed[start:end - 1])  # one chunk, one line: the usual
            else:
                body = framed[start:end]
                pieces = (self._partial + body if self._partial else body).split(b"\n")
                self._partial = pieces.pop()
                lines.extend(piece for piece in pieces if piece)
            position = end + 2

    def rest(self) -> bytes | None:
        """An unterminated last line, once the stream is over (None if there is none)."""
        partial, self._partial = self._partial, b""
        return partial if partial.strip() else None


def _chunk_length(framed: bytes) -> int:
    """Header, body and CRLF of the chunk ``framed`` starts with; 0 while its header is not in."""
    size_end = framed.find(b"\r\n")
    if size_end < 0:
        return 0
    try:
        size = int(framed[:size_end].split(b";", 1)[0], 16)
    except ValueError:
        return 0  # the general path names the fault
    return size_end + 2 + size + 2 if size > 0 else 0


class Gatherer:
    """Waits on one connected socket until a batch is there; see the module's docstring."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._tls = sock if isinstance(sock, ssl.SSLSocket) else None
        self.tls = self._tls is not None
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    def wait(self, seconds: float) -> bool:
        """Until :data:`GATHER_BYTES` are in or ``seconds`` passed: whether anything is readable."""
        if self._tls is not None and self._tls.pending():
            return True
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, GATHER_BYTES)
        try:
            if self._poll.poll(seconds * 1000.0):
                return True
        finally:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        return self.readable()

    def readable(self) -> bool:
        """Whether a read would return at once (data, the end, or an error)."""
        return (self._tls is not None and self._tls.pending() > 0) or bool(self._poll.poll(0))


def gatherer_for(response: Any) -> Gatherer | None:
    """A :class:`Gatherer` on the response's socket, or None where it does not apply."""
    if not sys.platform.startswith("linux"):
        return None  # SO_RCVLOWAT in poll() is Linux's
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        return None  # a proxy's TLS-in-TLS transport, a test double: read as they come
    try:
        return Gatherer(sock)
    except (OSError, ValueError):
        return None


def chunked_source(response: Any) -> Any:
    """The buffered reader to cut a chunked body from, or None when urllib3 must read it.

    Only an unencoded chunked body of an ``http.client`` response nothing was
    read from yet.
    """
    original = getattr(response, "_fp", None)
    encoding = str(response.headers.get("content-encoding", "") or "").lower()
    if (getattr(response, "chunked", False) and encoding in ("", "identity")
            and original is not None and getattr(original, "chunked", False)
            and getattr(original, "chunk_left", 0) is None
            and getattr(original, "fp", None) is not None):
        return original.fp
    return None


def chunked_lines(response: Any, raw: Any, gatherer: Gatherer | None,
                  wait: float | None = None) -> Iterator[bytes]:
    """Lines of a chunked body read from the connection's buffered reader ``raw``.

    The last chunk (size 0) ends the body; the connection is then closed
    rather than reused, since ``http.client`` did not see the body end. A
    connection closed mid-body ends the lines (the watcher resumes); a
    complete last line without its newline is still handed over.
    """
    decoder = ChunkDecoder()
    try:
        for data in _reads(raw, gatherer, GATHER_WAIT if wait is None else wait):
            try:
                lines = decoder.feed(data)
            except BrokenFraming as exc:
                raise BrokenStream(str(exc)) from None
            yield from lines
            if decoder.ended:
                break
        rest = decoder.rest()
        if rest is not None:
            yield rest
    finally:
        response.close()


def _reads(raw: Any, gatherer: Gatherer | None, wait: float) -> Iterator[bytes]:
    """What ``raw.read1`` returns, read in batches while the stream flows (module docstring)."""
    flowing = False
    last = float("-inf")
    while True:
        if flowing:
            assert gatherer is not None
            flowing = gatherer.wait(wait)  # nothing came: block in an ordinary read instead
        data = raw.read1(READ_SIZE)  # what has arrived, never waiting for a full read
        if not data:
            return
        now = time.monotonic()
        if not flowing:  # a blocking read: does it follow the one before closely?
            flowing = gatherer is not None and now - last < wait
        last = now
        yield data
        # TLS hands over one record per read, a plain socket up to READ_SIZE: take
        # the rest of what is there now before waiting again.
        while (flowing and gatherer is not None and (gatherer.tls or len(data) == READ_SIZE)
               and gatherer.readable()):
            data = raw.read1(READ_SIZE)
            if not data:
                return
            yield data


def watch_lines(response: Any) -> Iterator[bytes]:
    """The lines of a watch answer: cut here when it is plain chunked, else read by urllib3."""
    raw = chunked_source(response)
    if raw is not None:
        return chunked_lines(response, raw, gatherer_for(response))
    return urllib3_lines(response)


def urllib3_lines(response: Any) -> Iterator[bytes]:
    """Split a streamed body into lines as urllib3 hands its chunks over."""
    rest = b""
    for chunk in response.stream(65536, decode_content=True):
        if rest:
            chunk = rest + chunk
        lines = chunk.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line:
                yield line
    if rest.strip():
        yield rest


class BrokenStream(Exception):
    """The watch stream said something we cannot follow; resume from the last version."""
