"""Plans as tables: a request in → where it goes and what is sent upstream, the recovery rule, the errors.

`convert.<surface>.plan` is pure (no loop, no sockets): the rows below run in microseconds, and each names
one step of §6.5's pre-processing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from agfast.api.common import fast_path
from agfast.convert import anthropic as conv
from agfast.convert import gemini as gem
from agfast.convert import openai as oai
from agfast.convert import outcomes
from agfast.convert.checks import InvalidRequest
from agfast.convert.models import ModelSpec, model_spec
from agfast.convert.signatures import SignatureCache
from agfast.upstream.client import envelope, fnv1a64_signed, gemini_request_id

# The upstream encoders the driver binds (api.driver.WIRE), here the same functions.
WIRE = outcomes.Wire(envelope, fnv1a64_signed, gemini_request_id)

# The routing table a test pool offers: client name → upstream model.
ROUTES = {
    "claude-opus-4-6": "claude-opus-4-6",
    "claude-sonnet-4-6": "claude-sonnet-4-6",
    "gemini-2.5-flash": "gemini-2.5-flash",
    conv.SEARCH_MODEL: conv.SEARCH_MODEL,
    conv.BACKGROUND_MODEL: "gemini-2.5-flash-lite",
}
AVAILABLE = frozenset({*ROUTES.values(), "claude-opus-4-6-thinking"})


def context() -> conv.Context:
    def spec(mapped: str) -> ModelSpec:
        return model_spec(mapped)

    return conv.Context(ROUTES.get, lambda: AVAILABLE, spec, SignatureCache.create(), WIRE, LookupError)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def body(model: str = "claude-opus-4-6", *messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": list(messages) or [user("hello there")], **fields}


def signed_history() -> list[dict[str, Any]]:
    """A conversation whose assistant turn carries a signed thinking block (what signature recovery acts on)."""
    return [
        user("question"),
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s" * 80},
                {"type": "text", "text": "answer"},
            ],
        },
        user("follow-up"),
    ]


TITLE = "Please write a 5-10 word title for the following conversation"

# (what, body, headers) → (mapped, warmup, background, stream)
ROUTING: list[tuple[str, dict[str, Any], dict[bytes, bytes], tuple[str, bool, bool, bool]]] = [
    ("a known name", body(), {}, ("claude-opus-4-6", False, False, False)),
    ("streaming", body(stream=True), {}, ("claude-opus-4-6", False, False, True)),
    ("an unknown name", body("nobody-knows"), {}, ("", False, False, False)),
    (
        "asked to think → the thinking variant the pool has",
        body(thinking={"type": "enabled", "budget_tokens": 2048}),
        {},
        ("claude-opus-4-6-thinking", False, False, False),
    ),
    (
        "no thinking variant in the pool",
        body("claude-sonnet-4-6", thinking={"type": "enabled", "budget_tokens": 2048}),
        {},
        ("claude-sonnet-4-6", False, False, False),
    ),
    (
        "web search only → the search model",
        body(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        {},
        (conv.SEARCH_MODEL, False, False, False),
    ),
    (
        "Claude Code's warmup probe",
        body("claude-opus-4-6", user("Warmup")),
        {},
        ("claude-opus-4-6", True, False, False),
    ),
    (
        "a title request → the background model",
        body("claude-opus-4-6", user(TITLE + ": fix the bug")),
        {},
        ("gemini-2.5-flash-lite", False, True, False),
    ),
]


@pytest.mark.parametrize(("what", "request_body", "headers", "expected"), ROUTING, ids=[r[0] for r in ROUTING])
def test_anthropic_routing(
    what: str, request_body: dict[str, Any], headers: dict[bytes, bytes], expected: tuple[str, bool, bool, bool]
) -> None:
    plan = conv.plan(request_body, headers, context())
    assert (plan.mapped, plan.warmup, plan.background, plan.stream) == expected


# (what, messages / fields) → what the upstream request holds
SYSTEM_AND_MERGE = [
    (
        "system messages are lifted into the system instruction",
        body("claude-opus-4-6", {"role": "system", "content": "Be terse."}, user("hi")),
        {"system_has": "Be terse.", "contents": [("user", "hi")]},
    ),
    (
        "consecutive user turns are merged",
        body("claude-opus-4-6", user("one"), user("two")),
        {"contents": [("user", "one\n\ntwo")], "turns": 1},
    ),
    (
        "cache_control is removed at any depth",
        body("claude-opus-4-6", user([{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}])),
        {"contents": [("user", "x")]},
    ),
]


@pytest.mark.parametrize(("what", "request_body", "expected"), SYSTEM_AND_MERGE, ids=[r[0] for r in SYSTEM_AND_MERGE])
def test_anthropic_upstream_request(what: str, request_body: dict[str, Any], expected: dict[str, Any]) -> None:
    plan = conv.plan(request_body, {}, context())
    request = plan.conversion().request
    texts = [(c["role"], p["text"]) for c in request["contents"] for p in c["parts"] if "text" in p]
    assert texts == expected["contents"]
    if "turns" in expected:
        assert len(request["contents"]) == expected["turns"]
    if "system_has" in expected:
        assert any(expected["system_has"] in p["text"] for p in request["systemInstruction"]["parts"])
    assert "cache_control" not in repr(request)
    assert plan.request is request  # what the driver sends


SESSIONS = [
    ("Claude Code's session header wins", {b"x-claude-code-session-id": b"abcdef123456"}, {}, "abcdef123456"),
    ("metadata.user_id", {}, {"metadata": {"user_id": "user-42"}}, "user-42"),
]


@pytest.mark.parametrize(("what", "headers", "fields", "session"), SESSIONS, ids=[r[0] for r in SESSIONS])
def test_anthropic_session_and_request_id(
    what: str, headers: dict[bytes, bytes], fields: dict[str, Any], session: str
) -> None:
    plan = conv.plan(
        body("claude-opus-4-6", user("a"), {"role": "assistant", "content": "b"}, **fields), headers, context()
    )
    assert plan.session == session
    assert plan.request_id == f"agent/antigravity/{session[:8]}/2"  # first 8 of the session / message count


def test_anthropic_session_falls_back_to_a_hash_of_the_first_user_text() -> None:
    first = conv.plan(body("claude-opus-4-6", user("the same question")), {}, context())
    again = conv.plan(body("claude-opus-4-6", user("the same question")), {}, context())
    assert first.session == again.session and first.session.startswith("sid-")


@pytest.mark.parametrize("size", [11, 2047, gem.SESSION_MEMO_TEXT, gem.SESSION_MEMO_TEXT + 1, 100_000])
def test_session_id_is_the_texts_sha256_remembered_or_not(size: int) -> None:
    """The session id of a first user text is `sid-` + 16 hex digits of its sha256, the same on every turn,
    whether the text is short enough to be remembered (SESSION_MEMO_TEXT) or not."""
    text = ("é" + "x" * size)[:size]
    want = "sid-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    contents = [{"role": "user", "parts": [{"text": text}]}]
    assert [gem.session_id_from_contents(contents) for _ in range(3)] == [want] * 3
    assert gem.session_hash(text + "!") != want


# (what, body, count) → (field, message start)
ERRORS: list[tuple[str, dict[str, Any], bool, tuple[str, str]]] = [
    ("no model", {"messages": [user("x")], "max_tokens": 1}, False, ("model", "Missing required field 'model'")),
    ("model not a string", body(5), False, ("model", "Field 'model' must be a string")),
    ("no max_tokens", {"model": "m", "messages": [user("x")]}, False, ("max_tokens", "Missing required field")),
    ("no messages", body("m", max_tokens=1) | {"messages": []}, False, ("messages", "messages: at least one")),
    ("bad role", body("m", {"role": "bot", "content": "x"}), False, ("messages.0.role", "messages.0.role")),
    ("temperature out of range", body(temperature=3), False, ("temperature", "temperature: Input should be")),
]


@pytest.mark.parametrize(("what", "request_body", "count", "expected"), ERRORS, ids=[r[0] for r in ERRORS])
def test_anthropic_errors(what: str, request_body: dict[str, Any], count: bool, expected: tuple[str, str]) -> None:
    with pytest.raises(conv.ConversionError) as caught:
        conv.plan(request_body, {}, context(), count=count)
    assert (caught.value.field, str(caught.value)[: len(expected[1])]) == expected


def test_anthropic_count_needs_no_max_tokens() -> None:
    plan = conv.plan({"model": "claude-opus-4-6", "messages": [user("x")]}, {}, context(), count=True)
    assert plan.mapped == "claude-opus-4-6"


def test_anthropic_nothing_left_to_send_is_an_error_at_conversion() -> None:
    plan = conv.plan(body("claude-opus-4-6", user("")), {}, context())
    with pytest.raises(conv.ConversionError):
        plan.conversion()


RECOVERY = [
    ("a signature 400 is recovered", 400, b'{"error":{"message":"Corrupted thought signature."}}', True),
    ("another 400 is not", 400, b'{"error":{"message":"Invalid JSON payload"}}', False),
    ("a 429 is not the plan's business", 429, b'{"error":{"message":"invalid signature"}}', False),
]


@pytest.mark.parametrize(("what", "status", "raw", "recovered"), RECOVERY, ids=[r[0] for r in RECOVERY])
def test_anthropic_recovery(what: str, status: int, raw: bytes, recovered: bool) -> None:
    history = signed_history()
    plan = conv.plan(
        body("claude-opus-4-6", *history, thinking={"type": "enabled", "budget_tokens": 2048}), {}, context()
    )
    before = plan.conversion().request
    assert plan.recover(status, raw) is recovered
    after = plan.request
    assert after is not None
    if recovered:
        assert after is not before and conv.RECOVERY_NOTE in repr(after["contents"][-1])
    else:
        assert after is before


def test_anthropic_zai_gets_the_clients_conversation() -> None:
    plan = conv.plan(body("claude-opus-4-6", {"role": "system", "content": "Be terse."}, user(TITLE)), {}, context())
    assert plan.background  # Google gets the background model …
    zai = plan.zai_body()
    assert zai["messages"] == [user(TITLE)]  # … z.ai the conversation, system lifted back into `system`
    assert zai["system"] == [{"type": "text", "text": "Be terse."}]


# -- Gemini --------------------------------------------------------------------------------------------------


def gemini_context() -> gem.Context:
    def route(model: str) -> str:
        found = ROUTES.get(model)
        if found is None:
            raise LookupError(model)  # the app raises its 404 here
        return found

    return gem.Context(route, model_spec, WIRE)


def contents(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user", "parts": [{"text": t}]} for t in texts]


# (what, body, action) → (mapped, session, stream)
GEMINI_PLANS: list[tuple[str, dict[str, Any], str, tuple[str, str | None, bool]]] = [
    ("generate", {"contents": contents("hi")}, "generateContent", ("gemini-2.5-flash", None, False)),
    ("stream", {"contents": contents("hi")}, "streamGenerateContent", ("gemini-2.5-flash", None, True)),
    (
        "the first long user text is the stickiness key",
        {"contents": contents("a question long enough to name the chat")},
        "generateContent",
        ("gemini-2.5-flash", "set", False),
    ),
]


@pytest.mark.parametrize(("what", "request_body", "action", "expected"), GEMINI_PLANS, ids=[r[0] for r in GEMINI_PLANS])
def test_gemini_plan(
    what: str, request_body: dict[str, Any], action: str, expected: tuple[str, str | None, bool]
) -> None:
    plan = gem.plan(request_body, {}, gemini_context(), model="gemini-2.5-flash", action=action)
    mapped, session, stream = expected
    assert (plan.mapped, plan.stream) == (mapped, stream)
    assert (plan.session is not None) == (session is not None)
    assert plan.request["contents"] == request_body["contents"] and "generationConfig" in plan.request


def test_gemini_count_plan_sends_the_countable_parts() -> None:
    body = {"generateContentRequest": {"contents": contents("hi"), "safetySettings": [], "cachedContent": "c"}}
    plan = gem.plan(body, {}, gemini_context(), model="gemini-2.5-flash", action="countTokens")
    assert plan.request == {"model": "gemini-2.5-flash", "contents": contents("hi")}


GEMINI_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("no contents", {}, "contents"),
    ("empty contents", {"contents": []}, "contents"),
    ("contents not an array", {"contents": "hi"}, "contents"),
]


@pytest.mark.parametrize(("what", "request_body", "param"), GEMINI_ERRORS, ids=[r[0] for r in GEMINI_ERRORS])
def test_gemini_errors(what: str, request_body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        gem.plan(request_body, {}, gemini_context(), model="gemini-2.5-flash", action="generateContent")
    assert caught.value.param == param


def test_gemini_unknown_model_is_the_routes_error() -> None:
    with pytest.raises(LookupError):
        gem.plan({"contents": contents("hi")}, {}, gemini_context(), model="nobody", action="generateContent")


# -- OpenAI --------------------------------------------------------------------------------------------------


def openai_context(stored: dict[str, list[dict[str, Any]]] | None = None) -> oai.Context:
    store = {} if stored is None else stored

    def route(model: str) -> str:
        return {"gpt-4o": "gemini-2.5-flash"}.get(model) or ROUTES[model]

    return oai.Context(route, model_spec, SignatureCache.create(), store.get, 512, store.__setitem__, WIRE)


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], **fields}


# (what, kind, body, headers) → (kind planned, mapped, stream, upstream texts)
OPENAI_PLANS: list[tuple[str, str, dict[str, Any], dict[bytes, bytes], tuple[str, str, bool, list[str]]]] = [
    ("chat", oai.CHAT, chat_body(), {}, (oai.CHAT, "gemini-2.5-flash", False, ["hello"])),
    ("chat, streaming", oai.CHAT, chat_body(stream=True), {}, (oai.CHAT, "gemini-2.5-flash", True, ["hello"])),
    (
        "legacy completions: the prompt is the user message",
        oai.COMPLETIONS,
        {"model": "gpt-4o", "prompt": "Once upon"},
        {},
        (oai.COMPLETIONS, "gemini-2.5-flash", False, ["Once upon"]),
    ),
    (
        "a Responses body on /v1/completions is served as one",
        oai.COMPLETIONS,
        {"model": "gpt-4o", "input": "hi there"},
        {},
        (oai.RESPONSES, "gemini-2.5-flash", False, ["hi there"]),
    ),
    (
        "responses",
        oai.RESPONSES,
        {"model": "gpt-4o", "input": "hi", "stream": True},
        {},
        (oai.RESPONSES, "gemini-2.5-flash", True, ["hi"]),
    ),
]


@pytest.mark.parametrize(
    ("what", "kind", "request_body", "headers", "expected"), OPENAI_PLANS, ids=[r[0] for r in OPENAI_PLANS]
)
def test_openai_plan(
    what: str,
    kind: str,
    request_body: dict[str, Any],
    headers: dict[bytes, bytes],
    expected: tuple[str, str, bool, list[str]],
) -> None:
    plan = oai.plan(request_body, headers, openai_context(), kind=kind)
    texts = [p["text"] for c in plan.upstream.request["contents"] for p in c["parts"] if "text" in p]
    assert (plan.kind, plan.mapped, plan.stream, texts) == expected
    assert plan.request_id.startswith("agent/antigravity/")


SESSION_ROWS = [
    ("prompt_cache_key first", {"prompt_cache_key": "k1"}, {b"session-id": b"s1"}, "pck-k1"),
    ("then Codex's session-id header", {}, {b"session-id": b"s1"}, "hdr-s1"),
]


@pytest.mark.parametrize(("what", "fields", "headers", "session"), SESSION_ROWS, ids=[r[0] for r in SESSION_ROWS])
def test_openai_responses_session(what: str, fields: dict[str, Any], headers: dict[bytes, bytes], session: str) -> None:
    plan = oai.plan({"model": "gpt-4o", "input": "hi", **fields}, headers, openai_context(), kind=oai.RESPONSES)
    assert plan.session == session and plan.request_id == f"agent/antigravity/{session[:8]}/1"


def test_openai_previous_response_continues_the_stored_conversation() -> None:
    stored = {"resp_1": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "answer"}]}
    body = {"model": "gpt-4o", "input": "second", "previous_response_id": "resp_1"}
    plan = oai.plan(body, {}, openai_context(stored), kind=oai.RESPONSES)
    texts = [p["text"] for c in plan.upstream.request["contents"] for p in c["parts"] if "text" in p]
    assert texts == ["first", "answer", "second"]


# (what, kind, body) → (param, code)
OPENAI_ERRORS: list[tuple[str, str, dict[str, Any], tuple[str, str | None]]] = [
    ("no model", oai.CHAT, {"messages": []}, ("model", None)),
    ("model not a string", oai.CHAT, {"model": 1, "messages": []}, ("model", None)),
    ("empty messages", oai.CHAT, chat_body(messages=[]), ("messages", "empty_array")),
    ("temperature out of range", oai.CHAT, chat_body(temperature=9), ("temperature", None)),
    ("no prompt", oai.COMPLETIONS, {"model": "gpt-4o"}, ("prompt", None)),
    (
        "an unknown previous_response_id",
        oai.RESPONSES,
        {"model": "gpt-4o", "input": "x", "previous_response_id": "resp_gone"},
        ("previous_response_id", "previous_response_not_found"),
    ),
]


@pytest.mark.parametrize(("what", "kind", "request_body", "expected"), OPENAI_ERRORS, ids=[r[0] for r in OPENAI_ERRORS])
def test_openai_errors(what: str, kind: str, request_body: dict[str, Any], expected: tuple[str, str | None]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        oai.plan(request_body, {}, openai_context(), kind=kind)
    assert (caught.value.param, caught.value.code) == expected


# -- outcomes: what the driver is told to do (convert.outcomes), per surface ---------------------------------


class Seat:
    """An attempt's account as a body builder reads it (upstream.pool.Lease's fields)."""

    def __init__(self, email: str = "someone@example.com") -> None:
        self.account_id, self.project_id, self.email = "account-1", "project-1", email


def zai_context(mode: str, turn: bool = False) -> conv.Context:
    base = context()
    return conv.Context(
        base.lookup, base.available, base.spec, base.signatures, WIRE, LookupError, lambda: mode, lambda: turn
    )


def sent(outcome: outcomes.Upstream, seat: Seat | None = None) -> dict[str, Any]:
    """The v1internal body the outcome's builder makes for one attempt."""
    return orjson.loads(outcome.build(seat or Seat()))


