"""What the fixed design itself costs: the cheapest proxy h11 + aiohttp + uvloop + orjson allow, beside agfast and
nginx in one run (issue 14).

    python benchmarks/floor.py                   # 20-event upstream, both modes: callgrind, then wrk at 64 connections
    python benchmarks/floor.py --quick           # fewer requests under callgrind, 3 s loads
    python benchmarks/floor.py --no-callgrind    # the /proc column only
    python benchmarks/floor.py --serve json --upstream 8123   # one floor server alone, in front of an upstream

The floor servers (this file, `--serve MODE`) share agfast's shell choices: h11 parses each request (a fresh
`h11.Connection` per cycle, as `http/protocol.py` does), answers leave as pre-encoded heads written raw, one task per
proxied request. Modes:

  fixed  answers every request with the bytes a proxy would send back (the 20 events), pre-encoded: h11 + uvloop
  pass   forwards the request body to the upstream's v1internal stream and its answer's bytes back, no conversion:
         aiohttp's connector, response protocol, parser and `ClientResponse` with a pre-encoded head, as
         `agfast/upstream/client.py` calls them (pooled keep-alive connection, total and idle-read timeouts), and
         the body piped in the read callbacks (`client.PipedHandler`, no task wake-up per read); non-stream:
         collected and written once with a Content-Length; stream: one chunk written per upstream read
  json   pass, plus the least conversion there can be: one `orjson.loads` + `orjson.dumps` of the request body and
         of every event (events split on the SSE blank line)

Beside them: `naive h11` (`baseline_h11.py`, answering a small fixed JSON through h11's `send`), nginx `proxy_pass`
(the peer table's, 1 worker) and agfast (compiled, one account), all in front of one `agfast sim --fast` process.
Every client request is the peer table's OpenAI chat request (two messages). The floor servers forward it as it is
to `v1internal:streamGenerateContent` (agfast always streams upstream, so both read the same 20 events); nginx
passes it to the upstream's OpenAI path, as in the peer table.

Two columns per target and mode:
- instructions per request: the server alone under `valgrind --tool=callgrind`, counters zeroed after a warm-up,
  N requests one at a time on one keep-alive connection, dumped (as `fixed_cost.py`; nginx with
  `master_process off` so its one process is the one counted); unmoved by a busy machine.
- CPU ms per request under wrk (1 thread, 64 connections): utime+stime of the server's process tree over the run,
  divided by the requests done (`peers/measure.py`); moves ±20-30% with the machine's load.
Writes benchmarks/results/floor-<time>.{md,jsonl}. Needs valgrind, nginx and wrk (`peers/install.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import h11
import orjson
import uvloop
import yarl
from aiohttp.client_reqrep import RequestInfo
from aiohttp.helpers import TimeoutHandle
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
from peers import install, measure, targets
from peers.measure import response_done

from agfast.sim.fast import equal_events
from agfast.upstream.client import PipedHandler, pipe_to, total_timer, unpipe

# --- the floor servers -------------------------------------------------------------------------------------------

# One request head or body piece h11 may buffer: agfast's default header limit.
MAX_HEAD = 64 * 1024
# aiohttp's timeouts as agfast sets them: the whole call, and the gap between upstream reads.
TOTAL_TIMEOUT = 600.0
IDLE_READ_TIMEOUT = 120.0
# Upstream connections kept, as agfast's connector.
CONNECTION_LIMIT = 512
KEEPALIVE_TIMEOUT = 60.0
STREAM_FLAG = b'"stream":true'
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
CHUNKED_END = b"0\r\n\r\n"
EVENT_END = b"\r\n\r\n"
UPSTREAM_HEAD = (
    b"POST /v1internal:streamGenerateContent?alt=sse HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\nContent-Type: application/json\r\nAuthorization: Bearer floor\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def convert_events(data: bytes, rest: bytes) -> tuple[list[bytes], bytes]:
    """The least conversion: each complete SSE event of `rest + data` decoded and encoded again; (events, rest)."""
    pieces = (rest + data).split(EVENT_END) if rest else data.split(EVENT_END)
    out = [b"data: " + orjson.dumps(orjson.loads(p[6:])) + b"\n\n" for p in pieces[:-1] if p.startswith(b"data: ")]
    return out, pieces[-1]


class Upstream:
    """The lean upstream path of `agfast/upstream/client.py`, for one fixed URL, built once per process."""

    __slots__ = ("connector", "head", "info", "loop", "probe", "session", "timeout", "url")

    def __init__(self, port: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.url = yarl.URL(f"http://127.0.0.1:{port}/v1internal:streamGenerateContent?alt=sse")
        self.connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, keepalive_timeout=KEEPALIVE_TIMEOUT)
        self.connector._factory = lambda: PipedHandler(self.loop)  # type: ignore[assignment]
        self.timeout = aiohttp.ClientTimeout(total=TOTAL_TIMEOUT, sock_read=IDLE_READ_TIMEOUT)
        self.session = aiohttp.ClientSession(connector=self.connector, timeout=self.timeout)
        self.probe = aiohttp.ClientRequest("POST", self.url, loop=self.loop, session=self.session)
        self.head = UPSTREAM_HEAD % port
        self.info = tuple.__new__(RequestInfo, (self.url, "POST", CIMultiDictProxy(CIMultiDict()), self.url))

    async def post(self, body: bytes) -> Any:
        """POST `body`; the response with its head read (agfast's `UpstreamClient._post`, less its fallbacks)."""
        handle_owner = TimeoutHandle(self.loop, TOTAL_TIMEOUT)
        handle = handle_owner.start()
        timer = handle_owner.timer()
        with timer:
            conn = await self.connector.connect(self.probe, traces=[], timeout=self.timeout)
            protocol = conn.protocol
            protocol.set_response_params(timer=timer, read_until_eof=True, read_timeout=IDLE_READ_TIMEOUT)
            response = aiohttp.ClientResponse(
                "POST", self.url, writer=None, continue100=None, timer=timer, request_info=self.info, traces=[],
                loop=self.loop, session=self.session, stream_writer=_Sent(),  # type: ignore[arg-type]
            )  # fmt: skip
            protocol.transport.writelines((self.head, b"Content-Length: %d\r\n\r\n" % len(body), body))
            protocol.start_timeout()
            await response.start(conn)
        if handle is not None and response.connection is not None:
            response.connection.add_callback(handle.cancel)
        elif handle is not None:
            handle.cancel()
        return response


class _Sent:
    """What `ClientResponse` reads of the writer of a request already sent."""

    __slots__ = ("output_size",)

    def __init__(self) -> None:
        self.output_size = 0


class Relay:
    """An upstream answer's body taken in aiohttp's read callbacks (`take` per piece, `flush` per read) and
    written to the client: per read when streaming, once at the end otherwise; `convert` adds the JSON round trip."""

    __slots__ = ("client", "convert", "ended", "parts", "reader", "rest", "started", "stream")

    def __init__(self, client: asyncio.Transport, reader: Any, stream: bool, convert: bool) -> None:
        self.client, self.reader, self.stream, self.convert = client, reader, stream, convert
        self.parts: list[bytes] = []
        self.rest = b""
        self.started = False
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def take(self, data: bytes) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        """After a network read: a stream writes what the read held; the end, if it came, finishes the answer."""
        if self.ended.done():
            return
        if self.stream:
            self._write_parts()
        if self.reader.is_eof():
            self.finish()

    def _write_parts(self) -> None:
        if not self.parts:
            return
        data = b"".join(self.parts)
        self.parts.clear()
        if self.convert:
            events, self.rest = convert_events(data, self.rest)
            data = b"".join(events)
        if data:
            self.client.write(chunk(data) if self.started else SSE_HEAD + chunk(data))
            self.started = True

    def finish(self) -> None:
        if self.stream:
            self._write_parts()
            self.client.write(CHUNKED_END if self.started else SSE_HEAD + CHUNKED_END)
        else:
            body = b"".join(self.parts)
            if self.convert:
                body = b"".join(convert_events(body, b"")[0])
            self.client.write(JSON_HEAD % len(body) + body)
        self.ended.set_result(None)


class FloorServer(asyncio.Protocol):
    """h11 in, raw pre-encoded bytes out; one request at a time per connection."""

    __slots__ = ("answers", "body", "busy", "conn", "convert", "transport", "upstream")

    def __init__(self, mode: str, upstream: Upstream | None, answers: dict[bool, bytes]) -> None:
        self.upstream, self.answers, self.convert = upstream, answers, mode == "json"
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.body: list[bytes] = []
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if not self.busy:
            self._events()

    def _events(self) -> None:
        while self.transport is not None:
            event = self.conn.next_event()
            kind = type(event)
            if kind is h11.Data:
                self.body.append(event.data)  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                body = b"".join(self.body)
                self.body.clear()
                stream = STREAM_FLAG in body
                if self.upstream is None:
                    self.transport.write(self.answers[stream])
                    self._next_cycle()
                    continue
                self.busy = True
                asyncio.get_running_loop().create_task(self._proxy(body, stream))
                return
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return
            elif kind is h11.ConnectionClosed:
                self.transport.close()
                return

    def _next_cycle(self) -> None:
        old = self.conn
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        leftover, eof = old.trailing_data
        if leftover:
            self.conn.receive_data(leftover)
        if eof:
            self.conn.receive_data(b"")

    async def _proxy(self, body: bytes, stream: bool) -> None:
        assert self.upstream is not None and self.transport is not None
        if self.convert:
            body = orjson.dumps(orjson.loads(body))
        response = await self.upstream.post(body)
        relay = Relay(self.transport, response.content, stream, self.convert)
        early = response.content.read_nowait(-1)
        if early:
            relay.take(early)
        handler = pipe_to(response, relay)
        if handler is None:  # the body is complete (or the connection is not ours): read it as usual
            while chunk_ := await response.content.readany():
                relay.take(chunk_)
                if stream:
                    relay.flush()
            if not relay.ended.done():
                relay.finish()
        else:
            relay.flush()
            with total_timer(response):
                await relay.ended
            unpipe(response, handler)
        response.release()
        self.busy = False
        self._next_cycle()
        if self.transport is not None:
            self._events()


def fixed_answers(events: int) -> dict[bool, bytes]:
    """What `pass` sends back for each mode, pre-encoded: the upstream's v1internal events."""
    body = b"".join(equal_events(events)[0])
    return {False: JSON_HEAD % len(body) + body, True: SSE_HEAD + chunk(body) + CHUNKED_END}


def serve(mode: str, upstream_port: int, port: int, events: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        upstream = Upstream(upstream_port) if mode != "fixed" else None
        answers = fixed_answers(events)
        server = await loop.create_server(lambda: FloorServer(mode, upstream, answers), "127.0.0.1", port)
        print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set_result, None)
        await stop
        server.close()
        if upstream is not None:
            await upstream.session.close()

    uvloop.run(main())


# --- the run -----------------------------------------------------------------------------------------------------

TARGETS = ("naive-h11", "floor-fixed", "floor-pass", "floor-json", "nginx", "agfast")
LABELS = {
    "naive-h11": "(a0) naive h11: `baseline_h11.py`, small fixed JSON through h11's `send`",
    "floor-fixed": "(a) h11 + uvloop, the upstream's events pre-encoded",
    "floor-pass": "(b) + aiohttp pass-through to the upstream",
    "floor-json": "(c) + orjson loads/dumps of the request and every event",
    "nginx": "nginx proxy_pass (1 worker)",
    "agfast": "agfast (compiled)",
}
# Seconds a server under valgrind may take to listen: agfast imports for ~1 min there on a busy 2-core box.
VALGRIND_START_SECONDS = 300.0
NGINX_COUNTED_CONF = "master_process off;\n"


@dataclass(slots=True)
class Row:
    target: str
    mode: str
    events: int
    instructions: int | None  # per request, one at a time under callgrind
    cpu_ms_per_req: float | None  # /proc, under wrk
    rps: float | None
    p50_ms: float | None
    errors: int | None
    counted: int  # requests under callgrind
    answered_200: int
    answer_bytes: int = 0  # the last answer counted under callgrind, head and body


def server_cmd(mode: str, upstream_port: int, events: int) -> list[str]:
    return [sys.executable, __file__, "--serve", mode, "--upstream", str(upstream_port), "--events", str(events)]


class Started:
    """A target's process, port, and how to stop it."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_target(name: str, upstream_port: int, work: Path, events: int, wrap: list[str]) -> Started:
    """Start `name` in front of the upstream, under `wrap` (valgrind's command line, or nothing)."""
    log = work / f"{name}.log"
    if name == "nginx":
        port = targets.free_port()
        conf = work / "nginx.conf"
        text = targets.NGINX_CONF.format(work=work, upstream=upstream_port, port=port)
        conf.write_text((NGINX_COUNTED_CONF if wrap else "") + text)
        proc = targets.spawn([*wrap, "nginx", "-c", str(conf), "-p", str(work)], dict(os.environ), log, work)
        wait_port(proc, port, log)
        return Started(proc, port)
    env = load.clean_env(PYTHONPATH=str(load.ROOT))
    if name == "agfast":
        env = load.upstream_env(upstream_port, PYTHONPATH=str(load.ROOT))
        data_dir = tempfile.mkdtemp(prefix="agfast-", dir=work)
        subprocess.run([sys.executable, "-m", "agfast", "accounts", "add", "--refresh-token", targets.SIM_REFRESH,
                        "--data-dir", data_dir], env=env, check=True, capture_output=True, cwd=load.ROOT)  # fmt: skip
        cmd = load.agfast_cmd(data_dir)
    elif name == "naive-h11":
        cmd = [sys.executable, str(load.ROOT / "benchmarks" / "baseline_h11.py")]
    else:
        cmd = server_cmd(name.split("-", 1)[1], upstream_port, events)
    proc = targets.spawn([*wrap, *cmd], env, log, load.ROOT)
    deadline = time.monotonic() + VALGRIND_START_SECONDS
    while time.monotonic() < deadline:
        found = load.LISTENING.search(log.read_text(errors="replace"))
        if found:
            return Started(proc, int(found.group(1)))
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} did not start:\n{targets.log_tail(log)}")


def wait_port(proc: subprocess.Popen[str], port: int, log: Path) -> None:
    deadline = time.monotonic() + VALGRIND_START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"did not listen on {port}")


