"""Streams captured from a live agfast in front of the simulator, stored and reconstructed by the monitor.

The request driver that fills records is not wired in yet: these tests take the exact bytes each client got
over a real socket and hand them to the monitor as the driver will, with no tokens, so the stored tokens come
from the stream's own usage and must equal what Google (the simulator) reported: prompt, answer + thoughts,
cache reads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import ServerThread, request

from agfast.monitor import Monitor
from agfast.record import RequestRecord
from agfast.sim.server import GoogleSimulator

SHARED_STACK = True  # conftest: one agfast for the module (nothing here scripts faults)
PROMPT = "hello monitor, say something"

# (protocol, path, body) for the same prompt on every surface; streams, then the collected twin for usage.
OPENAI = {"model": "gemini-3-flash", "messages": [{"role": "user", "content": PROMPT}]}
RESPONSES = {"model": "gemini-3-flash", "input": PROMPT}
ANTHROPIC = {"model": "gemini-3-flash", "max_tokens": 256, "messages": [{"role": "user", "content": PROMPT}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
STREAMS = [
    ("openai", "/v1/chat/completions", {**OPENAI, "stream": True, "stream_options": {"include_usage": True}}),
    ("openai", "/v1/responses", {**RESPONSES, "stream": True}),
    ("anthropic", "/v1/messages", {**ANTHROPIC, "stream": True}),
    ("gemini", "/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse", GEMINI),
    ("gemini", "/v1beta/models/gemini-3-flash:streamGenerateContent", GEMINI),
]


def post(st: ServerThread, path: str, body: dict[str, Any]) -> bytes:
    headers = {"authorization": f"Bearer {st.config.api_key}", "content-type": "application/json"}
    reply = request(st.port, "POST", path, orjson.dumps(body), headers)
    assert reply.status == 200, reply.body
    return reply.body


def upstream_usage(sim: GoogleSimulator) -> dict[str, int]:
    """Google's usageMetadata for agfast's upstream call, got by replaying that exact call to the simulator
    (deterministic for a prompt below its cache threshold) and reading its final chunk."""
    [call] = [r for r in sim.requests if r.action in ("streamGenerateContent", "generateContent")]
    headers = {k: v for k, v in call.headers.items() if k not in ("host", "content-length", "accept-encoding")}
    path = call.path + "?" + "&".join(f"{k}={v}" for k, v in call.query.items()) if call.query else call.path
    reply = request(sim.port, "POST", path, call.body, headers)
    assert reply.status == 200, reply.body
    datas = [line[5:].strip() for line in reply.body.split(b"\n") if line.startswith(b"data:")]
    chunks = [orjson.loads(d) for d in datas] if datas else [orjson.loads(reply.body)]
    return chunks[-1]["response"]["usageMetadata"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("protocol", "path", "body"), STREAMS, ids=[p for _, p, _ in STREAMS])
def test_live_stream_stored_with_upstream_usage(
    stack: ServerThread, sim: GoogleSimulator, tmp_path: Path, protocol: str, path: str, body: dict[str, Any]
) -> None:
    raw = post(stack, path, body)
    rec = RequestRecord("live", "POST", path, protocol, "127.0.0.1", time.time())
    rec.status, rec.stream, rec.response_body = 200, True, raw
    rec.request_body = orjson.dumps(body)
    mon = Monitor(tmp_path)
    try:
        mon.observe(rec)
        assert mon.flush()
        [summary] = mon.logs()
        row = mon.log(summary["id"]) or {}
    finally:
        mon.close()
    doc = orjson.loads(row["response_body"])
    assert doc["text"] == f"[gemini-3-flash] echo: {PROMPT}"
    usage = upstream_usage(sim)
    google = (
        usage["promptTokenCount"],
        usage.get("candidatesTokenCount", 0) + usage.get("thoughtsTokenCount", 0),
        usage.get("cachedContentTokenCount", 0),
    )
    assert google[1] > 0
    # The reconstruction reads the usage the client was told (the row's own columns come from the driver's
    # record: tests/test_operations.py checks them against Google's counts over real traffic).
    usage_told = doc["usage"]
    assert (usage_told["input_tokens"], usage_told["output_tokens"], usage_told["cached_tokens"]) == google
    assert summary["url"] == path and summary["protocol"] == protocol


def test_live_key_in_query_never_stored(stack: ServerThread, tmp_path: Path) -> None:
    key = stack.config.api_key or ""
    path = f"/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse&key={key}"
    reply = request(stack.port, "POST", path, orjson.dumps(GEMINI), {"content-type": "application/json"})
    assert reply.status == 200, reply.body
    rec = RequestRecord("live", "POST", path, "gemini", "127.0.0.1", time.time())
    rec.status, rec.stream, rec.response_body, rec.request_body = 200, True, reply.body, orjson.dumps(GEMINI)
    mon = Monitor(tmp_path / "data")
    try:
        mon.observe(rec)
        assert mon.flush()
        assert mon.logs()[0]["url"] == "/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse&key=***"
        files = list((tmp_path / "data").iterdir())
        assert any(f.name.endswith("-wal") for f in files)  # the rows are there, in the WAL, and hold no key
        for file in files:
            assert key.encode() not in file.read_bytes(), file
    finally:
        mon.close()
