"""The admin API under /api over real sockets: auth in every mode, no secret in any answer, and every change
visible both through the API and through what the proxy then does (with the real SDKs and the simulator)."""

from __future__ import annotations

import logging
import os
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from helpers import Reply, ServerThread, request
from stack import CLIENT_SECRET, KEY, Fault, agfast_on, generations

from agfast.sim import GoogleSimulator
from agfast.upstream.accounts import AccountStore

MODEL = "gemini-3-flash"
ADMIN_PASSWORD = "admin-pw-for-tests-only"
WRONG = "sk-not-the-right-key"

# Every admin route with a body that would be accepted; `{id}` becomes a real account id.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/proxy/status", None),
    ("POST", "/api/proxy/start", None),
    ("POST", "/api/proxy/stop", None),
    ("DELETE", "/api/proxy/rate-limits", None),
    ("DELETE", "/api/proxy/rate-limits/{id}", None),
    ("POST", "/api/proxy/session-bindings/clear", None),
    ("GET", "/api/proxy/preferred-account", None),
    ("POST", "/api/proxy/preferred-account", {"accountId": None}),
    ("GET", "/api/accounts", None),
    ("POST", "/api/accounts", {"refreshToken": "1//sim-refresh-demo1"}),
    ("POST", "/api/accounts/refresh", None),
    ("DELETE", "/api/accounts/{id}", None),
    ("POST", "/api/accounts/{id}/toggle-proxy", None),
    ("GET", "/api/accounts/{id}/quota", None),
    ("GET", "/api/config", None),
    ("POST", "/api/config", {"log_level": "info"}),
]
# The routes that only read: safe to call with the right key in any test.
READ_ROUTES = [r for r in ROUTES if r[0] == "GET"]


@pytest.fixture
def admin_stack(sim: GoogleSimulator, tmp_path: Path) -> Iterator[ServerThread]:
    """agfast with an admin password and strict proxy auth."""
    with agfast_on(sim, tmp_path / "agfast", admin_password=ADMIN_PASSWORD, auth_mode="strict") as st:
        yield st
    sim.clear_faults()


def call(st: ServerThread, method: str, path: str, body: Any = None, key: str | None = KEY) -> Reply:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers["Content-Type"] = "application/json"
    return request(st.port, method, path, data, headers)


def ok(st: ServerThread, method: str, path: str, body: Any = None, key: str = KEY) -> Any:
    reply = call(st, method, path, body, key)
    assert reply.status == 200, (method, path, reply.status, reply.body)
    return reply.json()


def account_ids(st: ServerThread) -> dict[str, str]:
    """email → id, from the data dir."""
    return {a.email: a.id for a in AccountStore(st.config.data_dir).load_all()}


def with_id(path: str, account_id: str) -> str:
    return path.replace("{id}", account_id)


def secrets_of(st: ServerThread, sim: GoogleSimulator) -> list[str]:
    """Every secret an answer must never contain: keys, passwords, refresh and access tokens."""
    found = [KEY, ADMIN_PASSWORD, CLIENT_SECRET]
    found += [a.refresh_token for a in sim.accounts.values()]
    found += [a.access_token for a in AccountStore(st.config.data_dir).load_all() if a.access_token]
    return found


def chat(st: ServerThread, text: str = "hello there", model: str = MODEL, key: str = KEY) -> Any:
    with openai.OpenAI(base_url=st.url + "/v1", api_key=key, max_retries=0, timeout=30) as client:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}]
        )


