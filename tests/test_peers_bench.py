"""The peer benchmark program's cheap parts: its --help, wrk script and summary, and the result tables.

Nothing here installs or starts a peer: the benchmark itself is a program, run by hand (benchmarks/README.md).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from peers import latency, measure, report, targets  # noqa: E402
from peers.__main__ import first_answer_ok, parse_args, pop_fields  # noqa: E402


def row(target: str, mode: str, cpu: float, events: int = 20, idle: float = 40.0) -> report.Row:
    return report.Row(target, target, mode, events, 1000.0, 1.0, 2.0, 0, cpu, idle, idle + 5, requests=10_000)


def test_help_runs_without_installing_anything() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peers"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for flag in ("--quick", "--full", "--targets", "--streams", "--soak", "--no-netns"):
        assert flag in out.stdout


def test_sizes_and_unknown_targets() -> None:
    quick = parse_args(["--quick"])
    assert (quick.duration, quick.streams) == (3.0, 200)
    full = parse_args(["--full", "--targets", "agfast-c,nginx"])
    assert (full.streams, full.soak, full.target_list) == (2000, 1_000_000, ["agfast-c", "nginx"])
    with pytest.raises(SystemExit):
        parse_args(["--targets", "envoy"])


def test_table_ratios_are_against_nginx_in_the_same_mode() -> None:
    rows = [row("nginx", "non-stream", 0.025), row("nginx", "stream", 0.14), row("agfast-c", "non-stream", 0.5),
            row("agfast-c", "stream", 0.56), row("agfast-c", "stream", 0.34, events=1)]  # fmt: skip
    lines = report.markdown_table(rows).splitlines()
    assert lines[0].startswith("| proxy | mode |")
    assert "| 20.0× |" in lines[4] and "| 4.0× |" in lines[5]
    assert "| – |" in lines[6]  # no nginx row with a 1-event upstream to compare with


def test_verdicts_mark_met_not_met_and_unmeasured() -> None:
    rows = [row("nginx", "non-stream", 0.1), row("nginx", "stream", 0.2), row("agfast-c", "non-stream", 0.5),
            row("agfast-c", "stream", 0.8), row("agfast-c", "stream", 0.42, events=1),
            row("portkey", "non-stream", 2.0), row("portkey", "stream", 1.8)]  # fmt: skip
    scenarios = [
        report.Scenario("one at a time", "agfast-c", {"non-stream added p50 ms": 0.2, "non-stream added p99 ms": 1.5}),
        report.Scenario("open streams", "agfast-c", {"streams": 200.0, "peak RSS MiB": 70.0}),
    ]
    got = {goal: (figure, met) for goal, figure, met in report.verdicts(rows, scenarios, 20)}
    assert got["CPU/req ≤ 8× nginx, non-stream"] == ("5.0×", True)
    assert got["CPU/req ≤ 3× nginx, 20-event stream"] == ("4.0×", False)
    assert got["marginal CPU per upstream event ≤ 4 µs"] == ("20.0 µs", False)
    assert got["≥ 10× less CPU/req than portkey, non-stream"] == ("4.0×", False)
    assert got["≥ 100× less CPU/req than litellm, stream"] == ("not measured", None)
    assert got["added latency one at a time (non-stream), p50 ≤ 0.3 ms"] == ("0.200 ms", True)
    assert got["added latency one at a time (non-stream), p99 ≤ 1.0 ms"] == ("1.500 ms", False)
    assert got["≤ 150 MB with 2,000 open streams"] == ("70 MiB at 200 streams", None)  # too few to judge
    table = report.verdict_table(report.verdicts(rows, scenarios, 20))
    assert "| **not met** |" in table and "| met |" in table and "not judged" in table


def test_wrk_script_and_summary() -> None:
    script = measure.wrk_script("/v1/chat/completions", b'{"a":"b"}', {"Authorization": "Bearer k"})
    assert 'wrk.body = [==[{"a":"b"}]==]' in script and 'wrk.headers["Authorization"] = "Bearer k"' in script
    out = 'Running 1s test\nWRK_JSON {"requests":10,"duration_us":1000000,"connect":0,"read":1,"write":0,' \
          '"status":2,"timeout":0,"p50_us":500,"p99_us":900}\n'  # fmt: skip
    assert measure.parse_wrk(out)["status"] == 2
    with pytest.raises(RuntimeError):
        measure.parse_wrk("wrk: connection refused\n")


def test_response_framing() -> None:
    assert not measure.response_done(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    assert measure.response_done(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    assert not measure.response_done(chunked)
    assert measure.response_done(chunked + b"0\r\n\r\n")


def test_one_at_a_time_reconnects_when_a_peer_ends_keep_alive() -> None:
    """Like nginx after keepalive_requests: answer one request per connection, then close it."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(3):
            conn, _ = listener.accept()
            with conn:
                while b"\r\n\r\n" not in conn.recv(65536):
                    pass
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        (timings,) = measure.one_at_a_time([(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")], 3)
    finally:
        thread.join(10)
        listener.close()
    assert len(timings.latencies) == 3 and timings.errors == 0


def test_a_row_short_of_requests_is_measured_again_with_fewer_connections_and_longer() -> None:
    """LiteLLM's 20-event stream at 64 connections finished no request in 10 s (--full, 2026-12-02)."""
    assert measure.retry_plan(640, 10.0, 64, 10.0) is None  # 10 per connection: trusted
    assert measure.retry_plan(0, 10.0, 64, 10.0) == (8, 60.0)  # nothing done: no rate to go by, the longest run
    assert measure.retry_plan(130, 10.0, 64, 10.0) == (8, 10.0)  # 13/s does 80 at 8 connections within the row
    assert measure.retry_plan(20, 10.0, 64, 10.0) == (8, 40.0)  # 2/s needs 40 s for 80
    assert measure.retry_plan(40, 10.0, 8, 10.0) == (8, 20.0)  # already 8 connections: only longer
    assert measure.retry_plan(79, 60.0, 8, 60.0) is None  # nothing left to change: the row stays as it is


def test_a_measured_again_row_is_marked_and_its_first_run_told() -> None:
    first = {"requests": 0, "errors": 0, "seconds": 10.0, "connections": 64, "cpu_ms_per_req": 0.0}
    rows = [row("nginx", "stream", 0.1), row("litellm", "stream", 40.0)]
    rows[1].first_run, rows[1].connections, rows[1].seconds, rows[1].requests = first, 8, 60.0, 900
    table = report.markdown_table(rows)
    assert "| litellm | stream † | 20 | 40 | 400.0× |" in table
    (note,) = report.retry_notes(rows)
    assert "first run (64 connections, 10 s) completed 0 requests with 0 errors" in note
    assert "8 connections for 60 s" in note and "still" not in note
    rows[1].requests = 30  # the second run short too: said, and its figure called an over-estimate
    assert "still completed only 30" in report.retry_notes(rows)[0]
    assert "measured once more with 8 connections" in report.RULE


def test_json_lines_keep_first_runs_and_failures_and_old_lines_still_render() -> None:
    r = row("litellm", "stream", 40.0)
    r.first_run = {"requests": 0.0, "errors": 3.0, "seconds": 10.0, "connections": 64.0, "cpu_ms_per_req": 0.0}
    lines = [orjson.loads(line) for line in report.json_lines([r], [], {"commit": "abc"}, {"portkey": "exited"})
             .splitlines()]  # fmt: skip
    assert lines[0]["first_run"]["errors"] == 3.0 and lines[0]["commit"] == "abc"
    assert lines[1] == {"kind": "failure", "target": "portkey", "reason": "exited", "commit": "abc"}
    old = {"target": "nginx", "label": "nginx", "mode": "stream", "events": 20, "rps": 1.0, "p50_ms": 1.0,
           "p99_ms": 1.0, "errors": 0, "cpu_ms_per_req": 0.1, "idle_rss_mib": 1.0, "peak_rss_mib": 1.0,
           "requests": 10, "cpu": "x"}  # fmt: skip
    again = report.Row(**pop_fields(old, report.Row))  # a line written before the retry rule existed
    assert (again.connections, again.first_run, old) == (0, {}, {"cpu": "x"})


def serve(behaviours: list[bytes | None], hold: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """Accept one connection per behaviour: send those bytes and close, or (None) say nothing until `hold`."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        held = []
        for reply in behaviours:
            conn, _ = listener.accept()
            conn.recv(65536)
            if reply is None:
                held.append(conn)
                continue
            with conn:
                conn.sendall(reply)
        hold.wait(10)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener, thread


def test_open_streams_count_each_way_a_stream_ends() -> None:
    """An error count is a result: the table says how many finished, timed out or were cut, and how many began."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    hold = threading.Event()
    listener, thread = serve([ok, b"", None, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"], hold)
    try:
        got = measure.open_streams(0, listener.getsockname()[1], b"GET / HTTP/1.1\r\n\r\n", 4, 1.0)
    finally:
        hold.set()
        thread.join(10)
        listener.close()
    assert got.outcomes == {"done": 1, "timed out": 1, "refused": 0, "closed early": 2, "not 200": 0}
    assert (got.errors, got.answered, got.count) == (3, 2, 4)


def test_a_target_that_cannot_start_or_answer_is_named_with_why(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    cmd = [sys.executable, "-c", "print('config key foo is unknown'); raise SystemExit(3)"]
    with pytest.raises(targets.StartFailure) as failed:
        targets.start_listening("agfast", cmd, {}, log)
    assert failed.value.what == "agfast" and failed.value.reason == "exited with 3 before listening"
    assert "config key foo is unknown" in str(failed.value)  # its own last words, for the reader
    hold = threading.Event()
    listener, thread = serve([b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"], hold)
    running = targets.Running(None, listener.getsockname()[1], log=log)  # type: ignore[arg-type]
    try:
        with pytest.raises(targets.StartFailure) as failed:
            first_answer_ok("portkey", running)
    finally:
        hold.set()
        thread.join(10)
        listener.close()
    assert "not answered 200" in failed.value.reason and "500 Internal Server Error" in failed.value.reason


def test_latency_parts_come_from_the_upstream_clock_and_cpu_spans_from_switches() -> None:
    """latency.py: each request is split at the upstream's notes; CPU spans are cut at the same instants."""
    client = [(1_000, 9_000), (10_000, 20_000)]  # (sent, whole answer in), ns
    upstream = [(7, 14_000, 15_000), (7, 4_000, 6_000)]  # (connection, arrived, last event written), any order
    parts = latency.split(client, upstream)
    assert parts == {"to upstream": [3.0, 4.0], "upstream": [2.0, 1.0], "back": [3.0, 5.0], "total": [8.0, 10.0]}
    spans = [(1_500, 3_500), (6_500, 9_500)]  # on CPU: before the arrival at 4,000; across the answer's end
    assert latency.sides(client, upstream, spans) == {
        "request side": [2.0], "answer side": [2.5], "after the answer": [0.5]
    }  # fmt: skip