# (what, body, z.ai mode, z.ai's turn, count) → (outcome kind, path or gateway, stream)
ANTHROPIC_OUTCOMES: list[tuple[str, dict[str, Any], str, bool, bool, tuple[type, str, bool]]] = [
    ("a known model goes to Google", body(), "off", False, False, (outcomes.Upstream, outcomes.GOOGLE, False)),
    ("streaming", body(stream=True), "off", False, False, (outcomes.Upstream, outcomes.GOOGLE, True)),
    ("the warmup probe is answered here", body("claude-opus-4-6", user("Warmup")), "off", False, False,
     (outcomes.Local, "", False)),
    ("… also when z.ai takes every request", body("claude-opus-4-6", user("Warmup"), stream=True), "exclusive",
     True, False, (outcomes.Local, "", True)),
    ("z.ai's turn", body(stream=True), "pooled", True, False, (outcomes.Relay, conv.MESSAGES_PATH, True)),
    ("a name only z.ai may know", body("glm-4.6"), "pooled", False, False, (outcomes.Relay, conv.MESSAGES_PATH, False)),
    ("count_tokens goes to Google", body(), "off", False, True, (outcomes.Count, outcomes.GOOGLE, False)),
    ("count_tokens with z.ai exclusive", body(), "exclusive", True, True, (outcomes.Relay, conv.COUNT_PATH, False)),
    ("count_tokens for a name only z.ai may know", body("glm-4.6", stream=True), "fallback", False, True,
     (outcomes.Relay, conv.COUNT_PATH, False)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "request_body", "mode", "turn", "count", "expected"),
    ANTHROPIC_OUTCOMES,
    ids=[r[0] for r in ANTHROPIC_OUTCOMES],
)
def test_anthropic_outcome(
    what: str, request_body: dict[str, Any], mode: str, turn: bool, count: bool, expected: tuple[type, str, bool]
) -> None:
    outcome = conv.outcome(request_body, {}, zai_context(mode, turn), count=count)
    kind, where, stream = expected
    assert (type(outcome), outcome.stream) == (kind, stream)
    if isinstance(outcome, outcomes.Relay):
        assert outcome.path == where and outcome.body["model"] == request_body["model"]
    elif isinstance(outcome, outcomes.Upstream | outcomes.Count):
        assert outcome.gateway == where