def request_for(name: str, port: int, stream: bool) -> bytes:
    return targets.Running(None, port).request(stream)  # type: ignore[arg-type]


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """One request, its whole answer read (head and body as they came)."""
    sock.sendall(request)
    buf = b""
    while not response_done(buf):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        buf += data
    return buf


def count_instructions(
    name: str, upstream_port: int, work: Path, args: argparse.Namespace, stream: bool
) -> tuple[int, int, int]:
    """(instructions per request, 200s, bytes of the last answer) of `name` serving args.n requests one at a time
    under callgrind; the answer's size shows a row served the whole answer (a floor server that dropped events
    would count less)."""
    out = work / f"{name}-{'stream' if stream else 'plain'}.callgrind"
    wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    started = start_target(name, upstream_port, work, args.events, wrap)
    request = request_for(name, started.port, stream)
    try:
        with socket.create_connection(("127.0.0.1", started.port)) as sock:
            for _ in range(args.warmup):
                exchange(sock, request)
            subprocess.run(["callgrind_control", "-z", str(started.proc.pid)], check=True, capture_output=True)
            answers = [exchange(sock, request) for _ in range(args.n)]
            subprocess.run(["callgrind_control", "-d", "counted", str(started.proc.pid)], check=True,
                           capture_output=True)  # fmt: skip
    finally:
        started.stop()
    dumped = Path(f"{out}.1").read_text(errors="replace").splitlines()
    summary = next(int(line.split()[1]) for line in dumped if line.startswith("summary:"))
    return summary // args.n, sum(a.startswith(b"HTTP/1.1 200") for a in answers), len(answers[-1])


