"""The Google simulator over real loopback HTTP: OAuth, userinfo, v1internal, validation, answers, faults."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from helpers import AGFAST_ROOT

from agfast.sim import (
    MODEL_CATALOG,
    SKIP_SIGNATURE,
    Fault,
    GoogleSimulator,
    SimAccount,
    SimulatorThread,
    demo_accounts,
)

P1 = "sim-project-demo1"
P2 = "sim-project-demo2"
E1 = "demo1@sim.local"
E2 = "demo2@sim.local"
RT1 = "1//sim-refresh-demo1"
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "days": {"type": "INTEGER"},
            "unit": {"type": "STRING", "enum": ["c", "f"]},
        },
        "required": ["city", "days", "unit"],
    },
}
TIME = {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}


class Client:
    """aiohttp session bound to one simulator, with helpers that speak its protocols."""

    def __init__(self, sim: GoogleSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.s = session

    async def refresh(self, rt: str = RT1, **extra: str) -> tuple[int, dict[str, Any]]:
        form = {"grant_type": "refresh_token", "refresh_token": rt, "client_id": "cid", "client_secret": "sec"}
        form.update(extra)
        form = {k: v for k, v in form.items() if v != "<drop>"}
        async with self.s.post(self.sim.token_url, data=form) as r:
            return r.status, await r.json()

    async def token(self, rt: str = RT1) -> str:
        status, body = await self.refresh(rt)
        assert status == 200, body
        return str(body["access_token"])

    async def call(
        self, method: str, body: Any, token: str | None = None, prefix: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        url = self.sim.endpoint_at(prefix) + ":" + method
        async with self.s.post(url, data=orjson.dumps(body), headers=hdrs) as r:
            raw = await r.read()
            return r.status, orjson.loads(raw) if raw else None

    async def stream(self, body: Any, token: str, prefix: str = "") -> tuple[int, list[dict[str, Any]], bytes]:
        url = self.sim.endpoint_at(prefix) + ":streamGenerateContent?alt=sse"
        async with self.s.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            raw = await r.read()
            if r.status != 200:
                return r.status, [orjson.loads(raw)], raw
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["x-cloudaicompanion-trace-id"]
            return r.status, parse_sse(raw), raw


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Strict parser for Google's framing: `data: <json>` CRLF CRLF, nothing else."""
    if not raw:
        return []
    assert raw.endswith(b"\r\n\r\n"), raw[-20:]
    events = raw.split(b"\r\n\r\n")[:-1]
    out = []
    for event in events:
        assert event.startswith(b"data: "), event[:40]
        assert b"\n" not in event
        out.append(orjson.loads(event[6:]))
    return out


def arun(fn: Callable[[Client], Awaitable[None]], sim: GoogleSimulator | None = None) -> GoogleSimulator:
    sim = sim or GoogleSimulator(demo_accounts(3), chunks=3)

    async def main() -> None:
        await sim.start()
        try:
            async with aiohttp.ClientSession() as session:
                await fn(Client(sim, session))
        finally:
            await sim.stop()

    asyncio.run(main())
    return sim


def env(
    text: str = "hello world",
    model: str = "gemini-3-flash",
    project: str | None = P1,
    contents: list[dict[str, Any]] | None = None,
    **request: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requestId": "agent/antigravity/abcd1234/1",
        "model": model,
        "userAgent": "antigravity",
        "requestType": "agent",
        "request": {
            "contents": [{"role": "user", "parts": [{"text": text}]}] if contents is None else contents,
            **request,
        },
    }
    if project is not None:
        body["project"] = project
    return body


def texts(chunks: list[dict[str, Any]], thought: bool = False) -> str:
    out = ""
    for chunk in chunks:
        for part in chunk["response"]["candidates"][0]["content"].get("parts", []):
            if "text" in part and bool(part.get("thought")) == thought:
                out += part["text"]
    return out


def parts_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["response"]["candidates"][0]["content"].get("parts", []))


# ----------------------------------------------------------------------------------------------------------
# OAuth + userinfo
# ----------------------------------------------------------------------------------------------------------
def test_token_refresh_issues_new_tokens_and_counts() -> None:
    async def body(c: Client) -> None:
        status, tok = await c.refresh()
        assert status == 200
        assert set(tok) == {"access_token", "expires_in", "scope", "token_type", "id_token"}
        assert tok["access_token"].startswith("ya29.sim-")
        assert tok["expires_in"] == 3599 and tok["token_type"] == "Bearer"
        assert "cloud-platform" in tok["scope"]
        claims = json.loads(__import__("base64").urlsafe_b64decode(tok["id_token"].split(".")[1] + "==").decode())
        assert claims["email"] == E1
        _, tok2 = await c.refresh()
        assert tok2["access_token"] != tok["access_token"]
        assert c.sim.refresh_count[E1] == 2 and c.sim.refresh_count[E2] == 0
        for t in (tok["access_token"], tok2["access_token"]):  # the old token stays valid
            async with c.s.get(c.sim.userinfo_url, headers={"Authorization": f"Bearer {t}"}) as r:
                assert r.status == 200

    arun(body)


@pytest.mark.parametrize(
    ("extra", "status", "error", "description"),
    [
        ({"refresh_token": "1//nope"}, 400, "invalid_grant", "Token has been expired or revoked."),
        ({"refresh_token": "<drop>"}, 400, "invalid_request", "Missing required parameter: refresh_token"),
        ({"grant_type": "<drop>"}, 400, "unsupported_grant_type", "Invalid grant_type: "),
        ({"client_id": "<drop>"}, 400, "invalid_request", "Could not determine client ID from request."),
        ({"client_secret": "<drop>"}, 400, "invalid_request", "client_secret is missing."),
    ],
)
def test_token_errors(extra: dict[str, str], status: int, error: str, description: str) -> None:
    async def body(c: Client) -> None:
        got_status, got = await c.refresh(**extra)
        assert (got_status, got) == (status, {"error": error, "error_description": description})
        assert c.sim.refresh_count[E1] == 0

    arun(body)


