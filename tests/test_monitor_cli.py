"""`agfast logs` and `agfast stats` as subprocesses against a monitor database filled with real records."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import AGFAST_ROOT, OFFLINE_ENV, run_agfast

from agfast.monitor import Monitor
from agfast.record import RequestRecord

# How long a line from `logs --follow` may take: its poll interval plus a loaded machine's slack.
FOLLOW_WAIT = 15.0


def record(
    i: int, *, status: int = 200, account: str = "a@example.com", model: str = "gemini-3-flash"
) -> RequestRecord:
    rec = RequestRecord(f"req-{i}", "POST", "/v1/messages", "anthropic", "127.0.0.1", time.time())
    rec.status = status
    rec.duration = 1.25
    rec.model = "claude-sonnet-4-5"
    rec.mapped_model = model
    rec.account_email = account
    rec.attempts = 1
    rec.error = "" if status < 400 else "All accounts limited"
    rec.input_tokens, rec.output_tokens, rec.cached_tokens = 100 * (i + 1), 10 * (i + 1), 0
    return rec


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Monitor]:
    mon = Monitor(tmp_path)
    for i in range(5):
        mon.observe(record(i, status=429 if i == 3 else 200, account="b@example.com" if i == 4 else "a@example.com"))
    mon.observe(record(5, model="claude-sonnet-4-5-thinking"))
    assert mon.flush()
    yield mon  # still open: the CLI reads while the server's writer holds the database
    mon.close()


def test_logs_tail_in_order(filled: Monitor, tmp_path: Path) -> None:
    done = run_agfast("logs", "-n", "3", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert "POST /v1/messages  429" in lines[0] and "error: All accounts limited" in lines[0]
    assert "b@example.com" in lines[1] and "in 500 out 50" in lines[1]
    assert "claude-sonnet-4-5→claude-sonnet-4-5-thinking" in lines[2]


def test_logs_errors_json(filled: Monitor, tmp_path: Path) -> None:
    done = run_agfast("logs", "--errors", "--json", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [(r["request_id"], r["status"], r["input_tokens"]) for r in rows] == [("req-3", 429, 400)]
    assert "request_body" not in rows[0]


def test_logs_follow_prints_new_rows(filled: Monitor, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGFAST_")} | OFFLINE_ENV
    proc = subprocess.Popen(
        [sys.executable, "-m", "agfast", "logs", "-n", "1", "--follow", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=AGFAST_ROOT,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    try:
        assert "claude-sonnet-4-5-thinking" in lines.get(timeout=FOLLOW_WAIT)  # the tail first
        filled.observe(record(6, account="new@example.com"))
        assert filled.flush()
        assert "new@example.com" in lines.get(timeout=FOLLOW_WAIT)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()


def test_stats_by_model_and_account(filled: Monitor, tmp_path: Path) -> None:
    done = run_agfast("stats", "--json", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    assert doc["summary"]["requests"] == 6 and doc["summary"]["errors"] == 1
    assert doc["summary"]["input_tokens"] == 100 + 200 + 300 + 400 + 500 + 600
    models = {m["model"]: m["input_tokens"] for m in doc["models"]}
    assert models == {"gemini-3-flash": 1500, "claude-sonnet-4-5-thinking": 600}
    accounts = {a["account"]: (a["requests"], a["output_tokens"]) for a in doc["accounts"]}
    assert accounts == {"a@example.com": (5, 160), "b@example.com": (1, 50)}
    table = run_agfast("stats", "--data-dir", str(tmp_path))
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("6 requests (5 ok, 1 failed); tokens: 2100 in, 210 out, 0 cached")
    assert any(
        line.startswith("b@example.com") and line.split()[1:3] == ["1", "0"] for line in table.stdout.splitlines()
    )


@pytest.mark.parametrize("command", ["logs", "stats"])
def test_no_database_is_a_clear_message(tmp_path: Path, command: str) -> None:
    done = run_agfast(command, "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"agfast: no request log at {tmp_path / 'proxy_logs.db'} yet: the server creates it when it first serves "
        "with this data dir"
    )
