"""Anthropic-compatible surface: /v1/messages and /v1/messages/count_tokens (reference §6.5–6.8, §9).

A request goes through §6.5's pre-processing in order (body check, thinking hints, z.ai decision,
`cache_control` removal, system lifting, merging, thinking filter, warmup, background routing), becomes a
GenerateContentRequest and is always streamed upstream. Streaming clients get Anthropic SSE as each upstream
chunk arrives; others get the collected message. Errors before the first byte are Anthropic error bodies
with the right status and type; after it, an in-stream `error` event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from agfast.api.common import BROKEN, SHUTDOWN, json_object, pump, require, upstream_headers
from agfast.api.zai import ZaiDispatcher
from agfast.convert import anthropic as convert
from agfast.convert.anthropic_stream import PING, MessageCollector, StreamConverter, warmup_events, warmup_message
from agfast.http.errors import HttpError
from agfast.http.protocol import Request
from agfast.http.response import CT_JSON, CT_SSE, Response
from agfast.upstream.client import envelope, fnv1a64_signed
from agfast.upstream.gateway import (
    STREAM_BREAKS,
    UNREACHABLE_MESSAGE,
    ExhaustedError,
    Stream,
    UpstreamError,
    collect,
    google_message,
    stream_broke,
)
from agfast.upstream.pool import Lease, NoAccountError

if TYPE_CHECKING:
    from agfast.app import App

DONE = b"[DONE]"
SESSION_HEADER = b"x-claude-code-session-id"
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
# requestId carries this much of the session id (reference §5.3).
REQUEST_ID_SESSION_CHARS = 8


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


def failure(exc: Exception, mapped: str) -> HttpError:
    """The client-facing error for a failed upstream exchange, in Anthropic's shape (reference §6.6)."""
    if isinstance(exc, UpstreamError):
        message = _upstream_text(exc.message)
        head = upstream_headers(exc.email, mapped)
        if exc.status == 400 and convert.is_too_long(message):
            # Claude Code compacts the conversation when it sees Anthropic's "prompt is too long".
            return HttpError(400, f"prompt is too long: {message}", error_type="invalid_request_error", headers=head)
        status = ACCOUNT_FAULT_STATUS.get(exc.status, exc.status)
        return HttpError(status, message, headers=head)
    if isinstance(exc, ExhaustedError):
        if exc.unreachable:
            head = upstream_headers(exc.email, mapped)
            return HttpError(502, UNREACHABLE_MESSAGE, error_type="api_error", headers=head)
        status = ACCOUNT_FAULT_STATUS.get(exc.status, exc.status)
        return HttpError(status, str(exc), headers=upstream_headers(exc.email, mapped))
    if isinstance(exc, NoAccountError):
        head = upstream_headers("", mapped)
        if exc.retry_after:
            head += b"retry-after: %d\r\n" % max(1, int(exc.retry_after + 0.999))
        return HttpError(503, str(exc), error_type="overloaded_error", headers=head)
    raise exc


class _Prepared:
    """A request after pre-processing: what to send where, and how to rebuild it after a signature error."""

    __slots__ = ("body", "conversion", "lifted", "mapped", "messages", "session", "thinking", "tools")

    def __init__(
        self,
        body: dict[str, Any],
        messages: list[dict[str, Any]],
        lifted: list[str],
        mapped: str,
        thinking: convert.Thinking,
        session: str,
        tools: bool,
    ) -> None:
        self.body = body
        self.messages = messages
        self.lifted = lifted
        self.mapped = mapped
        self.thinking = thinking
        self.session = session
        self.tools = tools
        self.conversion: convert.Conversion | None = None

    def build_request(self, app: App, *, thinking_as_text: bool = False) -> convert.Conversion:
        self.conversion = convert.to_gemini(
            self.body,
            self.messages,
            self.lifted,
            model=self.mapped,
            thinking=self.thinking,
            spec=app.model_spec(self.mapped),
            signatures=app.signatures,
            session=self.session,
            tools=self.tools,
            thinking_as_text=thinking_as_text,
        )
        return self.conversion