def test_token_revoked_and_client_checks() -> None:
    sim = GoogleSimulator(demo_accounts(2), client_id="cid", client_secret="sec")
    sim.accounts[E2].revoked = True
    sim.add_account(SimAccount("bound@sim.local", "1//bound", client_id="other"))

    async def body(c: Client) -> None:
        assert (await c.refresh("1//sim-refresh-demo2"))[1]["error"] == "invalid_grant"
        assert await c.refresh(client_id="wrong") == (
            401,
            {"error": "invalid_client", "error_description": "The OAuth client was not found."},
        )
        assert (await c.refresh(client_secret="wrong"))[1] == {
            "error": "invalid_client",
            "error_description": "Unauthorized",
        }
        assert (await c.refresh("1//bound"))[1]["error"] == "unauthorized_client"
        assert (await c.refresh())[0] == 200

    arun(body, sim)


def test_userinfo_and_auth_errors() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        async with c.s.get(c.sim.userinfo_url, headers={"Authorization": f"Bearer {token}"}) as r:
            info = await r.json()
        assert info["email"] == E1 and info["verified_email"] is True
        assert {"id", "name", "given_name", "picture"} <= set(info)
        async with c.s.get(c.sim.userinfo_url) as r:
            err = await r.json()
            assert r.status == 401 and err["error"]["status"] == "UNAUTHENTICATED"
            assert "missing required authentication credential" in err["error"]["message"]
        async with c.s.get(c.sim.userinfo_url, headers={"Authorization": "Bearer ya29.bogus"}) as r:
            assert r.status == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
            assert "invalid authentication credentials" in (await r.json())["error"]["message"]
        c.sim.expire_access_tokens(E1)
        async with c.s.get(c.sim.userinfo_url, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401
        assert (await c.call("loadCodeAssist", {}, token))[0] == 401

    arun(body)


# ----------------------------------------------------------------------------------------------------------
# loadCodeAssist / fetchAvailableModels
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tier", "current", "paid"),
    [("FREE", "free-tier", None), ("PRO", "standard-tier", "g1-pro-tier"), ("ULTRA", "standard-tier", "g1-ultra-tier")],
)
def test_load_code_assist_per_tier(tier: str, current: str, paid: str | None) -> None:
    sim = GoogleSimulator([SimAccount("t@sim.local", "1//t", project_id="proj-t", tier=tier)])

    async def body(c: Client) -> None:
        token = await c.token("1//t")
        status, got = await c.call("loadCodeAssist", {"metadata": {"ideType": "ANTIGRAVITY"}}, token)
        assert status == 200
        assert got["cloudaicompanionProject"] == "proj-t"
        assert got["currentTier"]["id"] == current and got["currentTier"]["name"]
        assert any(t.get("isDefault") for t in got["allowedTiers"])
        assert (got.get("paidTier") or {}).get("id") == paid
        if paid:
            assert tier.lower() in got["paidTier"]["name"].lower()

    arun(body, sim)


def test_fetch_available_models() -> None:
    sim = GoogleSimulator(demo_accounts(2))
    sim.accounts[E1].remaining.update({"gemini-3-flash": 0.8, "claude-opus-4-6-thinking": 0.0})

    async def body(c: Client) -> None:
        token = await c.token()
        for payload in ({"project": P1}, {}):
            status, got = await c.call("fetchAvailableModels", payload, token)
            assert status == 200
        models = got["models"]
        assert len(models) == 12 and "gpt-oss-120b-medium" in models
        flash = models["gemini-3-flash"]
        assert flash["quotaInfo"]["remainingFraction"] == 0.8
        assert flash["quotaInfo"]["resetTime"].endswith("Z")
        assert flash["supportsThinking"] is True and flash["thinkingBudget"] > 0
        assert {"displayName", "maxTokens", "maxOutputTokens"} <= set(flash)
        assert "remainingFraction" not in models["claude-opus-4-6-thinking"]["quotaInfo"]  # proto3 drops 0
        assert models["gemini-2.5-flash"]["quotaInfo"]["remainingFraction"] == 1.0
        assert "supportsThinking" not in models["gpt-oss-120b-medium"]
        assert got["deprecatedModelIds"]["claude-sonnet-4-5"] == {"newModelId": "claude-sonnet-4-6"}
        status, err = await c.call("fetchAvailableModels", {"project": P2}, token)
        assert status == 403 and err["error"]["status"] == "PERMISSION_DENIED"
        status, err = await c.call("fetchAvailableModels", {"project": "nope"}, token)
        assert status == 404 and err["error"]["message"] == "Resource projects/nope could not be found."

    arun(body, sim)


def test_catalog_override_describes_and_serves_a_model_differently() -> None:
    """A test can make "Google" describe a model otherwise; the description and the serving agree."""
    thinking_sonnet = dataclasses.replace(
        MODEL_CATALOG["claude-sonnet-4-6"], supports_thinking=True, thinking_budget=24576, max_output_tokens=8192
    )
    sim = GoogleSimulator(demo_accounts(1), catalog={"claude-sonnet-4-6": thinking_sonnet})

    async def body(c: Client) -> None:
        token = await c.token()
        _, got = await c.call("fetchAvailableModels", {"project": P1}, token)
        sonnet = got["models"]["claude-sonnet-4-6"]
        assert sonnet["supportsThinking"] is True and sonnet["thinkingBudget"] == 24576
        assert sonnet["maxOutputTokens"] == 8192
        thinking = {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048}, "maxOutputTokens": 4096}
        status, answer = await c.call(
            "generateContent", env("ponder", model="claude-sonnet-4-6", generationConfig=thinking), token
        )
        assert status == 200 and any(p.get("thought") for p in parts_of(answer))
        status, _ = await c.call(
            "generateContent", env("x", model="claude-sonnet-4-6", generationConfig={"maxOutputTokens": 9000}), token
        )
        assert status == 400  # the described output limit is enforced

    arun(body, sim)
    # the built-in catalog itself is untouched
    assert GoogleSimulator().catalog["claude-sonnet-4-6"].supports_thinking is False


