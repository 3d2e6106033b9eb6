"""What one run measures: a process tree's CPU and memory from /proc, wrk's load, and a one-at-a-time client.

CPU is utime+stime (plus reaped children's cutime+cstime) summed over the proxy's process and all its
descendants, so a master/worker proxy (nginx) or one that forks is charged in full and wrk's own CPU never is.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_LINE = re.compile(r"^WRK_JSON (\{.*\})$", re.MULTILINE)
# A response head larger than this is not one of our upstreams' answers.
MAX_HEAD = 64 * 1024
CHUNKED_END = b"\r\n0\r\n\r\n"
SETTLE_WINDOW = 0.5  # seconds per idle check
IDLE_SHARE = 0.1  # a tree using less than this share of one core is idle
# A load row is trusted once it completed this many requests per connection: the CPU of the requests still in
# flight when wrk stops (at most one per connection) is charged without them being counted, so at 10 per
# connection the over-charge is at most ~10%.
MIN_REQUESTS_PER_CONNECTION = 10
# A row short of that is measured once more with this many connections (a peer that queues 64 streams behind
# one worker finishes none of them in 10 s, but finishes 8)...
RETRY_CONNECTIONS = 8
# ...for as long as its first run's rate says 10 per connection take, at least the row's length, at most this.
RETRY_MAX_SECONDS = 60.0


def tree_pids(root: int) -> list[int]:
    """root and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(root: int) -> float:
    """Resident memory now, summed over the tree (shared pages of a master/worker pair count twice)."""
    return sum(_status_kib(pid, "VmRSS:") for pid in tree_pids(root)) / 1024


def tree_peak_rss_mib(root: int) -> float:
    """VmHWM (the high-water mark of resident memory since start), summed over the tree."""
    return sum(_status_kib(pid, "VmHWM:") for pid in tree_pids(root)) / 1024


@dataclass(slots=True)
class Load:
    """One wrk run: what the proxy did with it and what it cost."""

    requests: int
    seconds: float
    errors: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    cpu_ms_per_req: float
    connections: int
    settled: bool  # False: the proxy was still busy with earlier work when the run began


def wrk_script(path: str, body: bytes, headers: dict[str, str]) -> str:
    """A wrk Lua script that POSTs `body` and prints its summary as one JSON line (no per-response hook)."""
    lines = ['wrk.method = "POST"', f'wrk.path = "{path}"', f"wrk.body = [==[{body.decode()}]==]"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in {"Content-Type": "application/json", **headers}.items()]
    lines.append(
        "done = function(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format(\'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,'
        '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\\n\', summary.requests, summary.duration,'
        " e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))\n"
        "end"
    )
    return "\n".join(lines) + "\n"


def parse_wrk(output: str) -> dict[str, int]:
    found = WRK_LINE.search(output)
    if not found:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    return orjson.loads(found.group(1))


