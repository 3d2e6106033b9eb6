"""Named API keys over real sockets and the real SDKs: made through the admin API or `agfast keys`, stored hashed,
refused with 401 (revoked, expired), 403 (model outside the key's patterns) and 429 + Retry-After (requests per
minute, tokens per day) in each caller's shape, always before any upstream call; the main key works as before.
Time is the policy's injected clock, never a sleep."""

from __future__ import annotations

import hashlib
import os
import stat
import time
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
from helpers import Reply, ServerThread, request, run_agfast
from stack import KEY, agfast_on, generations

from agfast.keys import KEY_FILE, SECONDS_PER_DAY
from agfast.sim import GoogleSimulator

SHARED_STACK = True  # conftest: one agfast for the module, strict auth (every test makes its own keys)
STACK_CONFIG = {"auth_mode": "strict"}
MODEL = "gemini-3-flash"
CLAUDE = "claude-sonnet-4-6"
T0 = 1_900_000_000.0  # a fixed wall clock (2030-03-17), mid-day UTC
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
# (protocol, path, body) of one generation per surface, for the raw-socket checks of each error shape.
SURFACES = [
    ("openai", "/v1/chat/completions", CHAT),
    ("anthropic", "/v1/messages", {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
    ("gemini", f"/v1beta/models/{MODEL}:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}),
]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(stack: ServerThread) -> Iterator[Clock]:
    fake = Clock()
    stack.app.keys.clock = fake
    yield fake
    stack.app.keys.clock = time.time


def admin(st: ServerThread, method: str, path: str, body: Any = None) -> Reply:
    data = orjson.dumps(body) if body is not None else None
    return request(st.port, method, path, data, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})


_made = iter(range(10**6))


def make_key(st: ServerThread, **fields: Any) -> tuple[str, dict[str, Any]]:
    """A new key through the admin API: (the key, its view)."""
    reply = admin(st, "POST", "/api/user-tokens", {"name": f"key-{next(_made)}", **fields})
    assert reply.status == 201, reply.body
    view = reply.json()
    return view.pop("key"), view


def post(st: ServerThread, path: str, body: dict[str, Any], key: str) -> Reply:
    return request(st.port, "POST", path, orjson.dumps(body), {"x-api-key": key, "Content-Type": "application/json"})


def error_of(protocol: str, reply: Reply) -> tuple[str, str]:
    """(type or status, message) from an error body in `protocol`'s shape, failing on any other shape."""
    doc = reply.json()
    if protocol == "anthropic":
        assert doc["type"] == "error"
        return doc["error"]["type"], doc["error"]["message"]
    if protocol == "gemini":
        assert doc["error"]["code"] == reply.status
        return doc["error"]["status"], doc["error"]["message"]
    assert set(doc["error"]) == {"message", "type", "code", "param"}
    return doc["error"]["type"], doc["error"]["message"]


def test_a_new_key_serves_the_main_key_still_works_and_neither_opens_the_other_s_doors(stack: ServerThread) -> None:
    key, view = make_key(stack)
    assert key.startswith("sk-ag-") and view["prefix"] == key[:10] + "…" and view["status"] == "active"
    for used in (key, KEY):
        with openai.OpenAI(base_url=stack.url + "/v1", api_key=used, max_retries=0) as client:
            answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == f"[{MODEL}] echo: hi"
    # A named key is no admin secret.
    reply = request(stack.port, "GET", "/api/user-tokens", None, {"Authorization": f"Bearer {key}"})
    assert reply.status == 401
    # Nothing shows the key again, and the list counts its request.
    listed = admin(stack, "GET", "/api/user-tokens")
    assert key.encode() not in listed.body
    [row] = [t for t in listed.json()["tokens"] if t["id"] == view["id"]]
    assert row["requests"] == 1 and row["last_used"] is not None


def test_the_key_file_holds_only_hashes_and_is_owner_only(stack: ServerThread) -> None:
    key, view = make_key(stack, rpm=5, models=["gemini-*"])
    path = stack.config.data_dir / KEY_FILE
    raw = path.read_bytes()
    assert key.encode() not in raw and key[10:20].encode() not in raw
    [saved] = [k for k in orjson.loads(raw)["keys"] if k["id"] == view["id"]]
    assert saved["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert saved["rpm"] == 5 and saved["models"] == ["gemini-*"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_over_its_rpm_a_key_gets_429_with_retry_after_before_any_upstream_call_and_the_next_window_serves(
    stack: ServerThread, sim: GoogleSimulator, clock: Clock
) -> None:
    key, _ = make_key(stack, rpm=2)
    for _ in range(2):
        assert post(stack, "/v1/chat/completions", CHAT, key).status == 200
    clock.now += 10
    served = len(generations(sim))
    for protocol, path, body in SURFACES:
        reply = post(stack, path, body, key)
        assert reply.status == 429, reply.body
        assert reply.headers["retry-after"] == "50"
        kind, message = error_of(protocol, reply)
        assert kind in ("rate_limit_error", "RESOURCE_EXHAUSTED") and "2 requests per minute" in message
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)
    with client, pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.response.headers["retry-after"] == "50"
    assert len(generations(sim)) == served
    # Another key, and the main key, are not held by this one's window.
    assert post(stack, "/v1/chat/completions", CHAT, KEY).status == 200
    clock.now += 50  # the window that opened at T0 is over
    assert post(stack, "/v1/chat/completions", CHAT, key).status == 200


@pytest.mark.parametrize("refusal", ["revoked", "expired"])
def test_revoked_and_expired_keys_get_401_in_each_shape(
    stack: ServerThread, sim: GoogleSimulator, clock: Clock, refusal: str
) -> None:
    key, view = make_key(stack, expires=T0 + 100)
    assert post(stack, "/v1/chat/completions", CHAT, key).status == 200
    if refusal == "revoked":
        assert admin(stack, "DELETE", f"/api/user-tokens/{view['id']}").json()["status"] == "revoked"
    else:
        clock.now = T0 + 100
    served = len(generations(sim))
    for protocol, path, body in SURFACES:
        reply = post(stack, path, body, key)
        assert reply.status == 401, reply.body
        kind, message = error_of(protocol, reply)
        assert kind in ("invalid_request_error", "authentication_error", "UNAUTHENTICATED")
        assert refusal in message
    assert len(generations(sim)) == served
    renewed = admin(stack, "POST", f"/api/user-tokens/{view['id']}/renew", {"days": 1})
    if refusal == "revoked":
        assert renewed.status == 400 and "revoked" in renewed.json()["error"]
    else:
        assert renewed.status == 200 and renewed.json()["status"] == "active"
        assert post(stack, "/v1/chat/completions", CHAT, key).status == 200


def call_openai(st: ServerThread, key: str, model: str) -> None:
    with openai.OpenAI(base_url=st.url + "/v1", api_key=key, max_retries=0) as client:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def call_anthropic(st: ServerThread, key: str, model: str) -> None:
    with anthropic.Anthropic(base_url=st.url, api_key=key, max_retries=0) as client:
        client.messages.create(model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}])


