"""The per-event fast path (sse.ChatDeltas, sse.AnthropicDeltas) writes the same bytes as the Python converters.

Every stream of the corpus is run through `api.common.convert_batch` (what `pump` does per network read) three
ways: without a fast path (the reference: every event parsed and fed to the converter), with the pure-Python
twin and with the compiled one, each batched one event per read and all events in one read. All must give
the same bytes, the same usage for the request record, and the fast path must have taken the plain events.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import orjson
import pytest
from conftest import sse_module
from helpers import AGFAST_ROOT

from agfast.api.common import convert_batch, fast_path
from agfast.convert import anthropic_stream, openai_chat
from agfast.convert.anthropic_stream import StreamConverter
from agfast.convert.openai_chat import ChatStream, Reader, stream_error
from agfast.convert.signatures import SignatureCache
from agfast.sim.answers import build_answer, render_chunks
from agfast.sim.fast import v1internal_event
from agfast.sim.server import spec_for
from agfast.sim.signatures import SignatureBook
from agfast.upstream.gateway import Stream

SIG = "s" * 64  # a thought signature long enough to be remembered


def envelope(chunk: Any) -> bytes:
    return orjson.dumps({"response": chunk, "traceId": "trace"})


def text(value: str, *, thought: bool = False, sig: str | None = None, **extra: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"text": value, **extra}
    if thought:
        part["thought"] = True
    if sig:
        part["thoughtSignature"] = sig
    return part


def event(*parts: dict[str, Any], finish: str | None = None, usage: Any = None, **cand: Any) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, **cand}
    if finish:
        candidate["finishReason"] = finish
    chunk: dict[str, Any] = {"candidates": [candidate], "responseId": "resp1"}
    if usage is not None:
        chunk["usageMetadata"] = usage
    return envelope(chunk)


def usage(out: int, **extra: int) -> dict[str, int]:
    return {"promptTokenCount": 12, "candidatesTokenCount": out, "totalTokenCount": 12 + out, **extra}


def fast_sim(n: int) -> list[bytes]:
    """The benchmark upstream's events (agfast sim --fast), as the SSE decoder hands them over."""
    return [v1internal_event(k, n, "Benchmark answer words ")[6:-4] for k in range(n)]


def simulated(body: dict[str, Any], model: str, chunks: int) -> list[bytes]:
    """The faithful simulator's answer to a GenerateContentRequest, cut into `chunks` events."""
    answer = build_answer(body, spec_for(model), SignatureBook(), prompt_tokens=40, cached_tokens=8)
    return [envelope(chunk) for chunk in render_chunks(answer, chunks, "simresp", "2026-12-02T00:00:00.000000Z")]


def claude_code_prompt() -> str:
    """The last user text of the recorded Claude Code session (real CLI traffic: long, unicode, markup)."""
    body = json.loads((AGFAST_ROOT / "tests" / "data" / "claude_code_session.json").read_text())["body"]
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
            }
        ]
    }
]
ESCAPES = 'quote " backslash \\ newline \n cr \r tab \t nul \x00 unit \x1f line-sep \u2028 </script> émoji 🌍 中文'

