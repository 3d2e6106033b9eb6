"""Tiny verbs the tests speak: start a server (in a thread or as a process), send raw bytes, read answers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import uvloop

import agfast
from agfast.app import App, build_router
from agfast.config import Config
from agfast.http.router import Router
from agfast.server import Server

# Where the agfast under test was imported from: the checkout (editable install) or site-packages (`pip install
# .`). Child processes start there, so `python -m agfast` runs that same agfast and not a checkout shadowing it.
AGFAST_ROOT = Path(agfast.__file__).resolve().parent.parent


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab, most others): what a laptop may skip, CI must run."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


class ServerThread:
    """The real server on its own uvloop in a daemon thread, so plain sockets and sync SDKs can call it."""

    def __init__(self, config: Config, router: Router | None = None) -> None:
        config.port = 0
        self.config = config
        self.app = App(config)
        self.server = self.app.server = Server(config, router or build_router(self.app), self.app.live, self.app.keys)
        self.loop = uvloop.new_event_loop()
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced to the test in __enter__/stop
            self._error = exc
            self._ready.set()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self._done.set()

    async def _main(self) -> None:
        self.app.start()
        try:
            await self.server.start()
            self._ready.set()
            await self.server.wait_stopped()
            await self.server.shutdown()
        finally:
            await self.app.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, wait: float = 10.0) -> None:
        if not self._done.is_set():
            self.loop.call_soon_threadsafe(self.server.request_stop)
            self._done.wait(wait)
        if self._error is not None:
            raise self._error

    def call(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run `fn(*args)` on the server's loop (to poke at server state from the test thread)."""
        result: list[object] = []
        ev = threading.Event()

        def run() -> None:
            result.append(fn(*args))
            ev.set()

        self.loop.call_soon_threadsafe(run)
        ev.wait(5)
        return result[0]

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def make_config(tmp_path: Path, **overrides: object) -> Config:
    cfg = Config(data_dir=tmp_path, port=0, api_key="sk-test-key-123456")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""
    chunks: list[bytes] = field(default_factory=list)

    def json(self) -> dict:  # type: ignore[type-arg]
        return orjson.loads(self.body)  # type: ignore[no-any-return]


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


