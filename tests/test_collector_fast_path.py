"""The OpenAI chat and Anthropic collectors' shortcuts give byte for byte the answer of the path they bypass.

`ChatCollector.feed` folds text parts straight into its messages (no Piece per event), `upstream.gateway.collect`
takes the usual event to it without `parse_event` and `Stream.note`, and the collector steps `sse.ChatFold` and
`sse.AnthropicFold` (both twins) fold runs of plain events from their bytes: the reference here is each collector
as it was, every event parsed (the chat one's read into Pieces). Every answer of test_event_fast_path's corpus
(text, thinking, tool calls, images, usage shapes, several candidates, odd and error events) and the odd JSON
below is collected both ways, the events handed over one per read, all in one read and three per read; the JSON
answer, the error raised, the usage recorded and the thought signatures remembered must agree.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from conftest import sse_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_event_fast_path import CORPUS, SIG, batchings, event, fast_sim, text, usage

from agfast.convert import anthropic_stream, openai_chat
from agfast.convert.anthropic_stream import MessageCollector
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

PLAIN = event(text("plain "), usage=usage(1))
LAST = event(text(" last"), finish="STOP", usage=usage(9))


def raw(
    parts: str = '{"text":"x"}', *, cand: str = "", response: str = "", top: str = "", candidates: str = ""
) -> bytes:
    """An event written by hand (JSON orjson.dumps never writes): `parts` is the parts array's inside."""
    candidate = candidates or '[{"content":{"role":"model","parts":[' + parts + "]}" + cand + "}]"
    return ('{"response":{"candidates":' + candidate + response + '},"traceId":"t"' + top + "}").encode()


