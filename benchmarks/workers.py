"""`--workers 2` against one worker: requests/s and server CPU per request, with wrk as the client.

    python benchmarks/workers.py                 # GET /healthz, 10 s per row
    python benchmarks/workers.py --duration 30

wrk (C) drives the load so the client costs as little CPU as possible; it still shares the machine's cores
with the server, so on a 2-core machine the 2-worker row is a floor. CPU per request sums every agfast
process (supervisor, workers) and the private redis-server, read from /proc. The request path's Redis round
trips per request are counted by tests/test_shared_state.py (exactly one per proxied request).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of_tree(pid: int) -> float:
    """CPU seconds of `pid` and every descendant (workers, redis-server)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def run(workers: int, duration: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        (Path(data_dir) / "config.toml").write_text('api_key = "sk-bench-key-0000"\nlog_level = "warning"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGFAST_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "agfast", "serve", "--port", "0", "--data-dir", data_dir, "--workers", str(workers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert proc.stdout is not None
        port = 0
        seen = 0
        while seen < workers:
            line = proc.stdout.readline()
            found = LISTENING.search(line)
            if found:
                port, seen = int(found.group(1)), seen + 1
        url = f"http://127.0.0.1:{port}/healthz"
        subprocess.run(["wrk", "-t1", "-c64", "-d2s", url], capture_output=True, check=True)  # warm-up
        before = cpu_of_tree(proc.pid)
        out = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{duration:g}s", url], capture_output=True, text=True, check=True
        ).stdout
        cpu = cpu_of_tree(proc.pid) - before
        proc.terminate()
        proc.wait(30)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return total / duration, cpu / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    rows = {n: run(n, args.duration) for n in (1, 2)}
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {time.ctime()}")
    print("| workers | req/s | server CPU µs/req |")
    print("|---|---|---|")
    for n, (rps, cpu) in rows.items():
        print(f"| {n} | {rps:,.0f} | {cpu:.1f} |")
    print(f"speed-up: {rows[2][0] / rows[1][0]:.2f}x; CPU/request ratio: {rows[2][1] / rows[1][1]:.2f}")


if __name__ == "__main__":
    main()
