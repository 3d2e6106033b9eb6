"""Streamed answers made readable again: the SSE bytes a client got → one consolidated JSON document.

Usage is given as Google counts it, whatever the protocol told the client: input = the whole prompt (cache
reads included), output = answer and thinking tokens, cached = the prompt's cache reads.

The Proxy Monitor stores what the client received; for a stream that is hundreds of small events. Like the
reference (§8.2) the monitor shows instead the answer they add up to: thinking, text, tool calls, the finish
reason, usage, and an in-stream error if there was one. Runs in the monitor's writer thread, never on the
request path, so it favours tolerance over speed: a body cut at the record's cap still yields what it holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import orjson

_DECODER = json.JSONDecoder()


def sse_events(body: bytes) -> list[Any]:
    """The decoded `data:` payload of each SSE event; undecodable ones ([DONE], a tail cut at the cap) are left out.

    Every agfast converter writes one JSON document per `data:` line, so lines are payloads; all of them are
    decoded in one orjson call (a per-event call costs more than the JSON), falling back to one by one when
    some line does not decode.
    """
    lines = []
    for piece in (b"\n" + body).split(b"\ndata:")[1:]:  # JSON lines hold no raw newline: a safe separator
        end = piece.find(b"\n")
        line = (piece if end < 0 else piece[:end]).strip()
        if line != b"[DONE]":
            lines.append(line)
    try:
        events: list[Any] = orjson.loads(b"[" + b",".join(lines) + b"]")
        return events
    except orjson.JSONDecodeError:
        pass
    out = []
    for line in lines:
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return out


def json_array_items(body: bytes) -> Iterator[Any]:
    """The objects of a streamed JSON array (`[{…},{…}]`), as many as are complete."""
    text = body.decode("utf-8", "replace")
    pos = 0
    end = len(text)
    while pos < end:
        while pos < end and text[pos] in "[], \r\n\t":
            pos += 1
        if pos >= end:
            return
        try:
            item, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            return
        yield item


class Answer:
    """What a stream adds up to, in the order it came."""

    __slots__ = ("calls", "error", "finish", "text", "thinking", "usage")

    def __init__(self) -> None:
        self.thinking: list[str] = []
        self.text: list[str] = []
        self.calls: dict[Any, dict[str, Any]] = {}  # key (index or id) → {"id", "name", "arguments"}
        self.finish: Any = None
        self.usage: dict[str, int] = {}
        self.error: Any = None

    def call(self, key: Any) -> dict[str, Any]:
        return self.calls.setdefault(key, {"id": "", "name": "", "arguments": ""})

    def document(self, source: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"reconstructed_from": source}
        if self.thinking:
            doc["thinking"] = "".join(self.thinking)
        doc["text"] = "".join(self.text)
        if self.calls:
            doc["tool_calls"] = list(self.calls.values())
        if self.finish is not None:
            doc["finish_reason"] = self.finish
        if self.usage:
            doc["usage"] = self.usage
        if self.error is not None:
            doc["error"] = self.error
        return doc


def _tokens(input_tokens: Any = 0, output_tokens: Any = 0, cached_tokens: Any = 0) -> dict[str, int]:
    return {
        "input_tokens": int(input_tokens or 0),
        "output_tokens": int(output_tokens or 0),
        "cached_tokens": int(cached_tokens or 0),
    }


def _billed_output(output: Any, details: Any) -> int:
    """Output as Google counts it, thoughts included: agfast's OpenAI usage reports the thoughts apart."""
    return int(output or 0) + int(_d(details).get("reasoning_tokens") or 0)


_EMPTY: dict[str, Any] = {}


def _d(value: Any) -> dict[str, Any]:
    """The value when it is an object, else an empty one: events are read tolerantly, never trusted."""
    return value if type(value) is dict else _EMPTY


# -- OpenAI chat completions chunks ------------------------------------------------------------------------


def _openai_chat(body: bytes) -> Answer:
    answer = Answer()
    for chunk in sse_events(body):
        chunk = _d(chunk)
        if "error" in chunk:
            answer.error = chunk["error"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            cached = _d(usage.get("prompt_tokens_details")).get("cached_tokens")
            output = _billed_output(usage.get("completion_tokens"), usage.get("completion_tokens_details"))
            answer.usage = _tokens(usage.get("prompt_tokens"), output, cached)
        for choice in chunk.get("choices") or ():
            choice = _d(choice)
            if choice.get("index", 0):
                continue  # the monitor shows the first choice, as clients do
            delta = _d(choice.get("delta"))
            if delta.get("reasoning_content"):
                answer.thinking.append(str(delta["reasoning_content"]))
            if delta.get("content"):
                answer.text.append(str(delta["content"]))
            if choice.get("text"):  # legacy /v1/completions chunks
                answer.text.append(str(choice["text"]))
            for call in delta.get("tool_calls") or ():
                call = _d(call)
                slot = answer.call(call.get("index", len(answer.calls)))
                function = _d(call.get("function"))
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] = function.get("name") or slot["name"]
                slot["arguments"] += str(function.get("arguments") or "")
            if choice.get("finish_reason"):
                answer.finish = choice["finish_reason"]
    return answer


# -- OpenAI Responses events --------------------------------------------------------------------------------

_RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")


