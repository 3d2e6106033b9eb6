"""OpenAI-compatible surface: /v1/chat/completions, /v1/completions, /v1/responses (and /responses).

Every request becomes one Gemini request (convert/openai_*.py), always streamed upstream through the
gateway's retrying `open_stream`; streaming clients get converted SSE as upstream events arrive (with
`: ping` comments while upstream is silent), others get the collected answer. Failures before the first
byte are HTTP errors in OpenAI's shape; after it they are reported in-stream (an error chunk, or
`response.failed`), because the client already holds part of the answer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from agfast.api import checks
from agfast.api.common import BROKEN, SHUTDOWN, json_object, pump, require, upstream_headers
from agfast.convert import openai_chat as chat
from agfast.convert import openai_completions as completions
from agfast.convert import openai_responses as responses
from agfast.convert.gemini import drop_undefined
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
    stream_broke,
)
from agfast.upstream.pool import NoAccountError

if TYPE_CHECKING:
    from agfast.app import App

DONE = b"[DONE]"
# The reference's OpenAI heartbeat: proxies and SDKs give up on streams silent for much longer.
KEEPALIVE_S = 15.0
# Conversations kept for `previous_response_id`; a handful per active client, bounded against growth.
MAX_STORED_RESPONSES = 512
# Headers clients use to name a conversation (Codex sends `session-id`), checked after `prompt_cache_key`.
SESSION_HEADERS = (b"session-id", b"x-session-id", b"conversation-id", b"x-conversation-id")


def failure(exc: Exception, mapped: str) -> HttpError:
    """The client-facing error for a failed upstream exchange, in OpenAI's shape."""
    head = upstream_headers(exc.email if isinstance(exc, UpstreamError | ExhaustedError) else "", mapped)
    if isinstance(exc, UpstreamError):
        return HttpError(exc.status, exc.message, error_type="upstream_error", headers=head)
    if isinstance(exc, ExhaustedError):
        if exc.not_found:
            message = f"The model `{mapped}` is not available to any account. {exc}"
            return HttpError(404, message, code="model_not_found", headers=head)
        if exc.unreachable:
            code = "upstream_unreachable"
            return HttpError(502, UNREACHABLE_MESSAGE, error_type="api_error", code=code, headers=head)
        return HttpError(429, f"All accounts exhausted. {exc}", code="rate_limit_exceeded", headers=head)
    if isinstance(exc, NoAccountError):
        if exc.retry_after:
            head += b"retry-after: %d\r\n" % max(1, round(exc.retry_after))
        return HttpError(503, str(exc), headers=head)
    raise exc


class Conversations:
    """`previous_response_id` → the conversation so far (chat messages), least recently used dropped first."""

    __slots__ = ("_data", "limit")

    def __init__(self, limit: int = MAX_STORED_RESPONSES) -> None:
        self._data: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.limit = limit

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        found = self._data.get(response_id)
        if found is not None:
            self._data.move_to_end(response_id)
        return found

    def put(self, response_id: str, messages: list[dict[str, Any]]) -> None:
        self._data[response_id] = messages
        while len(self._data) > self.limit:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


Feed = Callable[[dict[str, Any]], bytes]


