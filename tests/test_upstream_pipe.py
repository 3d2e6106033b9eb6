"""The upstream body piped through aiohttp's read callbacks (`Stream.pipe`): what the handler task no longer
does per read must still happen — backpressure to Google for a slow client, the stall cut, the idle-read
timeout measured from the last read — over real sockets, agfast in front of the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import ServerThread
from stack import agfast_on, generations, start_sim

from agfast.config import Config
from agfast.sim import GoogleSimulator
from agfast.upstream import client as upstream
from agfast.upstream.client import UpstreamClient
from agfast.upstream.gateway import GO_ON, HELD_LIMIT, Gateway, Stream

MODEL = "gemini-2.5-flash"
# The echoed prompt: far more than the socket buffers and agfast's write high-water mark hold between them.
BIG_TEXT = "x" * (3 * 1024 * 1024)
# Events the big answer comes in (each ~10 KB, one write of the simulator each).
BIG_CHUNKS = 300
# The client connection's kernel buffers, each side.
SOCKET_BUFFER = 16 * 1024


@pytest.fixture(scope="module")
def big_sim() -> Iterator[GoogleSimulator]:
    with start_sim(accounts=1, chunks=BIG_CHUNKS) as thread:
        yield thread


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[GoogleSimulator]:
    """A model writing its 5 events 0.3 s apart."""
    with start_sim(accounts=1, chunks=5, chunk_delay=0.3) as thread:
        yield thread


def chat(text: str, stream: bool) -> bytes:
    body = orjson.dumps({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": text}]})
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )


def small_window(st: ServerThread) -> socket.socket:
    """A client connection whose socket buffers are small on both ends (no autotuning), so a client that does not
    read fills them at once and what agfast holds beyond them is in its own buffers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", st.port))

    def shrink() -> int:
        for conn in st.server.state.connections:
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        return len(st.server.state.connections)

    deadline = time.monotonic() + 5
    while st.call(shrink) != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """One whole answer (chunked, or with a content-length), or what came before the connection closed."""
    out = bytearray()
    while True:
        head, found, body = out.partition(b"\r\n\r\n")
        length = re.search(rb"content-length: (\d+)", head.lower()) if found else None
        if out.endswith(b"0\r\n\r\n") or (length is not None and len(body) >= int(length[1])):
            return bytes(out)
        data = sock.recv(1 << 20)
        if not data:
            return bytes(out)
        out += data


