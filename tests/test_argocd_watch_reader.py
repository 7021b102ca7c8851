"""The watch answer's reader: chunk framing cut by hand, batches while events flow.

The framing is table-tested over every split of the bytes; the reader itself
runs against a real HTTP server on loopback (plain and TLS) through urllib3,
as the daemon's watch does: events in a burst, a lone event after the burst
and after idling, an idle stream (counting the reading thread's wake-ups), a
connection cut mid-chunk, and an interrupt while the reader waits.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from doraforwarder.argocd import watch_reader
from doraforwarder.argocd.watch_reader import (
    BrokenFraming,
    BrokenStream,
    ChunkDecoder,
    chunked_lines,
    watch_lines,
)
from doraforwarder.testing.redis_server import TlsUnavailable, make_tls_files


def chunked(*chunks: bytes, end: bool = True) -> bytes:
    framed = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    return framed + (b"0\r\n\r\n" if end else b"")


EVENTS = [json.dumps({"type": "MODIFIED", "object": {"n": i, "pad": "x" * (i * 37)}}).encode()
          for i in range(6)]


def decode(pieces: list[bytes]) -> tuple[list[bytes], ChunkDecoder]:
    decoder = ChunkDecoder()
    lines = [line for piece in pieces for line in decoder.feed(piece)]
    rest = decoder.rest()
    return lines + ([rest] if rest is not None else []), decoder


# --- the framing: pure logic -----------------------------------------------------------------
@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 64, 1000, 1 << 20])
def test_every_split_of_the_bytes_gives_the_same_lines(cut: int) -> None:
    # One event per chunk (as an API server flushes them), plus a line across two chunks.
    body = chunked(*(e + b"\n" for e in EVENTS[:4]), EVENTS[4][:9], EVENTS[4][9:] + b"\n",
                   EVENTS[5] + b"\n")
    lines, decoder = decode([body[i:i + cut] for i in range(0, len(body), cut)])
    assert lines == EVENTS
    assert decoder.ended


@pytest.mark.parametrize(("pieces", "lines", "ended"), [
    # several lines in one chunk, a chunk extension
    ([f"{len(EVENTS[0]) + len(EVENTS[1]) + 2:x};ext=1\r\n".encode() + EVENTS[0] + b"\n"
      + EVENTS[1] + b"\n\r\n0\r\n\r\n"], EVENTS[:2], True),
    # blank lines are skipped
    ([chunked(b"\n\n" + EVENTS[0] + b"\n\n")], EVENTS[:1], True),
    # the connection dropped: a complete last line without its newline is kept...
    ([chunked(EVENTS[0] + b"\n", EVENTS[1], end=False)], EVENTS[:2], False),
    # ...a chunk cut short is not
    ([chunked(EVENTS[0] + b"\n", end=False) + b"5\r\nab"], EVENTS[:1], False),
    # nothing after the last chunk is read
    ([chunked(EVENTS[0] + b"\n") + b"garbage that is not ours"], EVENTS[:1], True),
    ([chunked(EVENTS[0] + b"\n"), b"3\r\nabc\r\n"], EVENTS[:1], True),
    # upper-case hex sizes
    ([f"{len(EVENTS[5]) + 1:X}\r\n".encode() + EVENTS[5] + b"\n\r\n"], EVENTS[5:], False),
])
def test_framing(pieces: list[bytes], lines: list[bytes], ended: bool) -> None:
    got, decoder = decode(pieces)
    assert got == lines
    assert decoder.ended is ended


@pytest.mark.parametrize("framed", [
    b"zz\r\n{}\r\n",               # not hex
    b"-2\r\n{}\r\n",               # negative
    b"9" * 2000,                   # a size line that never ends
    b"2\r\n{}XX3\r\n",             # a chunk not followed by CRLF
])
def test_a_broken_framing_is_refused(framed: bytes) -> None:
    with pytest.raises(BrokenFraming):
        decode([framed])


class Raw:
    """A connection's buffered reader that returns the given pieces, one per ``read1``."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)

    def read1(self, size: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


class Closable:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_broken_framing_ends_the_watch_as_a_broken_stream_and_closes_the_answer() -> None:
    answer = Closable()
    with pytest.raises(BrokenStream):
        list(chunked_lines(answer, Raw([chunked(EVENTS[0] + b"\n", end=False), b"zz\r\n"]), None))
    assert answer.closed


def test_the_answer_is_closed_at_its_end_not_reused() -> None:
    answer = Closable()
    assert list(chunked_lines(answer, Raw([chunked(EVENTS[0] + b"\n")]), None)) == EVENTS[:1]
    assert answer.closed, "http.client did not see the body end: the connection is not reused"


# --- a real HTTP server on loopback -----------------------------------------------------------
class StreamServer:
    """Answers one GET with a chunked body the test writes, chunk by chunk, plain or TLS."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tls = tls
        self.conn: socket.socket | None = None
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = conn
        self.accepted.set()

    def send(self, *events: bytes) -> None:
        """Each event as its own chunk and write (an API server flushes each)."""
        assert self.conn is not None
        for event in events:
            self.conn.sendall(chunked(event + b"\n", end=False))

    def end(self) -> None:
        assert self.conn is not None
        self.conn.sendall(b"0\r\n\r\n")

    def cut(self, partial: bytes = b"") -> None:
        """Close the connection, after ``partial`` (a chunk cut short)."""
        assert self.conn is not None
        if partial:
            self.conn.sendall(partial)
        self.conn.close()

    def close(self) -> None:
        self.listener.close()
        if self.conn is not None:
            self.conn.close()


class Reader:
    """``watch_lines`` on a urllib3 answer (what the kubernetes client returns) in a thread."""

    def __init__(self, server: StreamServer, ca: Path | None = None) -> None:
        scheme = "https" if ca is not None else "http"
        pool = (urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(ca))
                if ca is not None else urllib3.PoolManager())
        self.response: Any = pool.request(
            "GET", f"{scheme}://localhost:{server.port}/watch", preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=30), retries=False)
        server.accepted.wait(10)
        self.lines: queue.Queue[bytes | BaseException | None] = queue.Queue()
        self.tid = 0
        self.paths: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        try:
            lines = watch_lines(self.response)
            self.paths.append(getattr(lines, "__name__", "?"))
            for line in lines:
                self.lines.put(line)
        except BaseException as exc:  # handed to the test
            self.lines.put(exc)
        self.lines.put(None)

    def take(self, count: int, timeout: float = 10) -> list[bytes]:
        got = []
        for _ in range(count):
            item = self.lines.get(timeout=timeout)
            assert isinstance(item, bytes), item
            got.append(item)
        return got

    def end(self, timeout: float = 10) -> BaseException | None:
        """What the reader ended with: None when its lines simply ended."""
        item = self.lines.get(timeout=timeout)
        assert not isinstance(item, bytes), item
        self.thread.join(timeout)
        return item

    def wakeups(self) -> int:
        status = Path(f"/proc/self/task/{self.tid}/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("voluntary_ctxt_switches:"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    try:
        files = make_tls_files(tmp_path_factory.mktemp("tls"))
    except TlsUnavailable as exc:
        pytest.skip(str(exc))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)
    return context, files.ca_cert


@pytest.fixture(params=["plain", "tls"])
def stream(request: pytest.FixtureRequest) -> Iterator[tuple[StreamServer, Reader]]:
    if request.param == "tls":
        context, ca = request.getfixturevalue("tls")
        server = StreamServer(context)
    else:
        server, ca = StreamServer(), None
    reader = Reader(server, ca)
    try:
        yield server, reader
    finally:
        server.close()
        reader.response.release_conn()


BIG = [json.dumps({"type": "MODIFIED", "object": {"n": i, "pad": "y" * 5000}}).encode()
       for i in range(40)]


def burst(server: StreamServer, reader: Reader) -> None:
    """Enough events, close together, for the reader to take the stream as flowing."""
    server.send(*BIG)
    assert reader.take(len(BIG)) == BIG


class Waits:
    """Counts the reader's waits for a batch; ``inside`` is set while one lasts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.entered = threading.Event()
        self.inside = threading.Event()
        original = watch_reader.Gatherer.wait

        def wait(gatherer: watch_reader.Gatherer, seconds: float) -> bool:
            self.count += 1
            self.entered.set()
            self.inside.set()
            try:
                return original(gatherer, seconds)
            finally:
                self.inside.clear()

        monkeypatch.setattr(watch_reader.Gatherer, "wait", wait)


def test_a_burst_is_read_in_batches_and_a_lone_event_after_it_within_the_bound(
        stream: tuple[StreamServer, Reader], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_reader, "GATHER_WAIT", 0.2)
    waits = Waits(monkeypatch)
    server, reader = stream
    burst(server, reader)
    assert reader.paths == ["chunked_lines"], "the lean reader, not urllib3's"
    assert waits.entered.wait(10), "a flowing stream is read in batches"
    # 200 KB: a few batches of 64 KiB, however they are framed (TLS: one record per read)
    assert waits.count <= 10, f"{waits.count} waits for {len(BIG)} events"
    # Right after the burst the reader waits for more to pile up; this one comes alone and
    # must not wait for company beyond the bound (without it: forever, 64 KiB never come).
    server.send(EVENTS[0])
    assert reader.take(1) == EVENTS[:1]
    server.end()
    assert reader.end() is None


def test_an_idle_stream_costs_no_wakeups_and_a_lone_event_is_read_at_once(
        stream: tuple[StreamServer, Reader], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_reader, "GATHER_WAIT", 0.1)
    waits = Waits(monkeypatch)
    server, reader = stream
    burst(server, reader)
    time.sleep(0.5)  # the flow's last wait ends (one wake-up), then an ordinary read blocks
    before = reader.wakeups()
    time.sleep(1.0)  # idle: ten bounds long
    assert reader.wakeups() - before <= 1, "an idle watch must not wake its thread"
    counted = waits.count
    server.send(EVENTS[1])
    assert reader.take(1) == EVENTS[1:2]
    assert waits.count == counted, "a lone event after idling is read at once, not gathered"
    server.end()
    assert reader.end() is None


def test_a_cut_connection_ends_the_lines_after_the_last_whole_event(
        stream: tuple[StreamServer, Reader]) -> None:
    server, reader = stream
    burst(server, reader)
    server.send(EVENTS[2])
    server.cut(partial=f"{len(EVENTS[3]) + 1:x}\r\n".encode() + EVENTS[3][:10])
    assert reader.take(1) == EVENTS[2:3]
    ended = reader.end()
    assert ended is None or isinstance(ended, OSError), ended  # an EOF, or TLS's EOF error


def test_an_interrupt_ends_a_reader_waiting_for_a_batch(
        stream: tuple[StreamServer, Reader], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_reader, "GATHER_WAIT", 60.0)
    waits = Waits(monkeypatch)
    server, reader = stream
    burst(server, reader)
    # The burst is in: the stream flows, so the reader now waits for 64 KiB, for a minute.
    assert waits.inside.wait(10)
    reader.response.shutdown()  # what ApplicationWatcher.interrupt does
    started = time.monotonic()
    ended = reader.end(timeout=30)
    assert ended is None or isinstance(ended, OSError), ended
    assert time.monotonic() - started < 30