# Events whose JSON the compiled step must read exactly as orjson does, or leave to the collector: each is run
# between a plain event and a finishing one.
ODD_JSON: dict[str, bytes] = {
    "escapes": raw(r'{"text":"caf\u00e9 \ud83c\udf0d \n\t\"\\\/\b\f\r \u0000 \u001f \u2028"}'),
    "escaped thought": raw(r'{"text":"\u00e9\"","thought":true},{"text":"x\ty"}'),
    "lone high surrogate": raw(r'{"text":"\ud83c x"}'),
    "lone low surrogate": raw(r'{"text":"\udf0d"}'),
    "high surrogate then other escape": raw(r'{"text":"\ud83c\u0041"}'),
    "bad escape": raw(r'{"text":"\x41"}'),
    "short unicode escape": raw(r'{"text":"\u00e"}'),
    "raw utf-8": raw('{"text":"é 中文 🌍 \u00e9"}'),
    "invalid utf-8": raw('{"text":"A"}').replace(b"A", b"\xff"),
    "overlong utf-8": raw('{"text":"A"}').replace(b"A", b"\xc0\x81"),
    "utf-8 surrogate": raw('{"text":"A"}').replace(b"A", b"\xed\xa0\x80"),
    "truncated utf-8": raw('{"text":"A"}').replace(b"A", b"\xe2\x82"),
    "above U+10FFFF": raw('{"text":"A"}').replace(b"A", b"\xf4\x90\x80\x80"),
    "raw control character": raw('{"text":"a\x01b"}'),
    "raw line break": raw('{"text":"a\nb"}'),
    "escaped key": raw(r'{"te\u0078t":"escaped key"}'),
    "escaped thought key": raw(r'{"text":"t","th\u006fught":true}'),
    "escaped response key": raw().replace(b'"response"', rb'"respons\u0065"'),
    "non-ascii key": raw('{"text":"t","ключ":1}'),
    "text twice": raw('{"text":"a","text":"b"}'),
    "thought twice": raw('{"text":"a","thought":true,"thought":false}'),
    "candidates twice": raw(response=',"candidates":[]'),
    "response twice": raw(top=',"response":{"candidates":[]}'),
    "usage twice": raw(response=',"usageMetadata":{"candidatesTokenCount":1},"usageMetadata":{"totalTokenCount":2}'),
    "finish twice": raw(cand=',"finishReason":"STOP","finishReason":"MAX_TOKENS"'),
    "trailing garbage": raw() + b"x",
    "trailing white space": b" \r\n\t" + raw() + b" \n",
    "byte order mark": b"\xef\xbb\xbf" + raw(),
    "trailing comma": raw('{"text":"a",}'),
    "missing comma": raw('{"text":"a" "thought":true}'),
    "missing colon": raw('{"text" "a"}'),
    "truncated": raw()[:-5],
    "empty": b"",
    "deep nesting": raw('{"text":"deep","x":' + "[" * 40 + "1" + "]" * 40 + "}"),
    "nesting": raw('{"text":"nested","x":[{"a":[{"b":{"c":[1,2.5,-3e-2,true,false,null,""]}}]}]}'),
    "very deep nesting": raw('{"text":"deeper","x":' + "[" * 1100 + "1" + "]" * 1100 + "}"),
    "numbers": raw('{"text":"n","a":-0,"b":0.5,"c":1E+2,"d":123456789012345678,"e":-1.25e-7}'),
    "big integer": raw('{"text":"n","a":12345678901234567890123}'),
    "infinite number": raw('{"text":"n","a":1e400}'),
    "leading zero": raw('{"text":"n","a":012}'),
    "bare dot": raw('{"text":"n","a":1.}'),
    "lone minus": raw('{"text":"n","a":-}'),
    "NaN": raw('{"text":"n","a":NaN}'),
    "bad literal": raw('{"text":"n","a":tru}'),
    "capital literal": raw('{"text":"n","a":True}'),
    "usage {}": raw(response=',"usageMetadata":{}'),
    "usage null": raw(response=',"usageMetadata":null'),
    "usage list": raw(response=',"usageMetadata":[1]'),
    "usage with floats and nesting": raw(
        response=',"usageMetadata":{"promptTokenCount":1E+2,"x":{"y":[1,{"z":null}]},"candidatesTokenCount":3}'
    ),
    "usage with escapes": raw(response=',"usageMetadata":{"candidatesTokenCount":4,"n\\u00e9":"\\u00e9"}'),
    "finish empty": raw(cand=',"finishReason":""'),
    "finish null": raw(cand=',"finishReason":null'),
    "finish number": raw(cand=',"finishReason":5'),
    "finish escaped": raw(cand=r',"finishReason":"MAX_T\u004fKENS"'),
    "finish unknown": raw(cand=',"finishReason":"OTHER"'),
    "finish before content": raw(candidates='[{"finishReason":"SAFETY","content":{"parts":[{"text":"s"}]}}]'),
    "index 0": raw(cand=',"index":0'),
    "index 0 first": raw(candidates='[{"index":0,"content":{"parts":[{"text":"i"}]}}]'),
    "index 1": raw(cand=',"index":1'),
    "index 0.0": raw(cand=',"index":0.0'),
    "index -0": raw(cand=',"index":-0'),
    "index null": raw(cand=',"index":null'),
    "index string": raw(cand=',"index":"0"'),
    "index true": raw(cand=',"index":false'),
    "index 0e0": raw(cand=',"index":0e0'),
    "thought false": raw('{"text":"tf","thought":false}'),
    "thought null": raw('{"text":"tn","thought":null}'),
    "thought 1": raw('{"text":"t1","thought":1}'),
    "thought string": raw('{"text":"ts","thought":"yes"}'),
    "signature empty": raw('{"text":"se","thoughtSignature":""}'),
    "signature null": raw('{"text":"sn","thoughtSignature":null}'),
    "signature": raw('{"text":"ss","thoughtSignature":"' + SIG + '"}'),
    "signature false": raw('{"text":"sf","thoughtSignature":false}'),
    "call null": raw('{"text":"cn","functionCall":null}'),
    "call empty": raw('{"text":"ce","functionCall":{}}'),
    "call": raw('{"functionCall":{"name":"f","args":{"a":[1]}}}'),
    "image beside text": raw('{"text":"pic","inlineData":{"mimeType":"image/png","data":"iVBO"}}'),
    "image": raw('{"inlineData":{"mimeType":"image/png","data":"iVBO"}}'),
    "text null": raw('{"text":null}'),
    "text number": raw('{"text":5}'),
    "no text": raw('{"thought":true}'),
    "empty part": raw("{}"),
    "part null": raw("null"),
    "part number": raw("1"),
    "parts null": raw(candidates='[{"content":{"parts":null}}]'),
    "parts empty": raw(candidates='[{"content":{"parts":[]}}]'),
    "parts object": raw(candidates='[{"content":{"parts":{}}}]'),
    "parts string": raw(candidates='[{"content":{"parts":"p"}}]'),
    "parts twice": raw(candidates='[{"content":{"parts":[{"text":"a"}],"parts":[{"text":"b"}]}}]'),
    "content null": raw(candidates='[{"content":null}]'),
    "content list": raw(candidates='[{"content":[{"parts":[{"text":"l"}]}]}]'),
    "content string": raw(candidates='[{"content":"c"}]'),
    "content empty": raw(candidates='[{"content":{}}]'),
    "content twice": raw(candidates='[{"content":{"parts":[{"text":"a"}]},"content":{"parts":[{"text":"b"}]}}]'),
    "candidates null": raw(candidates="null"),
    "candidates empty": raw(candidates="[]"),
    "candidates object": raw(candidates="{}"),
    "candidate number": raw(candidates="[1]"),
    "candidate null": raw(candidates="[null]"),
    "candidate empty": raw(candidates="[{}]"),
    "two candidates": raw(candidates='[{"content":{"parts":[{"text":"a"}]}},{"index":1,"content":{"parts":[]}}]'),
    "error null": raw(response=',"error":null'),
    "error": raw(response=',"error":{"code":500,"message":"boom"}'),
    "top-level error beside response": raw(top=',"error":{"code":500,"message":"ignored"}'),
    "no response": b'{"candidates":[{"content":{"parts":[{"text":"bare"}]}}]}',
    "response null": b'{"response":null}',
    "response list": b'{"response":[]}',
    "response empty": b'{"response":{}}',
    "top-level list": b"[]",
    "top-level string": b'"s"',
    "done": b"[DONE]",
}
CASES.update({f"odd json: {name}": [PLAIN, data, LAST] for name, data in ODD_JSON.items()})


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_chat, "new_call_id", lambda: f"call_{next(IDS[0])}")
    monkeypatch.setattr(anthropic_stream, "hex24", lambda: f"{next(IDS[0]):024x}")


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


