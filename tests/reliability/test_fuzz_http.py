"""The HTTP layer under a seeded mutational fuzzer: whatever bytes arrive, agfast answers well-formed HTTP/1.1
with an allowed status (never a 500), hangs up only after saying so, never hangs, never logs a traceback, and
keeps serving with bounded memory.

Each input is built from a valid request (every route family, proxied routes included so the simulator is hit)
by structural mutations — method, target (`%`-escapes, control bytes, long and odd forms), version, header
names and values, duplicated or conflicting Content-Length / Transfer-Encoding, chunk framing, bodies — then
byte-level ones (flips, inserts of CR/LF/NUL, deletions, repeats, truncation, splices), sometimes several
requests pipelined. Almost every input ends with a `Connection: close` probe request, so the server ends each
connection itself: by answering the probe, by rejecting what came before it, by a phase timeout when a
truncated body swallowed the probe, or by the keep-alive timeout when a body swallowed it exactly. Input `i`
of seed `s` is rebuilt by `build_input(s, i)`.

Bounded in the normal run; `AGFAST_RELIABILITY_FULL=1` runs 500,000 inputs (`AGFAST_FUZZ_SEED` picks the seed,
`AGFAST_FUZZ_HTTP_INPUTS` any other size).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
from campaign import report, size
from fuzzing import Answer, Exchange, FuzzTarget, Malformed, Tally, one_shot, parse_answers, run
from helpers import Reader, connect, encode
from stack import KEY

INPUTS = int(os.environ.get("AGFAST_FUZZ_HTTP_INPUTS", 0)) or size(8_000, 500_000)
SEED = int(os.environ.get("AGFAST_FUZZ_SEED", "20261201"))
# Connections in flight at once: enough to keep both the server and the simulator busy on two cores.
CONCURRENCY = 96
# Phase timeouts of the target: short, so an input that leaves a head or body unfinished ends quickly (408).
PHASE_TIMEOUT = 2
# A connection not closed by then is a hang: the longest legitimate wait is a phase timeout plus the server's
# one-second tick, and a proxied answer from the simulator; the rest is slack for a loaded two-core machine.
DEADLINE = 20.0
# Between the pieces of an input delivered in pieces: long enough that each arrives in its own read.
FRAGMENT_GAP = 0.002
# The body limit of the target: low, so inputs reach the 413 path for the price of a 64 KiB body.
MAX_BODY = 64 * 1024
# Memory the target may gain after warm-up over the whole campaign (per-connection state must not accumulate).
RSS_GROWTH_KIB = 64 * 1024
# The share of inputs measured before RSS is taken as the warm baseline.
WARM_UP = 0.05

# What the server may answer to anything; 500 never (a crash), 501 never (h11's hint is mapped to 400).
ALLOWED = frozenset({200, 204, 400, 401, 403, 404, 405, 408, 413, 414, 429, 431, 502, 503, 505})

# Answers given before the body was read (auth, routing, preflight, size): the body is then read and dropped, and
# when its framing turns out broken the server hangs up without another word, which is all it can do.
EARLY = frozenset({204, 400, 401, 403, 404, 405, 413})

# A keep-alive connection left idle is closed without a word after keepalive_timeout (PHASE_TIMEOUT), counted
# on the server's one-second tick clock: at least a second of quiet. That is how an input ends whose body
# swallowed the probe exactly; a close that says nothing sooner than this after an answer is a fault.
IDLE_CLOSE = 0.5

MODEL = "gemini-3-flash"
BEARER = f"Bearer {KEY}".encode()
PROBE = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

Headers = list[tuple[bytes, bytes]]


class Req:
    """A request as parts, so mutations can target one part and serialisation can mis-frame it on purpose."""

    __slots__ = ("body", "chunked", "headers", "method", "target", "version")

    def __init__(self, method: bytes, target: bytes, headers: Headers, body: bytes = b"", chunked: bool = False):
        self.method = method
        self.target = target
        self.version = b"HTTP/1.1"
        self.headers = headers
        self.body = body
        self.chunked = chunked

    def copy(self) -> Req:
        out = Req(self.method, self.target, list(self.headers), self.body, self.chunked)
        out.version = self.version
        return out


def _json(value: object) -> bytes:
    return orjson.dumps(value)


CHAT = _json({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
MESSAGES = _json({"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
GENERATE = _json({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
JSON_CT = (b"content-type", b"application/json")
HOST = (b"host", b"127.0.0.1")


def _seeds() -> list[Req]:
    auth = (b"authorization", BEARER)
    return [
        Req(b"GET", b"/healthz", [HOST]),
        Req(b"GET", b"/health", [HOST, (b"connection", b"keep-alive")]),
        Req(b"GET", b"/v1/models", [HOST, auth]),
        Req(b"GET", f"/v1beta/models/{MODEL}".encode(), [HOST, (b"x-goog-api-key", KEY.encode())]),
        Req(b"HEAD", b"/api/hello", [HOST]),
        Req(
            b"OPTIONS",
            b"/v1/chat/completions",
            [HOST, (b"origin", b"http://localhost:3000"), (b"access-control-request-method", b"POST")],
        ),
        Req(b"POST", b"/v1/chat/completions", [HOST, auth, JSON_CT], CHAT),
        Req(b"POST", b"/v1/chat/completions", [HOST, auth, JSON_CT], CHAT, chunked=True),
        Req(b"POST", b"/v1/messages", [HOST, (b"x-api-key", KEY.encode()), JSON_CT], MESSAGES),
        Req(
            b"POST",
            f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse".encode(),
            [HOST, (b"x-goog-api-key", KEY.encode()), JSON_CT],
            GENERATE,
        ),
        Req(b"POST", f"/v1/models/{MODEL}:countTokens".encode(), [HOST, auth, JSON_CT], GENERATE),
        Req(b"POST", b"/v1/api/event_logging/batch", [HOST, auth, JSON_CT], b'{"events":[]}'),
        Req(b"POST", b"/v1/completions", [HOST, auth, JSON_CT, (b"expect", b"100-continue")], b'{"prompt":1}'),
        Req(b"GET", b"/v1/v1/chat/completions", [HOST, auth]),
        Req(b"DELETE", b"/v1/responses", [HOST, auth]),
    ]


SEEDS = _seeds()
# Requests that cost an upstream call when they arrive intact: drawn less often, the simulator is the slow part.
PROXIED = frozenset(i for i, r in enumerate(SEEDS) if r.method == b"POST" and b"event_logging" not in r.target)

METHODS = [
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT", b"get", b"PRI",
    b"", b"G\x00T", b"P O", b"\xc3\xa9", b"X" * 300,
]  # fmt: skip
TARGET_BITS = [
    b"%", b"%2", b"%ZZ", b"%00", b"%0d%0a", b"%2F", b"%25", b"%C3%28", b"%FF%FE", b"%E2%82", b"%2e%2e/",
    b"\x00", b"\x7f", b"\t", b" ", b"\r", b"#frag", b"?", b"??a=%", b"//", b"/../", b"/./", b";x", b"\xff",
    b"\xe2\x82\xac", b":", b":generateContent", b":countTokens", b":streamGenerateContent", b"/countTokens",
    b"?alt=sse", b"?key=" + KEY.encode(), b"?key=", b"{model}", b"@", b"\\",
]  # fmt: skip
WHOLE_TARGETS = [
    b"*", b"http://127.0.0.1/healthz", b"127.0.0.1:80", b"", b"healthz", b"/v1beta/models/", b"/v1beta/models/:x",
    b"/v1/models/" + b"m" * 5000, b"/v1beta/models/" + MODEL.encode() + b":" + b"a" * 300,
    b"/v1/chat/completions/responses", b"/responses", b"/v1/messages/count_tokens", b"/%", b"/" + b"a" * 17000,
]  # fmt: skip
VERSIONS = [
    b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/1", b"http/1.1", b"HTTP/1.1x", b"", b"HTTP/11",
    b"HTTP/9.9", b"HTTP/1.1 ", b"HTTP/1.1\x00", b"HTTP /1.1", b"HTTPS/1.1",
]  # fmt: skip
HUGE = b"99999999999999999999999999999"
# Header name → values worth trying: framing that lies or conflicts, hop-by-hop oddities, Host and Origin for
# the browser checks, keys for auth, values echoed back (request id, CORS), and names h11 must refuse.
HEADER_VALUES: dict[bytes, list[bytes]] = {
    b"content-length": [
        b"0", b"5", b"-1", b"+5", b" 5", b"5,5", b"5, 6", b"", b"0x10", b"1e3", HUGE, b"18446744073709551616",
        b"99999", b"100000000",
    ],
    b"transfer-encoding": [
        b"chunked", b"gzip, chunked", b"chunked, gzip", b"Chunked", b"identity", b"xchunked", b"chunked\x0b", b"",
        b"chunked, chunked",
    ],
    b"connection": [b"close", b"keep-alive", b"upgrade", b"x, close"],
    b"upgrade": [b"h2c", b"websocket"],
    b"expect": [b"100-continue", b"200-ok"],
    b"host": [
        b"", b"evil.example", b"127.0.0.1:abc", b"[::1", b"[::1]:1", b"localhost:8045", b"h" * 300, b"\xff\xfe",
    ],
    b"origin": [b"null", b"http://evil.example", b"http://127.0.0.1", b"\x01", b"http://localhost:3000\x7f"],
    b"authorization": [
        b"", b"Bearer", b"Bearer sk-wrong-key-000", KEY.encode(), b"Basic " + b"A" * 2000, b"Bearer \xff",
    ],
    b"x-api-key": [KEY.encode(), b"sk-"],
    b"x-goog-api-key": [KEY.encode() + b"x"],
    b"x-request-id": [b"abc-123", b"a\x7fb", b"r" * 200, b'"}\x1b'],
    b"content-type": [b"text/plain", b"application/json; charset=latin-1", b"\x01"],
    b"accept-encoding": [b"gzip, br"],
    b"x-goog-api-client": [b"google-genai-sdk/3"],
    b"anthropic-beta": [b"x" * 100],
    b"access-control-request-headers": [b"\xff" * 10, b"a\x01b", b"authorization, content-type"],
    b"access-control-request-private-network": [b"true"],
    b"user-agent": [b"\x80" * 50],
    b"x-a": [b"\x00", b"a\tb", b"\x1f"],
    b"": [b"empty-name"],
    b"bad name": [b"v"],
    b"bad:name": [b"v"],
    b"\xc3\xa9": [b"v"],
    b"x-long": [b"v" * 17000],
    b" leading": [b"v"],
    b"x-fold": [b"a\r\n continued"],
}  # fmt: skip
HEADER_PALETTE: Headers = [(name, value) for name, values in HEADER_VALUES.items() for value in values]
CHUNK_EXTENSIONS = [b";a=b", b";" + b"e" * 200, b"; x", b";\x00", b';a="q"']
LINE_ENDS = [b"\n", b"\r", b"\r\r\n", b"\n\r"]
INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b":", b" ", b"\t", b"%", b"\xff", b"\r\n\r\n", b"0\r\n\r\n", b";"]


def serialise(req: Req, rng: random.Random) -> bytes:
    """The request's bytes; framing follows `req.chunked` but the headers may already lie about it."""
    body = req.body
    headers = list(req.headers)
    names = {name.lower() for name, _ in headers}
    if req.chunked:
        if b"transfer-encoding" not in names:
            headers.append((b"transfer-encoding", b"chunked"))
        body = _chunked(body, rng)
    elif body and b"content-length" not in names and b"transfer-encoding" not in names:
        headers.append((b"content-length", b"%d" % len(body)))
    head = [req.method + b" " + req.target + b" " + req.version if req.version else req.method + b" " + req.target]
    head += [name + b": " + value for name, value in headers]
    eol = b"\r\n" if rng.random() < 0.97 else rng.choice(LINE_ENDS)
    return eol.join(head) + eol + eol + body


