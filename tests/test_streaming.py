"""Streaming answers through the HTTP shell: SSE framing (both twins), backpressure, disconnects, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from conftest import sse_module
from helpers import Reader, ServerThread, connect, encode, make_config, request

from agfast.http.errors import Family
from agfast.http.request import Request
from agfast.http.response import CT_TEXT, Response
from agfast.http.router import GET, Router

CHUNK = 64 * 1024
BIG_CHUNKS = 320  # 20 MiB: far more than loopback socket buffers hold


class Probe:
    """What the test handlers observed, shared with the test thread."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.started = threading.Event()
        self.max_buffer = 0
        self.chunks_sent = 0
        self.finished = threading.Event()


def streaming_router(sse: ModuleType, probe: Probe) -> Router:
    async def events(req: Request, resp: Response) -> None:
        resp.start()
        for i in range(5):
            resp.write(sse.frame_event(b'{"n":%d}' % i, b"tick"))
            await asyncio.sleep(0.01)
        resp.write(sse.frame_event(b"[DONE]"))
        resp.end()

    async def big(req: Request, resp: Response) -> None:
        resp.start(200, CT_TEXT)
        transport = resp.proto.transport
        assert transport is not None
        for i in range(BIG_CHUNKS):
            resp.write(bytes([65 + i % 26]) * CHUNK)
            probe.chunks_sent = i + 1
            probe.max_buffer = max(probe.max_buffer, transport.get_write_buffer_size())
            if resp.paused:
                await resp.drain()
        resp.end()
        probe.finished.set()

    async def slow(req: Request, resp: Response) -> None:
        resp.start()
        probe.started.set()
        try:
            for i in range(1000):
                resp.write(sse.frame_event(b"%d" % i))
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise
        resp.end()

    async def sleepy(req: Request, resp: Response) -> None:
        probe.started.set()
        await asyncio.sleep(0.6)
        resp.send(200, b'{"slept":true}')
        probe.finished.set()

    async def never(req: Request, resp: Response) -> None:
        probe.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise

    async def quiet(req: Request, resp: Response) -> None:
        resp.start()
        resp.keep_alive(1.0)
        resp.write(sse.frame_event(b"first"))
        await asyncio.sleep(2.6)
        resp.write(sse.frame_event(b"second"))
        resp.end()

    async def tail(req: Request, resp: Response) -> None:
        resp.start()
        resp.write(b"first;")
        resp.defer(b"held;")
        resp.end(b"last")

    r = Router()
    r.add((GET,), "/tail", tail, Family.OPENAI)
    r.add((GET,), "/quiet", quiet, Family.OPENAI)
    r.add((GET,), "/healthz", lambda req, resp: resp.send(200, b"{}"), Family.OPENAI, health=True)
    r.add((GET,), "/events", events, Family.OPENAI)
    r.add((GET,), "/big", big, Family.OPENAI)
    r.add((GET,), "/slow", slow, Family.OPENAI)
    r.add((GET,), "/sleepy", sleepy, Family.OPENAI)
    r.add((GET,), "/never", never, Family.OPENAI)
    return r


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def stream_server(tmp_path: Path, sse: ModuleType, probe: Probe) -> Iterator[ServerThread]:
    cfg = make_config(tmp_path, auth_mode="off", shutdown_timeout=1.0)
    with ServerThread(cfg, streaming_router(sse, probe)) as st:
        yield st


def test_sse_events_arrive_as_chunks(stream_server: ServerThread) -> None:
    reply = request(stream_server.port, "GET", "/events")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.headers["x-accel-buffering"] == "no"
    assert reply.chunks[0] == b'event: tick\ndata: {"n":0}\n\n'  # one event per chunk, flushed as written
    decoder = sse_module("py").SSEDecoder()
    events = decoder.feed(reply.body)
    assert events == [(b"tick", b'{"n":%d}' % i) for i in range(5)] + [(b"", b"[DONE]")]


def test_stream_then_next_request_on_same_connection(stream_server: ServerThread) -> None:
    with contextlib.closing(connect(stream_server.port)) as sock:
        sock.sendall(encode("GET", "/events") + encode("GET", "/healthz"))
        reader = Reader(sock)
        assert reader.read().body.endswith(b"data: [DONE]\n\n")
        assert reader.read().status == 200


def test_http10_stream_ends_with_close(stream_server: ServerThread) -> None:
    with contextlib.closing(connect(stream_server.port)) as sock:
        sock.sendall(b"GET /events HTTP/1.0\r\n\r\n")
        reply = Reader(sock).read()
    assert "transfer-encoding" not in reply.headers
    assert reply.headers["connection"] == "close"
    assert reply.body.endswith(b"data: [DONE]\n\n")