def dechunk(raw: bytes) -> bytes:
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    out = bytearray()
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def streamed_text(body: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The content the OpenAI stream carried, and its error events."""
    text, errors = [], []
    for line in body.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        doc = orjson.loads(line[6:])
        if "error" in doc:
            errors.append(doc["error"])
            continue
        for choice in doc.get("choices") or ():
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text), errors


def upstream_reading(st: ServerThread) -> list[bool]:
    """Whether each upstream connection in use is reading from Google."""

    def reading() -> list[bool]:
        connector = st.app.client.session.connector
        return [p.transport.is_reading() for p in connector._acquired if p.transport is not None]  # type: ignore[union-attr]

    return st.call(reading)  # type: ignore[no-any-return]


def client_buffered(st: ServerThread) -> int:
    """Bytes agfast holds for its clients, unsent."""
    return st.call(  # type: ignore[no-any-return]
        lambda: sum(c.transport.get_write_buffer_size() for c in st.server.state.connections if c.transport)
    )


def test_a_client_that_does_not_read_pauses_google_and_later_gets_every_byte(
    big_sim: GoogleSimulator, tmp_path: Path
) -> None:
    with agfast_on(big_sim, tmp_path) as st, contextlib.closing(small_window(st)) as sock:
        sock.sendall(chat(BIG_TEXT, stream=True))
        deadline = time.monotonic() + 10
        while upstream_reading(st) != [False] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream_reading(st) == [False], "the upstream connection keeps reading for a client that does not"
        time.sleep(0.5)
        assert upstream_reading(st) == [False]
        # Bounded: the write high-water mark plus one upstream read's worth of converted events.
        assert client_buffered(st) < 512 * 1024
        text, errors = streamed_text(dechunk(read_all(sock)))
        assert errors == []
        assert text == f"[{MODEL}] echo: {BIG_TEXT}"
        assert generations(big_sim)[-1].finished


def test_a_client_that_never_reads_is_cut_and_google_let_go(big_sim: GoogleSimulator, tmp_path: Path) -> None:
    with agfast_on(big_sim, tmp_path, client_stall_timeout=1.0) as st, contextlib.closing(small_window(st)) as s:
        s.sendall(chat(BIG_TEXT, stream=True))
        deadline = time.monotonic() + 10
        while upstream_reading(st) != [False] and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        while st.server.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert st.server.in_flight == 0
        assert 0.8 < time.monotonic() - started < 5
        assert upstream_reading(st) == []  # the upstream stream went with the handler
        with contextlib.suppress(OSError):
            raw = read_all(s)
            assert not raw.endswith(b"0\r\n\r\n")  # cut, not ended


def test_events_slower_than_nothing_but_within_the_idle_timeout_all_arrive(
    slow_sim: GoogleSimulator, tmp_path: Path
) -> None:
    """The idle-read clock restarts at every read: 5 events 0.3 s apart outlast a 0.7 s idle timeout, fine."""
    with agfast_on(slow_sim, tmp_path, stream_idle_timeout=0.7) as st, contextlib.closing(small_window(st)) as s:
        s.sendall(chat("tell me slowly", stream=True))
        text, errors = streamed_text(dechunk(read_all(s)))
        assert errors == []
        assert text == f"[{MODEL}] echo: tell me slowly"


@pytest.mark.parametrize("stream", [True, False])
def test_google_falling_silent_mid_stream_is_an_idle_timeout(
    slow_sim: GoogleSimulator, tmp_path: Path, stream: bool
) -> None:
    """After the first event, a gap longer than stream_idle_timeout breaks the stream: in-stream for a streaming
    client, a 502 for a collected one (whose one restart meets the same silence)."""
    with agfast_on(slow_sim, tmp_path, stream_idle_timeout=0.15) as st, contextlib.closing(small_window(st)) as s:
        started = time.monotonic()
        s.sendall(chat("tell me slowly", stream=stream))
        raw = read_all(s)
        assert time.monotonic() - started < 1.5  # the whole answer would take 1.2 s per attempt
        if stream:
            text, errors = streamed_text(dechunk(raw))
            assert text != f"[{MODEL}] echo: tell me slowly"
            assert len(errors) == 1 and "interrupted" in errors[0]["message"]
        else:
            assert raw.startswith(b"HTTP/1.1 502")
            assert b"interrupted" in raw


def upstream_connections(st: ServerThread) -> tuple[int, int]:
    """The direct session's upstream connections: (pooled idle, in use)."""

    def count() -> tuple[int, int]:
        connector = st.app.client.session.connector
        return sum(len(c) for c in connector._conns.values()), len(connector._acquired)  # type: ignore[union-attr]

    return st.call(count)  # type: ignore[no-any-return]


def pooled_protocols(st: ServerThread) -> set[int]:
    def ids() -> set[int]:
        connector = st.app.client.session.connector
        return {id(proto) for conns in connector._conns.values() for proto, _ in conns}  # type: ignore[union-attr]

    return st.call(ids)  # type: ignore[no-any-return]


@pytest.mark.parametrize("stream", [True, False])
def test_a_piped_answer_leaves_its_upstream_connection_to_the_next_request(
    slow_sim: GoogleSimulator, big_sim: GoogleSimulator, tmp_path: Path, stream: bool
) -> None:
    """One keep-alive upstream connection serves request after request: a piped answer read to its end hands the
    connection back to the pool, un-piped (the next answer on it is not the last one's), whether the events came
    in one read or in several."""
    for sim, text in ((big_sim, "many events"), (slow_sim, "events apart")):
        with agfast_on(sim, tmp_path, stream_idle_timeout=5.0) as st, contextlib.closing(small_window(st)) as s:
            seen: set[int] = set()
            for _ in range(3):
                s.sendall(chat(text, stream=stream))
                raw = read_all(s)
                assert raw.startswith(b"HTTP/1.1 200")
                if stream:
                    assert streamed_text(dechunk(raw)) == (f"[{MODEL}] echo: {text}", [])
                else:
                    assert orjson.loads(raw.partition(b"\r\n\r\n")[2])["choices"][0]["message"]["content"] == (
                        f"[{MODEL}] echo: {text}"
                    )
                assert upstream_connections(st) == (1, 0)
                seen |= pooled_protocols(st)
            assert len(seen) == 1, "each request opened a new upstream connection"

            def sinks() -> list[object]:
                connector = st.app.client.session.connector
                return [p.sink for conns in connector._conns.values() for p, _ in conns]  # type: ignore[union-attr]

            assert st.call(sinks) == [None]


# -- the answer read straight from aiohttp's parsed message, against a scripted raw upstream ----------------------

# What the scripted upstream writes per request: the pieces of its answer, each written on its own (and its socket
# closed after the last when the script says so).
Script = tuple[list[bytes], bool]


class RawUpstream:
    """A keep-alive HTTP/1.1 server on loopback answering each request with the next script: (connection, request)
    per request seen, so a test tells which connection each call came on."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.seen: list[int] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1internal"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
                await reader.readexactly(length)
                self.seen.append(id(writer))
                pieces, close = self.scripts.pop(0)
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.02)  # each piece its own read on the other side
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return  # the client went, or the test ended
        finally:
            writer.close()


def chunked(*pieces: bytes) -> list[bytes]:
    """HTTP chunks, one per piece, then the terminator (written on its own)."""
    return [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces] + [b"0\r\n\r\n"]


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def event(text: str) -> bytes:
    doc = {"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]}}
    return b"data: " + orjson.dumps(doc) + b"\r\n\r\n"


def on_raw(scripts: list[Script], test: Callable[[UpstreamClient, RawUpstream, list[str]], Awaitable[None]],
           tmp_path: Path, endpoints: int = 1) -> None:  # fmt: skip
    """Run `test` with a client whose `endpoints` endpoints are all one raw upstream (each under its own path),
    answering the scripts in turn."""

    async def main() -> None:
        raw = RawUpstream(scripts)
        url = await raw.start()
        urls = [url + "x" * i for i in range(endpoints)]
        # A stalled read fails in seconds rather than the default idle timeout's minutes.
        client = UpstreamClient(Config(data_dir=tmp_path, upstream_endpoints=urls, stream_idle_timeout=5.0))
        try:
            await test(client, raw, urls)
        finally:
            await client.close()
            assert raw.server is not None
            raw.server.close()

    asyncio.run(main())


async def first_event(client: UpstreamClient, pause: float = 0.0) -> Stream | tuple[int, bytes] | None:
    """One streamGenerateContent call up to its first event, the gateway's way (`Gateway._first_event`), `pause`
    seconds after its head came (what arrives meanwhile waits in aiohttp's reader)."""
    answer = await client.call("streamGenerateContent", b"{}", "ya29.t", project="p", stream=True)
    await asyncio.sleep(pause)
    gateway = Gateway(client.config, None, client)  # type: ignore[arg-type]
    return await gateway._first_event(answer, None)  # type: ignore[arg-type]


def test_an_upstream_that_closes_mid_head_is_a_fallback_to_the_next_endpoint(tmp_path: Path) -> None:
    scripts: list[Script] = [
        ([b"HTTP/1.1 200 OK\r\nContent-Type: text/ev"], True),  # the head cut off
        ([SSE_HEAD + chunked(event("from the second"))[0], *chunked(event("from the second"))[1:]], False),
    ]

    async def test(client: UpstreamClient, raw: RawUpstream, urls: list[str]) -> None:
        answer = await client.call("streamGenerateContent", b"{}", "ya29.t", project="p", stream=True)
        assert (answer.endpoint, answer.fallbacks) == (urls[1], 1)
        assert b"from the second" in await answer.response.read()

    on_raw(scripts, test, tmp_path, endpoints=2)


def test_an_upstream_that_closes_mid_head_on_its_only_endpoint_is_unreachable(tmp_path: Path) -> None:
    async def test(client: UpstreamClient, raw: RawUpstream, urls: list[str]) -> None:
        with pytest.raises(upstream.TransportError, match="ServerDisconnectedError"):
            await client.call("streamGenerateContent", b"{}", "ya29.t", project="p", stream=True)

    on_raw([([b"HTTP/1.1 200 OK\r\nContent-Le"], True)], test, tmp_path)


@pytest.mark.parametrize("status", [429, 503])
def test_an_error_answer_in_pieces_is_read_whole_and_its_connection_kept(tmp_path: Path, status: int) -> None:
    body = orjson.dumps({"error": {"code": status, "message": "x" * 5000, "status": "RESOURCE_EXHAUSTED"}})
    head = b"HTTP/1.1 %d Nope\r\nContent-Type: application/json\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
    scripts: list[Script] = [
        ([head % status, *chunked(body[:100], body[100:3000], body[3000:])], False),
        ([SSE_HEAD, *chunked(event("next"))], False),
    ]

    async def test(client: UpstreamClient, raw: RawUpstream, urls: list[str]) -> None:
        answer = await client.call("streamGenerateContent", b"{}", "ya29.t", project="p", stream=True)
        assert answer.status == status
        assert answer.response.headers.get("Retry-After") == "7"
        assert await answer.response.read() == body
        opened = await first_event(client)
        assert isinstance(opened, Stream) and opened.first == [event("next")[6:-4]]
        opened.close()
        assert raw.seen[0] == raw.seen[1], "the error answer's connection was not reused"

    on_raw(scripts, test, tmp_path)


def test_a_first_read_past_aiohttps_buffer_mark_is_piped_whole(tmp_path: Path) -> None:
    """Head and ~600 KB of events in one write, the first event awaited a while after the head: aiohttp's reader
    pauses its parser (and the transport) above 128 KiB buffered; the pipe takes what was buffered and resumes the
    parser into itself, so every event arrives, in order."""
    texts = [f"{i:04d}" + "y" * 6000 for i in range(100)]
    pieces = chunked(*(event(t) for t in texts))
    scripts: list[Script] = [([SSE_HEAD + b"".join(pieces)], False), ([SSE_HEAD, *chunked(event("next"))], False)]

    async def test(client: UpstreamClient, raw: RawUpstream, urls: list[str]) -> None:
        opened = await first_event(client, pause=0.3)
        assert isinstance(opened, Stream)
        got: list[bytes] = []

        def take(batch: list[bytes]) -> None:
            got.extend(batch)

        assert await opened.pipe(take) is GO_ON
        assert [orjson.loads(d)["response"]["candidates"][0]["content"]["parts"][0]["text"] for d in got] == texts
        opened.close()
        again = await first_event(client)  # on the same connection, back in the pool un-piped
        assert isinstance(again, Stream) and again.first == [event("next")[6:-4]]
        again.close()
        assert raw.seen[0] == raw.seen[1]

    on_raw(scripts, test, tmp_path)


def test_a_body_held_while_no_consumer_awaits_pauses_google(tmp_path: Path) -> None:
    """Between the first event and the answer's pump the pipe holds what arrives; a handler that awaits there
    must not pile up Google's answer in memory: past HELD_LIMIT Google's transport is paused, and resumed (every
    event arriving, in order) once the answer is pumped."""
    texts = [f"{i:04d}" + "z" * 60_000 for i in range(60)]  # ~3.6 MB after the first event, one write each
    scripts: list[Script] = [([SSE_HEAD + chunked(event("first"))[0], *chunked(*(event(t) for t in texts))], False)]

    async def test(client: UpstreamClient, raw: RawUpstream, urls: list[str]) -> None:
        opened = await first_event(client)
        assert isinstance(opened, Stream) and opened.reading is not None
        await asyncio.sleep(2.0)  # the writes take ~1.2 s unpaused
        held = sum(map(len, opened.reading.parts))
        assert held < 2 * HELD_LIMIT, f"{held} bytes held while no consumer awaited them"
        assert opened.paused
        got: list[bytes] = []

        def take(batch: list[bytes]) -> None:
            got.extend(batch)

        assert await opened.pipe(take) is GO_ON
        texts_got = [orjson.loads(d)["response"]["candidates"][0]["content"]["parts"][0]["text"] for d in got]
        assert texts_got == ["first", *texts]
        opened.close()

    on_raw(scripts, test, tmp_path)