# ----------------------------------------------------------------------------------------------------------
# generateContent / streamGenerateContent / countTokens
# ----------------------------------------------------------------------------------------------------------
def test_non_stream_echo_and_usage_matches_count_tokens() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        request = env(
            "what is up",
            model="gemini-3.1-flash-lite",
            systemInstruction={"role": "user", "parts": [{"text": "You are a helpful assistant."}]},
            tools=[{"functionDeclarations": [WEATHER]}],
        )
        status, got = await c.call("generateContent", request, token)
        assert status == 200, got
        assert got["traceId"]
        resp = got["response"]
        assert parts_of(got) == [{"text": "[gemini-3.1-flash-lite] echo: what is up"}]
        assert resp["candidates"][0]["finishReason"] == "STOP"
        assert resp["modelVersion"] == "gemini-3.1-flash-lite" and resp["responseId"]
        usage = resp["usageMetadata"]
        count_body = {"request": {k: v for k, v in request["request"].items() if k != "generationConfig"}}
        status, counted = await c.call("countTokens", count_body, token)
        assert status == 200 and set(counted) == {"totalTokens"}
        assert usage["promptTokenCount"] == counted["totalTokens"] > 10
        assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]

    arun(body)


def test_sse_stream_chunks_framing_and_usage() -> None:
    sim = GoogleSimulator(demo_accounts(1), chunks=4, chunk_delay=0.01)

    async def body(c: Client) -> None:
        token = await c.token()
        request = env("tell me a story about streams", model="gemini-2.5-flash")
        request["request"]["generationConfig"] = {"thinkingConfig": {"thinkingBudget": 0}}
        status, chunks, raw = await c.stream(request, token)
        assert status == 200
        assert raw.count(b"data: ") == 4 == len(chunks)
        assert texts(chunks) == "[gemini-2.5-flash] echo: tell me a story about streams"
        ids = {ch["response"]["responseId"] for ch in chunks}
        assert len(ids) == 1 and all(ch["response"]["modelVersion"] == "gemini-2.5-flash" for ch in chunks)
        assert len({ch["traceId"] for ch in chunks}) == 1
        finishes = [ch["response"]["candidates"][0].get("finishReason") for ch in chunks]
        assert finishes == [None, None, None, "STOP"]
        totals = [ch["response"]["usageMetadata"]["totalTokenCount"] for ch in chunks]
        assert totals == sorted(totals)  # cumulative, the last one is the total
        _, counted = await c.call("countTokens", {"request": request["request"]}, token)
        final = chunks[-1]["response"]["usageMetadata"]
        assert final["promptTokenCount"] == counted["totalTokens"]
        rec = c.sim.requests_for("streamGenerateContent")[0]
        assert rec.finished and rec.chunks_sent == 4 and rec.query == {"alt": "sse"}

    arun(body, sim)


def test_stream_without_alt_sse_is_a_json_array() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        url = c.sim.endpoint + ":streamGenerateContent"
        async with c.s.post(url, json=env("hi"), headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
            items = orjson.loads(await r.read())
        assert isinstance(items, list) and len(items) == 3
        assert texts(items) == "[gemini-3-flash] echo: hi"

    arun(body)


def test_function_calls_parallel_in_prompt_order_with_claude_ids() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        tools = [{"functionDeclarations": [WEATHER, TIME]}]
        status, got = await c.call(
            "generateContent", env("please call get_time and then get_weather", tools=tools), token
        )
        assert status == 200
        calls = [p for p in parts_of(got) if "functionCall" in p]
        assert [p["functionCall"]["name"] for p in calls] == ["get_time", "get_weather"]
        assert calls[1]["functionCall"]["args"] == {"city": "sim-city", "days": 1, "unit": "c"}
        assert calls[0]["functionCall"]["args"] == {}
        assert "id" not in calls[0]["functionCall"]
        # Gemini 3 puts the signature on the first functionCall part only
        assert calls[0]["thoughtSignature"] and "thoughtSignature" not in calls[1]

        _, got = await c.call("generateContent", env("call something", model="claude-sonnet-4-6", tools=tools), token)
        calls = [p["functionCall"] for p in parts_of(got)]
        assert [c_["name"] for c_ in calls] == ["get_weather"]  # no tool named: the first one
        assert calls[0]["id"].startswith("toolu_")

        _, got = await c.call("generateContent", env("no tools wanted", tools=tools), token)
        assert not any("functionCall" in p for p in parts_of(got))
        forced = env("whatever", tools=tools, toolConfig={"functionCallingConfig": {"mode": "ANY"}})
        _, got = await c.call("generateContent", forced, token)
        assert any("functionCall" in p for p in parts_of(got))
        off = env("call get_time", tools=tools, toolConfig={"functionCallingConfig": {"mode": "NONE"}})
        _, got = await c.call("generateContent", off, token)
        assert not any("functionCall" in p for p in parts_of(got))

    arun(body)


def test_tool_loop_gemini_signature_replay() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        tools = [{"functionDeclarations": [WEATHER]}]
        first = env("call get_weather please", tools=tools)
        _, got = await c.call("generateContent", first, token)
        model_turn = got["response"]["candidates"][0]["content"]
        history = [
            *first["request"]["contents"],
            model_turn,
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny 21C"}}}],
            },
        ]
        status, got = await c.call("generateContent", env(contents=history, tools=tools), token)
        assert status == 200, got
        answer = texts([got])
        assert "get_weather" in answer and "sunny 21C" in answer

        stripped = copy.deepcopy(history)
        for part in stripped[1]["parts"]:
            part.pop("thoughtSignature", None)
        status, err = await c.call("generateContent", env(contents=stripped, tools=tools), token)
        assert status == 400 and err["error"]["status"] == "INVALID_ARGUMENT"
        assert err["error"]["message"].startswith("Function call is missing a thought_signature in functionCall parts.")
        assert "`default_api:get_weather`" in err["error"]["message"]

        sentinel = copy.deepcopy(stripped)
        sentinel[1]["parts"][0]["thoughtSignature"] = SKIP_SIGNATURE
        assert (await c.call("generateContent", env(contents=sentinel, tools=tools), token))[0] == 200
        # Gemini 2.5 does not enforce signatures
        lenient = env(contents=stripped, tools=tools, model="gemini-2.5-flash")
        assert (await c.call("generateContent", lenient, token))[0] == 200
        # only the current turn is validated: a later user text starts a new turn
        later = [*stripped, {"role": "model", "parts": [{"text": "done"}]}, {"role": "user", "parts": [{"text": "ok"}]}]
        assert (await c.call("generateContent", env(contents=later, tools=tools), token))[0] == 200
        forged = copy.deepcopy(history)
        forged[1]["parts"][0]["thoughtSignature"] = "Zm9yZ2VkLXNpZ25hdHVyZS1ieXRlcw=="
        status, err = await c.call("generateContent", env(contents=forged, tools=tools), token)
        assert status == 400 and err["error"]["message"] == "Corrupted thought signature."

    arun(body)


