"""SSE framing and parsing, identical in the pure-Python and Cython twins."""

from __future__ import annotations

import functools
from types import ModuleType

import pytest
from conftest import sse_module
from helpers import AGFAST_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

FRAMES = [
    # (data, event, expected bytes)
    (b'{"a":1}', None, b'data: {"a":1}\n\n'),
    (b"[DONE]", None, b"data: [DONE]\n\n"),
    (b'{"type":"ping"}', b"ping", b'event: ping\ndata: {"type":"ping"}\n\n'),
    (b"line1\nline2", None, b"data: line1\ndata: line2\n\n"),
    (b"a\r\nb\rc", b"x", b"event: x\ndata: a\ndata: b\ndata: c\n\n"),
    (b"", None, b"data: \n\n"),
]


@pytest.mark.parametrize(("data", "event", "expected"), FRAMES)
def test_frame_event(sse: ModuleType, data: bytes, event: bytes | None, expected: bytes) -> None:
    assert sse.frame_event(data, event) == expected


DECODES = [
    # (stream, expected events incl. close())
    (b'data: {"response":{}}\r\n\r\n', [(b"", b'{"response":{}}')]),
    (b"data: a\n\n", [(b"", b"a")]),
    (b"data:a\n\n", [(b"", b"a")]),
    (b"data:  a\n\n", [(b"", b" a")]),
    (b"event: message_start\ndata: {}\n\n", [(b"message_start", b"{}")]),
    (b"data: 1\ndata: 2\n\n", [(b"", b"1\n2")]),
    (b": ping\n\ndata: x\n\n", [(b"", b"x")]),
    (b"id: 7\nretry: 10\ndata: x\n\n", [(b"", b"x")]),
    (b"event: e\n\ndata: x\n\n", [(b"", b"x")]),
    (b"data\n\n", [(b"", b"")]),
    (b"data: a\rdata: b\r\r", [(b"", b"a\nb")]),
    (b"\xef\xbb\xbfdata: bom\n\n", [(b"", b"bom")]),
    (b"data: tail-without-blank-line", [(b"", b"tail-without-blank-line")]),
    (b"data: a\n\ndata: b\n\ndata: [DONE]\n\n", [(b"", b"a"), (b"", b"b"), (b"", b"[DONE]")]),
    (b"\n\n\n", []),
]


def decode_all(sse: ModuleType, pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    dec = sse.SSEDecoder()
    out: list[tuple[bytes, bytes]] = []
    for piece in pieces:
        out.extend(dec.feed(piece))
    out.extend(dec.close())
    return out


@pytest.mark.parametrize(("stream", "expected"), DECODES)
def test_decode_whole(sse: ModuleType, stream: bytes, expected: list[tuple[bytes, bytes]]) -> None:
    assert decode_all(sse, [stream]) == expected


@pytest.mark.parametrize(("stream", "expected"), DECODES)
def test_decode_byte_by_byte(sse: ModuleType, stream: bytes, expected: list[tuple[bytes, bytes]]) -> None:
    assert decode_all(sse, [stream[i : i + 1] for i in range(len(stream))]) == expected


def test_crlf_split_across_chunks(sse: ModuleType) -> None:
    # A CR ending one read and its LF starting the next is one line break, not two (no phantom dispatch).
    dec = sse.SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\ndata: b\r") == []
    assert dec.feed(b"\n\r\n") == [(b"", b"a\nb")]


def test_roundtrip_frame_then_decode(sse: ModuleType) -> None:
    stream = b"".join(sse.frame_event(d, e) for d, e, _ in FRAMES)
    got = decode_all(sse, [stream])
    assert [d for _, d in got] == [b'{"a":1}', b"[DONE]", b'{"type":"ping"}', b"line1\nline2", b"a\nb\nc", b""]
    assert [e for e, _ in got] == [b"", b"", b"ping", b"", b"x", b""]


sse_lines = st.lists(
    st.one_of(
        st.builds(lambda s: b"data: " + s, st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)),
        st.sampled_from([b"", b": comment", b"event: e", b"data", b"id: 1", b"data:x"]),
    ),
    max_size=30,
)
line_ends = st.sampled_from([b"\n", b"\r\n", b"\r"])


@settings(max_examples=300, deadline=None)
@given(lines=sse_lines, ends=st.lists(line_ends, min_size=1, max_size=30), cuts=st.lists(st.integers(0, 400)))
def test_chunking_never_changes_events(lines: list[bytes], ends: list[bytes], cuts: list[int]) -> None:
    """Any split of the same bytes gives the same events, and both twins agree byte for byte."""
    stream = b"".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    py, c = sse_module("py"), sse_module("c")
    whole = decode_all(py, [stream])
    assert decode_all(py, pieces) == whole
    assert decode_all(c, pieces) == whole
    assert decode_all(c, [stream]) == whole


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=200),
    event=st.one_of(st.none(), st.binary(max_size=10).filter(lambda b: b"\n" not in b and b"\r" not in b)),
)
def test_twins_frame_identically(data: bytes, event: bytes | None) -> None:
    assert sse_module("py").frame_event(data, event) == sse_module("c").frame_event(data, event)


def test_selector_honours_no_extensions() -> None:
    import subprocess
    import sys

    sse_module("c")  # without a build, only "py" could be shown
    code = "from agfast import sse; print(sse.IMPLEMENTATION)"
    run = functools.partial(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=AGFAST_ROOT)  # fmt: skip
    assert run(env={"AGFAST_NO_EXTENSIONS": "1", "PATH": ""}).stdout.strip() == "py"
    assert run(env={"PATH": ""}).stdout.strip() == "c"
