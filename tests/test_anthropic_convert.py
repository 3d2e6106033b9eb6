"""Anthropic Messages ↔ Gemini conversion as tables: request in → what Google gets (checked by the simulator's own
validator, so a request Google would refuse fails here), Gemini chunks in → the Anthropic events a client sees."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from helpers import strict_sse

from agfast.convert import anthropic as conv
from agfast.convert.anthropic_stream import MessageCollector, StreamConverter, usage_of, warmup_events
from agfast.convert.models import ModelSpec
from agfast.convert.signatures import SKIP_VALIDATOR, SignatureCache
from agfast.sim import MODEL_CATALOG
from agfast.sim.errors import SimError
from agfast.sim.signatures import SignatureBook
from agfast.sim.validate import validate_envelope, validate_generate_request
from agfast.upstream.client import envelope

BOOK = SignatureBook()
CLAUDE_SIG = BOOK.issue("claude")
CLAUDE_SIG_2 = BOOK.issue("claude")
GEMINI_SIG = BOOK.issue("gemini")
OPUS = "claude-opus-4-6-thinking"
SONNET = "claude-sonnet-4-6"
FLASH = "gemini-3-flash"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "format": "uri"}, "unit": {"$ref": "#/$defs/unit"}},
        "required": ["city"],
        "additionalProperties": False,
        "$defs": {"unit": {"type": "string", "enum": ["c", "f"]}},
    },
}


# -- tiny verbs --------------------------------------------------------------------------------------------------


def upstream_ok(request: dict[str, Any], model: str) -> None:
    """Fail unless the simulator (Google's rules) accepts this request for `model`."""
    inner = validate_envelope(orjson.loads(envelope(request, model=model, project="p", request_id="r")))
    try:
        validate_generate_request(inner, MODEL_CATALOG[model], BOOK)
    except SimError as exc:  # pragma: no cover - the message is the point when it fails
        pytest.fail(f"upstream would refuse: {exc.body}")


def to_gemini(
    body: dict[str, Any],
    model: str = OPUS,
    cache: SignatureCache | None = None,
    *,
    validate: bool = True,
    **kwargs: Any,
) -> conv.Conversion:
    """The handler's pipeline minus IO: clean, lift, merge, filter, transform."""
    cache = cache if cache is not None else SignatureCache.create()
    body = conv.strip_cache_control(body)
    messages, lifted = conv.lift_system(body["messages"])
    messages = conv.filter_thinking(conv.merge_consecutive(messages), model, cache)
    out = conv.to_gemini(
        body,
        messages,
        lifted,
        model=model,
        thinking=conv.thinking_request(body),
        signatures=cache,
        session="session-1",
        **kwargs,
    )
    if validate:
        upstream_ok(out.request, model)
    return out


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def parts(request: dict[str, Any], index: int = -1) -> list[dict[str, Any]]:
    return request["contents"][index]["parts"]  # type: ignore[no-any-return]


def roles(request: dict[str, Any]) -> list[str]:
    return [c["role"] for c in request["contents"]]


def tool_loop(signature: str | None = CLAUDE_SIG, result: Any = "sunny") -> list[dict[str, Any]]:
    first: list[dict[str, Any]] = []
    if signature is not None:
        first.append({"type": "thinking", "thinking": "Deciding to call get_weather.", "signature": signature})
    first.append({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}})
    return [
        user("Please call get_weather for Paris"),
        assistant(first),
        user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}]),
    ]


# -- request: content ----------------------------------------------------------------------------------------------