def test_tool_loop_claude_thinking_replay() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        tools = [{"functionDeclarations": [WEATHER]}]
        cfg = {"maxOutputTokens": 8192, "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048}}
        first = env("call get_weather", model="claude-opus-4-6-thinking", tools=tools, generationConfig=cfg)
        status, chunks, _ = await c.stream(first, token)
        assert status == 200
        parts = [p for ch in chunks for p in ch["response"]["candidates"][0]["content"].get("parts", [])]
        thought = {
            "text": texts(chunks, thought=True),
            "thought": True,
            "thoughtSignature": next(p["thoughtSignature"] for p in parts if "thoughtSignature" in p),
        }
        call = next(p["functionCall"] for p in parts if "functionCall" in p)
        history = [
            *first["request"]["contents"],
            {"role": "model", "parts": [thought, {"functionCall": call}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": call["name"], "id": call["id"], "response": {"result": "7C"}}}],
            },
        ]
        replay = env(model="claude-opus-4-6-thinking", tools=tools, generationConfig=cfg, contents=history)
        status, got = await c.call("generateContent", replay, token)
        assert status == 200, got
        assert "tool get_weather returned" in texts([got]) and "7C" in texts([got])

    arun(body)


def test_thinking_parts_and_signatures() -> None:
    sim = GoogleSimulator(demo_accounts(1), chunks=3)

    async def body(c: Client) -> None:
        token = await c.token()
        thinking = {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 4096}}
        _, chunks, _ = await c.stream(env("ponder", model="claude-opus-4-6-thinking", generationConfig=thinking), token)
        thought = texts(chunks, thought=True)
        assert thought.startswith("Thinking about: ponder")
        all_parts = [p for ch in chunks for p in ch["response"]["candidates"][0]["content"].get("parts", [])]
        assert all_parts[0].get("thought") is True
        signed = [p for p in all_parts if "thoughtSignature" in p]
        assert len(signed) == 1 and signed[0]["thought"] is True and len(signed[0]["thoughtSignature"]) >= 50
        usage = chunks[-1]["response"]["usageMetadata"]
        assert usage["thoughtsTokenCount"] > 0
        assert usage["totalTokenCount"] == sum(
            usage[k] for k in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")
        )
        # replaying the merged thought part is accepted; a forged one is rejected with Anthropic's text
        merged = {"text": thought, "thought": True, "thoughtSignature": signed[0]["thoughtSignature"]}
        history = [
            {"role": "user", "parts": [{"text": "ponder"}]},
            {"role": "model", "parts": [merged, {"text": texts(chunks)}]},
            {"role": "user", "parts": [{"text": "again"}]},
        ]
        ok = env(contents=history, model="claude-opus-4-6-thinking", generationConfig=thinking)
        assert (await c.call("generateContent", ok, token))[0] == 200
        bad = copy.deepcopy(ok)
        bad["request"]["contents"][1]["parts"][0]["thoughtSignature"] = "A" * 60
        status, err = await c.call("generateContent", bad, token)
        assert status == 400
        assert "messages.1.content.0: Invalid `signature` in `thinking` block" in err["error"]["message"]
        # a gemini signature is not valid for claude either
        _, gem = await c.call("generateContent", env("x", generationConfig=thinking), token)
        gem_sig = next(p["thoughtSignature"] for p in parts_of(gem) if "thoughtSignature" in p)
        bad["request"]["contents"][1]["parts"][0]["thoughtSignature"] = gem_sig
        assert (await c.call("generateContent", bad, token))[0] == 400
        # gemini: thought text only with includeThoughts; the signature rides on the last text part
        _, got = await c.call("generateContent", env("x", model="gemini-3-pro-high"), token)
        parts = parts_of(got)
        assert not any(p.get("thought") for p in parts) and "thoughtSignature" in parts[-1]
        assert got["response"]["usageMetadata"]["thoughtsTokenCount"] > 0

    arun(body, sim)


def test_json_mode_and_max_tokens() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        schema = {
            "type": "object",
            "properties": {"score": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["score"],
        }
        for key in ("responseJsonSchema", "responseSchema"):
            gen = {"responseMimeType": "application/json", key: schema}
            status, got = await c.call(
                "generateContent", env("rate", model="gemini-2.5-flash", generationConfig=gen), token
            )
            assert status == 200, got
            assert json.loads(texts([got])) == {"score": 1, "tags": ["sim-tags"]}
        gen = {"responseMimeType": "application/json"}
        _, got = await c.call("generateContent", env("rate", model="claude-sonnet-4-6", generationConfig=gen), token)
        assert json.loads(texts([got])) == {"model": "claude-sonnet-4-6", "echo": "rate"}
        gen = {"maxOutputTokens": 3, "thinkingConfig": {"thinkingBudget": 0}}
        _, got = await c.call(
            "generateContent", env("a long question " * 5, model="gemini-2.5-flash", generationConfig=gen), token
        )
        cand = got["response"]["candidates"][0]
        assert cand["finishReason"] == "MAX_TOKENS" and len(texts([got])) == 12
        assert got["response"]["usageMetadata"]["candidatesTokenCount"] == 3

    arun(body)


def test_image_model_returns_inline_data_and_caching() -> None:
    sim = GoogleSimulator(demo_accounts(1), cache_min_tokens=100)

    async def body(c: Client) -> None:
        token = await c.token()
        _, got = await c.call("generateContent", env("a cat", model="gemini-3-pro-image"), token)
        assert any(p.get("inlineData", {}).get("mimeType") == "image/png" for p in parts_of(got))
        long_turns = [
            {"role": "user", "parts": [{"text": "context " * 200}]},
            {"role": "model", "parts": [{"text": "noted"}]},
        ]
        first = env(model="gemini-2.5-flash", contents=[*long_turns, {"role": "user", "parts": [{"text": "q1"}]}])
        _, got = await c.call("generateContent", first, token)
        assert "cachedContentTokenCount" not in got["response"]["usageMetadata"]
        second = env(model="gemini-2.5-flash", contents=[*long_turns, {"role": "user", "parts": [{"text": "q2"}]}])
        _, got = await c.call("generateContent", second, token)
        assert got["response"]["usageMetadata"]["cachedContentTokenCount"] >= 400

    arun(body, sim)


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------
def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def _with_params(params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return env(tools=[{"functionDeclarations": [{"name": "f", "parameters": params}]}], **extra)


def _claude_loop(first_part: dict[str, Any] | None) -> dict[str, Any]:
    call = {"functionCall": {"name": "get_weather", "args": {}, "id": "toolu_1"}}
    model_parts = [first_part, call] if first_part else [call]
    return env(
        model="claude-opus-4-6-thinking",
        tools=[{"functionDeclarations": [WEATHER]}],
        generationConfig={"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048}},
        contents=[
            _user("weather?"),
            {"role": "model", "parts": model_parts},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}, "id": "toolu_1"}}]},
        ],
    )