def test_slow_reader_applies_backpressure(stream_server: ServerThread, probe: Probe) -> None:
    with contextlib.closing(connect(stream_server.port, timeout=30)) as sock:
        sock.sendall(encode("GET", "/big"))
        time.sleep(0.8)  # not reading: kernel buffers fill, then the handler must wait
        stalled_at = probe.chunks_sent
        assert stalled_at < BIG_CHUNKS
        assert not probe.finished.is_set()
        reply = Reader(sock).read()
    assert probe.finished.wait(5)
    assert len(reply.body) == CHUNK * BIG_CHUNKS
    for i in (0, 1, 25, BIG_CHUNKS - 1):
        assert reply.body[i * CHUNK : (i + 1) * CHUNK] == bytes([65 + i % 26]) * CHUNK
    # Bounded memory: never more than the high-water mark plus one chunk queued in user space.
    assert probe.max_buffer <= 64 * 1024 + CHUNK + 64


def test_client_that_stops_reading_is_cut_after_the_stall_timeout(
    tmp_path: Path, sse: ModuleType, probe: Probe
) -> None:
    """A stalled reader must not hold its handler (and its upstream stream) forever."""
    cfg = make_config(tmp_path, auth_mode="off", client_stall_timeout=1.0)
    with ServerThread(cfg, streaming_router(sse, probe)) as st:
        with contextlib.closing(connect(st.port, timeout=10)) as sock:
            sock.sendall(encode("GET", "/big"))
            deadline = time.monotonic() + 10
            while probe.chunks_sent == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            started = time.monotonic()
            # Not reading: the kernel buffers fill, the handler waits in drain(), then the server hangs up.
            while st.server.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
            assert st.server.in_flight == 0
            assert 0.8 < time.monotonic() - started < 5
            assert not probe.finished.is_set()
            assert Reader(sock).closed()
        assert request(st.port, "GET", "/healthz").status == 200


def test_client_disconnect_cancels_handler(stream_server: ServerThread, probe: Probe) -> None:
    with contextlib.closing(connect(stream_server.port)) as sock:
        sock.sendall(encode("GET", "/slow"))
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        assert probe.started.wait(2)
    assert probe.cancelled.wait(2)
    assert request(stream_server.port, "GET", "/healthz").status == 200


def test_graceful_shutdown_finishes_in_flight_request(stream_server: ServerThread, probe: Probe) -> None:
    with contextlib.closing(connect(stream_server.port)) as sock:
        sock.sendall(encode("GET", "/sleepy"))
        assert probe.started.wait(2)
        stopper = threading.Thread(target=stream_server.stop)
        stopper.start()
        reply = Reader(sock).read()
        assert reply.status == 200
        assert reply.json() == {"slept": True}
        assert reply.headers["connection"] == "close"
        stopper.join(10)
    assert probe.finished.is_set()
    with pytest.raises(ConnectionRefusedError):
        connect(stream_server.port, timeout=1)


def test_shutdown_wait_is_bounded(stream_server: ServerThread, probe: Probe) -> None:
    with contextlib.closing(connect(stream_server.port)) as sock:
        sock.sendall(encode("GET", "/never"))
        assert probe.started.wait(2)
        started = time.monotonic()
        stream_server.stop()
        assert time.monotonic() - started < 4  # shutdown_timeout is 1 s
        assert probe.cancelled.is_set()
        assert Reader(sock).closed(timeout=2)


def test_idle_connections_close_at_shutdown(stream_server: ServerThread) -> None:
    with contextlib.closing(connect(stream_server.port)) as sock:
        sock.sendall(encode("GET", "/healthz"))
        reader = Reader(sock)
        assert reader.read().status == 200
        started = time.monotonic()
        stream_server.stop()
        assert reader.closed(timeout=2)
        assert time.monotonic() - started < 1.5


def test_silent_stream_gets_keep_alive_pings(stream_server: ServerThread) -> None:
    reply = request(stream_server.port, "GET", "/quiet")
    events = reply.body.split(b"\n\n")
    assert events[0] == b"data: first"
    assert events[-2] == b"data: second"
    pings = [e for e in events[1:-2] if e == b": ping"]
    assert 1 <= len(pings) <= 3
    assert pings == events[1:-2]


def test_pipelined_flood_pauses_reading_then_all_answered(stream_server: ServerThread, probe: Probe) -> None:
    """Input piling up behind a busy request stops being read (bounded memory), and resumes after it."""
    flood = encode("GET", "/healthz") * 12_000  # ~400 KB of pipelined requests behind a slow one
    with contextlib.closing(connect(stream_server.port, timeout=30)) as sock:
        sock.sendall(encode("GET", "/sleepy"))
        assert probe.started.wait(2)
        sender = threading.Thread(target=sock.sendall, args=(flood,))
        sender.start()
        time.sleep(0.3)
        state = stream_server.server.state
        assert state is not None
        paused = stream_server.call(lambda: [c.read_paused for c in state.connections])
        assert paused == [True]
        reader = Reader(sock)
        assert reader.read().json() == {"slept": True}
        for _ in range(12_000):
            assert reader.read().status == 200
        sender.join(10)


def test_deferred_tail_leaves_with_the_end(stream_server: ServerThread) -> None:
    reply = request(stream_server.port, "GET", "/tail")
    assert reply.chunks == [b"first;", b"held;last"]