def _chunked(body: bytes, rng: random.Random) -> bytes:
    """`body` in chunks of random sizes; now and then with odd but valid framing, or framing that lies."""
    out = []
    pos = 0
    while pos < len(body):
        n = rng.randint(1, max(1, len(body) - pos))
        size = b"%x" % n
        roll = rng.random()
        if roll < 0.05:
            size = size.upper()
        elif roll < 0.1:
            size = b"000" + size
        elif roll < 0.15:
            size += rng.choice(CHUNK_EXTENSIONS)
        elif roll < 0.18:
            size = b"%x" % (n + rng.choice((-1, 1, 1000)))  # declared size disagrees with the data
        elif roll < 0.2:
            size = rng.choice((b"ffffffffffffffff", b"-1", b"", b"0x5", b"1" * 40, b"g"))
        out.append(size + b"\r\n" + body[pos : pos + n] + b"\r\n")
        pos += n
    roll = rng.random()
    if roll < 0.9:
        out.append(b"0\r\n\r\n")
    elif roll < 0.95:
        out.append(b"0\r\nx-trailer: 1\r\n\r\n")
    elif roll < 0.97:
        out.append(b"0\r\nbad trailer\r\n\r\n")
    # else: no last chunk at all
    return b"".join(out)


def _mutate_req(req: Req, rng: random.Random) -> None:
    """One structural change to one part of the request."""
    roll = rng.randrange(100)
    if roll < 8:
        req.method = rng.choice(METHODS)
    elif roll < 24:
        bit = rng.choice(TARGET_BITS)
        at = rng.randint(0, len(req.target))
        req.target = req.target[:at] + bit + req.target[at:]
    elif roll < 27:
        req.target = rng.choice(WHOLE_TARGETS)
    elif roll < 33:
        req.version = rng.choice(VERSIONS)
    elif roll < 55:
        req.headers.insert(rng.randint(0, len(req.headers)), rng.choice(HEADER_PALETTE))
    elif roll < 60 and req.headers:
        del req.headers[rng.randrange(len(req.headers))]
    elif roll < 65 and req.headers:
        req.headers.append(rng.choice(req.headers))  # a duplicate, same value
    elif roll < 69 and req.headers:
        i = rng.randrange(len(req.headers))
        name, value = req.headers[i]
        if rng.random() < 0.4:
            req.headers[i] = (_bytes_mutation(name, rng), value)
        else:
            req.headers[i] = (name, _bytes_mutation(value, rng))
    elif roll < 71:
        req.headers += [(b"x-many-%d" % i, b"v") for i in range(rng.choice((50, 101, 500)))]
    elif roll < 78:
        req.chunked = not req.chunked
    elif roll < 86:
        req.body = _bytes_mutation(req.body, rng) if req.body else rng.choice((CHAT, b"{", b"x" * 10))
    elif roll < 88:
        req.body = b"{" * rng.choice((10, 1000, 100_000))  # deep nesting in few bytes
    elif roll < 90:
        req.body = b'{"model":"' + b"m" * (MAX_BODY + rng.randint(-100, 100)) + b'"}'  # about the body limit
    elif roll < 93:
        req.body = b""
    elif roll < 96:
        # Content-Length that disagrees with the body actually sent.
        req.headers.append((b"content-length", b"%d" % max(0, len(req.body) + rng.choice((-3, -1, 1, 7)))))
    else:
        req.headers = [(name.upper() if rng.random() < 0.5 else name, value) for name, value in req.headers]


