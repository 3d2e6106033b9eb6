"""The OpenAI surface end to end: the real `openai` SDK → agfast → the Google simulator.

Expected usage numbers come from the simulator's own answer builder applied to the request it recorded, so
"usage equals usageMetadata" is checked against the source, not against a copy of the arithmetic.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from helpers import ServerThread, request
from stack import KEY, Fault, agfast_on, generations

from agfast.convert import openai as openai_plans
from agfast.sim import GoogleSimulator
from agfast.sim.answers import TINY_PNG, build_answer, count_tokens, render_chunks
from agfast.sim.records import RecordedRequest
from agfast.sim.server import spec_for
from agfast.sim.signatures import SKIP_SIGNATURE, SignatureBook

MODEL = "gemini-3-flash"
SHARED_STACK = True  # conftest: one agfast for the happy paths; tests that script faults take `fresh`
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 2}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}


@contextlib.contextmanager
def client_for(st: ServerThread) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=st.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def client(stack: ServerThread) -> Iterator[openai.OpenAI]:
    with client_for(stack) as c:
        yield c


def sim_usage(rec: RecordedRequest) -> dict[str, int]:
    """The usageMetadata the simulator sent for a recorded request (its last chunk is the total)."""
    req = rec.json["request"]
    assert rec.model is not None
    answer = build_answer(req, spec_for(rec.model), SignatureBook(), prompt_tokens=count_tokens(req))
    return render_chunks(answer, 3, "r", "t")[-1]["usageMetadata"]  # type: ignore[no-any-return]


def assert_usage(usage: Any, meta: dict[str, int]) -> None:
    assert usage.prompt_tokens == meta["promptTokenCount"]
    assert usage.completion_tokens == meta.get("candidatesTokenCount", 0)
    assert usage.total_tokens == meta["totalTokenCount"]
    assert usage.completion_tokens_details.reasoning_tokens == meta.get("thoughtsTokenCount", 0)
    assert usage.prompt_tokens_details.cached_tokens == meta.get("cachedContentTokenCount", 0)


def post(st: ServerThread, path: str, body: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    reply = request(st.port, "POST", path, raw, {"Content-Type": "application/json"})
    return reply.status, reply.json()


# -- models ----------------------------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"gemini-3-flash", "gpt-4o", "claude-sonnet-4-6"} <= set(models)
    assert models["gpt-4o"].owned_by == "antigravity" and models["gpt-4o"].object == "model"


# -- chat completions ------------------------------------------------------------------------------------------


def test_plain_chat(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    prompt = "Tell me something about the simulator"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": prompt}]
    )
    answer = raw.parse()
    (sent,) = generations(sim)
    message = answer.choices[0].message
    assert message.content == f"[{MODEL}] echo: {prompt}"
    assert message.reasoning_content == f"Thinking about: {prompt}"  # type: ignore[attr-defined]
    assert answer.choices[0].finish_reason == "stop"
    assert answer.object == "chat.completion" and answer.model == MODEL and answer.id.startswith("chatcmpl-")
    assert_usage(answer.usage, sim_usage(sent))
    assert raw.headers["x-account-email"] == sent.email and raw.headers["x-mapped-model"] == MODEL
    # Always streamed upstream, in Antigravity's envelope, system prompt after the identity.
    envelope = sent.json
    assert sent.action == "streamGenerateContent" and envelope["requestType"] == "agent"
    assert envelope["requestId"].startswith("agent/antigravity/") and envelope["requestId"].endswith("/2")
    assert envelope["request"]["systemInstruction"]["parts"][1] == {"text": "Be terse."}


def test_model_alias_keeps_the_client_name(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello alias"}])
    assert answer.model == "gpt-4o"
    assert answer.choices[0].message.content == "[gemini-2.5-flash] echo: hello alias"
    assert generations(sim)[0].model == "gemini-2.5-flash"


def test_streaming_chat(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    prompt = "Stream me an answer please"
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    (sent,) = generations(sim)
    assert chunks[0].choices[0].delta.role == "assistant"
    body = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in body) == f"[{MODEL}] echo: {prompt}"
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in body)
    assert reasoning == f"Thinking about: {prompt}"
    assert [c.choices[0].finish_reason for c in body][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert_usage(chunks[-1].usage, sim_usage(sent))
    assert len({c.id for c in chunks}) == 1


def test_reasoning_effort(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    hidden = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "no thoughts shown"}], reasoning_effort="none"
    )
    assert getattr(hidden.choices[0].message, "reasoning_content", None) is None
    shown = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "think a little"}], reasoning_effort="low"
    )
    assert shown.choices[0].message.reasoning_content == "Thinking about: think a little"  # type: ignore[attr-defined]
    first, second = generations(sim)
    assert "thinkingConfig" not in first.json["request"]["generationConfig"]
    assert second.json["request"]["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 8192


def _collect_stream(stream: Any) -> tuple[str, list[dict[str, Any]], str | None]:
    """Text, tool calls (assembled from deltas by index) and finish reason of a streamed chat answer."""
    text, calls, finish = [], {}, None
    for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.id or ""
                slot["name"] += call.function.name or ""
                slot["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return "".join(text), [calls[i] for i in sorted(calls)], finish


def _ask(
    client: openai.OpenAI, messages: list[Any], tools: list[Any], stream: bool
) -> tuple[str, list[Any], str | None]:
    if stream:
        return _collect_stream(client.chat.completions.create(model=MODEL, messages=messages, tools=tools, stream=True))
    answer = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    message = answer.choices[0].message
    calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or ()]
    return message.content or "", calls, answer.choices[0].finish_reason


@pytest.mark.parametrize("stream", [False, True], ids=["collected", "streamed"])
def test_tool_call_round_trip(client: openai.OpenAI, sim: GoogleSimulator, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "Please call get_weather for Paris"}]
    text, calls, finish = _ask(client, messages, [WEATHER], stream)
    assert finish == "tool_calls" and text == ""
    (call,) = calls
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    assert orjson.loads(call["arguments"]) == {"city": "sim-city", "days": 2}
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": "sunny"})
    text, calls, finish = _ask(client, messages, [WEATHER], stream)
    assert (text, calls, finish) == (f'[{MODEL}] tool get_weather returned: {{"result":"sunny"}}', [], "stop")
    # Gemini 3 needs the thought signature of turn 1 on turn 2's call: agfast cached it from the stream.
    second = generations(sim)[-1].json["request"]["contents"]
    model_turn = second[1]["parts"]
    call_part = next(p for p in model_turn if "functionCall" in p)
    assert call_part["functionCall"]["id"] == call["id"]
    assert call_part["thoughtSignature"] != SKIP_SIGNATURE
    assert sim.signatures.family_of(call_part["thoughtSignature"]) == "gemini"
    assert second[2]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"result": "sunny"},
        "id": call["id"],
    }


@pytest.mark.parametrize("model", ["claude-sonnet-4-6-thinking", "claude-sonnet-4-6", "gemini-2.5-flash"])
def test_tool_round_trip_across_families(client: openai.OpenAI, sim: GoogleSimulator, model: str) -> None:
    """Claude thinking needs its signed thought first in the tool turn; Gemini its signature on the call."""
    messages: list[Any] = [{"role": "user", "content": "please call get_weather for Oslo"}]
    message = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER]).choices[0].message
    (call,) = message.tool_calls or ()
    messages += [message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "cold"}]
    final = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == f'[{model}] tool get_weather returned: {{"result":"cold"}}'
    model_turn = generations(sim)[-1].json["request"]["contents"][1]["parts"]
    signed = model_turn[0] if model.startswith("claude") else model_turn[-1]
    if model == "claude-sonnet-4-6":
        assert "thoughtSignature" not in signed  # no thinking, nothing to sign
    else:
        assert sim.signatures.family_of(signed["thoughtSignature"]) == ("claude" if "claude" in model else "gemini")


def test_parallel_tool_calls(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "call get_time and get_weather at once"}]
    answer = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME])
    message = answer.choices[0].message
    assert [c.function.name for c in message.tool_calls or ()] == ["get_time", "get_weather"]
    assert len({c.id for c in message.tool_calls or ()}) == 2
    messages.append(message.model_dump(exclude_none=True))
    for call, result in zip(message.tool_calls or (), ("noon", "rain"), strict=True):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME])
    assert (final.choices[0].message.content or "").split("\n") == [
        f'[{MODEL}] tool get_time returned: {{"result":"noon"}}',
        f'[{MODEL}] tool get_weather returned: {{"result":"rain"}}',
    ]


def test_ids_keep_their_shapes_and_never_repeat(client: openai.OpenAI) -> None:
    """Completion and tool call ids come from a per-process prefix and counter (no random bytes per id): the
    shapes clients know, and no two alike over many requests."""
    answers = [
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "call get_time and get_weather at once"}],
            tools=[WEATHER, TIME],
        )
        for _ in range(20)
    ]
    ids = [a.id for a in answers]
    calls = [c.id for a in answers for c in a.choices[0].message.tool_calls or ()]
    assert len(calls) >= 20
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{24}", i) for i in ids) and len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in calls) and len(set(calls)) == len(calls)


def test_tool_choice_required_forces_a_call(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "no magic word here"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    assert answer.choices[0].finish_reason == "tool_calls"


def test_image_input(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG}"}},
                ],
            }
        ],
    )
    (sent,) = generations(sim)
    assert answer.choices[0].message.content == f"[{MODEL}] echo: What is in this picture?"
    parts = sent.json["request"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": TINY_PNG}}
    assert answer.usage is not None and answer.usage.prompt_tokens == sim_usage(sent)["promptTokenCount"]


def test_json_mode_and_json_schema(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    plain = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"}
    )
    assert orjson.loads(plain.choices[0].message.content or "") == {"model": MODEL, "echo": "json please"}
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    typed = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "a person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    person = orjson.loads(typed.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int) and isinstance(person["tags"], list)
    gen = generations(sim)[-1].json["request"]["generationConfig"]
    assert gen["responseMimeType"] == "application/json" and gen["responseSchema"]["type"] == "OBJECT"


def test_sampling_parameters_reach_google(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    client.chat.completions.create(
        model="gemini-3.1-flash-lite",
        messages=[{"role": "user", "content": "params"}],
        temperature=0.3,
        top_p=0.8,
        max_tokens=300,
        stop=["STOP"],
        seed=11,
        presence_penalty=0.1,
        frequency_penalty=0.2,
    )
    gen = generations(sim)[0].json["request"]["generationConfig"]
    assert {k: gen[k] for k in ("temperature", "topP", "maxOutputTokens", "stopSequences", "seed")} == {
        "temperature": 0.3,
        "topP": 0.8,
        "maxOutputTokens": 300,
        "stopSequences": ["STOP"],
        "seed": 11,
    }
    assert (gen["presencePenalty"], gen["frequencyPenalty"]) == (0.1, 0.2)


def test_undefined_strings_are_dropped(stack: ServerThread) -> None:
    status, body = post(
        stack,
        "/v1/chat/completions",
        {"model": MODEL, "temperature": "[undefined]", "messages": [{"role": "user", "content": "cherry"}]},
    )
    assert status == 200 and body["choices"][0]["message"]["content"] == f"[{MODEL}] echo: cherry"


# -- legacy completions ----------------------------------------------------------------------------------------


def test_completions(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    answer = client.completions.create(model=MODEL, prompt="Complete this sentence")
    assert answer.object == "text_completion"
    assert answer.choices[0].text == f"[{MODEL}] echo: Complete this sentence"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens == sim_usage(generations(sim)[0])["promptTokenCount"]
    streamed = list(client.completions.create(model=MODEL, prompt="Complete this sentence", stream=True))
    assert "".join(c.choices[0].text for c in streamed) == answer.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "stop"


# -- Responses API ---------------------------------------------------------------------------------------------


def test_responses_plain(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    response = client.responses.create(model=MODEL, input="Answer in one line", instructions="You are terse.")
    (sent,) = generations(sim)
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.output_text == f"[{MODEL}] echo: Answer in one line"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    meta = sim_usage(sent)
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        meta["promptTokenCount"],
        meta["candidatesTokenCount"],
        meta["totalTokenCount"],
    )
    assert response.usage.output_tokens_details.reasoning_tokens == meta["thoughtsTokenCount"]
    assert sent.json["request"]["systemInstruction"]["parts"][1] == {"text": "You are terse."}


def test_responses_streamed(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Stream a response") as stream:
        events = list(stream)
        final = stream.get_final_response()
    names = [e.type for e in events]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == f"[{MODEL}] echo: Stream a response"


def test_responses_function_tool_and_previous_response_id(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    tools: list[Any] = [
        {"type": "function", "name": "get_weather", **{k: v for k, v in WEATHER["function"].items() if k != "name"}}
    ]
    first = client.responses.create(model=MODEL, input="Please call get_weather for Rome", tools=tools)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"city": "sim-city", "days": 2}
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}],
        tools=tools,
    )
    assert second.output_text == f'[{MODEL}] tool get_weather returned: {{"result":"rainy"}}'
    assert second.previous_response_id == first.id
    contents = generations(sim)[-1].json["request"]["contents"]
    assert contents[0] == {"role": "user", "parts": [{"text": "Please call get_weather for Rome"}]}
    assert sim.signatures.family_of(contents[1]["parts"][-1]["thoughtSignature"]) == "gemini"
    third = client.responses.create(model=MODEL, previous_response_id=second.id, input="and tomorrow?")
    assert third.output_text == f"[{MODEL}] echo: and tomorrow?"
    roles = [c["role"] for c in generations(sim)[-1].json["request"]["contents"]]
    assert roles == ["user", "model", "user", "model", "user"]


def test_responses_unknown_previous_id(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, previous_response_id="resp_nope", input="hi")
    assert info.value.param == "previous_response_id" and info.value.code == "previous_response_not_found"


def test_responses_prompt_cache_key_keeps_the_account(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    for text in ("first turn of a session", "second turn of a session", "third turn"):
        client.responses.create(model=MODEL, input=text, prompt_cache_key="codex-session-1", store=False)
    assert len({r.email for r in generations(sim)}) == 1


def test_responses_via_completions_route(stack: ServerThread) -> None:
    status, body = post(stack, "/v1/completions", {"model": MODEL, "input": "responses body on completions"})
    assert status == 200 and body["object"] == "response"
    assert body["output"][-1]["content"][0]["text"] == f"[{MODEL}] echo: responses body on completions"


# -- errors ----------------------------------------------------------------------------------------------------

INVALID = [
    ("/v1/chat/completions", {"messages": []}, "model"),
    ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"model": MODEL}, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
        },
        "tools[0].function.parameters",
    ),
    ("/v1/completions", {"model": MODEL}, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": [1, 2, 3]}, "prompt"),
    ("/v1/responses", {"input": "x"}, "model"),
    ("/v1/responses", {"model": MODEL, "input": 7}, "input"),
    ("/responses", {"model": MODEL, "input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
]


@pytest.mark.parametrize(("path", "body", "param"), INVALID)
def test_invalid_requests_are_400_with_param(
    stack: ServerThread, sim: GoogleSimulator, path: str, body: dict[str, Any], param: str
) -> None:
    status, reply = post(stack, path, body)
    assert status == 400, reply
    error = reply["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert generations(sim) == []  # refused before Google saw it


def test_exhausted_accounts_are_429_then_503(fresh: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=429, action="streamGenerateContent", times=None))
    with client_for(fresh) as client:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "anyone there?"}])
        error = info.value.body
        assert isinstance(error, dict) and error["code"] == "rate_limit_exceeded"
        assert "Last status: 429" in error["message"] and "Resource has been exhausted" in error["message"]
        assert len(generations(sim)) == 3
        # Every account is now locked out: no account to try → 503, no upstream call.
        with pytest.raises(openai.InternalServerError) as unavailable:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "still nobody?"}])
        assert unavailable.value.status_code == 503
        assert len(generations(sim)) == 3


def test_model_no_account_has_is_404_model_not_found(fresh: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=404, action="streamGenerateContent", times=None))
    with client_for(fresh) as client, pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "is it there?"}])
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_found"
    assert "not available to any account" in error["message"]


def test_non_retryable_upstream_error_passes_through(fresh: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=400, action="streamGenerateContent", message="Invalid thing in request"))
    with client_for(fresh) as client, pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="this will fail")
    assert info.value.type == "upstream_error" and info.value.message.endswith("Invalid thing in request")


@pytest.mark.parametrize("kind", ["stream_error", "disconnect"])
def test_mid_stream_failure_is_reported_in_stream(fresh: ServerThread, sim: GoogleSimulator, kind: str) -> None:
    sim.script(Fault(kind, action="streamGenerateContent", after_chunks=1, times=None))
    with client_for(fresh) as client:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "break midway"}], stream=True
        )
        got = []
        with pytest.raises(openai.APIError) as info:
            for chunk in stream:
                got.append(chunk)
        assert got and got[0].choices[0].delta.role == "assistant"  # the first chunk made it
        assert "upstream" in info.value.message
        assert "Error" not in info.value.message and "Exception" not in info.value.message
        with client.responses.stream(model=MODEL, input="break the response midway") as events:
            names = [e.type for e in events]
        assert names[0] == "response.created" and names[-1] == "response.failed"
        with pytest.raises(openai.APIStatusError) as collected:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "collected break"}])
        assert collected.value.status_code >= 500


def test_keepalive_ping_while_upstream_is_silent(
    sim: GoogleSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_plans, "KEEPALIVE_S", 0.5)
    monkeypatch.setattr(sim, "chunk_delay", 1.6)  # the server tick writes pings once a second
    with agfast_on(sim, tmp_path) as st:
        body = orjson.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "slow one"}]})
        reply = request(st.port, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    assert reply.status == 200 and reply.headers["content-type"] == "text/event-stream"
    assert b": ping\n\n" in reply.body
    assert reply.body.endswith(b"data: [DONE]\n\n")