class Counted:
    """A collector step that counts the events it takes (the collector's state reaches the step through it)."""

    def __init__(self, step: Any) -> None:
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "taken", 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.step, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.step, name, value)

    def fold(self, batch: list[bytes], start: int) -> tuple[int, Any]:
        stop, usage = self.step.fold(batch, start)
        object.__setattr__(self, "taken", self.taken + stop - start)
        return stop, usage


def collected(impl: str | None, batches: list[list[bytes]], taken: list[int] | None = None) -> tuple[Any, ...]:
    """A collected chat answer (`impl`: the collector step's twin, None for the reference): (its JSON, the error
    event, the stream's usage for the request record, the thought signatures remembered: the latest, and the
    session's). `taken` gets the number of events the step took."""
    IDS[0] = itertools.count()
    cache = SignatureCache.create()
    reader = Reader(cache, "gemini-2.5-flash", "session-1")
    collector = (ReferenceCollector if impl is None else ChatCollector)(reader)
    if impl is not None:
        collector.fast = Counted(sse_module(impl).ChatFold(collector.messages, openai_chat._Message, reader.finish))
    stream = Replay(batches)
    answer, error = b"", None
    try:
        if impl is None:
            reference_collect(stream, collector.feed)
        else:
            asyncio.run(collect(stream, lambda: collector.feed, Failed))
        answer = orjson.dumps(collector.result(model="gpt-4o", created=1764547200, response_id="chatcmpl-fixed"))
    except Failed as exc:
        error = exc.args
    except Exception as exc:  # what the collector does with an odd event, a crash included, is what must agree
        error = (type(exc).__name__, str(exc))
    if taken is not None:
        taken.append(collector.fast.taken)
    return answer, error, stream.usage, (reader.signature, cache.for_session("session-1"))


