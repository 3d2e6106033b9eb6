"""Server lifecycle: listen, the one-second tick, signals, graceful shutdown.

The tick does all periodic work so requests never arm timers: it refreshes the pre-encoded `date` header,
closes connections whose phase deadline has passed (idle keep-alive, slow heads, stalled bodies) and checks
whether the config file changed (one stat). SIGHUP reloads the config file at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import ssl
import time

from agfast.config import Config, LiveConfig
from agfast.http.protocol import HttpProtocol
from agfast.http.router import Router
from agfast.http.state import ServerState
from agfast.keys import KeyPolicy

log = logging.getLogger("agfast.server")

TICK_SECONDS = 1.0
# Room for bursts of new connections (agents open several at once); the kernel caps it at somaxconn.
BACKLOG = 2048
# After shutdown_timeout, cut answers get this long to write their error event and reach the client before
# their connections are dropped (a client that stopped reading would otherwise hold shutdown forever).
CUT_GRACE = 1.0


class BindError(Exception):
    """The listen address cannot be used; the message is the one line the CLI prints."""


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server side of `--tls-cert/--tls-key`: TLS 1.2+, HTTP/1.1 by ALPN; None when TLS is off."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise BindError(
            f"cannot serve TLS with {config.tls_cert} and {config.tls_key}: {reason} (PEM certificate chain and "
            "its matching private key expected)"
        ) from None
    except OSError as exc:
        raise BindError(f"cannot read the TLS certificate or key: {exc.strerror or exc}") from None
    return context


class Server:
    __slots__ = (
        "_servers", "_stopped", "_tick", "config", "keys", "listener", "live", "port", "reuse_port", "router", "state",
    )  # fmt: skip

    def __init__(
        self, config: Config, router: Router, live: LiveConfig | None = None, keys: KeyPolicy | None = None
    ) -> None:
        self.config = config
        self.router = router
        # Named API keys besides the main one (None: only the main key).
        self.keys = keys
        # Settings that change while serving; None: the config file is not watched.
        self.live = live
        self.state: ServerState | None = None
        self.port = config.port
        self._servers: list[asyncio.base_events.Server] = []
        self._tick: asyncio.TimerHandle | None = None
        self._stopped: asyncio.Event | None = None
        # `--workers N`: each worker listens on the port with SO_REUSEPORT, or accepts on the supervisor's
        # inherited `listener` where the platform has no SO_REUSEPORT.
        self.reuse_port = False
        self.listener: socket.socket | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        state = self.state = ServerState(self.config, self.router, loop)
        if self.keys is not None:
            state.auth.users = self.keys.admit
            state.auth.limited = self.keys.last_refusal
        if self.live is not None:
            self.live.listeners.append(state.config_changed)
        host = self.config.bind_host
        tls = tls_context(self.config)
        try:
            if self.listener is not None:
                server = await loop.create_server(
                    lambda: HttpProtocol(state), sock=self.listener, backlog=BACKLOG, ssl=tls
                )
            else:
                server = await loop.create_server(
                    lambda: HttpProtocol(state),
                    host=host,
                    port=self.config.port,
                    backlog=BACKLOG,
                    reuse_address=True,
                    reuse_port=self.reuse_port or None,
                    ssl=tls,
                )
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            if exc.errno == errno.EACCES:
                reason = "permission denied"
            raise BindError(f"cannot bind {host}:{self.config.port}: {reason.lower()}") from None
        self._servers.append(server)
        for sock in server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.port = sock.getsockname()[1]
                break
        # `--port 0` asked the kernel to choose; messages that quote our URL must show the real one.
        self.config.port = self.port
        self._stopped = asyncio.Event()
        self._tick = loop.call_later(TICK_SECONDS, self._on_tick)

    def _on_tick(self) -> None:
        state = self.state
        assert state is not None
        state.refresh_clock()
        now = state.now
        expired = []
        for conn in state.connections:
            if conn.deadline <= now:
                expired.append(conn)
            elif conn.response is not None and conn.response.ping_every:
                conn.response.on_tick(now)
        for conn in expired:
            conn.on_deadline()
        if self.live is not None:
            self.live.poll()
        self._tick = state.loop.call_later(TICK_SECONDS, self._on_tick)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        live = self.live
        if live is not None and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, lambda: live.reload("SIGHUP"))

    def request_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, let in-flight answers finish (bounded), then cut whatever is left."""
        state = self.state
        if state is None:
            return
        state.shutting_down = True
        for server in self._servers:
            server.close()
        for conn in list(state.connections):
            conn.shutdown()
        limit = self.config.shutdown_timeout if timeout is None else timeout
        await _until_closed(state, time.monotonic() + limit)
        # Still running: each handler is cancelled with `cut` set, ends its answer with its protocol's error
        # event (and the chunked terminator), and its connection closes once that is flushed.
        if sum(conn.cut() for conn in list(state.connections)):
            await _until_closed(state, time.monotonic() + CUT_GRACE)
        for conn in list(state.connections):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        if self._tick is not None:
            self._tick.cancel()
        # Let cancelled handlers unwind (and their upstream requests close) before the loop ends.
        await asyncio.sleep(0)

    @property
    def in_flight(self) -> int:
        return 0 if self.state is None else sum(1 for c in self.state.connections if c.request is not None)


async def _until_closed(state: ServerState, deadline: float) -> None:
    """Wait for every connection to close, or for `deadline` (monotonic)."""
    while state.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
