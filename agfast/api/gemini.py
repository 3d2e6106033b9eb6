"""Gemini-native surface (`/v1beta/models/…`, and `/v1/models/{m}:{action}` for google-genai 3.x).

The request is a GenerateContentRequest already: it is adapted for v1internal, wrapped in the envelope and
always streamed upstream; streaming clients get each event unwrapped (`{"response": x}` → `x`), others get
the collected response. Errors use Google's shape.
"""

from __future__ import annotations

from typing import Any

import orjson

from agfast import sse
from agfast.api.common import BROKEN, GOOGLE_STATUS, SHUTDOWN, ErrorTable, Row, json_object, upstream_headers
from agfast.api.driver import Answer, Collector, Converter, Services, deliver, opened
from agfast.convert import gemini as convert
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import CT_JSON, CT_SSE, Response
from agfast.record import RequestRecord
from agfast.upstream.client import envelope, fnv1a64_signed, gemini_request_id
from agfast.upstream.pool import Lease

DONE = b"[DONE]"
# Model lists report this context window for a model Google did not describe (no account listed it yet).
DEFAULT_INPUT_TOKEN_LIMIT = 128000
GENERATION_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


# A failed upstream exchange, in Google's words (no Retry-After: the reference sends none here).
ERRORS = ErrorTable(
    rejected=Row(GOOGLE_STATUS, error_type="UPSTREAM_ERROR"),
    not_found=Row(404, "Model {mapped} is not available to any account. {detail}"),
    unreachable=Row(502),
    exhausted=Row(429, "All accounts exhausted. {detail}"),
    no_account=Row(503),
    retry_after=None,
)


class GeminiApi:
    __slots__ = ("app", "ctx")

    def __init__(self, app: Services) -> None:
        self.app = app
        # What planning may ask of the app, bound once.
        self.ctx = convert.Context(app.route, app.model_spec)

    async def generate(self, req: Request, resp: Response) -> None:
        await self.app.driver.run(Family.GEMINI, ERRORS, self._generate, req, resp)

    async def _generate(self, req: Request, resp: Response, record: RequestRecord) -> None:
        undefined = b'"[undefined]"' in req.body
        body = json_object(req)
        record.model = req.name
        self.app.permit(req, req.name)
        plan = convert.plan(body, req.headers, self.ctx, model=req.name, action=req.action, undefined=undefined)
        record.stream = plan.stream
        mapped, request = plan.mapped, plan.request

        def build(lease: Lease) -> bytes:
            request["sessionId"] = fnv1a64_signed(lease.account_id)
            user_agent = "antigravity" if lease.email.endswith("@gmail.com") else "jetski"
            return envelope(
                request,
                model=mapped,
                project=lease.project_id,
                request_id=gemini_request_id(),
                user_agent=user_agent,
                extra={"enabledCreditTypes": ["GOOGLE_ONE_AI"]},
            )

        stream = await self.app.gemini_gateway.open_stream(record, model=mapped, session_id=plan.session, build=build)
        opened(req, record)
        try:
            headers = upstream_headers(stream.lease.email, mapped)
            if plan.stream and stream.trace_id:
                # The reference sends the trace id as a synthetic first event; SDKs turn that into an empty
                # chunk, so it travels as a header instead.
                headers += b"x-cloudaicompanion-trace-id: " + stream.trace_id.encode() + b"\r\n"
            await deliver(resp, stream, SSE_ANSWER if b"alt=sse" in req.query else ARRAY_ANSWER, plan.stream, headers)
        finally:
            stream.close()

    async def count_tokens(self, req: Request, resp: Response) -> None:
        await self.app.driver.run(Family.GEMINI, ERRORS, self._count_tokens, req, resp)

    async def _count_tokens(self, req: Request, resp: Response, record: RequestRecord) -> None:
        body = json_object(req)
        record.model = req.name
        self.app.permit(req, req.name)
        plan = convert.plan(body, req.headers, self.ctx, model=req.name, action="countTokens")
        mapped = plan.mapped
        payload = orjson.dumps({"request": plan.request})
        raw, lease = await self.app.gemini_gateway.call(
            record, method="countTokens", model=mapped, session_id=None, build=lambda lease: payload
        )
        opened(req, record)
        doc = orjson.loads(raw)
        inner = doc.get("response", doc) if isinstance(doc, dict) else {}
        total = inner.get("totalTokens", 0) if isinstance(inner, dict) else 0
        resp.send(200, orjson.dumps({"totalTokens": total}), b"application/json", upstream_headers(lease.email, mapped))

    def _model_doc(self, name: str, mapped: str) -> dict[str, Any]:
        """A Gemini `Model` for a callable name, its limits as Google described the model it routes to."""
        app = self.app
        spec = app.model_spec(mapped)
        record = app.catalog.records.get(mapped)
        return {
            "name": f"models/{name}",
            "version": "001",
            "displayName": (record.display_name if record else None) or name,
            "description": "" if mapped == name else f"Served by {mapped}.",
            "inputTokenLimit": (record.max_tokens if record else None) or DEFAULT_INPUT_TOKEN_LIMIT,
            "outputTokenLimit": spec.max_output_tokens,
            "supportedGenerationMethods": GENERATION_METHODS,
            "temperature": 1.0,
            "topP": 0.95,
            "topK": 64,
            "thinking": spec.can_think,
        }

    def list_models(self, req: Request, resp: Response) -> None:
        lookup = self.app.lookup
        models = []
        for name in self.app.model_names():
            mapped = lookup(name)
            if mapped is not None:
                models.append(self._model_doc(name, mapped))
        resp.send(200, orjson.dumps({"models": models}))

    def get_model(self, req: Request, resp: Response) -> None:
        name = req.name
        resp.send(200, orjson.dumps(self._model_doc(name, self.app.route(name))))


