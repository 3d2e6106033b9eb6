"""Gemini-native surface (`/v1beta/models/…`, and `/v1/models/{m}:{action}` for google-genai 3.x).

The request is a GenerateContentRequest already: it is adapted for v1internal, wrapped in the envelope and
always streamed upstream; streaming clients get each event unwrapped (`{"response": x}` → `x`), others get
the collected response. Errors use Google's shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from agfast import sse
from agfast.api.checks import check_gemini
from agfast.api.common import json_object, shutdown_cut, upstream_headers
from agfast.convert import gemini as convert
from agfast.http.errors import HttpError
from agfast.http.protocol import Request
from agfast.http.response import SHUTDOWN_MESSAGE, Response
from agfast.upstream.client import envelope, fnv1a64_signed, gemini_request_id
from agfast.upstream.gateway import (
    STREAM_BREAKS,
    UNREACHABLE_MESSAGE,
    ExhaustedError,
    Stream,
    UpstreamError,
    collect,
    stream_broke,
)
from agfast.upstream.pool import Lease, NoAccountError

if TYPE_CHECKING:
    from agfast.app import App

DONE = b"[DONE]"
# Model lists report this context window for a model Google did not describe (no account listed it yet).
DEFAULT_INPUT_TOKEN_LIMIT = 128000
GENERATION_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


def failure(exc: Exception, mapped: str) -> HttpError:
    """The client-facing error for a failed upstream exchange, in Google's shape."""
    head = upstream_headers(exc.email if isinstance(exc, UpstreamError | ExhaustedError) else "", mapped)
    if isinstance(exc, UpstreamError):
        return HttpError(exc.status, exc.message, error_type="UPSTREAM_ERROR", headers=head)
    if isinstance(exc, ExhaustedError):
        if exc.not_found:
            return HttpError(404, f"Model {mapped} is not available to any account. {exc}", headers=head)
        if exc.unreachable:
            return HttpError(502, UNREACHABLE_MESSAGE, headers=head)
        return HttpError(429, f"All accounts exhausted. {exc}", headers=head)
    if isinstance(exc, NoAccountError):
        return HttpError(503, str(exc), headers=head)
    raise exc


class GeminiApi:
    __slots__ = ("app",)

    def __init__(self, app: App) -> None:
        self.app = app

    def _mapped(self, req: Request, model: str) -> str:
        self.app.permit(req, model)
        return self.app.route(model)

    async def generate(self, req: Request, resp: Response) -> None:
        undefined = b'"[undefined]"' in req.body
        body = json_object(req)
        check_gemini(req, body)
        contents = body["contents"]
        model = req.model
        mapped = self._mapped(req, model)
        session_id = convert.session_id_from_contents(contents)

        request = convert.native_request(body, mapped, "", clean=undefined, spec=self.app.model_spec(mapped))

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

        try:
            stream = await self.app.gemini_gateway.open_stream(req, model=mapped, session_id=session_id, build=build)
        except (UpstreamError, ExhaustedError, NoAccountError) as exc:
            raise failure(exc, mapped) from None
        try:
            headers = upstream_headers(stream.lease.email, mapped)
            if req.action == "streamGenerateContent":
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
        body = json_object(req)
        check_gemini(req, body, count=True)
        mapped = self._mapped(req, req.model)
        request = convert.count_request(body, mapped)
        payload = orjson.dumps({"request": request})
        try:
            raw, lease = await self.app.gemini_gateway.call(
                req, method="countTokens", model=mapped, session_id=None, build=lambda lease: payload
            )
        except (UpstreamError, ExhaustedError, NoAccountError) as exc:
            raise failure(exc, mapped) from None
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
        name = req.model
        resp.send(200, orjson.dumps(self._model_doc(name, self.app.route(name))))


def _stream_error(code: int, message: str) -> bytes:
    """An in-stream error in Google's shape (an SSE event, or the last element of the JSON array)."""
    return orjson.dumps({"error": {"code": code, "message": message, "status": "UNAVAILABLE"}})
