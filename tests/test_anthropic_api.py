"""The Anthropic surface end to end: the real `anthropic` SDK → agfast → the Google simulator (and a local z.ai
stand-in). What the simulator received is asserted as much as what the SDK got back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from helpers import ServerThread, request
from stack import KEY, Fault, agfast_on, generations

from agfast.config import ZaiConfig
from agfast.sim import GoogleSimulator
from agfast.sim.answers import count_tokens as sim_count

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
SONNET = "claude-sonnet-4-6"  # → claude-sonnet-4-6 upstream (no thinking)
NEW_OPUS = "claude-opus-4-7"  # newer than the table: routed by family to claude-opus-4-6-thinking
WEATHER: Any = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
ADAPTIVE: Any = {"type": "adaptive"}


@contextmanager
def sdk(st: ServerThread) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=st.url, api_key=KEY, max_retries=0) as client:
        yield client


def sent(sim: GoogleSimulator, index: int = -1) -> dict[str, Any]:
    """The GenerateContentRequest of one upstream generation call."""
    return generations(sim)[index].json["request"]  # type: ignore[no-any-return]


def raw(
    st: ServerThread, body: dict[str, Any], path: str = "/v1/messages", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    reply = request(st.port, "POST", path, orjson.dumps(body), {"Content-Type": "application/json", **headers})
    return reply.status, reply.headers, reply.body


# -- messages ------------------------------------------------------------------------------------------------------


def test_plain_message(stack: ServerThread, sim: GoogleSimulator) -> None:
    with sdk(stack) as client:
        got = client.messages.with_raw_response.create(
            model=SONNET, max_tokens=256, messages=[{"role": "user", "content": "Hello simulator"}]
        )
        message = got.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == "[claude-sonnet-4-6] echo: Hello simulator"
    assert message.stop_reason == "end_turn" and message.model == SONNET and message.id.startswith("msg_")
    (call,) = generations(sim)
    assert call.action == "streamGenerateContent"  # upstream is always streamed
    assert got.headers["x-account-email"] == call.email and got.headers["x-mapped-model"] == "claude-sonnet-4-6"
    envelope = call.json
    assert envelope["model"] == "claude-sonnet-4-6" and envelope["requestId"].startswith("agent/antigravity/")


def test_streamed_message_assembled_by_sdk(stack: ServerThread, sim: GoogleSimulator) -> None:
    prompt: Any = [{"role": "user", "content": "Stream this please"}]
    with sdk(stack) as client, client.messages.stream(model=SONNET, max_tokens=256, messages=prompt) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) == 3  # one delta per upstream chunk
    assert "".join(texts) == final.content[0].text == "[claude-sonnet-4-6] echo: Stream this please"  # type: ignore[union-attr]
    usage = final.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert final.stop_reason == "end_turn"


def test_tool_loop_with_thinking_sends_signatures_back(stack: ServerThread, sim: GoogleSimulator) -> None:
    messages: list[Any] = [{"role": "user", "content": "Please call get_weather for Paris"}]
    with sdk(stack) as client:
        first = client.messages.create(
            model=NEW_OPUS, max_tokens=8000, thinking=ADAPTIVE, tools=[WEATHER], messages=messages
        )
        assert first.stop_reason == "tool_use"
        thinking, call = first.content
        assert thinking.type == "thinking" and call.type == "tool_use"
        assert thinking.signature and call.name == "get_weather" and call.input == {"city": "sim-city"}
        messages += [
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21°C"}]},
        ]
        with client.messages.stream(
            model=NEW_OPUS, max_tokens=8000, thinking=ADAPTIVE, tools=[WEATHER], messages=messages
        ) as stream:
            final = stream.get_final_message()
    assert final.content[0].type == "thinking"
    assert final.content[-1].text == '[claude-opus-4-6-thinking] tool get_weather returned: {"result":"sunny, 21°C"}'  # type: ignore[union-attr]
    second = sent(sim)
    model_turn = second["contents"][1]["parts"]
    assert model_turn[0] == {"text": thinking.thinking, "thought": True, "thoughtSignature": thinking.signature}
    assert model_turn[1]["functionCall"]["id"] == call.id
    assert second["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"
    assert second["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingLevel": "HIGH"}
    assert generations(sim)[0].model == generations(sim)[1].model == "claude-opus-4-6-thinking"


def test_thinking_request_on_sonnet_uses_its_thinking_variant(stack: ServerThread, sim: GoogleSimulator) -> None:
    with sdk(stack) as client:
        got = client.messages.with_raw_response.create(
            model=SONNET, max_tokens=4000, thinking=ADAPTIVE, messages=[{"role": "user", "content": "Think first"}]
        )
    assert got.headers["x-mapped-model"] == "claude-sonnet-4-6-thinking"
    assert [b.type for b in got.parse().content] == ["thinking", "text"]


def test_images_and_system_prompt(stack: ServerThread, sim: GoogleSimulator) -> None:
    with sdk(stack) as client:
        message = client.messages.create(
            model=SONNET,
            max_tokens=128,
            system=[{"type": "text", "text": "You review images."}, {"type": "text", "text": "Be terse."}],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                        {"type": "text", "text": "What is in the picture?"},
                    ],
                }
            ],
        )
    assert message.content[0].text.endswith("What is in the picture?")  # type: ignore[union-attr]
    upstream = sent(sim)
    assert upstream["contents"][0]["parts"][0] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    system = [p["text"] for p in upstream["systemInstruction"]["parts"]]
    assert system[1:3] == ["You review images.", "Be terse."]
    assert message.usage.input_tokens == sim_count(upstream)  # the image counts as Google charges it


def test_cache_control_never_reaches_google(stack: ServerThread, sim: GoogleSimulator) -> None:
    cc: Any = {"type": "ephemeral"}
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Please call get_weather for Oslo", "cache_control": cc},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    "cache_control": cc,
                },
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
                    "cache_control": cc,
                },
            ],
        }
    ]
    tools = [{**WEATHER, "cache_control": cc}]
    system: Any = [{"type": "text", "text": "sys", "cache_control": cc}]
    with sdk(stack) as client:
        first = client.messages.create(
            model=NEW_OPUS, max_tokens=8000, thinking=ADAPTIVE, system=system, tools=tools, messages=messages
        )
        blocks = [{**b.model_dump(exclude_none=True), "cache_control": cc} for b in first.content]
        tool_id = first.content[-1].id  # type: ignore[union-attr]
        messages += [
            {"role": "assistant", "content": blocks},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "snow", "cache_control": cc}],
            },
        ]
        second = client.messages.create(
            model=NEW_OPUS, max_tokens=8000, thinking=ADAPTIVE, system=system, tools=tools, messages=messages
        )
    assert second.stop_reason == "end_turn"
    for call in generations(sim):
        assert b"cache_control" not in call.body


def test_consecutive_user_messages_are_merged(stack: ServerThread, sim: GoogleSimulator) -> None:
    with sdk(stack) as client:
        message = client.messages.create(
            model=SONNET,
            max_tokens=64,
            messages=[
                {"role": "user", "content": "first"},
                {"role": "user", "content": "second"},
                {"role": "user", "content": [{"type": "text", "text": "third"}]},
            ],
        )
    assert sent(sim)["contents"] == [{"role": "user", "parts": [{"text": "first\n\nsecond"}, {"text": "third"}]}]
    assert message.content[0].text == "[claude-sonnet-4-6] echo: first\n\nsecond\nthird"  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_warmup_is_answered_locally(stack: ServerThread, sim: GoogleSimulator, stream: bool) -> None:
    body = {"model": NEW_OPUS, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "Warmup"}]}
    with sdk(stack) as client:
        if stream:
            with client.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as s:  # type: ignore[arg-type]
                message = s.get_final_message()
        else:
            got = client.messages.with_raw_response.create(**body)  # type: ignore[call-overload]
            assert got.headers["x-warmup-intercepted"] == "true"
            message = got.parse()
    assert message.content[0].text == "OK"  # type: ignore[union-attr]
    assert generations(sim) == []
    status, headers, _ = raw(stack, body)
    assert status == 200 and headers["x-warmup-intercepted"] == "true"


def test_background_task_goes_to_the_background_model(stack: ServerThread, sim: GoogleSimulator) -> None:
    with sdk(stack) as client:
        got = client.messages.with_raw_response.create(
            model=NEW_OPUS,
            max_tokens=200,
            thinking=ADAPTIVE,
            tools=[WEATHER],
            messages=[{"role": "user", "content": "Please write a 5-10 word title for the following conversation."}],
        )
    assert got.headers["x-mapped-model"] == "gemini-2.5-flash"
    upstream = sent(sim)
    assert "tools" not in upstream and "thinkingConfig" not in upstream["generationConfig"]


def test_web_search_alone_goes_to_gemini(stack: ServerThread, sim: GoogleSimulator) -> None:
    search: Any = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
    with sdk(stack) as client:
        got = client.messages.with_raw_response.create(
            model=SONNET, max_tokens=100, tools=[search], messages=[{"role": "user", "content": "news today?"}]
        )
    assert got.headers["x-mapped-model"] == "gemini-2.5-flash"
    assert sent(sim)["tools"] == [{"googleSearch": {}}]
    assert got.parse().content[0].text == "[gemini-2.5-flash] echo: news today?"  # type: ignore[union-attr]


def test_claude_code_request_shape(stack: ServerThread, sim: GoogleSimulator) -> None:
    """What Claude Code 2.1 sends: ?beta=true, role "system" in messages, metadata.user_id as JSON, adaptive
    thinking with display omitted, context_management, output_config, a model newer than any table."""
    body = {
        "model": "claude-opus-5-5",
        "max_tokens": 128000,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "hi there"},
                ],
            },
            {"role": "system", "content": "Available agents: none"},
        ],
        "tools": [WEATHER],
        "metadata": {"user_id": '{"device_id":"d","account_uuid":"","session_id":"sess-json"}'},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
    }
    status, headers, data = raw(stack, body, "/v1/messages?beta=true", **{"anthropic-beta": "claude-code-20250219"})
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert headers["x-mapped-model"] == "claude-opus-4-6-thinking"
    assert b"event: message_stop" in data and b"thinking_delta" not in data and b"signature_delta" in data
    upstream = sent(sim)
    assert [p["text"] for p in upstream["systemInstruction"]["parts"]][1:3] == [
        "You are Claude Code.",
        "Available agents: none",
    ]
    assert upstream["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "MEDIUM"
    assert generations(sim)[-1].json["requestId"].startswith("agent/antigravity/sess-jso/")


def test_silent_upstream_gets_pings(stack: ServerThread, sim: GoogleSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's 1 s tick writes the ping; the real interval (15 s) is shortened so one gap is enough.
    monkeypatch.setattr("agfast.convert.anthropic.PING_EVERY", 0.5)
    monkeypatch.setattr(sim, "chunk_delay", 1.6)
    body = {"model": SONNET, "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "slow"}]}
    status, _, data = raw(stack, body)
    assert status == 200 and b'event: ping\ndata: {"type": "ping"}\n\n' in data
    assert data.index(b"event: ping") > data.index(b"content_block_delta")  # between two upstream chunks
    assert data.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_usage_reports_cached_prompt_tokens(stack: ServerThread, sim: GoogleSimulator) -> None:
    long_text = "The simulator caches long prompts. " * 200  # well over its 1024-token caching floor
    body: Any = {"model": SONNET, "max_tokens": 64, "messages": [{"role": "user", "content": long_text}]}
    with sdk(stack) as client:
        first = client.messages.create(**body)
        second = client.messages.create(**body)
    prompt = sim_count(sent(sim))
    assert first.usage.input_tokens == prompt and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens and second.usage.cache_read_input_tokens > 0
    assert second.usage.input_tokens == prompt - second.usage.cache_read_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.output_tokens == first.usage.output_tokens > 0


def test_output_tokens_include_thinking(stack: ServerThread, sim: GoogleSimulator) -> None:
    with sdk(stack) as client:
        message = client.messages.create(
            model=NEW_OPUS, max_tokens=4000, thinking=ADAPTIVE, messages=[{"role": "user", "content": "count me"}]
        )
    thought, text = message.content
    expected = -(-len(thought.thinking) // 4) + -(-len(text.text) // 4)  # type: ignore[union-attr]
    assert message.usage.output_tokens == expected


# -- count_tokens --------------------------------------------------------------------------------------------------


def test_count_tokens_is_the_upstream_count(stack: ServerThread, sim: GoogleSimulator) -> None:
    body: Any = {
        "model": SONNET,
        "system": "Count carefully.",
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": "How many tokens is this message?"}],
    }
    with sdk(stack) as client:
        counted = client.messages.count_tokens(**body)
        message = client.messages.create(max_tokens=64, **body)
    (count,) = [r for r in sim.requests if r.action == "countTokens"]
    assert counted.input_tokens > 0
    assert counted.input_tokens == sim_count(count.json["request"]) == message.usage.input_tokens


def test_count_tokens_falls_back_to_a_flagged_estimate(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=400, action="countTokens", times=None))
    body = {"model": SONNET, "messages": [{"role": "user", "content": "estimate me " * 50}]}
    status, headers, data = raw(stack, body, "/v1/messages/count_tokens")
    assert status == 200 and headers["x-agfast-token-estimate"] == "true"
    assert orjson.loads(data)["input_tokens"] > 100


# -- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": SONNET, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": SONNET, "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"model": SONNET, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
         "messages.0.content.0.tool_use_id"),
    ],
)  # fmt: skip
def test_invalid_body_names_the_field(stack: ServerThread, sim: GoogleSimulator, body: Any, field: str) -> None:
    status, _, data = raw(stack, body)
    assert status == 400
    error = orjson.loads(data)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"]
    assert generations(sim) == []


def test_prompt_too_long(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(
        Fault(
            "status",
            status=400,
            message="The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            action="streamGenerateContent",
        )
    )
    with sdk(stack) as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "huge"}])
    assert caught.value.status_code == 400
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("prompt is too long")
    assert len(generations(sim)) == 1  # not retried


EXHAUSTION = [
    # (upstream status on every attempt, client status, Anthropic error type)
    (429, 429, "rate_limit_error", anthropic.RateLimitError),
    (500, 500, "api_error", anthropic.InternalServerError),
    (503, 503, "overloaded_error", anthropic.InternalServerError),
    (403, 503, "overloaded_error", anthropic.InternalServerError),  # 403 → 503: Claude Code must not log out
    (401, 503, "overloaded_error", anthropic.InternalServerError),  # nor report a bad key for Google's refusal
]


@pytest.mark.parametrize(("upstream", "status", "kind", "exc"), EXHAUSTION)
def test_exhaustion(
    stack: ServerThread, sim: GoogleSimulator, upstream: int, status: int, kind: str, exc: type
) -> None:
    reason = (
        {"reason": "RATE_LIMIT_EXCEEDED"} if upstream == 429 else {"reason": "ACCESS_DENIED"} if upstream == 403 else {}
    )
    sim.script(Fault("status", status=upstream, action="streamGenerateContent", times=None, **reason))  # type: ignore[arg-type]
    with sdk(stack) as client, pytest.raises(exc) as caught:
        client.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "fail"}])
    assert caught.value.status_code == status  # type: ignore[attr-defined]
    error = caught.value.body["error"]  # type: ignore[attr-defined]
    assert error["type"] == kind and "attempts failed" in error["message"]
    assert len([g for g in generations(sim) if g.status == upstream]) >= 2


def test_no_account_is_overloaded(stack: ServerThread, sim: GoogleSimulator) -> None:
    stack.call(stack.app.pool.members.clear)
    with sdk(stack) as client, pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "anyone?"}])
    assert caught.value.status_code == 503
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def signed_history(signature: str) -> list[Any]:
    return [
        {"role": "user", "content": "Please call get_weather for Rome"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should check the weather.", "signature": signature},
                {"type": "tool_use", "id": "toolu_old", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_old", "content": "hot"}]},
    ]


def test_signature_error_recovers_once(stack: ServerThread, sim: GoogleSimulator) -> None:
    # A signature Google never issued (another proxy's, say): refused, then resent once with thinking as text.
    with sdk(stack) as client:
        message = client.messages.create(
            model=NEW_OPUS, max_tokens=8000, thinking=ADAPTIVE, tools=[WEATHER], messages=signed_history("Q" * 120)
        )
    assert message.content[-1].text.startswith("[claude-opus-4-6-thinking] tool get_weather returned")  # type: ignore[union-attr]
    refused, retried = generations(sim)
    assert refused.status == 400 and retried.status == 200 and refused.email == retried.email
    parts = retried.json["request"]["contents"][1]["parts"]
    assert parts[0] == {"text": "I should check the weather."}
    assert "thinkingConfig" not in retried.json["request"]["generationConfig"]


def test_signature_error_is_not_retried_twice(stack: ServerThread, sim: GoogleSimulator) -> None:
    message = "messages.1.content.0: Invalid `signature` in `thinking` block"
    sim.script(Fault("status", status=400, message=message, action="streamGenerateContent", times=None))
    with sdk(stack) as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=NEW_OPUS, max_tokens=8000, thinking=ADAPTIVE, tools=[WEATHER], messages=signed_history("Q" * 120)
        )
    assert caught.value.body["error"]["message"] == message  # type: ignore[index]
    assert len(generations(sim)) == 2


def test_error_after_first_byte_arrives_in_stream(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("stream_error", status=503, after_chunks=1, action="streamGenerateContent"))
    texts: list[str] = []
    prompt: Any = [{"role": "user", "content": "break"}]
    with sdk(stack) as client, pytest.raises(anthropic.APIStatusError) as caught:  # noqa: SIM117 - raises wraps it
        with client.messages.stream(model=SONNET, max_tokens=64, messages=prompt) as s:
            texts.extend(s.text_stream)
    assert texts == ["[claude-son"]  # the first chunk arrived before the error
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "The model is overloaded. Please try again later."},
    }
    assert len(generations(sim)) == 1  # past the first byte nothing is retried


def test_models_and_housekeeping_routes(stack: ServerThread) -> None:
    with sdk(stack) as client:
        names = {m["id"] for m in client.get("/v1/models/claude", cast_to=object)["data"]}  # type: ignore[index]
    assert "claude-sonnet-4-6" in names
    assert request(stack.port, "HEAD", "/api/hello").status == 200
    assert request(stack.port, "POST", "/v1/api/event_logging/batch", b"{}").status == 200


# -- z.ai dispatch -------------------------------------------------------------------------------------------------

ZAI_EVENTS = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_zai","type":"message","role":'
    b'"assistant","model":"glm-4.7","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,'
    b'"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
    b'"text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"from z.ai"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":2}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


class ZaiStandIn:
    """A tiny Anthropic-compatible server on loopback that records what it was sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _messages(self, req: web.Request) -> web.StreamResponse:
        body = await req.json()
        self.seen.append((req.path, dict(req.headers), body))
        if req.path.endswith("count_tokens"):
            return web.json_response({"input_tokens": 42})
        if not body.get("stream"):
            message = {"id": "msg_zai", "type": "message", "role": "assistant", "model": body["model"],
                       "content": [{"type": "text", "text": "from z.ai"}], "stop_reason": "end_turn",
                       "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2}}  # fmt: skip
            return web.json_response(message)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(req)
        for piece in ZAI_EVENTS.split(b"\n\n")[:-1]:
            await resp.write(piece + b"\n\n")
        await resp.write_eof()
        return resp

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/anthropic/v1/messages", self._messages)
        app.router.add_post("/api/anthropic/v1/messages/count_tokens", self._messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> ZaiStandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/anthropic"


@contextmanager
def zai_stack(sim: GoogleSimulator, tmp_path: Path, mode: str) -> Iterator[tuple[ServerThread, ZaiStandIn]]:
    with ZaiStandIn() as zai:
        config = ZaiConfig(enabled=True, base_url=zai.base_url, api_key="zai-secret-key", dispatch_mode=mode)
        with agfast_on(sim, tmp_path, zai=config) as st:
            yield st, zai


def test_zai_exclusive_streams_back_unchanged(sim: GoogleSimulator, tmp_path: Path) -> None:
    with zai_stack(sim, tmp_path, "exclusive") as (st, zai):
        body = {
            "model": "claude-opus-4-7",
            "max_tokens": 64,
            "stream": True,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "again"},
            ],
        }
        status, headers, data = raw(st, body, **{"x-api-key": KEY, "anthropic-version": "2023-06-01"})
        with sdk(st) as client:
            counted = client.messages.count_tokens(
                model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}]
            )
    assert status == 200 and data == ZAI_EVENTS
    assert headers["x-mapped-model"] == "glm-4.7"
    path, sent_headers, forwarded = zai.seen[0]
    assert path == "/api/anthropic/v1/messages"
    assert sent_headers["x-api-key"] == "zai-secret-key" and sent_headers["anthropic-version"] == "2023-06-01"
    assert forwarded["model"] == "glm-4.7" and b"cache_control" not in orjson.dumps(forwarded)
    assert forwarded["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]}
    ]
    assert counted.input_tokens == 42 and zai.seen[1][2]["model"] == "glm-4.5-air"
    assert generations(sim) == []


