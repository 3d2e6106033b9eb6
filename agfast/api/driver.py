"""The one place a proxied request is run and recorded.

Every surface (OpenAI, Anthropic, Gemini) hands its handler to `Driver.run`: the driver opens the request's
`RequestRecord`, lets the surface plan, send and pump, answers an `HttpError` in the surface's shape, and
hands the finished record to every observer — the access log here, the monitor and metrics next. Requests
that never reach a surface (404, health checks, malformed HTTP) keep being logged by the HTTP shell.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

from agfast.api.common import GATEWAY_ERRORS, ErrorTable, pump, pump_raw
from agfast.config import Config
from agfast.convert.checks import InvalidRequest
from agfast.convert.models import ModelSpec
from agfast.convert.signatures import SignatureCache
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import CT_JSON, CT_SSE, Response
from agfast.logtext import ACCESS_FORMAT, escape, mask_email, model_pair
from agfast.record import BODY_CAP, Observer, RequestRecord
from agfast.upstream.catalog import Catalog
from agfast.upstream.client import UpstreamClient
from agfast.upstream.gateway import STREAM_BREAKS, Gateway, Stream, collect, stream_broke
from agfast.upstream.pool import AccountPool

log = logging.getLogger("agfast.api")
access = logging.getLogger("agfast.access")

# Logged for a request whose client left before its answer was complete (nginx's convention).
CLIENT_CLOSED = 499
PROTOCOL_NAMES = {Family.OPENAI: "openai", Family.ANTHROPIC: "anthropic", Family.GEMINI: "gemini"}

Surface = Callable[[Request, Response, RequestRecord], Awaitable[None]]


def access_log(record: RequestRecord) -> None:
    """The access line for a proxied request (same format as the shell's: see logtext.ACCESS_FORMAT)."""
    if not access.isEnabledFor(logging.INFO):
        return
    access.info(
        ACCESS_FORMAT,
        record.request_id,
        escape(record.method),
        escape(record.path.partition("?")[0]) or "-",  # never the query: it may hold a key
        record.status or CLIENT_CLOSED,
        record.duration * 1000,
        model_pair(record.model, record.mapped_model),
        mask_email(record.account_email) or "-",
        record.attempts,
    )


class Driver:
    """Runs surface handlers: one RequestRecord per request, errors in the caller's shape, observers told."""

    __slots__ = ("observers", "record_bodies")

    def __init__(self) -> None:
        self.observers: list[Observer] = [access_log]
        # Set by the monitor: keep request/response bodies (capped at BODY_CAP) in the record; off costs nothing.
        self.record_bodies = False

    async def run(self, family: Family, errors: ErrorTable, surface: Surface, req: Request, resp: Response) -> None:
        record = RequestRecord(
            req.request_id.decode("latin-1"),
            req.method.decode("latin-1"),
            req.path + "?" + req.query.decode("latin-1") if req.query else req.path,
            PROTOCOL_NAMES[family],
            _client_ip(resp),
            time.time(),
        )
        req.observed = True
        if req.api_key is not None:
            record.key_name = getattr(req.api_key, "name", "")
        if self.record_bodies:
            record.request_body = req.body[:BODY_CAP]
            resp.capture = bytearray()
            resp.capture_limit = BODY_CAP
        try:
            try:
                await surface(req, resp, record)
            except GATEWAY_ERRORS as exc:
                raise errors.error(exc, record.mapped_model) from None
            except InvalidRequest as exc:
                raise HttpError(400, exc.message, param=exc.param, code=exc.code) from None
        except HttpError as exc:
            record.error = exc.message
            if not resp.head_sent:
                resp.send_error(family, exc)
        except Exception as exc:
            record.error = f"internal error: {type(exc).__name__}"
            raise
        finally:
            self._finish(record, req, resp)

    def _finish(self, record: RequestRecord, req: Request, resp: Response) -> None:
        if resp.disconnected and not resp.finished:
            record.status = 0  # the client left first (logged as 499)
        elif resp.head_sent:
            record.status = resp.status  # the shell ends an answer left open
        else:
            record.status = 503 if resp.cut else 500  # what the shell answers for a cut or failed handler
        record.duration = perf_counter() - req.started
        if resp.capture is not None:
            record.response_body = bytes(resp.capture)
        for observe in self.observers:
            try:
                observe(record)
            except Exception:
                log.exception("request observer failed")


def opened(req: Request, record: RequestRecord) -> None:
    """Upstream answered: note the first byte, and leave Google's time out of the overhead header."""
    record.first_byte = perf_counter() - req.started
    req.waited = record.upstream_seconds


Feed = Callable[[dict[str, Any]], object]


class Converter:
    """One streaming answer's converter, uniform for every surface: `start()` head bytes (may be b""),
    `feed(chunk)` per upstream event, `finish()` the tail, `fail(message, kind)` the in-stream error for a stream
    that stopped early (kind: Google's status, or common.BROKEN / common.SHUTDOWN). Bound methods, captured once
    per request: the per-event path stays one call."""

    __slots__ = ("fail", "feed", "finish", "start")

    def __init__(
        self,
        start: Callable[[], bytes],
        feed: Callable[[Any], bytes],
        finish: Callable[[], bytes],
        fail: Callable[[str, int], bytes],
    ) -> None:
        self.start, self.feed, self.finish, self.fail = start, feed, finish, fail


class Collector:
    """One non-streaming answer's collector: `feed(chunk)` per upstream event, `result()` the JSON body."""

    __slots__ = ("feed", "result")

    def __init__(self, feed: Feed, result: Callable[[], bytes]) -> None:
        self.feed, self.result = feed, result


@dataclass(frozen=True, slots=True)
class Answer:
    """How a surface answers an open upstream stream (its plan's half that the driver runs)."""

    converter: Callable[[], Converter]  # a fresh streaming converter
    collector: Callable[[], Collector]  # a fresh collector (made again when a mid-stream break re-runs)
    collect_failed: Callable[[int, str, bytes], HttpError]  # an error event while collecting → the HTTP error
    keepalive: float  # seconds of upstream silence before a ping (0: none)
    ping: bytes  # the keep-alive comment or event
    content_type: bytes = CT_SSE  # of a streaming answer
    collected_type: bytes = CT_JSON  # of a collected answer
    raw: bool = False  # the converter's feed takes each event's raw bytes (see common.pump_raw), not a parsed chunk


async def deliver(resp: Response, stream: Stream, answer: Answer, streaming: bool, headers: bytes) -> bool:
    """Pump (streaming) or collect (non-streaming) an open stream into the answer; True when it completed."""
    if streaming:
        conv = answer.converter()
        resp.start(200, answer.content_type, headers)
        if answer.keepalive:
            resp.keep_alive(answer.keepalive, answer.ping)
        head = conv.start()
        if head:
            resp.write(head)
        failed = await (pump_raw if answer.raw else pump)(resp, stream, conv.feed)
        resp.end(conv.finish() if failed is None else conv.fail(failed[1], failed[0]))
        return failed is None
    made: list[Collector] = []

    def fresh() -> Feed:
        made.append(answer.collector())
        return made[-1].feed

    def failed_event(status: int, message: str) -> Exception:
        return answer.collect_failed(status, message, headers)

    try:
        await collect(stream, fresh, failed_event)
    except STREAM_BREAKS as exc:
        raise HttpError(502, stream_broke(exc), headers=headers) from None
    resp.send(200, made[-1].result(), answer.collected_type, headers)
    return True


def _client_ip(resp: Response) -> str:
    return resp.proto.peer


class Services(Protocol):
    """What the surfaces use of the application (agfast.app.App), so `api/` imports nothing above it."""

    config: Config
    pool: AccountPool
    client: UpstreamClient
    gateway: Gateway
    gemini_gateway: Gateway
    signatures: SignatureCache
    driver: Driver

    @property
    def catalog(self) -> Catalog: ...

    def lookup(self, model: str) -> str | None: ...

    def route(self, model: str) -> str: ...

    def unknown_model(self, model: str) -> HttpError: ...

    def model_spec(self, mapped: str) -> ModelSpec: ...

    def model_names(self) -> list[str]: ...

    def permit(self, req: Request, model: str) -> None: ...
