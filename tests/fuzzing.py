"""The machinery the fuzz campaigns share: agfast as a child process in front of the simulator, a strict reader of
the bytes it answers with, and an asyncio driver that keeps many inputs in flight with a deadline on each.

The target runs as a real process so a crash is a dead process, a hang is a missed deadline and a traceback is a
line on its stderr (drained by a thread: a full pipe would stall the server and look like a hang). The simulator
runs in this process without recording, so a million requests cost it no memory.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from campaign import rss_kib
from helpers import AgfastProcess
from stack import CLIENT_ID, CLIENT_SECRET, KEY, google_env, onboard_all, stack_config

from agfast.sim import GoogleSimulator, SimulatorThread, demo_accounts

# What the target's stderr must never say: an unhandled exception anywhere, or a handler that crashed (a 500).
BAD_LOG = re.compile(r"Traceback|handler failed|Exception in callback|exception was never retrieved")
# Offending stderr excerpts kept for the failure message; the count is kept in full.
KEPT_EXCERPTS = 5
# Failing inputs kept per kind of failure (the count is kept in full).
EXAMPLES_PER_KIND = 2
# Lines of context kept after an offending line (the traceback itself).
EXCERPT_LINES = 30


class StderrWatch:
    """Counts a child's log lines that match BAD_LOG and keeps the first few, fed line by line (`feed`), or
    draining a stream of its own on a thread."""

    def __init__(self, stream: Any = None) -> None:
        self.bad = 0
        self.lines = 0
        self.excerpts: list[list[str]] = []
        self._open: list[str] | None = None
        if stream is not None:
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.feed(line)

    def feed(self, line: str) -> None:
        self.lines += 1
        if self._open is not None and len(self._open) < EXCERPT_LINES:
            self._open.append(line)
        if BAD_LOG.search(line):
            self.bad += 1
            if len(self.excerpts) < KEPT_EXCERPTS:
                self._open = [line]
                self.excerpts.append(self._open)

    def report(self) -> str:
        return "\n---\n".join("".join(lines) for lines in self.excerpts)


class FuzzTarget:
    """The simulator on a thread and agfast as a child process in front of it, accounts onboarded the real way.

    `settings` go to agfast's config.toml (short timeouts so truncated inputs end quickly, a small body limit so
    413s are cheap to reach).
    """

    def __init__(self, data_dir: Path, impl: str = "c", **settings: object) -> None:
        self.data_dir = data_dir
        self.impl = impl
        self.settings = settings
        self.sim_thread = SimulatorThread(
            GoogleSimulator(accounts=demo_accounts(3), client_id=CLIENT_ID, client_secret=CLIENT_SECRET, record=False)
        )
        self.proc: AgfastProcess | None = None
        self.watch: StderrWatch | None = None
        self.rss_peak_kib = 0

    def __enter__(self) -> FuzzTarget:
        sim = self.sim_thread.start()
        try:
            onboard_all(stack_config(self.data_dir, sim), sim)
            lines = [f"{key} = {_toml(value)}" for key, value in self.settings.items()]
            (self.data_dir / "config.toml").write_text("\n".join(lines) + "\n")
            env = {
                "AGFAST_DATA_DIR": str(self.data_dir),
                "AGFAST_PORT": "0",
                "AGFAST_API_KEY": KEY,
                **google_env(sim),
            }
            # The process's own reader is the pipe's only reader; the watch sees every line through it.
            self.watch = StderrWatch()
            self.proc = AgfastProcess(env=env, impl=self.impl, on_stderr=self.watch.feed).wait_listening()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.close()
        self.sim_thread.stop()

    @property
    def port(self) -> int:
        assert self.proc is not None
        return self.proc.port

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def finish(self) -> tuple[int, int]:
        """Stop the target (SIGTERM) once the campaign is over: (exit code, peak RSS in KiB)."""
        assert self.proc is not None and self.watch is not None
        self.rss_peak_kib = rss_kib(self.pid, "VmHWM")
        code = self.proc.proc.wait(0) if self.proc.proc.poll() is not None else _terminate(self.proc)
        self.proc.stderr_done()
        return code, self.rss_peak_kib


def _terminate(proc: AgfastProcess) -> int:
    proc.proc.terminate()
    return proc.proc.wait(20)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    return str(value)


# -- reading what the server said ------------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5]\d\d) [\x20-\x7e]*")
HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ?([\x20-\x7e\x80-\xff\t]*)")
CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
# A response head longer than this is not one agfast would write.
MAX_HEAD = 64 * 1024
# Statuses that carry no body whatever their headers say.
NO_BODY = (204, 304)


class Malformed(Exception):
    """The server's bytes are not a well-formed HTTP/1.1 response sequence."""


