"""The one place a proxied request is run and recorded.

Every surface (OpenAI, Anthropic, Gemini) is a `Surface`: its error table and a plan function that turns a
parsed body into an outcome (`convert.outcomes`). `Driver.run` is the core they share: it opens the
request's `RequestRecord`, parses the body, asks the key's model patterns, plans, and then either sends a
short-circuit outcome (a local answer, z.ai's pass-through, a countTokens call) or opens the plan's gateway
and delivers its `Answer`; failures are answered in the surface's shape, and the finished record goes to every
observer — the access log here, the monitor and metrics next. Requests that never reach a surface (404, health
checks, malformed HTTP) keep being logged by the HTTP shell.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

import orjson

from agfast.api.common import GATEWAY_ERRORS, ErrorTable, json_object, pump, pump_raw, upstream_headers
from agfast.config import Config
from agfast.convert.checks import InvalidRequest
from agfast.convert.models import ModelSpec
from agfast.convert.outcomes import Answer, Collector, Count, Local, Outcome, Relay, Upstream, Wire
from agfast.convert.signatures import SignatureCache
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import CT_JSON, Response
from agfast.logtext import ACCESS_FORMAT, escape, mask_email, model_pair
from agfast.record import BODY_CAP, Observer, RequestRecord
from agfast.upstream.catalog import Catalog
from agfast.upstream.client import UpstreamClient, envelope, fnv1a64_signed, gemini_request_id
from agfast.upstream.gateway import (
    STREAM_BREAKS,
    ExhaustedError,
    Gateway,
    Stream,
    UpstreamError,
    collect,
    stream_broke,
)
from agfast.upstream.pool import AccountPool, NoAccountError

log = logging.getLogger("agfast.api")
access = logging.getLogger("agfast.access")

# Logged for a request whose client left before its answer was complete (nginx's convention).
CLIENT_CLOSED = 499
PROTOCOL_NAMES = {Family.OPENAI: "openai", Family.ANTHROPIC: "anthropic", Family.GEMINI: "gemini"}

# The upstream encoders every plan's body builder uses, bound once.
WIRE = Wire(envelope, fnv1a64_signed, gemini_request_id)
Feed = Callable[[dict[str, Any]], object]


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


# A client model name read from the request (the body's `model`, or the path's) for the key's model patterns.
ModelOf = Callable[[dict[str, Any], Request], str | None]
# A route's plan function, its context bound once: (body, request, marked) → what to do. `marked`: the raw body
# held the surface's marker (sniffed before parsing, since the raw bytes are released then).
PlanOf = Callable[[dict[str, Any], Request, bool], Outcome]
Relayer = Callable[[Request, Response, dict[str, Any], str], Awaitable[None]]
Handler = Callable[[Request, Response, RequestRecord], Awaitable[None]]
# Flags an answer whose count is agfast's own estimate (Google's countTokens failed).
ESTIMATE_HEADER = b"x-agfast-token-estimate: true\r\n"
# What sends an Upstream plan to its fallback (z.ai), when it has one: no Google account can take it now.
NO_GOOGLE = (NoAccountError, ExhaustedError)
# A countTokens call that leaves the surface to its estimate (when it has one).
COUNT_FAILURES = (UpstreamError, ExhaustedError, NoAccountError, orjson.JSONDecodeError)


def body_model(body: dict[str, Any], req: Request) -> str | None:
    """The body's `model` (OpenAI, Anthropic)."""
    model = body.get("model")
    return model if isinstance(model, str) else None


def path_model(body: dict[str, Any], req: Request) -> str | None:
    """The path's `{model}` (Gemini's `/v1beta/models/{model}:{action}`)."""
    return req.name


@dataclass(frozen=True, slots=True)
class Surface:
    """One route as the driver runs it: its protocol, error table, where the model name is, its plan function."""

    family: Family
    errors: ErrorTable
    plan: PlanOf
    model: ModelOf = body_model
    marker: bytes | None = None  # told to the plan as `marked`


