"""The OpenAI converters as tables, no server: requests in → Gemini requests out (and the simulator's Google
validator must accept them), Gemini stream chunks in → OpenAI chunks / Responses events out."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest
from helpers import strict_sse

from agfast.convert import ids
from agfast.convert import openai_chat as chat
from agfast.convert import openai_completions as completions
from agfast.convert import openai_responses as responses
from agfast.convert.gemini import IDENTITY
from agfast.convert.models import ModelSpec
from agfast.convert.signatures import SKIP_VALIDATOR, SignatureCache
from agfast.sim.server import spec_for
from agfast.sim.signatures import SignatureBook
from agfast.sim.validate import validate_envelope, validate_generate_request

FLASH = "gemini-3-flash"  # thinking, strict signatures
LITE = "gemini-3.1-flash-lite"  # no thinking
CLAUDE = "claude-sonnet-4-6"  # thinks only when asked
CLAUDE_THINKING = "claude-sonnet-4-6-thinking"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def convert(body: dict[str, Any], mapped: str = FLASH, cache: SignatureCache | None = None) -> dict[str, Any]:
    """Convert and check the result the way Google would (structure, then semantics)."""
    return convert_with(body, mapped, cache, SignatureBook())


def convert_with(
    body: dict[str, Any], mapped: str, cache: SignatureCache | None, book: SignatureBook
) -> dict[str, Any]:
    plan = chat.to_gemini(body, mapped, cache or SignatureCache.create())
    plan.request["sessionId"] = "-123"
    outer = {"project": "p", "requestId": "r", "request": plan.request, "model": mapped, "userAgent": "antigravity"}
    inner = validate_envelope(orjson.loads(orjson.dumps(outer)))
    validate_generate_request(inner, spec_for(mapped), book)
    return plan.request


def at(doc: Any, path: str) -> Any:
    for key in path.split("."):
        doc = doc[int(key)] if isinstance(doc, list) else doc.get(key)
        if doc is None:
            return None
    return doc


# -- requests: chat body → GenerateContentRequest --------------------------------------------------------------

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
REQUESTS = [
    # (id, chat body (model/messages merged in), mapped model, path in the Gemini request, expected value)
    ("user string", {"messages": [user("hi")]}, FLASH, "contents", [{"role": "user", "parts": [{"text": "hi"}]}]),
    ("empty messages", {"messages": []}, FLASH, "contents", [{"role": "user", "parts": [{"text": " "}]}]),
    (
        "system and developer",
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "developer", "content": [{"type": "text", "text": "D"}]},
                user("x"),
            ]
        },
        FLASH,
        "systemInstruction",
        {"role": "user", "parts": [{"text": IDENTITY}, {"text": "S"}, {"text": "D"}]},
    ),
    (
        "roles and merging",
        {"messages": [user("a"), user("b"), {"role": "assistant", "content": "c"}, user("d")]},
        LITE,
        "contents",
        [
            {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
            {"role": "model", "parts": [{"text": "c"}]},
            {"role": "user", "parts": [{"text": "d"}]},
        ],
    ),
    (
        "images: data URL and http URL",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?x=1"}},
                    ],
                }
            ]
        },
        FLASH,
        "contents.0.parts",
        [
            {"text": "look"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}},
        ],
    ),
    (
        "markdown data image inside text",
        {"messages": [user("see ![x](data:image/jpeg;base64,AAAA) here")]},
        FLASH,
        "contents.0.parts",
        [{"text": "see "}, {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}}, {"text": " here"}],
    ),
    (
        "tool call and result, name recovered, skip sentinel on a thinking model",
        {
            "messages": [
                user("weather?"),
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "tools": [WEATHER],
        },
        FLASH,
        "contents",
        [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"},
                        "thoughtSignature": SKIP_VALIDATOR,
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}, "id": "call_1"}}
                ],
            },
        ],
    ),
    (
        "no sentinel for a model that does not think",
        {
            "messages": [
                user("w"),
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            ]
        },
        LITE,
        "contents.1.parts.0",
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}},
    ),
    (
        "reasoning_content goes back as a thought part",
        {"messages": [user("q"), {"role": "assistant", "content": "a", "reasoning_content": "because"}, user("more")]},
        FLASH,
        "contents.1.parts",
        [{"text": "because", "thought": True}, {"text": "a"}],
    ),
    (
        "sampling parameters",
        {
            "messages": [user("x")],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 100,
            "n": 2,
            "stop": "END",
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "reasoning_effort": "none",
        },
        LITE,
        "generationConfig",
        {
            "temperature": 0.2,
            "topP": 0.9,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25,
            "seed": 7,
            "maxOutputTokens": 100,
            "candidateCount": 2,
            "stopSequences": ["END"],
            "topK": 40,
        },
    ),
    (
        "max_completion_tokens wins over max_tokens",
        {"messages": [user("x")], "max_tokens": 5, "max_completion_tokens": 50},
        LITE,
        "generationConfig.maxOutputTokens",
        50,
    ),
    (
        "json_object",
        {"messages": [user("x")], "response_format": {"type": "json_object"}},
        LITE,
        "generationConfig.responseMimeType",
        "application/json",
    ),
    (
        "json_schema → responseSchema",
        {
            "messages": [user("x")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "p",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "n": {"type": "integer"},
                            "tags": {"type": "array", "items": {"type": "string"}},
                        },
                        "required": ["n"],
                        "additionalProperties": False,
                    },
                },
            },
        },
        LITE,
        "generationConfig.responseSchema",
        {
            "type": "OBJECT",
            "properties": {"n": {"type": "INTEGER"}, "tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
            "required": ["n"],
        },
    ),
    (
        "thinking model: thoughts on with the spec budget",
        {"messages": [user("x")]},
        FLASH,
        "generationConfig.thinkingConfig",
        {"includeThoughts": True, "thinkingBudget": 32768},
    ),
    (
        "reasoning_effort picks the budget",
        {"messages": [user("x")], "reasoning_effort": "low"},
        FLASH,
        "generationConfig.thinkingConfig",
        {"includeThoughts": True, "thinkingBudget": 8192},
    ),
    ("no thinking for a plain Claude", {"messages": [user("x")]}, CLAUDE, "generationConfig.thinkingConfig", None),
    (
        "tools: cleaned, upper-cased, sorted; VALIDATED by default",
        {
            "messages": [user("x")],
            "tools": [
                WEATHER,
                {
                    "type": "function",
                    "function": {
                        "name": "a_first",
                        "parameters": {
                            "type": "object",
                            "$defs": {"U": {"type": "string", "format": "uri"}},
                            "properties": {"u": {"$ref": "#/$defs/U"}},
                        },
                    },
                },
            ],
        },
        FLASH,
        "tools",
        [
            {
                "functionDeclarations": [
                    {
                        "name": "a_first",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"u": {"type": "STRING", "description": "(format: uri)"}},
                        },
                    },
                    {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}},
                            "required": ["city"],
                        },
                    },
                ]
            }
        ],
    ),
    (
        "flattened (Responses-style) tool without parameters",
        {"messages": [user("x")], "tools": [{"type": "function", "name": "ping"}]},
        FLASH,
        "tools.0.functionDeclarations",
        [{"name": "ping", "parameters": {"type": "OBJECT", "properties": {}}}],
    ),
    (
        "tool_choice absent",
        {"messages": [user("x")], "tools": [WEATHER]},
        FLASH,
        "toolConfig",
        {"functionCallingConfig": {"mode": "VALIDATED"}},
    ),
    (
        "tool_choice none",
        {"messages": [user("x")], "tools": [WEATHER], "tool_choice": "none"},
        FLASH,
        "toolConfig.functionCallingConfig.mode",
        "NONE",
    ),
    (
        "tool_choice auto",
        {"messages": [user("x")], "tools": [WEATHER], "tool_choice": "auto"},
        FLASH,
        "toolConfig.functionCallingConfig.mode",
        "AUTO",
    ),
    (
        "tool_choice required",
        {"messages": [user("x")], "tools": [WEATHER], "tool_choice": "required"},
        FLASH,
        "toolConfig.functionCallingConfig.mode",
        "ANY",
    ),
    (
        "tool_choice names a function",
        {
            "messages": [user("x")],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
        FLASH,
        "toolConfig",
        {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
    ),
    (
        "web search alone → googleSearch",
        {"messages": [user("x")], "tools": [{"type": "web_search"}]},
        FLASH,
        "tools",
        [{"googleSearch": {}}],
    ),
    (
        "web search beside functions is dropped (v1internal cannot mix them)",
        {
            "messages": [user("x")],
            "tools": [{"type": "web_search"}, WEATHER, {"type": "namespace", "name": "ns", "tools": []}],
        },
        FLASH,
        "tools.0.functionDeclarations.0.name",
        "get_weather",
    ),
]


@pytest.mark.parametrize(
    ("body", "mapped", "path", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request_conversion(body: dict[str, Any], mapped: str, path: str, expected: Any) -> None:
    request = convert({"model": "m", **body}, mapped)
    assert at(request, path) == expected


@pytest.mark.parametrize(
    ("spec", "body", "expected"),
    [
        # what Google says the model can do decides, not the static table
        (ModelSpec(64000, 32768, False), {"reasoning_effort": "low"}, None),
        (ModelSpec(64000, 32768, True), {"reasoning_effort": "low"}, {"includeThoughts": True, "thinkingBudget": 8192}),
        (
            ModelSpec(64000, 4096, True),
            {"thinking": {"type": "enabled"}},
            {"includeThoughts": True, "thinkingBudget": 4096},
        ),
    ],
)
def test_thinking_follows_the_given_spec(spec: ModelSpec, body: dict[str, Any], expected: Any) -> None:
    plan = chat.to_gemini({"messages": [user("x")], **body}, CLAUDE, SignatureCache.create(), spec=spec)
    assert plan.request["generationConfig"].get("thinkingConfig") == expected


def test_output_limit_follows_the_given_spec() -> None:
    plan = chat.to_gemini(
        {"messages": [user("x")], "max_tokens": 60000}, FLASH, SignatureCache.create(), spec=ModelSpec(8192, 4096, True)
    )
    assert plan.request["generationConfig"]["maxOutputTokens"] == 8192


def default_generation(mapped: str, spec: ModelSpec | None = None) -> dict[str, Any]:
    """The generationConfig of a body that sets no generation field (the remembered default)."""
    return chat.to_gemini({"messages": [user("x")]}, mapped, SignatureCache.create(), spec=spec).request[
        "generationConfig"
    ]


# A body without generation fields gets its model's remembered default: each row asks after another row's
# (model, spec) and must get its own, never the one remembered before it.
DEFAULT_GENERATIONS: list[tuple[str, ModelSpec | None, dict[str, Any]]] = [
    (FLASH, None, {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 32768}, "topK": 40, "topP": 1.0}),
    (FLASH, ModelSpec(8192, 4096, True), {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 4096},
                                          "topK": 40, "topP": 1.0}),
    (FLASH, ModelSpec(8192, 4096, False), {"topK": 40, "topP": 1.0}),
    (LITE, None, {"topK": 40, "topP": 1.0}),
    (FLASH, None, {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 32768}, "topK": 40, "topP": 1.0}),
]  # fmt: skip


def test_default_generation_follows_model_and_spec() -> None:
    for mapped, spec, expected in DEFAULT_GENERATIONS:
        assert default_generation(mapped, spec) == expected, (mapped, spec)


def test_default_generation_is_each_requests_own() -> None:
    """What one request adds to its generationConfig (an image variant's imageConfig) never reaches the next."""
    first = default_generation(FLASH)
    first["imageConfig"] = {"aspectRatio": "16:9"}
    first["thinkingConfig"]["thinkingBudget"] = 1
    assert default_generation(FLASH) == DEFAULT_GENERATIONS[0][2]


def test_default_generation_without_thinking_after_a_tool_turn_lost_its_signature() -> None:
    """A Claude thinking request whose tool history has no signature goes without thinking; the next plain
    request to the same model thinks again (thinking allowed is part of what is remembered)."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    unsigned = [user("x"), {"role": "assistant", "tool_calls": [call]}, {"role": "tool", "tool_call_id": "call_1",
                "content": "sunny"}]  # fmt: skip
    plan = chat.to_gemini({"messages": unsigned}, CLAUDE_THINKING, SignatureCache.create())
    assert "thinkingConfig" not in plan.request["generationConfig"]
    assert "thinkingConfig" in default_generation(CLAUDE_THINKING)


def test_request_field_order_is_stable() -> None:
    request = convert({"model": "m", "messages": [user("x")], "tools": [WEATHER]})
    assert list(request) == [
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "sessionId",
        "contents",
    ]


def test_cached_signature_goes_back_on_the_call() -> None:
    book = SignatureBook()
    sig = book.issue("gemini")
    cache = SignatureCache.create()
    cache.remember(sig, FLASH, tool_call_id="call_1")
    body = {
        "model": "m",
        "tools": [WEATHER],
        "messages": [
            user("weather?"),
            {"role": "assistant", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a"},
            {"role": "tool", "tool_call_id": "call_2", "content": "b"},
        ],
    }
    request = convert_with(body, FLASH, cache, book)
    first, second = request["contents"][1]["parts"]
    assert first["thoughtSignature"] == sig
    assert "thoughtSignature" not in second  # Google wants it on the first call of a step only
    assert len(request["contents"][2]["parts"]) == 2  # both results in one user turn


def test_claude_thinking_tool_turn_gets_its_signed_thought_or_loses_thinking() -> None:
    book = SignatureBook()
    sig = book.issue("claude")
    cache = SignatureCache.create()
    body = {
        "model": "m",
        "tools": [WEATHER],
        "messages": [
            user("weather?"),
            {"role": "assistant", "reasoning_content": "hmm", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a"},
        ],
    }
    # Without a cached signature the unsigned thought is dropped and thinking is off (Anthropic would refuse).
    request = convert_with(body, CLAUDE_THINKING, cache, book)
    assert request["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}}
    ]
    assert "thinkingConfig" not in request["generationConfig"]
    cache.remember(sig, CLAUDE_THINKING, tool_call_id="call_1")
    request = convert_with(body, CLAUDE_THINKING, cache, book)
    assert request["contents"][1]["parts"][0] == {"text": "hmm", "thought": True, "thoughtSignature": sig}
    assert request["generationConfig"]["thinkingConfig"]["includeThoughts"] is True


INVALID = [
    # (id, body, param named in the 400)
    ("messages not a list", {"messages": "hi"}, "messages"),
    ("message not an object", {"messages": ["hi"]}, "messages[0]"),
    ("unknown role", {"messages": [user("a"), {"role": "robot", "content": "x"}]}, "messages[1].role"),
    (
        "tool result without its call",
        {"messages": [user("a"), {"role": "tool", "tool_call_id": "nope", "content": "x"}]},
        "messages[1].tool_call_id",
    ),
    (
        "tool call without a name",
        {"messages": [user("a"), {"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]},
        "messages[1].tool_calls[0].function.name",
    ),
    ("content of the wrong type", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("tools not a list", {"messages": [user("a")], "tools": {}}, "tools"),
    (
        "tool name with spaces",
        {"messages": [user("a")], "tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "tools[0].function.name",
    ),
    (
        "tool parameters not an object schema",
        {
            "messages": [user("a")],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
        },
        "tools[0].function.parameters",
    ),
    (
        "tool properties not an object",
        {
            "messages": [user("a")],
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": []}}}
            ],
        },
        "tools[0].function.parameters",
    ),
    ("duplicate tool", {"messages": [user("a")], "tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ("unknown tool_choice", {"messages": [user("a")], "tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    (
        "tool_choice names an unknown tool",
        {
            "messages": [user("a")],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "nope"}},
        },
        "tool_choice",
    ),
    ("temperature as text", {"messages": [user("a")], "temperature": "hot"}, "temperature"),
    ("max_tokens zero", {"messages": [user("a")], "max_tokens": 0}, "max_tokens"),
    ("n zero", {"messages": [user("a")], "n": 0}, "n"),
    (
        "json_schema without schema",
        {"messages": [user("a")], "response_format": {"type": "json_schema", "json_schema": {}}},
        "response_format.json_schema.schema",
    ),
    ("unknown response format", {"messages": [user("a")], "response_format": {"type": "yaml"}}, "response_format.type"),
]


@pytest.mark.parametrize(("body", "param"), [r[1:] for r in INVALID], ids=[r[0] for r in INVALID])
def test_invalid_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(chat.InvalidRequest) as info:
        chat.to_gemini({"model": "m", **body}, FLASH, SignatureCache.create())
    assert info.value.param == param


# -- tool-call arguments back to the client's types -----------------------------------------------------------

SCHEMA = {
    "type": "object",
    "$defs": {"Level": {"type": "integer"}},
    "properties": {
        "n": {"type": "integer"},
        "x": {"type": "number"},
        "ok": {"type": "boolean"},
        "s": {"type": "string"},
        "level": {"$ref": "#/$defs/Level"},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "list": {"type": "array", "items": {"type": "integer"}},
        "obj": {"type": "object", "properties": {"deep": {"type": "boolean"}}},
    },
}
COERCE = [
    ({"n": "3"}, {"n": 3}),
    ({"n": 3.0}, {"n": 3}),
    ({"n": "three"}, {"n": "three"}),
    ({"x": "1.5"}, {"x": 1.5}),
    ({"x": "2"}, {"x": 2}),
    ({"ok": "true"}, {"ok": True}),
    ({"ok": "False"}, {"ok": False}),
    ({"s": 5}, {"s": "5"}),
    ({"s": True}, {"s": "true"}),
    ({"level": "4"}, {"level": 4}),
    ({"maybe": "7"}, {"maybe": 7}),
    ({"maybe": None}, {"maybe": None}),
    ({"list": ["1", 2]}, {"list": [1, 2]}),
    ({"list": "[1, 2]"}, {"list": [1, 2]}),
    ({"obj": {"deep": "true"}}, {"obj": {"deep": True}}),
    ({"obj": '{"deep": "false"}'}, {"obj": {"deep": False}}),
    ({"unknown": "1"}, {"unknown": "1"}),
]


@pytest.mark.parametrize(("args", "expected"), COERCE)
def test_coerce_args(args: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat.coerce(args, SCHEMA) == expected


# -- responses: Gemini chunks → chat.completion.chunk SSE ------------------------------------------------------


def chunk(*parts: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}}
    if finish:
        cand["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [cand]}
    if usage:
        out["usageMetadata"] = usage
    return out


def events(raw: bytes) -> list[Any]:
    """Chat/completions SSE bytes, framed strictly (helpers.strict_sse), → the JSON of each event, ending with
    the "[DONE]" event (kept as a string), which must come once and last: clients stop reading there."""
    frames = strict_sse(raw)
    assert all(name is None for name, _ in frames), "chat chunks carry no event names"
    datas = [data for _, data in frames]
    assert datas and datas[-1] == b"[DONE]" and datas.count(b"[DONE]") == 1, datas[-2:]
    return [orjson.loads(data) for data in datas[:-1]] + ["[DONE]"]


def deltas(chunks: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    reader = chat.Reader(SignatureCache.create(), FLASH, "sid-test", {"get_weather": WEATHER["function"]["parameters"]})
    stream = chat.ChatStream(
        reader, model="gpt-4o", created=1, include_usage=kwargs.get("include_usage", False), response_id="chatcmpl-1"
    )
    raw = b"".join(stream.feed(c) for c in chunks) + stream.finish()
    out = events(raw)
    for ev in out[:-1]:
        if ev["choices"]:
            assert ev["id"] == "chatcmpl-1" and ev["object"] == "chat.completion.chunk" and ev["model"] == "gpt-4o"
    return [
        (ev["choices"][0]["delta"], ev["choices"][0]["finish_reason"]) if isinstance(ev, dict) and ev["choices"] else ev
        for ev in out
    ]


USAGE = {
    "promptTokenCount": 10,
    "candidatesTokenCount": 5,
    "totalTokenCount": 19,
    "thoughtsTokenCount": 4,
    "cachedContentTokenCount": 2,
}
OPENAI_USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "total_tokens": 19,
    "prompt_tokens_details": {"cached_tokens": 2},
    "completion_tokens_details": {"reasoning_tokens": 4},
}
STREAMS = [
    (
        "text: role first, content deltas, stop, usage on the last chunk, [DONE]",
        [chunk({"text": "Hel"}), chunk({"text": "lo"}, finish="STOP", usage=USAGE)],
        [({"role": "assistant", "content": "Hel"}, None), ({"content": "lo"}, None), ({}, "stop"), "[DONE]"],
    ),
    (
        "thoughts become reasoning_content",
        [chunk({"text": "hmm", "thought": True}), chunk({"text": "ok"}, finish="STOP")],
        [({"role": "assistant", "reasoning_content": "hmm"}, None), ({"content": "ok"}, None), ({}, "stop"), "[DONE]"],
    ),
    (
        "MAX_TOKENS → length",
        [chunk({"text": "a"}, finish="MAX_TOKENS")],
        [({"role": "assistant", "content": "a"}, None), ({}, "length"), "[DONE]"],
    ),
    (
        "SAFETY → content_filter",
        [chunk(finish="SAFETY")],
        [({"role": "assistant", "content": ""}, "content_filter"), "[DONE]"],
    ),
    (
        "RECITATION → content_filter",
        [chunk({"text": "a"}, finish="RECITATION")],
        [({"role": "assistant", "content": "a"}, None), ({}, "content_filter"), "[DONE]"],
    ),
    (
        "empty text parts are skipped",
        [chunk({"text": ""}), chunk({"text": "x"}, finish="STOP")],
        [({"role": "assistant", "content": "x"}, None), ({}, "stop"), "[DONE]"],
    ),
]


@pytest.mark.parametrize(("chunks", "expected"), [r[1:] for r in STREAMS], ids=[r[0] for r in STREAMS])
def test_chat_stream(chunks: list[dict[str, Any]], expected: list[Any]) -> None:
    assert deltas(chunks) == expected


def test_chat_stream_tool_calls_whole_with_ids_and_coerced_args() -> None:
    out = deltas(
        [
            chunk({"text": "x", "thought": True}),
            chunk(
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": "2"}},
                    "thoughtSignature": "s" * 60,
                },
                {"functionCall": {"name": "other", "args": {}}},
                finish="STOP",
            ),
        ]
    )
    _, (second, _), (final, reason), done = out
    calls = second["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris","days":2}'}
    assert (final, reason, done) == ({}, "tool_calls", "[DONE]")


def test_chat_stream_include_usage_adds_a_usage_chunk() -> None:
    out = deltas([chunk({"text": "a"}, finish="STOP", usage=USAGE)], include_usage=True)
    assert out[-3] == ({}, "stop")
    assert out[-2]["choices"] == [] and out[-2]["usage"] == OPENAI_USAGE
    assert out[-1] == "[DONE]"


def test_chat_stream_usage_without_include_usage_rides_on_the_last_chunk() -> None:
    reader = chat.Reader(SignatureCache.create(), FLASH, None)
    stream = chat.ChatStream(reader, model="m", created=1, include_usage=False, response_id="c")
    stream.feed(chunk({"text": "a"}, finish="STOP", usage=USAGE))
    assert events(stream.finish())[0]["usage"] == OPENAI_USAGE


def test_stream_error_chunk_then_done() -> None:
    error, done = events(chat.stream_error("boom"))
    assert error == {"error": {"message": "boom", "type": "upstream_error", "code": "stream_error", "param": None}}
    assert done == "[DONE]"


def test_reader_caches_signatures_by_call_and_session() -> None:
    cache = SignatureCache.create()
    reader = chat.Reader(cache, FLASH, "sid-1")
    sig = "c2lnbmF0dXJl" * 6
    (piece,) = reader.read(chunk({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": sig}))
    assert cache.for_tool_call(piece.calls[0].id) == sig
    assert cache.for_session("sid-1") == sig
    # Claude signs its thought part; the call after it inherits that signature.
    claude = chat.Reader(cache, CLAUDE_THINKING, "sid-2")
    (piece,) = claude.read(
        chunk({"text": "t", "thought": True, "thoughtSignature": sig + "c"}, {"functionCall": {"name": "f"}})
    )
    assert cache.for_tool_call(piece.calls[0].id) == sig + "c"


def test_chat_collector() -> None:
    reader = chat.Reader(SignatureCache.create(), FLASH, None, {"get_weather": WEATHER["function"]["parameters"]})
    collector = chat.ChatCollector(reader)
    for c in (
        chunk({"text": "th", "thought": True}),
        chunk({"text": "a"}),
        chunk(
            {"text": "b"}, {"functionCall": {"name": "get_weather", "args": {"days": "1"}}}, finish="STOP", usage=USAGE
        ),
    ):
        collector.feed(c)
    result = collector.result(model="gpt-4o", created=5, response_id="chatcmpl-x")
    (choice,) = result["choices"]
    message = choice["message"]
    assert (result["object"], result["model"], result["usage"]) == ("chat.completion", "gpt-4o", OPENAI_USAGE)
    assert (message["content"], message["reasoning_content"], choice["finish_reason"]) == ("ab", "th", "tool_calls")
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"days":1}'}


def test_candidates_become_choices() -> None:
    reader = chat.Reader(SignatureCache.create(), FLASH, None)
    collector = chat.ChatCollector(reader)
    collector.feed(
        {
            "candidates": [
                {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
                {"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"},
            ]
        }
    )
    result = collector.result(model="m", created=1, response_id="c")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in result["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


# -- legacy completions ------------------------------------------------------------------------------------------


def test_completions_request_and_stream() -> None:
    body = completions.to_chat({"model": "m", "prompt": ["Say hi"], "max_tokens": 9, "stop": ["\n"], "echo": True})
    assert body == {"model": "m", "max_tokens": 9, "stop": ["\n"], "messages": [{"role": "user", "content": "Say hi"}]}
    with pytest.raises(chat.InvalidRequest):
        completions.to_chat({"model": "m", "prompt": ["a", "b"]})
    reader = chat.Reader(SignatureCache.create(), FLASH, None)
    stream = completions.CompletionStream(reader, model="m", created=1, response_id="cmpl-1")
    raw = stream.feed(chunk({"text": "t", "thought": True}, {"text": "Hi"})) + stream.feed(
        chunk({"text": "!"}, finish="STOP", usage=USAGE)
    )
    out = events(raw + stream.finish())
    assert [e["choices"][0]["text"] for e in out[:-1]] == ["Hi", "!", ""]
    assert out[0]["object"] == "text_completion" and out[-2]["choices"][0]["finish_reason"] == "stop"
    assert out[-2]["usage"] == OPENAI_USAGE and out[-1] == "[DONE]"


# -- Responses API ---------------------------------------------------------------------------------------------

RESPONSES_INPUT = [
    ("string input", {"input": "hi"}, None, [{"role": "user", "content": "hi"}]),
    (
        "items: message, reasoning, function_call, output",
        {
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                {"role": "user", "content": "run it"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "plan"}],
                    "encrypted_content": "x",
                },
                {"type": "function_call", "call_id": "call_9", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
                {"type": "function_call_output", "call_id": "call_9", "output": "file.txt"},
                {"type": "item_reference", "id": "whatever"},
            ]
        },
        None,
        [
            {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {"role": "user", "content": "run it"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "plan",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "file.txt"},
        ],
    ),
    (
        "assistant text then a call share one message",
        {
            "input": [
                {"role": "user", "content": "q"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            ]
        },
        None,
        [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [{"type": "output_text", "text": "a"}],
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
        ],
    ),
    (
        "previous conversation first",
        {"input": "again"},
        [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}],
        [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "again"},
        ],
    ),
]


@pytest.mark.parametrize(
    ("body", "history", "expected"), [r[1:] for r in RESPONSES_INPUT], ids=[r[0] for r in RESPONSES_INPUT]
)
def test_responses_input(
    body: dict[str, Any], history: list[dict[str, Any]] | None, expected: list[dict[str, Any]]
) -> None:
    plan = responses.to_chat({"model": "m", **body}, history)
    assert plan.conversation == expected
    convert(plan.chat)  # and Google accepts what it becomes


def test_responses_request_settings_and_codex_tools() -> None:
    body = {
        "model": "gpt-5",
        "instructions": "be brief",
        "input": "hi",
        "tools": [
            {
                "type": "function",
                "name": "exec_command",
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
            },
            {"type": "custom", "name": "apply_patch", "description": "patch", "format": {"type": "grammar"}},
            {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn"}]},
            {"type": "web_search", "external_web_access": True},
            {"type": "file_search"},
        ],
        "tool_choice": "auto",
        "max_output_tokens": 99,
        "temperature": 0.5,
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {
            "format": {
                "type": "json_schema",
                "name": "o",
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            }
        },
    }
    plan = responses.to_chat(body, None)
    assert plan.custom == frozenset({"apply_patch"})
    assert plan.chat["messages"][0] == {"role": "system", "content": "be brief"}
    assert plan.conversation == [{"role": "user", "content": "hi"}]
    request = convert(plan.chat)
    decls = request["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in decls] == ["apply_patch", "exec_command"]
    assert decls[0]["parameters"]["properties"]["input"]["type"] == "STRING"
    gen = request["generationConfig"]
    assert (gen["temperature"], gen["thinkingConfig"]["thinkingBudget"], gen["responseMimeType"]) == (
        0.5,
        24576,
        "application/json",
    )
    assert gen["maxOutputTokens"] > 99  # raised above the thinking budget (reference §6.2)
    assert request["toolConfig"]["functionCallingConfig"]["mode"] == "AUTO"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": ["x"]}, "input[0]"),
        ({"input": [{"role": "bot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({}, "input"),
    ],
)
def test_responses_invalid_input(body: dict[str, Any], param: str) -> None:
    with pytest.raises(chat.InvalidRequest) as info:
        responses.to_chat({"model": "m", **body}, None)
    assert info.value.param == param


def build(
    chunks: list[dict[str, Any]], *, stream: bool = True, custom: frozenset[str] = frozenset()
) -> tuple[list[tuple[str, Any]], responses.ResponsesBuilder]:
    reader = chat.Reader(SignatureCache.create(), FLASH, None)
    obj = responses.response_object({"model": "gpt-5", "input": "x"}, "resp_1", "gpt-5", 1)
    builder = responses.ResponsesBuilder(reader, obj, custom=custom, stream=stream)
    raw = builder.start() + b"".join(builder.feed(c) for c in chunks) + builder.finish()
    out = responses_events(raw) if stream else []
    assert stream or raw == b""
    assert [doc["sequence_number"] for _, doc in out] == list(range(len(out)))
    return out, builder


# A Responses stream has no [DONE]: it ends with exactly one of these, as its last event.
RESPONSES_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def responses_events(raw: bytes) -> list[tuple[str, Any]]:
    """Responses SSE bytes, framed strictly → (event name, JSON); the name must repeat the JSON's type and the
    last event must be the one terminal event."""
    out: list[tuple[str, Any]] = []
    for name, data in strict_sse(raw):
        doc = orjson.loads(data)
        assert name == doc["type"], (name, doc["type"])
        out.append((name, doc))
    names = [name for name, _ in out]
    assert names[-1] in RESPONSES_TERMINAL and sum(n in RESPONSES_TERMINAL for n in names) == 1, names[-3:]
    return out


def test_responses_stream_event_sequence() -> None:
    out, builder = build(
        [
            chunk({"text": "th", "thought": True}),
            chunk({"text": "Hel"}),
            chunk(
                {"text": "lo"},
                {"functionCall": {"name": "exec_command", "args": {"cmd": "ls"}}},
                finish="STOP",
                usage=USAGE,
            ),
        ]
    )
    assert [name for name, _ in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = out[0][1]["response"]
    assert (created["id"], created["status"], created["output"]) == ("resp_1", "in_progress", [])
    final = out[-1][1]["response"]
    assert final["status"] == "completed"
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    call = final["output"][2]
    assert (call["name"], call["arguments"], call["call_id"][:5]) == ("exec_command", '{"cmd":"ls"}', "call_")
    assert final["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 4},
        "total_tokens": 19,
    }
    assert builder.assistant_message() == {
        "role": "assistant",
        "content": "Hello",
        "reasoning_content": "th",
        "tool_calls": [
            {
                "id": call["call_id"],
                "type": "function",
                "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'},
            }
        ],
    }


def test_responses_custom_tool_call_and_incomplete() -> None:
    out, _ = build(
        [chunk({"functionCall": {"name": "apply_patch", "args": {"input": "*** Begin Patch"}}}, finish="STOP")],
        custom=frozenset({"apply_patch"}),
    )
    names = [name for name, _ in out]
    assert "response.custom_tool_call_input.delta" in names and "response.custom_tool_call_input.done" in names
    item = out[-1][1]["response"]["output"][0]
    assert (item["type"], item["input"]) == ("custom_tool_call", "*** Begin Patch")
    out, _ = build([chunk({"text": "cut"}, finish="MAX_TOKENS")])
    final = out[-1][1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_responses_failure_ends_with_response_failed() -> None:
    reader = chat.Reader(SignatureCache.create(), FLASH, None)
    builder = responses.ResponsesBuilder(
        reader, responses.response_object({}, "resp_2", "m", 1), custom=frozenset(), stream=True
    )
    raw = builder.start() + builder.feed(chunk({"text": "par"})) + builder.fail("upstream went away")
    docs = [doc for _, doc in responses_events(raw)]
    assert docs[-2]["type"] == "response.output_item.done"  # the open message is closed first
    assert docs[-1]["type"] == "response.failed"
    assert docs[-1]["response"]["error"] == {"code": "server_error", "message": "upstream went away"}


def test_responses_non_stream_builds_no_events() -> None:
    out, builder = build([chunk({"text": "a"}, finish="STOP")], stream=False)
    assert out == []
    assert builder.response["status"] == "completed"
    assert builder.output_text() == "a"


EXEC = {
    "type": "function",
    "name": "exec_command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
}
NAMESPACE = {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn_agent"}]}
RESPONSES_TOOL_CHOICE = [
    ("auto", {"mode": "AUTO"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "name": "exec_command"}, {"mode": "ANY", "allowedFunctionNames": ["exec_command"]}),
    ({"type": "function", "name": "spawn_agent"}, {"mode": "AUTO"}),  # inside a namespace we dropped
    ({"type": "web_search_preview"}, {"mode": "AUTO"}),
    ({"type": "allowed_tools", "mode": "required", "tools": []}, {"mode": "ANY"}),
]


@pytest.mark.parametrize(("choice", "expected"), RESPONSES_TOOL_CHOICE)
def test_responses_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    plan = responses.to_chat({"model": "m", "input": "x", "tools": [NAMESPACE, EXEC], "tool_choice": choice}, None)
    assert convert(plan.chat)["toolConfig"]["functionCallingConfig"] == expected


def test_responses_tool_errors_name_the_clients_index() -> None:
    plan = responses.to_chat(
        {
            "model": "m",
            "input": "x",
            "tools": [NAMESPACE, {"type": "web_search"}, {"type": "function", "name": "bad name"}],
        },
        None,
    )
    with pytest.raises(chat.InvalidRequest) as info:
        chat.to_gemini(plan.chat, FLASH, SignatureCache.create())
    assert info.value.param == "tools[2].name"


def test_old_tool_traffic_is_clipped_recent_kept() -> None:
    """Reference §6.2: tool args/results longer than 1000 chars are cut outside the last 24 turns."""
    long_text = "x" * 5000
    messages: list[Any] = [user("start a long agent session")]
    for i in range(20):
        arguments = orjson.dumps({"city": long_text}).decode()
        call = {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": long_text},
        ]
    messages.append(user("and now?"))
    contents = convert({"model": "m", "messages": messages, "tools": [WEATHER]}, LITE)["contents"]
    old, recent = contents[:-24], contents[-24:]
    old_args = [p["functionCall"]["args"]["city"] for c in old for p in c["parts"] if "functionCall" in p]
    old_results = [
        p["functionResponse"]["response"]["result"] for c in old for p in c["parts"] if "functionResponse" in p
    ]
    assert old_args and old_results
    assert all(len(a) < 1100 and a.endswith("characters cut from an older turn]") for a in old_args + old_results)
    recent_results = [
        p["functionResponse"]["response"]["result"] for c in recent for p in c["parts"] if "functionResponse" in p
    ]
    assert recent_results and all(r == long_text for r in recent_results)


def test_ids_of_a_forked_worker_differ_from_its_parents() -> None:
    """Ids are a per-process prefix and a counter: a forked worker (`--workers N`) must draw its own prefix,
    else two workers would hand out the same ids in step."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, (ids.hex24() + ids.hex24()).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 96).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = [ids.hex24() for _ in range(1000)]
    theirs = [child[:24], child[24:]]
    assert len(set(mine)) == 1000 and not set(theirs) & set(mine)
    assert theirs[0][: ids.PREFIX_DIGITS] != mine[0][: ids.PREFIX_DIGITS]
    assert all(len(i) == 24 for i in mine + theirs) and len(ids.hex32()) == 32
