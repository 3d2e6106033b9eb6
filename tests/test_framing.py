"""Every stream format agfast speaks, byte for byte off a real socket: strict SSE framing and the terminator.

SDKs are forgiving readers (a missing blank line before EOF, a stray [DONE], an unnamed event); other clients
(curl pipelines, hand-rolled readers, proxies that buffer per event) are not, so the bytes are checked here
with helpers.strict_sse rather than through an SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from helpers import ServerThread, request, strict_sse

PROMPT = "Frame this answer exactly"
ANSWER = f"[gemini-3-flash] echo: {PROMPT}"
SIM_ACCOUNTS = 1  # conftest: the module's simulator has one account
SHARED_STACK = True  # conftest: one agfast for the module (nothing here scripts faults)


def chat_text(frames: list[tuple[str | None, bytes]]) -> str:
    assert all(name is None for name, _ in frames)
    assert frames[-1][1] == b"[DONE]" and [d for _, d in frames].count(b"[DONE]") == 1
    chunks = [orjson.loads(data) for _, data in frames[:-1]]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def completion_text(frames: list[tuple[str | None, bytes]]) -> str:
    assert all(name is None for name, _ in frames)
    assert frames[-1][1] == b"[DONE]" and [d for _, d in frames].count(b"[DONE]") == 1
    return "".join(orjson.loads(data)["choices"][0]["text"] for _, data in frames[:-1])


def responses_text(frames: list[tuple[str | None, bytes]]) -> str:
    docs = [orjson.loads(data) for _, data in frames]
    assert [name for name, _ in frames] == [doc["type"] for doc in docs]
    assert [doc["sequence_number"] for doc in docs] == list(range(len(docs)))
    assert docs[-1]["type"] == "response.completed" and all(d["type"] != "response.completed" for d in docs[:-1])
    return "".join(d["delta"] for d in docs if d["type"] == "response.output_text.delta")


def anthropic_text(frames: list[tuple[str | None, bytes]]) -> str:
    docs = [orjson.loads(data) for _, data in frames]
    assert [name for name, _ in frames] == [doc["type"] for doc in docs]
    assert frames[0][0] == "message_start" and frames[-1] == ("message_stop", b'{"type":"message_stop"}')
    return "".join(d["delta"]["text"] for d in docs if d["type"] == "content_block_delta" and "text" in d["delta"])


def gemini_text(frames: list[tuple[str | None, bytes]]) -> str:
    assert all(name is None for name, _ in frames)
    chunks = [orjson.loads(data) for _, data in frames]  # no [DONE]: Google's streams just end
    assert "finishReason" in chunks[-1]["candidates"][0] and all(
        "finishReason" not in c["candidates"][0] for c in chunks[:-1]
    )
    return "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])


# (id, path, body, what the frames must look like → the answer text)
FORMATS: list[tuple[str, str, dict[str, Any], Callable[[list[tuple[str | None, bytes]]], str]]] = [
    (
        "openai-chat",
        "/v1/chat/completions",
        {"model": "gemini-3-flash", "stream": True, "messages": [{"role": "user", "content": PROMPT}]},
        chat_text,
    ),
    (
        "openai-completions",
        "/v1/completions",
        {"model": "gemini-3-flash", "stream": True, "prompt": PROMPT},
        completion_text,
    ),
    (
        "openai-responses",
        "/v1/responses",
        {"model": "gemini-3-flash", "stream": True, "input": PROMPT},
        responses_text,
    ),
    (
        "anthropic",
        "/v1/messages",
        {"model": "gemini-3-flash", "stream": True, "max_tokens": 1000,
         "messages": [{"role": "user", "content": PROMPT}]},
        anthropic_text,
    ),
    (
        "gemini",
        "/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
        gemini_text,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "text_of"), [f[1:] for f in FORMATS], ids=[f[0] for f in FORMATS])
def test_stream_is_strictly_framed_and_terminated(
    stack: ServerThread, path: str, body: dict[str, Any], text_of: Callable[[list[tuple[str | None, bytes]]], str]
) -> None:
    reply = request(stack.port, "POST", path, orjson.dumps(body), {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert text_of(strict_sse(reply.body)) == ANSWER


def test_strict_reader_refuses_what_lenient_ones_accept() -> None:
    """The checker itself: each of these is a framing bug an SDK would let through."""
    good = b'data: {"a":1}\n\ndata: [DONE]\n\n'
    assert strict_sse(good) == [(None, b'{"a":1}'), (None, b"[DONE]")]
    for bad in (
        b'data: {"a":1}\n\ndata: [DONE]\n',  # last event not closed
        b'data: {"a":1}\n\n\ndata: [DONE]\n\n',  # doubled blank line
        b'data: {"a":1}\r\n\r\n',  # CRLF
        b'data:{"a":1}\n\n',  # no space after the colon
        b'event: x\n\n',  # a name and no data
        b"data: x\n\ntrailing",  # bytes after the last event
        b": ping\n\n",  # comments only where asked for
    ):  # fmt: skip
        with pytest.raises(AssertionError):
            strict_sse(bad)
    assert strict_sse(b": ping\n\ndata: x\n\n", comments=True) == [(None, b"x")]