PARAM_PATH = "request.tools[0].function_declarations[0].parameters"
VALIDATION_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("no project", env(project=None), 400, "Invalid project resource name projects/"),
    ("other project", env(project=P2), 403, "Permission 'cloudaicompanion.companions.generateChat' denied"),
    ("unknown project", env(project="ghost-1"), 404, "Resource projects/ghost-1 could not be found."),
    ("no model", env(model=""), 400, "Request contains an invalid argument."),
    ("unlisted model", env(model="gemini-9-ultra"), 404, "Requested entity was not found."),
    ("deprecated model", env(model="claude-sonnet-4-5"), 404, "Requested entity was not found."),
    ("empty contents", env(contents=[]), 400, "contents: contents is not specified"),
    ("no request", {"project": P1, "model": "gemini-3-flash"}, 400, "contents is not specified"),
    (
        "bad role",
        env(contents=[{"role": "assistant", "parts": [{"text": "x"}]}]),
        400,
        "Please use a valid role: user, model.",
    ),
    (
        "empty parts",
        env(contents=[{"role": "user", "parts": []}]),
        400,
        "contents[0].parts: contents.parts must not be empty",
    ),
    ("empty text", env(contents=[{"role": "user", "parts": [{"text": ""}]}]), 400, "required oneof field 'data'"),
    (
        "two data",
        env(contents=[{"role": "user", "parts": [{"text": "a", "inlineData": {"mimeType": "x/y", "data": "AA=="}}]}]),
        400,
        "Oneof field 'data' is already set",
    ),
    ("unknown request field", env(foo=1), 400, "Unknown name \"foo\" at 'request': Cannot find field."),
    ("unknown envelope field", {**env(), "bogus": True}, 400, 'Unknown name "bogus": Cannot find field.'),
    (
        "unknown part field",
        env(contents=[{"role": "user", "parts": [{"text": "x", "cache_control": {"type": "ephemeral"}}]}]),
        400,
        "Unknown name \"cache_control\" at 'request.contents[0].parts[0]'",
    ),
    (
        "additionalProperties",
        _with_params({"type": "object", "additionalProperties": False}),
        400,
        f"Unknown name \"additionalProperties\" at '{PARAM_PATH}': Cannot find field.",
    ),
    ("$schema", _with_params({"type": "object", "$schema": "x"}), 400, 'Unknown name "$schema"'),
    (
        "$ref nested",
        _with_params({"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}}),
        400,
        f"Unknown name \"$ref\" at '{PARAM_PATH}.properties[0].value'",
    ),
    ("$defs", _with_params({"type": "object", "$defs": {}}), 400, 'Unknown name "$defs"'),
    ("definitions", _with_params({"type": "object", "definitions": {}}), 400, 'Unknown name "definitions"'),
    ("const", _with_params({"type": "object", "properties": {"a": {"const": 1}}}), 400, 'Unknown name "const"'),
    (
        "exclusiveMinimum",
        _with_params({"type": "object", "properties": {"a": {"type": "number", "exclusiveMinimum": 0}}}),
        400,
        'Unknown name "exclusiveMinimum"',
    ),
    ("propertyNames", _with_params({"type": "object", "propertyNames": {}}), 400, 'Unknown name "propertyNames"'),
    (
        "patternProperties",
        _with_params({"type": "object", "patternProperties": {}}),
        400,
        'Unknown name "patternProperties"',
    ),
    (
        "type list",
        _with_params({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}),
        400,
        "Proto field is not repeating, cannot start list.",
    ),
    ("bad type", _with_params({"type": "object", "properties": {"a": {"type": "text"}}}), 400, "Invalid value at"),
    (
        "required undefined",
        _with_params({"type": "object", "properties": {}, "required": ["x"]}),
        400,
        "required[0]: property is not defined",
    ),
    ("bad function name", env(tools=[{"functionDeclarations": [{"name": "my tool"}]}]), 400, "Invalid function name."),
    (
        "search + functions",
        env(tools=[{"functionDeclarations": [TIME]}, {"googleSearch": {}}]),
        400,
        "Multiple tools are supported only when they are all search tools.",
    ),
    (
        "response not object",
        env(
            contents=[
                _user("x"),
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": "ok"}}]},
            ],
            model="gemini-2.5-flash",
        ),
        400,
        "google.protobuf.Struct",
    ),
    (
        "response count",
        env(
            contents=[
                _user("x"),
                {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"name": "g", "args": {}}}],
                },
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
            ],
            model="gemini-2.5-flash",
        ),
        400,
        "number of function response parts is equal to the number of function call parts",
    ),
    (
        "orphan response",
        env(
            contents=[_user("x"), {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}],
            model="gemini-2.5-flash",
        ),
        400,
        "function response turn comes immediately after a function call turn",
    ),
    (
        "bad signature base64",
        env(
            contents=[
                _user("x"),
                {"role": "model", "parts": [{"text": "y", "thoughtSignature": "not base64!"}]},
                _user("z"),
            ]
        ),
        400,
        "Base64 decoding failed",
    ),
    ("session id int", env(sessionId=-123), 400, "Invalid value at 'request.session_id' (TYPE_STRING), -123"),
    (
        "max tokens too high",
        env(generationConfig={"maxOutputTokens": 100000}),
        400,
        "supported range is from 1 (inclusive) to 65537 (exclusive)",
    ),
    (
        "budget and level",
        env(generationConfig={"thinkingConfig": {"thinkingBudget": 10, "thinkingLevel": "HIGH"}}),
        400,
        "only one of thinking budget and thinking level",
    ),
    ("bad level", env(generationConfig={"thinkingConfig": {"thinkingLevel": "EXTREME"}}), 400, "thinking_level"),
    ("bad mime", env(generationConfig={"responseMimeType": "text/html"}), 400, "allowed mimetypes are"),
    (
        "bad threshold",
        env(safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "NEVER"}]),
        400,
        "safety_settings[0].threshold",
    ),
    (
        "claude thinking first",
        _claude_loop(None),
        400,
        "Expected `thinking` or `redacted_thinking`, but found `tool_use`",
    ),
    (
        "claude sentinel thought",
        _claude_loop({"text": "t", "thought": True, "thoughtSignature": SKIP_SIGNATURE}),
        400,
        "Invalid `signature` in `thinking` block",
    ),
    (
        "claude tool id mismatch",
        env(
            model="claude-sonnet-4-6",
            contents=[
                _user("x"),
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}, "id": "toolu_1"}}]},
                {
                    "role": "user",
                    "parts": [
                        {"functionResponse": {"name": "f", "response": {}, "id": "toolu_1"}},
                        {"functionResponse": {"name": "f", "response": {}, "id": "toolu_2"}},
                    ],
                },
            ],
        ),
        400,
        "unexpected `tool_use_id` found in `tool_result` blocks: toolu_2",
    ),
    (
        "claude unsigned thought",
        _claude_loop({"text": "t", "thought": True}),
        400,
        "messages.1.content.0.thinking.signature: Field required",
    ),
    (
        "claude budget",
        env(
            model="claude-sonnet-4-6-thinking",
            generationConfig={"maxOutputTokens": 2000, "thinkingConfig": {"thinkingBudget": 4000}},
        ),
        400,
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    (
        "claude missing result",
        env(
            model="claude-sonnet-4-6",
            contents=[
                _user("x"),
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}, "id": "toolu_9"}}]},
                _user("y"),
            ],
        ),
        400,
        "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_9",
    ),
    (
        "claude call without id",
        env(
            model="claude-sonnet-4-6",
            contents=[_user("x"), {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}],
        ),
        400,
        "tool_use.id: Field required",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "message"), VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES])
