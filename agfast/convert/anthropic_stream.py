"""Gemini stream → Anthropic Messages events (reference §6.7): one state machine, two outputs.

`Converter` walks each upstream chunk once: thought parts become a `thinking` block (its signature goes out
as `signature_delta` when the block closes), text a `text` block, each functionCall a whole `tool_use` block
(one `input_json_delta`). `StreamConverter` turns the events into SSE bytes as they happen — `feed(chunk)`
returns what to write for that chunk — and `MessageCollector` folds the same events into the one JSON
message a non-streaming client gets. Signatures are remembered on the way (tool call id, session) so the
next turn can carry them back even when the client drops them.

Usage: input_tokens = promptTokenCount − cachedContentTokenCount, cache_read_input_tokens = cached,
output_tokens = candidates + thoughts (Anthropic bills and counts thinking as output).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from agfast.convert.ids import hex24
from agfast.convert.signatures import SignatureCache, family_of
from agfast.sse import AnthropicDeltas, AnthropicFold, frame_event

NONE, THINKING, TEXT, TOOL = 0, 1, 2, 3
STOP_REASONS = {"MAX_TOKENS": "max_tokens"}
PING = b'event: ping\ndata: {"type": "ping"}\n\n'

_E_START = b"message_start"
_E_BLOCK_START = b"content_block_start"
_E_DELTA = b"content_block_delta"
_E_BLOCK_STOP = b"content_block_stop"
_E_MESSAGE_DELTA = b"message_delta"
_E_STOP = b"message_stop"
_E_ERROR = b"error"
_STOP_EVENT = frame_event(b'{"type":"message_stop"}', _E_STOP)


def usage_of(meta: dict[str, Any] | None) -> dict[str, int]:
    """Anthropic usage from Gemini usageMetadata; cached prompt tokens are reported as cache reads."""
    meta = meta or {}
    prompt = int(meta.get("promptTokenCount") or 0)
    cached = int(meta.get("cachedContentTokenCount") or 0)
    output = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    return {
        "input_tokens": max(0, prompt - cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def _message_id(response_id: Any) -> str:
    return "msg_" + (response_id if isinstance(response_id, str) and response_id else hex24())


def _tool_id() -> str:
    return "toolu_" + hex24()


def _sources(grounding: Any) -> str:
    """Grounding (web search) results as a short markdown list, appended as a text block."""
    if not isinstance(grounding, dict):
        return ""
    lines = []
    queries = [q for q in grounding.get("webSearchQueries") or () if isinstance(q, str)]
    if queries:
        lines.append("Searched for: " + ", ".join(queries))
    for chunk in grounding.get("groundingChunks") or ():
        web = chunk.get("web") if isinstance(chunk, dict) else None
        if isinstance(web, dict) and web.get("uri"):
            lines.append(f"- [{web.get('title') or web['uri']}]({web['uri']})")
    return "\n\n---\n" + "\n".join(lines) if lines else ""


class Converter:
    """The shared state machine; subclasses decide what an event becomes."""

    __slots__ = (
        "block_sig",
        "index",
        "kind",
        "last_sig",
        "mapped",
        "model",
        "omit_thinking",
        "session",
        "signatures",
        "started",
        "stopped",
        "tool_used",
        "trailing",
        "usage",
    )

    def __init__(
        self,
        model: str,
        mapped: str,
        signatures: SignatureCache,
        session: str | None = None,
        *,
        omit_thinking: bool = False,
    ) -> None:
        self.model = model
        self.mapped = mapped
        self.signatures = signatures
        self.session = session
        self.omit_thinking = omit_thinking
        self.started = False
        self.stopped = False
        self.kind = NONE
        self.index = -1
        self.block_sig: str | None = None
        self.last_sig: str | None = None
        self.trailing: str | None = None
        self.tool_used = False
        self.usage: dict[str, Any] | None = None

    # -- what subclasses implement ---------------------------------------------------------------------------

    def _event(self, name: bytes, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        self._event(_E_DELTA, {"type": "content_block_delta", "index": index, "delta": delta})

    def _text(self, index: int, text: str) -> None:
        self._delta(index, {"type": "text_delta", "text": text})

    def _thinking(self, index: int, text: str) -> None:
        self._delta(index, {"type": "thinking_delta", "thinking": text})

    # -- the state machine ----------------------------------------------------------------------------------

    def _chunk(self, chunk: dict[str, Any]) -> None:
        if self.stopped:
            return
        meta = chunk.get("usageMetadata")
        if meta:
            self.usage = meta
        if not self.started:
            self._start(chunk)
        candidates = chunk.get("candidates")
        if not candidates:
            return
        cand = candidates[0]
        content = cand.get("content")
        if content:
            for part in content.get("parts") or ():
                self._part(part)
        finish = cand.get("finishReason")
        if finish:
            self._finish(finish, cand.get("groundingMetadata"))

    def _start(self, chunk: dict[str, Any]) -> None:
        self.started = True
        usage = usage_of(self.usage)
        usage["output_tokens"] = 0
        message: dict[str, Any] = {
            "id": _message_id(chunk.get("responseId")),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        self._event(_E_START, {"type": "message_start", "message": message})

    def _open(self, kind: int, block: dict[str, Any]) -> int:
        self._close()
        self.kind = kind
        self.index += 1
        self._event(_E_BLOCK_START, {"type": "content_block_start", "index": self.index, "content_block": block})
        return self.index

    def _close(self) -> None:
        if self.kind == NONE:
            return
        if self.kind == THINKING and self.block_sig:
            sig = self.block_sig
            self._delta(self.index, {"type": "signature_delta", "signature": sig})
            self.signatures.remember(sig, self.mapped, session=self.session)
            self.last_sig = sig
            self.block_sig = None
        self._event(_E_BLOCK_STOP, {"type": "content_block_stop", "index": self.index})
        self.kind = NONE

    def _part(self, part: dict[str, Any]) -> None:
        text = part.get("text")
        sig = part.get("thoughtSignature")
        if part.get("thought"):
            if self.kind != THINKING:
                self._open(THINKING, {"type": "thinking", "thinking": "", "signature": ""})
            if text and not self.omit_thinking:
                self._thinking(self.index, text)
            if sig:
                self.block_sig = sig
            return
        call = part.get("functionCall")
        if call is not None:
            self._tool(call, sig)
            return
        if text is not None:
            if not text:
                if sig:
                    if self.kind == THINKING:
                        self.block_sig = sig
                    else:
                        self.trailing = sig
                return
            self._flush_trailing()
            if self.kind != TEXT:
                self._open(TEXT, {"type": "text", "text": ""})
            self._text(self.index, text)
            if sig:
                self.signatures.remember(sig, self.mapped, session=self.session)
            return
        inline = part.get("inlineData")
        if isinstance(inline, dict) and inline.get("data"):
            self._flush_trailing()
            if self.kind != TEXT:
                self._open(TEXT, {"type": "text", "text": ""})
            self._text(self.index, f"![image](data:{inline.get('mimeType', 'image/png')};base64,{inline['data']})")

    def _flush_trailing(self) -> None:
        """A signature that came alone: Claude's belongs to a thinking block, so it gets an empty one."""
        sig = self.trailing
        if sig is None:
            return
        self.trailing = None
        if family_of(self.mapped) == "claude":
            self._open(THINKING, {"type": "thinking", "thinking": "", "signature": ""})
            self.block_sig = sig
            self._close()
        else:
            self.signatures.remember(sig, self.mapped, session=self.session)

    def _tool(self, call: dict[str, Any], sig: str | None) -> None:
        self._flush_trailing()
        self._close()
        call_id = call.get("id") or _tool_id()
        sig = sig or (self.last_sig if family_of(self.mapped) == "claude" else None)
        if sig:
            self.signatures.remember(sig, self.mapped, session=self.session, tool_call_id=call_id)
        index = self._open(TOOL, {"type": "tool_use", "id": call_id, "name": call.get("name") or "", "input": {}})
        self._delta(index, {"type": "input_json_delta", "partial_json": orjson.dumps(call.get("args") or {}).decode()})
        self._event(_E_BLOCK_STOP, {"type": "content_block_stop", "index": index})
        self.kind = NONE
        self.tool_used = True

    def _finish(self, reason: str | None, grounding: Any = None) -> None:
        if not self.started:
            self._start({})
        if self.trailing is not None:
            # Nothing followed it: keep it for the next turn, no block of its own.
            self.signatures.remember(self.trailing, self.mapped, session=self.session)
            self.trailing = None
        sources = _sources(grounding)
        if sources:
            if self.kind != TEXT:
                self._open(TEXT, {"type": "text", "text": ""})
            self._text(self.index, sources)
        self._close()
        stop = "tool_use" if self.tool_used else STOP_REASONS.get(reason or "", "end_turn")
        self._event(
            _E_MESSAGE_DELTA,
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": usage_of(self.usage),
            },
        )
        self._event(_E_STOP, {"type": "message_stop"})
        self.stopped = True


