"""The OpenAI chat collector folds text parts straight into its messages (no Piece per event); its answer is byte for
byte what folding `Reader.read`'s pieces gives, and `upstream.gateway.collect` takes the usual event to it without
`parse_event` and `Stream.note`: both as they were before those shortcuts are kept here as the reference.

Every answer of test_event_fast_path's corpus (text, thinking, tool calls, images, usage shapes, several candidates,
odd and error events) is collected both ways, the events handed over one per read, all in one read and three per
read; the JSON answer, the error raised, the usage recorded and the thought signatures remembered must agree.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from test_event_fast_path import CORPUS, SIG, batchings, event, text, usage

from agfast.convert import openai_chat
from agfast.convert.openai_chat import ChatCollector, Piece, Reader
from agfast.convert.signatures import SignatureCache
from agfast.upstream.gateway import DONE, Stream, collect, parse_event

# Tool call ids are random; the two runs compared here draw the same ones.
IDS = [itertools.count()]

CASES: dict[str, list[bytes]] = {
    **CORPUS,
    "text, call and text in one event": [
        event(text("before "), {"functionCall": {"name": "f", "args": {"a": 1}}}, text(" after"), usage=usage(2)),
        event(text("t", thought=True), text("", sig=SIG), text("x"), text("y", thought=True)),
        event({"text": None, "thought": True}, text("z"), finish="STOP", usage=usage(4)),
    ],
    "only empty parts": [event(text("")), event(text("", thought=True)), event(finish="STOP", usage=usage(0))],
}


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_chat, "new_call_id", lambda: f"call_{next(IDS[0])}")


class ReferenceCollector(ChatCollector):
    """The collector as it was: every chunk read into Pieces, each piece's joined strings appended."""

    __slots__ = ()

    def feed(self, chunk: dict[str, Any]) -> bytes:
        for piece in self.reader.read(chunk):
            self._add(piece.index, piece)
        return b""

    def _add(self, index: int, piece: Piece) -> None:
        msg = self.messages.get(index)
        if msg is None:
            msg = self.messages[index] = openai_chat._Message()
        if piece.reasoning:
            msg.reasoning.append(piece.reasoning)
        if piece.text:
            msg.text.append(piece.text)
        msg.calls.extend(piece.calls)


class Failed(Exception):
    """An error event, as `collect`'s `fail` raises it."""


class Replay(Stream):
    """An upstream stream whose network reads are the given batches of event payloads."""

    __slots__ = ("batches",)

    def __init__(self, batches: list[list[bytes]]) -> None:
        super().__init__(None, None, [], None)  # type: ignore[arg-type]
        self.batches = batches

    async def pipe(self, on_batch: Any, restart: Any = None) -> Any:
        for batch in self.batches:
            on_batch(batch)


def reference_collect(stream: Replay, feed: Callable[[dict[str, Any]], object]) -> None:
    """`upstream.gateway.collect` as it was: every event through `parse_event` and `Stream.note`."""
    for batch in stream.batches:
        for data in batch:
            if data == DONE:
                continue
            chunk, error = parse_event(data)
            if error is not None:
                raise Failed(*error)
            if chunk is not None:
                stream.note(chunk)
                feed(chunk)


def collected(reference: bool, batches: list[list[bytes]]) -> tuple[bytes, Any, Any, Any]:
    """A collected chat answer: (its JSON, the error event, the stream's usage for the request record, the thought
    signatures remembered: the latest, and the session's)."""
    IDS[0] = itertools.count()
    cache = SignatureCache.create()
    reader = Reader(cache, "gemini-2.5-flash", "session-1")
    collector = (ReferenceCollector if reference else ChatCollector)(reader)
    stream = Replay(batches)
    answer, error = b"", None
    try:
        if reference:
            reference_collect(stream, collector.feed)
        else:
            asyncio.run(collect(stream, lambda: collector.feed, Failed))
        answer = orjson.dumps(collector.result(model="gpt-4o", created=1764547200, response_id="chatcmpl-fixed"))
    except Failed as exc:
        error = exc.args
    return answer, error, stream.usage, (reader.signature, cache.for_session("session-1"))


@pytest.mark.parametrize("name", CASES)
def test_collected_answer_equals_the_reference(name: str) -> None:
    for batches in batchings(CASES[name]):
        want = collected(True, batches)
        assert collected(False, batches) == want, f"{len(batches)} reads"


def test_reference_tells_the_corpus_apart() -> None:
    """The comparison can fail: the corpus answers differ, carry text, reasoning, tool calls and usage, and some
    leave a thought signature behind."""
    answers = {name: collected(True, [events])[0] for name, events in CASES.items()}
    assert len(set(answers.values())) == len(answers)
    joined = b"".join(answers.values())
    for field in (b'"reasoning_content":"', b'"tool_calls":[', b'"content":"The answer is 42. Really."'):
        assert field in joined
    assert collected(True, [CASES["thinking then text"]])[3] == (SIG, SIG)
