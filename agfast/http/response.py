"""The small writer API handlers answer with: `send()` for whole bodies, `start()/write()/end()` for streams.

Heads are assembled from pre-encoded pieces (status line, constant headers, the tick's date line) instead of
going through h11's validating serializer; bodies are written as they are, chunk-framed when streaming.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from time import perf_counter
from typing import Protocol

from agfast import __version__
from agfast.http.errors import Family, HttpError, error_body
from agfast.http.request import Request
from agfast.http.state import ServerState

log = logging.getLogger("agfast.http")

STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("latin-1")) for s in HTTPStatus
}
STATUS_LINES[529] = b"HTTP/1.1 529 Overloaded\r\n"

SERVER_HEADER = b"server: agfast/" + __version__.encode() + b"\r\n"
CT_JSON = b"application/json"
CT_SSE = b"text/event-stream"
CT_TEXT = b"text/plain; charset=utf-8"
# Proxies (nginx) must not buffer SSE, and nobody may cache a model's answer.
SSE_HEADERS = b"cache-control: no-cache\r\nx-accel-buffering: no\r\n"
# Sent after `access-control-allow-origin: <the allowed origin>`; the answer differs per origin, hence Vary.
CORS_TAIL = (
    b"\r\naccess-control-expose-headers: x-request-id, x-agfast-overhead-ms, x-account-email, x-mapped-model\r\n"
    b"vary: origin\r\n"
)
CLOSE_HEADER = b"connection: close\r\n"
KEEP_ALIVE_HEADER = b"connection: keep-alive\r\n"
CHUNKED_HEADER = b"transfer-encoding: chunked\r\n"
LAST_CHUNK = b"0\r\n\r\n"
# What a client is told when the shutdown deadline cuts its answer (in-stream, or as a 503 before the head).
SHUTDOWN_MESSAGE = "agfast is shutting down; this answer was cut short. Retry the request."


def _stalled(proto: Connection, stall: float) -> None:
    if not proto.closed:
        log.info("client took nothing of its answer for %gs: connection cut", stall)
        proto.abort()


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


class Connection(Protocol):
    """What a Response needs of its connection (http.protocol.HttpProtocol), so neither module imports the other."""

    state: ServerState
    transport: asyncio.Transport | None
    peer: str
    closed: bool
    write_paused: bool
    drain_waiter: asyncio.Future[None] | None

    def response_complete(self) -> None: ...

    def abort(self) -> None: ...


class Response:
    """Per-request writer; every method is a no-op once the client is gone (the handler is being cancelled)."""

    __slots__ = (
        "_deferred", "_head", "capture", "capture_limit", "chunked", "cut", "finished", "head_sent", "last_write",
        "ping", "ping_every", "proto", "request", "status",
    )  # fmt: skip

    def __init__(self, proto: Connection, request: Request) -> None:
        self.proto = proto
        self.request = request
        self.head_sent = False
        self.finished = False
        # Body bytes kept for whoever asked (the request monitor), up to capture_limit; None = keep nothing.
        self.capture: bytearray | None = None
        self.capture_limit = 0
        self.chunked = False
        self.status = 0
        # Set by the server's shutdown deadline before it cancels the handler: a cancelled stream then ends
        # with its protocol's error event instead of being dropped mid-answer.
        self.cut = False
        self._head = b""
        self._deferred = b""
        # Keep-alive comments for silent streams, written by the server tick (no timer per stream).
        self.ping = b""
        self.ping_every = 0.0
        self.last_write = 0.0

    def _head_bytes(self, status: int, content_type: bytes, headers: bytes, framing: bytes) -> bytes:
        req = self.request
        proto = self.proto
        overhead = (perf_counter() - req.started - req.waited) * 1000.0
        parts = [
            status_line(status),
            proto.state.date_header,
            SERVER_HEADER,
            b"content-type: ",
            content_type,
            b"\r\n",
            framing,
            b"x-request-id: ",
            req.request_id,
            b"\r\nx-agfast-overhead-ms: %.3f\r\n" % overhead,
            headers,
        ]
        if req.cors:
            parts += (b"access-control-allow-origin: ", req.cors, CORS_TAIL)
        if not req.keep_alive:
            parts.append(CLOSE_HEADER)
        elif req.http10:
            parts.append(KEEP_ALIVE_HEADER)
        parts.append(b"\r\n")
        return b"".join(parts)

    def send(self, status: int, body: bytes, content_type: bytes = CT_JSON, headers: bytes = b"") -> None:
        """A complete answer in one write: head and body coalesced."""
        if self.head_sent:
            raise RuntimeError("response already started")
        self.head_sent = True
        self.finished = True
        self.status = status
        if self.capture is not None:
            self._keep(body)
        head = self._head_bytes(status, content_type, headers, b"content-length: %d\r\n" % len(body))
        proto = self.proto
        if not proto.closed:
            proto.transport.write(head if self.request.head_only else head + body)  # type: ignore[union-attr]
        proto.response_complete()

    def send_error(self, family: Family, error: HttpError) -> None:
        self.send(error.status, error.body(family), CT_JSON, error.headers)

    def error(self, family: Family, status: int, message: str, **kwargs: str | None) -> None:
        self.send(status, error_body(family, status, message, **kwargs))

    def start(self, status: int = 200, content_type: bytes = CT_SSE, headers: bytes = b"") -> None:
        """Begin a streamed answer; the head waits to travel with the first chunk (one packet, not two)."""
        if self.head_sent:
            raise RuntimeError("response already started")
        self.head_sent = True
        self.status = status
        req = self.request
        if req.http10:
            # HTTP/1.0 has no chunked encoding: the end of the body is the end of the connection.
            req.keep_alive = False
            framing = b""
        else:
            self.chunked = True
            framing = CHUNKED_HEADER
        if content_type == CT_SSE:
            headers = SSE_HEADERS + headers
        self._head = self._head_bytes(status, content_type, headers, framing)

    def keep_alive(self, every: float, comment: bytes = b": ping\n\n") -> None:
        """While streaming, send `comment` whenever nothing was written for `every` seconds."""
        self.ping = comment
        self.ping_every = every
        self.last_write = self.proto.state.now

    def on_tick(self, now: float) -> None:
        if self.ping_every and not self.finished and now - self.last_write >= self.ping_every:
            self.write(self.ping)

    def defer(self, data: bytes) -> None:
        """Hold `data` for the next write or `end()`: a stream's tail then leaves in one packet, not two."""
        self._deferred += data

    def write(self, data: bytes) -> None:
        """Queue one chunk; check `paused` and `await drain()` after it when streaming a lot."""
        if self._deferred:
            data, self._deferred = self._deferred + data, b""
        if not data or self.finished:
            return
        if self.capture is not None:
            self._keep(data)
        proto = self.proto
        if proto.closed:
            return
        if self.request.head_only:
            out = b""
        elif self.chunked:
            out = b"%x\r\n%b\r\n" % (len(data), data)
        else:
            out = data
        if self._head:
            out = self._head + out
            self._head = b""
        if out:
            proto.transport.write(out)  # type: ignore[union-attr]
        if self.ping_every:
            self.last_write = proto.state.now

    def end(self, data: bytes = b"") -> None:
        if self.finished:
            return
        if not self.head_sent:
            raise RuntimeError("end() before start()")
        if self._deferred:
            data, self._deferred = self._deferred + data, b""
        self.finished = True
        if data and self.capture is not None:
            self._keep(data)
        proto = self.proto
        if not proto.closed:
            out = self._head
            self._head = b""
            if not self.request.head_only:
                if self.chunked:
                    out += (b"%x\r\n%b\r\n" % (len(data), data) if data else b"") + LAST_CHUNK
                else:
                    out += data
            if out:
                proto.transport.write(out)  # type: ignore[union-attr]
        proto.response_complete()

    def _keep(self, data: bytes) -> None:
        capture = self.capture
        assert capture is not None
        room = self.capture_limit - len(capture)
        if room > 0:
            capture += data[:room]

    @property
    def paused(self) -> bool:
        return self.proto.write_paused

    @property
    def disconnected(self) -> bool:
        return self.proto.closed

    def on_drain(self, callback: Callable[[], object]) -> None:
        """Call `callback` once the client has taken enough of what we wrote (or left); `drain()` without a task
        waiting, for a writer that runs in callbacks. A client that takes nothing for `client_stall_timeout` is
        cut, as in `drain()`: the connection is aborted, which cancels its handler."""
        proto = self.proto
        if not proto.write_paused or proto.closed:
            callback()
            return
        loop = proto.state.loop
        waiter = proto.drain_waiter
        if waiter is None:
            waiter = proto.drain_waiter = loop.create_future()
        stall = proto.state.config.client_stall_timeout
        timer = loop.call_later(stall, _stalled, proto, stall)

        def drained(_: object) -> None:
            timer.cancel()
            callback()

        waiter.add_done_callback(drained)

    async def drain(self) -> None:
        """Wait until the client has taken enough of what we wrote (backpressure toward upstream reads).

        A client that takes nothing for `client_stall_timeout` is cut: the connection is aborted, which cancels
        this handler and with it the upstream stream it was holding open.
        """
        proto = self.proto
        if proto.write_paused and not proto.closed:
            waiter = proto.drain_waiter
            if waiter is None:
                waiter = proto.drain_waiter = asyncio.get_running_loop().create_future()
            stall = proto.state.config.client_stall_timeout
            try:
                async with asyncio.timeout(stall):
                    await asyncio.shield(waiter)
            except TimeoutError:
                log.info("client took nothing of its answer for %gs: connection cut", stall)
                proto.abort()  # cancels this very task: the next await delivers it, here rather than later
                await asyncio.sleep(0)