def test_validation_rejects_like_google(name: str, body: dict[str, Any], status: int, message: str) -> None:
    async def run(c: Client) -> None:
        token = await c.token()
        for method in ("generateContent", "streamGenerateContent"):
            got_status, got = await c.call(method, body, token)
            assert got_status == status, (method, got)
            err = got["error"]
            assert err["code"] == status and err["status"] in {"INVALID_ARGUMENT", "PERMISSION_DENIED", "NOT_FOUND"}
            assert message in err["message"], err["message"]
            if status == 400 and "Unknown name" in message:
                assert err["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"

    arun(run)


def test_validation_accepts_good_shapes() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        good = env(
            systemInstruction={"role": "user", "parts": [{"text": "sys"}]},
            tools=[
                {
                    "functionDeclarations": [
                        {"name": "lower", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}},
                        {
                            "name": "mcp__x__y",
                            "parametersJsonSchema": {"type": "object", "additionalProperties": False},
                        },
                    ]
                }
            ],
            toolConfig={"functionCallingConfig": {"mode": "VALIDATED"}, "includeServerSideToolInvocations": True},
            tool_config={"functionCallingConfig": {"mode": "VALIDATED"}},
            generationConfig={
                "temperature": 1.0,
                "topP": 1.0,
                "topK": 40,
                "maxOutputTokens": 65536,
                "thinkingConfig": {"includeThoughts": True, "thinkingLevel": "HIGH"},
            },
            safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
            sessionId="-3750763034362895579",
        )
        status, got = await c.call("generateContent", good, token)
        assert status == 200, got
        claude_ok = _claude_loop(None)
        claude_ok["request"]["generationConfig"] = {}
        assert (await c.call("generateContent", claude_ok, token))[0] == 200  # no thinking: no first-block rule
        status, err = await c.call("countTokens", {"request": {"contents": [_user("x")], "safetySettings": []}}, token)
        assert status == 400 and 'Unknown name "safetySettings"' in err["error"]["message"]
        assert (
            await c.call(
                "countTokens", {"request": {"model": "models/gemini-3-flash", "contents": [_user("x")]}}, token
            )
        )[0] == 200

    arun(body)


