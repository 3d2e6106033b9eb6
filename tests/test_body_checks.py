"""Bad bodies are a 400 in the caller's shape naming the field, before any upstream call; nothing is a traceback.

Issue #9.4 (crashes: wrong part types, deep nesting) and #9.6 (wrong types and ranges that used to pass), sent
through the real SDKs where they let the bad value through (`extra_body`), raw HTTP otherwise. Every case
also checks the simulator saw no request: a refused body spends no quota.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from helpers import ServerThread, make_config, request
from stack import KEY

from agfast.http.errors import Family
from agfast.http.router import POST, Router
from agfast.sim import GoogleSimulator

MODEL = "gemini-3-flash"
CLAUDE = "claude-sonnet-4-6"
USER = [{"role": "user", "content": "hello"}]
GEMINI_USER = [{"role": "user", "parts": [{"text": "hello"}]}]
JSON = {"content-type": "application/json"}
SHARED_STACK = True  # conftest: one agfast for the module (refused bodies lock no account out)


def nested(levels: int, leaf: bytes = b"1") -> bytes:
    """Raw JSON `levels` objects deep (orjson would refuse to encode it, which is the point)."""
    return b'{"a":' * levels + leaf + b"}" * levels


def deep_schema(levels: int) -> bytes:
    """A tool schema `levels` JSON levels deep: each object level is two (`properties` → `a`)."""
    half = levels // 2
    return b'{"type":"object","properties":{"a":' * half + b'{"type":"string"}' + b"}}" * half


def post(st: ServerThread, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    reply = request(st.port, "POST", path, body, JSON)
    return reply.status, reply.json()


def google_error(doc: dict[str, Any]) -> str:
    err = doc["error"]
    assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT", doc
    assert "Traceback" not in err["message"]
    return str(err["message"])


# -- #9.4: shapes that used to crash with a 500 ---------------------------------------------------------------

GEMINI_PATHS = [
    f"/v1beta/models/{MODEL}:generateContent",
    f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
    f"/v1/models/{MODEL}:generateContent",
    f"/v1/models/{MODEL}:streamGenerateContent",
]


@pytest.mark.parametrize("path", GEMINI_PATHS)
def test_gemini_parts_of_the_wrong_type(stack: ServerThread, sim: GoogleSimulator, path: str) -> None:
    status, doc = post(stack, path, orjson.dumps({"contents": [{"role": "user", "parts": 5}]}))
    assert status == 400
    assert "'contents[0].parts'" in google_error(doc)
    assert sim.requests == []


def test_responses_tool_schema_260_levels_deep(stack: ServerThread, sim: GoogleSimulator) -> None:
    tool = b'{"type":"function","name":"f","parameters":' + deep_schema(260) + b"}"
    body = b'{"model":"' + MODEL.encode() + b'","input":"hi","tools":[' + tool + b"]}"
    status, doc = post(stack, "/v1/responses", body)
    assert status == 400, doc
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["param"].startswith("tools[0].parameters.properties")
    assert sim.requests == []


@pytest.mark.parametrize("surface", ["chat", "responses", "anthropic", "gemini"])
def test_tool_schema_past_the_schema_limit(stack: ServerThread, sim: GoogleSimulator, surface: str) -> None:
    """100 levels: inside the body limit (252), past the schema limit (64); the field is named exactly."""
    schema = deep_schema(100)
    if surface == "chat":
        tools = b'[{"type":"function","function":{"name":"f","parameters":' + schema + b"}}]"
        path, body, field = (
            "/v1/chat/completions",
            b'{"model":"m","messages":' + orjson.dumps(USER),
            "tools[0].function",
        )
    elif surface == "responses":
        tools = b'[{"type":"function","name":"f","parameters":' + schema + b"}]"
        path, body, field = "/v1/responses", b'{"model":"m","input":"hi"', "tools[0]"
    elif surface == "anthropic":
        tools = b'[{"name":"f","input_schema":' + schema + b"}]"
        path, body = "/v1/messages", b'{"model":"claude-sonnet-4-6","max_tokens":10,"messages":' + orjson.dumps(USER)
        field = "tools.0"
    else:
        tools = b'[{"functionDeclarations":[{"name":"f","parameters":' + schema + b"}]}]"
        path, body = f"/v1beta/models/{MODEL}:generateContent", b'{"contents":' + orjson.dumps(GEMINI_USER)
        field = "tools[0].functionDeclarations[0]"
    status, doc = post(stack, path, body + b',"tools":' + tools + b"}")
    assert status == 400, doc
    if surface == "anthropic":
        assert doc["error"]["message"].startswith(f"{field}.input_schema.properties.a"), doc
        assert "64" in doc["error"]["message"]
    elif surface == "gemini":
        assert f"'{field}.parameters.properties.a" in google_error(doc)
    else:
        assert doc["error"]["param"].startswith(f"{field}.parameters.properties.a"), doc
    assert sim.requests == []


@pytest.mark.parametrize(
    ("levels", "text", "refused"),
    [
        (251, "hello", False),  # the body's own level + 251: exactly MAX_BODY_DEPTH (252)
        (252, "hello", True),  # one past it
        (3, "[{" * 300, False),  # more brackets than the limit, all inside a string: shallow all the same
    ],
)
def test_body_depth_limit_is_exact(
    stack: ServerThread, sim: GoogleSimulator, levels: int, text: str, refused: bool
) -> None:
    messages = orjson.dumps([{"role": "user", "content": text}])
    body = b'{"model":"' + MODEL.encode() + b'","messages":' + messages + b',"x_extra":' + nested(levels) + b"}"
    status, doc = post(stack, "/v1/chat/completions", body)
    if refused:
        assert status == 400, doc
        assert doc["error"]["param"].startswith("x_extra.a.a"), doc
        assert "nested more than 252 levels deep" in doc["error"]["message"]
    else:
        assert status == 200, doc


def test_count_tokens_with_a_field_nested_1000_levels(stack: ServerThread, sim: GoogleSimulator) -> None:
    part = b'{"text":"hi","x":' + nested(1000) + b"}"
    body = b'{"contents":[{"role":"user","parts":[' + part + b"]}]}"
    status, doc = post(stack, f"/v1beta/models/{MODEL}:countTokens", body)
    assert status == 400
    assert "'contents[0].parts[0].x.a" in google_error(doc)
    assert sim.requests == []


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1/messages", "anthropic"),
        (f"/v1beta/models/{MODEL}:generateContent", "gemini"),
    ],
)
def test_any_body_nested_past_the_body_limit(stack: ServerThread, sim: GoogleSimulator, path: str, family: str) -> None:
    """Past 252 levels anywhere (here an unknown field): 400, never RecursionError or an encoder failure."""
    status, doc = post(stack, path, b'{"model":"m","junk":' + nested(300) + b"}")
    assert status == 400
    if family == "openai":
        assert doc["error"]["param"].startswith("junk.a.a")
    elif family == "anthropic":
        assert doc["type"] == "error" and doc["error"]["message"].startswith("'junk.a.a")
    else:
        assert "'junk.a.a" in google_error(doc)
    assert sim.requests == []


@pytest.mark.parametrize("surface", ["chat", "responses"])
def test_tool_call_arguments_nested_in_their_json_text(stack: ServerThread, sim: GoogleSimulator, surface: str) -> None:
    """Arguments are JSON inside a string, parsed past the body check: their depth is checked on their own."""
    arguments = nested(100).decode()
    if surface == "chat":
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        body = {"model": MODEL, "messages": [*USER, {"role": "assistant", "tool_calls": [call]}, *USER]}
        path, param = "/v1/chat/completions", "messages[1].tool_calls[0].function.arguments"
    else:
        item = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": arguments}
        body = {"model": MODEL, "input": [{"role": "user", "content": "hi"}, item]}
        path, param = "/v1/responses", "input[1].arguments"
    status, doc = post(stack, path, orjson.dumps(body))
    assert status == 400, doc
    assert doc["error"]["param"] == param
    assert sim.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"metadata":%s}'),
        ("/v1/responses", b'{"model":"%s","input":"hi","metadata":%s}'),
        ("/v1/responses", b'{"model":"%s","input":"hi","stream":true,"metadata":%s}'),
        ("/v1/messages", b'{"model":"%s","max_tokens":9,"messages":[{"role":"user","content":"hi"}],"metadata":%s}'),
        ("/v1beta/models/m:generateContent", b'{"model":"%s","contents":[{"parts":[{"text":"hi"}]}],"x":%s}'),
    ],
)
def test_a_body_at_the_depth_limit_is_served(stack: ServerThread, path: str, body: bytes) -> None:
    """252 levels is allowed: converted, encoded, echoed and answered without an encoder or recursion failure."""
    model = CLAUDE if "messages" in path else MODEL
    reply = request(stack.port, "POST", path.replace("/m:", f"/{MODEL}:"), body % (model.encode(), nested(250)), JSON)
    assert reply.status == 200, reply.body[:300]
    if b'"stream":true' in body:
        assert b"event: response.completed" in reply.body
    else:
        assert reply.json()


RECURSIVE = {
    "$defs": {"node": {"type": "object", "properties": {k: {"$ref": "#/$defs/node"} for k in "abcd"}}},
    "$ref": "#/$defs/node",
}


@pytest.mark.parametrize("surface", ["chat", "anthropic", "gemini"])
def test_recursive_schema_expansion_is_bounded(stack: ServerThread, sim: GoogleSimulator, surface: str) -> None:
    """Four self-references used to expand 4^12 times (minutes of event-loop CPU, a huge request)."""
    if surface == "chat":
        tool = {"type": "function", "function": {"name": "tree", "parameters": RECURSIVE}}
        path, body = "/v1/chat/completions", {"model": MODEL, "messages": USER, "tools": [tool]}
    elif surface == "anthropic":
        tool = {"name": "tree", "input_schema": RECURSIVE}
        path, body = "/v1/messages", {"model": CLAUDE, "max_tokens": 64, "messages": USER, "tools": [tool]}
    else:
        tool = {"functionDeclarations": [{"name": "tree", "parameters": RECURSIVE}]}
        path, body = f"/v1beta/models/{MODEL}:generateContent", {"contents": GEMINI_USER, "tools": [tool]}
    status, doc = post(stack, path, orjson.dumps(body))
    assert status == 200, doc
    [sent] = [r for r in sim.requests if r.action == "streamGenerateContent"]
    assert len(orjson.dumps(sent.json["request"]["tools"])) < 64 * 1024


# -- the last resort: an internal error is a 500 in shape, logged, and shows no internals ---------------------


def _raising(exc: Exception) -> Callable[..., Any]:
    def handler(req: object, resp: object) -> None:
        raise exc

    return handler


def _raising_async(exc: Exception) -> Callable[..., Any]:
    async def handler(req: object, resp: object) -> None:
        await asyncio.sleep(0)
        raise exc

    return handler


SECRET = "sk-internal-detail-1234"


@pytest.mark.parametrize("make", [_raising, _raising_async], ids=["sync", "async"])
def test_internal_error_is_a_500_in_shape_without_internals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: Callable[[Exception], Callable[..., Any]]
) -> None:
    router = Router()
    router.add((POST,), "/v1/chat/completions", make(KeyError(SECRET)), Family.OPENAI)
    router.add((POST,), "/v1/messages", make(RecursionError(SECRET)), Family.ANTHROPIC)
    router.add_model_action("/v1beta/models/", "generateContent", (POST,), make(TypeError(SECRET)), Family.GEMINI)
    caplog.set_level(logging.ERROR, logger="agfast.http")
    with ServerThread(make_config(tmp_path, auth_mode="off"), router) as st:
        for path in ("/v1/chat/completions", "/v1/messages", f"/v1beta/models/{MODEL}:generateContent"):
            reply = request(st.port, "POST", path, b"{}", JSON)
            assert reply.status == 500
            assert SECRET.encode() not in reply.body and b"Traceback" not in reply.body
            doc = reply.json()
            if path.startswith("/v1/chat"):
                assert doc["error"]["type"] == "server_error" and doc["error"]["param"] is None
            elif path.startswith("/v1/messages"):
                assert doc == {"type": "error", "error": {"type": "api_error", "message": doc["error"]["message"]}}
            else:
                assert doc["error"]["code"] == 500 and doc["error"]["status"] == "INTERNAL"
        # The server log keeps what the client does not see; the server keeps serving.
        assert sum(SECRET in (r.exc_text or "") or SECRET in str(r.exc_info) for r in caplog.records) == 3
        assert request(st.port, "POST", "/v1/chat/completions", b"{}", JSON).status == 500


# -- #9.6: wrong types and ranges, through the SDKs --------------------------------------------------------------

OPENAI_CHAT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("negative max_tokens", {"max_tokens": -1}, "max_tokens"),
    ("absurd max_tokens", {"max_tokens": 10**12}, "max_tokens"),
    ("fractional max_tokens", {"max_tokens": 10.5}, "max_tokens"),
    ("zero max_completion_tokens", {"max_completion_tokens": 0}, "max_completion_tokens"),
    ("string stream", {"stream": "yes"}, "stream"),
    ("temperature above 2", {"temperature": 3}, "temperature"),
    ("negative top_p", {"top_p": -0.5}, "top_p"),
    ("string top_p", {"top_p": "high"}, "top_p"),
    ("n zero", {"n": 0}, "n"),
    ("n above the candidate limit", {"n": 9}, "n"),
    ("tools not a list", {"tools": {"type": "function"}}, "tools"),
    ("tool without function", {"tools": [{"type": "function"}]}, "tools[0].function"),
    ("tool function without name", {"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    (
        "non-object tool schema",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "object"}}]},
        "tools[0].function.parameters",
    ),
    ("string stream_options", {"stream_options": "usage"}, "stream_options"),
    # Several wrong fields: the one named is the first in the checks' table, whatever order the body has.
    ("n and temperature wrong", {"n": 0, "temperature": 3}, "temperature"),
    ("temperature and stream wrong", {"temperature": 3, "stream": "yes"}, "stream"),
    ("message role a number", {"messages": [{"role": 5, "content": "hi"}]}, "messages[0].role"),
    ("second message content an object", {"messages": [*USER, {"role": "user", "content": {}}]}, "messages[1].content"),
    ("message content a number", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("message part a number", {"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
    ("empty messages", {"messages": []}, "messages"),
    ("tool_calls an object", {"messages": [{"role": "assistant", "tool_calls": {}}]}, "messages[0].tool_calls"),
    (
        "response schema not an object",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}},
        "response_format.json_schema.schema",
    ),
]


@pytest.mark.parametrize(("extra", "param"), [c[1:] for c in OPENAI_CHAT_CASES], ids=[c[0] for c in OPENAI_CHAT_CASES])
def test_openai_chat_refuses(stack: ServerThread, sim: GoogleSimulator, extra: dict[str, Any], param: str) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    messages = extra.pop("messages", USER)
    with client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages, extra_body=extra)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert info.value.param == param
    assert info.value.type == "invalid_request_error"
    assert sim.requests == []


RESPONSES_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("negative max_output_tokens", {"max_output_tokens": -1}, "max_output_tokens"),
    ("absurd max_output_tokens", {"max_output_tokens": 2**40}, "max_output_tokens"),
    ("temperature above 2", {"temperature": 2.5}, "temperature"),
    ("string stream", {"stream": "true"}, "stream"),
    ("tools a string", {"tools": "all"}, "tools"),
    ("function tool without name", {"tools": [{"type": "function", "parameters": {}}]}, "tools[0].name"),
    ("metadata a list", {"metadata": ["a"]}, "metadata"),
    ("instructions an object", {"instructions": {"text": "be brief"}}, "instructions"),
    ("input item content a number", {"input": [{"role": "user", "content": 7}]}, "input[0].content"),
    ("input item type an array", {"input": [{"type": [], "content": "hi"}]}, "input[0].type"),
    (
        "text format schema a string",
        {"text": {"format": {"type": "json_schema", "schema": "{}"}}},
        "text.format.schema",
    ),
]


@pytest.mark.parametrize(("extra", "param"), [c[1:] for c in RESPONSES_CASES], ids=[c[0] for c in RESPONSES_CASES])
def test_openai_responses_refuses(stack: ServerThread, sim: GoogleSimulator, extra: dict[str, Any], param: str) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    with client, pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=extra.pop("input", "hello"), extra_body=extra)
    assert info.value.param == param
    assert sim.requests == []


def test_openai_completions_refuses_a_negative_max_tokens(stack: ServerThread, sim: GoogleSimulator) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    with client, pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=-4)
    assert info.value.param == "max_tokens"
    assert sim.requests == []


ANTHROPIC_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("negative max_tokens", {"max_tokens": -1}, "max_tokens: Input should be greater than or equal to 1"),
    ("absurd max_tokens", {"max_tokens": 10**9}, "max_tokens: Input should be less than or equal to"),
    ("string max_tokens", {"max_tokens": "many"}, "Field 'max_tokens' must be an integer"),
    ("temperature above 1", {"temperature": 1.5}, "temperature: Input should be between 0 and 1"),
    ("string top_p", {"top_p": "x"}, "top_p: Input should be a valid number"),
    ("fractional top_k", {"top_k": 2.5}, "top_k: Input should be a valid integer"),
    ("string stream", {"stream": "yes"}, "stream: Input should be a boolean"),
    ("stop_sequences a string", {"stop_sequences": "END"}, "stop_sequences: Input should be an array"),
    ("tools an object", {"tools": {"name": "f"}}, "tools: Input should be an array"),
    ("tool without name", {"tools": [{"input_schema": {"type": "object"}}]}, "tools.0.name: Field required"),
    ("non-object input_schema", {"tools": [{"name": "f", "input_schema": "x"}]}, "tools.0.input_schema: Input"),
    ("system a number", {"system": 5}, "system: Input should be"),
]


@pytest.mark.parametrize(("extra", "start"), [c[1:] for c in ANTHROPIC_CASES], ids=[c[0] for c in ANTHROPIC_CASES])
def test_anthropic_refuses(stack: ServerThread, sim: GoogleSimulator, extra: dict[str, Any], start: str) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key=KEY, max_retries=0)
    with client, pytest.raises(anthropic.BadRequestError) as info:
        # A bad max_tokens rides in extra_body (which overrides the argument): the SDK itself does arithmetic on it.
        client.messages.create(model=CLAUDE, max_tokens=100, messages=USER, extra_body=extra)  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(start), body
    assert sim.requests == []


GEMINI_SDK_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("negative maxOutputTokens", {"max_output_tokens": -3}, "generationConfig.maxOutputTokens"),
    ("absurd maxOutputTokens", {"max_output_tokens": 2**31 - 1}, "generationConfig.maxOutputTokens"),
    ("temperature above 2", {"temperature": 9.0}, "generationConfig.temperature"),
    ("topP above 1", {"top_p": 1.5}, "generationConfig.topP"),
    ("candidateCount zero", {"candidate_count": 0}, "generationConfig.candidateCount"),
]


@pytest.mark.parametrize(("config", "field"), [c[1:] for c in GEMINI_SDK_CASES], ids=[c[0] for c in GEMINI_SDK_CASES])
def test_gemini_sdk_refuses(stack: ServerThread, sim: GoogleSimulator, config: dict[str, Any], field: str) -> None:
    client = genai.Client(
        api_key="sk-anything",
        http_options=types.HttpOptions(base_url=stack.url, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="hello", config=types.GenerateContentConfig(**config))
    assert info.value.code == 400
    assert info.value.status == "INVALID_ARGUMENT"
    assert f"'{field}'" in str(info.value.message)
    assert sim.requests == []


GEMINI_RAW_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("contents an object", {"contents": {"role": "user"}}, "contents"),
    ("content a string", {"contents": ["hello"]}, "contents[0]"),
    ("part a string", {"contents": [{"role": "user", "parts": ["hello"]}]}, "contents[0].parts[0]"),
    ("text a number", {"contents": [{"role": "user", "parts": [{"text": 5}]}]}, "contents[0].parts[0].text"),
    ("functionCall a list", {"contents": [{"parts": [{"functionCall": []}]}]}, "contents[0].parts[0].functionCall"),
    ("systemInstruction parts", {"systemInstruction": {"parts": 1}}, "systemInstruction.parts"),
    ("tools an object", {"tools": {"functionDeclarations": []}}, "tools"),
    ("declaration without name", {"tools": [{"functionDeclarations": [{}]}]}, "tools[0].functionDeclarations[0].name"),
    ("generationConfig a list", {"generationConfig": []}, "generationConfig"),
    ("maxOutputTokens a string", {"generationConfig": {"maxOutputTokens": "8"}}, "generationConfig.maxOutputTokens"),
    ("snake_case spelling", {"generation_config": {"max_output_tokens": 0}}, "generation_config.max_output_tokens"),
    ("stopSequences numbers", {"generationConfig": {"stopSequences": [1]}}, "generationConfig.stopSequences[0]"),
    ("thinkingBudget a string", {"generationConfig": {"thinkingConfig": {"thinkingBudget": "x"}}}, "thinkingBudget"),
    ("safetySettings an object", {"safetySettings": {}}, "safetySettings"),
]


@pytest.mark.parametrize(("extra", "field"), [c[1:] for c in GEMINI_RAW_CASES], ids=[c[0] for c in GEMINI_RAW_CASES])
def test_gemini_raw_refuses(stack: ServerThread, sim: GoogleSimulator, extra: dict[str, Any], field: str) -> None:
    for action in ("generateContent", "countTokens"):
        status, doc = post(stack, f"/v1beta/models/{MODEL}:{action}", orjson.dumps({"contents": GEMINI_USER, **extra}))
        assert status == 400, (action, doc)
        assert f"{field}'" in google_error(doc), (action, doc)
    assert sim.requests == []


def test_good_bodies_still_pass(stack: ServerThread, sim: GoogleSimulator) -> None:
    """The checks refuse only what is wrong: edge values that are right still reach Google."""
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    with client:
        answer = client.chat.completions.create(
            model=MODEL,
            messages=USER,
            max_tokens=1,
            temperature=2,
            top_p=0,
            n=1,
            stream=False,  # type: ignore[arg-type]
        )
        assert answer.choices
    with anthropic.Anthropic(base_url=stack.url, api_key=KEY, max_retries=0) as claude:
        message = claude.messages.create(model=CLAUDE, max_tokens=1, messages=USER, extra_body={"temperature": 0})  # type: ignore[arg-type]
        assert message.content is not None
    status, _ = post(
        stack,
        f"/v1beta/models/{MODEL}:generateContent",
        orjson.dumps({"contents": GEMINI_USER, "generation_config": {"max_output_tokens": 64, "top_k": 40}}),
    )
    assert status == 200
    assert len(sim.requests) == 3