def _bytes_mutation(data: bytes, rng: random.Random) -> bytes:
    """One byte-level change: flip, insert, delete, repeat or cut."""
    if not data:
        return rng.choice(INSERTS)
    at = rng.randrange(len(data))
    roll = rng.randrange(6)
    if roll == 0:
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    if roll == 1:
        return data[:at] + rng.choice(INSERTS) + data[at:]
    if roll == 2:
        return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
    if roll == 3:
        return data[:at] + data[at + rng.randint(1, 16) :]
    if roll == 4:
        span = data[at : at + rng.randint(1, 32)]
        return data[:at] + span * rng.randint(2, 20) + data[at:]
    return data[:at]


class Input:
    """One campaign input: the bytes, how they are delivered, and whether a probe ends them."""

    __slots__ = ("abort_after", "fragments", "gap", "probe")

    def __init__(self, fragments: list[bytes], probe: bool, gap: float, abort_after: float | None) -> None:
        self.fragments = fragments
        self.probe = probe
        self.gap = gap
        self.abort_after = abort_after

    @property
    def data(self) -> bytes:
        return b"".join(self.fragments)


def build_input(seed: int, index: int) -> Input:
    """Input `index` of the campaign `seed` (the same on every run)."""
    rng = random.Random(seed * 1_000_003 + index)
    parts = []
    for _ in range(1 if rng.random() < 0.75 else rng.randint(2, 3)):
        pick = rng.randrange(len(SEEDS))
        if pick in PROXIED and rng.random() < 0.4:
            pick = rng.randrange(len(SEEDS))  # proxied requests are drawn less often
        req = SEEDS[pick].copy()
        for _ in range(rng.choice((0, 1, 1, 2, 3, 5))):
            _mutate_req(req, rng)
        data = serialise(req, rng)
        if rng.random() < 0.3:
            for _ in range(rng.randint(1, 4)):
                data = _bytes_mutation(data, rng)
        parts.append(data)
    if rng.random() < 0.03:
        other = serialise(SEEDS[rng.randrange(len(SEEDS))], rng)
        parts.append(other[rng.randrange(len(other)) :])  # a splice: the tail of another request
    probe = rng.random() < 0.97
    if probe:
        parts.append(PROBE)
    data = b"".join(parts)
    roll = rng.random()
    if roll < 0.12:
        # In pieces a little apart: the server parses a head or body that arrives bit by bit.
        cuts = sorted(rng.randrange(1, len(data)) for _ in range(rng.randint(1, 4)) if len(data) > 1)
        bounds = [0, *cuts, len(data)]
        pieces = [data[a:b] for a, b in pairwise(bounds) if b > a]
        return Input(pieces or [data], probe, FRAGMENT_GAP, None)
    if roll < 0.15:
        # The client leaves mid-exchange (before, during or after its answer): only the server's log can tell.
        return Input([data], probe, 0.0, rng.choice((0.0, 0.001, 0.005, 0.02)))
    return Input([data], probe, 0.0, None)


