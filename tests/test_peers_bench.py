"""The peer benchmark program's cheap parts: its --help, wrk script and summary, and the result tables.

Nothing here installs or starts a peer: the benchmark itself is a program, run by hand (benchmarks/README.md).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from peers import measure, report  # noqa: E402
from peers.__main__ import parse_args  # noqa: E402


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