def _openai_responses(body: bytes) -> Answer:
    answer = Answer()
    for event in sse_events(body):
        event = _d(event)
        kind = event.get("type")
        if kind == "response.reasoning_summary_text.delta":
            answer.thinking.append(str(event.get("delta", "")))
        elif kind == "response.output_text.delta":
            answer.text.append(str(event.get("delta", "")))
        elif kind == "response.output_item.done":
            item = _d(event.get("item"))
            if item.get("type") in ("function_call", "custom_tool_call"):
                slot = answer.call(item.get("id"))
                slot["id"] = item.get("call_id", "")
                slot["name"] = item.get("name", "")
                slot["arguments"] = item.get("arguments", item.get("input", ""))
        elif kind in _RESPONSE_ENDS:
            response = _d(event.get("response"))
            answer.finish = response.get("status")
            if response.get("error"):
                answer.error = response["error"]
            usage = _d(response.get("usage"))
            if usage:
                cached = _d(usage.get("input_tokens_details")).get("cached_tokens")
                output = _billed_output(usage.get("output_tokens"), usage.get("output_tokens_details"))
                answer.usage = _tokens(usage.get("input_tokens"), output, cached)
        elif kind == "error":
            answer.error = event.get("error", event)
    return answer


# -- Anthropic Messages events ------------------------------------------------------------------------------


def _anthropic(body: bytes) -> Answer:
    answer = Answer()
    text, thinking = answer.text, answer.thinking
    usage: dict[str, Any] = {}
    for event in sse_events(body):
        event = _d(event)
        kind = event.get("type")
        if kind == "content_block_delta":  # nearly every event: checked first
            delta = _d(event.get("delta"))
            dtype = delta.get("type")
            if dtype == "text_delta":
                text.append(str(delta.get("text", "")))
            elif dtype == "thinking_delta":
                thinking.append(str(delta.get("thinking", "")))
            elif dtype == "input_json_delta":
                answer.call(event.get("index"))["arguments"] += str(delta.get("partial_json", ""))
        elif kind == "content_block_start":
            block = _d(event.get("content_block"))
            if block.get("type") == "tool_use":
                slot = answer.call(event.get("index"))
                slot["id"] = block.get("id", "")
                slot["name"] = block.get("name", "")
            elif block.get("type") == "text" and block.get("text"):
                text.append(str(block["text"]))
        elif kind == "message_start":
            usage.update(_d(_d(event.get("message")).get("usage")))
        elif kind == "message_delta":
            reason = _d(event.get("delta")).get("stop_reason")
            if reason:
                answer.finish = reason
            usage.update({k: v for k, v in _d(event.get("usage")).items() if v is not None})
        elif kind == "error":
            answer.error = event.get("error", event)
    if usage:
        cached = usage.get("cache_read_input_tokens")
        # Anthropic's input_tokens leave out the cache reads; the monitor counts the whole prompt, as Google does.
        prompt = int(usage.get("input_tokens") or 0) + int(cached or 0)
        answer.usage = _tokens(prompt, usage.get("output_tokens"), cached)
    return answer


# -- Gemini (SSE with alt=sse, else one streamed JSON array) ------------------------------------------------


def _gemini_chunks(chunks: Iterator[Any]) -> Answer:
    answer = Answer()
    for chunk in chunks:
        chunk = _d(chunk)
        if "error" in chunk:
            answer.error = chunk["error"]
        meta = chunk.get("usageMetadata")
        if isinstance(meta, dict):
            output = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
            answer.usage = _tokens(meta.get("promptTokenCount"), output, meta.get("cachedContentTokenCount"))
        for cand in chunk.get("candidates") or ():
            cand = _d(cand)
            if cand.get("index", 0):
                continue
            if cand.get("finishReason"):
                answer.finish = cand["finishReason"]
            for part in _d(cand.get("content")).get("parts") or ():
                part = _d(part)
                call = part.get("functionCall")
                if isinstance(call, dict):
                    slot = answer.call(len(answer.calls))
                    slot["id"] = call.get("id", "")
                    slot["name"] = call.get("name", "")
                    slot["arguments"] = orjson.dumps(call.get("args") or {}).decode()
                elif part.get("text"):
                    (answer.thinking if part.get("thought") else answer.text).append(str(part["text"]))
    return answer


def _gemini(body: bytes) -> Answer:
    if body.lstrip()[:1] == b"[":
        return _gemini_chunks(json_array_items(body))
    return _gemini_chunks(iter(sse_events(body)))


# Which reader a stream's bytes need: by protocol, and for OpenAI by route (Responses events differ).
_READERS: dict[str, tuple[str, Callable[[bytes], Answer]]] = {
    "openai": ("openai-chat", _openai_chat),
    "openai-responses": ("openai-responses", _openai_responses),
    "anthropic": ("anthropic", _anthropic),
    "gemini": ("gemini", _gemini),
}


def reader_key(protocol: str, path: str) -> str:
    """The `_READERS` key for a request: OpenAI's Responses routes stream another event family."""
    if protocol == "openai" and path.split("?", 1)[0].endswith("/responses"):
        return "openai-responses"
    return protocol


def reconstruct(protocol: str, path: str, body: bytes) -> dict[str, Any] | None:
    """The consolidated answer of a streamed body, or None for a protocol without a reader."""
    entry = _READERS.get(reader_key(protocol, path))
    if entry is None:
        return None
    source, read = entry
    return read(body).document(source)