def test_plain_text_and_system_prompt() -> None:
    body = {"model": "m", "max_tokens": 100, "system": "Be brief.", "messages": [user("Hello")]}
    req = to_gemini(body, SONNET).request
    system = [p["text"] for p in req["systemInstruction"]["parts"]]
    assert system[0].startswith("You are Antigravity") and system[1:] == ["Be brief.", conv.SYSTEM_END]
    assert req["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]
    assert list(req) == [
        "systemInstruction",
        "generationConfig",
        "safetySettings",
        "sessionId",
        "contents",
    ]  # stable field order: the prefix Google caches


SYSTEM_CASES = [
    # (system, role:"system" messages, expected system texts after the identity)
    ("One.", [], ["One."]),
    (
        [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
        [],
        ["A", "B"],
    ),
    (None, ["lifted as string"], ["lifted as string"]),
    ("Top.", [[{"type": "text", "text": "lifted block"}]], ["Top.", "lifted block"]),
    ("You are Antigravity already.", [], ["You are Antigravity already."]),
    (conv.AGENT_SDK_IDENTITY + " Go.", [], [conv.CLAUDE_CODE_IDENTITY + " Go."]),
]


@pytest.mark.parametrize(("system", "lifted", "expected"), SYSTEM_CASES)
def test_system_assembly(system: Any, lifted: list[Any], expected: list[str]) -> None:
    messages = [user("Hi there"), *({"role": "system", "content": c} for c in lifted), user("again")]
    body: dict[str, Any] = {"model": "m", "max_tokens": 50, "messages": messages}
    if system is not None:
        body["system"] = system
    req = to_gemini(body, SONNET).request
    texts = [p["text"] for p in req["systemInstruction"]["parts"]]
    identity = [] if "You are Antigravity" in str(system) else [texts[0]]
    assert texts == [*identity, *expected, conv.SYSTEM_END]
    # The user turns around the lifted system entries became one upstream turn.
    assert req["contents"] == [{"role": "user", "parts": [{"text": "Hi there\n\nagain"}]}]


MERGE_CASES = [
    ([user("a"), user("b")], [{"role": "user", "content": "a\n\nb"}]),
    (
        [user("a"), user([{"type": "text", "text": "b"}])],
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    ),
    ([user("a"), assistant("b"), assistant("c")], [user("a"), {"role": "assistant", "content": "b\n\nc"}]),
]


@pytest.mark.parametrize(("messages", "expected"), MERGE_CASES)
def test_merge_consecutive(messages: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert conv.merge_consecutive(messages) == expected


def test_media_blocks() -> None:
    pdf = base64.b64encode(b"%PDF-1.4 tiny").decode()
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Describe these"},
    ]
    req = to_gemini({"model": "m", "max_tokens": 64, "messages": [user(content)]}, SONNET).request
    assert parts(req) == [
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"inlineData": {"mimeType": "application/pdf", "data": pdf}},
        {"text": "plain doc"},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
        {"text": "Describe these"},
    ]


def test_cache_control_removed_everywhere() -> None:
    cc = {"type": "ephemeral"}
    body = {
        "model": "m",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "sys", "cache_control": cc}],
        "tools": [{**WEATHER, "cache_control": cc}],
        "messages": [
            user([{"type": "text", "text": "call get_weather", "cache_control": cc}]),
            assistant(
                [
                    {"type": "thinking", "thinking": "t", "signature": CLAUDE_SIG, "cache_control": cc},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}, "cache_control": cc},
                ]
            ),
            user(
                [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok", "cache_control": cc},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        "cache_control": cc,
                    },
                ]
            ),
        ],
    }
    before = orjson.dumps(body)
    cleaned = conv.strip_cache_control(body)
    # The step itself (the z.ai pass-through forwards its output as is): no key left at any depth, nothing
    # else touched, and the caller's body is a copy, not edited in place.
    assert b"cache_control" not in orjson.dumps(cleaned)
    assert orjson.dumps(body) == before
    assert orjson.dumps(cleaned) == before.replace(b',"cache_control":{"type":"ephemeral"}', b"")
    req = to_gemini(body).request
    assert b"cache_control" not in orjson.dumps(req)


def test_empty_messages_leave_nothing() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [user([{"type": "text", "text": "  "}])]}
    with pytest.raises(conv.ConversionError):
        to_gemini(body, SONNET)


# -- request: tools ------------------------------------------------------------------------------------------------


def test_tool_loop_with_thinking_carries_signature_first() -> None:
    cache = SignatureCache.create()
    cache.remember(CLAUDE_SIG, OPUS)
    out = to_gemini({"model": "m", "max_tokens": 4096, "tools": [WEATHER], "messages": tool_loop()}, OPUS, cache)
    req = out.request
    assert out.thinking and roles(req) == ["user", "model", "user"]
    thought, call = parts(req, 1)
    assert thought == {"text": "Deciding to call get_weather.", "thought": True, "thoughtSignature": CLAUDE_SIG}
    assert call["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}, "id": "toolu_1"}
    assert parts(req) == [
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}, "id": "toolu_1"}}
    ]
    decl = req["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "get_weather" and "additionalProperties" not in orjson.dumps(decl).decode()
    assert decl["parameters"]["properties"]["unit"]["enum"] == ["c", "f"]  # $ref inlined
    assert req["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED"}}


