"""The compiled per-chunk converters against their pure-Python source: same chunks in, same bytes out."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import orjson
import pytest
from conftest import compiled_missing
from hypothesis import given, settings
from hypothesis import strategies as st

from agfast.convert import anthropic_stream, openai_chat, twins
from agfast.convert.signatures import SignatureCache

PAIRS = [
    (openai_chat, "agfast.convert._openai_chat_c"),
    (anthropic_stream, "agfast.convert._anthropic_stream_c"),
]
SIG = "c2ln" * 20  # a signature-looking base64 string, long enough to be remembered


def compiled(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        compiled_missing(name)


@pytest.mark.parametrize(("pure", "name"), PAIRS)
def test_twin_is_compiled_from_current_source(pure: ModuleType, name: str) -> None:
    twin = compiled(name)
    assert Path(twin.__file__ or "").suffix == ".so"
    current = hashlib.sha256(Path(pure.__file__ or "").read_bytes()).hexdigest()
    assert twin.__twin_source_sha256__ == current, f"{name} is stale: rebuild it with `pip install -e .`"
    assert twins.load(pure, name, "c") is twin
    assert twins.load(pure, name, "py") is pure


def test_stale_twin_is_refused(tmp_path: Path) -> None:
    edited = tmp_path / "openai_chat.py"
    edited.write_bytes(Path(openai_chat.__file__ or "").read_bytes() + b"\n# edited after the build\n")
    pure = SimpleNamespace(__file__=str(edited), __name__="agfast.convert.openai_chat")
    assert twins.load(pure, "agfast.convert._openai_chat_c", "c") is pure  # type: ignore[arg-type]


def chunk(
    parts: list[dict[str, Any]] | None = None, finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts or []}}
    if finish:
        cand["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [cand], "modelVersion": "gemini-3-flash", "responseId": "resp-1"}
    if usage:
        out["usageMetadata"] = usage
    return out


USAGE = {"promptTokenCount": 40, "candidatesTokenCount": 12, "totalTokenCount": 60, "thoughtsTokenCount": 8}
STREAMS = {
    "text": [chunk([{"text": "Hel"}]), chunk([{"text": "lo, "}]), chunk([{"text": "world"}], "STOP", USAGE)],
    "thinking": [
        chunk([{"text": "Let me think", "thought": True}]),
        chunk([{"text": " more", "thought": True, "thoughtSignature": SIG}]),
        chunk([{"text": "Answer."}], "STOP", USAGE),
    ],
    "tool-call": [
        chunk([{"text": "Checking", "thought": True}]),
        chunk(
            [{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": "3"}}, "thoughtSignature": SIG}]
        ),
        chunk([], "STOP", USAGE),
    ],
    "parallel-calls": [
        chunk(
            [
                {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": SIG},
                {"functionCall": {"name": "b", "args": {"x": [1, 2]}}},
            ],
            "STOP",
            USAGE,
        ),
    ],
    "image-and-length": [
        chunk([{"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]),
        chunk([{"text": "cut"}], "MAX_TOKENS", {**USAGE, "cachedContentTokenCount": 30}),
    ],
    "claude-ids": [
        chunk([{"text": "plan", "thought": True, "thoughtSignature": SIG}]),
        chunk([{"functionCall": {"name": "Bash", "args": {"command": "ls"}, "id": "toolu_1"}}], "STOP", USAGE),
    ],
    "empty": [chunk([], "STOP", USAGE)],
}
SCHEMAS = {"get_weather": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}


class Counter:
    """Deterministic stand-in for os.urandom, so generated ids match across twins."""

    def __init__(self) -> None:
        self.n = 0

    def urandom(self, size: int) -> bytes:
        self.n += 1
        return self.n.to_bytes(size, "big")


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for pure, name in PAIRS:
        for module in (pure, compiled(name)):
            monkeypatch.setattr(module, "os", SimpleNamespace(urandom=Counter().urandom))
    yield


def run_openai(module: ModuleType, chunks: list[dict[str, Any]], stream: bool) -> Any:
    reader = module.Reader(SignatureCache.create(), "gemini-3-flash", "sid-1", SCHEMAS)
    if stream:
        conv = module.ChatStream(
            reader, model="gpt-x", created=1700000000, include_usage=True, response_id="chatcmpl-1"
        )
        return b"".join(conv.feed(c) for c in chunks) + conv.finish()
    collector = module.ChatCollector(reader)
    for c in chunks:
        collector.feed(c)
    return orjson.dumps(collector.result(model="gpt-x", created=1700000000, response_id="chatcmpl-1"))


def run_anthropic(module: ModuleType, chunks: list[dict[str, Any]], stream: bool) -> Any:
    model = "claude-sonnet-4-6"
    if stream:
        conv = module.StreamConverter(model, model, SignatureCache.create(), "sid-1")
        return b"".join(conv.feed(c) for c in chunks) + conv.finish()
    collector = module.MessageCollector(model, model, SignatureCache.create(), "sid-1")
    for c in chunks:
        collector.add(c)
    return orjson.dumps(collector.result())


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "collected"])
@pytest.mark.parametrize("name", list(STREAMS))
def test_twins_convert_identically(deterministic: None, name: str, stream: bool) -> None:
    chunks = STREAMS[name]
    for run, (pure, twin_name) in ((run_openai, PAIRS[0]), (run_anthropic, PAIRS[1])):
        expected = run(pure, chunks, stream)
        assert expected  # the pure twin produced something to compare
        assert run(compiled(twin_name), chunks, stream) == expected


texts = st.lists(st.text(max_size=12), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(pieces=texts, thoughts=texts, finish=st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", None]))
def test_twins_agree_on_random_streams(pieces: list[str], thoughts: list[str], finish: str | None) -> None:
    chunks = [chunk([{"text": t, "thought": True}]) for t in thoughts]
    chunks += [chunk([{"text": t}]) for t in pieces]
    chunks.append(chunk([], finish, USAGE))
    for run, (pure, twin_name) in ((run_openai, PAIRS[0]), (run_anthropic, PAIRS[1])):
        for stream in (True, False):
            assert run(compiled(twin_name), chunks, stream) == run(pure, chunks, stream)
