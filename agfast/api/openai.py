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
    upstream_headers,
)
from agfast.api.driver import Answer, Collector, Converter, Services, deliver, opened
from agfast.convert import openai as plans
from agfast.convert import openai_chat as chat
from agfast.convert import openai_completions as completions
from agfast.convert import openai_responses as responses
from agfast.convert.gemini import drop_undefined
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.record import RequestRecord
from agfast.upstream.client import envelope, fnv1a64_signed
from agfast.upstream.gateway import Stream

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
        model = plan.model
        created = int(time.time())
        response_id = chat.completion_id("cmpl-" if legacy else "chatcmpl-")

        def converter() -> Converter:
            conv: completions.CompletionStream | chat.ChatStream
            if legacy:
                conv = completions.CompletionStream(
                    plan.reader(), model=model, created=created, response_id=response_id
                )
            else:
                options = plan.chat.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                conv = chat.ChatStream(
                    plan.reader(), model=model, created=created, include_usage=include_usage, response_id=response_id
                )
            return Converter(_no_head, conv.feed, conv.finish, _chat_failure)

        def collector() -> Collector:
            fresh = plan.reader()
            made = completions.CompletionCollector(fresh) if legacy else chat.ChatCollector(fresh)
            return Collector(
                made.feed, lambda: orjson.dumps(made.result(model=model, created=created, response_id=response_id))
            )

        await self._deliver(req, resp, record, plan, Answer(converter, collector, _collect_failed, KEEPALIVE_S, PING))

    async def _answer_responses(self, req: Request, resp: Response, record: RequestRecord, plan: plans.Plan) -> None:
        body, model, converted = plan.body, plan.model, plan.responses
        assert converted is not None
        created = int(time.time())
        response_id = responses.new_id("resp_")
        builder: responses.ResponsesBuilder | None = None

        def fresh(stream: bool) -> responses.ResponsesBuilder:
            nonlocal builder
            builder = responses.ResponsesBuilder(
                plan.reader(),
                responses.response_object(body, response_id, model, created),
                custom=converted.custom,
                stream=stream,
                compaction=converted.compaction,
            )
            return builder

        def converter() -> Converter:
            made = fresh(True)
            return Converter(made.start, made.feed, made.finish, lambda m, k: made.fail(_failure(m, k)[0]))

        def collector() -> Collector:
            made = fresh(False)

            def result() -> bytes:
                made.finish()
                return orjson.dumps(made.response)

            return Collector(made.feed, result)

        answer = Answer(converter, collector, _collect_failed, KEEPALIVE_S, PING)
        if await self._deliver(req, resp, record, plan, answer) and body.get("store") is not False:
            assert builder is not None
            self.conversations.put(response_id, [*converted.conversation, builder.assistant_message()])

    async def _deliver(
        self, req: Request, resp: Response, record: RequestRecord, plan: plans.Plan, answer: Answer
    ) -> bool:
        stream = await self._open(req, record, plan)
        try:
            return await deliver(resp, stream, answer, plan.stream, upstream_headers(stream.lease.email, plan.mapped))
        finally:
            stream.close()


# The ping comment while upstream is silent (Response's default).
PING = b": ping\n\n"


def _no_head() -> bytes:
    return b""


def _failure(message: str, kind: int) -> tuple[str, str]:
    """Why a stream stopped early, as (message, error type)."""
    if kind == SHUTDOWN:
        return message, "server_error"
    return (message if kind == BROKEN else f"upstream error {kind}: {message}"), "upstream_error"


def _chat_failure(message: str, kind: int) -> bytes:
    return chat.stream_error(*_failure(message, kind))


def _collect_failed(status: int, message: str, headers: bytes) -> HttpError:
    return HttpError(status, message, error_type="upstream_error", headers=headers)