def test_anthropic_unknown_model_without_zai_is_the_contexts_404() -> None:
    with pytest.raises(LookupError):
        conv.outcome(body("nobody-knows"), {}, zai_context("off"))


def test_anthropic_warmup_answer() -> None:
    collected = conv.outcome(body("claude-opus-4-6", user("Warmup")), {}, context())
    streamed = conv.outcome(body("claude-opus-4-6", user("Warmup"), stream=True), {}, context())
    assert isinstance(collected, outcomes.Local) and isinstance(streamed, outcomes.Local)
    assert (collected.status, collected.content_type, collected.mapped) == (200, outcomes.JSON, "claude-opus-4-6")
    assert orjson.loads(collected.body)["type"] == "message"
    assert streamed.content_type == outcomes.SSE and streamed.body.startswith(b"event: message_start")
    assert collected.headers == streamed.headers == conv.WARMUP_HEADERS


def test_anthropic_upstream_builds_the_envelope_and_recovers() -> None:
    history = signed_history()
    request_body = body("claude-opus-4-6", *history, thinking={"type": "enabled", "budget_tokens": 2048})
    outcome = conv.outcome(request_body, {b"x-claude-code-session-id": b"abcdef123456"}, context())
    assert isinstance(outcome, outcomes.Upstream) and outcome.recover is not None and outcome.fallback is None
    first = sent(outcome)
    assert (first["project"], first["model"], first["requestId"]) == (
        "project-1",
        "claude-opus-4-6-thinking",
        "agent/antigravity/abcdef12/3",
    )
    assert first["request"]["sessionId"] == fnv1a64_signed("account-1")
    assert outcome.recover(400, b'{"error":{"message":"Corrupted thought signature."}}')
    assert conv.RECOVERY_NOTE in repr(sent(outcome)["request"]["contents"][-1])  # the next attempt is the fixed one