class OpenAIApi:
    __slots__ = ("app", "conversations")

    def __init__(self, app: App) -> None:
        self.app = app
        self.conversations = Conversations()

    # -- shared steps --------------------------------------------------------------------------------------
    @staticmethod
    def _body(req: Request) -> dict[str, Any]:
        undefined = b'"[undefined]"' in req.body  # a Cherry Studio artefact
        body = json_object(req)
        return drop_undefined(body) if undefined else body

    def _plan(self, body: dict[str, Any], mapped: str, session: str | None = None) -> chat.ChatPlan:
        try:
            return chat.to_gemini(body, mapped, self.app.signatures, session=session, spec=self.app.model_spec(mapped))
        except chat.InvalidRequest as exc:
            raise HttpError(400, exc.message, param=exc.param) from None

    async def _open(self, req: Request, plan: chat.ChatPlan, mapped: str) -> Stream:
        request = plan.request
        request_id = chat.request_id_for(plan.session, plan.message_count)
        request_type = plan.request_type

        def build(lease: Any) -> bytes:
            request["sessionId"] = fnv1a64_signed(lease.account_id)
            return envelope(
                request, model=mapped, project=lease.project_id, request_id=request_id, request_type=request_type
            )

        try:
            return await self.app.gateway.open_stream(req, model=mapped, session_id=plan.session, build=build)
        except (UpstreamError, ExhaustedError, NoAccountError) as exc:
            raise failure(exc, mapped) from None

    @staticmethod
    async def _pump(resp: Response, stream: Stream, feed: Feed) -> tuple[str, str] | None:
        """Stream converted events to the client; returns why it stopped early (message, error type), or None."""
        failed = await pump(resp, stream, feed)
        if failed is None:
            return None
        status, message = failed
        if status == SHUTDOWN:
            return message, "server_error"
        return (message if status == BROKEN else f"upstream error {status}: {message}"), "upstream_error"

    @staticmethod
    async def _collect(stream: Stream, start: Callable[[], Feed], headers: bytes) -> None:
        """The whole upstream stream into a fresh collector (see gateway.collect); failures are HTTP errors."""

        def fail(status: int, message: str) -> Exception:
            return HttpError(status, message, error_type="upstream_error", headers=headers)

        try:
            await collect(stream, start, fail)
        except STREAM_BREAKS as exc:
            raise HttpError(502, stream_broke(exc), headers=headers) from None

    @staticmethod
    def _start(resp: Response, headers: bytes) -> None:
        resp.start(200, CT_SSE, headers)
        resp.keep_alive(KEEPALIVE_S)

    # -- /v1/chat/completions -----------------------------------------------------------------------------
    async def chat_completions(self, req: Request, resp: Response) -> None:
        body = self._body(req)
        model = require(body, "model", str)
        checks.check_chat(req, body)
        await self._chat(req, resp, body, model, legacy=False)

    async def _chat(self, req: Request, resp: Response, body: dict[str, Any], model: str, *, legacy: bool) -> None:
        req.model = model
        self.app.permit(req, model)
        mapped = self.app.route(model)
        plan = self._plan(body, mapped)
        reader = chat.Reader(self.app.signatures, mapped, plan.session, plan.schemas)
        stream = await self._open(req, plan, mapped)
        try:
            headers = upstream_headers(stream.lease.email, mapped)
            created = int(time.time())
            response_id = chat.completion_id("cmpl-" if legacy else "chatcmpl-")
            if body.get("stream") is True:
                self._start(resp, headers)
                conv: completions.CompletionStream | chat.ChatStream
                if legacy:
                    conv = completions.CompletionStream(reader, model=model, created=created, response_id=response_id)
                else:
                    options = body.get("stream_options")
                    include_usage = isinstance(options, dict) and options.get("include_usage") is True
                    conv = chat.ChatStream(
                        reader, model=model, created=created, include_usage=include_usage, response_id=response_id
                    )
                error = await self._pump(resp, stream, conv.feed)
                resp.end(chat.stream_error(*error) if error else conv.finish())
                return
            collector: completions.CompletionCollector | chat.ChatCollector | None = None

            def start() -> Feed:
                nonlocal collector
                fresh = chat.Reader(self.app.signatures, mapped, plan.session, plan.schemas)
                collector = completions.CompletionCollector(fresh) if legacy else chat.ChatCollector(fresh)
                return collector.feed

            await self._collect(stream, start, headers)
            assert collector is not None
            result = collector.result(model=model, created=created, response_id=response_id)
            resp.send(200, orjson.dumps(result), CT_JSON, headers)
        finally:
            stream.close()

    # -- /v1/completions ----------------------------------------------------------------------------------
    async def completions(self, req: Request, resp: Response) -> None:
        body = self._body(req)
        model = require(body, "model", str)
        if "prompt" not in body and ("input" in body or "instructions" in body):
            await self._responses(req, resp, body, model)  # the reference serves Responses bodies here too
            return
        require(body, "prompt", object)
        checks.check_completions(req, body)
        try:
            converted = completions.to_chat(body)
        except chat.InvalidRequest as exc:
            raise HttpError(400, exc.message, param=exc.param) from None
        converted["stream"] = body.get("stream") is True
        await self._chat(req, resp, converted, model, legacy=True)

    # -- /v1/responses ------------------------------------------------------------------------------------
    async def responses(self, req: Request, resp: Response) -> None:
        body = self._body(req)
        model = require(body, "model", str)
        await self._responses(req, resp, body, model)

    @staticmethod
    def _session(req: Request, body: dict[str, Any]) -> str | None:
        key = body.get("prompt_cache_key")
        if isinstance(key, str) and key:
            return "pck-" + key
        for name in SESSION_HEADERS:
            value = req.headers.get(name)
            if value:
                return "hdr-" + value.decode("latin-1")
        return None

    async def _responses(self, req: Request, resp: Response, body: dict[str, Any], model: str) -> None:
        checks.check_responses(req, body)
        previous = body.get("previous_response_id")
        history = None
        if previous is not None:
            history = self.conversations.get(previous) if isinstance(previous, str) else None
            if history is None:
                raise HttpError(
                    400,
                    f"Previous response with id '{previous}' not found (agfast keeps the last "
                    f"{self.conversations.limit} stored responses in memory).",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
        try:
            converted = responses.to_chat(body, history)
        except chat.InvalidRequest as exc:
            raise HttpError(400, exc.message, param=exc.param) from None
        req.model = model
        self.app.permit(req, model)
        mapped = self.app.route(model)
        plan = self._plan(converted.chat, mapped, self._session(req, body))
        reader = chat.Reader(self.app.signatures, mapped, plan.session, plan.schemas)
        streaming = body.get("stream") is True
        created = int(time.time())
        response_id = responses.new_id("resp_")
        builder = responses.ResponsesBuilder(
            reader,
            responses.response_object(body, response_id, model, created),
            custom=converted.custom,
            stream=streaming,
        )
        stream = await self._open(req, plan, mapped)
        try:
            headers = upstream_headers(stream.lease.email, mapped)
            if streaming:
                self._start(resp, headers)
                resp.write(builder.start())
                error = await self._pump(resp, stream, builder.feed)
                resp.end(builder.fail(error[0]) if error else builder.finish())
                if error:
                    return
            else:

                def start() -> Feed:
                    nonlocal builder
                    fresh = chat.Reader(self.app.signatures, mapped, plan.session, plan.schemas)
                    builder = responses.ResponsesBuilder(
                        fresh,
                        responses.response_object(body, response_id, model, created),
                        custom=converted.custom,
                        stream=False,
                    )
                    return builder.feed

                await self._collect(stream, start, headers)
                builder.finish()
                resp.send(200, orjson.dumps(builder.response), CT_JSON, headers)
        finally:
            stream.close()
        if body.get("store") is not False:
            self.conversations.put(response_id, [*converted.conversation, builder.assistant_message()])
