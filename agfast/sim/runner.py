"""Ways to run the simulator outside an async test: on a private loop in a thread, or as a foreground server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from .accounts import SimAccount
from .server import GoogleSimulator

__all__ = ["SimulatorThread", "run_forever"]

R = TypeVar("R")


class SimulatorThread:
    """Runs a GoogleSimulator on its own event loop in a daemon thread, for sync tests and SDK clients.

    `with SimulatorThread(sim) as sim:` starts it on enter and stops it (and the loop) on exit.
    """

    def __init__(self, sim: GoogleSimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def call(self, coro: Coroutine[Any, Any, R], timeout: float = 30.0) -> R:
        """Run a coroutine on the simulator's loop and wait for its result."""
        if self.loop is None:
            raise RuntimeError("simulator thread not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        if self.loop is None:
            raise RuntimeError("simulator thread not started")
        self.loop.call_soon_threadsafe(fn)

    def start(self) -> GoogleSimulator:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="agfast-sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        try:
            self.call(self.sim.start(self.host, self.port))
        except BaseException:
            self._shutdown_loop()
            raise
        return self.sim

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            self.call(self.sim.stop())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        thread, self._thread = self._thread, None
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if thread is not None:
            thread.join(10)

    def __enter__(self) -> GoogleSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def until_signalled() -> None:
    """Return once SIGINT or SIGTERM arrives (where the loop can handle signals)."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)
    await done.wait()


def run_forever(host: str, port: int, accounts: list[SimAccount], chunks: int, chunk_delay: float) -> None:
    """Serve until SIGINT/SIGTERM; prints the URL and each account's refresh token for copy-paste."""

    async def main() -> None:
        sim = GoogleSimulator(accounts, chunks=chunks, chunk_delay=chunk_delay, record=False)
        await sim.start(host=host, port=port)
        print(f"agfast sim listening on {sim.base_url}", flush=True)
        for account in accounts:
            print(f"  {account.email}  refresh_token={account.refresh_token}", flush=True)
        try:
            await until_signalled()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