class Driver:
    """Runs every proxied request: one RequestRecord, the plan's outcome, errors in the caller's shape, observers."""

    __slots__ = ("gateways", "observers", "permit", "record_bodies", "relay", "short_circuits")

    def __init__(self, permit: Callable[[Request, str], None], gateways: dict[str, Gateway], relay: Relayer) -> None:
        self.permit = permit  # a named key's model patterns: 403 outside them
        self.gateways = gateways  # a plan's gateway key → the Gateway
        self.relay = relay  # z.ai's pass-through
        self.observers: list[Observer] = [access_log]
        # Set by the monitor: keep request/response bodies (capped at BODY_CAP) in the record; off costs nothing.
        self.record_bodies = False
        self.short_circuits: dict[type, Callable[[Any, Request, Response, RequestRecord], Awaitable[None]]] = {
            Local: self._local,
            Relay: self._relay,
            Count: self._count,
        }

    async def run(self, surface: Surface, req: Request, resp: Response) -> None:
        """The one core: record → parse → permit → plan → a short-circuit outcome, or Google: open → deliver →
        the plan's after-hook → end (observers told)."""
        record = self._record(surface.family, req, resp)
        try:
            marked = surface.marker is not None and surface.marker in req.body
            body = json_object(req)
            model = surface.model(body, req)
            if model is not None:
                record.model = model
                self.permit(req, model)
            plan = surface.plan(body, req, marked)
            record.stream = plan.stream
            if not isinstance(plan, Upstream):
                await self.short_circuits[type(plan)](plan, req, resp, record)
                return
            stream = await self._open(plan, req, resp, record)
            if stream is None:
                return  # no Google account could take it: the plan's fallback (z.ai) answered
            try:
                if await deliver(resp, stream, plan.answer, plan.stream, _headers(plan, stream)) and plan.after:
                    plan.after()
            finally:
                stream.close()
        except Exception as exc:
            self._fail(exc, surface.family, surface.errors, record, resp)
        finally:
            self._finish(record, req, resp)

    async def handle(self, family: Family, errors: ErrorTable, handler: Handler, req: Request, resp: Response) -> None:
        """A route not planned yet (images: n calls at once) run with the same record, errors and observers."""
        record = self._record(family, req, resp)
        try:
            await handler(req, resp, record)
        except Exception as exc:
            self._fail(exc, family, errors, record, resp)
        finally:
            self._finish(record, req, resp)

    async def _open(self, plan: Upstream, req: Request, resp: Response, record: RequestRecord) -> Stream | None:
        """The plan's gateway until a first event arrives; None when its fallback answered instead."""
        try:
            stream = await self.gateways[plan.gateway].open_stream(
                record, model=plan.model, session_id=plan.session, build=plan.build, recover=plan.recover
            )
        except NO_GOOGLE:
            if plan.fallback is None:
                raise
            await self.relay(req, resp, plan.fallback.body, plan.fallback.path)
            return None
        opened(req, record)
        return stream

    async def _local(self, plan: Local, req: Request, resp: Response, record: RequestRecord) -> None:
        head = plan.headers + upstream_headers("", plan.mapped)
        if plan.stream:
            resp.start(plan.status, plan.content_type, head)
            resp.end(plan.body)
        else:
            resp.send(plan.status, plan.body, plan.content_type, head)

    async def _relay(self, plan: Relay, req: Request, resp: Response, record: RequestRecord) -> None:
        await self.relay(req, resp, plan.body, plan.path)

    async def _count(self, plan: Count, req: Request, resp: Response, record: RequestRecord) -> None:
        payload, estimate = plan.payload, plan.estimate
        try:
            raw, lease = await self.gateways[plan.gateway].call(
                record, method="countTokens", model=plan.model, session_id=plan.session, build=lambda _: payload
            )
            body = plan.answer(orjson.loads(raw))
        except COUNT_FAILURES:
            if estimate is None:
                raise
            body = None
        opened(req, record)
        if body is not None:
            resp.send(200, body, CT_JSON, upstream_headers(lease.email, plan.model))
        elif estimate is not None:  # countTokens failed: a local estimate, flagged, rather than the reference's zeros
            resp.send(200, estimate(), CT_JSON, ESTIMATE_HEADER + upstream_headers("", plan.model))
        else:
            head = upstream_headers("", plan.model)
            raise HttpError(502, "Google's countTokens answer holds no count.", headers=head)

    def _record(self, family: Family, req: Request, resp: Response) -> RequestRecord:
        record = RequestRecord(
            req.request_id.decode("latin-1"),
            req.method.decode("latin-1"),
            req.path + "?" + req.query.decode("latin-1") if req.query else req.path,
            PROTOCOL_NAMES[family],
            resp.proto.peer,  # the client's address
            time.time(),
        )
        req.observed = True
        if req.api_key is not None:
            record.key_name = getattr(req.api_key, "name", "")
        if self.record_bodies:
            record.request_body = req.body[:BODY_CAP]
            resp.capture = bytearray()
            resp.capture_limit = BODY_CAP
        return record

    @staticmethod
    def _fail(exc: Exception, family: Family, errors: ErrorTable, record: RequestRecord, resp: Response) -> None:
        """Call in `except`: a bad body (400), a gateway failure (the surface's table) or an HttpError is answered
        in the surface's shape; anything else is recorded and re-raised (the shell answers 500)."""
        if isinstance(exc, GATEWAY_ERRORS):
            exc = errors.error(exc, record.mapped_model)
        elif isinstance(exc, InvalidRequest):
            exc = HttpError(400, exc.message, param=exc.param, code=exc.code)
        if not isinstance(exc, HttpError):
            record.error = f"internal error: {type(exc).__name__}"
            raise exc
        record.error = exc.message
        if not resp.head_sent:
            resp.send_error(family, exc)

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
        status, message, error_type = answer.collect_failed(status, message)
        return HttpError(status, message, error_type=error_type, headers=headers)

    try:
        await collect(stream, fresh, failed_event)
    except STREAM_BREAKS as exc:
        raise HttpError(502, stream_broke(exc), headers=headers) from None
    resp.send(200, made[-1].result(), answer.collected_type, headers)
    return True


def _headers(plan: Upstream, stream: Stream) -> bytes:
    """X-Mapped-Model, X-Account-Email, and Google's trace id when the plan passes it on."""
    headers = upstream_headers(stream.lease.email, plan.model)
    if plan.trace and stream.trace_id:
        # The reference sends the trace id as a synthetic first event; SDKs turn that into an empty chunk, so it
        # travels as a header instead.
        headers += b"x-cloudaicompanion-trace-id: " + stream.trace_id.encode() + b"\r\n"
    return headers


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
