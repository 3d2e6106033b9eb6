"""Gemini-native surface (`/v1beta/models/…`, and `/v1/models/{m}:{action}` for google-genai 3.x).

The request is a GenerateContentRequest already: it is adapted for v1internal, wrapped in the envelope and
always streamed upstream; streaming clients get each event unwrapped (`{"response": x}` → `x`), others get
the collected response. Errors use Google's shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from agfast import sse
from agfast.api.common import GOOGLE_STATUS, ErrorTable, Row, json_object, shutdown_cut, upstream_headers
from agfast.api.driver import Services, opened
from agfast.convert import gemini as convert
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import SHUTDOWN_MESSAGE, Response
from agfast.record import RequestRecord
from agfast.upstream.client import envelope, fnv1a64_signed, gemini_request_id
from agfast.upstream.gateway import (
    STREAM_BREAKS,
    Stream,
    collect,
    google_message,
    parse_event,
    stream_broke,
)
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
            if plan.stream:
                await self._stream(req, resp, stream, headers)
            else:
                await self._collect(resp, stream, headers)
        finally:
            stream.close()

    async def _stream(self, req: Request, resp: Response, stream: Stream, headers: bytes) -> None:
        sse_out = b"alt=sse" in req.query
        if stream.trace_id:
            # The reference sends the trace id as a synthetic first event; SDKs turn that into an empty
            # chunk, so it travels as a header instead.
            headers += b"x-cloudaicompanion-trace-id: " + stream.trace_id.encode() + b"\r\n"
        if sse_out:
            resp.start(200, b"text/event-stream", headers)
        else:
            # Without alt=sse Google streams one JSON array; SDKs that ask for it parse it incrementally.
            resp.start(200, b"application/json", headers)
            resp.write(b"[")
        unwrap = sse.unwrap_response
        frame = sse.frame_event
        first = True
        error = b""
        try:
            async for batch in stream.batches():
                if sse_out:
                    out = b"".join([frame(unwrap(data)) for data in batch if data != DONE])
                else:
                    parts = []
                    for data in batch:
                        if data != DONE:
                            parts.append(unwrap(data) if first else b",\r\n" + unwrap(data))
                            first = False
                    out = b"".join(parts)
                # The event carrying finishReason is the last one Google sends: it can leave with the end.
                if batch and b'"finishReason"' in batch[-1]:
                    # It also carries the final usageMetadata: the one event parsed here, for the token counts.
                    last, _ = parse_event(batch[-1])
                    if last is not None:
                        stream.note(last)
                    resp.defer(out)
                    continue
                resp.write(out)
                if resp.paused:
                    await resp.drain()
        except STREAM_BREAKS as exc:
            # Past the first byte nothing can be retried: the client learns in-stream why its answer stopped.
            error = _stream_error(502, stream_broke(exc))
        except asyncio.CancelledError:
            if not shutdown_cut(resp):
                raise
            error = _stream_error(503, SHUTDOWN_MESSAGE)
        if error:
            if stream.record is not None:
                stream.record.error = google_message(error)
            resp.write(frame(error) if sse_out else (b",\r\n" if not first else b"") + error)
        if not sse_out:
            resp.write(b"]")
        resp.end()

    async def _collect(self, resp: Response, stream: Stream, headers: bytes) -> None:
        """Merge the stream for a non-streaming client (see gateway.collect: one re-run after a mid-stream
        break); a second break is a 502 in Google's shape."""
        made: list[convert.Collector] = []

        def fresh() -> Callable[[dict[str, Any]], object]:
            made.append(convert.Collector())
            return made[-1].add

        def fail(status: int, message: str) -> Exception:
            return HttpError(status, message, headers=headers)

        try:
            await collect(stream, fresh, fail)
        except STREAM_BREAKS as exc:
            raise HttpError(502, stream_broke(exc), headers=headers) from None
        resp.send(200, orjson.dumps(made[-1].result()), b"application/json", headers)

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


def _stream_error(code: int, message: str) -> bytes:
    """An in-stream error in Google's shape (an SSE event, or the last element of the JSON array)."""
    return orjson.dumps({"error": {"code": code, "message": message, "status": "UNAVAILABLE"}})
