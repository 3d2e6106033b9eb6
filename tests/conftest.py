"""Shared fixtures: both hot-path implementations, and the server under test.

A module's tests share one Google simulator (`sim`) and talk to agfast through `stack`. Modules tune them with
constants, read here through `request.module`: `SIM_ACCOUNTS` (the simulator's accounts, default 3),
`SHARED_STACK = True` (one agfast for the whole module instead of one per test) and `STACK_CONFIG` (config
overrides for that shared agfast).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest
from helpers import AGFAST_ROOT, ServerThread, in_ci
from stack import agfast_on, start_sim

from agfast import _sse_py
from agfast.sim import GoogleSimulator

try:
    from agfast import _sse as _sse_c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CI builds it; a missing build must fail loudly there
    _sse_c = None

IMPLS = ["py", "c"]


def compiled_missing(name: str) -> NoReturn:
    """A compiled module the test needs is absent: fail in CI (it builds them), else skip saying why.

    Locally that happens with a pure-Python install (no C compiler) or when a source checkout without an
    in-place build shadows an installed agfast (`python -m pytest` puts the current directory first).
    """
    reason = f"{name} is not built for the agfast imported from {AGFAST_ROOT} (pip install -e . builds it in place)"
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def sse_module(name: str) -> ModuleType:
    if name == "py":
        return _sse_py
    if _sse_c is None:
        compiled_missing("the Cython extension agfast._sse")
    return _sse_c


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    """The hot-path implementation under test: every test using it runs once per twin."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sse(impl: str) -> ModuleType:
    return sse_module(impl)


@pytest.fixture(scope="module")
def sim(request: pytest.FixtureRequest) -> Iterator[GoogleSimulator]:
    """The module's Google simulator, shared by its tests (`SIM_ACCOUNTS` accounts, 3 unless the module says)."""
    with start_sim(accounts=getattr(request.module, "SIM_ACCOUNTS", 3)) as thread:
        yield thread


@pytest.fixture
def fresh(sim: GoogleSimulator, tmp_path: Path) -> Iterator[ServerThread]:
    """A private agfast for one test, for tests that script faults: its pool's lockouts die with it."""
    with agfast_on(sim, tmp_path / "agfast") as st:
        yield st
    sim.clear_faults()


@pytest.fixture(scope="module")
def shared_stack(
    request: pytest.FixtureRequest, sim: GoogleSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """One agfast for all the module's tests (no faults scripted, so no lockouts leak between them)."""
    overrides = getattr(request.module, "STACK_CONFIG", {})
    with agfast_on(sim, tmp_path_factory.mktemp(request.module.__name__), **overrides) as st:
        yield st


@pytest.fixture
def stack(request: pytest.FixtureRequest, sim: GoogleSimulator) -> ServerThread:
    """The agfast a test talks to: `fresh`, or the module's `shared_stack` (`SHARED_STACK = True`) with the
    simulator's request log emptied, so the test sees only its own upstream calls."""
    if getattr(request.module, "SHARED_STACK", False):
        shared: ServerThread = request.getfixturevalue("shared_stack")
        sim.clear_requests()
        return shared
    return request.getfixturevalue("fresh")  # type: ignore[no-any-return]


class RedisServer:
    """A real `redis-server` on a free loopback port, no persistence; `kill()` and `start()` again for outages."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh Redis for one test (CI installs `redis-server`; locally its absence skips, saying so)."""
    if shutil.which("redis-server") is None:
        if in_ci():
            pytest.fail("redis-server is not installed (.ci/run installs it)", pytrace=False)
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = RedisServer(port)
    server.start()
    try:
        yield server
    finally:
        server.kill()