CORPUS: dict[str, list[bytes]] = {
    "fast sim": fast_sim(20),
    "one event": fast_sim(1),
    "unicode and escapes": [
        event(text("héllo "), usage=usage(1)),
        *[event(text(piece), usage=usage(2 + k)) for k, piece in enumerate(ESCAPES.split(" "))],
        event(text(ESCAPES), finish="STOP", usage=usage(40)),
    ],
    "thinking then text": [
        event(text("Let me think ", thought=True), usage=usage(1, thoughtsTokenCount=3)),
        event(text("about “this” ", thought=True), usage=usage(1, thoughtsTokenCount=6)),
        event(text("", thought=True, sig=SIG)),
        event(text("The answer")),
        event(text(" is 42."), text(" Really."), usage=usage(5, thoughtsTokenCount=6)),
        event(text("", sig=SIG), finish="STOP", usage=usage(6, thoughtsTokenCount=6)),
    ],
    "thought and text in one event": [
        event(text("a", thought=True), text("b"), usage=usage(1)),
        event(text("c", thought=True), text("d"), text("e", thought=True)),
        event(text("f"), finish="MAX_TOKENS"),
    ],
    "tool call": [
        event(text("Checking the weather. "), usage=usage(2)),
        event({"functionCall": {"name": "get_weather", "args": {"city": "Zürich"}}, "thoughtSignature": SIG}),
        event(text("More text after the call.")),
        event(finish="STOP", usage=usage(9)),
    ],
    "usage shapes": [
        envelope({"usageMetadata": usage(0), "responseId": "resp0"}),
        event(text("no usage here")),
        event(text("empty usage"), usage={}),
        envelope({"candidates": [], "usageMetadata": usage(3, cachedContentTokenCount=4)}),
        event(text("x"), usage=usage(4, thoughtsTokenCount=1, cachedContentTokenCount=4)),
        event(text(""), text("")),
        envelope({"candidates": [{"content": None}]}),
        envelope({"candidates": [{"content": {"role": "model"}}]}),
        event(text("y"), finish="SAFETY", usage=usage(5)),
    ],
    "error mid-stream": [
        event(text("partial "), usage=usage(1)),
        event(text("answer")),
        envelope({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota)."}}),
        event(text("never seen")),
    ],
    "odd events": [
        event(text("start")),
        b"[DONE]",
        b"not json {",
        b"[1, 2]",
        event(text("second candidate"), index=1),
        envelope(
            {"candidates": [{"content": {"parts": [text("zero")]}}, {"index": 1, "content": {"parts": [text("one")]}}]}
        ),
        event({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}),
        event({"executableCode": {"code": "print(1)"}}),
        event(text("bare event without envelope")).replace(b'{"response":', b"", 1)[: -len(b',"traceId":"trace"}')],
        event(text("end")),
        b"[DONE]",
    ],
    "simulator, thinking model calls a tool": simulated(
        {
            "contents": [{"role": "user", "parts": [{"text": "Please call get_weather for Zürich"}]}],
            "tools": TOOLS,
            "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}},
        },
        "gemini-2.5-flash",
        6,
    ),
    "simulator, claude thinking": simulated(
        {
            "contents": [{"role": "user", "parts": [{"text": "Explain “quotes” and \\ slashes, briefly."}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}},
        },
        "claude-opus-4-6-thinking",
        8,
    ),
    "simulator, claude code prompt": simulated(
        {"contents": [{"role": "user", "parts": [{"text": claude_code_prompt()}]}]}, "gemini-2.5-flash", 12
    ),
}


# Tool call ids are random; the runs compared here draw the same ones (`run` restarts the count).
IDS = [itertools.count()]


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_chat, "new_call_id", lambda: f"call_{next(IDS[0])}")
    monkeypatch.setattr(anthropic_stream, "_tool_id", lambda: f"toolu_{next(IDS[0])}")


def chat_stream(impl: ModuleType | None, mapped: str) -> ChatStream:
    conv = ChatStream(
        Reader(SignatureCache.create(), mapped, "session-1"),
        model="gpt-4o",
        created=1764547200,
        include_usage=True,
        response_id="chatcmpl-fixed",
    )
    conv.fast = None if impl is None else impl.ChatDeltas(conv._head, conv.started)
    return conv


def anthropic_stream_of(impl: ModuleType | None, mapped: str, omit_thinking: bool = False) -> StreamConverter:
    conv = StreamConverter(
        "claude-sonnet-4-5", mapped, SignatureCache.create(), "session-1", omit_thinking=omit_thinking
    )
    conv.fast = None if impl is None else impl.AnthropicDeltas(omit_thinking)
    return conv


def batchings(events: list[bytes]) -> Iterator[list[list[bytes]]]:
    yield [[e] for e in events]
    yield [list(events)]
    yield [events[i : i + 3] for i in range(0, len(events), 3)]


def run(conv: Any, batches: list[list[bytes]], failed: Callable[[Any, str], bytes]) -> tuple[bytes, Any, int]:
    """What `pump` then the driver's end write, for one converter: (bytes, the record's usage, fast events)."""
    IDS[0] = itertools.count()
    stream = Stream(None, None, [], None)  # type: ignore[arg-type]
    convert = fast_path(conv.feed)
    taken = 0
    if convert is not None:
        inner = convert

        def counting(batch: list[bytes], start: int) -> tuple[bytes, int, Any]:
            nonlocal taken
            result = inner(batch, start)
            taken += result[1] - start
            return result

        convert = counting
    out = []
    for batch in batches:
        data, _, error = convert_batch(batch, stream, conv.feed, convert)
        out.append(data)
        if error is not None:
            out.append(failed(conv, error[1]))
            return b"".join(out), stream.usage, taken
    out.append(conv.finish())
    return b"".join(out), stream.usage, taken


def chat_failed(conv: ChatStream, message: str) -> bytes:
    return stream_error(message)


def anthropic_failed(conv: StreamConverter, message: str) -> bytes:
    return conv.error(message)


SURFACES = {
    "openai chat, gemini": (lambda impl: chat_stream(impl, "gemini-2.5-flash"), chat_failed),
    "anthropic, gemini": (lambda impl: anthropic_stream_of(impl, "gemini-2.5-flash"), anthropic_failed),
    "anthropic, claude": (lambda impl: anthropic_stream_of(impl, "claude-opus-4-6-thinking"), anthropic_failed),
    "anthropic, thinking omitted": (
        lambda impl: anthropic_stream_of(impl, "claude-opus-4-6-thinking", omit_thinking=True),
        anthropic_failed,
    ),
}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("name", CORPUS)
def test_fast_path_bytes_equal_the_converters(surface: str, name: str) -> None:
    make, failed = SURFACES[surface]
    events = CORPUS[name]
    for batches in batchings(events):
        want, want_usage, _ = run(make(None), batches, failed)
        for impl in ("py", "c"):
            got, got_usage, _ = run(make(sse_module(impl)), batches, failed)
            assert got == want, f"{impl} twin, {len(batches)} reads"
            assert got_usage == want_usage, f"{impl} twin, {len(batches)} reads"


@pytest.mark.parametrize("surface", SURFACES)
def test_fast_path_takes_the_plain_events(surface: str) -> None:
    """Of the benchmark's 20 events only the last (finish) goes to the converter, and for Anthropic the first
    (message_start and the block opening)."""
    make, failed = SURFACES[surface]
    fast = 19 if surface.startswith("openai") else 18
    for impl in ("py", "c"):
        _, _, taken = run(make(sse_module(impl)), [[e] for e in fast_sim(20)], failed)
        assert taken == fast, impl


def test_fast_path_usage_reaches_the_final_chunk() -> None:
    """Usage seen only by the fast path is what the closing chunk reports (converter and fast path share it)."""
    events = [event(text("a"), usage=usage(1)), event(text("b"), usage=usage(7, thoughtsTokenCount=2))]
    for impl in ("py", "c"):
        out, record_usage, taken = run(chat_stream(sse_module(impl), "gemini-2.5-flash"), [events], chat_failed)
        assert taken == 2
        assert record_usage == usage(7, thoughtsTokenCount=2)
        assert b'"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19' in out