def parse_answers(data: bytes, may_be_head: bool) -> list[Answer]:
    """Every response in `data` (all the server sent before closing), in order, each one well-formed.

    A response to HEAD carries a Content-Length but no body; the request bytes decide whether that may happen
    (`may_be_head`), and then both readings are tried.
    """
    out: list[Answer] = []
    if not _parse_from(data, 0, may_be_head, out):
        raise Malformed(data[:600])
    return out


def take_answer(buf: bytearray) -> Answer | None:
    """The first response in `buf` (removed from it) once it is complete; None while it is not."""
    data = bytes(buf)
    while True:
        try:
            found = _one(data, 0, head_only=False)
        except Malformed:
            raise Malformed(data[:600]) from None
        if found is None:
            return None
        answer, end = found
        del buf[:end]
        if answer.status >= 200:
            return answer
        data = bytes(buf)  # an interim 100 Continue: the real answer follows


def _parse_from(data: bytes, pos: int, may_be_head: bool, out: list[Answer]) -> bool:
    while pos < len(data):
        if may_be_head:
            # HEAD: the same head, no body. That reading first when what follows starts another response (or
            # is nothing); the other reading if it leads nowhere.
            try:
                bare = _one(data, pos, head_only=True)
            except Malformed:
                return False
            if bare is None:
                return False
            if _starts_answer(data, bare[1]):
                trial = [bare[0]] if bare[0].status >= 200 else []
                if _parse_from(data, bare[1], may_be_head, trial):
                    out.extend(trial)
                    return True
        try:
            found = _one(data, pos, head_only=False)
        except Malformed:
            return False
        if found is None:
            return False
        answer, pos = found
        if answer.status >= 200:  # 100 Continue: an interim answer, the real one follows
            out.append(answer)
    return True


def _starts_answer(data: bytes, pos: int) -> bool:
    rest = data[pos : pos + 9]
    return rest == b"HTTP/1.1 "[: len(rest)]


def _one(data: bytes, pos: int, head_only: bool) -> tuple[Answer, int] | None:
    """The response at `pos` and where it ends; None if incomplete; Malformed if it cannot be one."""
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        if len(data) - pos > MAX_HEAD:
            raise Malformed(data[pos : pos + 600])
        return None
    lines = data[pos:end].split(b"\r\n")
    if not STATUS_LINE.fullmatch(lines[0]):
        raise Malformed(data[pos : pos + 600])
    status = int(lines[0][9:12])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        found = HEADER_LINE.fullmatch(line)
        if found is None:
            raise Malformed(data[pos : pos + 600])
        name = found.group(1).lower()
        if name in headers and name in (b"content-length", b"transfer-encoding"):
            raise Malformed(data[pos : pos + 600])
        headers[name] = found.group(2)
    pos = end + 4
    if status < 200 or status in NO_BODY or head_only:
        return Answer(status, headers, b""), pos
    length = headers.get(b"content-length")
    chunked = headers.get(b"transfer-encoding")
    if length is not None and chunked is not None:
        raise Malformed(data[:600])
    if chunked is not None:
        if chunked != b"chunked":
            raise Malformed(data[:600])
        body, pos = _dechunk(data, pos)
        return None if pos < 0 else (Answer(status, headers, body), pos)
    if length is not None:
        if not length.isdigit():
            raise Malformed(data[:600])
        if pos + int(length) > len(data):
            return None
        return Answer(status, headers, data[pos : pos + int(length)]), pos + int(length)
    return Answer(status, headers, data[pos:]), len(data)  # delimited by close


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int]:
    """The de-chunked body and where it ends; (b"", -1) if incomplete; Malformed if the framing is wrong."""
    parts = []
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return b"", -1
        size_text = data[pos:end].split(b";", 1)[0]
        if not CHUNK_SIZE.fullmatch(size_text):
            raise Malformed(data[pos : pos + 600])
        size = int(size_text, 16)
        pos = end + 2
        if len(data) < pos + size + 2:
            return b"", -1
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise Malformed(data[pos : pos + 600])
        parts.append(data[pos : pos + size])
        pos += size + 2
        if size == 0:
            return b"".join(parts), pos