def test_omitted_thinking_text_keeps_its_signature() -> None:
    # Claude Code asks for thinking with display "omitted": the block comes back empty but signed.
    messages = tool_loop()
    messages[1]["content"][0]["thinking"] = ""
    body = {
        "model": "m",
        "max_tokens": 4096,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "messages": messages,
    }
    req = to_gemini({**body, "tools": [WEATHER]}).request
    assert parts(req, 1)[0] == {"text": "", "thought": True, "thoughtSignature": CLAUDE_SIG}


def test_tool_loop_without_signed_thinking_turns_thinking_off() -> None:
    # Claude refuses a tool loop whose assistant turn does not start with signed thinking; this turn goes
    # without thinking instead (the loop continues; the next user turn thinks again).
    body = {"model": "m", "max_tokens": 4096, "tools": [WEATHER], "messages": tool_loop(signature=None)}
    out = to_gemini(body)
    assert not out.thinking
    assert "thinkingConfig" not in out.request["generationConfig"]


RESULT_CASES = [
    # (tool_result content, is_error, expected result text, extra parts)
    ("", False, conv.EMPTY_OK, []),
    ([], True, conv.EMPTY_ERROR, []),
    ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], False, "a\nb", []),
    (
        [
            {"type": "text", "text": "see"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ],
        False,
        "see",
        [{"inlineData": {"mimeType": "image/png", "data": PNG}}],
    ),
]


@pytest.mark.parametrize(("content", "is_error", "text", "extra"), RESULT_CASES)
def test_tool_results(content: Any, is_error: bool, text: str, extra: list[dict[str, Any]]) -> None:
    messages = tool_loop(signature=None)
    messages[2]["content"][0].update(content=content, is_error=is_error)
    req = to_gemini({"model": "m", "max_tokens": 100, "tools": [WEATHER], "messages": messages}, SONNET).request
    response, *rest = parts(req)
    assert response["functionResponse"]["response"] == {"result": text}
    assert rest == extra


def test_long_tool_result_is_truncated() -> None:
    messages = tool_loop(signature=None, result="x" * (conv.MAX_TOOL_RESULT_CHARS + 5000))
    req = to_gemini({"model": "m", "max_tokens": 100, "tools": [WEATHER], "messages": messages}, SONNET).request
    result = parts(req)[0]["functionResponse"]["response"]["result"]
    assert result.startswith("x" * 1000) and len(result) < conv.MAX_TOOL_RESULT_CHARS + 100
    assert "truncated 5000 characters" in result


def test_missing_and_orphan_tool_results() -> None:
    messages = [
        user("call get_weather twice"),
        assistant(
            [
                {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "A"}},
                {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "B"}},
            ]
        ),
        # The user interrupted: one result, then a new instruction; and a stale result from older history.
        user(
            [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "A: sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_gone", "content": "old"},
                {"type": "text", "text": "stop, do something else"},
            ]
        ),
    ]
    req = to_gemini({"model": "m", "max_tokens": 100, "tools": [WEATHER], "messages": messages}, SONNET).request
    got = parts(req)
    assert [p["functionResponse"]["id"] for p in got[:2]] == ["toolu_a", "toolu_b"]
    assert got[1]["functionResponse"]["response"] == {"result": conv.INTERRUPTED}
    assert got[2] == {"text": "[Tool result toolu_gone]\nold"}
    assert got[3] == {"text": "stop, do something else"}


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([WEB_SEARCH], [{"googleSearch": {}}]),
        ([WEB_SEARCH, WEATHER], ["get_weather"]),  # Google cannot mix search with functions: functions win
        ([WEATHER, {**WEATHER}], ["get_weather"]),  # duplicate names declared once
        ([{"type": "bash_20250124", "name": "bash"}], None),  # Anthropic-hosted tools have no schema
    ],
)
def test_tool_declarations(tools: list[dict[str, Any]], expected: Any) -> None:
    req = to_gemini({"model": "m", "max_tokens": 100, "tools": tools, "messages": [user("hi")]}, FLASH).request
    if expected is None:
        assert "tools" not in req
    elif isinstance(expected[0], str):
        assert [d["name"] for d in req["tools"][0]["functionDeclarations"]] == expected
    else:
        assert req["tools"] == expected


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, {"mode": "VALIDATED"}),
        ({"type": "auto"}, {"mode": "VALIDATED"}),
        ({"type": "any"}, {"mode": "ANY"}),
        ({"type": "tool", "name": "get_weather"}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
        ({"type": "none"}, {"mode": "NONE"}),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 100, "tools": [WEATHER], "messages": [user("hi")]}
    if choice is not None:
        body["tool_choice"] = choice
    assert to_gemini(body, SONNET).request["toolConfig"]["functionCallingConfig"] == config


