"""Gemini-native requests ↔ v1internal (reference §6.9): pure functions over dicts, no IO.

A Gemini client already speaks GenerateContentRequest; what changes on the way up is what v1internal needs
(tool schemas it accepts, a numeric thinking budget, the Antigravity identity, VALIDATED tool calling, a
session id) and on the way down only the `{"response": …}` wrapper goes. `Collector` folds a stream into the
one response a non-streaming client expects. `outcome` is the route's plan as the driver runs it: the
body builder per account and the answer (Google's events passed through as SSE or as one JSON array), or a
countTokens call.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agfast import sse
from agfast.convert import outcomes
from agfast.convert.checks import check_gemini
from agfast.convert.models import ModelSpec, model_spec
from agfast.convert.outcomes import (
    BROKEN,
    GEMINI,
    JSON,
    SHUTDOWN,
    SSE,
    Answer,
    Converter,
    Count,
    Failure,
    Outcome,
    Seat,
    Upstream,
    Wire,
)
from agfast.convert.schema import clean_schema

IDENTITY = (
    "You are Antigravity, a powerful agentic AI coding assistant designed by the Google Deepmind team working "
    "on Advanced Agentic Coding."
)
# What marks a system prompt that already carries the identity (its opening words).
IDENTITY_MARK = IDENTITY[:24]
# thinkingLevel → budget (reference §6.5 step 2, the values Antigravity uses for OpenCode hints).
LEVEL_BUDGETS = {"minimal": 1024, "low": 8192, "medium": 16384, "high": 24576}
# requestId carries this much of the session id (reference §5.3).
REQUEST_ID_SESSION_CHARS = 8
# Answer room above the thinking budget when the client's maxOutputTokens would not leave any.
ANSWER_HEADROOM = 8192
# Session ids remembered by their text: a conversation sends the same first user text with every turn, and a
# sha256 through OpenSSL 3 costs more than the rest of finding it. Texts up to SESSION_MEMO_TEXT characters are
# kept, SESSION_MEMO of them (least recently used go first): a few MiB at most.
SESSION_MEMO = 1024
SESSION_MEMO_TEXT = 2048
SAFETY_OFF = [
    {"category": c, "threshold": "OFF"}
    for c in (
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
    )
]
VALIDATED = {"functionCallingConfig": {"mode": "VALIDATED"}}
UNDEFINED = "[undefined]"
# Fields of a GenerateContentRequest that travel upstream (in this order: stable prefixes help caching).
REQUEST_ORDER = ("systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "sessionId")
COUNT_FIELDS = ("contents", "systemInstruction", "tools", "generationConfig")
# The envelope's extra field on the Gemini path (the reference's credits opt-in).
CREDIT_TYPES = {"enabledCreditTypes": ["GOOGLE_ONE_AI"]}


def drop_undefined(value: Any) -> Any:
    """Remove `"[undefined]"` strings (a Cherry Studio artefact) from dicts and lists, deeply."""
    if isinstance(value, dict):
        return {k: drop_undefined(v) for k, v in value.items() if v != UNDEFINED}
    if isinstance(value, list):
        return [drop_undefined(v) for v in value if v != UNDEFINED]
    return value


def session_id_from_contents(contents: list[Any]) -> str | None:
    """Stickiness key: the conversation's first user text of > 10 chars (reference §4.8, OpenAI/Gemini)."""
    for content in contents:
        if not isinstance(content, dict) or content.get("role", "user") != "user":
            continue
        for part in content.get("parts") or ():
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and len(text.strip()) > 10:
                return session_hash(text)
    return None


def session_hash(text: str) -> str:
    """`sid-` + the first 16 hex digits of the text's sha256: the reference's stickiness key for a text."""
    return _remembered_hash(text) if len(text) <= SESSION_MEMO_TEXT else _hash(text)


def _hash(text: str) -> str:
    return "sid-" + hashlib.sha256(text.encode()).hexdigest()[:16]


_remembered_hash = functools.lru_cache(maxsize=SESSION_MEMO)(_hash)


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    if not isinstance(tools, list):
        return None
    out: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        tool = dict(tool)
        decls = tool.get("functionDeclarations", tool.pop("function_declarations", None))
        if isinstance(decls, list):
            cleaned = []
            for decl in decls:
                if not isinstance(decl, dict):
                    continue
                decl = dict(decl)
                schema = decl.pop("parametersJsonSchema", None)
                if schema is None:
                    schema = decl.pop("parameters", None)
                if schema is not None:
                    decl["parameters"] = clean_schema(schema)
                cleaned.append(decl)
            tool["functionDeclarations"] = cleaned
        out.append(tool)
    return out


