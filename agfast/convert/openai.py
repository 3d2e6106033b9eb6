"""The OpenAI surface's plan: chat completions, legacy completions and Responses bodies → one chat plan, pure.

All three are checked (convert.checks), turned into a chat completions body (legacy prompts and Responses input
items are converted first), routed, and converted to the GenerateContentRequest (openai_chat.to_gemini). The
plan carries what the driver needs on the way back: the model names, the session, the request id and type,
and a reader for the answer's chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agfast.convert import openai_chat as chat
from agfast.convert import openai_completions as completions
from agfast.convert import openai_responses as responses
from agfast.convert.checks import InvalidRequest, check_chat, check_completions, check_responses, require
from agfast.convert.gemini import request_id_for
from agfast.convert.models import ModelSpec
from agfast.convert.signatures import SignatureCache

# Which body a route takes (the plan may turn a completions body that is really a Responses body into one).
CHAT, COMPLETIONS, RESPONSES = "chat", "completions", "responses"
# Headers clients use to name a conversation (Codex sends `session-id`), checked after `prompt_cache_key`.
SESSION_HEADERS = (b"session-id", b"x-session-id", b"conversation-id", b"x-conversation-id")


@dataclass(frozen=True, slots=True)
class Context:
    """What planning may ask of the running gateway: plain callables and values, no services."""

    route: Callable[[str], str]  # a client model name → the upstream model (raises for a name nothing knows)
    spec: Callable[[str], ModelSpec]  # what an upstream model can do
    signatures: SignatureCache
    history: Callable[[str], list[dict[str, Any]] | None]  # previous_response_id → the stored conversation
    kept: int  # how many stored responses are kept (named in the error for an unknown previous_response_id)


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
