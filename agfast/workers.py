"""`agfast serve --workers N`: N server processes on one port, and the supervisor that keeps them running.

Each worker is today's single-process server, forked before any event loop exists, listening with
SO_REUSEPORT so the kernel spreads connections over them (without SO_REUSEPORT the supervisor's listening
socket is inherited and shared instead). The supervisor does no request work: it restarts a worker that dies,
forwards SIGHUP (config reload) and SIGTERM/SIGINT (each worker stops accepting, lets streams finish up to
shutdown_timeout, closes), and exits when the last worker has. Workers share the pool through Redis: with no
`state.redis_url` the supervisor starts a private redis-server on a unix socket in the data dir. Metrics:
the supervisor points PROMETHEUS_MULTIPROC_DIR at a fresh directory in the data dir before forking, so every
worker's series land there and any worker's /metrics sums them; a worker that exits has its live gauges removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agfast.config import Config, ConfigError

log = logging.getLogger("agfast.workers")

# A worker that dies sooner than this after its start is restarted only after this long: a worker that cannot
# start must not become a fork loop.
RESTART_BACKOFF = 1.0
# A worker still running this long after shutdown_timeout is killed: a stuck worker must not keep the
# supervisor (and the port) forever.
STOP_GRACE = 5.0
# The supervisor looks for exited workers this often (a few wake-ups a second; it serves nothing).
WATCH_EVERY = 0.1
# How long the private redis-server may take to accept connections.
REDIS_START_TIMEOUT = 10.0
# prctl option: the signal a process receives when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
# prometheus-client picks in-memory or file-backed values when it is first imported, reading this variable: the
# supervisor sets it before forking and must not import prometheus-client (or agfast.metrics) before that.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The workers' prometheus-client files, in the data dir; emptied at every start (old pids' counts must not add up).
METRICS_DIR = "metrics-workers"
NO_REDIS = (
    "--workers {n} needs shared state: set state.redis_url (or AGFAST_REDIS_URL) to a Redis, or install "
    "redis-server (Debian/Ubuntu: apt-get install redis-server) and agfast starts a private one"
)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: this process gets `sig` when the process that started it dies (a supervisor killed with SIGKILL
    must not leave workers or its redis-server behind). Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass


def worker_count(config: Config) -> int:
    """`workers` resolved: 0 means one per core."""
    return config.workers or (os.cpu_count() or 1)


def reserve_port(config: Config) -> socket.socket | None:
    """A socket that fixes the port every worker binds (`--port 0` must mean one port for all of them).

    With SO_REUSEPORT it is only bound (workers listen on their own sockets in the same group); without it,
    it is the listening socket the workers inherit. None: the address cannot be bound (a worker says why)."""
    host = config.bind_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, config.port))
    except OSError:
        sock.close()
        return None
    if not hasattr(socket, "SO_REUSEPORT"):
        sock.listen(2048)
    config.port = sock.getsockname()[1]
    return sock


class PrivateRedis:
    """A redis-server for this host's workers only: unix socket in the data dir, no persistence."""

    def __init__(self, data_dir: Path) -> None:
        self.socket_path = data_dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.socket_path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port", "0",
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: die_with_parent(signal.SIGTERM),
        )  # fmt: skip
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket_path))
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise ConfigError("the private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.socket_path.unlink(missing_ok=True)


class Supervisor:
    """Forks the workers, restarts the ones that die, forwards signals, and stops in order."""

    def __init__(self, config: Config, count: int, run_worker: Callable[[Config, socket.socket | None], int]) -> None:
        self.config = config
        self.count = count
        self.run_worker = run_worker
        self.children: dict[int, int] = {}  # pid → worker number
        self.started: dict[int, float] = {}  # worker number → when it was last started
        self.stopping = False
        self.kill_at = float("inf")
        self.listener: socket.socket | None = None

    def run(self) -> int:
        metrics_dir = self._fresh_metrics_dir()
        redis: PrivateRedis | None = None
        if not self.config.state_redis_url:
            redis = PrivateRedis(self.config.data_dir)
            try:
                redis.start()
            except FileNotFoundError:
                raise ConfigError(NO_REDIS.format(n=self.count)) from None
            self.config.state_redis_url = redis.url
        try:
            self.listener = reserve_port(self.config)
            if self.listener is None:  # workers would fail to bind, one after the other, for ever
                print(f"agfast: cannot bind {self.config.bind_host}:{self.config.port}", file=sys.stderr)
                return 1
            for number in range(self.count):
                self._spawn(number)
            signal.signal(signal.SIGTERM, self._stop)
            signal.signal(signal.SIGINT, self._stop)
            signal.signal(signal.SIGHUP, self._forward)
            return self._watch()
        finally:
            if redis is not None:
                redis.stop()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _fresh_metrics_dir(self) -> Path:
        """An empty PROMETHEUS_MULTIPROC_DIR, set before any worker (or prometheus-client) exists."""
        path = self.config.data_dir / METRICS_DIR
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(path)
        return path

    def _spawn(self, number: int) -> None:
        self.started[number] = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the worker: today's server, in this process
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                die_with_parent()
                code = self.run_worker(self.config, self.listener)
            finally:
                os._exit(code)
        self.children[pid] = number

    def _stop(self, signum: int, frame: object) -> None:
        if not self.stopping:
            self.kill_at = time.monotonic() + self.config.shutdown_timeout + STOP_GRACE
        self.stopping = True
        self._forward(signal.SIGTERM, frame)

    def _forward(self, signum: int, frame: object) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _watch(self) -> int:
        from prometheus_client.multiprocess import mark_process_dead  # after MULTIPROC_ENV is set

        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if self.stopping and time.monotonic() >= self.kill_at:
                    log.warning("%d worker(s) still running after the shutdown grace: killing them", len(self.children))
                    self._forward(signal.SIGKILL, None)
                    self.kill_at = float("inf")
                time.sleep(WATCH_EVERY)
                continue
            number = self.children.pop(pid, None)
            mark_process_dead(pid)  # its live gauges (open streams, queue depth) leave the sums
            if number is None or self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.warning("worker %d (pid %d) exited with %d: restarting it", number, pid, code)
            wait = RESTART_BACKOFF - (time.monotonic() - self.started[number])
            if wait > 0:
                time.sleep(wait)
            if not self.stopping:
                self._spawn(number)
        if self.listener is not None:
            self.listener.close()
        return 0