# -- driving many inputs at once -------------------------------------------------------------------------


@dataclass
class Tally:
    """What a campaign saw: inputs, failures by kind (with the first few inputs that caused them), statuses."""

    inputs: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    def fail(self, kind: str, sent: bytes, got: bytes) -> None:
        seen = self.failures.get(kind, 0)
        self.failures[kind] = seen + 1
        if seen < EXAMPLES_PER_KIND and len(self.examples) < KEPT_EXCERPTS * 4:
            self.examples.append((kind, sent[:1500], got[:1500]))

    def count(self, kind: str) -> int:
        return self.failures.get(kind, 0)

    def describe(self) -> str:
        return "\n".join(f"{kind}: sent {sent!r}\n  got {got!r}" for kind, sent, got in self.examples)


class Exchange:
    """What the server sent on one connection before closing it, and how long it had been quiet by then."""

    __slots__ = ("data", "quiet")

    def __init__(self, data: bytes, quiet: float) -> None:
        self.data = data
        self.quiet = quiet


class OneShot(asyncio.Protocol):
    """A connection that collects everything the server sends until it closes the connection."""

    __slots__ = ("active", "chunks", "done", "first", "loop", "transport")

    def __init__(self, first: bytes, done: asyncio.Future[Exchange]) -> None:
        self.chunks: list[bytes] = []
        self.done = done
        self.first = first
        self.transport: asyncio.Transport | None = None
        self.loop = done.get_loop()
        self.active = self.loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.first)  # type: ignore[union-attr]
        self.active = self.loop.time()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.active = self.loop.time()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(Exchange(b"".join(self.chunks), self.loop.time() - self.active))


async def one_shot(
    port: int, fragments: list[bytes], deadline: float, gap: float = 0.0, abort_after: float | None = None
) -> Exchange | None:
    """What the server sent before closing the connection, or None when it did not close in time.

    `fragments` are written `gap` seconds apart (so the server parses them as they come); with `abort_after`
    the client resets the connection that long after its last write, and nothing is left to judge.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Exchange] = loop.create_future()
    transport, proto = await loop.create_connection(lambda: OneShot(fragments[0], done), "127.0.0.1", port)
    handle = loop.call_later(deadline, done.cancel)
    try:
        for fragment in fragments[1:]:
            await asyncio.sleep(gap)
            if transport.is_closing():
                break
            transport.write(fragment)
            proto.active = loop.time()
        if abort_after is not None:
            await asyncio.sleep(abort_after)
            return Exchange(b"", 0.0)
        return await done
    except asyncio.CancelledError:
        if not done.cancelled():
            raise
        return None
    finally:
        handle.cancel()
        transport.abort()


def run(main: Any) -> Any:
    """Run a campaign coroutine on uvloop (the client side should not be the bottleneck)."""
    return uvloop.run(main)