def call_gemini(st: ServerThread, key: str, model: str) -> None:
    options = types.HttpOptions(base_url=st.url, retry_options=types.HttpRetryOptions(attempts=1))
    client = genai.Client(api_key=key, http_options=options)
    client.models.generate_content(model=model, contents="hi")


SDK_CALLS: dict[str, Callable[[ServerThread, str, str], None]] = {
    "openai": call_openai,
    "anthropic": call_anthropic,
    "gemini": call_gemini,
}
# The exception each SDK raises for a 403, and how to read the error's type from it.
DENIED: dict[str, tuple[type[Exception], Callable[[Any], str]]] = {
    "openai": (openai.PermissionDeniedError, lambda e: e.body["type"]),
    "anthropic": (anthropic.PermissionDeniedError, lambda e: e.body["error"]["type"]),
    "gemini": (genai_errors.ClientError, lambda e: e.status),
}


@pytest.mark.parametrize("protocol", list(SDK_CALLS))
def test_a_model_outside_the_key_s_patterns_is_403_in_each_sdk_before_any_upstream_call(
    stack: ServerThread, sim: GoogleSimulator, protocol: str
) -> None:
    key, _ = make_key(stack, models=["claude-*"])
    SDK_CALLS[protocol](stack, key, CLAUDE)  # inside its patterns: served
    served = len(generations(sim))
    error, kind_of = DENIED[protocol]
    with pytest.raises(error) as denied:
        SDK_CALLS[protocol](stack, key, MODEL)
    assert getattr(denied.value, "status_code", getattr(denied.value, "code", None)) == 403
    assert kind_of(denied.value) in ("permission_error", "PERMISSION_DENIED")
    assert MODEL in str(denied.value)
    assert len(generations(sim)) == served
    SDK_CALLS[protocol](stack, KEY, MODEL)  # the main key has no patterns


