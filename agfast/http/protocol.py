"""HTTP/1.1 connection handling: transport bytes ↔ h11 events ↔ handlers.

Theory of operation
-------------------
h11 parses; agfast writes. Each request cycle gets its own `h11.Connection` (it costs under a microsecond),
fed with whatever bytes the previous cycle left over. We never pass our responses through h11's `send()`,
which re-validates and re-serialises every header: heads are joined from pre-encoded pieces in
`response.py`, and once a response is complete the next cycle simply starts with a fresh parser. That keeps
h11's strict request parsing (malformed input → 400, oversized head → 431) without its response cost.

One request is handled at a time per connection; pipelined requests wait in the parser's buffer, so answers
go out in order. A connection is in one of five phases, each with its own deadline (a total for the phase, not
a gap between bytes), checked by the server's one-second tick rather than a timer per request:

    IDLE      keep-alive wait for the next request      → close quietly
    HEAD      request head arriving                     → 408 (slowloris)
    BODY      request body arriving                     → 408
    DISCARD   answered early (401/404/413); body dropped → close
    HANDLING  handler running                           → no deadline (the handler owns its timeouts)

Flow control: `pause_writing`/`resume_writing` gate `Response.drain()` so a slow client slows our upstream
reads; pipelined input beyond PIPELINE_HIGH_WATER while a handler runs pauses reading from the socket. Between
requests, a connection whose unsent output is over WRITE_HIGH_WATER starts no new request and reads nothing
until the client takes its answers (`resume_writing`), whatever answered (handler, early 401/404, error): a
client that pipelines and never reads holds one socket read of input and one high-water mark of output, no
more. A connection still stuck like that at its phase deadline is closed; one closed with output unsent is
aborted as soon as the client takes none of it for CLOSE_LINGER, so the buffers go with it.
A client that disconnects cancels its handler task at once (and with it the upstream request).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from time import perf_counter
from typing import cast
from urllib.parse import unquote

import h11

try:  # where the kernel tells how much of a socket's send queue the peer has not taken yet (Linux)
    import termios
    from fcntl import ioctl

    OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - elsewhere only our own buffer is measured
    OUTQ = None

from agfast.http import auth
from agfast.http.errors import Family, HttpError, error_body
from agfast.http.origin import echoable
from agfast.http.request import Request
from agfast.http.response import CT_JSON, SHUTDOWN_MESSAGE, Response
from agfast.http.router import Match, Route, family_for_path
from agfast.http.state import ServerState
from agfast.logtext import ACCESS_FORMAT, escape, model_pair

log = logging.getLogger("agfast.http")
access = logging.getLogger("agfast.access")

IDLE, HEAD, BODY, DISCARD, HANDLING = range(5)
NEVER = float("inf")
# Logged for a request whose client left before its answer was complete (nginx's convention).
CLIENT_CLOSED = 499

# Bytes a client may pipeline while its previous request is still being answered before we stop reading
# (uvicorn uses the same order of magnitude); memory per connection stays bounded.
PIPELINE_HIGH_WATER = 256 * 1024
# asyncio's own default high-water mark; small enough that a stalled SSE reader stalls upstream reads quickly.
WRITE_HIGH_WATER = 64 * 1024
# Pipelined requests served in one turn of the event loop before others get theirs: one socket read can hold
# thousands of tiny requests, and a connection must not hold the loop (and every other client) for their sum.
PIPELINE_TURN = 32
# How long an early-rejected upload (413) may keep streaming into the void before we hang up.
DISCARD_GRACE = 2.0
# A closed connection whose client took none of our last bytes for this long is aborted (its buffers freed):
# long enough for a slow reader of one big answer, short enough that non-readers cannot pile up.
CLOSE_LINGER = 10.0
# What h11 is handed at a time from the bytes a client sent (the rest waits in `HttpProtocol.inbox`). A new
# h11.Connection per request takes over the old one's unparsed bytes as a copy (`trailing_data`), so handing h11
# whole socket reads would copy a pipelined flood once per request (quadratic); pieces bound that copy. Heads are
# small (one piece holds dozens of pipelined requests); a body gets bigger pieces, so a large one costs few rounds.
HEAD_PIECE = 4 * 1024
BODY_PIECE = 64 * 1024


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "body_parts",
        "body_size",
        "closed",
        "conn",
        "deadline",
        "drain_waiter",
        "family",
        "head_bytes",
        "held_body",
        "in_process",
        "inbox",
        "inbox_eof",
        "linger_unsent",
        "peer",
        "phase",
        "pipelined",
        "read_paused",
        "request",
        "response",
        "state",
        "task",
        "transport",
        "write_paused",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=state.config.max_header_size)
        self.phase = IDLE
        self.deadline = NEVER
        self.request: Request | None = None
        self.response: Response | None = None
        self.family = Family.OPENAI
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.write_paused = False
        self.read_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.pipelined = 0
        self.peer = ""  # the client's address, read once per connection (IP rules, records)
        self.head_bytes = 0
        # Bytes at the front of h11's buffer that were the current request's body, taken by `_take_body`.
        self.held_body = 0
        self.in_process = False
        self.linger_unsent = 0
        # Bytes received and not yet handed to h11 (see HEAD_PIECE), and an EOF that arrived behind them.
        self.inbox = bytearray()
        self.inbox_eof = False

    # -- asyncio callbacks -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.state.connections.add(self)
        # A fresh connection must start its request promptly; an idle keep-alive one may wait longer.
        self.deadline = self.state.now + self.state.config.header_timeout
        if self.state.shutting_down:
            self.closed = True
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            if access.isEnabledFor(logging.INFO):
                self._log_access(CLIENT_CLOSED)
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.drain_waiter = None

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == IDLE:
            self.phase = HEAD
            self.deadline = self.state.now + self.state.config.header_timeout
            self.head_bytes = len(data)
        elif phase == HEAD:
            self.head_bytes += len(data)
        elif phase == HANDLING:
            self.pipelined += len(data)
            if self.pipelined > PIPELINE_HIGH_WATER and not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
        # BODY and DISCARD keep the deadline set when the head arrived: body_timeout bounds the whole body, so a
        # client dribbling a byte per second cannot hold the connection for max_body_size seconds.
        if self.inbox or len(data) > HEAD_PIECE or phase == HANDLING:
            self.inbox += data  # handed to h11 piece by piece as it asks (see HEAD_PIECE)
        else:
            self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        if self.inbox:
            self.inbox_eof = True  # handed over once h11 has parsed what came before it
        else:
            self.conn.receive_data(b"")
        self._process()
        # EOF is the client leaving: close (connection_lost then cancels a running handler and its upstream
        # call). HTTP clients do not half-close to wait for an answer; a streaming one that did would hold an
        # upstream stream open for nobody. Requests it pipelined before leaving that wait for their turn are still
        # answered (the parser holds the EOF: the connection closes after them).
        return True if self.read_paused and not self.closed else None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self.read_paused and self.phase != HANDLING:
            self._continue()

    # -- request cycle -----------------------------------------------------------------------------------

    def _process(self) -> None:
        if self.in_process:
            return
        self.in_process = True
        started = 0
        try:
            while not self.closed and self.phase != HANDLING:
                if self.write_paused or started >= PIPELINE_TURN:
                    self._hold()
                    return
                try:
                    event = self.conn.next_event()
                except h11.RemoteProtocolError as exc:
                    self._protocol_error(exc)
                    return
                kind = type(event)
                if kind is h11.Data:
                    self._on_body(event)  # type: ignore[arg-type]
                elif kind is h11.Request:
                    started += 1
                    self._on_request(event)  # type: ignore[arg-type]
                elif kind is h11.EndOfMessage:
                    self._on_end()
                elif event is h11.NEED_DATA:
                    if not self._feed():
                        return
                elif event is h11.PAUSED:
                    return
                elif kind is h11.ConnectionClosed:
                    self._close()
                    return
        finally:
            self.in_process = False

    def _feed(self) -> bool:
        """Hand h11 the next piece of what the client sent; False when there is nothing left to hand."""
        inbox = self.inbox
        if inbox:
            size = BODY_PIECE if self.phase in (BODY, DISCARD) else HEAD_PIECE
            self.conn.receive_data(inbox[:size])  # type: ignore[arg-type]  # h11 copies any bytes-like
            del inbox[:size]
            return True
        if self.inbox_eof:
            self.inbox_eof = False
            self.conn.receive_data(b"")
            return True
        return False

    def _hold(self) -> None:
        """Read nothing more until the client takes our answers (`resume_writing`) or, when it already does,
        until the loop has served everyone else once."""
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        if not self.write_paused:
            self.state.loop.call_soon(self._continue)

    def _continue(self) -> None:
        """Serve the rest of what the client pipelined, after a yielded turn or a backpressure hold."""
        if self.closed or self.phase == HANDLING or self.write_paused:
            return
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._process()

    def _on_request(self, event: h11.Request) -> None:
        """A request head: parse → route → browser policy/CORS → auth → route checks → size; any step may answer
        early (the body, if any, is then read and dropped)."""
        req = self._parse_head(event)
        if req is None:
            return
        match = self.state.router.match(req.method, req.path)
        route = match.route if match is not None else None
        self.family = route.family if route is not None else family_for_path(req.path)
        guarded = self.state.auth.guards(route)  # asked once: the browser policy and auth both need it
        if (
            self._framing_refused(req)
            or (self.state.ip_rules.active and self._ip_refused(req))
            or self._browser_refused(req, guarded)
            or (guarded and self._auth_refused(req))
            or self._route_refused(req, match)
        ):
            return
        assert match is not None
        req.route = match.route
        req.name = match.name
        req.action = match.action
        self._expect_body(req)

    def _parse_head(self, event: h11.Request) -> Request | None:
        """The Request for a head h11 accepted, or None when the head itself is refused (505, 431)."""
        state = self.state
        if event.http_version not in (b"1.1", b"1.0"):
            self._raw_error(505, f"HTTP version {event.http_version.decode('latin-1')} is not supported; use HTTP/1.1.")
            return None
        # h11 bounds only heads that arrive in pieces; one that arrives whole is measured here.
        if self.head_bytes > state.config.max_header_size and _head_size(event) > state.config.max_header_size:
            self._raw_error(431, f"Request headers are larger than the {state.config.max_header_size} byte limit.")
            return None
        path_b, _, query = event.target.partition(b"?")
        path = path_b.decode("latin-1")
        if "%" in path:
            path = unquote(path, encoding="utf-8", errors="replace")
        # h11's Headers is a Sequence whose __iter__ runs in Python per item; raw_items() is one list.
        headers = {name.lower(): value for name, value in event.headers.raw_items()}
        req = Request(event.method, path, query, headers)
        self.request = req
        self.phase = BODY
        self.deadline = state.now + state.config.body_timeout
        self.body_parts = []
        self.body_size = 0
        connection = headers.get(b"connection", b"").lower()
        if event.http_version == b"1.1":
            req.keep_alive = b"close" not in connection
        else:
            req.http10 = True
            req.keep_alive = b"keep-alive" in connection
        if state.shutting_down:
            req.keep_alive = False
        client_id = headers.get(b"x-request-id")
        req.request_id = client_id if client_id and _safe_request_id(client_id) else state.next_request_id()
        return req

    def _framing_refused(self, req: Request) -> bool:
        if b"transfer-encoding" in req.headers and b"content-length" in req.headers:
            # RFC 9112 §6.3 lets a server reject this or frame by Transfer-Encoding, and either way close after.
            # We reject: it is the classic request-smuggling shape (a front proxy framing by Content-Length sees
            # a different body and next request than we would), and no honest client sends both.
            self._raw_error(400, "Request has both Content-Length and Transfer-Encoding; send only one.")
            return True
        return False

    def _ip_refused(self, req: Request) -> bool:
        """IP allow/deny rules (asked only when some are configured): 403 in the route's shape."""
        blocked = self.state.ip_rules.screen(req, self.family, self.peer)
        if blocked is None:
            return False
        self._early(lambda resp: resp.send(403, blocked))
        return True

    def _browser_refused(self, req: Request, guarded: bool) -> bool:
        """The browser policy (403 for a foreign origin) and CORS preflights, answered before auth."""
        refused = self.state.browsers.screen(req, self.family, guarded, self.transport)
        if refused is not None:
            self._early(lambda resp: resp.send(403, refused))
            return True
        if req.method == b"OPTIONS":
            self._early(_preflight)
            return True
        return False

    def _auth_refused(self, req: Request) -> bool:
        """A guarded route's key check (asked only for guarded routes)."""
        auth_ = self.state.auth
        outcome = auth_.check(req.headers, self.family is Family.ADMIN, req.method)
        if outcome == auth.OK:
            req.api_key = auth_.user
            return False
        status, body, extra = auth_.rejection(self.family, outcome)
        self._early(lambda resp: resp.send(status, body, CT_JSON, extra))
        return True

    def _route_refused(self, req: Request, match: Match | None) -> bool:
        """404 (with a base-URL hint), a control character in a path name, 400 for an unknown Gemini action, 405."""
        path = req.path
        if match is None:
            self._early(lambda resp: resp.send(404, self._not_found_body(path)))
            return True
        if not match.name.isprintable():
            # `/v1beta/models/x%0d%0aX-Evil:1:generateContent`: such a name must reach no header and no log.
            msg = "Model name must not contain control characters."
            self._early(lambda resp: resp.send(400, error_body(self.family, 400, msg)))
            return True
        if match.route is not None:
            return False
        if match.action:
            msg = f"Unsupported method: {match.action}"
            self._early(lambda resp: resp.send(400, error_body(Family.GEMINI, 400, msg)))
            return True
        allowed = b", ".join(match.allowed)
        msg = f"Method {req.method.decode('latin-1')} is not allowed for {path}; use {allowed.decode()}."
        body = error_body(self.family, 405, msg)
        self._early(lambda resp: resp.send(405, body, CT_JSON, b"allow: " + allowed + b"\r\n"))
        return True

    def _expect_body(self, req: Request) -> None:
        """A declared body over the limit is refused before it arrives; a client waiting for 100 gets it."""
        length = req.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.state.config.max_body_size:
            self._too_large()
            return
        if self.conn.they_are_waiting_for_100_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        if b"transfer-encoding" not in req.headers:  # framed by Content-Length (h11 checked it), or no body
            self._take_body(int(length) if length is not None else 0)

    def _take_body(self, size: int) -> None:
        """A body that came with its head is taken at once; one still arriving is read through h11's events.

        h11 parsed and checked the head, its framing included; asking it for the body in hand as Data and
        EndOfMessage events would cost two more `next_event` calls, about what the rest of the shell spends on a
        request. The body is cut from h11's buffer (its unparsed bytes) and, past a piece, from the inbox;
        the next cycle's parser starts after it (`held_body`).
        """
        if not size:
            self._handle(b"")
            return
        held, _ = self.conn.trailing_data
        missing = size - len(held)
        if missing <= 0:
            self.held_body = size
            self._handle(held[:size] if missing else held)
            return
        inbox = self.inbox
        if len(inbox) < missing:
            return
        self.held_body = len(held)
        body = held + inbox[:missing]
        del inbox[:missing]
        self._handle(body)

    def _on_body(self, event: h11.Data) -> None:
        if self.phase != BODY:
            return
        data = event.data
        self.body_size += len(data)
        # h11 emits a body's bytes as they arrive (chunks too, piece by piece): the running size refuses an
        # oversized body as soon as it passes the limit, so at most max_body_size of it is ever held.
        if self.body_size > self.state.config.max_body_size:
            self._too_large()
            return
        self.body_parts.append(data)

    def _on_end(self) -> None:
        if self.phase == DISCARD:
            self._finish_cycle()
            return
        parts = self.body_parts
        self.body_parts = []
        self._handle(parts[0] if len(parts) == 1 else b"".join(parts))

    def _handle(self, body: bytes) -> None:
        """The whole request is in: run its handler."""
        req = self.request
        assert req is not None and req.route is not None
        req.body = body
        self.phase = HANDLING
        self.deadline = NEVER
        self.pipelined = 0
        resp = Response(self, req)
        self.response = resp
        route = req.route
        if route.is_async:
            self.task = self.state.loop.create_task(self._run_async(route, req, resp))
            return
        try:
            route.handler(req, resp)
        except Exception as exc:
            _handler_failed(route, req, resp, exc)
        _settle(route, resp)

    async def _run_async(self, route: Route, req: Request, resp: Response) -> None:
        try:
            await route.handler(req, resp)
        except asyncio.CancelledError:
            if self.closed:
                return
            if not resp.cut:
                raise
            # Cut by the shutdown deadline where the surface had no in-stream error to give: a 503 if nothing
            # was sent yet, else at least a properly terminated body.
            if not resp.head_sent:
                resp.error(route.family, 503, SHUTDOWN_MESSAGE)
        except Exception as exc:
            _handler_failed(route, req, resp, exc)
        finally:
            # The answer may already have started the next pipelined request's task: only forget our own.
            if self.task is asyncio.current_task(self.state.loop):  # with the loop named: no getpid() syscall
                self.task = None
        if not self.closed:
            _settle(route, resp)

    def _early(self, respond: object) -> None:
        """Answer before the body arrives; the body (if any) is then read and dropped to keep the cycle."""
        req = self.request
        assert req is not None
        self.phase = DISCARD
        self.body_parts = []
        if self.conn.they_are_waiting_for_100_continue:
            # The client may never send the body it announced; the connection cannot be reused safely.
            req.keep_alive = False
        resp = Response(self, req)
        self.response = resp
        respond(resp)  # type: ignore[operator]

    def _too_large(self) -> None:
        req = self.request
        assert req is not None
        self.body_parts = []
        req.keep_alive = False
        limit = self.state.config.max_body_size
        msg = f"Request body is larger than the {limit} byte limit (max_body_size)."
        body = error_body(self.family, 413, msg)
        self._early(lambda resp: resp.send(413, body))

    def _not_found_body(self, path: str) -> bytes:
        suggestion = self.state.router.suggest(path)
        method = self.request.method.decode("latin-1") if self.request else "GET"
        if suggestion is None:
            msg = f"Unknown path: {method} {path}"
        else:
            base = self.state.config.base_url
            base_hint = base + "/v1" if family_for_path(suggestion) is Family.OPENAI else base
            msg = (
                f"Unknown path: {method} {path}. Did you mean {suggestion}? The client's base URL repeats part "
                f"of the path; set it to {base_hint}"
            )
        return error_body(self.family, 404, msg)

    def response_complete(self) -> None:
        """Called by Response when the last byte is queued: next cycle, or hang up."""
        if access.isEnabledFor(logging.INFO):
            self._log_access()
        if self.phase == DISCARD:
            req = self.request
            # A rejected body still has to be read past before the next request can be parsed.
            if self.conn.their_state is h11.DONE:
                self._finish_cycle()
            elif req is not None and not req.keep_alive:
                self.deadline = self.state.now + DISCARD_GRACE
            return
        self._finish_cycle()

    def _log_access(self, status: int = 0) -> None:
        """The access line of an answer no handler reported itself (see `Request.observed`)."""
        req, resp = self.request, self.response
        if req is None or resp is None or req.observed:
            return
        access.info(
            ACCESS_FORMAT,
            req.request_id.decode("latin-1"),
            escape(req.method.decode("latin-1")),
            escape(req.path) or "-",
            status or resp.status,
            (perf_counter() - req.started) * 1000,
            model_pair(req.name, ""),
            "-",
            0,
        )

    def _finish_cycle(self) -> None:
        req = self.request
        self.request = None
        self.response = None
        if self.closed:
            return
        if req is None or not req.keep_alive or self.state.shutting_down:
            self._close()
            return
        self.conn, leftover, eof = _next_parser(self.conn, self.held_body, self.state.config.max_header_size)
        self.held_body = 0
        leftover += len(self.inbox)
        if leftover:
            self.phase = HEAD
            self.head_bytes = leftover
            self.deadline = self.state.now + self.state.config.header_timeout
        else:
            self.phase = IDLE
            self.deadline = self.state.now + self.state.config.keepalive_timeout
        if self.read_paused and not self.write_paused:
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if leftover or eof or self.inbox_eof:
            self._process()

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint if exc.error_status_hint in (400, 413, 414, 431) else 400
        if status == 431:
            msg = f"Request headers are larger than the {self.state.config.max_header_size} byte limit."
        else:
            msg = f"Malformed HTTP request: {_plain_reason(exc)}."
        self._raw_error(status, msg)

    def _raw_error(self, status: int, message: str) -> None:
        """Answer without a parsed request (bad bytes, timeouts) and hang up."""
        if self.closed:
            return
        req = self.request or Request(b"-", "", b"", {})
        req.keep_alive = False
        req.head_only = False
        if not req.request_id:
            req.request_id = self.state.next_request_id()
        self.request = req
        if self.response is None or not self.response.head_sent:
            resp = Response(self, req)
            self.response = resp
            self.phase = DISCARD
            resp.send(status, error_body(self.family, status, message))
        self._close()

    def on_deadline(self) -> None:
        """The tick found this connection past its deadline."""
        if self.closed:
            # Closed with output unsent: keep waiting only while the client is still taking some.
            unsent = _unsent(self.transport) if self.transport is not None else 0
            if unsent and unsent < self.linger_unsent:
                self.linger_unsent = unsent
                self.deadline = self.state.now + CLOSE_LINGER
            else:
                self.abort()
            return
        if self.write_paused:
            # Its answers are still unread (a 408 would queue behind them): hang up once they are taken, or
            # abort if the client stops taking them (CLOSE_LINGER).
            self._close()
            return
        phase = self.phase
        if phase in (HEAD, BODY):
            self._raw_error(408, "Timed out waiting for the request.")
        else:
            self._close()

    def shutdown(self) -> None:
        """Server is stopping: idle connections go now, busy ones after their current answer."""
        if self.phase in (IDLE, DISCARD) or (self.phase == HEAD and self.request is None):
            self._close()
        elif self.request is not None:
            self.request.keep_alive = False

    def cut(self) -> bool:
        """Shutdown deadline: cancel a running handler so its answer ends cleanly. True if one was running."""
        task, resp = self.task, self.response
        if task is None or task.done() or resp is None or self.closed:
            return False
        resp.cut = True
        task.cancel()
        return True

    def abort(self) -> None:
        self.closed = True
        self.deadline = NEVER
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.deadline = NEVER
            transport = self.transport
            if transport is not None:
                transport.close()
                # close() waits to flush our buffer; a client that never reads would keep it alive forever.
                if transport.get_write_buffer_size():
                    self.linger_unsent = _unsent(transport)
                    self.deadline = self.state.now + CLOSE_LINGER