# -- the oracle ----------------------------------------------------------------------------------------------


def judge(sent: bytes, probe: bool, exchange: Exchange | None, tally: Tally) -> None:
    """Check everything the server said on one connection; record what was wrong."""
    if exchange is None:
        tally.fail("hang", sent, b"")
        return
    got = exchange.data
    try:
        answers = parse_answers(got, may_be_head=b"HEAD" in sent.upper())
    except Malformed:
        tally.fail("malformed answer", sent, got)
        return
    if not answers:
        if probe:
            tally.fail("closed without an answer", sent, got)
        return
    for answer in answers:
        tally.statuses[answer.status] = tally.statuses.get(answer.status, 0) + 1
        problem = _answer_problem(answer)
        if problem:
            tally.fail(problem, sent, got)
            return
    if any(a.headers.get(b"connection") == b"close" for a in answers[:-1]):
        tally.fail("kept talking after connection: close", sent, got)
    elif (
        probe
        and answers[-1].headers.get(b"connection") != b"close"
        and answers[-1].status not in EARLY
        and exchange.quiet < IDLE_CLOSE
    ):
        tally.fail("closed without saying so", sent, got)


def _answer_problem(answer: Answer) -> str:
    if answer.status not in ALLOWED:
        return f"status {answer.status}"
    if b"x-request-id" not in answer.headers:
        return "no x-request-id"
    if answer.status >= 400 and answer.body:
        try:
            doc = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return "error body is not JSON"
        if not isinstance(doc, dict) or "error" not in doc:
            return "error body has no error envelope"
        if b"Traceback" in answer.body:
            return "traceback in an answer"
    return ""


