"""Every auth mode × (no key, the right or a wrong key in each header form) × health and proxied paths, over real
sockets; "allowed" means an answer served by a real (simulated) account, not just "not 401"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import ServerThread, make_config, request
from stack import agfast_on

from agfast.sim import GoogleSimulator

KEY = "sk-test-key-123456"
SIM_ACCOUNTS = 1  # conftest: the module's simulator has one account
PROMPT = "Who let me in"
ANSWER = f"[gemini-3-flash] echo: {PROMPT}"
CHAT = orjson.dumps({"model": "gemini-3-flash", "messages": [{"role": "user", "content": PROMPT}]})
GENERATE = orjson.dumps({"contents": [{"parts": [{"text": PROMPT}]}]})

# Header forms a client may use to carry the key (spec §2.2 step 5).
FORMS = {
    "bearer": lambda k: {"Authorization": f"Bearer {k}"},
    "raw-authorization": lambda k: {"Authorization": k},
    "x-api-key": lambda k: {"x-api-key": k},
    "x-goog-api-key": lambda k: {"x-goog-api-key": k},
}
# What a client sends: no key at all (the header form is moot then, so it is one row), or the right or a wrong
# key in each form.
KEYS = [
    ("none", None),
    *((f"right-{f}", (KEY, f)) for f in FORMS),
    *((f"wrong-{f}", ("sk-wrong-key-000000", f)) for f in FORMS),
]

# (mode name, config overrides, health guarded?, other routes guarded?)
MODES = [
    ("off", {"auth_mode": "off"}, False, False),
    ("strict", {"auth_mode": "strict"}, True, True),
    ("all_except_health", {"auth_mode": "all_except_health"}, False, True),
    ("auto-loopback", {"auth_mode": "auto"}, False, False),
    ("auto-lan", {"auth_mode": "auto", "allow_lan_access": True}, False, True),
]

# (path, method, body, is health?, the answer that proves the request got through: served by a real account)
PATHS = [
    ("/healthz", "GET", None, True, lambda doc: doc["status"]),
    ("/health", "GET", None, True, lambda doc: doc["status"]),
    ("/v1/chat/completions", "POST", CHAT, False, lambda doc: doc["choices"][0]["message"]["content"]),
    ("/v1beta/models/gemini-3-flash:generateContent", "POST", GENERATE, False,
     lambda doc: doc["candidates"][0]["content"]["parts"][0]["text"]),
]  # fmt: skip


@pytest.fixture(scope="module", params=MODES, ids=[m[0] for m in MODES])
def mode_server(
    request: pytest.FixtureRequest, sim: GoogleSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple]:  # type: ignore[type-arg]
    name, overrides, health_guarded, guarded = request.param
    with agfast_on(sim, tmp_path_factory.mktemp(name), api_key=KEY, **overrides) as st:
        yield st, health_guarded, guarded


@pytest.mark.parametrize(("path", "method", "body", "is_health", "answer_of"), PATHS, ids=[p[0] for p in PATHS])
@pytest.mark.parametrize("key", [k[1] for k in KEYS], ids=[k[0] for k in KEYS])
def test_auth_matrix(
    mode_server: tuple,  # type: ignore[type-arg]
    path: str,
    method: str,
    body: bytes | None,
    is_health: bool,
    answer_of: Callable[[dict[str, Any]], str],
    key: tuple[str, str] | None,
) -> None:
    server, health_guarded, guarded = mode_server
    headers = {} if key is None else FORMS[key[1]](key[0])
    reply = request(server.port, method, path, body, {**headers, "Content-Type": "application/json"})
    needs_key = health_guarded if is_health else guarded
    if needs_key and (key is None or key[0] != KEY):
        assert reply.status == 401
        message = reply.json()["error"]["message"]
        assert ("Missing API key" in message) == (key is None)
        assert KEY not in reply.body.decode() and "sk-wrong" not in reply.body.decode()
    else:
        assert reply.status == 200, reply.body[:300]
        assert answer_of(reply.json()) == ("ok" if is_health else ANSWER)


def test_bind_follows_lan_flag(tmp_path: Path) -> None:
    with ServerThread(make_config(tmp_path, auth_mode="auto", allow_lan_access=True)) as st:
        assert st.server.state is not None
        assert st.config.bind_host == "0.0.0.0"
        assert st.config.effective_auth_mode == "all_except_health"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(make_config(tmp_path_factory.mktemp("strict"), auth_mode="strict", api_key=KEY)) as st:
        yield st


def test_authorization_shadows_other_headers(strict_server: ServerThread) -> None:
    headers = {"Authorization": "Bearer sk-nope-nope-nope", "x-api-key": KEY}
    assert request(strict_server.port, "GET", "/healthz", headers=headers).status == 401
    headers = {"x-api-key": KEY, "x-goog-api-key": "sk-nope-nope-nope"}
    assert request(strict_server.port, "GET", "/healthz", headers=headers).status == 200


def test_bearer_scheme_is_case_insensitive(strict_server: ServerThread) -> None:
    assert request(strict_server.port, "GET", "/healthz", headers={"Authorization": f"bearer {KEY}"}).status == 200


def test_key_compare_is_exact(strict_server: ServerThread) -> None:
    for near_miss in (KEY.upper(), KEY + "x", KEY[:-1], ""):
        assert request(strict_server.port, "GET", "/healthz", headers={"x-api-key": near_miss}).status == 401


def test_401_in_each_family_shape(strict_server: ServerThread) -> None:
    anthropic = request(strict_server.port, "POST", "/v1/messages?beta=true", b"{}")
    assert anthropic.status == 401
    assert anthropic.json()["error"]["type"] == "authentication_error"
    gemini = request(strict_server.port, "POST", "/v1beta/models/x:generateContent", b"{}")
    assert gemini.json()["error"]["status"] == "UNAUTHENTICATED"
    openai = request(strict_server.port, "GET", "/v1/models")
    assert openai.json()["error"]["code"] == "invalid_api_key"
    unknown = request(strict_server.port, "GET", "/v1/whatever")
    assert unknown.status == 401  # unknown paths are guarded too: no route probing without a key


def test_options_and_claude_probe_pass_without_key(strict_server: ServerThread) -> None:
    assert request(strict_server.port, "OPTIONS", "/v1/messages").status == 204
    assert request(strict_server.port, "HEAD", "/api/hello").status == 200


def test_no_key_configured_fails_closed(tmp_path: Path) -> None:
    with ServerThread(make_config(tmp_path, auth_mode="all_except_health", api_key="")) as st:
        reply = request(st.port, "POST", "/v1/chat/completions", CHAT, {"Authorization": "Bearer anything"})
        assert reply.status == 401
        assert "no API key configured" in reply.json()["error"]["message"]
        assert request(st.port, "GET", "/healthz").status == 200
