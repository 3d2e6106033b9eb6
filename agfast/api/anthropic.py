"""Anthropic-compatible surface: /v1/messages and /v1/messages/count_tokens (reference §6.5–6.8, §9).

A request is planned by `convert.anthropic.plan` (§6.5's pre-processing in order: body check, thinking hints,
`cache_control` removal, system lifting, merging, routing, thinking filter, warmup, background routing); the
z.ai decision is made here, then the plan's GenerateContentRequest is always streamed upstream. Streaming
clients get Anthropic SSE as each upstream chunk arrives; others get the collected message. Errors before the
first byte are Anthropic error bodies with the right status and type; after it, an in-stream `error` event.
"""

from __future__ import annotations

from typing import Any

import orjson

from agfast.api.common import (
    BROKEN,
    GOOGLE_STATUS,
    SHUTDOWN,
    ErrorTable,
    Row,
    json_object,
    upstream_headers,
)
from agfast.api.driver import Answer, Collector, Converter, Services, deliver, opened
from agfast.api.zai import ZaiDispatcher
from agfast.convert import anthropic as convert
from agfast.convert.anthropic_stream import PING, warmup_events, warmup_message
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import CT_JSON, CT_SSE, Response
from agfast.record import RequestRecord
from agfast.upstream.client import envelope, fnv1a64_signed
from agfast.upstream.gateway import (
    ExhaustedError,
    UpstreamError,
    google_message,
)
from agfast.upstream.pool import Lease, NoAccountError