def _handler_failed(route: Route, req: Request, resp: Response, exc: Exception) -> None:
    """An HttpError is an answer; anything else is our bug: logged, and a 500 if nothing was sent yet."""
    if isinstance(exc, HttpError):
        if not resp.head_sent:
            resp.send_error(route.family, exc)
        return
    log.error("handler failed for %s", escape(req.path), exc_info=exc)
    if not resp.head_sent:
        resp.error(route.family, 500, "Internal error in agfast; see the server log.")


def _settle(route: Route, resp: Response) -> None:
    """Whatever the handler did, the client gets a complete answer."""
    if not resp.head_sent:
        resp.error(route.family, 500, "The handler produced no response.")
    elif not resp.finished:
        resp.end()


def _next_parser(old: h11.Connection, body: int, max_size: int) -> tuple[h11.Connection, int, bool]:
    """The next cycle's parser, holding what the client already pipelined: (parser, bytes held, EOF seen).

    A fresh h11.Connection per request (h11's `start_next_cycle` wants our answer sent through h11 too); the old
    one's unparsed bytes, less the `body` bytes `_take_body` took from their front, are at most a piece
    (HEAD_PIECE/BODY_PIECE), so handing them over stays cheap.
    """
    new = h11.Connection(h11.SERVER, max_incomplete_event_size=max_size)
    leftover, eof = old.trailing_data
    if body:
        leftover = leftover[body:]
    if leftover:
        new.receive_data(leftover)
    if eof:
        new.receive_data(b"")
    return new, len(leftover), eof


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes written that the client has not taken yet: our buffer plus, where the kernel says, its send queue
    (a slow reader first drains megabytes of kernel queue before our own buffer shrinks)."""
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if OUTQ is not None and sock is not None:
        try:
            unsent += struct.unpack("i", ioctl(sock.fileno(), OUTQ, b"\0\0\0\0"))[0]
        except OSError:
            pass
    return unsent


def _plain_reason(exc: h11.RemoteProtocolError) -> str:
    """h11's reason without the Python repr of the offending bytes it appends (`illegal request line:
    bytearray(b'...')`): the client sent those bytes, and a repr is no answer for a non-Python client."""
    text = str(exc)
    for marker in (": bytearray(", ": b'", ': b"'):
        text = text.split(marker, 1)[0]
    return text.rstrip(".") or "unparseable bytes"


def _head_size(event: h11.Request) -> int:
    return len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)


PREFLIGHT_HEADERS = (
    b"access-control-allow-methods: GET, POST, PUT, DELETE, HEAD, OPTIONS, PATCH\r\naccess-control-max-age: 3600\r\n"
)


def _preflight(resp: Response) -> None:
    """The browser policy already vetted the origin (`request.cors`); a preflight without one is no CORS."""
    req = resp.request
    headers = req.headers
    extra = PREFLIGHT_HEADERS + b"access-control-allow-headers: "
    asked = headers.get(b"access-control-request-headers", b"*")
    extra += (asked if echoable(asked) else b"*") + b"\r\n"
    if req.cors and b"access-control-request-private-network" in headers:
        # Chrome's Private Network Access: a public page reaching a loopback server must be let in explicitly.
        extra += b"access-control-allow-private-network: true\r\n"
    resp.send(204, b"", CT_JSON, extra)


_REQUEST_ID_OK = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")


def _safe_request_id(value: bytes) -> bool:
    """A caller's own X-Request-Id is echoed only if it cannot smuggle anything into our head or logs."""
    return len(value) <= 128 and all(c in _REQUEST_ID_OK for c in value)
