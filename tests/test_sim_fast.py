"""The simulator's fast mode (the benchmarks' upstream): pre-encoded answers, one chunk per event, equal sizes."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import openai
import pytest
from helpers import ServerThread, connect
from stack import stack_config

from agfast.sim import SimulatorThread
from agfast.sim.fast import EVENT_TEXT, FastUpstream
from agfast.upstream.accounts import AccountStore
from agfast.upstream.client import UpstreamClient
from agfast.upstream.onboarding import discover, save_discovery

EVENTS = 5


def post(path: str, body: bytes, port: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_chunked(sock: socket.socket) -> tuple[bytes, list[bytes]]:
    """(head, chunk payloads) of one chunked response, read frame by frame off a keep-alive socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, buf = buf.split(b"\r\n\r\n", 1)
    chunks = []
    while True:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        size_line, buf = buf.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(buf) < size + 2:
            buf += sock.recv(65536)
        if size == 0:
            assert buf == b"\r\n", "bytes after the last chunk"
            return head, chunks
        chunks.append(buf[:size])
        buf = buf[size + 2 :]


@pytest.fixture(scope="module")
def fast() -> FastUpstream:
    with SimulatorThread(FastUpstream(chunks=EVENTS)) as upstream:  # type: ignore[arg-type]
        yield upstream  # type: ignore[misc]


def test_both_shapes_stream_one_event_per_chunk_with_equal_sizes(fast: FastUpstream) -> None:
    with connect(fast.port) as sock:
        sock.sendall(post("/v1internal:streamGenerateContent?alt=sse", b"{}", fast.port))
        head, google = read_chunked(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
        # the same keep-alive connection serves the next request
        sock.sendall(post("/v1/chat/completions", b'{"model":"m","stream":true}', fast.port))
        _, openai_events = read_chunked(sock)
    assert len(google) == len(openai_events) == EVENTS
    assert all(g.startswith(b"data: {") and g.endswith(b"\r\n\r\n") and g.count(b"data: ") == 1 for g in google)
    assert b'"finishReason":"STOP"' in google[-1]
    assert openai_events[-1].endswith(b"data: [DONE]\n\n")
    assert [len(g) for g in google] == [len(o) for o in openai_events]


def test_non_stream_and_control_answers(fast: FastUpstream) -> None:
    with connect(fast.port) as sock:
        sock.sendall(post("/v1/chat/completions", b'{"model":"m","stream":false}', fast.port))
        reply = b""
        while b'"total_tokens"' not in reply:
            reply += sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200") and b'"object":"chat.completion"' in reply
    with connect(fast.port) as sock:
        sock.sendall(post("/nowhere", b"{}", fast.port))
        assert sock.recv(65536).startswith(b"HTTP/1.1 404")


def test_agfast_onboards_and_answers_through_fast_mode(fast: FastUpstream, tmp_path: Path) -> None:
    """agfast discovers its account (token, userinfo, loadCodeAssist, quota) and converts the stream."""
    cfg = stack_config(tmp_path, fast)  # type: ignore[arg-type]

    async def onboard() -> None:
        client = UpstreamClient(cfg)
        try:
            save_discovery(AccountStore(cfg.data_dir), await discover(client, fast.refresh_token), fast.refresh_token)
        finally:
            await client.close()

    asyncio.run(onboard())
    with ServerThread(cfg) as st:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{st.port}/v1", api_key="x", max_retries=0)
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
        stream = client.chat.completions.create(model="gemini-3-flash", messages=messages, stream=True)  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        whole = client.chat.completions.create(model="gemini-3-flash", messages=messages)  # type: ignore[arg-type]
    assert text == EVENT_TEXT * EVENTS
    assert whole.choices[0].message.content == EVENT_TEXT * EVENTS