DONE = b"[DONE]"
WARMUP_HEADERS = b"x-warmup-intercepted: true\r\n"
ESTIMATE_HEADER = b"x-agfast-token-estimate: true\r\n"
# A silent upstream (long thinking) gets a ping this often, well inside common 30–60 s proxy idle limits.
PING_EVERY = 15.0
# Google refusing *our* account is not the client's auth problem: 401/403 would make Claude Code report a bad
# key or log the user out, 503 makes it retry (the reference rewrites 403; 401 the same way here).
ACCOUNT_FAULT_STATUS = {401: 503, 403: 503}
STREAM_ERROR_TYPES = {
    400: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _upstream_text(message: str) -> str:
    """Claude models behind v1internal put Anthropic's own error JSON in Google's message: unwrap it."""
    if message.startswith("{"):
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError:
            return message
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    return message


# Claude Code compacts the conversation when it sees Anthropic's "prompt is too long".
PROMPT_TOO_LONG = Row(400, "prompt is too long: {message}", "invalid_request_error")


def _too_long(status: int, message: str) -> Row | None:
    return PROMPT_TOO_LONG if status == 400 and convert.is_too_long(message) else None


def _whole_seconds(seconds: float) -> int:
    return int(seconds + 0.999)


# A failed upstream exchange, in Anthropic's words (reference §6.6); Google's status passes through, except
# that Google refusing our account is no auth error of the client's (ACCOUNT_FAULT_STATUS).
ERRORS = ErrorTable(
    rejected=Row(GOOGLE_STATUS),
    not_found=Row(GOOGLE_STATUS, "{detail}"),
    unreachable=Row(502, error_type="api_error"),
    exhausted=Row(GOOGLE_STATUS, "{detail}"),
    no_account=Row(503, error_type="overloaded_error"),
    status_map=ACCOUNT_FAULT_STATUS,
    retry_after=_whole_seconds,
    text=_upstream_text,
    rule=_too_long,
)


class AnthropicApi:
    __slots__ = ("app", "ctx", "zai")

    def __init__(self, app: Services) -> None:
        self.app = app
        self.zai = ZaiDispatcher(app)
        # What planning may ask of the app, bound once.
        self.ctx = convert.Context(app.lookup, app.pool.available_models, app.model_spec, app.signatures)

    def _plan(self, req: Request, record: RequestRecord, *, count: bool) -> convert.Plan:
        """Parse and plan (§6.5 steps 1–8, convert.plan); a body that cannot be served is a 400."""
        cached = b"cache_control" in req.body
        body = json_object(req)
        if isinstance(model := body.get("model"), str):
            self.app.permit(req, model)
        try:
            plan = convert.plan(body, req.headers, self.ctx, count=count, cached=cached)
        except convert.ConversionError as exc:
            raise HttpError(400, str(exc), param=exc.field) from None
        except HttpError:  # the route's: the model was named, so the record names it
            record.model = body["model"]
            raise
        record.model = plan.model
        record.stream = plan.stream and not count
        return plan

    def _request(self, plan: convert.Plan) -> convert.Conversion:
        try:
            return plan.conversion()
        except convert.ConversionError as exc:
            raise HttpError(400, str(exc), param=exc.field) from None

    async def _unknown_model(self, req: Request, resp: Response, plan: convert.Plan, path: str) -> None:
        """A name Google's side does not know: z.ai (when configured, it may serve it), else a 404."""
        if self.zai.mode != "off":
            await self.zai.forward(req, resp, plan.zai_body(), path)
            return
        raise self.app.unknown_model(plan.model)

    # -- /v1/messages ------------------------------------------------------------------------------------------

    async def messages(self, req: Request, resp: Response) -> None:
        await self.app.driver.run(Family.ANTHROPIC, ERRORS, self._messages, req, resp)

    async def _messages(self, req: Request, resp: Response, record: RequestRecord) -> None:
        plan = self._plan(req, record, count=False)
        if plan.warmup:
            head = WARMUP_HEADERS + upstream_headers("", plan.mapped)
            if plan.stream:
                resp.start(200, CT_SSE, head)
                resp.end(warmup_events(plan.model))
            else:
                resp.send(200, orjson.dumps(warmup_message(plan.model)), CT_JSON, head)
            return
        if self.zai.take_turn():
            await self.zai.forward(req, resp, plan.zai_body(), "/v1/messages")
            return
        if not plan.mapped:
            await self._unknown_model(req, resp, plan, "/v1/messages")
            return
        self._request(plan)
        mapped, request_id = plan.mapped, plan.request_id

        def build(lease: Lease) -> bytes:
            request = plan.request
            assert request is not None
            request["sessionId"] = fnv1a64_signed(lease.account_id)
            return envelope(request, model=mapped, project=lease.project_id, request_id=request_id)

        try:
            stream = await self.app.gateway.open_stream(
                record, model=mapped, session_id=plan.session, build=build, recover=plan.recover
            )
        except (NoAccountError, ExhaustedError):
            if self.zai.falls_back:
                await self.zai.forward(req, resp, plan.zai_body(), "/v1/messages")
                return
            raise
        opened(req, record)
        try:
            await deliver(resp, stream, self._answer(plan), plan.stream, upstream_headers(stream.lease.email, mapped))
        finally:
            stream.close()

    @staticmethod
    def _answer(plan: convert.Plan) -> Answer:
        """Anthropic SSE while streaming (pings every PING_EVERY), else the collected message."""

        def converter() -> Converter:
            conv = plan.converter()
            return Converter(_no_head, conv.feed, conv.finish, lambda m, k: conv.error(*_stream_failure(m, k)))

        def collector() -> Collector:
            made = plan.collector()
            return Collector(made.add, lambda: orjson.dumps(made.result()))

        return Answer(converter, collector, _collect_failed, PING_EVERY, PING)

    # -- /v1/messages/count_tokens -------------------------------------------------------------------------------

    async def count_tokens(self, req: Request, resp: Response) -> None:
        await self.app.driver.run(Family.ANTHROPIC, ERRORS, self._count_tokens, req, resp)

    async def _count_tokens(self, req: Request, resp: Response, record: RequestRecord) -> None:
        plan = self._plan(req, record, count=True)
        if self.zai.mode == "exclusive":
            await self.zai.forward(req, resp, plan.zai_body(), "/v1/messages/count_tokens")
            return
        if not plan.mapped:
            await self._unknown_model(req, resp, plan, "/v1/messages/count_tokens")
            return
        conversion = self._request(plan)
        mapped = plan.mapped
        payload = orjson.dumps({"request": convert.count_request(conversion, mapped)})
        try:
            raw, lease = await self.app.gateway.call(
                record, method="countTokens", model=mapped, session_id=plan.session, build=lambda lease: payload
            )
            doc = orjson.loads(raw)
            inner = doc.get("response", doc) if isinstance(doc, dict) else {}
            total = inner.get("totalTokens") if isinstance(inner, dict) else None
        except (UpstreamError, ExhaustedError, NoAccountError, orjson.JSONDecodeError):
            total, lease = None, None
        opened(req, record)
        if isinstance(total, int) and total > 0 and lease is not None:
            resp.send(200, orjson.dumps({"input_tokens": total}), CT_JSON, upstream_headers(lease.email, mapped))
            return
        # countTokens failed: a local estimate, flagged, rather than the reference's zeros.
        estimate = convert.estimate_tokens(conversion.request)
        resp.send(
            200, orjson.dumps({"input_tokens": estimate}), CT_JSON, ESTIMATE_HEADER + upstream_headers("", mapped)
        )


def _no_head() -> bytes:
    return b""


def _stream_failure(message: str, kind: int) -> tuple[str, str]:
    """Why a stream stopped early, as the in-stream error's (message, type)."""
    if kind == BROKEN:
        return message, "api_error"
    if kind == SHUTDOWN:
        return message, "overloaded_error"
    return _stream_error({"error": {"code": kind, "message": message}})


def _collect_failed(status: int, message: str, headers: bytes) -> HttpError:
    text, error_type = _stream_error({"error": {"code": status, "message": message}})
    return HttpError(502, text, error_type=error_type, headers=headers)


def _stream_error(inner: dict[str, Any]) -> tuple[str, str]:
    err = inner.get("error")
    err = err if isinstance(err, dict) else {}
    code = err.get("code")
    message = _upstream_text(str(err.get("message") or google_message(orjson.dumps(inner))))
    return message, STREAM_ERROR_TYPES.get(code if isinstance(code, int) else 500, "api_error")