def test_zai_pooled_takes_one_slot_per_round(sim: GoogleSimulator, tmp_path: Path) -> None:
    with zai_stack(sim, tmp_path, "pooled") as (st, zai), sdk(st) as client:
        answers = [
            client.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"n{i}"}])
            for i in range(8)
        ]
    # Three Google accounts + z.ai: every fourth request goes to z.ai, starting with the first.
    from_zai = [i for i, a in enumerate(answers) if a.content[0].text == "from z.ai"]  # type: ignore[union-attr]
    assert from_zai == [0, 4] and len(zai.seen) == 2 and len(generations(sim)) == 6


def test_zai_fallback_when_no_google_account(sim: GoogleSimulator, tmp_path: Path) -> None:
    with zai_stack(sim, tmp_path, "fallback") as (st, zai), sdk(st) as client:
        served = client.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": "google"}])
        st.call(st.app.pool.members.clear)
        fallback = client.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": "zai"}])
    assert served.content[0].text.startswith("[claude-sonnet-4-6]")  # type: ignore[union-attr]
    assert fallback.content[0].text == "from z.ai" and len(zai.seen) == 1  # type: ignore[union-attr]


def test_zai_off_and_missing_key(sim: GoogleSimulator, tmp_path: Path) -> None:
    with zai_stack(sim, tmp_path, "off") as (st, zai), sdk(st) as client:
        client.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": "google only"}])
        assert zai.seen == []
        st.config.zai.dispatch_mode = "exclusive"
        st.config.zai.api_key = ""
        with pytest.raises(anthropic.BadRequestError, match="api_key is not set"):
            client.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": "no key"}])


@pytest.mark.parametrize("mode", ["fallback", "pooled"])
def test_a_name_google_does_not_know_goes_to_zai(sim: GoogleSimulator, tmp_path: Path, mode: str) -> None:
    """With z.ai configured, a model name no Google account or table knows (z.ai's own glm-*) is z.ai's to
    answer, not a 404; Google is not asked."""
    with zai_stack(sim, tmp_path, mode) as (st, zai), sdk(st) as client:
        message = client.messages.create(model="glm-4.7", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        assert message.content[0].text == "from z.ai"  # type: ignore[union-attr]
        assert (
            client.messages.count_tokens(model="glm-4.7", messages=[{"role": "user", "content": "hi"}]).input_tokens
            == 42
        )
        assert [body["model"] for _, _, body in zai.seen] == ["glm-4.7", "glm-4.7"]
        assert not [r for r in sim.requests if r.action in ("streamGenerateContent", "countTokens")]
