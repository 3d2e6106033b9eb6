"""Shutdown (issue #9.8): answers still running at `shutdown_timeout` end with their protocol's error event."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import orjson
import pytest
from helpers import AgfastProcess, Reader, ServerThread, connect, encode, make_config
from stack import google_env, onboard_all, stack_config, start_sim
from test_streaming import Probe, streaming_router

from agfast.server import CUT_GRACE
from agfast.sim import GoogleSimulator

SHUTDOWN_TIMEOUT = 0.5
# Far longer than SHUTDOWN_TIMEOUT: every stream is still running when the deadline cuts it.
CHUNK_DELAY = 3.0
MESSAGES = [{"role": "user", "content": "tell me a long story"}]


def _json(doc: object) -> bytes:
    return orjson.dumps(doc)


def last_sse_data(body: bytes) -> dict:  # type: ignore[type-arg]
    events = [e for e in body.split(b"\n\n") if e.strip()]
    data = [line[6:] for line in events[-1].split(b"\n") if line.startswith(b"data: ")]
    return orjson.loads(data[0])  # type: ignore[no-any-return]


def check_chat(body: bytes) -> None:
    assert body.endswith(b"\n\ndata: [DONE]\n\n")
    error = last_sse_data(body[: -len(b"data: [DONE]\n\n")])["error"]
    assert "shutting down" in error["message"]
    assert error["type"] == "server_error"


def check_responses(body: bytes) -> None:
    events = [e for e in body.split(b"\n\n") if e.strip()]
    assert events[-1].startswith(b"event: response.failed\n")
    failed = last_sse_data(body)["response"]
    assert failed["status"] == "failed"
    assert "shutting down" in failed["error"]["message"]


def check_anthropic(body: bytes) -> None:
    events = [e for e in body.split(b"\n\n") if e.strip()]
    assert events[-1].startswith(b"event: error\n")
    error = last_sse_data(body)
    assert error["type"] == "error"
    assert error["error"]["type"] == "overloaded_error"
    assert "shutting down" in error["error"]["message"]


def check_gemini_sse(body: bytes) -> None:
    error = last_sse_data(body)["error"]
    assert (error["code"], error["status"]) == (503, "UNAVAILABLE")
    assert "shutting down" in error["message"]


def check_gemini_json(body: bytes) -> None:
    items = orjson.loads(body)  # still one well-formed JSON array
    assert items[0]["candidates"]
    error = items[-1]["error"]
    assert (error["code"], error["status"]) == (503, "UNAVAILABLE")
    assert "shutting down" in error["message"]


GEMINI_BODY = _json({"contents": [{"role": "user", "parts": [{"text": "tell me a long story"}]}]})
# (name, path, body, check of the whole answer body)
STREAMS = [
    (
        "openai-chat",
        "/v1/chat/completions",
        _json({"model": "gemini-3-flash", "stream": True, "messages": MESSAGES}),
        check_chat,
    ),
    (
        "openai-responses",
        "/v1/responses",
        _json({"model": "gemini-3-flash", "stream": True, "input": "tell me a long story"}),
        check_responses,
    ),
    (
        "anthropic",
        "/v1/messages",
        _json({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": True, "messages": MESSAGES}),
        check_anthropic,
    ),
    ("gemini-sse", "/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse", GEMINI_BODY, check_gemini_sse),
    ("gemini-json", "/v1beta/models/gemini-3-flash:streamGenerateContent", GEMINI_BODY, check_gemini_json),
]


@pytest.fixture
def slow_sim() -> GoogleSimulator:
    with start_sim(accounts=1, chunks=10, chunk_delay=CHUNK_DELAY) as sim:
        yield sim  # type: ignore[misc]


def test_sigterm_ends_running_streams_with_protocol_error(tmp_path: Path, slow_sim: GoogleSimulator, impl: str) -> None:
    cfg = stack_config(tmp_path, slow_sim)
    onboard_all(cfg, slow_sim)
    (tmp_path / "config.toml").write_text(f'api_key = "sk-shutdown-test"\nshutdown_timeout = {SHUTDOWN_TIMEOUT}\n')
    env = google_env(slow_sim)
    with (
        AgfastProcess("--port", "0", "--data-dir", str(tmp_path), env=env, impl=impl) as proc,
        contextlib.ExitStack() as socks,
    ):
        readers = []
        for _, path, body, _ in STREAMS:
            sock = socks.enter_context(contextlib.closing(socket.create_connection(("127.0.0.1", proc.port), 10)))
            sock.sendall(encode("POST", path, body, {"Content-Type": "application/json"}))
            readers.append(Reader(sock))
        # A collecting (non-streaming) request still waiting for upstream: cut before its head.
        waiting = socks.enter_context(contextlib.closing(socket.create_connection(("127.0.0.1", proc.port), 10)))
        waiting.sendall(
            encode("POST", "/v1/chat/completions", _json({"model": "gemini-3-flash", "messages": MESSAGES}))
        )
        for reader in readers:  # every stream has started (its first event arrived) before the signal
            while b"\r\n\r\n" not in reader.buf or len(reader.buf.partition(b"\r\n\r\n")[2]) < 8:
                assert reader._fill()
        proc.proc.send_signal(signal.SIGTERM)
        for (name, _, _, check), reader in zip(STREAMS, readers, strict=True):
            reply = reader.read()  # chunked framing to its `0\r\n\r\n` terminator, or EOFError
            assert reply.status == 200, name
            check(reply.body)
            assert reader.buf == b"", name
            assert reader.closed(timeout=5), name
        cut = Reader(waiting).read()
        assert cut.status == 503
        assert cut.json()["error"]["type"] == "server_error"
        assert "shutting down" in cut.json()["error"]["message"]
        assert proc.proc.wait(15) == 0


# -- the HTTP shell's own part, in-process: any cut handler ends its body; a stalled client cannot hold us ----


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def stream_server(tmp_path: Path, sse: ModuleType, probe: Probe) -> Iterator[ServerThread]:
    cfg = make_config(tmp_path, auth_mode="off", shutdown_timeout=SHUTDOWN_TIMEOUT)
    with ServerThread(cfg, streaming_router(sse, probe)) as st:
        yield st


def test_cut_stream_without_surface_error_still_ends_chunked(stream_server: ServerThread, probe: Probe) -> None:
    with contextlib.closing(connect(stream_server.port)) as sock:
        sock.sendall(encode("GET", "/slow"))
        assert probe.started.wait(2)
        stopper = threading.Thread(target=stream_server.stop)
        stopper.start()
        reader = Reader(sock)
        reply = reader.read()  # ends with the chunked terminator instead of a dropped connection
        assert reply.status == 200
        assert reply.body.startswith(b"data: 0\n\n")
        assert reader.closed(timeout=3)
        stopper.join(10)
    assert probe.cancelled.is_set()


def test_cut_stream_to_stalled_client_is_dropped_after_grace(stream_server: ServerThread, probe: Probe) -> None:
    with contextlib.closing(connect(stream_server.port, timeout=30)) as sock:
        sock.sendall(encode("GET", "/big"))  # and never read: the handler waits in drain()
        deadline = time.monotonic() + 5
        while probe.chunks_sent < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        stream_server.stop()
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT + CUT_GRACE + 2
        assert not probe.finished.is_set()