class Reader:
    """Reads HTTP/1.1 responses off a raw socket, one at a time (so pipelined answers can be checked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed; have {self.buf[:200]!r}")
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed mid-body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self, head_only: bool = False) -> Reply:
        head = self._until(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        while lines and lines[0].startswith(b"HTTP/1.1 100"):
            head = self._until(b"\r\n\r\n") if len(lines) == 1 else b"\r\n".join(lines[2:])
            lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        reply = Reply(status, headers, b"", head)
        if head_only or status in (204, 304):
            return reply
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                chunk = self._exactly(size)
                self._exactly(2)
                if size == 0:
                    break
                reply.chunks.append(chunk)
            reply.body = b"".join(reply.chunks)
        elif "content-length" in headers:
            reply.body = self._exactly(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            reply.body, self.buf = self.buf, b""
        return reply

    def closed(self, timeout: float = 3.0) -> bool:
        """True when the server hung up (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection."""
    with contextlib.closing(connect(port)) as sock:
        sock.sendall(encode(method, path, body, headers))
        return Reader(sock).read(head_only=method == "HEAD")


def encode(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    headers = headers or {}
    lines = [f"{method} {path} HTTP/1.1"]
    if not any(name.lower() == "host" for name in headers):
        lines.append("Host: 127.0.0.1")
    for name, value in headers.items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def strict_sse(raw: bytes, *, comments: bool = False) -> list[tuple[str | None, bytes]]:
    """SSE bytes as agfast must frame them → [(event name or None, data)], failing on any deviation.

    Every event is an optional `event: NAME` line, then `data: …` lines, then one blank line: LF only, no
    stray fields, no missing or doubled blank line, nothing after the last event. `: comment` events (keep-alive
    pings) are allowed only with `comments=True` and are dropped from the result.
    """
    assert b"\r" not in raw, "SSE from agfast uses LF line ends only"
    assert raw.endswith(b"\n\n") and not raw.endswith(b"\n\n\n"), f"stream must end with one blank line: {raw[-40:]!r}"
    out: list[tuple[str | None, bytes]] = []
    for frame in raw[:-2].split(b"\n\n"):
        lines = frame.split(b"\n")
        assert lines != [b""], f"empty event (doubled blank line) in {raw[:200]!r}"
        if lines[0].startswith(b":"):
            assert comments and len(lines) == 1, f"unexpected comment event {frame!r}"
            continue
        name: str | None = None
        if lines[0].startswith(b"event: "):
            name = lines.pop(0)[7:].decode()
            assert name and " " not in name, f"bad event name in {frame!r}"
        assert lines and all(line.startswith(b"data: ") for line in lines), f"malformed event {frame!r}"
        out.append((name, b"\n".join(line[6:] for line in lines)))
    return out


# Upstream URLs on the discard port: a test process that tried to reach Google would fail fast, offline.
OFFLINE_ENV = {
    "AGFAST_UPSTREAM_ENDPOINTS": "http://127.0.0.1:9/v1internal",
    "AGFAST_OAUTH_TOKEN_URL": "http://127.0.0.1:9/token",
    "AGFAST_USERINFO_URL": "http://127.0.0.1:9/userinfo",
}


def seed_account(data_dir: Path, email: str = "seed@example.com") -> None:
    """One account file in Antigravity Tools' layout, so `agfast` has a pool to serve from."""
    from agfast.upstream.accounts import AccountStore

    AccountStore(data_dir).upsert(email, "1//seed-refresh-token", access_token="ya29.seed", expires_in=3600)


class AgfastProcess:
    """`python -m agfast` as a child process; the port is read back from its start-up line.

    Its stderr is read all the time by a thread, as a terminal would: at the default level every answer writes
    an access line, and a pipe nobody reads fills up and blocks the server's loop.
    """

    LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
    # Lines of stderr kept (the newest); a long campaign logs far more than any test reads.
    KEEP_LINES = 20_000

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        impl: str = "c",
        on_stderr: Callable[[str], None] | None = None,
    ) -> None:
        """`on_stderr` sees every stderr line as it comes (the one reader of the pipe is this class's thread)."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AGFAST_")}
        if impl == "py":
            full_env["AGFAST_NO_EXTENSIONS"] = "1"
        full_env.update(OFFLINE_ENV)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agfast", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=AGFAST_ROOT,
            text=True,
        )
        # The stdout lines a wait has read so far, up to the one it waited for (as readline() would leave them:
        # right after wait_listening() the last one is the start-up line).
        self.lines: list[str] = []
        self._unread: collections.deque[str] = collections.deque()
        # Guards `_unread`; notified for each stdout line and at end of file, so waits end at their deadline.
        self._stdout_seen = threading.Condition()
        self._stdout_ended = False
        self.port = 0
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=self.KEEP_LINES)
        self.access_lines = 0
        self._on_stderr = on_stderr
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        self._stdout_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._stdout_reader.start()

    def _read_stdout(self) -> None:
        """The one reader of stdout (so a full pipe never blocks the child); a wait for a line never blocks past
        its deadline on a silent child."""
        stream = self.proc.stdout
        assert stream is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us when the test is done with agfast
            for line in stream:
                with self._stdout_seen:
                    self._unread.append(line)
                    self._stdout_seen.notify_all()
        with self._stdout_seen:
            self._stdout_ended = True
            self._stdout_seen.notify_all()

    def wait_lines(self, pattern: re.Pattern[str], count: int, timeout: float = 20.0) -> list[re.Match[str]]:
        """The first `count` stdout lines matching `pattern`, waited for up to `timeout` seconds; fails (never
        hangs) when the child goes quiet or exits first."""
        deadline = time.monotonic() + timeout
        with self._stdout_seen:
            while True:
                found = [m for line in self.lines if (m := pattern.search(line))]
                if len(found) >= count:
                    return found[:count]
                if self._unread:
                    self.lines.append(self._unread.popleft())
                    continue
                left = deadline - time.monotonic()
                if self._stdout_ended or left <= 0:
                    break
                self._stdout_seen.wait(left)
        if self._stdout_ended and self.proc.poll() is not None:
            self._stderr_reader.join(5)
            raise RuntimeError(f"agfast exited: {self.proc.returncode} {self.lines} {self.stderr_text}")
        raise TimeoutError(
            f"{count} lines like {pattern.pattern!r} not seen in {timeout} s: {self.lines}; stderr ends "
            f"{self.stderr_text[-2000:]}"
        )

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us when the test is done with agfast
            for line in stream:
                self.stderr_lines.append(line)
                if "agfast.access" in line:
                    self.access_lines += 1
                if self._on_stderr is not None:
                    self._on_stderr(line)

    def stderr_done(self, timeout: float = 10.0) -> None:
        """Wait until the exited child's stderr has been read to its end."""
        self._stderr_reader.join(timeout)

    @property
    def stderr_text(self) -> str:
        return "".join(self.stderr_lines)

    def wait_listening(self, timeout: float = 20.0) -> AgfastProcess:
        self.port = int(self.wait_lines(self.LISTENING, 1, timeout)[0].group(1))
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._stderr_reader.join(5)
        self.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr_reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> AgfastProcess:
        return self.wait_listening()

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_agfast(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run agfast to completion (for commands and start-up failures)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AGFAST_")}
    full_env.update(OFFLINE_ENV)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agfast", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=AGFAST_ROOT,
        timeout=timeout,
    )