def test_gemini_calls_get_cached_or_sentinel_signatures() -> None:
    # Gemini 3 refuses a functionCall of the current loop without a signature.
    cache = SignatureCache.create()
    cache.remember(GEMINI_SIG, FLASH, tool_call_id="toolu_1")
    body = {"model": "m", "max_tokens": 4096, "tools": [WEATHER], "messages": tool_loop(signature=None)}
    req = to_gemini(body, FLASH, cache).request
    assert parts(req, 1)[0]["thoughtSignature"] == GEMINI_SIG
    req = to_gemini(body, FLASH, SignatureCache.create()).request
    assert parts(req, 1)[0]["thoughtSignature"] == SKIP_VALIDATOR
    # Claude's thinking means nothing to Gemini: dropped, and its signature never reaches a Gemini call.
    claude_cache = SignatureCache.create()
    claude_cache.remember(CLAUDE_SIG, OPUS)
    req = to_gemini({**body, "messages": tool_loop()}, FLASH, claude_cache).request
    assert parts(req, 1) == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "toolu_1"},
            "thoughtSignature": SKIP_VALIDATOR,
        }
    ]


# -- request: thinking ---------------------------------------------------------------------------------------------


def budget(n: int) -> dict[str, Any]:
    return {"includeThoughts": True, "thinkingBudget": n}


def level(name: str) -> dict[str, Any]:
    return {"includeThoughts": True, "thinkingLevel": name}


def enabled(n: int, max_tokens: int) -> dict[str, Any]:
    return {"thinking": {"type": "enabled", "budget_tokens": n}, "max_tokens": max_tokens}


ADAPTIVE = {"type": "adaptive"}
THINKING_CASES = [
    # (model, body extras, expected thinkingConfig or None, expected maxOutputTokens)
    (OPUS, enabled(2048, 1024), budget(2048), 2048 + 8192),  # max_tokens raised above the budget
    (OPUS, enabled(2048, 8000), budget(2048), 8000),
    (OPUS, {"thinking": ADAPTIVE, "output_config": {"effort": "medium"}, "max_tokens": 128000}, level("MEDIUM"), 64000),
    (OPUS, {"thinking": ADAPTIVE, "max_tokens": 1000}, level("HIGH"), 1000),
    (OPUS, {"thinking": {"type": "disabled"}, "max_tokens": 1000}, None, 1000),
    (OPUS, {"max_tokens": 50000}, budget(32768), 50000),  # a thinking model thinks by default
    (OPUS, {"thinking": {"budgetTokens": 500}, "max_tokens": 4000}, budget(1024), 4000),  # hint; Claude minimum
    (OPUS, {"thinkingConfig": {"thinkingBudget": 3000}, "max_tokens": 2000}, budget(3000), 3000 + 8192),
    (OPUS, {"thinkingLevel": "low", "max_tokens": 30000}, budget(8192), 30000),
    (OPUS, enabled(200000, 1000), budget(64000 - 8192), 64000),  # capped by the model's output limit
    (SONNET, enabled(2048, 1000), budget(2048), 2048 + 8192),  # the static table: Sonnet 4.6 thinks when asked
    (FLASH, {"thinking": ADAPTIVE, "max_tokens": 1000}, budget(24576), 24576 + 8192),
    (FLASH, {"max_tokens": 1000}, None, 1000),  # unasked, Gemini thinks its default way and shows nothing
    (FLASH, enabled(99999, 65536), budget(32768), 65536),  # Gemini budgets capped at the model's
]


