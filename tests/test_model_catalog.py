"""Which model names agfast serves, end to end with the real SDKs: unknown names are a 404 in the caller's shape
with no upstream call, the model lists name only what can be called, and what a model can do (thinking,
output limit) comes from Google's own model list before the static table."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from helpers import ServerThread, request
from stack import CLIENT_ID, CLIENT_SECRET, KEY, Fault, agfast_on, generations, onboard_all, stack_config, start_sim

from agfast.sim import DEFAULT_MODELS, MODEL_CATALOG, GoogleSimulator, SimulatorThread, demo_accounts
from agfast.upstream.accounts import AccountStore

CUSTOM = {"my-alias": "gemini-3-flash", "gpt-4*": "gemini-3-flash", "ghost": "not-offered-anywhere"}
UNKNOWN = ["foo-bar", "dall-e-3"]
SHARED_STACK = True  # conftest: one agfast for the module, with the aliases above
STACK_CONFIG = {"custom_mapping": CUSTOM}
# What Google is asked for a model's answer or its token count: none of it may happen for an unknown name.
UPSTREAM_ACTIONS = ("generateContent", "streamGenerateContent", "countTokens")


# One SDK client per (kind, server), closed when the module ends (a collected client leaks its socket, and
# google-genai closes a client it collects, mid-call).
_CLIENTS: dict[tuple[str, str], Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in _CLIENTS.values():
        client.close()
    _CLIENTS.clear()


def oai(st: ServerThread) -> openai.OpenAI:
    key = ("openai", st.url)
    if key not in _CLIENTS:
        _CLIENTS[key] = openai.OpenAI(base_url=st.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    return _CLIENTS[key]  # type: ignore[no-any-return]


def claude(st: ServerThread) -> anthropic.Anthropic:
    key = ("anthropic", st.url)
    if key not in _CLIENTS:
        _CLIENTS[key] = anthropic.Anthropic(base_url=st.url, api_key=KEY, max_retries=0, timeout=30)
    return _CLIENTS[key]  # type: ignore[no-any-return]


def gemini(st: ServerThread) -> genai.Client:
    key = ("genai", st.url)
    if key not in _CLIENTS:
        _CLIENTS[key] = genai.Client(
            api_key=KEY,
            http_options=types.HttpOptions(base_url=st.url, retry_options=types.HttpRetryOptions(attempts=1)),
        )
    return _CLIENTS[key]  # type: ignore[no-any-return]


def google_call(st: ServerThread, method: str, model: str, **kwargs: Any) -> Any:
    """One google-genai `models.<method>` call; the client is held until the answer is read (it closes itself
    when collected)."""
    client = gemini(st)
    answer = getattr(client.models, method)(model=model, **kwargs)
    return list(answer) if method.endswith("_stream") else answer


def upstream_calls(sim: GoogleSimulator) -> list[str]:
    return [r.action for r in sim.requests if r.action in UPSTREAM_ACTIONS]


HI = [{"role": "user", "content": "hello"}]

# surface → (call with a model name, the SDK's not-found error)
SURFACES: dict[str, tuple[Callable[[ServerThread, str], Any], type[Exception]]] = {
    "openai chat": (lambda st, m: oai(st).chat.completions.create(model=m, messages=HI), openai.NotFoundError),
    "openai chat stream": (
        lambda st, m: list(oai(st).chat.completions.create(model=m, messages=HI, stream=True)),
        openai.NotFoundError,
    ),
    "openai completions": (lambda st, m: oai(st).completions.create(model=m, prompt="hello"), openai.NotFoundError),
    "openai responses": (lambda st, m: oai(st).responses.create(model=m, input="hello"), openai.NotFoundError),
    "openai retrieve": (lambda st, m: oai(st).models.retrieve(m), openai.NotFoundError),
    "anthropic messages": (
        lambda st, m: claude(st).messages.create(model=m, max_tokens=100, messages=HI),  # type: ignore[arg-type]
        anthropic.NotFoundError,
    ),
    "anthropic stream": (
        lambda st, m: list(claude(st).messages.create(model=m, max_tokens=100, messages=HI, stream=True)),  # type: ignore[arg-type]
        anthropic.NotFoundError,
    ),
    "anthropic count_tokens": (
        lambda st, m: claude(st).messages.count_tokens(model=m, messages=HI),  # type: ignore[arg-type]
        anthropic.NotFoundError,
    ),
    "gemini generate": (
        lambda st, m: google_call(st, "generate_content", m, contents="hello"),
        genai_errors.ClientError,
    ),
    "gemini stream": (
        lambda st, m: list(google_call(st, "generate_content_stream", m, contents="hello")),
        genai_errors.ClientError,
    ),
    "gemini countTokens": (
        lambda st, m: google_call(st, "count_tokens", m, contents="hello"),
        genai_errors.ClientError,
    ),
    "gemini get": (lambda st, m: google_call(st, "get", m), genai_errors.ClientError),
}


def assert_not_found(exc: BaseException, surface: str, model: str) -> None:
    if isinstance(exc, openai.NotFoundError):
        error = exc.body
        assert isinstance(error, dict)
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_found", "model")
    elif isinstance(exc, anthropic.NotFoundError):
        assert exc.body == {
            "type": "error",
            "error": {"type": "not_found_error", "message": exc.body["error"]["message"]},
        }  # type: ignore[index]
    else:
        assert isinstance(exc, genai_errors.ClientError)
        assert (exc.code, exc.status) == (404, "NOT_FOUND")
    assert model in str(exc), surface


# -- #8.2 unknown model -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", UNKNOWN)
@pytest.mark.parametrize("surface", list(SURFACES))
def test_unknown_model_is_404_without_upstream_call(
    stack: ServerThread, sim: GoogleSimulator, surface: str, model: str
) -> None:
    call, not_found = SURFACES[surface]
    sim.clear_requests()
    with pytest.raises(not_found) as info:
        call(stack, model)
    assert_not_found(info.value, surface, model)
    assert upstream_calls(sim) == []


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-5-5",  # newer than any table: routed by family (Claude Code)
        "claude-haiku-5",
        "gemini-3.5-flash-lite",  # Gemini CLI's classifier model
        "gemini-4-pro",
        "gpt-5",  # Codex
        "my-alias",  # custom_mapping, exact
        "gpt-4.1",  # custom_mapping, wildcard
        "claude-sonnet-4-5",  # built-in table, forwarded
    ],
)
def test_names_the_mapping_knows_still_work(stack: ServerThread, model: str) -> None:
    reply = oai(stack).chat.completions.create(model=model, messages=HI)
    assert reply.choices[0].message.content


def test_custom_alias_to_a_model_nobody_offers_is_404(stack: ServerThread, sim: GoogleSimulator) -> None:
    sim.clear_requests()
    with pytest.raises(openai.NotFoundError) as info:
        oai(stack).chat.completions.create(model="ghost", messages=HI)
    assert "not-offered-anywhere" in info.value.message
    assert upstream_calls(sim) == []


@pytest.fixture
def unknown_lists(tmp_path: Path) -> Iterator[tuple[ServerThread, GoogleSimulator]]:
    """agfast whose accounts have no model list yet (quota never fetched: Google keeps failing it)."""
    with start_sim(2) as sim:
        cfg = stack_config(tmp_path, sim)
        store: AccountStore = onboard_all(cfg, sim)
        for account in store.load_all():
            account.raw.pop("quota", None)
            store.save(account)
        sim.script(Fault("status", status=500, action="fetchAvailableModels", times=None))
        sim.clear_requests()
        with ServerThread(cfg) as st:
            yield st, sim


def test_unknown_model_lists_fall_back_to_the_static_tables(
    unknown_lists: tuple[ServerThread, GoogleSimulator],
) -> None:
    """No account's list fetched: names the built-in table, the families or Google's prefixes know go upstream
    (unknown is not "none"); names nothing knows are still a 404."""
    st, sim = unknown_lists
    client = oai(st)
    for model in ("claude-sonnet-4-6", "gemini-3-flash", "gpt-4o", "claude-opus-4-6"):
        assert client.chat.completions.create(model=model, messages=HI).choices[0].message.content
    before = len(generations(sim))
    for model in UNKNOWN:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=model, messages=HI)
    assert len(generations(sim)) == before
    listed = {m.id for m in client.models.list()}
    assert {"claude-sonnet-4-6", "gemini-3-flash", "gpt-4o"} <= listed
    assert not any("*" in name for name in listed)


# -- #8.3 model lists -------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")  # the SDK's own note
def test_every_listed_model_answers(stack: ServerThread) -> None:
    google = gemini(stack)  # held: the SDK's pager needs its client alive
    openai_ids = {m.id for m in oai(stack).models.list()}
    gemini_ids = {m.name.removeprefix("models/") for m in google.models.list() if m.name}
    claude_ids = {m["id"] for m in claude(stack).get("/v1/models/claude", cast_to=object)["data"]}  # type: ignore[index]
    for ids in (openai_ids, gemini_ids, claude_ids):
        assert not any("*" in name for name in ids)
        assert {"gemini-3-flash", "claude-sonnet-4-6", "gpt-4o", "my-alias"} <= ids
        assert not ids & {"ghost", "gemini-3-pro-image-5x7", "gemini-2.0-flash-exp", "claude"}
        assert "gemini-3-pro-image-4k-16x9" in ids  # the offered image model's variants answer everywhere
    assert openai_ids == gemini_ids == claude_ids
    failures = []
    for name in sorted(openai_ids):
        try:
            oai(stack).chat.completions.create(model=name, messages=HI)
        except openai.APIError as exc:
            failures.append(f"openai {name}: {exc}")
    for name in sorted(claude_ids):
        try:
            claude(stack).messages.create(model=name, max_tokens=200, messages=HI)  # type: ignore[arg-type]
        except anthropic.APIError as exc:
            failures.append(f"anthropic {name}: {exc}")
    for name in sorted(gemini_ids):
        try:
            google.models.generate_content(model=name, contents="hello")
        except genai_errors.APIError as exc:
            failures.append(f"gemini {name}: {exc}")
    assert failures == []


def test_gemini_model_details_come_from_google(stack: ServerThread) -> None:
    google = gemini(stack)
    model = google.models.get(model="gemini-3-flash")
    spec = MODEL_CATALOG["gemini-3-flash"]
    assert model.name == "models/gemini-3-flash"
    assert (model.input_token_limit, model.output_token_limit) == (spec.max_tokens, spec.max_output_tokens)
    assert model.thinking is True
    assert google.models.get(model="gpt-4o").name == "models/gpt-4o"
    assert oai(stack).models.retrieve("gpt-4o").id == "gpt-4o"  # the same path, OpenAI's shape
    raw = request(stack.port, "GET", "/v1beta/models/foo-bar")
    assert raw.status == 404 and orjson.loads(raw.body)["error"]["status"] == "NOT_FOUND"


# -- #8.5 capabilities from Google's model list -----------------------------------------------------------------

NO_THINKING_VARIANT = tuple(m for m in DEFAULT_MODELS if m != "claude-sonnet-4-6-thinking")


def thinking_sim(catalog: dict[str, Any]) -> SimulatorThread:
    """Two accounts offering everything but claude-sonnet-4-6-thinking, described by `catalog`."""
    accounts = demo_accounts(2)
    for account in accounts:
        account.models = NO_THINKING_VARIANT
    return SimulatorThread(GoogleSimulator(accounts, catalog=catalog, client_id=CLIENT_ID, client_secret=CLIENT_SECRET))


SONNET = MODEL_CATALOG["claude-sonnet-4-6"]
THINKING_SONNET = dataclasses.replace(SONNET, supports_thinking=True, thinking_budget=24576)


@pytest.fixture(scope="module")
def thinking_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, GoogleSimulator]]:
    with (
        thinking_sim({"claude-sonnet-4-6": THINKING_SONNET}) as sim,
        agfast_on(sim, tmp_path_factory.mktemp("t")) as st,
    ):
        yield st, sim


def sent_thinking(sim: GoogleSimulator) -> Any:
    body = orjson.loads(generations(sim)[-1].body)
    assert body["model"] == "claude-sonnet-4-6"
    return body["request"]["generationConfig"].get("thinkingConfig")


def test_anthropic_thinking_on_a_model_google_says_can_think(
    thinking_stack: tuple[ServerThread, GoogleSimulator],
) -> None:
    st, sim = thinking_stack
    message = claude(st).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=8000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "think about it"}],
    )
    assert message.content[0].type == "thinking"
    assert sent_thinking(sim)["thinkingBudget"] == 2048


def test_openai_reasoning_effort_on_a_model_google_says_can_think(
    thinking_stack: tuple[ServerThread, GoogleSimulator],
) -> None:
    st, sim = thinking_stack
    reply = oai(st).chat.completions.create(
        model="claude-sonnet-4-6", reasoning_effort="low", messages=[{"role": "user", "content": "think about it"}]
    )
    assert getattr(reply.choices[0].message, "reasoning_content", None)
    assert sent_thinking(sim)["includeThoughts"] is True


def test_gemini_thinking_config_on_a_model_google_says_can_think(
    thinking_stack: tuple[ServerThread, GoogleSimulator],
) -> None:
    st, sim = thinking_stack
    google = gemini(st)
    answer = google.models.generate_content(
        model="claude-sonnet-4-6",
        contents="think about it",
        config=types.GenerateContentConfig(
            thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=2048)
        ),
    )
    parts = answer.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert any(p.thought for p in parts or ())
    sent = sent_thinking(sim)  # google-genai writes proto field names; Google reads both spellings
    assert sent.get("thinkingBudget", sent.get("thinking_budget")) == 2048


def test_google_saying_a_model_cannot_think_wins_over_the_static_table(tmp_path: Path) -> None:
    """The static table thinks Claude Sonnet can think; this Google says it cannot: no thinkingConfig is sent
    (the request still succeeds, without thinking)."""
    with thinking_sim({}) as sim, agfast_on(sim, tmp_path) as st:
        message = claude(st).messages.create(
            model="claude-sonnet-4-6",
            max_tokens=8000,
            thinking={"type": "enabled", "budget_tokens": 2048},
            messages=[{"role": "user", "content": "think about it"}],
        )
        assert [block.type for block in message.content] == ["text"]
        assert sent_thinking(sim) is None


def test_output_limit_comes_from_google(tmp_path: Path) -> None:
    """Google describes a smaller output limit than the static table: agfast caps at Google's (the simulator
    refuses anything above it, like Google)."""
    small = dataclasses.replace(MODEL_CATALOG["gemini-3-flash"], max_output_tokens=8192)
    with thinking_sim({"gemini-3-flash": small}) as sim, agfast_on(sim, tmp_path) as st:
        reply = oai(st).chat.completions.create(model="gemini-3-flash", max_tokens=60000, messages=HI)
        assert reply.choices[0].message.content
        answer = claude(st).messages.create(model="gemini-3-flash", max_tokens=60000, messages=HI)  # type: ignore[arg-type]
        assert answer.content
        config = types.GenerateContentConfig(max_output_tokens=60000)
        assert gemini(st).models.generate_content(model="gemini-3-flash", contents="hi", config=config).text
        for rec in generations(sim):
            assert orjson.loads(rec.body)["request"]["generationConfig"]["maxOutputTokens"] <= 8192