def wait_for(predicate: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()  # type: ignore[no-any-return]


# -- auth ------------------------------------------------------------------------------------------------


def test_auth_mode_off_does_not_open_the_admin_api(fresh: ServerThread) -> None:
    """auth_mode=off, no admin password: every admin route needs the api key; /api/health is public."""
    assert fresh.config.auth_mode == "off"
    ids = account_ids(fresh)
    some_id = next(iter(ids.values()))
    for method, path, body in ROUTES:
        for key in (None, WRONG):
            reply = call(fresh, method, with_id(path, some_id), body, key)
            assert reply.status == 401, (method, path, key, reply.body)
            assert set(reply.json()) == {"error"} and reply.json()["error"], reply.body
    for method, path, _ in READ_ROUTES:
        ok(fresh, method, with_id(path, some_id))
    health = call(fresh, "GET", "/api/health", key=None)
    assert health.status == 200 and health.json()["status"] == "ok"
    assert len(account_ids(fresh)) == 3  # nothing was changed by the refused calls


def test_admin_password_is_the_admin_secret_and_the_api_key_is_not(admin_stack: ServerThread) -> None:
    ids = account_ids(admin_stack)
    some_id = next(iter(ids.values()))
    for method, path, body in ROUTES:
        reply = call(admin_stack, method, with_id(path, some_id), body, KEY)
        assert reply.status == 401, (method, path, reply.body)
        assert "error" in reply.json()
    # Every route works with the admin password (the account deleted is another than the one the others use).
    doomed = sorted(ids.values())[-1]
    some_id = sorted(ids.values())[0]
    for method, path, body in ROUTES:
        target = doomed if (method, path) == ("DELETE", "/api/accounts/{id}") else some_id
        ok(admin_stack, method, with_id(path, target), body, key=ADMIN_PASSWORD)
    assert doomed not in account_ids(admin_stack).values()
    ok(admin_stack, "POST", "/api/proxy/start", key=ADMIN_PASSWORD)
    # The admin password is no proxy key: proxy routes still want the api key (strict mode).
    with pytest.raises(openai.AuthenticationError):
        chat(admin_stack, key=ADMIN_PASSWORD)
    assert chat(admin_stack).http_response.status_code == 200
    # strict guards /healthz, but /api/health stays public.
    assert call(admin_stack, "GET", "/healthz", key=None).status == 401
    assert call(admin_stack, "GET", "/api/health", key=None).status == 200


def test_bad_requests_are_4xx_in_the_admin_shape(fresh: ServerThread) -> None:
    cases = [
        ("POST", "/api/config", b"{not json", 400),
        ("POST", "/api/config", b"[1, 2]", 400),
        ("POST", "/api/accounts", b'{"refreshToken": 5}', 400),
        ("POST", "/api/accounts", b'{"refreshToken": "ya29.an-access-token"}', 400),
        ("GET", "/api/accounts/no-such-account/quota", None, 404),
        ("DELETE", "/api/accounts/no-such-account", None, 404),
        ("DELETE", "/api/proxy/rate-limits/no-such-account", None, 404),
        ("POST", "/api/accounts/no-such-account/toggle-proxy", None, 404),
        ("POST", "/api/proxy/preferred-account", b'{"accountId": "nobody@example.com"}', 404),
        ("POST", "/api/proxy/preferred-account", b"{}", 400),
        ("GET", "/api/no-such-route", None, 404),
        ("PUT", "/api/config", b"{}", 405),
    ]
    for method, path, body, status in cases:
        reply = call(fresh, method, path, body)
        assert reply.status == status, (method, path, reply.status, reply.body)
        assert set(reply.json()) == {"error"}, reply.body


def test_browser_policy_applies_to_the_admin_api(fresh: ServerThread) -> None:
    page = {"Origin": "http://evil.example"}
    refused = request(fresh.port, "GET", "/api/accounts", None, page)
    assert refused.status == 403 and "Cross-origin request" in refused.json()["error"]
    rebinding = request(fresh.port, "GET", "/api/accounts", None, {"Host": "evil.example", "Authorization": KEY})
    assert rebinding.status == 403 and set(rebinding.json()) == {"error"}


def test_no_answer_nor_log_line_contains_a_secret(
    admin_stack: ServerThread, sim: GoogleSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agfast")
    assert chat(admin_stack).http_response.status_code == 200  # a used account has a live access token
    ids = account_ids(admin_stack)
    answers = []
    for account_id in ids.values():
        for method, path, _ in READ_ROUTES:
            answers.append(call(admin_stack, method, with_id(path, account_id), key=ADMIN_PASSWORD).body)
    answers.append(call(admin_stack, "POST", "/api/accounts/refresh", key=ADMIN_PASSWORD).body)
    answers.append(call(admin_stack, "POST", "/api/config", {"log_level": "info"}, key=ADMIN_PASSWORD).body)
    answers.append(call(admin_stack, "POST", "/api/accounts", {"refreshToken": "1//nope"}, key=ADMIN_PASSWORD).body)
    answers.append(call(admin_stack, "GET", "/api/accounts", key=WRONG).body)
    new_key = "sk-secret-key-set-live-9876"
    answers.append(call(admin_stack, "POST", "/api/config", {"api_key": new_key}, key=ADMIN_PASSWORD).body)
    answers.append(call(admin_stack, "GET", "/api/config", key=ADMIN_PASSWORD).body)
    secrets = [*secrets_of(admin_stack, sim), new_key]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "api_key is now" in logged
    for secret in secrets:
        assert secret not in logged, secret[:6]
    for body in answers:
        for secret in secrets:
            assert secret.encode() not in body, (secret[:6], body[:200])
    config = call(admin_stack, "GET", "/api/config", key=ADMIN_PASSWORD).json()
    assert config["api_key"] == f"sk-…{new_key[-4:]}"
    assert config["admin_password"] == "***" and config["oauth.client_secret"] == "***"


# -- proxy switch ----------------------------------------------------------------------------------------


def test_stopped_proxy_answers_503_in_each_protocol_and_serves_again_once_started(
    fresh: ServerThread, sim: GoogleSimulator
) -> None:
    assert ok(fresh, "GET", "/api/proxy/status")["running"] is True
    stopped = ok(fresh, "POST", "/api/proxy/stop")
    assert stopped["running"] is False and stopped["active_accounts"] == 3
    client = openai.OpenAI(base_url=fresh.url + "/v1", api_key=KEY, max_retries=0)
    with client, pytest.raises(openai.InternalServerError) as oa:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert oa.value.status_code == 503
    assert isinstance(oa.value.body, dict) and oa.value.body["code"] == "proxy_stopped"
    assert "POST /api/proxy/start" in oa.value.body["message"]
    claude = anthropic.Anthropic(base_url=fresh.url, api_key=KEY, max_retries=0)
    with claude, pytest.raises(anthropic.APIStatusError) as an:
        claude.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert an.value.status_code == 503
    assert isinstance(an.value.body, dict) and an.value.body["error"]["type"] == "overloaded_error"
    options = types.HttpOptions(base_url=fresh.url, retry_options=types.HttpRetryOptions(attempts=1))
    google = genai.Client(api_key=KEY, http_options=options)
    with pytest.raises(genai_errors.ServerError) as gm:
        google.models.generate_content(model=MODEL, contents="hi")
    assert gm.value.code == 503 and gm.value.status == "UNAVAILABLE"
    assert generations(sim) == []
    # Health and the admin API keep working while stopped.
    assert call(fresh, "GET", "/healthz").status == 200
    assert ok(fresh, "GET", "/api/proxy/status")["running"] is False
    assert ok(fresh, "POST", "/api/proxy/start")["running"] is True
    assert chat(fresh).http_response.status_code == 200
    assert google.models.generate_content(model=MODEL, contents="hi").text


# -- lockouts, bindings, preferred account ------------------------------------------------------------------


def test_cleared_lockout_serves_again_at_once(fresh: ServerThread, sim: GoogleSimulator) -> None:
    sim.script(Fault("status", status=429, action="streamGenerateContent", times=None))
    with pytest.raises(openai.RateLimitError):
        chat(fresh)
    sim.clear_faults()
    with pytest.raises(openai.InternalServerError, match="All accounts limited"):
        chat(fresh)  # every account locked out: no upstream call
    accounts = ok(fresh, "GET", "/api/accounts")["accounts"]
    assert all(a["lockouts"] for a in accounts), accounts
    lock = accounts[0]["lockouts"][0]
    assert lock["reason"] and lock["until"].endswith("Z") and lock["seconds_left"] > 0
    first = accounts[0]
    quota = ok(fresh, "GET", f"/api/accounts/{first['id']}/quota")
    assert quota["lockouts"] == [dict(lock, seconds_left=quota["lockouts"][0]["seconds_left"])]
    # One account's lockout lifted: it serves the very next request.
    cleared = ok(fresh, "DELETE", f"/api/proxy/rate-limits/{first['id']}")
    assert cleared["cleared"] >= 1
    sim.clear_requests()
    answer = chat(fresh)
    assert answer.http_response.status_code == 200
    assert answer.headers["x-account-email"] == first["email"]
    assert ok(fresh, "GET", f"/api/accounts/{first['id']}/quota")["lockouts"] == []
    # All of them.
    assert ok(fresh, "DELETE", "/api/proxy/rate-limits")["cleared"] >= 2
    assert all(a["lockouts"] == [] for a in ok(fresh, "GET", "/api/accounts")["accounts"])


def test_session_bindings_clear(fresh: ServerThread) -> None:
    chat(fresh, "a conversation long enough to bind a session")
    assert ok(fresh, "POST", "/api/proxy/session-bindings/clear")["cleared"] >= 1
    assert ok(fresh, "POST", "/api/proxy/session-bindings/clear")["cleared"] == 0


def test_preferred_account_is_used_and_saved(fresh: ServerThread) -> None:
    ids = account_ids(fresh)
    email = sorted(ids)[-1]
    assert ok(fresh, "GET", "/api/proxy/preferred-account") == {"accountId": None}
    assert ok(fresh, "POST", "/api/proxy/preferred-account", {"accountId": email}) == {"accountId": ids[email]}
    assert ok(fresh, "GET", "/api/proxy/preferred-account") == {"accountId": ids[email]}
    for n in range(4):
        assert chat(fresh, f"question number {n} for the fixed account").headers["x-account-email"] == email
    saved = tomllib.loads(fresh.config.config_path.read_text())
    assert saved["preferred_account_id"] == ids[email]
    assert ok(fresh, "POST", "/api/proxy/preferred-account", {"accountId": None}) == {"accountId": None}
    assert "preferred_account_id" not in tomllib.loads(fresh.config.config_path.read_text())


# -- accounts --------------------------------------------------------------------------------------------


def test_accounts_list_and_quota(fresh: ServerThread) -> None:
    accounts = ok(fresh, "GET", "/api/accounts")["accounts"]
    assert len(accounts) == 3
    for a in accounts:
        assert a["status"] == "ok" and a["in_pool"] and not a["proxy_disabled"] and not a["disabled"]
        assert a["tier"] and a["quota"]["models"] > 0
        assert not {"token", "refresh_token", "access_token"} & set(a)
        quota = ok(fresh, "GET", f"/api/accounts/{a['id']}/quota")
        assert quota["email"] == a["email"] and len(quota["models"]) == a["quota"]["models"]
        for model in quota["models"]:
            assert 0 <= model["remaining_fraction"] <= 1 and model["reset_time"] and model["name"]


def test_refresh_fetches_quota_now(fresh: ServerThread, sim: GoogleSimulator) -> None:
    sim.clear_requests()
    assert len(ok(fresh, "POST", "/api/accounts/refresh")["accounts"]) == 3
    assert len(sim.requests_for("fetchAvailableModels")) == 3


def test_toggled_account_is_not_used(fresh: ServerThread, sim: GoogleSimulator) -> None:
    ids = account_ids(fresh)
    off = sorted(ids)[0]
    view = ok(fresh, "POST", f"/api/accounts/{ids[off]}/toggle-proxy", {"enable": False, "reason": "testing"})
    assert view["proxy_disabled"] is True and view["in_pool"] is False and view["proxy_disabled_reason"] == "testing"
    assert ok(fresh, "GET", "/api/proxy/status")["active_accounts"] == 2
    sim.clear_requests()
    for n in range(6):
        chat(fresh, f"spread question {n} over the pool please")
    used = {r.email for r in generations(sim)}
    assert used and off not in used
    # No body: flips back.
    view = ok(fresh, "POST", f"/api/accounts/{ids[off]}/toggle-proxy")
    assert view["proxy_disabled"] is False and view["in_pool"] is True
    assert ok(fresh, "GET", "/api/proxy/status")["active_accounts"] == 3


def test_deleted_account_is_gone_even_after_restart(fresh: ServerThread, sim: GoogleSimulator) -> None:
    ids = account_ids(fresh)
    gone = sorted(ids)[0]
    assert ok(fresh, "DELETE", f"/api/accounts/{ids[gone]}")["removed"] == ids[gone]
    assert gone not in {a["email"] for a in ok(fresh, "GET", "/api/accounts")["accounts"]}
    assert call(fresh, "DELETE", f"/api/accounts/{ids[gone]}").status == 404
    sim.clear_requests()
    for n in range(4):
        chat(fresh, f"who answers question {n} now")
    assert gone not in {r.email for r in generations(sim)}
    fresh.stop()
    with ServerThread(fresh.config) as again:
        assert gone not in {a["email"] for a in ok(again, "GET", "/api/accounts")["accounts"]}
        assert ok(again, "GET", "/api/proxy/status")["active_accounts"] == 2


def test_added_account_joins_the_pool_at_once(fresh: ServerThread, sim: GoogleSimulator) -> None:
    ids = account_ids(fresh)
    email = sorted(ids)[0]
    ok(fresh, "DELETE", f"/api/accounts/{ids[email]}")
    refresh = next(a.refresh_token for a in sim.accounts.values() if a.email == email)
    reply = call(fresh, "POST", "/api/accounts", {"refreshToken": refresh})
    assert reply.status == 200, reply.body
    assert refresh.encode() not in reply.body
    added = reply.json()
    assert added["result"] == "added" and added["account"]["email"] == email and added["account"]["in_pool"]
    assert ok(fresh, "GET", "/api/proxy/status")["active_accounts"] == 3
    ok(fresh, "POST", "/api/proxy/preferred-account", {"accountId": email})
    assert chat(fresh).headers["x-account-email"] == email
    refused = call(fresh, "POST", "/api/accounts", {"refreshToken": "1//revoked-or-unknown"})
    assert refused.status == 400 and "Cannot add the account" in refused.json()["error"]


# -- config ----------------------------------------------------------------------------------------------


def test_mapping_posted_routes_the_next_request_and_is_saved(fresh: ServerThread, sim: GoogleSimulator) -> None:
    fresh.config.config_path.write_text("# my settings\nrequest_timeout = 120\n")
    target = "gemini-3-pro-high"
    answer = ok(fresh, "POST", "/api/config", {"custom_mapping": {"my-team-model": target}})
    assert answer["changed"] == ["custom_mapping"]
    assert answer["config"]["custom_mapping"] == {"my-team-model": target}
    sim.clear_requests()
    assert chat(fresh, model="my-team-model").headers["x-mapped-model"] == target
    assert [r.model for r in generations(sim)] == [target]
    text = fresh.config.config_path.read_text()
    assert text.startswith("# my settings\n")  # the user's file is edited, not replaced
    assert tomllib.loads(text) == {"request_timeout": 120, "custom_mapping": {"my-team-model": target}}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"custom_mapping": {"x": "gemini-3-flash"}, "auth_mode": "bogus"}, "auth_mode"),
        ({"scheduling": {"mode": "Fastest"}}, "scheduling.mode"),
        ({"log_level": "loud"}, "log_level"),
        ({"api_key": "short"}, "api_key"),
        ({"api_key": ""}, "api_key"),
        ({"monitor": {"enabled": "maybe"}}, "monitor"),
        ({"custom_mapping": ["not", "a", "table"]}, "custom_mapping"),
        ({"port": 9000}, "port"),
        ({"no_such_key": 1}, "no_such_key"),
    ],
)
def test_bad_config_is_400_naming_the_key_and_nothing_is_applied(
    fresh: ServerThread, body: dict[str, Any], named: str
) -> None:
    before = ok(fresh, "GET", "/api/config")
    reply = call(fresh, "POST", "/api/config", body)
    assert reply.status == 400, reply.body
    assert named in reply.json()["error"]
    assert ok(fresh, "GET", "/api/config") == before
    assert not fresh.config.config_path.exists()


