"""What the request observers cost per request: metrics, the Proxy Monitor off and on.

    python benchmarks/observers.py                  # 20 000 records per row
    python benchmarks/observers.py -n 50000 --json

Rows (process CPU per record, all threads, so the monitor's writer thread is included where it says so):
  metrics             Metrics.observe on a realistic record (bound label children, three histograms)
  monitor off         Monitor.observe with rows off: only the per-hour token counts
  monitor on (path)   Monitor.observe with rows on: what the request path pays (count + queue append)
  monitor on (total)  the same plus the writer thread: row building, stream reconstruction, SQLite commit

Each row runs twice: with the short answer of load.py's anthropic-stream scenario (3 chunks) and with a long
one (40 chunks, ~13 KiB of SSE, an agent turn). The records carry real StreamConverter output. The last
column relates a row to the CPU agfast itself spends proxying such a stream (ANSWERS below, measured with
load.py on the 2-core dev box), the issue's "≤ 10% CPU" budget; `--request-us` replaces both figures with
one measured on another machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agfast.convert.anthropic_stream import StreamConverter  # noqa: E402
from agfast.convert.signatures import SignatureCache  # noqa: E402
from agfast.metrics import Metrics  # noqa: E402
from agfast.monitor import Monitor  # noqa: E402
from agfast.record import RequestRecord  # noqa: E402
from agfast.sim.answers import Answer, render_chunks  # noqa: E402

# (answer text, chunks, agfast's own CPU for such a proxied Anthropic stream in µs): the simulator's echo of
# load.py's prompt (README speed table, dev box), and a long agent-style answer (load.py anthropic-stream
# --chunks 40 on the dev box, Dec 2026: 660 µs for 40 short chunks, so a floor for 13 KiB of text).
ANSWERS = {
    "short": ("[gemini-3-flash] echo: Benchmark prompt: say something short please", 3, 390.0),
    "long": ("The quick brown fox jumps. " * 300, 40, 660.0),
}


def stream_body(text: str, chunks: int) -> bytes:
    ans = Answer(model="gemini-3-flash", family="gemini", text=text, prompt_tokens=1200, candidate_tokens=900)
    conv = StreamConverter("claude-sonnet-4-5", "gemini-3-flash", SignatureCache.create())
    return b"".join(conv.feed(c) for c in render_chunks(ans, chunks, "r", "t")) + conv.finish()


def make_record(body: bytes, i: int) -> RequestRecord:
    rec = RequestRecord(f"req-{i}", "POST", "/v1/messages", "anthropic", "127.0.0.1", time.time())
    rec.status = 200
    rec.duration, rec.first_byte, rec.upstream_seconds = 1.2, 0.3, 1.19
    rec.model, rec.mapped_model = "claude-sonnet-4-5", "gemini-3-flash"
    rec.account_email = f"user{i % 3}@example.com"
    rec.attempts = 1
    rec.input_tokens, rec.output_tokens = 1200, 900
    rec.stream = True
    rec.request_body = orjson.dumps({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
    rec.response_body = body
    return rec


def cpu_per_record(
    records: list[RequestRecord], observe: Callable[[RequestRecord], None], after: Callable[[], None]
) -> float:
    start = time.process_time()
    for rec in records:
        observe(rec)
    after()
    return (time.process_time() - start) / len(records) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000, help="records per row (default: 20000)")
    parser.add_argument("--request-us", type=float, help="a proxied stream's own CPU, µs (default: per answer)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per row")
    args = parser.parse_args()
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for answer, (text, chunks, request_us) in ANSWERS.items():
            body = stream_body(text, int(chunks))
            records = [make_record(body, i) for i in range(args.n)]
            per_request = args.request_us or float(request_us)
            for name, us in measure(records, Path(tmp) / answer, args.n):
                rows.append((f"{name}, {answer}", len(body), us, per_request))
    if args.json:
        for name, size, us, per_request in rows:
            print(orjson.dumps({"row": name, "cpu_us_per_record": round(us, 2), "records": args.n,
                                "stream_bytes": size, "request_cpu_us": per_request}).decode())  # fmt: skip
        return 0
    print(f"{args.n} records per row")
    print(f"{'row':<30}{'stream bytes':>13}{'CPU µs/record':>15}{'request CPU µs':>16}{'share':>8}")
    for name, size, us, per_request in rows:
        print(f"{name:<30}{size:>13}{us:>15.2f}{per_request:>16.0f}{us / per_request * 100:>7.1f}%")
    return 0


def measure(records: list[RequestRecord], tmp: Path, n: int) -> list[tuple[str, float]]:
    rows = [("metrics", cpu_per_record(records, Metrics().observe, lambda: None))]
    # A queue as long as the run: this measures cost, not the drop policy.
    off = Monitor(tmp / "off", enabled=False, queue_size=n)
    rows.append(("monitor off", cpu_per_record(records, off.observe, lambda: None)))
    off.close()
    on = Monitor(tmp / "on", queue_size=n)
    on.pause()
    rows.append(("monitor on (path)", cpu_per_record(records, on.observe, lambda: None)))
    on.resume()
    on.close()
    total = Monitor(tmp / "total", queue_size=n)
    rows.append(("monitor on (total)", cpu_per_record(records, total.observe, lambda: total.flush(600))))
    total.close()
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
