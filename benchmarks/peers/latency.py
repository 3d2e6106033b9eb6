"""Where a proxy's added latency one request at a time goes, measured without tracing the request path.

    python benchmarks/peers/latency.py                          # agfast (compiled), 2,000 requests per mode
    python benchmarks/peers/latency.py --target nginx --requests 500
    python benchmarks/peers/latency.py --gap-ms 20              # requests 20 ms apart instead of back to back
    python benchmarks/peers/latency.py --switches               # also: agfast's CPU per side (perf sched_switch)

The upstream is the fast simulator with a clock: it notes (CLOCK_MONOTONIC, the clock of every process here)
when a request has arrived and when it wrote its answer's last event. The client notes when it sent and when
the whole answer was in. Requests take turns between the proxy and the upstream direct, as in the peer
table's "one at a time", so each proxied request is split into
    to upstream:   client sent → the upstream has the request (the proxy reads, converts, calls)
    upstream:      the upstream's own time for the answer (the same bytes direct)
    back:          the upstream's last write → the client has the whole answer (the proxy reads, converts, writes)
and the direct request into the same three parts; "added" is the difference of their medians. The proxy's CPU
per request is read from /proc over the whole run (10 ms ticks, so thousands of requests).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

if __package__ in (None, ""):  # run as `python benchmarks/peers/latency.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "peers"

from peers import measure, targets
from peers.__main__ import Session

STAMPS_PATH = b"/__stamps"  # the clocked upstream answers its notes here, and forgets them
PARTS = ("to upstream", "upstream", "back", "total")
# Where the proxy's main thread runs, against the parts above (--switches): on CPU before the upstream has the
# request, after it, and between the client's answer and its next request (bookkeeping after the answer).
SIDES = ("request side", "answer side", "after the answer")
WARM = 200  # requests per client before the counted ones: lazy imports, first-call set-up, caches


def serve_clocked(events: int) -> None:
    """The fast upstream, noting each request's arrival and last write (perf_counter_ns), until terminated."""
    from agfast.sim import fast

    stamps: list[tuple[int, int, int]] = []  # (connection id, arrived, last event written)

    class Clocked(fast._Connection):
        __slots__ = ("arrived",)

        def _serve(self) -> None:
            if STAMPS_PATH in self.buf.split(b"\r\n", 1)[0]:
                body = orjson.dumps(stamps)
                stamps.clear()
                self.buf = b""
                assert self.transport is not None
                self.transport.write(fast.json_reply(200, body))
                return
            super()._serve()

        def _write(self, frames: tuple[bytes, ...], index: int) -> None:
            if index == 0:
                self.arrived = time.perf_counter_ns()
            super()._write(frames, index)
            if index == len(frames) - 1:
                stamps.append((id(self), self.arrived, time.perf_counter_ns()))

    async def main() -> None:
        answers = fast._Answers(events, await fast.record_control_answers())
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Clocked(answers, 0.0), "127.0.0.1", 0)
        print(f"agfast sim (clocked) listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    import uvloop

    uvloop.run(main())


def fetch_stamps(port: int) -> list[tuple[int, int, int]]:
    answer = measure.first_answer(port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % STAMPS_PATH)
    return [tuple(s) for s in orjson.loads(answer.split(b"\r\n\r\n", 1)[1])]


def timed(sock: socket.socket, request: bytes) -> tuple[int, int]:
    """(sent, whole answer in) for one request, perf_counter_ns; the answer must be 200."""
    t0 = time.perf_counter_ns()
    sock.sendall(request)
    buf = sock.recv(65536)
    while not measure.response_done(buf):
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("closed mid-answer")
        buf += more
    t1 = time.perf_counter_ns()
    if not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(buf[:300].decode(errors="replace"))
    return t0, t1


def split(client: list[tuple[int, int]], upstream: list[tuple[int, int, int]]) -> dict[str, list[float]]:
    """Per part, µs for each request: its upstream note is the one that arrived while it was open (requests
    go one at a time, so exactly one did)."""
    parts: dict[str, list[float]] = {p: [] for p in PARTS}
    notes = iter(sorted(upstream, key=lambda note: note[1]))
    for sent, done in client:
        _, arrived, written = next(note for note in notes if sent <= note[1] <= done)
        parts["to upstream"].append((arrived - sent) / 1000)
        parts["upstream"].append((written - arrived) / 1000)
        parts["back"].append((done - written) / 1000)
        parts["total"].append((done - sent) / 1000)
    return parts


def schedstat(root: int) -> tuple[int, int, int]:
    """(ns on CPU, ns waiting on a run queue, times scheduled) summed over a process tree's threads."""
    total = [0, 0, 0]
    tasks = [task for pid in measure.tree_pids(root) for task in Path(f"/proc/{pid}/task").glob("*")]
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        for i in range(3):
            total[i] += int(fields[i])
    return total[0], total[1], total[2]


class Switches:
    """perf's sched_switch events of one thread (clock: CLOCK_MONOTONIC, as perf_counter_ns), as on-CPU spans."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.data = targets.log_dir() / "perf.data"
        # System-wide with a filter: a switch *to* the thread happens in another task's context, so -t misses it.
        cmd = ["perf", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-e", "sched:sched_switch", "--filter",
               f"prev_pid == {tid} || next_pid == {tid}"]  # fmt: skip
        self.perf = subprocess.Popen([*cmd, "-o", str(self.data)], stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # perf attaches

    def spans(self) -> list[tuple[int, int]]:
        self.perf.send_signal(signal.SIGINT)
        self.perf.wait(60)
        out = subprocess.run(["perf", "script", "--ns", "-i", str(self.data)], capture_output=True, text=True).stdout
        spans, since = [], None
        for line in out.splitlines():
            at, _, trace = line.partition(": sched:sched_switch:")
            ns = round(float(at.rsplit(None, 1)[-1]) * 1e9)
            if f"next_pid={self.tid} " in trace:
                since = ns
            elif f"prev_pid={self.tid} " in trace and since is not None:
                spans.append((since, ns))
                since = None
        return spans


def sides(client: list[tuple[int, int]], upstream: list[tuple[int, int, int]],
          spans: list[tuple[int, int]]) -> dict[str, list[float]]:  # fmt: skip
    """Per request, µs the proxy's main thread was on CPU in each of SIDES."""
    arrivals = sorted(note[1] for note in upstream)
    out: dict[str, list[float]] = {side: [] for side in SIDES}
    for k, (sent, done) in enumerate(client[:-1]):
        arrived = next(a for a in arrivals if sent <= a <= done)
        bounds = ((sent, arrived), (arrived, done), (done, client[k + 1][0]))
        for side, (lo, hi) in zip(SIDES, bounds, strict=True):
            out[side].append(sum(max(0, min(b, hi) - max(a, lo)) for a, b in spans if a < hi and b > lo) / 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/peers/latency.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--target", default="agfast-c", choices=sorted(targets.TARGETS))
    parser.add_argument("--requests", type=int, default=2000, help="per mode (default: %(default)s)")
    parser.add_argument("--events", type=int, default=20, help="SSE events per upstream answer (default: 20)")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="idle time before each request (default: 0)")
    parser.add_argument("--switches", action="store_true", help="also the proxy's CPU per side (perf, as root)")
    parser.add_argument("--serve-clocked", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_clocked:
        serve_clocked(args.serve_clocked)
        return 0
    log = targets.log_dir() / "clocked-upstream.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-clocked", str(args.events)]
    upstream, port = targets.start_listening("the clocked upstream", cmd, targets.clean_env(), log)
    try:
        with Session(args.target, port) as session:
            proxy = session.running
            agfast = args.target.startswith("agfast")
            twin = targets.direct(upstream, port, "v1internal" if agfast else "openai")
            print(f"{args.target}, {args.requests} requests per mode one at a time, taking turns with the upstream "
                  f"direct; {args.events}-event upstream; gap {args.gap_ms:g} ms; load average "
                  f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}")  # fmt: skip
            for stream in (False, True):
                print(report_mode(proxy, twin, port, stream, args))
    finally:
        upstream.terminate()
        upstream.wait(10)
    return 0


def report_mode(proxy: targets.Running, twin: targets.Running, port: int, stream: bool,
                args: argparse.Namespace) -> str:  # fmt: skip
    requests = {proxy.port: proxy.request(stream), twin.port: twin.request(stream)}
    socks = {p: socket.create_connection(("127.0.0.1", p)) for p in (proxy.port, twin.port)}
    for sock in socks.values():
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    got: dict[int, list[tuple[int, int]]] = {p: [] for p in socks}
    pid = proxy.proc.pid
    switches = None
    try:
        for _ in range(WARM):
            for p, sock in socks.items():
                timed(sock, requests[p])
        fetch_stamps(port)
        # The thread that serves: nginx's worker (the last of its tree), agfast's main thread (its pid).
        switches = Switches(measure.tree_pids(pid)[-1]) if args.switches else None
        before = schedstat(pid), schedstat(twin.proc.pid), measure.tree_cpu_seconds(pid)
        for _ in range(args.requests):
            for p, sock in socks.items():
                if args.gap_ms:
                    time.sleep(args.gap_ms / 1000)
                got[p].append(timed(sock, requests[p]))
        after = schedstat(pid), schedstat(twin.proc.pid), measure.tree_cpu_seconds(pid)
    finally:
        for sock in socks.values():
            sock.close()
    stamps = fetch_stamps(port)
    via, direct = split(got[proxy.port], stamps), split(got[twin.port], stamps)
    n = args.requests
    run, queued, slices = ((a - b) / n / 1000 for a, b in zip(after[0], before[0], strict=True))
    up_queued = (after[1][1] - before[1][1]) / n / 2 / 1000  # the upstream serves both clients' requests
    mode = "stream" if stream else "non-stream"
    lines = [f"\n{mode}: proxy on CPU {run:.0f} µs per request (schedstat, all threads; /proc ticks: "
             f"{(after[2] - before[2]) / n * 1e6:.0f}), waiting for a CPU {queued:.0f} µs, scheduled "
             f"{slices * 1000:.1f} times; the upstream waited for a CPU {up_queued:.0f} µs per request",
             "| part | proxied p50 µs | direct p50 µs | added p50 µs | proxied p90 µs | direct p90 µs |",
             "|---|--:|--:|--:|--:|--:|"]  # fmt: skip
    for part in PARTS:
        a, b = statistics.median(via[part]), statistics.median(direct[part])
        lines.append(f"| {part} | {a:.0f} | {b:.0f} | {a - b:+.0f} | {measure.percentile(via[part], 0.9):.0f} | "
                     f"{measure.percentile(direct[part], 0.9):.0f} |")  # fmt: skip
    if switches is not None:
        on_cpu = sides(got[proxy.port], stamps, switches.spans())
        lines += ["", "| proxy main thread on CPU | p50 µs | mean µs |", "|---|--:|--:|"]
        lines += [f"| {side} | {statistics.median(v):.0f} | {statistics.fmean(v):.0f} |" for side, v in on_cpu.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
