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
from typing import Any

import orjson

from agfast.api.common import (
    BROKEN,
    GOOGLE_STATUS,
    SHUTDOWN,
    ErrorTable,
    Row,
    json_object,
    pump,
    upstream_headers,
)
from agfast.api.driver import Services, opened
from agfast.convert import openai as plans
from agfast.convert import openai_chat as chat
from agfast.convert import openai_completions as completions
from agfast.convert import openai_responses as responses
from agfast.convert.gemini import drop_undefined
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import CT_JSON, CT_SSE, Response
from agfast.record import RequestRecord
from agfast.upstream.client import envelope, fnv1a64_signed
from agfast.upstream.gateway import (
    STREAM_BREAKS,
    Stream,
    collect,
    stream_broke,
)

DONE = b"[DONE]"
# The reference's OpenAI heartbeat: proxies and SDKs give up on streams silent for much longer.
KEEPALIVE_S = 15.0
# Conversations kept for `previous_response_id`; a handful per active client, bounded against growth.
MAX_STORED_RESPONSES = 512


# A failed upstream exchange, in OpenAI's words.
ERRORS = ErrorTable(
    rejected=Row(GOOGLE_STATUS, error_type="upstream_error"),
    not_found=Row(404, "The model `{mapped}` is not available to any account. {detail}", code="model_not_found"),
    unreachable=Row(502, error_type="api_error", code="upstream_unreachable"),
    exhausted=Row(429, "All accounts exhausted. {detail}", code="rate_limit_exceeded"),
    no_account=Row(503),
)


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
    __slots__ = ("app", "conversations", "ctx")

    def __init__(self, app: Services) -> None:
        self.app = app
        self.conversations = Conversations()
        # What planning may ask of the app, bound once.
        conversations = self.conversations
        self.ctx = plans.Context(app.route, app.model_spec, app.signatures, conversations.get, conversations.limit)

    # -- shared steps --------------------------------------------------------------------------------------

    def _plan(self, req: Request, record: RequestRecord, kind: str) -> plans.Plan:
        """Parse and plan (convert.openai.plan: checks, conversion, routing)."""
        undefined = b'"[undefined]"' in req.body  # a Cherry Studio artefact
        body = json_object(req)
        if undefined:
            body = drop_undefined(body)
        if isinstance(model := body.get("model"), str):
            self.app.permit(req, model)
        try:
            plan = plans.plan(body, req.headers, self.ctx, kind=kind)
        except HttpError:  # the route's: the model was named, so the record names it
            record.model = body["model"]
            raise
        record.model = plan.model
        record.stream = plan.stream
        return plan

    async def _open(self, req: Request, record: RequestRecord, plan: plans.Plan) -> Stream:
        upstream = plan.upstream
        request, mapped, request_id, request_type = (
            upstream.request,
            plan.mapped,
            plan.request_id,
            upstream.request_type,
        )

        def build(lease: Any) -> bytes:
            request["sessionId"] = fnv1a64_signed(lease.account_id)
            return envelope(
                request, model=mapped, project=lease.project_id, request_id=request_id, request_type=request_type
            )

        stream = await self.app.gateway.open_stream(record, model=mapped, session_id=upstream.session, build=build)
        opened(req, record)
        return stream

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

    # -- routes: /v1/chat/completions, /v1/completions, /v1/responses (and /responses) ---------------------

    async def chat_completions(self, req: Request, resp: Response) -> None:
        await self.app.driver.run(Family.OPENAI, ERRORS, self._chat_completions, req, resp)

    async def completions(self, req: Request, resp: Response) -> None:
        await self.app.driver.run(Family.OPENAI, ERRORS, self._completions, req, resp)

    async def responses(self, req: Request, resp: Response) -> None:
        await self.app.driver.run(Family.OPENAI, ERRORS, self._responses, req, resp)

    async def _chat_completions(self, req: Request, resp: Response, record: RequestRecord) -> None:
        await self._serve(req, resp, record, self._plan(req, record, plans.CHAT))

    async def _completions(self, req: Request, resp: Response, record: RequestRecord) -> None:
        await self._serve(req, resp, record, self._plan(req, record, plans.COMPLETIONS))

    async def _responses(self, req: Request, resp: Response, record: RequestRecord) -> None:
        await self._serve(req, resp, record, self._plan(req, record, plans.RESPONSES))

    async def _serve(self, req: Request, resp: Response, record: RequestRecord, plan: plans.Plan) -> None:
        if plan.kind == plans.RESPONSES:
            await self._answer_responses(req, resp, record, plan)
        else:
            await self._answer_chat(req, resp, record, plan)

    async def _answer_chat(self, req: Request, resp: Response, record: RequestRecord, plan: plans.Plan) -> None:
        legacy = plan.kind == plans.COMPLETIONS
        model, mapped = plan.model, plan.mapped
        reader = plan.reader()
        stream = await self._open(req, record, plan)
        try:
            headers = upstream_headers(stream.lease.email, mapped)
            created = int(time.time())
            response_id = chat.completion_id("cmpl-" if legacy else "chatcmpl-")
            if plan.stream:
                self._start(resp, headers)
                conv: completions.CompletionStream | chat.ChatStream
                if legacy:
                    conv = completions.CompletionStream(reader, model=model, created=created, response_id=response_id)
                else:
                    options = plan.chat.get("stream_options")
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
                fresh = plan.reader()
                collector = completions.CompletionCollector(fresh) if legacy else chat.ChatCollector(fresh)
                return collector.feed

            await self._collect(stream, start, headers)
            assert collector is not None
            result = collector.result(model=model, created=created, response_id=response_id)
            resp.send(200, orjson.dumps(result), CT_JSON, headers)
        finally:
            stream.close()

    async def _answer_responses(self, req: Request, resp: Response, record: RequestRecord, plan: plans.Plan) -> None:
        body, model, mapped, converted = plan.body, plan.model, plan.mapped, plan.responses
        assert converted is not None
        streaming = plan.stream
        created = int(time.time())
        response_id = responses.new_id("resp_")
        builder = responses.ResponsesBuilder(
            plan.reader(),
            responses.response_object(body, response_id, model, created),
            custom=converted.custom,
            stream=streaming,
        )
        stream = await self._open(req, record, plan)
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
                    builder = responses.ResponsesBuilder(
                        plan.reader(),
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