def generation_config(config: Any, model: str, spec: ModelSpec | None = None) -> dict[str, Any]:
    """The client's generationConfig within `model`'s limits (`spec`: what it can do, else the static table)."""
    gen = dict(config) if isinstance(config, dict) else {}
    spec = spec or model_spec(model)
    thinking = gen.get("thinkingConfig")
    if isinstance(thinking, dict):
        thinking = dict(thinking)
        level = thinking.pop("thinkingLevel", None)
        if isinstance(level, str) and "thinkingBudget" not in thinking:
            thinking["thinkingBudget"] = LEVEL_BUDGETS.get(level.lower(), LEVEL_BUDGETS["high"])
        budget = thinking.get("thinkingBudget")
        if isinstance(budget, int) and spec.thinking_budget and budget > spec.thinking_budget:
            thinking["thinkingBudget"] = budget = spec.thinking_budget
        if isinstance(budget, int) and budget > 0:
            limit = gen.get("maxOutputTokens")
            if isinstance(limit, int) and limit <= budget:
                gen["maxOutputTokens"] = min(budget + ANSWER_HEADROOM, spec.max_output_tokens)
        gen["thinkingConfig"] = thinking
    limit = gen.get("maxOutputTokens")
    if isinstance(limit, int) and limit > spec.max_output_tokens:
        gen["maxOutputTokens"] = spec.max_output_tokens
    gen.setdefault("topK", 40)
    gen.setdefault("topP", 1.0)
    return gen


def system_instruction(system: Any) -> dict[str, Any]:
    parts: list[Any] = []
    if isinstance(system, dict):
        parts = [p for p in system.get("parts") or () if isinstance(p, dict)]
    elif isinstance(system, str):
        parts = [{"text": system}]
    return with_identity(parts)


