"""Every surface's body parsing under a seeded mutational fuzzer, fast enough for hundreds of thousands of inputs.

Each input starts from a valid body of one route (OpenAI chat / completions / responses, Anthropic messages /
count_tokens, Gemini generate / stream / countTokens, streaming variants included) and changes one to four nodes
at any depth: a value of another type, a string or key borrowed from another surface's vocabulary, a subtree
grafted from another surface's body, a deletion, huge / negative / non-finite numbers (as raw JSON text), deep
nesting, unicode and control characters, long strings, repeated list items. Some inputs are then damaged as
text (truncated, flipped, invalid UTF-8, trailing garbage): invalid JSON. Requests go out on keep-alive
connections to agfast (a child process) in front of the simulator, so bodies that stay valid are really served.

Oracle: a well-formed answer with an allowed status, never a 500; errors in the caller's shape; a 200 is JSON,
or SSE framed exactly; nothing hangs; agfast's stderr has no traceback; and the compiled and pure-Python twins
give every input the same status and the same refusal. Input `i` of seed `s` is rebuilt by `build_input(s, i)`.
Bounded in the normal run; `AGFAST_RELIABILITY_FULL=1` runs 500,000 inputs, 250,000 per twin
(`AGFAST_FUZZ_SEED` picks the seed, `AGFAST_FUZZ_BODY_INPUTS` any other size per twin).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from campaign import report, size
from fuzzing import Answer, FuzzTarget, Malformed, Tally, run, take_answer
from helpers import Reader, connect, encode, strict_sse
from surfaces import BASES, CASES, MODEL, SCHEMA, in_shape

from agfast.sim import SKIP_SIGNATURE

# Per implementation (the compiled and the pure-Python hot path each get this many).
INPUTS = int(os.environ.get("AGFAST_FUZZ_BODY_INPUTS", 0)) or size(4_000, 250_000)
SEED = int(os.environ.get("AGFAST_FUZZ_SEED", "20261201"))
# Keep-alive connections in flight: the simulator (in this process) and agfast share two cores.
CONCURRENCY = 48
# A request not answered by then is a hang: generous, the simulator answers in milliseconds.
DEADLINE = 30.0
# The target's body limit: low enough that bodies grown by repetition reach the 413 path.
MAX_BODY = 1024 * 1024
# The largest body the fuzzer sends: past the limit (413s), but repetition must not grow bodies without bound.
MAX_INPUT = 2 * MAX_BODY
# Memory the target may gain after warm-up over the whole campaign.
RSS_GROWTH_KIB = 64 * 1024
WARM_UP = 0.05

# What a body may earn: served, refused in the caller's shape, unknown model, too large, or the simulator's own
# refusal (429 / 502 / 503 passed on). Never a 500.
ALLOWED = frozenset({200, 400, 404, 413, 422, 429, 502, 503})

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
# Bodies that reach further than the sweep's bases: images, schemas, forced tools, thinking with signatures.
RICH: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [
                {"role": "developer", "content": "Answer in JSON."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}"}},
                    ],
                },
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "top_p": 0.9,
            "n": 1,
            "seed": 7,
            "reasoning_effort": "low",
            "stream": True,
        },
    ),
    (
        "/v1/messages",
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 64,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}},
                        {"type": "text", "text": "describe", "cache_control": {"type": "ephemeral"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "sig" * 20},
                        {"type": "text", "text": "A dot."},
                    ],
                },
                {"role": "user", "content": "and now call get_weather"},
            ],
            "tools": [{"name": "get_weather", "description": "w", "input_schema": SCHEMA}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "temperature": 1,
            "top_k": 5,
        },
    ),
    (
        f"/v1/models/{MODEL}:generateContent",
        {
            "contents": [
                {"role": "user", "parts": [{"text": "what"}, {"inlineData": {"mimeType": "image/png", "data": IMAGE}}]},
            ],
            "generationConfig": {"responseMimeType": "application/json", "responseSchema": SCHEMA, "topK": 3},
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        },
    ),
    (
        "/v1/responses",
        {
            "model": MODEL,
            "input": "call get_weather",
            "tools": [{"type": "function", "name": "get_weather", "parameters": SCHEMA, "strict": True}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "r", "schema": SCHEMA}},
            "stream": True,
        },
    ),
]


def _signed(body: dict[str, Any]) -> dict[str, Any]:
    """A Gemini body whose replayed function calls carry a signature, as Gemini 3 requires (the sweep's bases
    only need an answer in shape; these must be served)."""
    for content in body.get("contents", ()):
        for part in content["parts"]:
            if "functionCall" in part:
                part["thoughtSignature"] = SKIP_SIGNATURE
    return body


# (route, base body) for every case: the sweep's cases (streaming variants applied) and the rich ones.
STARTS: list[tuple[str, bytes]] = [
    *(
        (route, orjson.dumps(_signed({**orjson.loads(orjson.dumps(BASES[start])), **extra})))
        for route, start, extra in CASES
    ),
    *((route, orjson.dumps(body)) for route, body in RICH),
]


def _walk(value: Any, strings: set[str], keys: set[str], subtrees: list[Any]) -> None:
    if isinstance(value, dict):
        subtrees.append(value)
        for key, child in value.items():
            keys.add(key)
            _walk(child, strings, keys, subtrees)
    elif isinstance(value, list):
        subtrees.append(value)
        for child in value:
            _walk(child, strings, keys, subtrees)
    elif isinstance(value, str) and len(value) < 40:
        strings.add(value)


def _vocabulary() -> tuple[list[str], list[str], list[bytes]]:
    strings: set[str] = set()
    keys: set[str] = set()
    subtrees: list[Any] = []
    for _, body in STARTS:
        _walk(orjson.loads(body), strings, keys, subtrees)
    # Type names and roles the converters branch on, whether or not a base uses them.
    strings |= {
        "text", "image", "image_url", "input_image", "input_file", "file", "document", "tool_use", "tool_result",
        "thinking", "redacted_thinking", "server_tool_use", "function", "function_call", "function_call_output",
        "message", "output_text", "refusal", "input_audio", "json_object", "json_schema", "any", "none", "tool",
        "required", "auto", "user", "assistant", "system", "developer", "model", "base64", "url", "ephemeral",
        "enabled", "disabled", "adaptive", "high", "medium", "minimal", "object", "array", "string", "integer",
        "number", "boolean", "null", "$ref", "#/definitions/x", "gemini-2.5-pro", "claude-opus-4-6-thinking",
        "gpt-4o", "models/" + MODEL, "", " ", "\u0000", "é", "🙂", "\ud7ff", "\u202e", "a" * 300,
    }  # fmt: skip
    keys |= {"$ref", "anyOf", "oneOf", "allOf", "definitions", "$defs", "additionalProperties", "items", "enum",
             "format", "const", "default", "nullable", "thoughtSignature", "thought", "executableCode", "fileData",
             "cache_control", "citations", "is_error", "name", "id", "role", "content", "parts", "type"}  # fmt: skip
    blobs = [orjson.dumps(tree) for tree in subtrees if len(orjson.dumps(tree)) < 2000]
    return sorted(strings), sorted(keys), blobs


STRINGS, KEYS, SUBTREES = _vocabulary()
# Numbers as raw JSON text (orjson cannot write most of them): beyond 64 bits, beyond float range, odd forms.
RAW_NUMBERS = [
    b"123456789012345678901234567890", b"-9223372036854775809", b"18446744073709551616", b"1e999", b"-1e999",
    b"1e-400", b"-0", b"-0.0", b"1E+2", b"4.9e-324", b"1.7976931348623157e308", b"2147483648", b"-2147483649",
]  # fmt: skip
# Text that makes the body invalid JSON (or JSON orjson refuses): each must be a 400, not a crash.
RAW_INVALID = [b"NaN", b"Infinity", b"-", b"01", b'"\\ud800"', b'"\\udc00x"', b'"\\uZZZZ"', b"tru", b"'x'", b"[1,]"]
PLAIN: list[Any] = [
    None, True, False, 0, 1, -1, 2**31, 2**63 - 1, -(2**63), 0.5, -1.5, 1e308, "", "x", [], [None], {}, [[]],
    {"type": 5}, [{}], [5], {"text": 5}, [{"type": "text", "text": 5}], {"parts": [5]}, [{"name": 5}],
]  # fmt: skip
# Serialised, so each pick is a fresh object (later changes edit containers in place).
PLAIN_BLOBS = [orjson.dumps(value) for value in PLAIN]
SPECIAL = "\x00agfast-raw-%d\x00"
INT64_MIN = -(2**63)  # a placeholder string, replaced by raw text after serialisation


class Slot:
    """A place in the document: a dict key or a list index of its container."""

    __slots__ = ("container", "key")

    def __init__(self, container: Any, key: Any) -> None:
        self.container = container
        self.key = key

    @property
    def value(self) -> Any:
        return self.container[self.key]

    def set(self, value: Any) -> None:
        self.container[self.key] = value


def slots(doc: Any) -> list[Slot]:
    out: list[Slot] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                out.append(Slot(node, key))
                stack.append(child)
        elif isinstance(node, list):
            for i, child in enumerate(node):
                out.append(Slot(node, i))
                stack.append(child)
    return out


def _plain(rng: random.Random) -> Any:
    return orjson.loads(rng.choice(PLAIN_BLOBS))


def _unicode(rng: random.Random) -> str:
    samples = ["é", "🙂", "\u202e", "\u0301", "\ufeff", "\x00", "\x07", "\x1b[0m", "\r\n", "\t", "\\", '"', "\u2028"]
    return "".join(rng.choice(samples) for _ in range(rng.randint(1, 12)))


def _mutate_node(doc: Any, rng: random.Random, raws: list[bytes]) -> Any:
    """One change at a random node; returns the (possibly new) root."""
    nodes = slots(doc)
    if not nodes:
        return _plain(rng)
    slot = rng.choice(nodes)
    value = slot.value
    roll = rng.randrange(100)
    if roll < 15:
        slot.set(_plain(rng))
    elif roll < 30:
        slot.set(rng.choice(STRINGS))
    elif roll < 40:
        del slot.container[slot.key]
    elif roll < 52:
        # A subtree of some surface's body, here: converters meet parts of another protocol.
        grafted = orjson.loads(rng.choice(SUBTREES))
        if isinstance(value, dict) and rng.random() < 0.5:
            value[rng.choice(KEYS)] = grafted
        else:
            slot.set(grafted)
    elif roll < 60:
        if isinstance(value, dict):
            value[rng.choice(KEYS)] = _plain(rng) if rng.random() < 0.7 else rng.choice(STRINGS)
        else:
            slot.set({rng.choice(KEYS): value})
    elif roll < 70:
        raws.append(rng.choice(RAW_NUMBERS) if rng.random() < 0.85 else rng.choice(RAW_INVALID))
        slot.set(SPECIAL % (len(raws) - 1))
    elif roll < 74:
        depth = rng.choice((3, 50, 200, 1000, 100_000))
        raws.append(
            b"[" * depth + b"1" + b"]" * depth if rng.random() < 0.5 else b'{"a":' * depth + b"1" + b"}" * depth
        )
        slot.set(SPECIAL % (len(raws) - 1))
    elif roll < 84:
        if isinstance(value, str):
            at = rng.randint(0, len(value))
            slot.set(value[:at] + _unicode(rng) + value[at:])
        else:
            slot.set(rng.choice(("x" * rng.choice((1000, 100_000)), _unicode(rng), "")))
    elif roll < 92:
        if isinstance(value, list) and value:
            slot.set(value * rng.choice((2, 3, 50)))
        elif isinstance(value, list):
            slot.set([_plain(rng)])
        else:
            slot.set([value, value])
    elif roll < 96 and isinstance(value, (int, float)) and not isinstance(value, bool):
        changed = rng.choice((-value, value * 10**6, 0, -1, value + 0.5, float(value)))
        if isinstance(changed, int) and not INT64_MIN <= changed < 2**64:
            raws.append(b"%d" % changed)  # beyond what orjson writes: raw text
            changed = SPECIAL % (len(raws) - 1)
        slot.set(changed)
    else:
        slot.set([value] if rng.random() < 0.5 else {"value": value})
    return doc


def _damage(text: bytes, rng: random.Random) -> bytes:
    """Text-level damage: the body is no longer the JSON it was."""
    if not text:
        return b"{"
    at = rng.randrange(len(text))
    return rng.choice(
        (
            text[:at],
            text[:at] + bytes([rng.randrange(256)]) + text[at + 1 :],
            text[:at] + b"\xff\xfe" + text[at:],
            text[:at] + b"\xc3" + text[at:],
            b"\xef\xbb\xbf" + text,
            text + b"garbage",
            text + b" \n\t",
            b"",
            b"null",
            b"[]",
            b'"just a string"',
            text.replace(b"{", b'{"model":1,', 1),  # a duplicated key (first wins or last wins: either is fine)
        )
    )


def build_input(seed: int, index: int) -> tuple[str, bytes]:
    """Input `index` of the campaign `seed`: (route, body bytes)."""
    rng = random.Random(seed * 1_000_003 + index)
    route, body = STARTS[rng.randrange(len(STARTS))]
    raws: list[bytes] = []  # raw JSON text, in the body as placeholders until the end
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        before = len(raws)
        changed = orjson.dumps(_mutate_node(orjson.loads(body), rng, raws))
        if len(changed) + sum(map(len, raws)) <= MAX_INPUT:
            body = changed
        else:  # a change that grew the body past the bound is dropped
            del raws[before:]
    for i, raw in enumerate(raws):
        body = body.replace(orjson.dumps(SPECIAL % i), raw, 1)
    if rng.random() < 0.08:
        body = _damage(body, rng)
    return route, body


def request_bytes(route: str, body: bytes) -> bytes:
    return b"POST %b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
        route.encode(),
        len(body),
        body,
    )


# -- the oracle ------------------------------------------------------------------------------------------------


def problem(route: str, answer: Answer) -> str:
    """What is wrong with the answer to a body on `route` ("" when nothing is)."""
    status = answer.status
    if status not in ALLOWED:
        return f"status {status}"
    content_type = answer.headers.get(b"content-type", b"")
    if status >= 400:
        try:
            doc = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return "error body is not JSON"
        if not isinstance(doc, dict) or not isinstance(doc.get("error"), dict) or not in_shape(route, doc):
            return "error not in the caller's shape"
        if "Traceback" in str(doc):
            return "traceback in an answer"
        return ""
    if content_type.startswith(b"text/event-stream"):
        try:
            strict_sse(answer.body, comments=True)
        except AssertionError as exc:
            return f"bad SSE framing: {str(exc)[:80]}"
        return ""
    try:
        orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return "200 body is not JSON"
    return ""


# -- keep-alive client ---------------------------------------------------------------------------------------


class KeepAlive(asyncio.Protocol):
    """One connection, one request at a time: the answer (or the close) resolves the waiting future."""

    __slots__ = ("buf", "closed", "transport", "waiter")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer | None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = take_answer(self.buf)
        except Malformed as exc:
            waiter.set_exception(exc)
            return
        if answer is not None:
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def ask(self, data: bytes, deadline: float) -> Answer | None:
        """The answer to `data`; None when the server closed first; TimeoutError past the deadline."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return await asyncio.wait_for(waiter, deadline)