def run_wrk(script: Path, port: int, seconds: float, connections: int) -> dict[str, int]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    cmd += ["-s", str(script), f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return parse_wrk(out.stdout)


def retry_plan(requests: int, seconds: float, connections: int, duration: float) -> tuple[int, float] | None:
    """(connections, seconds) for a row's second run when its first completed too few requests, else None."""
    if requests >= MIN_REQUESTS_PER_CONNECTION * connections:
        return None
    fewer = min(connections, RETRY_CONNECTIONS)
    needed = MIN_REQUESTS_PER_CONNECTION * fewer
    rate = requests / seconds if seconds > 0 else 0.0
    length = min(RETRY_MAX_SECONDS, max(duration, math.ceil(needed / rate) if rate > 0 else RETRY_MAX_SECONDS))
    if fewer == connections and length <= duration:
        return None  # the same run again would measure the same thing
    return fewer, length


def settle(pid: int, limit: float = 60.0) -> bool:
    """Wait until the proxy has drained work left from an earlier run (its tree uses < 10% of a core);
    False if it was still busy after `limit` seconds."""
    deadline = time.monotonic() + limit
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(SETTLE_WINDOW)
        now = tree_cpu_seconds(pid)
        if now - before < SETTLE_WINDOW * IDLE_SHARE:
            return True
        before = now
    return False


def measure_load(pid: int, script: Path, port: int, seconds: float, connections: int) -> Load:
    """CPU of the proxy's tree over exactly the wrk run, divided by the requests wrk completed.

    A slow proxy still works on requests wrk left in flight when a run ends: waiting for it to settle before the
    run keeps an earlier run's backlog out of this one. The work already done on this run's last in-flight
    requests (at most `connections` of them) is charged without them being counted: a slow proxy is
    over-charged a little, by far less than the differences this benchmark shows.
    """
    settled = settle(pid)
    cpu0 = tree_cpu_seconds(pid)
    summary = run_wrk(script, port, seconds, connections)
    cpu = tree_cpu_seconds(pid) - cpu0
    requests = summary["requests"]
    socket_errors = summary["connect"] + summary["read"] + summary["write"] + summary["timeout"]
    return Load(
        requests=requests,
        seconds=summary["duration_us"] / 1e6,
        errors=socket_errors + summary["status"],
        non_2xx=summary["status"],
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        cpu_ms_per_req=cpu / max(requests, 1) * 1000,
        connections=connections,
        settled=settled,
    )


def response_done(buf: bytes) -> bool:
    """True once `buf` holds a whole HTTP/1.1 response (Content-Length or chunked)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = buf[:head_end].lower()
    if b"transfer-encoding: chunked" in head:
        return buf.endswith(CHUNKED_END)
    at = head.find(b"content-length:")
    if at < 0:
        return False
    line_end = head.find(b"\r\n", at)
    length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
    return len(buf) >= head_end + 4 + length


@dataclass(slots=True)
class Timings:
    """One client's requests in turn: full latencies and times to the first response byte, in ms."""

    latencies: list[float]
    firsts: list[float]
    errors: int = 0


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _exchange(sock: socket.socket, request: bytes, into: Timings) -> bool:
    """One request and its whole answer; False if the peer had closed the idle connection (nothing recorded)."""
    t0 = time.perf_counter()
    try:
        sock.sendall(request)
        buf = sock.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        return False
    if not buf:
        return False
    t1 = time.perf_counter()
    while not response_done(buf):
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("peer closed mid-response")
        buf += more
    t2 = time.perf_counter()
    if not buf.startswith(b"HTTP/1.1 200"):
        into.errors += 1
    into.firsts.append((t1 - t0) * 1000)
    into.latencies.append((t2 - t0) * 1000)
    return True


def one_at_a_time(clients: list[tuple[int, bytes]], count: int) -> list[Timings]:
    """`count` requests per (port, request), one at a time, taking turns between the clients.

    Taking turns puts a proxy and the upstream direct into the same moments of a busy machine, so their
    difference (the added latency) is not one run's noise against another's. A peer that ends keep-alive
    connections after so many requests (nginx: 1,000 by default) gets a new one.
    """
    socks = [_connect(port) for port, _ in clients]
    out = [Timings([], []) for _ in clients]
    try:
        for _ in range(count):
            for i, ((port, request), timings) in enumerate(zip(clients, out)):
                if not _exchange(socks[i], request, timings):
                    socks[i].close()
                    socks[i] = _connect(port)
                    if not _exchange(socks[i], request, timings):
                        raise ConnectionError(f"127.0.0.1:{port} closes connections without answering")
    finally:
        for sock in socks:
            sock.close()
    return out


def first_answer(port: int, request: bytes, timeout: float = 60.0) -> bytes:
    """The whole answer to one request on a new connection (b"" if the peer closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        buf = b""
        while not response_done(buf):
            more = sock.recv(65536)
            if not more:
                break
            buf += more
    return buf


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


# How an open stream ended; every outcome but DONE is an error. Kept apart so a table can say what failed.
DONE, TIMED_OUT, REFUSED, CLOSED, NOT_200 = "done", "timed out", "refused", "closed early", "not 200"
STREAM_OUTCOMES = (DONE, TIMED_OUT, REFUSED, CLOSED, NOT_200)


@dataclass(slots=True)
class StreamEnd:
    """One open stream: how it ended, whether any answer byte came, and after how many seconds."""

    outcome: str
    answered: bool
    seconds: float


async def _one_stream(port: int, request: bytes, timeout: float) -> StreamEnd:
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return StreamEnd(REFUSED, False, time.monotonic() - t0)
    buf = b""
    try:
        writer.write(request)
        async with asyncio.timeout(timeout):
            while not response_done(buf):
                more = await reader.read(65536)
                if not more:
                    return StreamEnd(CLOSED, bool(buf), time.monotonic() - t0)
                buf += more
        return StreamEnd(DONE if buf.startswith(b"HTTP/1.1 200") else NOT_200, True, time.monotonic() - t0)
    except TimeoutError:
        return StreamEnd(TIMED_OUT, bool(buf), time.monotonic() - t0)
    except OSError:
        return StreamEnd(CLOSED, bool(buf), time.monotonic() - t0)
    finally:
        writer.close()


@dataclass(slots=True)
class OpenStreams:
    """`count` slow streams opened at once: how each kind of ending counted, and the tree's peak RSS meanwhile."""

    count: int
    outcomes: dict[str, int]
    answered: int  # streams that received at least their first byte
    done_p50_s: float  # median seconds to the end, over the streams that finished
    peak_rss_mib: float

    @property
    def errors(self) -> int:
        return self.count - self.outcomes.get(DONE, 0)


async def _open_streams(pid: int, port: int, request: bytes, count: int, timeout: float) -> OpenStreams:
    tasks = [asyncio.ensure_future(_one_stream(port, request, timeout)) for _ in range(count)]
    peak = 0.0
    while not all(t.done() for t in tasks):
        peak = max(peak, tree_rss_mib(pid))
        await asyncio.sleep(0.2)
    ends = [t.result() for t in tasks]
    outcomes = {name: sum(1 for e in ends if e.outcome == name) for name in STREAM_OUTCOMES}
    done = [e.seconds for e in ends if e.outcome == DONE]
    return OpenStreams(count, outcomes, sum(1 for e in ends if e.answered), percentile(done, 0.5), peak)


def open_streams(pid: int, port: int, request: bytes, count: int, timeout: float) -> OpenStreams:
    """`count` slow streams opened at once, each given `timeout` seconds to finish."""
    return asyncio.run(_open_streams(pid, port, request, count, timeout))