def loaded(started: Started, stream: bool, work: Path, args: argparse.Namespace, name: str) -> Any:
    """A warm-up, then one wrk run at args.connections: peers/measure's Load."""
    script = work / f"{name}-{'stream' if stream else 'plain'}.lua"
    script.write_text(measure.wrk_script("/v1/chat/completions", targets.chat_body(stream), {}))
    measure.one_at_a_time([(started.port, request_for(name, started.port, stream))], 20)
    measure.run_wrk(script, started.port, args.warmup_seconds, args.connections)
    return measure.measure_load(started.proc.pid, script, started.port, args.duration, args.connections)


def environment() -> dict[str, str]:
    env = load.environment()
    env["nginx"] = install._first_line(["nginx", "-v"]).split("/")[-1]
    env["loadavg_at_start"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    env["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return env


def run(args: argparse.Namespace) -> int:
    env = environment()
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    modes = {"both": (False, True), "non-stream": (False,), "stream": (True,)}[args.modes]
    work = Path(tempfile.mkdtemp(prefix="floor-"))
    upstream, up_port = targets.start_upstream(args.events)
    rows = {(n, s): Row(n, "stream" if s else "non-stream", args.events, None, None, None, None, None, 0, 0)
            for n in names for s in modes}  # fmt: skip
    try:
        if args.n:
            for name in names:
                for stream in modes:
                    progress(f"callgrind: {name} {'stream' if stream else 'non-stream'}")
                    row = rows[name, stream]
                    counted = count_instructions(name, up_port, work, args, stream)
                    row.instructions, row.answered_200, row.answer_bytes = counted
                    row.counted = args.n
        if args.duration:
            for name in names:
                progress(f"wrk: {name}")
                started = start_target(name, up_port, work, args.events, [])
                try:
                    for stream in modes:
                        got = loaded(started, stream, work, args, name)
                        row = rows[name, stream]
                        row.cpu_ms_per_req, row.rps = got.cpu_ms_per_req, got.requests / max(got.seconds, 1e-9)
                        row.p50_ms, row.errors = got.p50_ms, got.errors
                finally:
                    started.stop()
    finally:
        upstream.terminate()
        upstream.wait(10)
    env["loadavg_at_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    write(args, env, list(rows.values()))
    return 0


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.1f}×" if value is not None and base else "–"


def markdown(rows: list[Row], env: dict[str, str], args: argparse.Namespace) -> str:
    nginx = {r.mode: r for r in rows if r.target == "nginx"}
    counted = f"callgrind, {args.n} requests one at a time after {args.warmup}" if args.n else "not counted (-n 0)"
    loaded_by = f"wrk, 1 thread, {args.connections} connections, {args.duration:.0f} s" if args.duration else "no load"
    head = (
        f"`{' '.join(['python benchmarks/floor.py', *args.argv])}` — {env['cpu']} "
        f"({env['cores']} cores), commit {env['commit']}, {env['date']}, load average {env['loadavg_at_start']} at "
        f"start, {env['loadavg_at_end']} at the end. Upstream: `agfast sim --fast`, {args.events} events. "
        f"Instructions: {counted}. CPU: {loaded_by}. Versions: python {env['python']}, h11 {env['h11']}, "
        f"uvloop {env['uvloop']}, aiohttp {env['aiohttp']}, orjson {env['orjson']}, nginx {env.get('nginx', '?')}."
    )
    lines = [head, "", "| target | mode | instructions / request | × nginx | CPU ms/req (wrk) | × nginx | req/s | "
             "p50 ms | errors |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r.mode, TARGETS.index(r.target))):
        base = nginx.get(r.mode)
        instr = f"{r.instructions:,}" if r.instructions is not None else "–"
        cpu = f"{r.cpu_ms_per_req:.3f}" if r.cpu_ms_per_req is not None else "–"
        lines.append(
            f"| {LABELS[r.target]} | {r.mode} | {instr} | {ratio(r.instructions, base and base.instructions)} | "
            f"{cpu} | {ratio(r.cpu_ms_per_req, base and base.cpu_ms_per_req)} | "
            f"{r.rps:.0f} | {r.p50_ms:.2f} | {r.errors} |".replace("None", "–")
            if r.rps is not None
            else f"| {LABELS[r.target]} | {r.mode} | {instr} | {ratio(r.instructions, base and base.instructions)} "
            f"| – | – | – | – | – |"
        )
    return "\n".join(lines)


def write(args: argparse.Namespace, env: dict[str, str], rows: list[Row]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / time.strftime("floor-%Y%m%d-%H%M%S", time.gmtime())
    text = markdown(rows, env, args)
    base.with_suffix(".md").write_text(text + "\n")
    base.with_suffix(".jsonl").write_text("".join(orjson.dumps({**asdict(r), **env}).decode() + "\n" for r in rows))
    print(text)
    print(f"written: {base}.md, .jsonl", file=sys.stderr)


STARTED = time.monotonic()


def progress(what: str) -> None:
    print(f"… [{(time.monotonic() - STARTED) / 60:4.1f} min] {what}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma list (default: %(default)s)")
    ap.add_argument("--modes", choices=("both", "non-stream", "stream"), default="both")
    ap.add_argument("--events", type=int, default=20, help="SSE events per upstream answer (default: 20)")
    ap.add_argument("-n", type=int, default=200, help="requests counted under callgrind; 0 skips (default: 200)")
    ap.add_argument("--warmup", type=int, default=50, help="requests before counting (default: 50)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run; 0 skips (default: 10)")
    ap.add_argument("--warmup-seconds", type=float, default=2.0, help="wrk warm-up before each target")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="-n 60 --warmup 20 --duration 3")
    ap.add_argument("--no-callgrind", action="store_true", help="the wrk column only (-n 0)")
    ap.add_argument("--out", type=Path, default=load.ROOT / "benchmarks" / "results")
    ap.add_argument("--serve", choices=("fixed", "pass", "json"), help="run one floor server (what the run starts)")
    ap.add_argument("--upstream", type=int, help="the upstream's port, for --serve")
    ap.add_argument("--port", type=int, default=0, help="the port for --serve (default: any free one)")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    if args.serve:
        if args.serve != "fixed" and args.upstream is None:
            ap.error("--serve pass/json needs --upstream PORT")
        serve(args.serve, args.upstream or 0, args.port, args.events)
        return 0
    if args.quick:
        args.n, args.warmup, args.duration = 60, 20, 3.0
    if args.no_callgrind:
        args.n = 0
    unknown = {t.strip() for t in args.targets.split(",") if t.strip()} - set(TARGETS)
    if unknown:
        ap.error(f"unknown target(s): {', '.join(sorted(unknown))} (choose from {', '.join(TARGETS)})")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
