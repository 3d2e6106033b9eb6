"""Pure-Python reference of the SSE hot path; `_sse.pyx` is its compiled twin and must match it byte for byte."""

from __future__ import annotations

from typing import Any

import orjson

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError

_BOM = b"\xef\xbb\xbf"


def frame_event(data: bytes, event: bytes | None = None) -> bytes:
    """One SSE event; data with line breaks becomes several `data:` lines so no reader splits it wrong."""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join([b"data: " + line + b"\n" for line in lines])
    else:
        body = b"data: " + data + b"\n"
    if event is None:
        return body + b"\n"
    return b"event: " + event + b"\n" + body + b"\n"


def unwrap_response(data: bytes) -> bytes:
    """`{"response": X, "traceId": …}` (a v1internal event) → X as compact JSON; anything else unchanged."""
    if not data.startswith(b'{"response"'):
        return data
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    inner = doc.get("response") if isinstance(doc, dict) else None
    if inner is None:
        return data
    return orjson.dumps(inner)


class SSEDecoder:
    """Incremental SSE parser (WHATWG rules): any chunking of the same bytes yields the same events.

    `feed` returns `(event, data)` pairs; `event` is b"" when the stream named none. Comments, `id` and
    `retry` fields are dropped: nothing downstream of agfast's upstream reader uses them.
    """

    __slots__ = ("_buf", "_data", "_event", "_pending_cr", "_started")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event = b""
        self._pending_cr = False
        self._started = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if not chunk:
            return out
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return out
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        pos = 0
        n = len(buf)
        while pos < n:
            lf = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, lf if lf >= 0 else n)
            if cr >= 0:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == 10 else cr + 1
                else:
                    nxt = cr + 1
                    self._pending_cr = True
            elif lf >= 0:
                end = lf
                nxt = lf + 1
            else:
                break
            self._line(buf[pos:end], out)
            pos = nxt
        self._buf = buf[pos:]
        return out

    def close(self) -> list[tuple[bytes, bytes]]:
        """End of stream: a last event without its blank line is still delivered (lenient, like browsers' data)."""
        out: list[tuple[bytes, bytes]] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        if self._data:
            out.append((self._event, b"\n".join(self._data)))
        self._data = []
        self._event = b""
        return out

    def _line(self, line: bytes, out: list[tuple[bytes, bytes]]) -> None:
        if not line:
            if self._data:
                out.append((self._event, b"\n".join(self._data)))
                self._data = []
            self._event = b""
            return
        colon = line.find(b":")
        if colon == 0:
            return
        if colon < 0:
            field = line
            value = b""
        else:
            field = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value


# -- the per-event fast path: v1internal event bytes → client bytes ------------------------------------------

_DONE = b"[DONE]"
# What a fast converter returns for events [start, stop) of a batch: their output, `stop`, and the last
# usageMetadata among them (None when none carried one).
Converted = tuple[bytes, int, "dict[str, Any] | None"]
_THINKING_KIND, _TEXT_KIND = 1, 2  # convert.anthropic_stream's THINKING and TEXT block kinds
_TEXT_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%b}}\n\n'  # noqa: E501
_THINKING_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"thinking_delta","thinking":%b}}\n\n'  # noqa: E501


def _plain_event(data: bytes) -> tuple[Any, Any] | None:
    """(usageMetadata, parts) of an event that only carries text or thought text for candidate 0, else None.

    None means "not for the fast path": an error event, a finish reason, a function call, a signature, an
    image, several candidates, anything not shaped as expected. `parts` is None when there are none.
    """
    try:
        doc = _loads(data)
    except _JSONDecodeError:
        return None
    if doc.__class__ is not dict:
        return None
    inner = doc.get("response", doc)
    if inner.__class__ is not dict or inner.get("error") is not None:
        return None
    meta = inner.get("usageMetadata")
    if meta is not None and (meta.__class__ is not dict or not meta):
        return None
    candidates = inner.get("candidates")
    if not candidates:
        return meta, None
    if candidates.__class__ is not list or len(candidates) != 1:
        return None
    cand = candidates[0]
    if cand.__class__ is not dict or cand.get("finishReason"):
        return None
    index = cand.get("index", 0)
    if index.__class__ is not int or index != 0:
        return None
    content = cand.get("content")
    if content is None:
        return meta, None
    if content.__class__ is not dict:
        return None
    parts = content.get("parts")
    if not parts:
        return meta, None
    if parts.__class__ is not list:
        return None
    for part in parts:
        if (
            part.__class__ is not dict
            or part.get("text").__class__ is not str
            or part.get("thoughtSignature")
            or part.get("functionCall") is not None
        ):
            return None
    return meta, parts