def test_over_its_tokens_per_day_a_key_gets_429_until_the_next_utc_day(
    stack: ServerThread, sim: GoogleSimulator, clock: Clock
) -> None:
    key, view = make_key(stack, tpd=10)
    assert post(stack, "/v1/chat/completions", CHAT, key).status == 200  # charged what Google counted, > 10
    reply = post(stack, "/v1/chat/completions", CHAT, key)
    assert reply.status == 429
    midnight = (T0 // SECONDS_PER_DAY + 1) * SECONDS_PER_DAY
    assert int(reply.headers["retry-after"]) == int(midnight - T0)
    assert "10 tokens" in reply.json()["error"]["message"]
    [row] = [t for t in admin(stack, "GET", "/api/user-tokens").json()["tokens"] if t["id"] == view["id"]]
    assert row["tokens"] == row["tokens_today"] > 10
    clock.now = midnight
    assert post(stack, "/v1/chat/completions", CHAT, key).status == 200


def test_usage_per_key_matches_what_the_client_was_told(stack: ServerThread) -> None:
    key, view = make_key(stack)
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0) as client:
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "count me"}])
    assert answer.usage is not None
    [row] = [t for t in admin(stack, "GET", "/api/user-tokens").json()["tokens"] if t["id"] == view["id"]]
    # Charged what Google counted: the prompt, the answer and its thinking (OpenAI's total_tokens).
    assert row["tokens"] == answer.usage.total_tokens > 0


def test_usage_per_key_matches_the_monitor_stats_and_metrics(stack: ServerThread) -> None:
    key, view = make_key(stack)
    with anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0) as claude:
        for text in ("one", "two"):
            claude.messages.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": text}])
    assert post(stack, "/v1/chat/completions", CHAT, KEY).status == 200  # the main key: not this key's usage
    monitor = stack.app.monitor
    assert monitor is not None and monitor.flush()
    [row] = [t for t in admin(stack, "GET", "/api/user-tokens").json()["tokens"] if t["id"] == view["id"]]
    logs = admin(stack, "GET", f"/api/logs?filter={view['name']}&limit=10").json()["logs"]
    assert [log["username"] for log in logs] == [view["name"]] * 2
    assert row["tokens"] == sum(log["input_tokens"] + log["output_tokens"] for log in logs) > 0
    [stats] = [k for k in admin(stack, "GET", "/api/stats/keys").json()["keys"] if k["key"] == view["name"]]
    assert (stats["requests"], stats["total_tokens"]) == (2, row["tokens"])
    metrics = admin(stack, "GET", "/metrics").body.decode()
    assert f'agfast_key_requests_total{{key="{view["name"]}"}} 2.0' in metrics
    charged = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(f'agfast_key_tokens_total{{key="{view["name"]}",kind="in')
        or line.startswith(f'agfast_key_tokens_total{{key="{view["name"]}",kind="out')
    )
    assert charged == row["tokens"]


def test_real_traffic_over_the_daily_tokens_gets_429(stack: ServerThread, clock: Clock) -> None:
    key, _ = make_key(stack, tpd=1)
    with anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0) as claude:
        claude.messages.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.RateLimitError):
            claude.messages.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "hi"}])


def test_admin_rejects_bad_definitions_in_its_shape(stack: ServerThread) -> None:
    for body, needle in (
        ({"name": ""}, "name"),
        ({"name": "x", "rpm": -1}, "rpm"),
        ({"name": "x", "expires": "next week"}, "expires"),
        ({"name": "x", "models": 5}, "models"),
        ({"name": "x", "key": "sk-mine"}, "Unknown field"),
    ):
        reply = admin(stack, "POST", "/api/user-tokens", body)
        assert reply.status == 400 and needle in reply.json()["error"], (body, reply.body)
    assert admin(stack, "PATCH", "/api/user-tokens/nope", {"rpm": 1}).status == 404
    _, view = make_key(stack)
    changed = admin(stack, "PATCH", f"/api/user-tokens/{view['name']}", {"rpm": 7, "models": "gemini-*,claude-*"})
    assert changed.status == 200 and changed.json()["rpm"] == 7
    assert changed.json()["models"] == ["gemini-*", "claude-*"]


# -- `agfast keys` -------------------------------------------------------------------------------------------