def test_anthropic_fallback_mode_names_zai_for_when_no_account_can_serve() -> None:
    outcome = conv.outcome(body(stream=True), {}, zai_context("fallback"))
    assert isinstance(outcome, outcomes.Upstream) and outcome.fallback is not None
    assert (outcome.fallback.path, outcome.fallback.stream) == (conv.MESSAGES_PATH, True)


# Google's countTokens answer → the client's body (None: use the estimate)
ANTHROPIC_COUNTS: list[tuple[Any, bytes | None]] = [
    ({"response": {"totalTokens": 12}}, b'{"input_tokens":12}'),
    ({"totalTokens": 7}, b'{"input_tokens":7}'),
    ({"response": {"totalTokens": 0}}, None),
    ({"response": {}}, None),
    ([], None),
]


@pytest.mark.parametrize(("doc", "expected"), ANTHROPIC_COUNTS)
def test_anthropic_count(doc: Any, expected: bytes | None) -> None:
    outcome = conv.outcome({"model": "claude-opus-4-6", "messages": [user("count me")]}, {}, context(), count=True)
    assert isinstance(outcome, outcomes.Count) and outcome.estimate is not None
    assert orjson.loads(outcome.payload)["request"]["model"] == "claude-opus-4-6"
    assert outcome.answer(doc) == expected
    assert orjson.loads(outcome.estimate())["input_tokens"] > 0


