"""The OpenAI surface's plan: chat completions, legacy completions and Responses bodies → one chat plan, pure.

All three are checked (convert.checks), turned into a chat completions body (legacy prompts and Responses input
items are converted first), routed, and converted to the GenerateContentRequest (openai_chat.to_gemini). The
plan carries what the driver needs on the way back: the model names, the session, the request id and type,
and a reader for the answer's chunks. `outcome` makes it the driver's `Upstream`: the body builder per account,
the answer (chat chunks, legacy completions or Responses events, each streamed or collected) and, for a stored
Responses answer, the hook that keeps the conversation for `previous_response_id`.

Failures before the first byte are HTTP errors in OpenAI's shape (the surface's error table); after it they are
reported in-stream (an error chunk, or `response.failed`), because the client already holds part of the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agfast.convert import openai_chat as chat
from agfast.convert import openai_completions as completions
from agfast.convert import openai_responses as responses
from agfast.convert.checks import InvalidRequest, check_chat, check_completions, check_responses, require
from agfast.convert.gemini import drop_undefined, request_id_for
from agfast.convert.models import ModelSpec
from agfast.convert.outcomes import (
    BROKEN,
    GOOGLE,
    SHUTDOWN,
    Answer,
    Collector,
    Converter,
    Failure,
    Seat,
    Upstream,
    Wire,
)
from agfast.convert.signatures import SignatureCache

# Which body a route takes (the plan may turn a completions body that is really a Responses body into one).
CHAT, COMPLETIONS, RESPONSES = "chat", "completions", "responses"
# Headers clients use to name a conversation (Codex sends `session-id`), checked after `prompt_cache_key`.
SESSION_HEADERS = (b"session-id", b"x-session-id", b"conversation-id", b"x-conversation-id")
# The reference's OpenAI heartbeat: proxies and SDKs give up on streams silent for much longer.
KEEPALIVE_S = 15.0
# The ping comment while upstream is silent (Response's default).
PING = b": ping\n\n"


@dataclass(frozen=True, slots=True)
class Context:
    """What planning may ask of the running gateway: plain callables and values, no services."""

    route: Callable[[str], str]  # a client model name → the upstream model (raises for a name nothing knows)
    spec: Callable[[str], ModelSpec]  # what an upstream model can do
    signatures: SignatureCache
    history: Callable[[str], list[dict[str, Any]] | None]  # previous_response_id → the stored conversation
    kept: int  # how many stored responses are kept (named in the error for an unknown previous_response_id)
    keep: Callable[[str, list[dict[str, Any]]], None]  # store a Responses conversation under its response id
    wire: Wire


class Plan:
    """One OpenAI request planned: its kind, the chat body, where it goes and the request to send."""

    __slots__ = ("body", "chat", "ctx", "kind", "mapped", "model", "request_id", "responses", "stream", "upstream")

    def __init__(
        self,
        body: dict[str, Any],
        kind: str,
        model: str,
        chat_body: dict[str, Any],
        converted: responses.ResponsesPlan | None,
        mapped: str,
        upstream: chat.ChatPlan,
        ctx: Context,
    ) -> None:
        self.body = body  # the client's body as it came (Responses echo its settings)
        self.kind = kind
        self.model = model
        self.chat = chat_body
        self.responses = converted  # Responses only: the conversation to store, the free-form tools
        self.mapped = mapped
        self.upstream = upstream  # the GenerateContentRequest, session, request type, tool schemas
        self.ctx = ctx
        self.stream = body.get("stream") is True
        self.request_id = request_id_for(upstream.session, upstream.message_count)

    @property
    def session(self) -> str | None:
        return self.upstream.session

    def reader(self) -> chat.Reader:
        """A fresh reader for the answer's chunks (one per collector: a re-run after a break starts over)."""
        upstream = self.upstream
        return chat.Reader(self.ctx.signatures, self.mapped, upstream.session, upstream.schemas)

    def build(self, seat: Seat) -> bytes:
        """The v1internal body for one attempt's account."""
        upstream, wire = self.upstream, self.ctx.wire
        request = upstream.request
        request["sessionId"] = wire.account_session(seat.account_id)
        return wire.envelope(
            request,
            model=self.mapped,
            project=seat.project_id,
            request_id=self.request_id,
            request_type=upstream.request_type,
        )


