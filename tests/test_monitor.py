"""The Proxy Monitor over real SQLite files: rows, reconstruction of streams, drops, token stats, queries."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agfast import monitor as monitor_module
from agfast import sse
from agfast.config import load
from agfast.convert import openai_chat as chat
from agfast.convert import openai_responses as responses
from agfast.convert.anthropic_stream import StreamConverter
from agfast.convert.signatures import SignatureCache
from agfast.monitor import (
    DB_NAME,
    LogReader,
    Monitor,
    MonitorUnavailable,
    NoDatabase,
    _where,
    mask_query,
    should_record,
)
from agfast.record import BODY_CAP, RequestRecord
from agfast.sim.answers import Answer, render_chunks

MAPPED = "gemini-3-flash"
PLANTED_KEY = "sk-planted0123456789abcdef"


def record(
    path: str = "/v1/chat/completions",
    protocol: str = "openai",
    *,
    status: int = 200,
    model: str = "gpt-4o",
    account: str = "a@example.com",
    tokens: tuple[int, int, int] = (10, 5, 2),
    stream: bool = False,
    request_body: bytes = b'{"model":"gpt-4o"}',
    response_body: bytes = b'{"id":"x"}',
    error: str = "",
    started_at: float | None = None,
) -> RequestRecord:
    rec = RequestRecord("req-1", "POST", path, protocol, "127.0.0.1", time.time() if started_at is None else started_at)
    rec.status = status
    rec.duration = 0.25
    rec.first_byte = 0.1
    rec.upstream_seconds = 0.2
    rec.model = model
    rec.mapped_model = MAPPED
    rec.account_email = account
    rec.attempts = 2
    rec.retries = ["rate_limited"]
    rec.error = error
    rec.input_tokens, rec.output_tokens, rec.cached_tokens = tokens
    rec.stream = stream
    rec.request_body = request_body
    rec.response_body = response_body
    return rec


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Monitor]:
    mon = Monitor(tmp_path)
    yield mon
    mon.close()


def rows(mon: Monitor) -> list[dict[str, Any]]:
    assert mon.flush()
    return [mon.log(r["id"]) or {} for r in mon.logs(limit=1000)]


# -- simulator-shaped answers, turned into what each protocol's client received ------------------------------

THOUGHT = "Let me think about the weather."
TEXT = "It is sunny in Paris today."
CALL = {"name": "get_weather", "args": {"city": "Paris"}}
# Google's usageMetadata of the answer below: prompt 40 (8 of them cached), output 12 + thoughts 4.
PROMPT, CACHED, CANDIDATES, THOUGHTS = 40, 8, 12, 4


def chunks(*, calls: bool = False) -> list[dict[str, Any]]:
    ans = Answer(
        model=MAPPED, family="gemini", thought=THOUGHT, show_thought=True, text=TEXT,
        calls=[CALL] if calls else [], prompt_tokens=PROMPT, cached_tokens=CACHED,
        candidate_tokens=CANDIDATES, thought_tokens=THOUGHTS,
    )  # fmt: skip
    return render_chunks(ans, 4, "resp-1", "2026-12-01T00:00:00Z")


def openai_chat_bytes(calls: bool) -> bytes:
    reader = chat.Reader(SignatureCache.create(), MAPPED, None)
    stream = chat.ChatStream(reader, model="gpt-4o", created=1, include_usage=True, response_id="chatcmpl-1")
    return b"".join(stream.feed(c) for c in chunks(calls=calls)) + stream.finish()


def openai_responses_bytes(calls: bool) -> bytes:
    reader = chat.Reader(SignatureCache.create(), MAPPED, None)
    obj = responses.response_object({"model": "gpt-5", "input": "x"}, "resp_1", "gpt-5", 1)
    builder = responses.ResponsesBuilder(reader, obj, custom=frozenset(), stream=True)
    return builder.start() + b"".join(builder.feed(c) for c in chunks(calls=calls)) + builder.finish()


def anthropic_bytes(calls: bool) -> bytes:
    conv = StreamConverter("claude-sonnet-4-5", MAPPED, SignatureCache.create())
    return b"".join(conv.feed(c) for c in chunks(calls=calls)) + conv.finish()


def gemini_sse_bytes(calls: bool) -> bytes:
    return b"".join(sse.frame_event(orjson.dumps(c)) for c in chunks(calls=calls))


def gemini_array_bytes(calls: bool) -> bytes:
    return b"[" + b",\r\n".join(orjson.dumps(c) for c in chunks(calls=calls)) + b"]"


# (protocol, path, stream bytes builder, Google's usage: input, output with thoughts, cached)
STREAMS = [
    ("openai", "/v1/chat/completions", openai_chat_bytes, (PROMPT, CANDIDATES + THOUGHTS, CACHED)),
    ("openai", "/v1/responses", openai_responses_bytes, (PROMPT, CANDIDATES + THOUGHTS, CACHED)),
    ("anthropic", "/v1/messages", anthropic_bytes, (PROMPT, CANDIDATES + THOUGHTS, CACHED)),
    ("gemini", "/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse", gemini_sse_bytes,
     (PROMPT, CANDIDATES + THOUGHTS, CACHED)),
    ("gemini", "/v1beta/models/gemini-3-flash:streamGenerateContent", gemini_array_bytes,
     (PROMPT, CANDIDATES + THOUGHTS, CACHED)),
]  # fmt: skip


@pytest.mark.parametrize(("protocol", "path", "build", "usage"), STREAMS, ids=[s[2].__name__ for s in STREAMS])
@pytest.mark.parametrize("calls", [False, True], ids=["text", "tool"])
def test_streamed_answer_is_reconstructed(
    monitor: Monitor, protocol: str, path: str, build: Any, usage: tuple[int, int, int], calls: bool
) -> None:
    body = build(calls)
    monitor.observe(record(path, protocol, stream=True, response_body=body, tokens=usage))
    [row] = rows(monitor)
    doc = orjson.loads(row["response_body"])
    assert doc["text"] == TEXT
    assert doc["thinking"] == THOUGHT
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == usage
    assert (doc["usage"]["input_tokens"], doc["usage"]["output_tokens"], doc["usage"]["cached_tokens"]) == usage
    if calls:
        [call] = doc["tool_calls"]
        assert call["name"] == "get_weather" and orjson.loads(call["arguments"]) == {"city": "Paris"}
    else:
        assert "tool_calls" not in doc
    assert row["stream"] is True and row["protocol"] == protocol


def test_a_stream_is_stored_as_its_events_and_reconstructed_when_read(monitor: Monitor) -> None:
    """Rows nobody opens cost no parsing: the writer stores the events, `log(id)` consolidates them."""
    events = anthropic_bytes(False)
    monitor.observe(record("/v1/messages", "anthropic", stream=True, response_body=events))
    assert monitor.flush()
    with sqlite3.connect(monitor.path) as conn:
        [(stored,)] = conn.execute("SELECT response_body FROM request_logs").fetchall()
    assert stored == events.decode()
    [summary] = monitor.logs()
    assert orjson.loads(monitor.log(summary["id"])["response_body"])["text"] == TEXT


def test_stream_cut_at_the_cap_keeps_what_it_holds(monitor: Monitor) -> None:
    body = anthropic_bytes(False)
    cut = body[: body.index(b"message_delta") - 20]
    monitor.observe(record("/v1/messages", "anthropic", stream=True, response_body=cut))
    [row] = rows(monitor)
    assert orjson.loads(row["response_body"])["text"] == TEXT


# (protocol, path, body the client got)
COLLECTED = [
    ("openai", "/v1/chat/completions", b'{"choices":[{"message":{"content":"hi"}}]}'),
    ("anthropic", "/v1/messages", b'{"type":"message","content":[{"type":"text","text":"hi"}]}'),
    ("gemini", "/v1beta/models/gemini-3-flash:generateContent", b'{"candidates":[]}'),
]


@pytest.mark.parametrize(("protocol", "path", "body"), COLLECTED, ids=[c[0] for c in COLLECTED])
def test_collected_row_has_every_field(monitor: Monitor, protocol: str, path: str, body: bytes) -> None:
    rec = record(path, protocol, response_body=body)
    monitor.observe(rec)
    [row] = rows(monitor)
    assert row["response_body"] == body.decode() and row["request_body"] == rec.request_body.decode()
    expected = {
        "request_id": "req-1", "method": "POST", "url": path, "status": 200, "duration": 250, "first_byte": 100,
        "upstream": 200, "model": "gpt-4o", "mapped_model": MAPPED, "account_email": "a@example.com",
        "client_ip": "127.0.0.1", "protocol": protocol, "stream": False, "attempts": 2, "retries": ["rate_limited"],
        "error": "", "input_tokens": 10, "output_tokens": 5, "cached_tokens": 2, "truncated": False,
        "bodies_dropped": False,
    }  # fmt: skip
    assert {k: row[k] for k in expected} == expected
    assert abs(row["timestamp"] - rec.started_at * 1000) < 1


def test_skip_rules() -> None:
    cases = [
        ("/v1/chat/completions", True),
        ("/v1beta/models/g:generateContent?alt=sse", True),
        ("/v1/api/event_logging/batch", False),
        ("/api/logs", False),
        ("/internal/warmup", False),
    ]
    assert [(path, should_record(path)) for path, _ in cases] == cases


def test_skipped_paths_leave_no_row_and_no_tokens(monitor: Monitor) -> None:
    monitor.observe(record("/v1/api/event_logging/batch", "anthropic"))
    assert rows(monitor) == []
    assert monitor.stats_summary()["requests"] == 0


def test_queue_full_drops_bodies_first_then_rows(tmp_path: Path) -> None:
    mon = Monitor(tmp_path, queue_size=4)
    try:
        assert mon.pause()  # the writer takes nothing until resumed: a stalled disk
        sent = 10
        for _ in range(sent):
            mon.observe(record())  # never blocks although nothing is written
        # Two records (half the queue) keep their bodies, two more queue without, six are dropped.
        assert mon.status() | {"path": ""} == {
            "enabled": True, "queued": 4, "queue_size": 4, "dropped_rows": 6, "dropped_bodies": 2,
            "write_errors": 0, "retention_days": 30, "path": "",
        }  # fmt: skip
        mon.resume()
        written = list(reversed(rows(mon)))
        assert [r["request_body"] is not None for r in written] == [True, True, False, False]
        assert [r["bodies_dropped"] for r in written] == [False, False, True, True]
        # Token counts lose nothing: every request is in the table.
        assert mon.stats_summary()["requests"] == sent
        assert mon.stats_summary()["input_tokens"] == sent * 10
        mon.observe(record())  # the queue drained: full records again
        assert rows(mon)[0]["request_body"] is not None
    finally:
        mon.close()


def test_monitor_off_keeps_token_stats_only(tmp_path: Path) -> None:
    mon = Monitor(tmp_path, enabled=False)
    try:
        mon.observe(record(tokens=(7, 3, 1)))
        mon.observe(record(tokens=(5, 2, 0), status=429, error="All accounts limited"))
        assert rows(mon) == []
        assert mon.stats_summary() == {
            "requests": 2, "errors": 1, "success": 1, "input_tokens": 12, "output_tokens": 5, "cached_tokens": 1,
            "total_tokens": 17,
        }  # fmt: skip
        mon.set_enabled(True)
        mon.observe(record())
        assert len(rows(mon)) == 1
    finally:
        mon.close()


def test_token_stats_by_hour_account_and_model(monitor: Monitor) -> None:
    now = time.time()
    monitor.observe(record(account="a@example.com", tokens=(10, 5, 0), started_at=now))
    monitor.observe(record(account="a@example.com", tokens=(1, 1, 0), started_at=now))
    monitor.observe(record(account="b@example.com", tokens=(100, 50, 0), started_at=now - 3600))
    monitor.observe(record(account="b@example.com", tokens=(1000, 0, 0), started_at=now - 3 * 86400))
    assert monitor.flush()
    accounts = {a["account"]: (a["requests"], a["input_tokens"], a["output_tokens"]) for a in monitor.stats_accounts()}
    assert accounts == {"a@example.com": (2, 11, 6), "b@example.com": (2, 1100, 50)}
    assert [m["model"] for m in monitor.stats_models()] == [MAPPED]
    hourly = monitor.stats_hourly(24)
    assert [(h["requests"], h["input_tokens"]) for h in hourly] == [(1, 100), (2, 11)]
    assert hourly[-1]["timestamp"] == int(now) // 3600 * 3600
    daily = monitor.stats_daily(7)
    assert sum(d["input_tokens"] for d in daily) == 1111 and daily[0]["input_tokens"] == 1000
    with sqlite3.connect(tmp_db(monitor)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM token_stats").fetchone()[0] == 3


def tmp_db(mon: Monitor) -> Path:
    return mon.path


def test_retention_deletes_old_rows_at_start(tmp_path: Path) -> None:
    mon = Monitor(tmp_path)
    mon.observe(record(started_at=time.time() - 31 * 86400))
    mon.observe(record(started_at=time.time() - 29 * 86400))
    mon.observe(record())
    assert len(rows(mon)) == 3
    mon.close()
    again = Monitor(tmp_path, retention_days=30)
    try:
        assert len(rows(again)) == 2
        again.set_retention_days(1)  # applied at the writer's next wake, without a restart
        again.observe(record())
        assert again.flush()
        assert again.flush()
        assert len(rows(again)) == 2
        assert again.stats_summary()["requests"] == 4  # token statistics outlive the rows
    finally:
        again.close()


def test_clear_removes_rows_not_token_stats(monitor: Monitor) -> None:
    for _ in range(3):
        monitor.observe(record())
    assert len(rows(monitor)) == 3
    assert monitor.clear() == 3
    assert monitor.count() == 0 and monitor.logs() == []
    assert monitor.stats_summary()["requests"] == 3


def test_filters_and_pagination(monitor: Monitor) -> None:
    for i in range(10):
        monitor.observe(record(model=f"model-{i}", status=500 if i % 3 == 0 else 200))
    monitor.observe(record(model="100%_literal", error="stream cut", status=200))
    assert monitor.flush()
    assert monitor.count() == 11
    assert monitor.count(errors_only=True) == 5  # four 500s and one in-stream error
    assert [r["model"] for r in monitor.logs(limit=3)] == ["100%_literal", "model-9", "model-8"]
    assert [r["model"] for r in monitor.logs(limit=3, offset=3)] == ["model-7", "model-6", "model-5"]
    assert [r["model"] for r in monitor.logs(filter="model-1")] == ["model-1"]
    assert [r["model"] for r in monitor.logs(filter="%_")] == ["100%_literal"]  # LIKE wildcards are literal
    assert monitor.count(filter="model-", errors_only=True) == 4
    assert all("request_body" not in r and "response_body" not in r for r in monitor.logs())
    assert monitor.log(10**9) is None


def test_secrets_never_reach_the_database(tmp_path: Path) -> None:
    # A record carries no headers at all: nothing an Authorization or x-api-key header held can be stored.
    # (`key_name` is the name an operator gave a named API key, never the key.)
    fields = set(RequestRecord.__slots__) - {"key_name"}
    assert not any("header" in name or "auth" in name or "key" in name for name in fields)
    mon = Monitor(tmp_path)
    try:
        # Gemini clients send the key in the query string; the stored URL masks it.
        mon.observe(record(f"/v1beta/models/gemini-3-flash:generateContent?key={PLANTED_KEY}&alt=sse", "gemini"))
        [row] = rows(mon)
        assert row["url"] == "/v1beta/models/gemini-3-flash:generateContent?key=***&alt=sse"
    finally:
        mon.close()
    for path in tmp_path.iterdir():
        assert PLANTED_KEY.encode() not in path.read_bytes(), path


def test_mask_query() -> None:
    assert mask_query("/v1/models") == "/v1/models"
    assert mask_query("/x?alt=sse&KEY=abc&api_key=d&keep=1") == "/x?alt=sse&KEY=***&api_key=***&keep=1"


def test_bodies_over_the_cap_are_cut_and_flagged(tmp_path: Path) -> None:
    mon = Monitor(tmp_path, max_body_bytes=100)
    try:
        mon.observe(record(request_body=b"x" * 500))
        mon.observe(record(response_body=b"y" * BODY_CAP))  # cut by the driver: exactly the record's cap
        mon.observe(record())
        first, second, third = reversed(rows(mon))
        assert first["request_body"] == "x" * 100 and first["truncated"]
        assert second["truncated"] and not third["truncated"]
    finally:
        mon.close()


def test_reader_without_database(tmp_path: Path) -> None:
    with pytest.raises(NoDatabase):
        LogReader(tmp_path / DB_NAME).logs()


def test_reads_while_the_writer_writes(monitor: Monitor) -> None:
    reader = LogReader(monitor.path)
    for i in range(200):
        monitor.observe(record())
        if i % 50 == 0:
            reader.count()  # WAL: a reader never waits for the writer
    assert monitor.flush()
    assert reader.count() == 200


def test_from_config_and_live_configure(tmp_path: Path) -> None:
    cfg = load({"data_dir": str(tmp_path)}, {"AGFAST_MONITOR_ENABLED": "false", "AGFAST_MONITOR_MAX_BODY_BYTES": "4"})
    mon = Monitor.from_config(cfg)
    try:
        assert mon.path == tmp_path / DB_NAME and mon.retention_days == 30
        mon.observe(record())
        assert rows(mon) == []
        cfg.monitor_enabled = True
        cfg.monitor_retention_days = 2
        mon.configure(cfg)
        mon.observe(record(request_body=b"abcdefgh"))
        [row] = rows(mon)
        assert row["request_body"] == "abcd" and row["truncated"]
        assert mon.retention_days == 2
    finally:
        mon.close()


@pytest.mark.parametrize("spoil", ["directory", "garbage"])
def test_unusable_database_is_one_clear_error(tmp_path: Path, spoil: str) -> None:
    target = tmp_path / DB_NAME
    if spoil == "directory":
        target.mkdir()
    else:
        target.write_bytes(b"this is not a database, just text" * 200)
    with pytest.raises(MonitorUnavailable, match=f"cannot open the monitor database {target}"):
        Monitor(tmp_path)


def test_error_filter_uses_its_index(monitor: Monitor) -> None:
    with sqlite3.connect(monitor.path) as conn:
        where, args = _where("", True)
        plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM request_logs{where} ORDER BY id DESC", args).fetchall()
    assert "request_logs_errors" in str(plan)


def test_a_stream_the_reader_cannot_read_is_stored_raw(monitor: Monitor) -> None:
    odd = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":"many"}}\n\n'
    monitor.observe(record("/v1/messages", "anthropic", stream=True, response_body=odd))
    monitor.observe(record())  # same batch
    odd_row, plain = reversed(rows(monitor))
    assert odd_row["response_body"] == odd.decode() and plain["response_body"] == '{"id":"x"}'


# -- one database, a writer per worker (`--workers N`) -----------------------------------------------------


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another worker's writer in the middle of a transaction: the database's write lock, held."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def test_a_monitor_opening_a_fresh_database_another_worker_holds_waits_for_it(tmp_path: Path) -> None:
    # Two workers start at once on a new data dir: one switches the file to WAL while the other holds it.
    holder = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE early (x)")  # a database still in rollback-journal mode
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    release.start()
    try:
        mon = Monitor(tmp_path)
        try:
            mon.observe(record())
            assert len(rows(mon)) == 1
        finally:
            mon.close()
    finally:
        release.join()
        holder.close()


def test_rows_and_tokens_a_busy_database_refused_are_written_once_it_frees(tmp_path: Path) -> None:
    mon = Monitor(tmp_path, busy_timeout_ms=20)
    holder = hold_write_lock(mon.path)
    try:
        for _ in range(3):
            mon.observe(record())
        mon.flush(timeout=0)
        wait_for(lambda: mon.write_errors >= 2)  # the writer tried, was refused, and tried again
        holder.execute("COMMIT")
        assert len(rows(mon)) == 3
        assert mon.stats_summary()["requests"] == 3
        assert mon.status()["dropped_rows"] == 0
    finally:
        holder.close()
        mon.close()


def test_rows_a_locked_database_still_refuses_at_close_are_counted_as_dropped(tmp_path: Path) -> None:
    mon = Monitor(tmp_path, busy_timeout_ms=20)
    holder = hold_write_lock(mon.path)
    try:
        for _ in range(3):
            mon.observe(record())
        mon.close()
        assert mon.dropped_rows == 3
    finally:
        holder.close()
    assert LogReader(mon.path).count() == 0


@pytest.mark.parametrize("count", [1, 3, 255, 256, 257, 700])
def test_every_row_of_a_batch_lands_once_in_order(tmp_path: Path, count: int) -> None:
    """A batch goes in as a few multi-row INSERTs (powers of two): whatever its size, each record is one row,
    in the order observed, with its own fields (none shifted into a neighbour's columns)."""
    mon = Monitor(tmp_path, queue_size=1024)
    try:
        mon.pause()
        for i in range(count):
            rec = record(tokens=(i, 2 * i, 0))
            rec.request_id = f"req-{i}"
            mon.observe(rec)
        mon.resume()
        got = mon.logs(limit=1000) if mon.flush() else []
        assert [r["request_id"] for r in reversed(got)] == [f"req-{i}" for i in range(count)]
        assert all(r["input_tokens"] == i and r["output_tokens"] == 2 * i for i, r in enumerate(reversed(got)))
        assert mon.stats_summary()["requests"] == count and mon.status()["dropped_rows"] == 0
    finally:
        mon.close()


def test_rows_fit_an_sqlite_that_binds_fewer_variables(tmp_path: Path) -> None:
    """SQLite builds before 3.32 bind at most 999 variables: the biggest statement shrinks to fit."""
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    assert monitor_module._rows_per_statement(conn) == 32  # 26 columns: 38 rows fit, 32 is the power of two
    conn.execute("CREATE TABLE request_logs (" + ", ".join(monitor_module._ROW_COLUMNS) + ")")
    monitor_module._insert(conn, [tuple(range(26))] * 77, 32)
    assert conn.execute("SELECT COUNT(*), SUM(worker) FROM request_logs").fetchone() == (77, 77 * 25)
    conn.close()