@pytest.mark.parametrize("name", CASES)
def test_collected_answer_equals_the_reference(impl: str, name: str) -> None:
    for batches in batchings(CASES[name]):
        want = collected(None, batches)
        assert collected(impl, batches) == want, f"{len(batches)} reads"


def test_reference_tells_the_corpus_apart() -> None:
    """The comparison can fail: the corpus answers differ, carry text, reasoning, tool calls and usage, and some
    leave a thought signature behind."""
    answers = {name: collected(None, [events])[0] for name, events in CASES.items() if not name.startswith("odd")}
    assert len(set(answers.values())) == len(answers)
    joined = b"".join(answers.values())
    for field in (b'"reasoning_content":"', b'"tool_calls":[', b'"content":"The answer is 42. Really."'):
        assert field in joined
    assert collected(None, [CASES["thinking then text"]])[3] == (SIG, SIG)


# (odd event, does the step take it) for both twins: what the collector's `feed` would do to it, read from bytes.
TAKEN = [
    ("escapes", True),
    ("raw utf-8", True),
    ("usage with floats and nesting", True),
    ("finish escaped", True),
    ("finish before content", True),
    ("index 0", True),
    ("thought null", True),
    ("signature empty", True),
    ("call null", True),
    ("image beside text", True),
    ("parts null", True),
    ("candidates empty", True),
    ("top-level error beside response", True),
    ("done", True),
    ("invalid utf-8", False),
    ("content string", False),
    ("lone high surrogate", False),
    ("signature", False),
    ("call", False),
    ("two candidates", False),
    ("index 1", False),
    ("usage {}", False),
    ("error null", False),
    ("no response", False),
    ("text null", False),
]


@pytest.mark.parametrize(("name", "taken"), TAKEN)
def test_collector_step_takes_plain_events_only(impl: str, name: str, taken: bool) -> None:
    counts: list[int] = []
    collected(impl, [[ODD_JSON[name], LAST]], counts)
    assert counts == [2 if taken else 1]  # a step starts again after the event it left


def test_collector_step_takes_the_benchmark_answer(impl: str) -> None:
    """All 20 events of the benchmark's answer, finish reason and usage included, in one step per read."""
    for batches in ([fast_sim(20)], [[e] for e in fast_sim(20)]):
        counts: list[int] = []
        got = collected(impl, batches, counts)
        assert counts == [20]
        assert got == collected(None, batches)
        assert b'"finish_reason":"stop"' in got[0] and got[2] is not None


def test_the_two_twins_take_the_same_corpus_events() -> None:
    """The compiled step leaves more to the collector than its twin only for JSON it does not read (ODD_JSON)."""
    for name, events in CASES.items():
        if name.startswith("odd"):
            continue
        counts: list[int] = []
        for impl in ("py", "c"):
            collected(impl, [events], counts)
        assert counts[0] == counts[1], name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([PLAIN, LAST, *ODD_JSON.values(), *CORPUS["simulator, claude thinking"]]),
    cut=st.integers(min_value=0, max_value=10_000),
    edit=st.binary(min_size=0, max_size=4),
    drop=st.integers(min_value=0, max_value=3),
)
def test_mangled_events_collected_as_the_reference(base: bytes, cut: int, edit: bytes, drop: int) -> None:
    """An event with bytes replaced, inserted or dropped anywhere: both twins' answers equal the reference's."""
    at = cut % (len(base) + 1)
    mangled = base[:at] + edit + base[at + drop :]
    events = [PLAIN, mangled, LAST]
    want = collected(None, [events])
    want_message = anthropic_collected(None, "claude", [events])
    for impl in ("py", "c"):
        assert collected(impl, [events]) == want, impl
        assert anthropic_collected(impl, "claude", [events]) == want_message, impl