@pytest.mark.parametrize(("model", "extra", "config", "max_out"), THINKING_CASES)
def test_thinking_config(model: str, extra: dict[str, Any], config: Any, max_out: int) -> None:
    body = {"model": "m", "messages": [user("think about it")], **extra}
    gen = to_gemini(body, model).request["generationConfig"]
    assert gen.get("thinkingConfig") == config
    assert gen["maxOutputTokens"] == max_out


@pytest.mark.parametrize(
    ("spec", "config", "max_out"),
    [
        (ModelSpec(64000, 32768, False), None, 1000),  # Google says it cannot think: no thinkingConfig
        (ModelSpec(4096, 32768, True), budget(2048), 4096),  # raised above the budget, within Google's limit
    ],
)
def test_thinking_follows_the_given_spec(spec: ModelSpec, config: Any, max_out: int) -> None:
    body = {"model": "m", "messages": [user("think about it")], **enabled(2048, 1000)}
    gen = to_gemini(body, SONNET, spec=spec, validate=False).request["generationConfig"]
    assert gen.get("thinkingConfig") == config
    assert gen["maxOutputTokens"] == max_out


def test_generation_defaults_and_stops() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [user("x")], "stop_sequences": ["END"], "temperature": 0.3}
    gemini = to_gemini(body, FLASH).request["generationConfig"]
    assert gemini["topK"] == 40 and gemini["topP"] == 1.0 and gemini["temperature"] == 0.3
    assert gemini["stopSequences"] == ["END", *conv.DEFAULT_STOPS]
    claude = to_gemini(body, SONNET).request["generationConfig"]
    assert "topK" not in claude and "topP" not in claude  # Claude's thinking refuses top_k changes
    assert to_gemini(body, OPUS).request["generationConfig"]["stopSequences"] == ["END"]


@pytest.mark.parametrize(
    ("extra", "thinks", "sampling"),
    [
        ({"temperature": 0.2, "top_k": 5, "top_p": 0.5}, True, {}),  # thinking wins over sampling settings
        ({"temperature": 0.2, "top_p": 0.97}, True, {"topP": 0.97}),
        ({"temperature": 0.2, "thinking": {"type": "disabled"}}, False, {"temperature": 0.2}),
        ({"tool_choice": {"type": "any"}}, False, {}),  # Claude cannot think with a forced tool
    ],
)
def test_claude_thinking_and_sampling(extra: dict[str, Any], thinks: bool, sampling: dict[str, Any]) -> None:
    body = {"model": "m", "max_tokens": 4000, "tools": [WEATHER], "messages": [user("x")], **extra}
    out = to_gemini(body, OPUS)
    gen = out.request["generationConfig"]
    assert out.thinking is thinks
    assert {k: v for k, v in gen.items() if k in ("temperature", "topP", "topK")} == sampling