def plan(body: dict[str, Any], headers: Mapping[bytes, bytes], ctx: Context, *, kind: str) -> Plan:
    """Check, convert and route one OpenAI body; a bad body raises InvalidRequest (a 400 naming the field)."""
    model = require(body, "model", str)
    if kind == COMPLETIONS and "prompt" not in body and ("input" in body or "instructions" in body):
        kind = RESPONSES  # the reference serves Responses bodies on /v1/completions too
    converted = None
    session = None
    if kind == CHAT:
        check_chat(body)
        chat_body = body
    elif kind == COMPLETIONS:
        require(body, "prompt", object)
        check_completions(body)
        chat_body = completions.to_chat(body)
        chat_body["stream"] = body.get("stream") is True
    else:
        check_responses(body)
        converted = responses.to_chat(body, _history(body, ctx))
        chat_body = converted.chat
        session = _session(body, headers)
    mapped = ctx.route(model)
    upstream = chat.to_gemini(chat_body, mapped, ctx.signatures, session=session, spec=ctx.spec(mapped))
    return Plan(body, kind, model, chat_body, converted, mapped, upstream, ctx)


def outcome(
    body: dict[str, Any], headers: Mapping[bytes, bytes], ctx: Context, *, kind: str, undefined: bool = False
) -> Upstream:
    """The route's plan as the driver runs it (`undefined`: the raw body held Cherry Studio "[undefined]"s)."""
    if undefined:
        body = drop_undefined(body)
    planned = plan(body, headers, ctx, kind=kind)
    answer, after = _responses(planned) if planned.kind == RESPONSES else (_chat(planned), None)
    return Upstream(GOOGLE, planned.mapped, planned.session, planned.build, answer, planned.stream, after=after)


def _chat(plan: Plan) -> Answer:
    """Chat completion chunks (or legacy completion chunks) while streaming, else the collected completion."""
    legacy = plan.kind == COMPLETIONS
    model = plan.model
    created = int(time.time())
    response_id = chat.completion_id("cmpl-" if legacy else "chatcmpl-")

    def converter() -> Converter:
        conv: completions.CompletionStream | chat.ChatStream
        if legacy:
            conv = completions.CompletionStream(plan.reader(), model=model, created=created, response_id=response_id)
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

    return Answer(converter, collector, _collect_failed, KEEPALIVE_S, PING)


def _responses(plan: Plan) -> tuple[Answer, Callable[[], None] | None]:
    """Responses events while streaming, else the collected response; and the hook that stores the conversation
    of a completed answer (unless the client said `store: false`)."""
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

    def store() -> None:
        assert builder is not None
        plan.ctx.keep(response_id, [*converted.conversation, builder.assistant_message()])

    answer = Answer(converter, collector, _collect_failed, KEEPALIVE_S, PING)
    return answer, (None if body.get("store") is False else store)


def _no_head() -> bytes:
    return b""


def _failure(message: str, kind: int) -> tuple[str, str]:
    """Why a stream stopped early, as (message, error type)."""
    if kind == SHUTDOWN:
        return message, "server_error"
    return (message if kind == BROKEN else f"upstream error {kind}: {message}"), "upstream_error"


def _chat_failure(message: str, kind: int) -> bytes:
    return chat.stream_error(*_failure(message, kind))


def _collect_failed(status: int, message: str) -> Failure:
    return status, message, "upstream_error"


def _history(body: dict[str, Any], ctx: Context) -> list[dict[str, Any]] | None:
    previous = body.get("previous_response_id")
    if previous is None:
        return None
    history = ctx.history(previous) if isinstance(previous, str) else None
    if history is None:
        raise InvalidRequest(
            f"Previous response with id '{previous}' not found (agfast keeps the last {ctx.kept} stored responses "
            "in memory).",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return history


def _session(body: dict[str, Any], headers: Mapping[bytes, bytes]) -> str | None:
    key = body.get("prompt_cache_key")
    if isinstance(key, str) and key:
        return "pck-" + key
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return "hdr-" + value.decode("latin-1")
    return None