class ChatDeltas:
    """The per-event fast path of `convert.openai_chat.ChatStream`: text and reasoning deltas of choice 0.

    `head` is the chunk prefix up to the choices array; `started` is the stream's set of started choices,
    shared so whichever path sends choice 0's first delta adds the role. Output is byte for byte what the
    Python converter writes for the same event.
    """

    __slots__ = ("_head", "started", "usage")

    def __init__(self, head: bytes, started: set[int]) -> None:
        self._head = b"data: " + head + b'{"index":0,"delta":{'
        self.started = started
        self.usage: dict[str, Any] | None = None  # the last usageMetadata taken here, until the converter takes it

    def convert(self, batch: list[bytes], start: int) -> Converted:
        """Events `batch[start:stop]` as chunk bytes, stopping before the first one the fast path does not take."""
        out: list[bytes] = []
        usage = None
        k = start
        n = len(batch)
        while k < n:
            data = batch[k]
            if data == _DONE:
                k += 1
                continue
            plain = _plain_event(data)
            if plain is None:
                break
            meta, parts = plain
            if parts is not None:
                reasoning = "".join([p["text"] for p in parts if p.get("thought")])
                text = "".join([p["text"] for p in parts if not p.get("thought")])
                if reasoning or text:
                    out.append(self._chunk(reasoning, text))
            if meta is not None:
                usage = meta
            k += 1
        if usage is not None:
            self.usage = usage
        return b"".join(out), k, usage

    def _chunk(self, reasoning: str, text: str) -> bytes:
        fields = []
        if 0 not in self.started:
            self.started.add(0)
            fields.append(b'"role":"assistant"')
        if reasoning:
            fields.append(b'"reasoning_content":' + _dumps(reasoning))
        if text:
            fields.append(b'"content":' + _dumps(text))
        return self._head + b",".join(fields) + b'},"finish_reason":null}]}\n\n'


class AnthropicDeltas:
    """The per-event fast path of `convert.anthropic_stream.StreamConverter`: deltas into the open block.

    The converter keeps `ready` (message started, not stopped, no signature pending), `kind` and `index`
    (the open block) current after every event it handles itself; an event that needs a block opened or
    closed is left to it. Output is byte for byte what the converter writes for the same event.
    """

    __slots__ = ("index", "kind", "omit_thinking", "ready", "usage")

    def __init__(self, omit_thinking: bool) -> None:
        self.omit_thinking = omit_thinking
        self.ready = False
        self.kind = 0
        self.index = -1
        self.usage: dict[str, Any] | None = None  # the last usageMetadata taken here, until the converter takes it

    def convert(self, batch: list[bytes], start: int) -> Converted:
        """Events `batch[start:stop]` as event bytes, stopping before the first one the fast path does not take."""
        out: list[bytes] = []
        usage = None
        k = start
        n = len(batch)
        while k < n and self.ready:
            data = batch[k]
            if data == _DONE:
                k += 1
                continue
            plain = _plain_event(data)
            if plain is None:
                break
            meta, parts = plain
            if parts is not None:
                events = self._deltas(parts)
                if events is None:
                    break
                out.append(events)
            if meta is not None:
                usage = meta
            k += 1
        if usage is not None:
            self.usage = usage
        return b"".join(out), k, usage

    def _deltas(self, parts: list[dict[str, Any]]) -> bytes | None:
        out: list[bytes] = []
        for part in parts:
            text = part["text"]
            if part.get("thought"):
                if self.kind != _THINKING_KIND:
                    return None
                if text and not self.omit_thinking:
                    out.append(_THINKING_DELTA % (self.index, _dumps(text)))
            elif text:
                if self.kind != _TEXT_KIND:
                    return None
                out.append(_TEXT_DELTA % (self.index, _dumps(text)))
        return b"".join(out)


# -- the collector step: a non-streaming answer's plain events folded into its message -----------------------


def _plain_collected_event(data: bytes) -> tuple[Any, Any, list[dict[str, Any]]] | None:
    """(usageMetadata, finishReason, parts) of an event a collector step folds in as it is, else None (the event
    goes to the collector): an error, a bare event, several candidates or another index, a signature, a function
    call, a part without a text string, anything not shaped as expected."""
    try:
        doc = _loads(data)
    except _JSONDecodeError:
        return None
    if doc.__class__ is not dict:
        return None
    inner = doc.get("response")
    if inner.__class__ is not dict or "error" in inner:
        return None
    meta = inner.get("usageMetadata")
    if meta is not None and (meta.__class__ is not dict or not meta):
        return None
    candidates = inner.get("candidates")
    if candidates is None:
        return meta, None, []
    if candidates.__class__ is not list or len(candidates) > 1:
        return None
    if not candidates:
        return meta, None, []
    cand = candidates[0]
    if cand.__class__ is not dict:
        return None
    index = cand.get("index", 0)
    reason = cand.get("finishReason")
    if index.__class__ is not int or index != 0 or (reason is not None and reason.__class__ is not str):
        return None
    content = cand.get("content")
    if content is not None and content.__class__ is not dict:
        return None
    parts = content.get("parts") if content is not None else None
    if parts is None:
        return meta, reason, []
    if parts.__class__ is not list:
        return None
    for part in parts:
        if (
            part.__class__ is not dict
            or part.get("text").__class__ is not str
            or part.get("thoughtSignature") not in (None, "")
            or part.get("functionCall") is not None
            or part.get("thought") not in (None, True, False)
        ):
            return None
    return meta, reason, parts