def test_structured_output_for_gemini() -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
        "additionalProperties": False,
    }
    body = {
        "model": "m",
        "max_tokens": 100,
        "messages": [user("x")],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    gen = to_gemini(body, FLASH).request["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert gen["responseSchema"] == {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
    }


def test_filter_thinking_by_signature_and_family() -> None:
    cache = SignatureCache.create()
    cache.remember(GEMINI_SIG, FLASH)
    blocks = [
        {"type": "thinking", "thinking": "short", "signature": "abc"},
        {"type": "thinking", "thinking": "gemini's", "signature": GEMINI_SIG},
        {"type": "thinking", "thinking": "unsigned", "signature": ""},
        {"type": "thinking", "thinking": "claude's", "signature": CLAUDE_SIG},
        {"type": "text", "text": "answer"},
    ]
    messages = [user("q"), assistant(blocks), user("next")]
    kept = conv.filter_thinking(messages, OPUS, cache)[1]["content"]
    assert [b.get("thinking", b.get("text")) for b in kept] == ["unsigned", "claude's", "answer"]
    assert messages[1]["content"] is blocks and len(blocks) == 5  # the client's body is not modified


def test_signature_recovery_form() -> None:
    body = {"model": "m", "max_tokens": 4096, "tools": [WEATHER], "messages": tool_loop(signature="Z" * 80)}
    out = to_gemini(body, thinking_as_text=True)
    assert not out.thinking and "thinkingConfig" not in out.request["generationConfig"]
    assert parts(out.request, 1)[0] == {"text": "Deciding to call get_weather."}
    assert parts(out.request)[-1] == {"text": conv.RECOVERY_NOTE}


def test_unknown_signature_goes_up_and_upstream_judges() -> None:
    # Long enough and of unknown origin (agfast restarted, say): sent as is; Google may refuse it.
    body = {"model": "m", "max_tokens": 4096, "tools": [WEATHER], "messages": tool_loop(signature="Z" * 80)}
    out = to_gemini(body, validate=False)
    assert parts(out.request, 1)[0]["thoughtSignature"] == "Z" * 80
    with pytest.raises(pytest.fail.Exception, match="Invalid `signature`"):
        upstream_ok(out.request, OPUS)
    assert conv.is_signature_error(b"messages.1.content.0: Invalid `signature` in `thinking` block")


# -- pre-processing decisions -------------------------------------------------------------------------------------


def body_with(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [user("x")], "max_tokens": 1, **fields}


BODY_PROBLEMS = [
    ({"messages": [user("x")], "max_tokens": 1}, "model"),
    ({"model": "m", "max_tokens": 1}, "messages"),
    ({"model": "m", "messages": [user("x")]}, "max_tokens"),
    (body_with(max_tokens="9"), "max_tokens"),
    (body_with(messages=[]), "messages"),
    (body_with(messages=[{"role": "bot", "content": "x"}]), "messages.0.role"),
    (body_with(messages=[user(5)]), "messages.0.content"),
    (body_with(messages=[user([{"text": "x"}])]), "messages.0.content.0.type"),
    (body_with(messages=[user("x"), assistant([{"type": "tool_use", "name": "t"}])]), "messages.1.content.0.id"),
    (body_with(messages=[user([{"type": "tool_result"}])]), "messages.0.content.0.tool_use_id"),
    (body_with(tools=[{"description": "d"}]), "tools.0.name"),
    (body_with(system=3), "system"),
    (body_with(thinking="on"), "thinking"),
]


@pytest.mark.parametrize(("body", "field"), BODY_PROBLEMS)
def test_body_problems_name_the_field(body: dict[str, Any], field: str) -> None:
    problem = conv.check_body(body)
    assert problem is not None and problem.field == field
    # Top-level fields are worded like every surface's ("Missing required field 'model'."), the rest like Anthropic.
    assert problem.message.startswith(field) or f"'{field}'" in problem.message


def test_count_tokens_body_needs_no_max_tokens() -> None:
    assert conv.check_body({"model": "m", "messages": [user("x")]}, need_max_tokens=False) is None


WARMUPS = [
    ("Warmup", True),
    ([{"type": "text", "text": "Warmup"}], True),
    (
        [{"type": "text", "text": "<system-reminder>x</system-reminder>"}, {"type": "text", "text": "Warmup\nready"}],
        True,
    ),
    ([{"type": "tool_result", "tool_use_id": "t", "is_error": True, "content": "Warmup aborted"}], True),
    ("Warmup " + "x" * 200, False),
    ("Please warm up the cache", False),
    ([{"type": "text", "text": "Warmups are fun"}], False),
]


@pytest.mark.parametrize(("content", "expected"), WARMUPS)
def test_warmup_detection(content: Any, expected: bool) -> None:
    assert conv.is_warmup([user(content)]) is expected


BACKGROUND = [
    ("Please write a 5-10 word title for the following conversation: ...", [], True),
    ("<session>\nfix it\n</session>\n\nWrite the title in the language the user wrote in, regardless of it.", [], True),
    ("hello", ["Summarize this coding conversation in under 50 characters."], True),
    ("hello", ["You are Claude Code. " + "x" * 3000 + " summarize this coding conversation"], False),  # long: real work
    ("Write a 5-10 word title " + "x" * 900, [], False),
    ("Fix the failing test in parser.py", [], False),
]


@pytest.mark.parametrize(("text", "system", "expected"), BACKGROUND)
def test_background_detection(text: str, system: list[str], expected: bool) -> None:
    assert conv.is_background_task([user(text)], system) is expected


CC_USER_ID = '{"device_id":"d","account_uuid":"","session_id":"s-123"}'
REMINDER = {"type": "text", "text": "<system-reminder>r</system-reminder>"}
SESSIONS = [
    ({"messages": [user("Hello world")]}, "hdr-1", "hdr-1"),
    ({"metadata": {"user_id": CC_USER_ID}, "messages": [user("x")]}, None, "s-123"),
    (
        {"metadata": {"user_id": "user_abc_account__session_42"}, "messages": [user("x")]},
        None,
        "user_abc_account__session_42",
    ),
    ({"metadata": {"user_id": "session-7"}, "messages": [user("Find the bug")]}, None, "sid-"),
    ({"messages": [user([REMINDER, {"type": "text", "text": "Find the bug"}])]}, None, "sid-"),
]


@pytest.mark.parametrize(("body", "header", "expected"), SESSIONS)
def test_session_key(body: dict[str, Any], header: str | None, expected: str) -> None:
    key = conv.session_key(body, header)
    assert key.startswith(expected)
    if expected == "sid-":
        # The first real user text decides, so every turn of a conversation gets the same key.
        later = {"messages": [*body["messages"], assistant("ok"), user("and another thing")]}
        assert conv.session_key(later, None) == key == conv.session_key({"messages": [user("Find the bug")]}, None)


def test_thinking_hints() -> None:
    assert conv.thinking_request(
        {"thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "low"}}
    ) == conv.Thinking("adaptive", None, "low", True)
    assert conv.thinking_request({"thinking": {"budget_tokens": 0}}).mode == "disabled"
    assert conv.thinking_request({}) == conv.Thinking()


def test_estimate_is_never_zero() -> None:
    req = to_gemini(
        {
            "model": "m",
            "max_tokens": 1,
            "messages": [
                user([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}])
            ],
        },
        SONNET,
    ).request
    assert conv.estimate_tokens(req) > conv.IMAGE_TOKENS


# -- response: Gemini chunks → Anthropic events --------------------------------------------------------------------


def chunk(*parts: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], "responseId": "resp1", "modelVersion": "x"}
    if usage:
        out["usageMetadata"] = usage
    return out