class AnthropicApi:
    __slots__ = ("app", "zai")

    def __init__(self, app: App) -> None:
        self.app = app
        self.zai = ZaiDispatcher(app)

    # -- pre-processing (§6.5 steps 1–8) ---------------------------------------------------------------------

    def _body(self, req: Request, *, need_max_tokens: bool) -> dict[str, Any]:
        cached = b"cache_control" in req.body
        body = json_object(req)
        require(body, "model", str)
        require(body, "messages", list)
        if need_max_tokens:
            require(body, "max_tokens", int)
        problem = convert.check_body(body, need_max_tokens=need_max_tokens)
        if problem is not None:
            raise HttpError(400, problem.message, param=problem.field)
        if cached:
            body = convert.strip_cache_control(body)
        return body

    def _route(self, body: dict[str, Any], thinking: convert.Thinking) -> str:
        """The upstream model, or "" when no account or table knows the client's name."""
        mapped = self.app.lookup(body["model"])
        if mapped is None:
            return ""
        if not mapped.startswith("gemini") and convert.web_search_only(body.get("tools")):
            return self.app.lookup(convert.SEARCH_MODEL) or mapped
        if thinking.wanted and "claude" in mapped and "thinking" not in mapped:
            # A Claude model asked to think goes to its thinking variant when the pool has one.
            variant = mapped + "-thinking"
            if variant in self.app.pool.available_models():
                return variant
        return mapped

    async def _unknown_model(self, req: Request, resp: Response, prepared: _Prepared, path: str) -> None:
        """A name Google's side does not know: z.ai (when configured, it may serve it), else a 404."""
        if self.zai.mode != "off":
            await self.zai.forward(req, resp, self._zai_body(prepared), path)
            return
        raise self.app.unknown_model(prepared.body["model"])

    def _prepare(self, req: Request, body: dict[str, Any]) -> tuple[_Prepared, bool]:
        """(the prepared request, whether it is a warmup probe)."""
        req.model = body["model"]
        self.app.permit(req, req.model)
        thinking = convert.thinking_request(body)
        messages, lifted = convert.lift_system(body["messages"])
        messages = convert.merge_consecutive(messages)
        mapped = self._route(body, thinking)
        if mapped:
            messages = convert.filter_thinking(messages, mapped, self.app.signatures)
        header = req.headers.get(SESSION_HEADER)
        session = convert.session_key(body, header.decode("latin-1") if header else None)
        prepared = _Prepared(body, messages, lifted, mapped, thinking, session, tools=True)
        return prepared, convert.is_warmup(messages)

    def _background(self, prepared: _Prepared) -> None:
        texts = [*convert.system_texts(prepared.body.get("system")), *prepared.lifted]
        if convert.is_background_task(prepared.messages, texts):
            prepared.mapped = self.app.lookup(convert.BACKGROUND_MODEL) or prepared.mapped
            prepared.messages = convert.purge_thinking(prepared.messages)
            prepared.thinking = convert.Thinking("disabled")
            prepared.tools = False

    def _zai_body(self, prepared: _Prepared) -> dict[str, Any]:
        body = {k: v for k, v in prepared.body.items() if k != "output_config"}
        body["messages"] = prepared.messages
        if prepared.lifted:
            system = prepared.body.get("system")
            blocks: list[Any] = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or ())
            blocks.extend({"type": "text", "text": text} for text in prepared.lifted)
            body["system"] = blocks
        return body

    # -- /v1/messages ------------------------------------------------------------------------------------------

    async def messages(self, req: Request, resp: Response) -> None:
        body = self._body(req, need_max_tokens=True)
        prepared, warmup = self._prepare(req, body)
        streaming = body.get("stream") is True
        if warmup:
            head = WARMUP_HEADERS + upstream_headers("", prepared.mapped)
            if streaming:
                resp.start(200, CT_SSE, head)
                resp.end(warmup_events(body["model"]))
            else:
                resp.send(200, orjson.dumps(warmup_message(body["model"])), CT_JSON, head)
            return
        if self.zai.take_turn():
            await self.zai.forward(req, resp, self._zai_body(prepared), "/v1/messages")
            return
        if not prepared.mapped:
            await self._unknown_model(req, resp, prepared, "/v1/messages")
            return
        self._background(prepared)
        try:
            conversion = prepared.build_request(self.app)
        except convert.ConversionError as exc:
            raise HttpError(400, str(exc), param=exc.field) from None
        mapped = prepared.mapped
        request_id = f"agent/antigravity/{prepared.session[:REQUEST_ID_SESSION_CHARS]}/{len(body['messages'])}"
        current = [conversion.request]

        def build(lease: Lease) -> bytes:
            request = current[0]
            request["sessionId"] = fnv1a64_signed(lease.account_id)
            return envelope(request, model=mapped, project=lease.project_id, request_id=request_id)

        def recover(status: int, raw: bytes) -> bool:
            # §6.6: a 400 about thinking signatures is fixed by resending the history without signed
            # thinking — once (the reference's "only once" flag was never set, so it looped).
            if status != 400 or not convert.is_signature_error(raw):
                return False
            current[0] = prepared.build_request(self.app, thinking_as_text=True).request
            return True

        try:
            stream = await self.app.gateway.open_stream(
                req, model=mapped, session_id=prepared.session, build=build, recover=recover
            )
        except (NoAccountError, ExhaustedError) as exc:
            if self.zai.falls_back:
                await self.zai.forward(req, resp, self._zai_body(prepared), "/v1/messages")
                return
            raise failure(exc, mapped) from None
        except UpstreamError as exc:
            raise failure(exc, mapped) from None
        try:
            headers = upstream_headers(stream.lease.email, mapped)
            options = {"omit_thinking": prepared.thinking.omit}
            if streaming:
                converter = StreamConverter(body["model"], mapped, self.app.signatures, prepared.session, **options)
                await self._stream(resp, stream, converter, headers)
            else:
                await self._collect(
                    resp,
                    stream,
                    lambda: MessageCollector(body["model"], mapped, self.app.signatures, prepared.session, **options),
                    headers,
                )
        finally:
            stream.close()

    async def _stream(self, resp: Response, stream: Stream, converter: StreamConverter, headers: bytes) -> None:
        resp.start(200, CT_SSE, headers)
        resp.keep_alive(PING_EVERY, PING)
        failed = await pump(resp, stream, converter.feed)
        if failed is None:
            resp.end(converter.finish())
        elif failed[0] == BROKEN:
            resp.end(converter.error(failed[1], "api_error"))
        elif failed[0] == SHUTDOWN:
            resp.end(converter.error(failed[1], "overloaded_error"))
        else:
            resp.end(converter.error(*_stream_error({"error": {"code": failed[0], "message": failed[1]}})))

    async def _collect(
        self, resp: Response, stream: Stream, start: Callable[[], MessageCollector], headers: bytes
    ) -> None:
        """Collect for a non-streaming client (see gateway.collect: one re-run after a mid-stream break)."""
        made: list[MessageCollector] = []

        def fresh() -> Callable[[dict[str, Any]], object]:
            made.append(start())
            return made[-1].add

        def fail(status: int, message: str) -> Exception:
            text, error_type = _stream_error({"error": {"code": status, "message": message}})
            return HttpError(502, text, error_type=error_type, headers=headers)

        try:
            await collect(stream, fresh, fail)
        except STREAM_BREAKS as exc:
            raise HttpError(502, stream_broke(exc), headers=headers) from None
        resp.send(200, orjson.dumps(made[-1].result()), CT_JSON, headers)

    # -- /v1/messages/count_tokens -------------------------------------------------------------------------------

    async def count_tokens(self, req: Request, resp: Response) -> None:
        body = self._body(req, need_max_tokens=False)
        prepared, _ = self._prepare(req, body)
        if self.zai.mode == "exclusive":
            await self.zai.forward(req, resp, self._zai_body(prepared), "/v1/messages/count_tokens")
            return
        if not prepared.mapped:
            await self._unknown_model(req, resp, prepared, "/v1/messages/count_tokens")
            return
        try:
            conversion = prepared.build_request(self.app)
        except convert.ConversionError as exc:
            raise HttpError(400, str(exc), param=exc.field) from None
        mapped = prepared.mapped
        payload = orjson.dumps({"request": convert.count_request(conversion, mapped)})
        try:
            raw, lease = await self.app.gateway.call(
                req, method="countTokens", model=mapped, session_id=prepared.session, build=lambda lease: payload
            )
            doc = orjson.loads(raw)
            inner = doc.get("response", doc) if isinstance(doc, dict) else {}
            total = inner.get("totalTokens") if isinstance(inner, dict) else None
        except (UpstreamError, ExhaustedError, NoAccountError, orjson.JSONDecodeError):
            total, lease = None, None
        if isinstance(total, int) and total > 0 and lease is not None:
            resp.send(200, orjson.dumps({"input_tokens": total}), CT_JSON, upstream_headers(lease.email, mapped))
            return
        # countTokens failed: a local estimate, flagged, rather than the reference's zeros.
        estimate = convert.estimate_tokens(conversion.request)
        resp.send(
            200, orjson.dumps({"input_tokens": estimate}), CT_JSON, ESTIMATE_HEADER + upstream_headers("", mapped)
        )


def _stream_error(inner: dict[str, Any]) -> tuple[str, str]:
    err = inner.get("error")
    err = err if isinstance(err, dict) else {}
    code = err.get("code")
    message = _upstream_text(str(err.get("message") or google_message(orjson.dumps(inner))))
    return message, STREAM_ERROR_TYPES.get(code if isinstance(code, int) else 500, "api_error")