# -- the campaign --------------------------------------------------------------------------------------------


@pytest.fixture
def target(tmp_path: Path) -> Iterator[FuzzTarget]:
    settings = {
        "auth_mode": "all_except_health",
        "header_timeout": PHASE_TIMEOUT,
        "body_timeout": PHASE_TIMEOUT,
        "keepalive_timeout": PHASE_TIMEOUT,
        "max_body_size": MAX_BODY,
        "log_level": "warning",
    }
    with FuzzTarget(tmp_path, **settings) as fuzz_target:
        yield fuzz_target


async def _campaign(target: FuzzTarget, tally: Tally, rss: list[int]) -> None:
    port = target.port
    next_index = iter(range(INPUTS))
    warm_at = int(INPUTS * WARM_UP)
    sample_every = max(1, INPUTS // 50)

    async def worker() -> None:
        for index in next_index:
            case = build_input(SEED, index)
            try:
                exchange = await one_shot(port, case.fragments, DEADLINE, case.gap, case.abort_after)
            except OSError as exc:  # the server refused the connection: down, or its backlog overflowed
                tally.fail(f"connect failed: {exc}", case.data, b"")
            else:
                if case.abort_after is None:
                    judge(case.data, case.probe, exchange, tally)
            tally.inputs += 1
            if index % sample_every == 0 and index >= warm_at:
                rss.append(target.rss_kib())

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def test_http_layer_survives_mutated_requests(target: FuzzTarget) -> None:
    tally = Tally()
    rss: list[int] = []
    started = time.monotonic()
    run(_campaign(target, tally, rss))
    seconds = time.monotonic() - started
    alive = target.alive()
    health = _healthz(target.port) if alive else 0
    code, peak = target.finish()
    watch = target.watch
    assert watch is not None
    report(
        "http fuzz",
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
    assert health == 200
    assert code == 0
    assert watch.bad == 0, watch.report()
    assert not tally.failures, f"{tally.failures}\n{tally.describe()}"
    assert tally.inputs == INPUTS
    assert max(rss) - rss[0] < RSS_GROWTH_KIB, rss


def _healthz(port: int) -> int:
    with connect(port) as sock:
        sock.sendall(encode("GET", "/healthz"))
        return Reader(sock).read().status
