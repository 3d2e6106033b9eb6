"""Legacy `/v1/completions` (reference §6.4): a prompt is one user message; answers in `text_completion` shape.

Only the answer text goes into `text` — thoughts are left out in both modes, so streamed and collected
completions agree (the reference prepends reasoning to non-stream text only).
"""

from __future__ import annotations

from typing import Any

import orjson

from agfast import sse
from agfast.convert.openai_chat import DONE, InvalidRequest, Reader, chat_usage

# Fields a completions body shares with chat completions, passed through as they are.
SHARED_FIELDS = (
    "model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "presence_penalty", "frequency_penalty",
)  # fmt: skip


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A completions body → the chat completions body with the prompt as the only user message."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string (token arrays and batches are not supported).", "prompt")
    chat: dict[str, Any] = {k: body[k] for k in SHARED_FIELDS if body.get(k) is not None}
    chat["messages"] = [{"role": "user", "content": prompt}]
    return chat


def _choice(index: int, text: str, reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": reason}


class CompletionStream:
    """Gemini chunks → `text_completion` SSE chunks; `finish()` adds finish_reason, usage and [DONE]."""

    __slots__ = ("_head", "indexes", "reader")

    def __init__(self, reader: Reader, *, model: str, created: int, response_id: str) -> None:
        self.reader = reader
        self._head = b'{"id":"%s","object":"text_completion","created":%d,"model":%s,"choices":[' % (
            response_id.encode(),
            created,
            orjson.dumps(model),
        )
        self.indexes: set[int] = set()

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = []
        for piece in self.reader.read(chunk):
            if piece.text:
                self.indexes.add(piece.index)
                choice = orjson.dumps(_choice(piece.index, piece.text, None))
                out.append(sse.frame_event(self._head + choice + b"]}"))
        return b"".join(out)

    def finish(self) -> bytes:
        reader = self.reader
        indexes = sorted(self.indexes | set(reader.finish)) or [0]
        choices = b",".join(orjson.dumps(_choice(i, "", reader.finish_reason(i, False))) for i in indexes)
        usage = orjson.dumps(chat_usage(reader.usage))
        return sse.frame_event(self._head + choices + b'],"usage":' + usage + b"}") + DONE


class CompletionCollector:
    """Gemini chunks → one `text_completion` object."""

    __slots__ = ("reader", "texts")

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.texts: dict[int, list[str]] = {}

    def feed(self, chunk: dict[str, Any]) -> bytes:
        for piece in self.reader.read(chunk):
            if piece.text:
                self.texts.setdefault(piece.index, []).append(piece.text)
        return b""

    def result(self, *, model: str, created: int, response_id: str) -> dict[str, Any]:
        reader = self.reader
        indexes = sorted(set(self.texts) | set(reader.finish)) or [0]
        return {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [_choice(i, "".join(self.texts.get(i, ())), reader.finish_reason(i, False)) for i in indexes],
            "usage": chat_usage(reader.usage),
        }