def with_identity(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The systemInstruction of these parts, Antigravity's identity first unless a part already says it."""
    for part in parts:
        text = part.get("text", "")
        if IDENTITY_MARK in (text if type(text) is str else str(text)):
            return {"role": "user", "parts": parts}
    return {"role": "user", "parts": [{"text": IDENTITY}, *parts]}


def native_request(
    body: dict[str, Any], model: str, session_id: str, *, clean: bool = True, spec: ModelSpec | None = None
) -> dict[str, Any]:
    """A client's GenerateContentRequest, made acceptable to v1internal for `model`.

    `clean=False` skips the deep `[undefined]` sweep when the caller saw no such string in the raw bytes.
    """
    if clean:
        body = drop_undefined(body)
    request: dict[str, Any] = {
        "systemInstruction": system_instruction(body.get("systemInstruction", body.get("system_instruction")))
    }
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        tool_config = body.get("toolConfig", body.get("tool_config"))
        request["toolConfig"] = tool_config if isinstance(tool_config, dict) else VALIDATED
    config = body.get("generationConfig", body.get("generation_config"))
    request["generationConfig"] = generation_config(config, model, spec)
    safety = body.get("safetySettings", body.get("safety_settings"))
    request["safetySettings"] = safety if isinstance(safety, list) else SAFETY_OFF
    request["sessionId"] = session_id
    request["contents"] = body.get("contents")
    if "cachedContent" in body:
        request["cachedContent"] = body["cachedContent"]
    return request


def count_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """`countTokens` takes the countable parts only; a `generateContentRequest` wrapper is unwrapped."""
    inner = body.get("generateContentRequest")
    source = inner if isinstance(inner, dict) else body
    source = drop_undefined(source)
    request: dict[str, Any] = {"model": model}
    for key in COUNT_FIELDS:
        if key in source:
            request[key] = source[key]
    if "tools" in request:
        request["tools"] = _tools(request["tools"])
    return request


class Collector:
    """Merges streamed GenerateContentResponse chunks into the single response of `generateContent`."""

    __slots__ = ("finish", "first", "grounding", "last", "parts", "role", "usage")

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.role = "model"
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.grounding: Any = None
        self.first: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if self.first is None:
            self.first = chunk
        self.last = chunk
        if isinstance(chunk.get("usageMetadata"), dict):
            self.usage = chunk["usageMetadata"]
        candidates = chunk.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            return
        cand = candidates[0]
        if cand.get("finishReason"):
            self.finish = cand["finishReason"]
        if cand.get("groundingMetadata") is not None:
            self.grounding = cand["groundingMetadata"]
        content = cand.get("content")
        if not isinstance(content, dict):
            return
        self.role = content.get("role") or self.role
        for part in content.get("parts") or ():
            if isinstance(part, dict):
                self._add_part(part)

    def _add_part(self, part: dict[str, Any]) -> None:
        prev = self.parts[-1] if self.parts else None
        text = part.get("text")
        if (
            isinstance(text, str)
            and prev is not None
            and isinstance(prev.get("text"), str)
            and bool(prev.get("thought")) == bool(part.get("thought"))
            and "thoughtSignature" not in prev
        ):
            prev["text"] += text
            if "thoughtSignature" in part:
                prev["thoughtSignature"] = part["thoughtSignature"]
            return
        self.parts.append(dict(part))

    def result(self) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": self.role, "parts": self.parts}, "index": 0}
        if self.finish:
            candidate["finishReason"] = self.finish
        if self.grounding is not None:
            candidate["groundingMetadata"] = self.grounding
        out: dict[str, Any] = {"candidates": [candidate]}
        if self.usage is not None:
            out["usageMetadata"] = self.usage
        for key in ("modelVersion", "responseId", "createTime"):
            source = self.last if self.last is not None and key in self.last else self.first
            if source is not None and key in source:
                out[key] = source[key]
        return out


def request_id_for(session: str | None, message_count: int) -> str:
    """`agent/antigravity/<first 8 of the session>/<message count>` (reference §5.3)."""
    head = session[:REQUEST_ID_SESSION_CHARS] if session else os.urandom(4).hex()
    return f"agent/antigravity/{head}/{message_count}"


# ---------------------------------------------------------------------------------------------------------
# The plan (Gemini-native surface): check, route, adapt; pure


@dataclass(frozen=True, slots=True)
class Context:
    """What planning may ask of the running gateway: plain callables, no services."""

    route: Callable[[str], str]  # a client model name → the upstream model (raises for a name nothing knows)
    spec: Callable[[str], ModelSpec]  # what an upstream model can do
    wire: Wire


@dataclass(slots=True)
class Plan:
    """A Gemini request planned: the upstream model, the stickiness key and the request to send."""

    model: str
    mapped: str
    session: str | None
    stream: bool
    request: dict[str, Any]  # the GenerateContentRequest, or for countTokens its countable parts


def plan(
    body: dict[str, Any],
    headers: Mapping[bytes, bytes],
    ctx: Context,
    *,
    model: str,
    action: str,
    undefined: bool = True,
) -> Plan:
    """`model` and `action` come from the path (`…/models/{model}:{action}`); `undefined` False says the raw
    body holds no Cherry Studio "[undefined]" values (no clean-up pass then). Bad bodies raise InvalidRequest."""
    if action == "countTokens":
        check_gemini(body, count=True)
        mapped = ctx.route(model)
        return Plan(model, mapped, None, False, count_request(body, mapped))
    check_gemini(body)
    mapped = ctx.route(model)
    session = session_id_from_contents(body["contents"])
    request = native_request(body, mapped, "", clean=undefined, spec=ctx.spec(mapped))
    return Plan(model, mapped, session, action == "streamGenerateContent", request)


def outcome(
    body: dict[str, Any],
    headers: Mapping[bytes, bytes],
    ctx: Context,
    *,
    model: str,
    action: str,
    alt_sse: bool = False,
    undefined: bool = True,
) -> Outcome:
    """The route's plan as the driver runs it: countTokens, or a generation answered as SSE (`alt_sse`) or as
    one JSON array, or collected."""
    planned = plan(body, headers, ctx, model=model, action=action, undefined=undefined)
    mapped, request, wire = planned.mapped, planned.request, ctx.wire
    if action == "countTokens":
        return Count(GEMINI, mapped, None, orjson.dumps({"request": request}), _count_answer)

    def build(seat: Seat) -> bytes:
        request["sessionId"] = wire.account_session(seat.account_id)
        user_agent = "antigravity" if seat.email.endswith("@gmail.com") else "jetski"
        return wire.envelope(
            request,
            model=mapped,
            project=seat.project_id,
            request_id=wire.request_id(),
            user_agent=user_agent,
            extra=CREDIT_TYPES,
        )

    answer = SSE_ANSWER if alt_sse else ARRAY_ANSWER
    return Upstream(GEMINI, mapped, planned.session, build, answer, planned.stream, trace=planned.stream)


def _count_answer(doc: Any) -> bytes:
    inner = doc.get("response", doc) if isinstance(doc, dict) else {}
    return orjson.dumps({"totalTokens": inner.get("totalTokens", 0) if isinstance(inner, dict) else 0})


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


def _collector() -> outcomes.Collector:
    made = Collector()
    return outcomes.Collector(made.add, lambda: orjson.dumps(made.result()))


def _collect_failed(status: int, message: str) -> Failure:
    return status, message, None


# Streaming answers pass Google's events through (no keep-alive: the reference sends none); collected ones merge.
SSE_ANSWER = Answer(_sse_converter, _collector, _collect_failed, 0.0, b"", SSE, JSON, raw=True)
ARRAY_ANSWER = Answer(_array_converter, _collector, _collect_failed, 0.0, b"", JSON, JSON, raw=True)


def _stream_error(code: int, message: str) -> bytes:
    """An in-stream error in Google's shape (an SSE event, or the last element of the JSON array)."""
    return orjson.dumps({"error": {"code": code, "message": message, "status": "UNAVAILABLE"}})