class ChatFold:
    """The collector step of `convert.openai_chat.ChatCollector`: runs of plain events folded into choice 0.

    `messages` is the collector's messages by choice (`new_message()` makes one, with `reasoning` and `text`
    lists), `finish` the reader's finish reasons by choice. A run's text and reasoning are appended as one string
    each (the collector joins its lists at the end), its last finish reason and usage kept: the answer is byte
    for byte what the collector makes of the same events.
    """

    __slots__ = ("_finish", "_messages", "_new_message", "usage")

    def __init__(self, messages: dict[int, Any], new_message: Any, finish: dict[int, str]) -> None:
        self._messages = messages
        self._new_message = new_message
        self._finish = finish
        self.usage: dict[str, Any] | None = None  # the last usageMetadata taken here, until the collector takes it

    def fold(self, batch: list[bytes], start: int) -> tuple[int, dict[str, Any] | None]:
        """Events `batch[start:stop]` folded, stopping before the first one the collector must take: (stop, the last
        usageMetadata among them or None)."""
        reasoning: list[str] = []
        text: list[str] = []
        usage = finish = None
        k = start
        n = len(batch)
        while k < n:
            data = batch[k]
            if data == _DONE:
                k += 1
                continue
            plain = _plain_collected_event(data)
            if plain is None:
                break
            meta, reason, parts = plain
            for part in parts:
                if part["text"]:
                    (reasoning if part.get("thought") else text).append(part["text"])
            if meta is not None:
                usage = meta
            if reason:
                finish = reason
            k += 1
        if reasoning or text:
            msg = self._messages.get(0)
            if msg is None:
                msg = self._messages[0] = self._new_message()
            if reasoning:
                msg.reasoning.append("".join(reasoning))
            if text:
                msg.text.append("".join(text))
        if finish is not None:
            self._finish[0] = finish
        if usage is not None:
            self.usage = usage
        return k, usage


class AnthropicFold:
    """The collector step of `convert.anthropic_stream.MessageCollector`: runs of deltas into the open block.

    The collector keeps `ready`, `kind` and `block` (the open text or thinking block) current after every event it
    handles itself, as for `AnthropicDeltas`; an event that would open or close a block, or finish the message, is
    left to it. A run's text is added to the block once.
    """

    __slots__ = ("block", "kind", "omit_thinking", "ready", "usage")

    def __init__(self, omit_thinking: bool) -> None:
        self.omit_thinking = omit_thinking
        self.ready = False
        self.kind = 0
        self.block: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None  # the last usageMetadata taken here, until the collector takes it

    def fold(self, batch: list[bytes], start: int) -> tuple[int, dict[str, Any] | None]:
        """Events `batch[start:stop]` folded, stopping before the first one the collector must take: (stop, the last
        usageMetadata among them or None)."""
        added: list[str] = []
        usage = None
        k = start
        n = len(batch)
        while k < n and self.ready:
            data = batch[k]
            if data == _DONE:
                k += 1
                continue
            plain = _plain_collected_event(data)
            if plain is None or plain[1]:
                break
            meta, _, parts = plain
            texts = self._texts(parts)
            if texts is None:
                break
            added.extend(texts)
            if meta is not None:
                usage = meta
            k += 1
        if added:
            assert self.block is not None
            key = "thinking" if self.kind == _THINKING_KIND else "text"
            self.block[key] += "".join(added)
        if usage is not None:
            self.usage = usage
        return k, usage

    def _texts(self, parts: list[dict[str, Any]]) -> list[str] | None:
        """The texts an event's parts add to the open block, None when one of them needs another block."""
        out = []
        for part in parts:
            text = part["text"]
            if part.get("thought"):
                if self.kind != _THINKING_KIND:
                    return None
                if text and not self.omit_thinking:
                    out.append(text)
            elif text:
                if self.kind != _TEXT_KIND:
                    return None
                out.append(text)
        return out