# In-stream failure kinds → Google's code for them.
FAILURE_CODES = {BROKEN: 502, SHUTDOWN: 503}


def _no_bytes() -> bytes:
    return b""


def _sse_event(data: bytes) -> bytes:
    return sse.frame_event(sse.unwrap_response(data))


def _sse_failure(message: str, kind: int) -> bytes:
    return sse.frame_event(_stream_error(FAILURE_CODES.get(kind, 502), message))


def _sse_converter() -> Converter:
    """alt=sse: each event unwrapped (`{"response": x}` → `x`) and framed as SSE."""
    return Converter(_no_bytes, _sse_event, _no_bytes, _sse_failure)


class _JsonArray:
    """Without alt=sse Google streams one JSON array, which SDKs that ask for it parse incrementally."""

    __slots__ = ("first",)

    def __init__(self) -> None:
        self.first = True

    def start(self) -> bytes:
        return b"["

    def feed(self, data: bytes) -> bytes:
        if self.first:
            self.first = False
            return sse.unwrap_response(data)
        return b",\r\n" + sse.unwrap_response(data)

    def finish(self) -> bytes:
        return b"]"

    def fail(self, message: str, kind: int) -> bytes:
        error = _stream_error(FAILURE_CODES.get(kind, 502), message)
        return (error if self.first else b",\r\n" + error) + b"]"


def _array_converter() -> Converter:
    made = _JsonArray()
    return Converter(made.start, made.feed, made.finish, made.fail)


def _collector() -> Collector:
    made = convert.Collector()
    return Collector(made.add, lambda: orjson.dumps(made.result()))


def _collect_failed(status: int, message: str, headers: bytes) -> HttpError:
    return HttpError(status, message, headers=headers)


# Streaming answers pass Google's events through (no keep-alive: the reference sends none); collected ones merge.
SSE_ANSWER = Answer(_sse_converter, _collector, _collect_failed, 0.0, b"", CT_SSE, CT_JSON, raw=True)
ARRAY_ANSWER = Answer(_array_converter, _collector, _collect_failed, 0.0, b"", CT_JSON, CT_JSON, raw=True)


def _stream_error(code: int, message: str) -> bytes:
    """An in-stream error in Google's shape (an SSE event, or the last element of the JSON array)."""
    return orjson.dumps({"error": {"code": code, "message": message, "status": "UNAVAILABLE"}})