# Status and refusal digest per input index, per implementation: the second twin's campaign compares its
# answers with the first's.
ANSWERED: dict[str, tuple[array[int], array[int]]] = {}
# Refusals compared word for word between the twins (crc32 of the body); 5xx messages name accounts and timings.
COMPARED_ERRORS = frozenset({400, 404, 413, 422})


@pytest.fixture(params=["c", "py"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FuzzTarget]:
    settings = {"auth_mode": "off", "max_body_size": MAX_BODY, "log_level": "warning"}
    with FuzzTarget(tmp_path, impl=request.param, **settings) as fuzz_target:
        yield fuzz_target


async def _campaign(
    target: FuzzTarget, tally: Tally, rss: list[int], statuses: array[int], refusals: array[int]
) -> None:
    loop = asyncio.get_running_loop()
    port = target.port
    next_index = iter(range(INPUTS))
    warm_at = int(INPUTS * WARM_UP)
    sample_every = max(1, INPUTS // 50)

    async def worker() -> None:
        conn: KeepAlive | None = None
        try:
            for index in next_index:
                route, body = build_input(SEED, index)
                sent = request_bytes(route, body)
                if conn is None or conn.closed:
                    _, conn = await loop.create_connection(KeepAlive, "127.0.0.1", port)
                try:
                    answer = await conn.ask(sent, DEADLINE)
                    if answer is None:
                        tally.fail("closed without an answer", sent, bytes(conn.buf))
                except TimeoutError:
                    tally.fail("hang", sent, bytes(conn.buf))
                    answer = None
                except Malformed as exc:
                    tally.fail("malformed answer", sent, exc.args[0])
                    answer = None
                tally.inputs += 1
                if answer is None or answer.headers.get(b"connection") == b"close":
                    conn.transport.abort()  # type: ignore[union-attr]
                    conn = None
                if answer is not None:
                    tally.statuses[answer.status] = tally.statuses.get(answer.status, 0) + 1
                    statuses[index] = answer.status
                    if answer.status in COMPARED_ERRORS:
                        refusals[index] = zlib.crc32(answer.body)
                    wrong = problem(route, answer)
                    if wrong:
                        tally.fail(wrong, sent, answer.body)
                if index % sample_every == 0 and index >= warm_at:
                    rss.append(target.rss_kib())
        finally:
            if conn is not None:
                conn.transport.abort()  # type: ignore[union-attr]

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def test_every_seed_body_is_served(target: FuzzTarget) -> None:
    """The fuzzer starts from bodies agfast serves: a mutation's 400 is then the mutation's doing."""
    with connect(target.port, timeout=30) as sock:
        reader = Reader(sock)
        refused = []
        for route, body in STARTS:
            sock.sendall(encode("POST", route, body, {"content-type": "application/json"}))
            reply = reader.read()
            if reply.status != 200:
                refused.append((route, reply.status, reply.body[:300]))
    assert not refused


def test_bodies_never_crash_a_surface(target: FuzzTarget) -> None:
    tally = Tally()
    rss: list[int] = []
    statuses = array("H", bytes(2 * INPUTS))
    refusals = array("I", bytes(4 * INPUTS))
    ANSWERED[target.impl] = (statuses, refusals)
    started = time.monotonic()
    run(_campaign(target, tally, rss, statuses, refusals))
    seconds = time.monotonic() - started
    alive = target.alive()
    code, peak = target.finish()
    watch = target.watch
    assert watch is not None
    report(
        f"body fuzz ({target.impl})",
        seed=SEED,
        inputs=tally.inputs,
        seconds=round(seconds, 1),
        inputs_per_s=round(tally.inputs / seconds),
        crashes=0 if alive else 1,
        hangs=tally.count("hang"),
        tracebacks=watch.bad,
        failures=sum(tally.failures.values()),
        rss_warm_kib=rss[0] if rss else 0,
        rss_end_kib=rss[-1] if rss else 0,
        rss_peak_kib=peak,
        statuses=dict(sorted(tally.statuses.items())),
    )
    assert alive, "agfast died during the campaign"
    assert code == 0
    assert watch.bad == 0, watch.report()
    assert not tally.failures, f"{tally.failures}\n{tally.describe()}"
    assert tally.inputs == INPUTS
    assert max(rss) - rss[0] < RSS_GROWTH_KIB, rss
    other = ANSWERED.get("c" if target.impl == "py" else "py")
    if other is not None:
        # The twins are one implementation twice: the same body earns the same status from both, and the same
        # refusal word for word.
        theirs, their_refusals = other
        differ = [i for i in range(INPUTS) if statuses[i] != theirs[i] or refusals[i] != their_refusals[i]]
        examples = [(i, *build_input(SEED, i), theirs[i], statuses[i]) for i in differ[:3]]
        assert not differ, f"{len(differ)} inputs answered differently by the twins: {examples}"