# The Anthropic collector: (upstream model, thinking omitted) as the Anthropic surface makes it.
ANTHROPIC = {
    "gemini": ("gemini-2.5-flash", False),
    "claude": ("claude-opus-4-6-thinking", False),
    "claude, thinking omitted": ("claude-opus-4-6-thinking", True),
}


def anthropic_collected(
    impl: str | None, flavour: str, batches: list[list[bytes]], taken: list[int] | None = None
) -> tuple[Any, ...]:
    """A collected Anthropic message (`impl` as for `collected`): (its JSON, the error event, the record's usage,
    the thought signatures remembered)."""
    IDS[0] = itertools.count()
    mapped, omit = ANTHROPIC[flavour]
    cache = SignatureCache.create()
    collector = MessageCollector("claude-sonnet-4-5", mapped, cache, "session-1", omit_thinking=omit)
    collector.fast = None if impl is None else Counted(sse_module(impl).AnthropicFold(omit))
    stream = Replay(batches)
    answer, error = b"", None
    try:
        if impl is None:
            reference_collect(stream, collector.add)
        else:
            asyncio.run(collect(stream, lambda: collector.add, Failed))
        answer = orjson.dumps(collector.result())
    except Failed as exc:
        error = exc.args
    except Exception as exc:  # as for `collected`
        error = (type(exc).__name__, str(exc))
    if taken is not None:
        taken.append(collector.fast.taken)  # type: ignore[union-attr]
    return answer, error, stream.usage, (collector.last_sig, cache.for_session("session-1"))


@pytest.mark.parametrize("flavour", ANTHROPIC)
@pytest.mark.parametrize("name", CASES)
def test_collected_message_equals_the_reference(impl: str, flavour: str, name: str) -> None:
    for batches in batchings(CASES[name]):
        want = anthropic_collected(None, flavour, batches)
        assert anthropic_collected(impl, flavour, batches) == want, f"{len(batches)} reads"


@pytest.mark.parametrize("flavour", ANTHROPIC)
def test_anthropic_step_takes_the_benchmark_answer(impl: str, flavour: str) -> None:
    """The benchmark's 20 events but the first (it starts the message and opens the block) and the last (it
    finishes the message)."""
    for batches in ([fast_sim(20)], [[e] for e in fast_sim(20)]):
        counts: list[int] = []
        got = anthropic_collected(impl, flavour, batches, counts)
        assert counts == [18]
        assert got == anthropic_collected(None, flavour, batches)
        assert b'"stop_reason":"end_turn"' in got[0]


def test_reference_messages_tell_the_corpus_apart() -> None:
    """The comparison can fail: the messages differ, and carry text, thinking (unless omitted) and tool use."""
    for flavour, (_, omit) in ANTHROPIC.items():
        answers = {name: anthropic_collected(None, flavour, [events])[0] for name, events in CORPUS.items()}
        assert len(set(answers.values())) == len(answers), flavour
        joined = b"".join(answers.values())
        assert b'"type":"tool_use"' in joined and b'"text":"The answer is 42. Really."' in joined
        assert (b'"thinking":"Let me think about' in joined) != omit


@pytest.mark.parametrize("name", ["index null", "index string", "index true"])
def test_candidate_index_that_is_not_a_number_is_candidate_zero(impl: str, name: str) -> None:
    """Google's index is 0 or a positive int; a null, string or boolean one is read as candidate 0 (it crashed
    the collector: its choices were sorted by index), as `index 0` is, by the step and by the old path."""
    want = collected(None, [CASES[f"odd json: {name}"]])
    assert want[1] is None and want[0]
    assert want[0] == collected(None, [CASES["odd json: index 0"]])[0]
    assert collected(impl, [CASES[f"odd json: {name}"]]) == want