# The last event of every finished Anthropic stream, byte for byte (an error event ends a failed one instead).
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic SSE bytes, framed strictly (helpers.strict_sse) → (event name, JSON); every event is named and
    the name repeats the JSON's type; message_stop, if present, is the last event."""
    out = []
    for name, data in strict_sse(raw):
        assert name is not None, "Anthropic events are always named"
        payload = orjson.loads(data)
        assert payload["type"] == name
        out.append((name, payload))
    names = [name for name, _ in out]
    assert "message_stop" not in names[:-1], names
    return out


def run(
    chunks: list[dict[str, Any]], mapped: str = OPUS, **kwargs: Any
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], SignatureCache]:
    """The same chunks through the streaming converter and the collector: (events, collected message, cache)."""
    cache = SignatureCache.create()
    stream = StreamConverter("claude-opus-4-7", mapped, cache, "sess", **kwargs)
    raw = b"".join(stream.feed(c) for c in chunks) + stream.finish()
    assert raw.endswith(MESSAGE_STOP)
    collector = MessageCollector("claude-opus-4-7", mapped, SignatureCache.create(), "sess", **kwargs)
    for c in chunks:
        collector.add(c)
    return events(raw), collector.result(), cache


def kinds(evs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = []
    for name, payload in evs:
        if name == "content_block_start":
            out.append("start:" + payload["content_block"]["type"])
        elif name == "content_block_delta":
            out.append(payload["delta"]["type"])
        else:
            out.append(name)
    return out


USAGE = {"promptTokenCount": 100, "cachedContentTokenCount": 40, "candidatesTokenCount": 7, "thoughtsTokenCount": 5}


def test_text_stream() -> None:
    evs, message, _ = run(
        [chunk({"text": "Hel"}), chunk({"text": "lo"}), chunk({"text": "!"}, finish="STOP", usage=USAGE)]
    )
    assert kinds(evs) == [
        "message_start",
        "start:text",
        "text_delta",
        "text_delta",
        "text_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = evs[0][1]["message"]
    assert start["id"] == "msg_resp1" and start["model"] == "claude-opus-4-7" and start["role"] == "assistant"
    delta = evs[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": 60,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 40,
        "output_tokens": 12,
    }
    assert message["content"] == [{"type": "text", "text": "Hello!"}]
    assert message["stop_reason"] == "end_turn" and message["usage"] == delta["usage"]


def test_thinking_then_tool_call() -> None:
    chunks = [
        chunk({"text": "Let me ", "thought": True}),
        chunk({"text": "think.", "thought": True, "thoughtSignature": CLAUDE_SIG}),
        chunk({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "toolu_x"}}, finish="STOP"),
    ]
    evs, message, cache = run(chunks)
    assert kinds(evs) == [
        "message_start",
        "start:thinking",
        "thinking_delta",
        "thinking_delta",
        "signature_delta",
        "content_block_stop",
        "start:tool_use",
        "input_json_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": CLAUDE_SIG},
        {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    # The next turn finds the signature by call id and session, and knows its family.
    assert cache.for_tool_call("toolu_x") == CLAUDE_SIG and cache.for_session("sess") == CLAUDE_SIG
    assert cache.family(CLAUDE_SIG) == "claude"


def test_gemini_call_signature_is_cached_and_ids_are_made_up() -> None:
    chunks = [
        chunk(
            {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": GEMINI_SIG},
            {"functionCall": {"name": "b", "args": {"x": 1}}},
            finish="STOP",
        )
    ]
    evs, message, cache = run(chunks, FLASH)
    ids = [b["id"] for b in message["content"]]
    assert all(i.startswith("toolu_") for i in ids) and len(set(ids)) == 2
    starts = [p["content_block"]["id"] for n, p in evs if n == "content_block_start"]
    assert len(starts) == 2
    assert cache.for_tool_call(starts[0]) == GEMINI_SIG and cache.family(GEMINI_SIG) == "gemini"


def test_lone_signature_becomes_empty_thinking_block_for_claude() -> None:
    chunks = [chunk({"text": "", "thoughtSignature": CLAUDE_SIG}), chunk({"text": "answer"}, finish="STOP")]
    _, message, _ = run(chunks)
    assert message["content"] == [
        {"type": "thinking", "thinking": "", "signature": CLAUDE_SIG},
        {"type": "text", "text": "answer"},
    ]


def test_omitted_thinking_sends_only_the_signature() -> None:
    chunks = [
        chunk({"text": "secret", "thought": True, "thoughtSignature": CLAUDE_SIG}),
        chunk({"text": "done"}, finish="STOP"),
    ]
    evs, message, _ = run(chunks, omit_thinking=True)
    assert "thinking_delta" not in kinds(evs)
    assert message["content"][0] == {"type": "thinking", "thinking": "", "signature": CLAUDE_SIG}


@pytest.mark.parametrize(
    ("finish", "stop"), [("MAX_TOKENS", "max_tokens"), ("STOP", "end_turn"), ("SAFETY", "end_turn"), (None, "end_turn")]
)
def test_stop_reasons(finish: str | None, stop: str) -> None:
    evs, message, _ = run([chunk({"text": "x"}, finish=finish)])
    assert message["stop_reason"] == stop
    assert kinds(evs)[-2:] == ["message_delta", "message_stop"]  # also when upstream ended without a reason


def test_image_and_grounding_become_text() -> None:
    last = chunk({"inlineData": {"mimeType": "image/png", "data": PNG}}, finish="STOP")
    last["candidates"][0]["groundingMetadata"] = {
        "webSearchQueries": ["cats"],
        "groundingChunks": [{"web": {"uri": "https://c.at", "title": "Cats"}}],
    }
    _, message, _ = run([last])
    (block,) = message["content"]
    assert block["text"].startswith(f"![image](data:image/png;base64,{PNG})")
    assert "Searched for: cats" in block["text"] and "[Cats](https://c.at)" in block["text"]


def test_in_stream_error_event() -> None:
    stream = StreamConverter("m", OPUS, SignatureCache.create())
    first = stream.feed(chunk({"text": "partial"}))
    evs = events(first + stream.error("upstream stream interrupted", "overloaded_error"))
    assert evs[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "upstream stream interrupted"}},
    )
    assert stream.feed(chunk({"text": "late"})) == b""


def test_usage_without_cache_or_thoughts() -> None:
    assert usage_of({"promptTokenCount": 10, "candidatesTokenCount": 3}) == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 3,
    }


def test_warmup_events() -> None:
    raw = warmup_events("claude-x")
    assert raw.endswith(MESSAGE_STOP)
    evs = events(raw)
    assert [n for n, _ in evs] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert evs[2][1]["delta"]["text"] == "OK"
