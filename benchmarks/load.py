"""Load generator: requests/s, latency percentiles and server CPU per request, side by side.

    python benchmarks/load.py                      # GET /healthz at 64 connections: agfast (c, py) vs naive h11
    python benchmarks/load.py --duration 20 --connections 128 --json

Each server runs in its own process; its CPU time is read from /proc before and after the timed window,
so "server CPU µs/req" does not depend on how fast this (Python) client can go. The client runs on the same
2 cores, so requests/s is a floor; CPU per request is the number to compare. Results are normalised to the
best row, and each run records versions, commit and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    target: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us_per_req: float


class Client(asyncio.Protocol):
    """Keep-alive HTTP/1.1 client that only needs Content-Length framing (all the targets use it)."""

    def __init__(self, request: bytes, latencies: list[float], stop_at: list[float]) -> None:
        self.request = request
        self.latencies = latencies
        self.stop_at = stop_at
        self.buf = b""
        self.sent = 0.0
        self.errors = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.sent = time.perf_counter()
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            start = head.find(b"content-length:")
            stop = head.find(b"\r\n", start)
            length = int(head[start + 15 : stop if stop >= 0 else len(head)]) if start >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            if not head.startswith(b"HTTP/1.1 200"):
                self.errors += 1
            self.buf = self.buf[end + 4 + length :]
            now = time.perf_counter()
            self.latencies.append(now - self.sent)
            if now >= self.stop_at[0]:
                self.transport.close()  # type: ignore[union-attr]
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def drive(port: int, path: str, connections: int, duration: float, warmup: float) -> tuple[list[float], int]:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    stop_at = [time.perf_counter() + warmup + duration]
    clients = []
    for _ in range(connections):
        _, proto = await loop.create_connection(lambda: Client(request, latencies, stop_at), "127.0.0.1", port)
        clients.append(proto)
    await asyncio.sleep(warmup)
    latencies.clear()
    await asyncio.gather(*(c.done for c in clients))
    return latencies, sum(c.errors for c in clients)


def start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = LISTENING.search(line)
        if found:
            return proc, int(found.group(1))
    raise RuntimeError(f"{cmd} did not start")


def measure(name: str, cmd: list[str], env: dict[str, str], args: argparse.Namespace) -> Result:
    proc, port = start(cmd, env)
    try:
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        latencies, errors = uvloop.run(drive(port, args.path, args.connections, args.duration, args.warmup))
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(10)
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(n * p))] * 1000 if n else 0.0

    # CPU is sampled over warm-up + run; requests are counted over the run only, so scale by time.
    timed_share = args.duration / max(elapsed, 1e-9)
    return Result(
        name,
        n,
        errors,
        args.duration,
        n / args.duration,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies[-1] * 1000 if n else 0.0,
        cpu * timed_share / max(n, 1) * 1e6,
    )


def environment() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout
    except OSError:
        commit = ""
    cpu = ""
    try:
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in ln
            ),
            "",
        )
    except OSError:
        pass
    import aiohttp
    import h11

    return {
        "commit": commit.strip(),
        "python": platform.python_version(),
        "h11": h11.__version__,
        "uvloop": uvloop.__version__,
        "orjson": orjson.__version__,
        "aiohttp": aiohttp.__version__,
        "cpu": cpu,
        "cores": str(os.cpu_count()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--path", default="/healthz")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per result")
    args = parser.parse_args()

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AGFAST_")}
    data_dir = tempfile.mkdtemp(prefix="agfast-bench-")
    agfast = [
        sys.executable,
        "-m",
        "agfast",
        "--port",
        "0",
        "--data-dir",
        data_dir,
        "--auth-mode",
        "off",
        "--log-level",
        "warning",
    ]
    targets = [
        ("agfast (c)", agfast, base_env),
        ("agfast (py)", agfast, {**base_env, "AGFAST_NO_EXTENSIONS": "1"}),
        ("naive h11", [sys.executable, str(ROOT / "benchmarks" / "baseline_h11.py")], base_env),
    ]
    results = [measure(name, cmd, env, args) for name, cmd, env in targets]
    env = environment()
    best = min(r.server_cpu_us_per_req for r in results)
    print(
        f"GET {args.path}, {args.connections} connections, {args.duration:.0f} s each — {env['cpu']} "
        f"({env['cores']} cores), python {env['python']}, commit {env['commit']}"
    )
    print(
        f"{'target':<14}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'CPU µs/req':>12}{'vs best':>9}{'errors':>8}"
    )
    for r in results:
        print(
            f"{r.target:<14}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p90_ms:>9.2f}{r.p99_ms:>9.2f}{r.max_ms:>9.2f}"
            f"{r.server_cpu_us_per_req:>12.1f}{r.server_cpu_us_per_req / best:>9.2f}{r.errors:>8}"
        )
    if args.json:
        for r in results:
            print(orjson.dumps({**asdict(r), "scenario": f"GET {args.path}", **env}).decode())


if __name__ == "__main__":
    main()
