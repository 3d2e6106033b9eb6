"""Everything on the wire to Google: one aiohttp session, the endpoint fallback order, headers, envelope.

One `ClientSession` serves the whole process, so TLS connections to Google are reused across requests and
accounts; each outbound proxy in use (`upstream.proxy`, an account's `proxy_url`) has one more, made on first
use (see `proxy.py`). Calls go to each configured `…/v1internal` base in order; 408, 404, any 5xx and transport errors
fall through to the next base, anything else is the answer (reference §5.1).

The v1internal calls take a lean path through aiohttp (`_post`): the session's connector (pool, DNS, TLS,
proxies), its response protocol, parser, body stream and timeouts, but not `ClientSession.request`'s per-call
machinery (URL and header merging into multidicts, cookie jar, redirects, traces, a `ClientRequest` and, on
Python < 3.12, one more task per call to write its body) nor a `ClientResponse`: the answer is a `Response` read
straight from the parsed message. Its request head is the target's pre-encoded part plus the call's own lines,
written with the body in one `writelines`.

Every connection's protocol is a `PipedHandler`: once a stream's head is in, the gateway pipes its body
(`take_buffered`, then `pipe_to`), the first event included: the parser's body pieces go to the gateway's sink
instead of the reader's buffer, and the sink is flushed after each network read, inside that read's callback, so
no task wakes per read. It is
aiohttp's own protocol, parser and reader otherwise (aiohttp is pinned; `tests/test_upstream_pipe.py` and
`tests/test_upstream_wire.py` hold what this relies on).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import platform
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
import yarl
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import RequestInfo
from aiohttp.connector import Connection
from aiohttp.helpers import BaseTimerContext, TimeoutHandle
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.payload import Payload
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

from agfast.config import Config
from agfast.convert.images import apply_variant
from agfast.netaddr import ProxyURLError
from agfast.upstream.proxy import LabelledProxyConnector, NoProxy, ProxyFailure, parse_proxy

log = logging.getLogger("agfast.upstream")

# Statuses after which the next endpoint is tried (reference §5.1).
FALLBACK_STATUSES = frozenset({408, 404})
# Google's client: a browser-like agent string is what the Antigravity IDE sends (reference §5.2).
CHROME = "Chrome/132.0.6834.160 Electron/39.2.3"
PLATFORMS = {
    "Darwin": "Macintosh; Intel Mac OS X 10_15_7",
    "Windows": "Windows NT 10.0; Win64; x64",
}
# Connect within 20 s, whole call within 10 min (long thinking answers), as the original client.
CONNECT_TIMEOUT = 20.0
TOTAL_TIMEOUT = 600.0
# Idle upstream connections are kept this long for reuse (reference: 90 s idle, 60 s keep-alive).
KEEPALIVE_TIMEOUT = 60.0
# Concurrent upstream connections; far above 2 cores' worth of in-flight streams.
CONNECTION_LIMIT = 512
# Bytes of a request body that leave with the request head in one write; the rest follows as a view of the
# same bytes (see RequestBody).
HEAD_COALESCE = 16 * 1024
# Google's hosts for non-project placeholders (reference §5.2: no x-goog-user-project for these).
PLACEHOLDER_PROJECTS = frozenset({"", "test-project", "project-id"})
# What aiohttp's own request path sends besides our headers (the response parser keeps its own defaults).
ACCEPT_LINES = b"".join(
    b"%s: %s\r\n" % (name.encode(), value.encode()) for name, value in aiohttp.ClientRequest.DEFAULT_HEADERS.items()
)
# A header value must not end its line early: CR or LF in a token, project or extra header would start a header
# of its own (aiohttp's serializer refuses them too).
LINE_BREAKS = ("\r", "\n")


class Sink(Protocol):
    """What a piped answer's bytes go to (gateway's pipe): `take` per body piece the parser hands over, `flush`
    once a network read (or the connection's end, or an idle-read timeout) has been parsed."""

    def take(self, data: bytes) -> None: ...

    def flush(self) -> None: ...


class PipedReader(StreamReader):
    """A response body whose pieces go straight to a sink instead of a buffer and a waiter future.

    Swapped in for the `StreamReader` aiohttp's parser made (`__class__`, same slots) while a sink reads the
    answer; EOF and errors still arrive through the base class (`feed_eof`, `set_exception`), which the sink
    reads after each read. Nothing is buffered, so aiohttp's buffer flow control (pause above the high-water
    mark, HTTP chunk bookkeeping) has nothing to do: backpressure is the sink's (it pauses the transport).
    """

    __slots__ = ()

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        sink = self._protocol.sink  # type: ignore[attr-defined]
        if sink is not None and data:
            self.total_bytes += len(data)
            sink.take(data)
        return False

    def begin_http_chunk_receiving(self) -> None:
        pass

    def end_http_chunk_receiving(self) -> None:
        pass


_parse = ResponseHandler.data_received


class PipedHandler(ResponseHandler):
    """aiohttp's response protocol with two changes: a sink, when one is attached, is flushed after every network
    read (so it writes once per read, however many HTTP chunks the read held), and the idle-read timeout is one
    timer checked against the last read's time instead of a timer cancelled and re-armed on every read."""

    __slots__ = ("read_at", "sink")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.sink: Sink | None = None
        self.read_at = 0.0

    def data_received(self, data: bytes) -> None:
        _parse(self, data)  # the base method by name: `super()` builds an object per call on Python 3.11
        sink = self.sink
        if sink is not None:
            sink.flush()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        sink = self.sink
        if sink is not None:
            sink.flush()

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if not timeout:
            self._drop_timeout()
            return
        self.read_at = self._loop.time()
        if self._read_timeout_handle is None:
            self._read_timeout_handle = self._loop.call_at(self.read_at + timeout, self._check_idle)

    def _check_idle(self) -> None:
        """The idle timer fired: time out if nothing was read since, else wait out the rest from the last read."""
        self._read_timeout_handle = None
        timeout = self._read_timeout
        if not timeout:
            return
        due = self.read_at + timeout
        if self._loop.time() < due:
            self._read_timeout_handle = self._loop.call_at(due, self._check_idle)
            return
        self._on_read_timeout()
        sink = self.sink
        if sink is not None:
            sink.flush()


class Response:
    """Google's answer as the gateway reads it: status, headers and the body stream, straight from the parsed
    message (no `ClientResponse`: its cookies, charset helpers, history and traces go unread).

    The connection goes back to the pool when the body has been read to its end (as aiohttp's own response does),
    or on `release` (closed there if the body is unread); `close` drops it. The call's total timeout (`timer`) is
    entered by the body's reads and cancelled with the connection."""

    __slots__ = ("connection", "content", "headers", "status", "timer")

    def __init__(self, status: int, headers: CIMultiDictProxy[str], content: StreamReader, connection: Connection,
                 timer: BaseTimerContext) -> None:  # fmt: skip
        self.status = status
        self.headers = headers
        self.content = content
        self.connection: Connection | None = connection
        self.timer = timer
        content.on_eof(self.release)

    def release(self) -> None:
        """Done with the answer: its connection back to the pool when the body was read whole, else closed."""
        connection = self.connection
        if connection is not None:
            self.connection = None
            connection.release()

    def close(self) -> None:
        """Drop the connection, whatever is left of the body."""
        connection = self.connection
        if connection is not None:
            self.connection = None
            connection.close()

    async def read(self) -> bytes:
        """The whole body (inside the call's total timeout, as every read of it); the connection is released."""
        try:
            body = await self.content.read()
        except BaseException:
            self.close()
            raise
        self.release()
        return body

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def take_buffered(reader: StreamReader) -> bytes:
    """What the parser put in `reader` that nobody has read, in one piece: `read_nowait` would re-enter the
    protocol's `data_received(b"")` once per buffered piece (once per HTTP chunk: 20 times for 20 events)."""
    pieces = reader._buffer
    if not pieces:
        return b""
    if reader._buffer_offset:  # partly read already: aiohttp's own way
        return reader.read_nowait(-1)
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    pieces.clear()
    reader._size = 0
    reader._cursor += len(data)
    return data


def pipe_to(response: Response, sink: Sink) -> PipedHandler | None:
    """Send the rest of `response`'s body to `sink` as it is parsed (take what is buffered first: `take_buffered`);
    the connection's handler, or None when the body cannot be piped (already complete, or not on a PipedHandler):
    then read it as usual."""
    connection = response.connection
    handler = connection.protocol if connection is not None else None
    reader = response.content
    if handler.__class__ is not PipedHandler or reader.__class__ is not StreamReader:
        return None
    assert isinstance(handler, PipedHandler)
    reader.__class__ = PipedReader
    handler.sink = sink
    return handler


def resume_parsing(reader: StreamReader) -> None:
    """A body whose buffer reached aiohttp's high-water mark paused the parser and the transport; once that buffer
    is taken, parse on (into the sink, when piped) and read again."""
    protocol = reader._protocol
    if protocol._reading_paused and not reader.is_eof():
        protocol.resume_reading()


def unpipe(response: Response, handler: PipedHandler) -> None:
    """Undo `pipe_to`: later body bytes are buffered for a reader again (or dropped with the connection)."""
    handler.sink = None
    reader = response.content
    if reader.__class__ is PipedReader:
        reader.__class__ = StreamReader  # type: ignore[assignment]


def _reading(response: Response) -> ResponseHandler | None:
    """The protocol reading `response`'s connection, while it still does."""
    connection = response.connection
    handler = connection.protocol if connection is not None else None
    transport = handler.transport if handler is not None else None
    return handler if transport is not None and not transport.is_closing() else None


def pause_reading(response: Response) -> bool:
    """Stop reading `response`'s connection, its idle-read clock with it; False when it no longer reads."""
    handler = _reading(response)
    if handler is None:
        return False
    handler.transport.pause_reading()  # type: ignore[union-attr]
    handler._drop_timeout()
    return True


def resume_reading(response: Response) -> None:
    """Undo `pause_reading`: read again, the idle-read clock restarting now."""
    handler = _reading(response)
    if handler is not None:
        handler.transport.resume_reading()  # type: ignore[union-attr]
        handler._reschedule_timeout()


def total_timer(response: Response) -> BaseTimerContext:
    """The call's total timeout, as aiohttp's reads enter it: a task awaiting inside it is cancelled at the end."""
    return response.timer


class TransportError(Exception):
    """No endpoint answered at all (refused, reset, DNS, timeout); the message names the last failure."""


@dataclass(slots=True)
class Answer:
    """An upstream response whose body has not been read yet; `endpoint` is the base that answered."""

    response: Response
    endpoint: str
    fallbacks: int

    @property
    def status(self) -> int:
        return self.response.status


@dataclass(slots=True)
class Relayed:
    """An answer of an upstream that is not Google (z.ai), read through aiohttp's own `ClientResponse`."""

    response: aiohttp.ClientResponse
    endpoint: str
    fallbacks: int


class RequestBody(Payload):
    """An encoded request body written without a copy.

    aiohttp joins its head buffer and a `bytes` body into one new object before writing (Python < 3.12.9
    has no safe `writelines`): for a 50 MB request that is a whole extra copy. Here only the first
    HEAD_COALESCE bytes travel with the head; the rest goes to the transport as a view of the same bytes.
    """

    def __init__(self, value: bytes) -> None:
        super().__init__(value, content_type="application/json")
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        view = memoryview(self._value)
        await writer.write(view[:HEAD_COALESCE])
        if len(view) > HEAD_COALESCE:
            await writer.write(view[HEAD_COALESCE:])


class _Target:
    """One upstream URL as the lean path needs it, built once: the request whose connection key the connector
    pools by, the pre-encoded request line with the constant headers, and what an error may tell about it."""

    __slots__ = ("head", "info", "loop", "probe", "url")

    def __init__(self, url: yarl.URL, session: aiohttp.ClientSession, constant: bytes) -> None:
        self.url = url
        # The session's loop, kept: asking asyncio for the running loop costs a getpid() syscall on Python 3.11.
        self.loop = asyncio.get_running_loop()
        # Only its URL, TLS settings and (absent) proxy are read: by the connector, to pick or open a connection.
        self.probe = aiohttp.ClientRequest("POST", url, loop=self.loop, session=session)
        host = (url.host_port_subcomponent or "").encode("idna")
        self.head = b"POST %s HTTP/1.1\r\nHost: %s\r\n%s" % (url.raw_path_qs.encode(), host, constant)
        # Errors carry this instead of the real headers: an exception never holds the account's token.
        self.info = tuple.__new__(RequestInfo, (url, "POST", CIMultiDictProxy(CIMultiDict()), url))


def header_lines(headers: dict[str, str]) -> bytes:
    """`Name: value` lines, CRLF-terminated; ValueError for a value or name that would break its line."""
    out = b""
    for name, value in headers.items():
        if any(c in value or c in name for c in LINE_BREAKS):
            raise ValueError(f"Newline or carriage return character detected in HTTP header {name!r}")
        out += b"%s: %s\r\n" % (name.encode("utf-8"), value.encode("utf-8"))
    return out


def machine_id(data_dir: Path) -> str:
    """A stable per-installation id for `x-machine-id`; never the raw /etc/machine-id."""
    try:
        raw = Path("/etc/machine-id").read_text().strip()
    except OSError:
        raw = ""
    if not raw:
        raw = str(data_dir.resolve())
    return hashlib.sha256(b"agfast:" + raw.encode()).hexdigest()


def user_agent(config: Config) -> str:
    if config.user_agent:
        return config.user_agent
    plat = PLATFORMS.get(platform.system(), "X11; Linux x86_64")
    return f"Antigravity/{config.client_version} ({plat}) {CHROME}"


class UpstreamClient:
    __slots__ = (
        "_base_headers", "_constant", "_no_proxy", "_proxied", "_session", "_targets", "_timeout", "_urls", "config",
        "endpoints", "proxy",
    )  # fmt: skip

    def __init__(self, config: Config) -> None:
        self.config = config
        self.endpoints = list(config.upstream_endpoints)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[tuple[str, str, str], yarl.URL] = {}
        # The global proxy URL (None = direct); an account's own proxy_url wins over it.
        self.proxy = config.upstream_proxy or None
        self._no_proxy = NoProxy(config.no_proxy)
        self._proxied: dict[str, aiohttp.ClientSession] = {}
        self._base_headers = {
            "Content-Type": "application/json",
            "User-Agent": user_agent(config),
            "x-client-name": "antigravity",
            "x-client-version": config.client_version,
            "x-machine-id": machine_id(config.data_dir),
            "x-vscode-sessionid": str(uuid.uuid4()),
        }
        # The lean path's constant header lines (Content-Length and the call's own lines follow).
        self._constant = ACCEPT_LINES + header_lines(self._base_headers)
        self._targets: dict[tuple[int, yarl.URL], _Target] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=TOTAL_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=config.stream_idle_timeout
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The direct session (no proxy)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=CONNECTION_LIMIT,
                keepalive_timeout=KEEPALIVE_TIMEOUT,
                ttl_dns_cache=300,
            )
            self._session = self._new_session(connector)
        return self._session

    def _new_session(self, connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
        # Every upstream connection gets the piping protocol (aiohttp-socks' connector makes its own the same way).
        connector._factory = functools.partial(PipedHandler, loop=connector._loop)  # type: ignore[assignment]
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            skip_auto_headers=("User-Agent",),
        )

    def session_for(self, url: str | yarl.URL, proxy: str | None = None) -> aiohttp.ClientSession:
        """The session a call to `url` goes through: `proxy` (an account's), else the global one, else direct;
        hosts in NO_PROXY always go direct."""
        proxy = proxy or self.proxy
        if proxy is None:
            return self.session
        host = url.host if isinstance(url, yarl.URL) else yarl.URL(url).host
        if host is not None and self._no_proxy.bypass(host):
            return self.session
        session = self._proxied.get(proxy)
        if session is None:
            try:
                spec = parse_proxy(proxy)
            except ProxyURLError as exc:
                raise ProxyFailure("(invalid proxy URL)", str(exc)) from None
            connector = LabelledProxyConnector(spec, limit=CONNECTION_LIMIT, keepalive_timeout=KEEPALIVE_TIMEOUT)
            session = self._proxied[proxy] = self._new_session(connector)
        return session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        for session in self._proxied.values():
            await session.close()
        self._proxied.clear()
        self._targets.clear()

    def _url(self, base: str, method: str, query: str) -> yarl.URL:
        """Parsed once per (endpoint, method): yarl parsing is a visible cost per call otherwise."""
        key = (base, method, query)
        url = self._urls.get(key)
        if url is None:
            url = self._urls[key] = yarl.URL(f"{base}:{method}{query}")
        return url

    def headers(self, token: str, project: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(self._base_headers)
        headers.update(self.call_headers(token, project, extra))
        return headers

    @staticmethod
    def call_headers(token: str, project: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The headers one call adds to the constant ones: its account's token and project, the model's extras."""
        headers = {"Authorization": "Bearer " + token}
        if project and project not in PLACEHOLDER_PROJECTS:
            headers["x-goog-user-project"] = project
        if extra:
            headers.update(extra)
        return headers

    def _target(self, session: aiohttp.ClientSession, url: yarl.URL) -> _Target:
        key = (id(session), url)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = _Target(url, session, self._constant)
        return target

    async def _post(self, session: aiohttp.ClientSession, url: yarl.URL, lines: bytes, body: bytes) -> Response:
        """POST `body` with the constant headers plus `lines` through `session`'s connector: the lean path (see the
        module docstring), with aiohttp's own timeouts (connect, idle read, total) and errors."""
        if session.closed:
            raise RuntimeError("Session is closed")
        target = self._target(session, url)
        timeout = self._timeout
        loop = target.loop
        handle_owner = TimeoutHandle(loop, timeout.total, ceil_threshold=timeout.ceil_threshold)
        handle = handle_owner.start()
        timer = handle_owner.timer()
        head = b"%s%sContent-Length: %d\r\n\r\n" % (target.head, lines, len(body))
        try:
            with timer:
                connector = session.connector
                assert connector is not None
                try:
                    conn = await connector.connect(target.probe, traces=[], timeout=timeout)
                except TimeoutError as exc:
                    raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from exc
                protocol = conn.protocol
                assert protocol is not None
                protocol.set_response_params(timer=timer, read_until_eof=True, read_timeout=timeout.sock_read)
                try:
                    transport = protocol.transport
                    if transport is None or transport.is_closing():
                        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
                    transport.writelines((head, body))
                    protocol.start_timeout()  # the idle-read timeout runs from the last byte sent
                    while True:  # 1xx heads are skipped, as aiohttp's response does
                        try:
                            message, payload = await protocol.read()
                        except HttpProcessingError as exc:
                            raise aiohttp.ClientResponseError(
                                target.info, (), status=exc.code, message=exc.message, headers=exc.headers
                            ) from exc
                        code = message.code
                        if code < 100 or code > 199 or code == 101:
                            break
                except BaseException:
                    conn.close()
                    raise
        except BaseException:
            handle_owner.close()
            if handle is not None:
                handle.cancel()
            raise
        if handle is not None:
            conn.add_callback(handle.cancel)
        return Response(code, message.headers, payload, conn, timer)

    async def call(
        self,
        method: str,
        body: bytes,
        token: str,
        *,
        project: str | None = None,
        stream: bool = False,
        extra_headers: dict[str, str] | None = None,
        proxy: str | None = None,
    ) -> Answer:
        """POST `{endpoint}:{method}` down the fallback order; the caller reads and releases the answer.

        `proxy` is the account's own proxy URL; a failing proxy raises `ProxyFailure` (no fallback: every
        endpoint is behind the same proxy)."""
        query = "?alt=sse" if stream else ""
        headers = self.call_headers(token, project, extra_headers)
        lines = header_lines(headers)
        direct = proxy is None and self.proxy is None
        session = self.session
        last_error = "no endpoint configured"
        dropped_project = False
        fallbacks = 0
        while True:
            restart = False
            for index, base in enumerate(self.endpoints):
                last = index == len(self.endpoints) - 1
                url = self._url(base, method, query)
                try:
                    if not direct:
                        session = self.session_for(url, proxy)
                    response = await self._post(session, url, lines, body)
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    last_error = f"{base}: {type(exc).__name__}: {exc}" if str(exc) else f"{base}: {type(exc).__name__}"
                    fallbacks += 1
                    continue
                status = response.status
                if status == 403 and "x-goog-user-project" in headers and not dropped_project:
                    # Google refuses some projects as a billing header; the original retries once without it.
                    response.release()
                    headers.pop("x-goog-user-project")
                    lines = header_lines(headers)
                    dropped_project = True
                    restart = True
                    break
                if not last and (status in FALLBACK_STATUSES or status >= 500):
                    response.release()
                    fallbacks += 1
                    last_error = f"{base}: HTTP {status}"
                    continue
                return Answer(response, base, fallbacks)
            if not restart:
                raise TransportError(last_error)

    async def relay(self, url: str, body: bytes, headers: dict[str, str]) -> Relayed:
        """POST to an upstream that is not Google (z.ai) on the same session; the caller reads and releases it.

        One endpoint, no fallback: a failure to connect is a TransportError naming only the exception class."""
        try:
            response = await self.session_for(url).post(url, data=RequestBody(body), headers=headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(type(exc).__name__) from None
        return Relayed(response, url, 0)

    async def call_json(
        self, method: str, payload: dict[str, Any], token: str, project: str | None = None, proxy: str | None = None
    ) -> tuple[int, Any, bytes]:
        """A small non-streaming call (loadCodeAssist, fetchAvailableModels, countTokens): status, JSON, raw."""
        answer = await self.call(method, orjson.dumps(payload), token, project=project, proxy=proxy)
        async with answer.response as response:
            raw = await response.read()
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        return answer.status, parsed, raw


@functools.lru_cache(maxsize=4096)
def fnv1a64_signed(text: str) -> str:
    """`request.sessionId` per account: FNV-1a 64 of the account id, printed as a signed decimal."""
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    if h >= 1 << 63:
        h -= 1 << 64
    return str(h)


def gemini_request_id() -> str:
    """Gemini-path `requestId`: `agent/<unix ms>/<8 hex>` (reference §5.3)."""
    return f"agent/{int(time.time() * 1000)}/{os.urandom(4).hex()}"


def envelope(
    request: dict[str, Any],
    *,
    model: str,
    project: str,
    request_id: str,
    request_type: str = "agent",
    user_agent: str = "antigravity",
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The v1internal wrapper around a GenerateContentRequest, encoded once. An image model's name (any surface's,
    size/ratio variants included) goes as the bare model with its imageConfig, as an `image_gen` request."""
    if "-image" in model:
        model, request_type = apply_variant(request, model), "image_gen"
    outer: dict[str, Any] = {
        "project": project,
        "requestId": request_id,
        "request": request,
        "model": model,
        "userAgent": user_agent,
        "requestType": request_type,
    }
    if extra:
        outer.update(extra)
    return orjson.dumps(outer)