class StreamConverter(Converter):
    """`feed(chunk)` → the SSE bytes for that chunk; `finish()` closes a stream that ended without a reason."""

    __slots__ = ("_out", "fast")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out: list[bytes] = []
        # The per-event fast path (api.common.pump uses it): deltas into the open block straight to bytes.
        self.fast: AnthropicDeltas | None = AnthropicDeltas(self.omit_thinking)

    def _sync_fast(self) -> None:
        """Take the usage the fast path saw (newer: events reach the two paths in order); tell it the state."""
        fast = self.fast
        if fast is None:
            return
        if fast.usage is not None:
            self.usage, fast.usage = fast.usage, None
        fast.ready = self.started and not self.stopped and self.trailing is None
        fast.kind = self.kind
        fast.index = self.index

    def _event(self, name: bytes, payload: dict[str, Any]) -> None:
        if name is _E_STOP:
            self._out.append(_STOP_EVENT)
        else:
            self._out.append(frame_event(orjson.dumps(payload), name))

    def _text(self, index: int, text: str) -> None:
        # The hot path: one text delta per upstream chunk, framed without building a dict.
        self._out.append(
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
            b'"delta":{"type":"text_delta","text":%b}}\n\n' % (index, orjson.dumps(text))
        )

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def feed(self, chunk: dict[str, Any]) -> bytes:
        self._sync_fast()
        self._chunk(chunk)
        self._sync_fast()
        return self._take()

    def finish(self) -> bytes:
        self._sync_fast()
        if not self.stopped:
            self._finish(None)
        self._sync_fast()
        return self._take()

    def error(self, message: str, error_type: str = "api_error") -> bytes:
        """An in-stream error event (after the first byte nothing can be retried); ends the message."""
        self.stopped = True
        self._sync_fast()
        body = orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})
        return self._take() + frame_event(body, _E_ERROR)