def keys_cli(data_dir: Path, *args: str) -> Any:
    return run_agfast("keys", *args, "--data-dir", str(data_dir))


def test_keys_cli_add_list_revoke_renew_and_a_server_serves_what_it_made(sim: GoogleSimulator, tmp_path: Path) -> None:
    data = tmp_path / "agfast"
    added = keys_cli(
        data, "add", "laptop", "--rpm", "30", "--tpd", "5000", "--models", "gemini-*", "--expires", "2099-01-31"
    )
    assert added.returncode == 0, added.stderr
    [key] = [w for w in added.stdout.split() if w.startswith("sk-ag-")]
    assert "shown once" in added.stdout
    listed = keys_cli(data, "list")
    assert listed.returncode == 0 and "laptop" in listed.stdout and key[:10] in listed.stdout
    assert key not in listed.stdout and "2099-02-01" in listed.stdout and "30" in listed.stdout
    [row] = orjson.loads(keys_cli(data, "list", "--json").stdout)
    assert row["rpm"] == 30 and row["tpd"] == 5000 and row["models"] == ["gemini-*"] and "key" not in row
    assert key.encode() not in (data / KEY_FILE).read_bytes()
    with agfast_on(sim, data, auth_mode="strict") as st:
        assert post(st, "/v1/chat/completions", CHAT, key).status == 200
    assert keys_cli(data, "renew", "laptop", "--days", "10").returncode == 0
    assert orjson.loads(keys_cli(data, "list", "--json").stdout)[0]["expires"] == "2099-02-11T00:00:00Z"
    revoked = keys_cli(data, "revoke", "laptop")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    with agfast_on(sim, data, auth_mode="strict") as st:
        assert post(st, "/v1/chat/completions", CHAT, key).status == 401
    missing = keys_cli(data, "revoke", "nobody")
    assert missing.returncode == 1 and "no API key named 'nobody'" in missing.stderr
    duplicate = keys_cli(data, "add", "laptop")
    assert duplicate.returncode == 1 and "exists already" in duplicate.stderr


def test_a_running_agfast_takes_keys_made_by_the_cli_and_writes_usage_back_for_it(stack: ServerThread) -> None:
    data = stack.config.data_dir
    added = keys_cli(data, "add", "late-comer", "--rpm", "5")
    assert added.returncode == 0, added.stderr
    [key] = [w for w in added.stdout.split() if w.startswith("sk-ag-")]
    stack.call(stack.app.keys.flush)  # what the server's upkeep does every FLUSH_EVERY seconds
    for _ in range(3):
        assert post(stack, "/v1/chat/completions", CHAT, key).status == 200
    stack.call(stack.app.keys.flush)
    [row] = [r for r in orjson.loads(keys_cli(data, "list", "--json").stdout) if r["name"] == "late-comer"]
    assert row["requests"] == 3 and row["rpm"] == 5
    assert keys_cli(data, "revoke", "late-comer").returncode == 0
    stack.call(stack.app.keys.flush)
    assert post(stack, "/v1/chat/completions", CHAT, key).status == 401


def test_an_unreadable_key_file_stops_agfast_with_one_line_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "agfast"
    data.mkdir()
    (data / KEY_FILE).write_text('{"keys": [{"name": "half"')
    for args in (("--port", "0", "--data-dir", str(data)), ("keys", "list", "--data-dir", str(data))):
        failed = run_agfast(*args)
        assert failed.returncode == 1, failed.stderr
        line = failed.stderr.strip().splitlines()[-1]
        assert KEY_FILE in line and "not a valid key file" in line and "Traceback" not in failed.stderr


def test_a_renamed_key_is_charged_under_its_new_name_through_the_name_index(stack: ServerThread) -> None:
    """Charging tokens finds the key by name in one lookup (not a scan of every key), and a rename moves it."""
    key, view = make_key(stack)
    renamed = f"{view['name']}-renamed"
    assert admin(stack, "PATCH", f"/api/user-tokens/{view['id']}", {"name": renamed}).status == 200
    store = stack.app.keys.store
    assert store.by_name[renamed].id == view["id"] and view["name"] not in store.by_name
    assert post(stack, "/v1/chat/completions", CHAT, key).status == 200
    [row] = [t for t in admin(stack, "GET", "/api/user-tokens").json()["tokens"] if t["id"] == view["id"]]
    assert row["name"] == renamed and row["requests"] == 1 and row["tokens"] > 0
