"""`--workers 2` against one worker: requests/s, server CPU per request and Redis round trips per request.

    python benchmarks/workers.py                       # healthz and proxied rows, 10 s each
    python benchmarks/workers.py --duration 30 --json
    python benchmarks/workers.py --scenarios proxied
    python benchmarks/workers.py --rounds 5 --scenarios proxied   # 1 and 2 workers alternated, median ratios

On a VM whose host is shared, one worker's CPU per request moved 424–739 µs between identical 10 s runs (load
average ~1 inside the VM): a single pair of rows is no verdict. `--rounds R` runs the pair R times, the order
alternating, and judges the median of the R per-round ratios; each row also says how much of the run the
hypervisor took away (steal, from /proc/stat) and how much of the two cores the simulator and wrk used
meanwhile (they share the cores: two busy workers leave them less room than one does).

The upstream answers with one event by default (`--events`): the simulator is Python and shares the two cores,
and at 20 events per answer it and wrk take a third of a core, which leaves two workers no room to show how they
scale (in production Google's side is not on agfast's cores). `--events 20` measures the peer table's answer.

Scenarios: `healthz` (GET /healthz: the HTTP shell alone, no pool, no Redis) and `proxied` (POST Gemini
:generateContent through the pool to `agfast sim --fast`, one onboarded account: the request path that reads
the shared state). wrk (C, 1 thread, 64 connections) drives the load so the client costs as little CPU as
possible; it shares the machine's cores with the server, so on a 2-core machine req/s of the 2-worker row is a
floor and cannot be judged while others load the machine. What holds under contention:

- CPU per request: utime+stime from /proc summed over every agfast process (supervisor, workers) and the
  private redis-server, over exactly the wrk run, divided by the requests wrk completed. The simulator's CPU is
  not in it.
- Redis round trips and commands per request: the private redis-server's `INFO stats` (total_reads_processed:
  one per request batch a client sent, i.e. per round trip) and `INFO commandstats` (commands, a pipeline counts
  each) before and after the run, this script's own INFO calls taken out, divided by the requests.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from load import SIM_REFRESH, clean_env, upstream_env

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
TICKS = os.sysconf("SC_CLK_TCK")
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Benchmark prompt: say something short please"}]}]}
PROXIED_PATH = "/v1beta/models/gemini-3-flash:generateContent"
WRK = ["wrk", "-t1", "-c64"]
# wrk warm-up before each measured run: connections open, caches and the pool warm.
WARMUP = "2s"


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


def redis_counts(sock_path: Path) -> tuple[int, int]:
    """(round trips, commands) the redis-server has served so far, read with one INFO call."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(sock_path))
        sock.sendall(b"INFO everything\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            data += chunk
            head, _, rest = data.partition(b"\r\n")
            if head.startswith(b"$") and len(rest) >= int(head[1:]):
                break
    text = data.decode()
    reads = int(re.search(r"total_reads_processed:(\d+)", text).group(1))  # type: ignore[union-attr]
    commands = sum(int(n) for n in re.findall(r"cmdstat_\w+:calls=(\d+)", text))
    return reads, commands


def wrk(url: str, duration: str, script: Path | None) -> int:
    """Requests wrk completed in `duration` (non-2xx answers make the run fail: a benchmark of errors lies)."""
    cmd = [*WRK, f"-d{duration}", *(["-s", str(script)] if script else []), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error answers:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


def start_sim(events: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agfast", "sim", "--fast", "--port", "0", "--chunks", str(events)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=clean_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    raise RuntimeError("the simulator did not start")


def stolen() -> tuple[int, int]:
    """(steal ticks, all ticks) of the whole machine so far, from /proc/stat's first line."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


def children_cpu() -> float:
    """CPU seconds of this script's reaped children (each wrk run), user + system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(workers: int, scenario: str, duration: float, sim_port: int, sim_pid: int) -> dict[str, object]:
    env = upstream_env(sim_port)
    with tempfile.TemporaryDirectory(prefix="agfast-workers-") as data_dir:
        data = Path(data_dir)
        (data / "config.toml").write_text('api_key = "sk-bench-key-0000"\nauth_mode = "off"\nlog_level = "warning"\n')
        script = None
        if scenario == "proxied":
            subprocess.run(
                [sys.executable, "-m", "agfast", "accounts", "add", "--refresh-token", SIM_REFRESH, "--data-dir",
                 data_dir], env=env, check=True, capture_output=True, cwd=ROOT,
            )  # fmt: skip
            script = data / "post.lua"
            body = orjson.dumps(PROMPT).decode()
            script.write_text(
                f'wrk.method = "POST"\nwrk.body = {orjson.dumps(body).decode()}\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
        proc = subprocess.Popen(
            [sys.executable, "-m", "agfast", "serve", "--port", "0", "--data-dir", data_dir, "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            port = seen = 0
            while seen < workers:
                found = LISTENING.search(proc.stdout.readline())
                if found:
                    port, seen = int(found.group(1)), seen + 1
            url = f"http://127.0.0.1:{port}" + (PROXIED_PATH if scenario == "proxied" else "/healthz")
            wrk(url, WARMUP, script)
            redis_sock = data / "redis.sock"
            redis_before = redis_counts(redis_sock) if workers > 1 else (0, 0)
            cpu_before, steal_before = cpu_of_tree(proc.pid), stolen()
            others_before = cpu_of_tree(sim_pid) + children_cpu()
            total = wrk(url, f"{duration:g}s", script)
            cpu, steal_after = cpu_of_tree(proc.pid) - cpu_before, stolen()
            others = cpu_of_tree(sim_pid) + children_cpu() - others_before
            redis_after = redis_counts(redis_sock) if workers > 1 else (1, 1)
        finally:
            proc.terminate()
            proc.wait(30)
    # The INFO call that read `redis_before` is one read and one command of its own.
    trips, commands = redis_after[0] - redis_before[0] - 1, redis_after[1] - redis_before[1] - 1
    return {
        "scenario": scenario,
        "workers": workers,
        "requests": total,
        "rps": total / duration,
        "cpu_us_per_req": cpu / total * 1e6,
        "redis_round_trips_per_req": trips / total,
        "redis_commands_per_req": commands / total,
        "steal": (steal_after[0] - steal_before[0]) / max(steal_after[1] - steal_before[1], 1),
        # What the simulator and wrk took of the same cores meanwhile, in cores (1.0 = one core all the run).
        "others_cores": others / duration,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--scenarios", default="healthz,proxied", help="comma-separated: healthz, proxied")
    parser.add_argument(
        "--events", type=int, default=1, help="SSE events per upstream answer (default 1: see the module docstring)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="pairs of rows per scenario, order alternating")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per row")
    args = parser.parse_args()
    sim, sim_port = start_sim(args.events)
    rows: list[dict[str, object]] = []
    try:
        for scenario in args.scenarios.split(","):
            for r in range(args.rounds):
                for n in (1, 2) if r % 2 == 0 else (2, 1):
                    rows.append({**run(n, scenario, args.duration, sim_port, sim.pid), "round": r})
    finally:
        sim.terminate()
        sim.wait(10)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    print(
        f"commit {commit.strip()}; {args.events}-event upstream answers; "
        f"load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        "| scenario | round | workers | req/s | server CPU µs/req | Redis trips/req | Redis commands/req | steal "
        "| sim+wrk cores |"
    )
    print("|---|--:|---|---|---|---|---|--:|--:|")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['round']} | {row['workers']} | {row['rps']:,.0f} | "
            f"{row['cpu_us_per_req']:.1f} | {row['redis_round_trips_per_req']:.3f} | "
            f"{row['redis_commands_per_req']:.3f} | {row['steal']:.0%} | {row['others_cores']:.2f} |"
        )
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        speedups, cpu_ratios = [], []
        for r in range(args.rounds):
            one, two = (
                next(row for row in rows if row["scenario"] == scenario and row["round"] == r and row["workers"] == n)
                for n in (1, 2)
            )
            speedups.append(float(two["rps"]) / float(one["rps"]))  # type: ignore[arg-type]
            cpu_ratios.append(float(two["cpu_us_per_req"]) / float(one["cpu_us_per_req"]))  # type: ignore[arg-type]
        print(
            f"{scenario}: speed-up {statistics.median(speedups):.2f}x, CPU/request ratio "
            f"{statistics.median(cpu_ratios):.2f} (median of {args.rounds}; rounds: speed-up "
            f"{', '.join(f'{x:.2f}' for x in speedups)}; CPU ratio {', '.join(f'{x:.2f}' for x in cpu_ratios)})"
        )
    if args.json:
        for row in rows:
            print(orjson.dumps(row).decode())


if __name__ == "__main__":
    main()