def test_auth_mode_and_api_key_change_without_restart(fresh: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agfast.config")
    assert chat(fresh, key="anything").http_response.status_code == 200  # auth off
    ok(fresh, "POST", "/api/config", {"auth_mode": "strict"})
    with pytest.raises(openai.AuthenticationError):
        chat(fresh, key="anything")
    assert call(fresh, "GET", "/healthz", key=None).status == 401
    new_key = "sk-a-brand-new-key-0042"
    ok(fresh, "POST", "/api/config", {"api_key": new_key})
    with pytest.raises(openai.AuthenticationError):
        chat(fresh)
    assert chat(fresh, key=new_key).http_response.status_code == 200
    assert call(fresh, "GET", "/api/accounts", key=KEY).status == 401  # the api key is the admin secret too
    assert ok(fresh, "GET", "/api/config", key=new_key)["api_key"] == "sk-…0042"
    assert tomllib.loads(fresh.config.config_path.read_text())["api_key"] == new_key
    # An admin password, set live, becomes the admin secret at once (and the api key stops being one).
    ok(fresh, "POST", "/api/config", {"admin_password": ADMIN_PASSWORD}, key=new_key)
    assert call(fresh, "GET", "/api/accounts", key=new_key).status == 401
    ok(fresh, "GET", "/api/accounts", key=ADMIN_PASSWORD)
    ok(fresh, "POST", "/api/config", {"monitor": {"enabled": False}}, key=ADMIN_PASSWORD)
    assert ok(fresh, "GET", "/api/config", key=ADMIN_PASSWORD)["monitor.enabled"] is False
    saved = tomllib.loads(fresh.config.config_path.read_text())
    assert saved["monitor"] == {"enabled": False} and saved["admin_password"] == ADMIN_PASSWORD
    # Removing the key from the file does not lock everyone out: the running key stays until a restart.
    fresh.config.config_path.write_text('auth_mode = "strict"\n')
    assert wait_for(lambda: any("changed: admin_password is now None" in r.getMessage() for r in caplog.records), 2.5)
    assert chat(fresh, key=new_key).http_response.status_code == 200


def test_log_level_change_applies_live(fresh: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ok(fresh, "POST", "/api/config", {"log_level": "warning"})
    try:
        caplog.clear()
        chat(fresh)
        time.sleep(0.2)
        assert not [r for r in caplog.records if r.name == "agfast.access"]
    finally:
        logging.getLogger("agfast").setLevel(logging.NOTSET)


def test_config_file_edit_applies_within_two_seconds_and_bad_toml_keeps_it(
    fresh: ServerThread, sim: GoogleSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agfast.config")
    path = fresh.config.config_path
    path.write_text('[custom_mapping]\n"file-alias" = "gemini-3-pro-high"\n\n[scheduling]\nmode = "PerformanceFirst"\n')
    assert wait_for(lambda: fresh.config.custom_mapping == {"file-alias": "gemini-3-pro-high"}, 2.5)
    assert ok(fresh, "GET", "/api/config")["scheduling.mode"] == "PerformanceFirst"
    sim.clear_requests()
    assert chat(fresh, model="file-alias").headers["x-mapped-model"] == "gemini-3-pro-high"
    # A setting that needs a restart is logged as such and not applied.
    path.write_text('port = 1\n[custom_mapping]\n"file-alias" = "gemini-3-pro-high"\n')
    assert wait_for(lambda: any("port changed but needs a restart" in r.getMessage() for r in caplog.records), 2.5)
    assert fresh.config.port == fresh.port
    # Broken TOML: the running config stays, and the log says why.
    path.write_text('[custom_mapping\n"file-alias" = ')
    assert wait_for(lambda: any("keeping the running config" in r.getMessage() for r in caplog.records), 2.5)
    assert fresh.config.custom_mapping == {"file-alias": "gemini-3-pro-high"}
    assert chat(fresh, model="file-alias").headers["x-mapped-model"] == "gemini-3-pro-high"


def test_sighup_reloads_the_config_file(tmp_path: Path, sim: GoogleSimulator) -> None:
    """In a real process: the file is rewritten in place with its stamp kept, so only SIGHUP can notice."""
    from helpers import AgfastProcess
    from stack import google_env

    data = tmp_path / "data"
    data.mkdir()
    config = data / "config.toml"
    config.write_text(f'api_key = "{KEY}"\nlog_level = "info"\n[custom_mapping]\n"hup-alias" = "gemini-3-flash"\n')
    with AgfastProcess("--port", "0", "--data-dir", str(data), env=google_env(sim)) as proc:
        st = _Port(proc.port)
        assert ok(st, "GET", "/api/config")["custom_mapping"] == {"hup-alias": "gemini-3-flash"}  # type: ignore[arg-type]
        before = config.stat()
        with config.open("r+") as fh:  # same size, same inode, mtime restored below
            text = fh.read()
            fh.seek(0)
            fh.write(text.replace("gemini-3-flash", "gemini-3-lash1"))
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
        time.sleep(1.5)  # two ticks: the watcher sees no change
        assert ok(st, "GET", "/api/config")["custom_mapping"] == {"hup-alias": "gemini-3-flash"}  # type: ignore[arg-type]
        proc.proc.send_signal(1)  # SIGHUP
        assert wait_for(
            lambda: ok(st, "GET", "/api/config")["custom_mapping"] == {"hup-alias": "gemini-3-lash1"}  # type: ignore[arg-type]
        )
        assert wait_for(lambda: "SIGHUP: custom_mapping is now" in proc.stderr_text)
        assert proc.stop() == 0
    assert KEY not in proc.stderr_text


class _Port:
    """Enough of ServerThread for `call`: a port."""

    def __init__(self, port: int) -> None:
        self.port = port


# -- CLI -------------------------------------------------------------------------------------------------


def test_accounts_list_shows_quota_resets_and_the_running_servers_lockouts(
    fresh: ServerThread, sim: GoogleSimulator
) -> None:
    from helpers import run_agfast

    sim.script(Fault("status", status=429, action="streamGenerateContent", times=None))
    with pytest.raises(openai.RateLimitError):
        chat(fresh)
    sim.clear_faults()
    env = {"AGFAST_PORT": str(fresh.port), "AGFAST_API_KEY": KEY}
    data_dir = str(fresh.config.data_dir)
    shown = run_agfast("accounts", "list", "--data-dir", data_dir, env=env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    for email in account_ids(fresh):
        block = out.split(f"\n{email} (")[1].split("\n\n")[0]
        assert f"{MODEL} " in block and "100%  resets 20" in block and "(in 4h" in block, block
        assert "  locked (" in block and "left)" in block, block
    assert f"lockouts from agfast running at http://127.0.0.1:{fresh.port}" in out
    rows = orjson.loads(run_agfast("accounts", "list", "--json", "--data-dir", data_dir, env=env).stdout)
    assert all(r["lockouts"] and r["lockouts"][0]["reason"] for r in rows)
    assert all(m["reset_time"] for r in rows for m in r["models"])
    wrong = run_agfast("accounts", "list", "--data-dir", data_dir, env={**env, "AGFAST_API_KEY": WRONG})
    assert "refused the admin key (HTTP 401)" in wrong.stdout
    port = fresh.port
    fresh.stop()
    stopped = run_agfast("accounts", "list", "--data-dir", data_dir, env=env)
    assert f"lockouts unknown: agfast is not running at http://127.0.0.1:{port}" in stopped.stdout
    assert "locked (" not in stopped.stdout
    for secret in secrets_of(fresh, sim):
        assert secret not in shown.stdout + stopped.stdout + wrong.stdout