def test_auth_project_header_quota_and_stale_client() -> None:
    sim = GoogleSimulator(demo_accounts(2), min_client_version="4.3.0")
    sim.accounts[E1].remaining["gemini-3-flash"] = 0.0

    async def body(c: Client) -> None:
        token = await c.token()
        status, err = await c.call("generateContent", env(model="gemini-2.5-flash"), None)
        assert status == 401 and err["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"
        status, err = await c.call("generateContent", env(), token)
        assert status == 429 and err["error"]["details"][0]["reason"] == "QUOTA_EXHAUSTED"
        assert err["error"]["details"][0]["metadata"]["quotaResetDelay"] == "5h0m0s"
        assert err["error"]["details"][1]["retryDelay"] == "18000s"
        hdr = {"x-goog-user-project": P2}
        status, err = await c.call("generateContent", env(model="gemini-2.5-flash"), token, headers=hdr)
        assert status == 403 and "serviceusage" in err["error"]["message"]
        ok_hdr = {"x-goog-user-project": P1, "User-Agent": "antigravity/4.5.8 linux/amd64"}
        status, got = await c.call("generateContent", env(model="gemini-2.5-flash"), token, headers=ok_hdr)
        assert status == 200 and "echo" in texts([got])
        old = {"User-Agent": "Antigravity/1.11.3 (X11; Linux x86_64)"}
        status, got = await c.call("generateContent", env(model="gemini-2.5-flash"), token, headers=old)
        assert status == 200 and "no longer supported" in texts([got])
        async with c.s.post(
            c.sim.endpoint + ":generateContent", data=b"{nope", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 400 and "Invalid JSON payload received" in (await r.json())["error"]["message"]

    arun(body, sim)


# ----------------------------------------------------------------------------------------------------------
# faults
# ----------------------------------------------------------------------------------------------------------
def test_status_faults_have_google_bodies() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        sim = c.sim
        sim.script(Fault("status", status=429, retry_delay=1.5, reason="RATE_LIMIT_EXCEEDED"))
        status, err = await c.call("generateContent", env(), token)
        e = err["error"]
        assert (status, e["status"], e["message"]) == (
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        )
        assert e["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
        assert e["details"][1] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}

        sim.script(Fault("status", status=429, quota_reset_delay=3 * 3600 + 20 * 60 + 5.2))
        _, err = await c.call("generateContent", env(), token)
        info = err["error"]["details"][0]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["reason"] == "QUOTA_EXHAUSTED"
        assert info["metadata"]["quotaResetDelay"] == "3h20m5.2s" and info["metadata"]["model"] == "gemini-3-flash"
        assert "3h20m5s" in err["error"]["message"]

        sim.script(Fault("status", status=429, reason="MODEL_CAPACITY_EXHAUSTED"))
        _, err = await c.call("generateContent", env(), token)
        assert err["error"]["details"][0]["reason"] == "MODEL_CAPACITY_EXHAUSTED"

        sim.script(Fault("status", status=403))
        status, err = await c.call("generateContent", env(), token)
        assert status == 403 and err["error"]["status"] == "PERMISSION_DENIED"
        assert err["error"]["details"][0]["reason"] == "VALIDATION_REQUIRED"
        assert err["error"]["details"][0]["metadata"]["validation_url"].startswith("https://")

        for code, state, text in [
            (404, "NOT_FOUND", "Requested entity was not found."),
            (500, "INTERNAL", "Internal error encountered."),
            (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
            (401, "UNAUTHENTICATED", "invalid authentication credentials"),
        ]:
            sim.script(Fault("status", status=code))
            status, err = await c.call("generateContent", env(), token)
            assert (status, err["error"]["status"]) == (code, state) and text in err["error"]["message"]
        sim.script(Fault("status", status=400, message="custom problem"))
        assert (await c.call("generateContent", env(), token))[1]["error"]["message"] == "custom problem"
        assert (await c.call("generateContent", env(), token))[0] == 200  # every fault was used up
        assert sim.faults == []
        statuses = [r.status for r in sim.requests_for("generateContent")]
        assert statuses == [429, 429, 429, 403, 404, 500, 503, 401, 400, 200]
        assert [r.fault for r in sim.requests_for("generateContent")][:2] == ["status", "status"]

    arun(body)


def test_fault_filters_times_and_prefix() -> None:
    async def body(c: Client) -> None:
        sim = c.sim
        t1, t2 = await c.token(), await c.token("1//sim-refresh-demo2")
        sim.script(
            Fault("status", status=503, email=E2, model="gemini-3-flash", action="streamGenerateContent", times=2)
        )
        assert (await c.stream(env(), t1))[0] == 200  # other account
        assert (await c.call("generateContent", env(project=P2), t2))[0] == 200  # other action
        assert (await c.stream(env(project=P2, model="gemini-2.5-flash"), t2))[0] == 200  # other model
        assert (await c.stream(env(project=P2), t2))[0] == 503
        assert (await c.stream(env(project=P2), t2))[0] == 503
        assert (await c.stream(env(project=P2), t2))[0] == 200
        sim.script(Fault("status", status=500, prefix="/a/v1internal", times=None))
        for _ in range(2):
            assert (await c.call("generateContent", env(), t1, prefix="/a"))[0] == 500
        status, chunks, _ = await c.stream(env(), t1, prefix="/b")
        assert status == 200 and texts(chunks)
        assert [r.prefix for r in sim.requests_for("streamGenerateContent")][-1] == "/b"
        assert len(sim.faults) == 1
        sim.clear_faults()
        assert (await c.call("generateContent", env(), t1, prefix="/a"))[0] == 200
        sim.script(Fault("status", status=500, action="loadCodeAssist"))
        assert (await c.call("loadCodeAssist", {}, t1))[0] == 500

    arun(body)


def test_invalid_grant_fault_and_oauth_status_fault() -> None:
    async def body(c: Client) -> None:
        sim = c.sim
        sim.script(Fault("invalid_grant", email=E1))
        assert await c.refresh() == (
            400,
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
        )
        assert (await c.refresh("1//sim-refresh-demo2"))[0] == 200
        assert (await c.refresh())[0] == 200
        sim.script(Fault("status", action="token", status=503))
        status, err = await c.refresh()
        assert status == 503 and err["error"] == "internal_failure"

    arun(body)


def test_slow_first_byte_disconnect_and_stream_faults() -> None:
    sim = GoogleSimulator(demo_accounts(1), chunks=4)

    async def body(c: Client) -> None:
        token = await c.token()
        c.sim.script(Fault("slow_first_byte", delay=0.3))
        start = time.monotonic()
        assert (await c.call("generateContent", env(), token))[0] == 200
        assert time.monotonic() - start >= 0.3

        c.sim.script(Fault("disconnect", after_chunks=2))
        url = c.sim.endpoint + ":streamGenerateContent?alt=sse"
        got = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async with c.s.post(url, json=env(), headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
                async for piece in r.content.iter_any():
                    got += piece
        assert got.count(b"data: ") == 2
        rec = c.sim.requests_for("streamGenerateContent")[-1]
        assert rec.aborted and not rec.finished and not rec.client_disconnected and rec.chunks_sent == 2

        c.sim.script(Fault("disconnect", action="generateContent"))
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await c.call("generateContent", env(), token)

        c.sim.script(Fault("stream_error", after_chunks=1, status=500))
        status, chunks, _ = await c.stream(env(), token)
        assert status == 200 and len(chunks) == 2
        assert chunks[-1] == {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}

        c.sim.script(Fault("empty_stream"))
        status, chunks, raw = await c.stream(env(), token)
        assert status == 200 and raw == b"" and chunks == []
        assert c.sim.cancelled == []

    arun(body, sim)


def test_hang_and_client_cancellation_are_recorded() -> None:
    sim = GoogleSimulator(demo_accounts(1), chunks=50, chunk_delay=0.05)

    async def body(c: Client) -> None:
        token = await c.token()
        c.sim.script(Fault("hang", action="generateContent"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.call("generateContent", env(), token), 0.2)
        # a stream the client abandons half way
        url = c.sim.endpoint + ":streamGenerateContent?alt=sse"
        async with c.s.post(url, json=env("long " * 40), headers={"Authorization": f"Bearer {token}"}) as r:
            await r.content.readline()
            r.close()
        for _ in range(100):
            if len(c.sim.cancelled) == 2:
                break
            await asyncio.sleep(0.02)
        hung, streamed = c.sim.cancelled
        assert hung.action == "generateContent" and hung.fault == "hang" and hung.client_disconnected
        assert streamed.action == "streamGenerateContent" and streamed.client_disconnected
        assert 1 <= streamed.chunks_sent < 50 and not streamed.finished

    arun(body, sim)


def test_stop_with_hanging_request_is_fast() -> None:
    async def main() -> None:
        sim = GoogleSimulator(demo_accounts(1))
        await sim.start()
        token = sim.issue_access_token(E1)
        sim.script(Fault("hang"))
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(
                session.post(sim.endpoint + ":loadCodeAssist", json={}, headers={"Authorization": f"Bearer {token}"})
            )
            await asyncio.sleep(0.1)
            start = time.monotonic()
            await sim.stop()
            assert time.monotonic() - start < 1.0
            with pytest.raises(aiohttp.ClientError):
                await task
        assert sim.cancelled == []

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------------------
# request log, thread runner, CLI runner
# ----------------------------------------------------------------------------------------------------------
def test_request_log_contents() -> None:
    async def body(c: Client) -> None:
        token = await c.token()
        c.sim.clear_requests()
        await c.call("generateContent", env("logged"), token, prefix="/x", headers={"X-Custom": "Yes"})
        (rec,) = c.sim.requests
        assert rec.method == "POST" and rec.path == "/x/v1internal:generateContent"
        assert rec.action == "generateContent" and rec.prefix == "/x" and rec.email == E1
        assert rec.model == "gemini-3-flash" and rec.status == 200 and rec.finished
        assert rec.headers["x-custom"] == "Yes" and rec.headers["authorization"] == f"Bearer {token}"
        assert rec.json["request"]["contents"][0]["parts"][0]["text"] == "logged"
        assert orjson.loads(rec.body) == rec.json and rec.time > 0
        await c.refresh()
        tok_rec = c.sim.requests[-1]
        assert tok_rec.action == "token" and tok_rec.email == E1 and tok_rec.json is None
        assert tok_rec.form is not None and tok_rec.form["grant_type"] == "refresh_token"

    arun(body)


def test_simulator_thread_for_sync_clients() -> None:
    with SimulatorThread(GoogleSimulator(demo_accounts(1))) as sim:
        token = sim.issue_access_token(E1)
        req = urllib.request.Request(
            sim.endpoint + ":generateContent",
            data=orjson.dumps(env("sync")),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert "echo: sync" in texts([orjson.loads(resp.read())])
        assert sim.base_url.startswith("http://127.0.0.1:") and sim.token_url.endswith("/token")
        assert sim.userinfo_url.endswith("/oauth2/v2/userinfo") and sim.endpoint.endswith("/v1internal")
    with pytest.raises(ValueError, match="loopback"):
        asyncio.run(GoogleSimulator().start(host="0.0.0.0"))


def test_run_forever_prints_and_exits_on_sigint() -> None:
    code = (
        "from agfast.sim import demo_accounts\n"
        "from agfast.sim.runner import run_forever\n"
        "run_forever('127.0.0.1', 0, demo_accounts(2), 3, 0.0)\n"
    )
    root = str(AGFAST_ROOT)  # the agfast under test, even when a checkout would shadow it
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("agfast sim listening on http://127.0.0.1:")
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert "demo1@sim.local" in lines[0] and "1//sim-refresh-demo1" in lines[0]
        port = int(first.strip().rsplit(":", 1)[1])
        body = b"grant_type=refresh_token&refresh_token=1//sim-refresh-demo2&client_id=a&client_secret=b"
        with urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{port}/token", data=body), timeout=5
        ) as r:
            assert orjson.loads(r.read())["token_type"] == "Bearer"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