class MessageCollector(Converter):
    """The same events folded into one Messages response for non-streaming clients."""

    __slots__ = ("fast", "message", "partial")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.message: dict[str, Any] = {}
        self.partial: dict[int, list[str]] = {}
        # The collector step (upstream.gateway.collect uses it): runs of deltas into the open block from their bytes.
        self.fast: AnthropicFold | None = AnthropicFold(self.omit_thinking)

    def _sync_fast(self) -> None:
        """Take the usage the step saw (newer: events reach the two in order); tell it the open block."""
        fast = self.fast
        if fast is None:
            return
        if fast.usage is not None:
            self.usage, fast.usage = fast.usage, None
        fast.ready = self.started and not self.stopped and self.trailing is None
        fast.kind = self.kind
        fast.block = self.message["content"][self.index] if self.kind == TEXT or self.kind == THINKING else None

    def add(self, chunk: dict[str, Any]) -> None:
        self._sync_fast()
        self._chunk(chunk)
        self._sync_fast()

    def _event(self, name: bytes, payload: dict[str, Any]) -> None:
        if name is _E_START:
            self.message = payload["message"]
        elif name is _E_BLOCK_START:
            self.message["content"].append(dict(payload["content_block"]))
        elif name is _E_DELTA:
            block = self.message["content"][payload["index"]]
            delta = payload["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                self.partial.setdefault(payload["index"], []).append(delta["partial_json"])
        elif name is _E_BLOCK_STOP:
            pieces = self.partial.pop(payload["index"], None)
            if pieces is not None:
                self.message["content"][payload["index"]]["input"] = orjson.loads("".join(pieces) or "{}")
        elif name is _E_MESSAGE_DELTA:
            self.message["stop_reason"] = payload["delta"]["stop_reason"]
            self.message["stop_sequence"] = None
            self.message["usage"] = payload["usage"]

    def result(self) -> dict[str, Any]:
        self._sync_fast()
        if not self.stopped:
            self._finish(None)
        return self.message


# -- the local warmup answer (reference §6.5 step 10) -----------------------------------------------------------


def warmup_message(model: str) -> dict[str, Any]:
    return {
        "id": f"msg_warmup_{int(time.time() * 1000)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "OK"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def warmup_events(model: str) -> bytes:
    """The six standard events around a single "OK"."""
    message = warmup_message(model)
    start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 0}}
    events: list[tuple[bytes, dict[str, Any]]] = [
        (_E_START, {"type": "message_start", "message": start}),
        (_E_BLOCK_START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        (_E_DELTA, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "OK"}}),
        (_E_BLOCK_STOP, {"type": "content_block_stop", "index": 0}),
        (
            _E_MESSAGE_DELTA,
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 1},
            },
        ),
        (_E_STOP, {"type": "message_stop"}),
    ]
    return b"".join(frame_event(orjson.dumps(payload), name) for name, payload in events)