# (surface, status, message) → the client's error for an error event while collecting
COLLECT_FAILURES: list[tuple[str, Any, tuple[int, str, str | None]]] = [
    ("openai", lambda: oai.outcome(chat_body(), {}, openai_context(), kind=oai.CHAT), (429, "busy", "upstream_error")),
    ("anthropic", lambda: conv.outcome(body(), {}, context()), (502, "busy", "rate_limit_error")),
    ("gemini", lambda: gem.outcome({"contents": contents("hi")}, {}, gemini_context(), model="gemini-2.5-flash",
                                   action="generateContent"), (429, "busy", None)),
]  # fmt: skip


@pytest.mark.parametrize(("surface", "make", "expected"), COLLECT_FAILURES, ids=[r[0] for r in COLLECT_FAILURES])
def test_collect_failure_in_the_surfaces_words(surface: str, make: Any, expected: tuple[int, str, str | None]) -> None:
    outcome = make()
    assert isinstance(outcome, outcomes.Upstream)
    assert outcome.answer.collect_failed(429, "busy") == expected


# (what, route options) → (outcome kind, answer, trace header, stream)
GEMINI_OUTCOMES: list[tuple[str, dict[str, Any], tuple[type, Any, bool, bool]]] = [
    ("alt=sse stream", {"action": "streamGenerateContent", "alt_sse": True},
     (outcomes.Upstream, gem.SSE_ANSWER, True, True)),
    ("JSON array stream", {"action": "streamGenerateContent"}, (outcomes.Upstream, gem.ARRAY_ANSWER, True, True)),
    ("generate, collected", {"action": "generateContent"}, (outcomes.Upstream, gem.ARRAY_ANSWER, False, False)),
    ("countTokens", {"action": "countTokens"}, (outcomes.Count, None, False, False)),
]  # fmt: skip


