"""The Proxy Monitor: one SQLite row per proxied request, and token usage per account, model and hour.

Theory of operation: `observe(record)` runs on the request path, so it only counts tokens into an in-memory
table (under a lock held for a few dict operations) and appends the record to a bounded deque. One writer
thread, with its own sqlite3 connection, drains the deque in batches, builds the rows (streamed answers are
reconstructed here, off the request path) and writes each batch and the token counts in one transaction.
When the writer falls behind, new records first lose their bodies (the row is kept), then whole rows are
dropped; both drops are counted. With `--workers N` every worker has its own writer on the one database (WAL:
one writer at a time, readers never wait): a batch the database refuses (locked by another worker past the busy
timeout, disk full) stays in memory, token counts included, and is written at the next wake; what still
cannot be written when the monitor closes is counted as dropped, never lost silently. Token counts are never
dropped and are kept even with the monitor off. Reads (`logs`, `stats_*`; the admin API and `agfast
logs`/`stats`) open their own connections: in WAL mode readers never wait for the writer. Reference: §8.2.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import deque
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from agfast.config import Config
from agfast.record import BODY_CAP, RequestRecord
from agfast.replay import reconstruct

log = logging.getLogger("agfast.monitor")

DB_NAME = "proxy_logs.db"
# Records waiting for the writer. The writer commits thousands of rows a second, so a full queue means the
# disk stalled; 1024 rows rides out a stall of a few hundred ms at full load without unbounded memory.
DEFAULT_QUEUE_SIZE = 1024
# Rows written per transaction: big enough to amortise the commit, small enough to keep each one short.
BATCH_MAX = 256
# The writer commits what queued up this often: one transaction (and one thread wake-up) per interval instead
# of one per request, which at a thousand requests a second is most of the monitor's cost. Rows show in the
# monitor this much later; token counts reach the database even when no row is queued.
FLUSH_INTERVAL = 0.25
# ...or sooner, when this many rows wait (half a batch: the queue never nears full at full load).
WAKE_DEPTH = BATCH_MAX // 2
# Retention runs at start and then this often (the reference deletes only at start; a server runs for weeks).
RETENTION_INTERVAL = 3600.0
DEFAULT_RETENTION_DAYS = 30
# Body bytes stored per request; the record already caps its bodies at BODY_CAP.
DEFAULT_MAX_BODY_BYTES = BODY_CAP
# A page of `logs()` at most: the admin UI pages through thousands, never asks for them at once.
MAX_PAGE = 1000
# A writer blocked on a locked database (another worker's writer, someone running `sqlite3` on it) waits this
# long before an error; the batch is then kept and tried again at the next wake.
BUSY_TIMEOUT_MS = 5000
# Switching a new file to WAL takes the database exclusively and SQLite's busy handler does not wait for that:
# a writer that finds it held (another worker opening the same new file) tries again this often...
WAL_RETRY_EVERY = 0.02
# ...for at most this long (a worker that cannot open its monitor serves without one).
WAL_RETRY_FOR = BUSY_TIMEOUT_MS / 1000
# Attempts at writing what is left when the monitor closes (each waits the busy timeout) before counting it
# as dropped: shutdown must end even when someone holds the database.
CLOSE_ATTEMPTS = 3
# §8.2's skip rules: Claude Code's telemetry and agfast's own admin/internal routes are not proxied traffic.
SKIP_SUBSTRINGS = ("event_logging", "/api/")
SKIP_PREFIXES = ("/internal/",)
# Query parameters that carry credentials (Gemini clients send the api key as `?key=`); stored masked.
SECRET_QUERY_KEYS = frozenset({"key", "api_key", "apikey", "access_token", "token", "x-api-key", "x-goog-api-key"})
MASK = "***"

SCHEMA = """
CREATE TABLE IF NOT EXISTS request_logs (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    status INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    first_byte INTEGER NOT NULL,
    upstream INTEGER NOT NULL,
    model TEXT NOT NULL,
    mapped_model TEXT NOT NULL,
    account_email TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    protocol TEXT NOT NULL,
    stream INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    retries TEXT NOT NULL,
    error TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    request_body TEXT,
    response_body TEXT,
    truncated INTEGER NOT NULL,
    bodies_dropped INTEGER NOT NULL,
    username TEXT NOT NULL DEFAULT '',
    worker INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS request_logs_timestamp ON request_logs (timestamp);
CREATE INDEX IF NOT EXISTS request_logs_errors ON request_logs (id) WHERE status >= 400 OR error != '';
CREATE TABLE IF NOT EXISTS token_stats (
    hour INTEGER NOT NULL,
    account_email TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    PRIMARY KEY (hour, account_email, model)
);
"""

_ROW_COLUMNS = (
    "timestamp", "request_id", "method", "url", "status", "duration", "first_byte", "upstream", "model",
    "mapped_model", "account_email", "client_ip", "protocol", "stream", "attempts", "retries", "error",
    "input_tokens", "output_tokens", "cached_tokens", "request_body", "response_body", "truncated",
    "bodies_dropped", "username", "worker",
)  # fmt: skip
_ROW_VALUES = "(" + ", ".join("?" * len(_ROW_COLUMNS)) + ")"
# Rows per INSERT statement, powers of two up to a batch: a batch of n rows is one statement per set bit of n
# (one sqlite3_step and one GIL release each, instead of one per row as executemany takes them), from a
# handful of statement texts sqlite3's statement cache keeps prepared.
_INSERT_ROWS = {
    1 << k: f"INSERT INTO request_logs ({', '.join(_ROW_COLUMNS)}) VALUES " + ", ".join([_ROW_VALUES] * (1 << k))
    for k in range(BATCH_MAX.bit_length())
}
_UPSERT_TOKENS = (
    "INSERT INTO token_stats (hour, account_email, model, requests, errors, input_tokens, output_tokens,"
    " cached_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hour, account_email, model) DO UPDATE SET"
    " requests = requests + excluded.requests, errors = errors + excluded.errors,"
    " input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,"
    " cached_tokens = cached_tokens + excluded.cached_tokens"
)
# The summary columns of a row, in the order `logs()` returns them (bodies only from `log(id)`).
SUMMARY_COLUMNS = (
    "id", "timestamp", "request_id", "method", "url", "status", "duration", "first_byte", "upstream", "model",
    "mapped_model", "account_email", "client_ip", "protocol", "stream", "attempts", "retries", "error",
    "input_tokens", "output_tokens", "cached_tokens", "truncated", "bodies_dropped", "username", "worker",
)  # fmt: skip
_SUMMARY_SELECT = "SELECT " + ", ".join(SUMMARY_COLUMNS) + " FROM request_logs"
_FILTER_COLUMNS = (
    "url", "model", "mapped_model", "account_email", "client_ip", "error", "request_id", "protocol", "username",
)  # fmt: skip
_BOOL_COLUMNS = ("stream", "truncated", "bodies_dropped")
_TOKEN_SUMS = (
    "SUM(requests) AS requests, SUM(errors) AS errors, SUM(input_tokens) AS input_tokens,"
    " SUM(output_tokens) AS output_tokens, SUM(cached_tokens) AS cached_tokens"
)


# A queued record with whether its bodies are kept, or a flush() marker the writer sets once it has committed.
_Queued = tuple[RequestRecord, bool] | threading.Event


class NoDatabase(Exception):
    """There is no monitor database yet (the server never ran with this data dir)."""


class MonitorUnavailable(Exception):
    """The database cannot be opened or created (not a database, unwritable); the message says which file."""


def db_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / DB_NAME


def should_record(path: str) -> bool:
    """§8.2: telemetry, admin and internal routes are not logged."""
    for part in SKIP_SUBSTRINGS:  # a plain loop: `any()` over a generator costs a frame per request
        if part in path:
            return False
    return not path.startswith(SKIP_PREFIXES)


def is_error(record: RequestRecord) -> bool:
    """An error answer, or a stream that ended with an in-stream error after a 200."""
    return record.status >= 400 or bool(record.error)


def mask_query(url: str) -> str:
    """The URL with credential-bearing query parameters masked (`?key=sk-…` → `?key=***`)."""
    head, sep, query = url.partition("?")
    if not sep:
        return url
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and name.lower() in SECRET_QUERY_KEYS else item)
    return head + "?" + "&".join(parts)


def _reconstructed(protocol: str, url: str, request_id: str, events: bytes) -> dict[str, Any] | None:
    """The consolidated stream, or None (the raw events are shown) when the bytes defeat the reader."""
    try:
        return reconstruct(protocol, url, events)
    except Exception as exc:  # one odd stream must not cost the detail view
        log.debug("monitor: could not reconstruct %s: %r", request_id, exc)
        return None


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(filter_text: str, errors_only: bool) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if filter_text:
        clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in _FILTER_COLUMNS) + ")")
        args.extend([_like(filter_text)] * len(_FILTER_COLUMNS))
    if errors_only:
        clauses.append("(status >= 400 OR error != '')")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for name in _BOOL_COLUMNS:
        if name in out:
            out[name] = bool(out[name])
    if "retries" in out:
        out["retries"] = out["retries"].split(",") if out["retries"] else []
    return out


def _iso_hour(hour: int) -> str:
    return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour))


def _token_totals(row: sqlite3.Row) -> dict[str, int]:
    totals = {k: int(row[k] or 0) for k in ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens")}
    totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    return totals


class LogReader:
    """Queries over a monitor database, each on its own read-only connection (safe from any thread)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise NoDatabase(f"no monitor database at {self.path}")
        conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        return conn

    def _all(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[sqlite3.Row]:
        conn = self._connect()
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def logs(self, filter: str = "", errors_only: bool = False, limit: int = 100, offset: int = 0) -> list[dict]:
        """Newest first, without bodies; `filter` matches url, models, account, client ip, error, request id."""
        where, args = _where(filter, errors_only)
        limit = max(0, min(int(limit), MAX_PAGE))
        rows = self._all(f"{_SUMMARY_SELECT}{where} ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, max(0, offset)])
        return [_row_dict(r) for r in rows]

    def logs_after(self, after_id: int, errors_only: bool = False, limit: int = MAX_PAGE) -> list[dict]:
        """Rows newer than `after_id`, oldest first (what `agfast logs --follow` prints next)."""
        where, args = _where("", errors_only)
        where = (where + " AND" if where else " WHERE") + " id > ?"
        rows = self._all(f"{_SUMMARY_SELECT}{where} ORDER BY id LIMIT ?", [*args, after_id, limit])
        return [_row_dict(r) for r in rows]

    def count(self, filter: str = "", errors_only: bool = False) -> int:
        where, args = _where(filter, errors_only)
        return int(self._all(f"SELECT COUNT(*) FROM request_logs{where}", args)[0][0])

    def log(self, log_id: int) -> dict[str, Any] | None:
        """One row with its bodies (a reconstructed stream is a JSON document), or None."""
        rows = self._all("SELECT * FROM request_logs WHERE id = ?", (int(log_id),))
        if not rows:
            return None
        row = _row_dict(rows[0])
        body = row.get("response_body")
        if row.get("stream") and body:
            doc = _reconstructed(row["protocol"], row["url"], row["request_id"], body.encode())
            if doc is not None:
                row["response_body"] = orjson.dumps(doc).decode()
        return row

    def stats_summary(self) -> dict[str, int]:
        """All-time totals from the token table (kept even while the monitor is off)."""
        totals = _token_totals(self._all(f"SELECT {_TOKEN_SUMS} FROM token_stats")[0])
        totals["success"] = totals["requests"] - totals["errors"]
        return totals

    def stats_hourly(self, hours: int = 24) -> list[dict[str, Any]]:
        since = (int(time.time()) // 3600 - int(hours) + 1) * 3600
        rows = self._all(
            f"SELECT hour, {_TOKEN_SUMS} FROM token_stats WHERE hour >= ? GROUP BY hour ORDER BY hour", (since,)
        )
        return [{"hour": _iso_hour(r["hour"]), "timestamp": r["hour"], **_token_totals(r)} for r in rows]

    def stats_daily(self, days: int = 7) -> list[dict[str, Any]]:
        since = (int(time.time()) // 86400 - int(days) + 1) * 86400
        rows = self._all(
            f"SELECT hour / 86400 * 86400 AS day, {_TOKEN_SUMS} FROM token_stats WHERE hour >= ?"
            " GROUP BY day ORDER BY day",
            (since,),
        )
        return [{"day": time.strftime("%Y-%m-%d", time.gmtime(r["day"])), **_token_totals(r)} for r in rows]

    def _stats_by(self, column: str, key: str) -> list[dict[str, Any]]:
        rows = self._all(
            f"SELECT {column}, {_TOKEN_SUMS} FROM token_stats GROUP BY {column}"
            " ORDER BY SUM(input_tokens) + SUM(output_tokens) DESC, " + column
        )
        return [{key: r[column], **_token_totals(r)} for r in rows]

    def stats_accounts(self) -> list[dict[str, Any]]:
        """All-time totals per account, most tokens first ("" = answered without an account)."""
        return self._stats_by("account_email", "account")

    def stats_keys(self) -> list[dict[str, Any]]:
        """Totals per named API key (the reference's `username`; "" = the main key), from the request log."""
        rows = self._all(
            "SELECT username, COUNT(*) AS requests, SUM(status >= 400 OR error != '') AS errors,"
            " SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,"
            " SUM(cached_tokens) AS cached_tokens FROM request_logs GROUP BY username"
            " ORDER BY SUM(input_tokens) + SUM(output_tokens) DESC, username"
        )
        return [{"key": r["username"], **_token_totals(r)} for r in rows]

    def stats_models(self) -> list[dict[str, Any]]:
        """All-time totals per model (the model sent to Google), most tokens first."""
        return self._stats_by("model", "model")


class Monitor(LogReader):
    """The request log and token table of one data dir, written by one background thread."""

    def __init__(
        self,
        data_dir: Path | str,
        enabled: bool = True,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> None:
        super().__init__(db_path(data_dir))
        self.busy_timeout = busy_timeout_ms / 1000
        self.enabled = enabled
        self.retention_days = retention_days
        self.queue_size = max(1, queue_size)
        # Bodies ride along only while the queue is less than half full: they are most of a record's memory.
        self.body_slots = max(1, self.queue_size // 2)
        self.max_body_bytes = max_body_bytes
        self.dropped_rows = 0
        self.dropped_bodies = 0
        self.write_errors = 0
        self._queue: deque[_Queued] = deque()
        # Built rows and flush markers of batches the database refused, written first at the next wake.
        self._unwritten: list[tuple[Any, ...]] = []
        self._unwritten_markers: list[threading.Event] = []
        # The process whose answers these rows are (`--workers N`: which worker served the request).
        self.worker = os.getpid()
        self._tokens: dict[tuple[int, str, str], list[int]] = {}
        self._tokens_lock = threading.Lock()
        self._wake = threading.Event()
        self._gate = threading.Event()  # cleared by pause(): the writer holds before its next batch
        self._gate.set()
        self._parked = threading.Event()
        self._closing = False
        try:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            self._conn = self._open_writer()
            self._rows_per_statement = _rows_per_statement(self._conn)
        except (OSError, sqlite3.Error) as exc:
            raise MonitorUnavailable(f"cannot open the monitor database {self.path}: {exc}") from None
        self._last_retention = 0.0
        self._retain()
        self._thread = threading.Thread(target=self._run, name="agfast-monitor", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, cfg: Config) -> Monitor:
        return cls(
            cfg.data_dir,
            enabled=cfg.monitor_enabled,
            retention_days=cfg.monitor_retention_days,
            max_body_bytes=cfg.monitor_max_body_bytes,
        )

    def configure(self, cfg: Config) -> None:
        """Apply what a live config change may change: on/off, retention, body cap."""
        self.set_enabled(cfg.monitor_enabled)
        if cfg.monitor_retention_days != self.retention_days:
            self.set_retention_days(cfg.monitor_retention_days)
        self.max_body_bytes = cfg.monitor_max_body_bytes

    # -- the request path -------------------------------------------------------------------------------------

    def observe(self, record: RequestRecord) -> None:
        """Count tokens and queue the row; never blocks, never touches disk."""
        if not should_record(record.path):
            return
        key = (int(record.started_at) // 3600 * 3600, record.account_email, record.mapped_model or record.model)
        failed = 1 if record.status >= 400 or record.error else 0
        with self._tokens_lock:
            entry = self._tokens.get(key)
            if entry is None:
                self._tokens[key] = [1, failed, record.input_tokens, record.output_tokens, record.cached_tokens]
            else:
                entry[0] += 1
                entry[1] += failed
                entry[2] += record.input_tokens
                entry[3] += record.output_tokens
                entry[4] += record.cached_tokens
        if not self.enabled:
            return
        queue = self._queue
        depth = len(queue)
        if depth >= self.queue_size:
            self.dropped_rows += 1
            return
        keep_bodies = depth < self.body_slots
        if not keep_bodies and (record.request_body or record.response_body):
            self.dropped_bodies += 1
        queue.append((record, keep_bodies))
        if depth + 1 >= WAKE_DEPTH and not self._wake.is_set():
            self._wake.set()

    # -- control ----------------------------------------------------------------------------------------------

    def set_enabled(self, enabled: bool) -> None:
        """Rows on or off at run time; token counts go on either way."""
        self.enabled = bool(enabled)

    def set_retention_days(self, days: int) -> None:
        self.retention_days = int(days)
        self._last_retention = 0.0  # apply at the writer's next wake

    @property
    def queued(self) -> int:
        return len(self._queue)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "queued": len(self._queue) + len(self._unwritten),
            "queue_size": self.queue_size,
            "dropped_rows": self.dropped_rows,
            "dropped_bodies": self.dropped_bodies,
            "write_errors": self.write_errors,
            "retention_days": self.retention_days,
            "path": str(self.path),
        }

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything observed so far (rows and token counts) is committed."""
        if self._closing:
            return False
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout)

    def clear(self) -> int:
        """Delete every request row (token statistics stay); returns how many went."""
        conn = self._open_writer()
        try:
            with conn:
                return conn.execute("DELETE FROM request_logs").rowcount
        finally:
            conn.close()

    def pause(self, timeout: float = 10.0) -> bool:
        """Hold the writer (to copy the database file, say); records queue up and then drop, as on a stall."""
        self._gate.clear()
        self._wake.set()
        return self._parked.wait(timeout)

    def resume(self) -> None:
        self._gate.set()

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        if self._closing:
            return
        self._closing = True
        self._gate.set()
        self._wake.set()
        self._thread.join()
        self._conn.close()

    # -- the writer thread ------------------------------------------------------------------------------------

    def _open_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
        _use_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a power cut may lose the last rows, never the file
        conn.executescript(SCHEMA)
        _add_missing_columns(conn)
        return conn

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            if not self._gate.is_set():
                self._parked.set()
                self._gate.wait()
                self._parked.clear()
            closing = self._closing
            while True:
                batch = self._take(BATCH_MAX)
                if not self._write(batch) or len(batch) < BATCH_MAX:
                    break  # refused: the rest waits for the next wake, behind what was refused
            if closing:
                self._write_last()
                return
            if time.monotonic() - self._last_retention >= RETENTION_INTERVAL:
                self._retain()

    def _take(self, limit: int) -> list[_Queued]:
        queue = self._queue
        pop = queue.popleft
        return [pop() for _ in range(min(len(queue), limit))]  # only this thread takes: the length holds

    def _write(self, batch: list[_Queued]) -> bool:
        """Commit the refused rows, then `batch`, with the token counts; False: refused, all kept for later."""
        with self._tokens_lock:
            tokens, self._tokens = self._tokens, {}
        markers = self._unwritten_markers
        rows = self._unwritten
        row = self._row
        for item in batch:
            if isinstance(item, tuple):
                try:
                    rows.append(row(*item))
                except Exception as exc:  # one odd record must not stop the writer; counted
                    self.dropped_rows += 1
                    log.warning("monitor: could not store request %s: %r", item[0].request_id, exc)
            else:
                markers.append(item)
        try:
            if rows or tokens:
                with self._conn:
                    _insert(self._conn, rows, self._rows_per_statement)
                    self._conn.executemany(_UPSERT_TOKENS, [(*key, *counts) for key, counts in tokens.items()])
        except sqlite3.Error as exc:  # locked by another worker past the busy timeout, disk full: keep it all
            self.write_errors += 1
            self._keep(rows, tokens)
            log.warning("monitor: could not write %d row(s), trying again: %s", len(rows), exc)
            return False
        self._unwritten, self._unwritten_markers = [], []
        for marker in markers:
            marker.set()
        return True

    def _keep(self, rows: list[tuple[Any, ...]], tokens: dict[tuple[int, str, str], list[int]]) -> None:
        """Hold a refused batch for the next try: rows up to the queue's size (older ones dropped, counted),
        token counts merged back (never dropped)."""
        excess = len(rows) - self.queue_size
        if excess > 0:
            self.dropped_rows += excess
            del rows[:excess]
        with self._tokens_lock:
            for key, counts in tokens.items():
                entry = self._tokens.setdefault(key, [0, 0, 0, 0, 0])
                for i, n in enumerate(counts):
                    entry[i] += n

    def _write_last(self) -> None:
        """At close: what the database still refuses after a few tries is counted as dropped."""
        for _ in range(CLOSE_ATTEMPTS):
            if not self._unwritten or self._write([]):
                break
        if self._unwritten:
            self.dropped_rows += len(self._unwritten)
            log.warning("monitor: %d row(s) could not be written before closing", len(self._unwritten))
            self._unwritten = []
        for marker in self._unwritten_markers:
            marker.set()
        self._unwritten_markers = []

    def _row(self, record: RequestRecord, keep_bodies: bool) -> tuple[Any, ...]:
        """The row's 26 values, written out inline (no helper call per value): the writer builds one per request,
        and a Python call costs more instructions than SQLite spends binding a value."""
        request_body: str | None = None
        response_body: str | None = None
        truncated = dropped = 0
        sent, got = record.request_body, record.response_body
        if keep_bodies:
            cap = self.max_body_bytes
            request_body = sent[:cap].decode("utf-8", "replace")
            response_body = got[:cap].decode("utf-8", "replace")
            # Cut here (over the cap), or already by the record's own cap (BODY_CAP).
            longest = max(len(sent), len(got))
            truncated = int(longest > cap or longest >= BODY_CAP)
            # A stream is stored as the events the client got; `log(id)` reconstructs it when someone asks,
            # so the thousands of rows nobody opens cost no parsing.
        elif sent or got:
            dropped = 1
        path = record.path
        retries = record.retries
        return (
            int(record.started_at * 1000), record.request_id, record.method,
            mask_query(path) if "?" in path else path, record.status, round(record.duration * 1000),
            round(record.first_byte * 1000), round(record.upstream_seconds * 1000), record.model,
            record.mapped_model, record.account_email, record.client_ip, record.protocol, int(record.stream),
            record.attempts, ",".join(retries) if retries else "", record.error, record.input_tokens,
            record.output_tokens, record.cached_tokens, request_body, response_body, truncated, dropped,
            record.key_name, self.worker,
        )  # fmt: skip

    def _retain(self) -> None:
        self._last_retention = time.monotonic()
        if self.retention_days <= 0:
            return  # 0 keeps everything
        cutoff = int((time.time() - self.retention_days * 86400) * 1000)
        try:
            with self._conn:
                gone = self._conn.execute("DELETE FROM request_logs WHERE timestamp < ?", (cutoff,)).rowcount
        except sqlite3.Error as exc:
            log.warning("monitor: retention cleanup failed: %s", exc)
            return
        if gone:
            log.info("monitor: deleted %d request log(s) older than %d days", gone, self.retention_days)


# Columns added after the first release: (name, definition). A database written by an older agfast gets them.
ADDED_COLUMNS = (("username", "TEXT NOT NULL DEFAULT ''"), ("worker", "INTEGER NOT NULL DEFAULT 0"))


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(request_logs)")}
    for name, definition in ADDED_COLUMNS:
        if name not in have:
            try:
                conn.execute(f"ALTER TABLE request_logs ADD COLUMN {name} {definition}")
            except sqlite3.OperationalError as exc:  # another worker added it a moment ago
                if "duplicate column" not in str(exc):
                    raise


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the database to WAL, waiting (bounded) while another connection holds a new file."""
    deadline = time.monotonic() + WAL_RETRY_FOR
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_RETRY_EVERY)


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], most: int) -> None:
    """Insert `rows` with as few statements as their count allows (`_INSERT_ROWS`), `most` rows at a time."""
    done, left = 0, len(rows)
    while left:
        size = most
        while size > left:
            size >>= 1
        conn.execute(_INSERT_ROWS[size], tuple(chain.from_iterable(rows[done : done + size])))
        done += size
        left -= size


def _rows_per_statement(conn: sqlite3.Connection) -> int:
    """The biggest `_INSERT_ROWS` statement this SQLite binds (builds before 3.32 allow 999 variables)."""
    fit = min(BATCH_MAX, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(_ROW_COLUMNS))
    return 1 << (fit.bit_length() - 1)
