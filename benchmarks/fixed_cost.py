"""Instructions agfast executes per request, counted by callgrind: the fixed part of a request's CPU (issue 14).

    python benchmarks/fixed_cost.py                      # 300 non-stream OpenAI chat requests, 1-event upstream
    python benchmarks/fixed_cost.py --events 20 -n 200   # the same with a 20-event upstream answer
    python benchmarks/fixed_cost.py --tree /tmp/old      # another checkout (`git archive <commit> agfast | tar -x`)
    python benchmarks/fixed_cost.py --redis-url redis://127.0.0.1:6390/0   # the pool state shared through Redis
    python benchmarks/fixed_cost.py --multiprocess-metrics   # the metrics a worker of --workers N keeps

Wall-clock and /proc CPU figures swing ±30% on a shared machine; instruction counts do not. agfast runs under
`valgrind --tool=callgrind`; after a warm-up, `callgrind_control -z` zeroes the counters, N requests are sent
one at a time on one keep-alive connection (so every request sees the same wake-ups, whatever the load), and
`callgrind_control -d` dumps what they cost. Kernel time (syscalls) is not counted: `strace -c -f -p` tells
those. The upstream is `agfast sim --fast` in its own process, never counted. Needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
from load import agfast_cmd, clean_env, http_request, start, upstream_env
from peers.measure import response_done
from peers.targets import SIM_REFRESH, chat_body


def exchange(sock: socket.socket, request: bytes) -> bool:
    """One request, its whole answer read; True for a 200."""
    sock.sendall(request)
    buf = b""
    while not response_done(buf):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("agfast closed the connection")
        buf += data
    return buf.startswith(b"HTTP/1.1 200")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="requests counted (default: 300)")
    ap.add_argument("--warmup", type=int, default=50, help="requests before counting (default: 50)")
    ap.add_argument("--events", type=int, default=1, help="SSE events per upstream answer (default: 1)")
    ap.add_argument("--stream", action="store_true", help="the client asks to stream")
    ap.add_argument("--chunk-delay", default="0", help="seconds between the upstream's events (default: 0)")
    ap.add_argument("--tree", type=Path, default=load.ROOT, help="the checkout whose agfast runs (default: this)")
    ap.add_argument("--redis-url", help="AGFAST_REDIS_URL for agfast: what sharing the pool state costs a request")
    workers_metrics = "prometheus-client's multiprocess series, as every worker of `--workers N` keeps them"
    ap.add_argument("--multiprocess-metrics", action="store_true", help=workers_metrics)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()), help="where callgrind files go")
    args = ap.parse_args()

    load.ROOT = args.tree.resolve()  # `start` runs agfast from here, so this tree's package is the one imported
    upstream, up_port = start([sys.executable, "-m", "agfast", "sim", "--fast", "--port", "0", "--chunks",
                               str(args.events), "--chunk-delay", args.chunk_delay], clean_env())  # fmt: skip
    env = upstream_env(up_port, PYTHONPATH=str(load.ROOT))
    if args.redis_url:
        env["AGFAST_REDIS_URL"] = args.redis_url
    if args.multiprocess_metrics:
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="agfast-fixed-metrics-")
    data_dir = tempfile.mkdtemp(prefix="agfast-fixed-")
    subprocess.run([sys.executable, "-m", "agfast", "accounts", "add", "--refresh-token", SIM_REFRESH,
                    "--data-dir", data_dir], env=env, check=True, capture_output=True, cwd=load.ROOT)  # fmt: skip
    out = args.out / f"fixed-cost-{os.getpid()}.callgrind"
    proc, port = start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *agfast_cmd(data_dir)], env)
    request = http_request("POST", "/v1/chat/completions", port, chat_body(args.stream))
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(args.warmup):
                exchange(sock, request)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            ok = sum(exchange(sock, request) for _ in range(args.n))
            subprocess.run(["callgrind_control", "-d", "counted", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
        upstream.terminate()
        upstream.wait(10)
    summary = next(
        int(line.split()[1]) for line in Path(f"{out}.1").read_text(errors="replace").splitlines()
        if line.startswith("summary:")
    )  # fmt: skip
    redis = bool(args.redis_url)
    print("| tree | redis | events | stream | requests | 200s | instructions per request |")
    print("|---|---|--:|---|--:|--:|--:|")
    print(f"| {args.tree} | {redis} | {args.events} | {args.stream} | {args.n} | {ok} | {summary // args.n:,} |")


if __name__ == "__main__":
    main()