@pytest.mark.parametrize(("what", "options", "expected"), GEMINI_OUTCOMES, ids=[r[0] for r in GEMINI_OUTCOMES])
def test_gemini_outcome(what: str, options: dict[str, Any], expected: tuple[type, Any, bool, bool]) -> None:
    outcome = gem.outcome({"contents": contents("hi")}, {}, gemini_context(), model="gemini-2.5-flash", **options)
    kind, answer, trace, stream = expected
    assert (type(outcome), outcome.stream, outcome.gateway) == (kind, stream, outcomes.GEMINI)
    if isinstance(outcome, outcomes.Upstream):
        assert (outcome.answer, outcome.trace, outcome.recover, outcome.fallback) == (answer, trace, None, None)
    else:
        assert isinstance(outcome, outcomes.Count) and outcome.estimate is None  # Google's failure is the answer
        assert outcome.answer({"response": {"totalTokens": 5}}) == b'{"totalTokens":5}'
        assert outcome.answer({}) == b'{"totalTokens":0}'


# (account email) → the userAgent the Gemini path sends
GEMINI_AGENTS = [("someone@gmail.com", "antigravity"), ("someone@example.com", "jetski")]


@pytest.mark.parametrize(("email", "agent"), GEMINI_AGENTS)
def test_gemini_envelope_per_account(email: str, agent: str) -> None:
    outcome = gem.outcome({"contents": contents("hi")}, {}, gemini_context(), model="gemini-2.5-flash", action="x")
    assert isinstance(outcome, outcomes.Upstream)
    one, two = sent(outcome, Seat(email)), sent(outcome, Seat(email))
    assert (one["userAgent"], one["enabledCreditTypes"], one["request"]["sessionId"]) == (
        agent,
        ["GOOGLE_ONE_AI"],
        fnv1a64_signed("account-1"),
    )
    assert one["requestId"] != two["requestId"]  # a fresh request id per attempt


def test_openai_upstream_envelope() -> None:
    outcome = oai.outcome(chat_body(), {}, openai_context(), kind=oai.CHAT)
    assert isinstance(outcome, outcomes.Upstream) and outcome.after is None and outcome.recover is None
    doc = sent(outcome)
    assert (doc["model"], doc["project"], doc["request"]["sessionId"]) == (
        "gemini-2.5-flash",
        "project-1",
        fnv1a64_signed("account-1"),
    )
    assert doc["requestId"].startswith("agent/antigravity/")


def test_openai_undefined_values_are_dropped_when_marked() -> None:
    marked = chat_body(temperature="[undefined]")
    outcome = oai.outcome(marked, {}, openai_context(), kind=oai.CHAT, undefined=True)
    assert "[undefined]" not in repr(sent(outcome))


STOP = {"candidates": [{"content": {"role": "model", "parts": [{"text": "an answer"}]}, "finishReason": "STOP"}]}
# (what, fields) → whether the completed answer's conversation is stored
RESPONSES_STORE = [("stored by default", {}, True), ("store: false", {"store": False}, False)]


@pytest.mark.parametrize(("what", "fields", "stored"), RESPONSES_STORE, ids=[r[0] for r in RESPONSES_STORE])
def test_openai_responses_after_hook_stores_the_conversation(what: str, fields: dict[str, Any], stored: bool) -> None:
    store: dict[str, list[dict[str, Any]]] = {}
    outcome = oai.outcome({"model": "gpt-4o", "input": "hi", **fields}, {}, openai_context(store), kind=oai.RESPONSES)
    assert isinstance(outcome, outcomes.Upstream)
    assert (outcome.after is not None) == stored
    collector = outcome.answer.collector()
    collector.feed(STOP)
    response = orjson.loads(collector.result())
    if outcome.after is not None:
        outcome.after()
        assert list(store) == [response["id"]]
        assert store[response["id"]][-1]["content"] == "an answer"


def test_streaming_answers_keep_the_per_event_fast_path() -> None:
    """The pump finds the compiled/twin per-event path through the converter's bound `feed`: an outcome that
    wrapped it (a lambda, a partial) would still be correct but silently slow. Chat and Anthropic streams have one."""
    chat_outcome = oai.outcome(chat_body(stream=True), {}, openai_context(), kind=oai.CHAT)
    anthropic_outcome = conv.outcome(body("claude-opus-4-6", user("hi"), stream=True), {}, context())
    for outcome in (chat_outcome, anthropic_outcome):
        assert isinstance(outcome, outcomes.Upstream)
        assert fast_path(outcome.answer.converter().feed) is not None
