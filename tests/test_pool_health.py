"""The pool when accounts or Google misbehave: refresh failures, an unreachable upstream, state-change logs,
an empty pool, and accounts removed on disk while serving. agfast and the simulator over loopback."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from helpers import AgfastProcess, ServerThread, request, run_agfast
from stack import generations, google_env, onboard_all, stack_config, start_sim

from agfast.sim import GoogleSimulator
from agfast.upstream.accounts import AccountStore
from agfast.upstream.pool import NO_ACCOUNTS

MODEL = "claude-sonnet-4-6"


def expired_stack(sim: GoogleSimulator, data_dir: Path, **overrides: Any) -> ServerThread:
    """agfast over three onboarded accounts whose access tokens have expired (each request must refresh)."""
    sim.clear_faults()
    cfg = stack_config(data_dir, sim)
    onboard_all(cfg, sim)
    store = AccountStore(data_dir)
    for account in store.load_all():
        account.expiry_timestamp = int(time.time()) - 10
        store.save(account)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    sim.clear_requests()
    sim.refresh_count.clear()
    return ServerThread(cfg)


def token_calls(sim: GoogleSimulator) -> int:
    return len(sim.requests_for("token"))


def anthropic_call(st: ServerThread, session: str) -> tuple[int, str]:
    """One Claude Code-style request (it always carries a session): (status, error message or text)."""
    with anthropic.Anthropic(base_url=st.url, api_key="sk-x", max_retries=0) as client:
        try:
            msg = client.messages.create(
                model=MODEL,
                max_tokens=64,
                messages=[{"role": "user", "content": "Please say hello to the pool"}],
                extra_headers={"X-Claude-Code-Session-Id": session},
            )
        except anthropic.APIStatusError as exc:
            return exc.status_code, exc.body["error"]["message"]  # type: ignore[index]
        return 200, msg.content[0].text  # type: ignore[union-attr]


def openai_call(st: ServerThread, text: str) -> tuple[int, str]:
    """One chat completion; a first user text over 10 characters gives it a session."""
    client = openai.OpenAI(base_url=st.url + "/v1", api_key="sk-x", max_retries=0)
    try:
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
    except openai.APIStatusError as exc:
        return exc.status_code, exc.body["message"]  # type: ignore[index]
    finally:
        client.close()
    return 200, answer.choices[0].message.content or ""


def concurrently(n: int, call: Callable[[int], tuple[int, str]]) -> list[tuple[int, str]]:
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        barrier.wait()
        results.append(call(i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == n
    return results


# -- #8.1 token refresh storm -------------------------------------------------------------------------------


def test_wrong_oauth_client_makes_bounded_refresh_calls(sim: GoogleSimulator, tmp_path: Path) -> None:
    with expired_stack(sim, tmp_path, oauth_client_id="not-the-issuing-client") as st:
        results = concurrently(25, lambda i: anthropic_call(st, f"session-{i % 5}"))
        results += concurrently(25, lambda i: openai_call(st, f"A conversation opener number {i % 5}"))
        later = request(st.port, "POST", "/v1/messages", MESSAGES, {"Content-Type": "application/json"})
        calls = token_calls(sim)
    assert later.status == 503 and 1 <= int(later.headers["retry-after"]) <= 15  # when the back-off ends
    assert calls <= len(sim.accounts)
    assert {status for status, _ in results} == {503}
    for _, message in results:
        assert "invalid_client" in message and "oauth.client_id" in message, message


def test_no_oauth_client_fails_at_once_naming_the_setting(sim: GoogleSimulator, tmp_path: Path) -> None:
    with expired_stack(sim, tmp_path, oauth_client_id=None, oauth_client_secret=None) as st:
        started = time.monotonic()
        status, message = anthropic_call(st, "session-no-client")
        elapsed = time.monotonic() - started
        status2, message2 = openai_call(st, "Another conversation opener")
        calls = token_calls(sim)
    assert (status, status2) == (503, 503)
    assert calls == 0
    assert elapsed < 2.0
    for text in (message, message2):
        assert "oauth.client_id" in text and "AGFAST_OAUTH_CLIENT_ID" in text, text
        assert text.count("No available account") <= 1


def test_a_failing_refresh_backs_off_and_sessions_move_on(sim: GoogleSimulator, tmp_path: Path) -> None:
    from stack import Fault

    broken = "demo1@sim.local"
    # Fixed-account mode sends every request to the broken account first.
    with expired_stack(sim, tmp_path, preferred_account_id=broken) as st:
        sim.script(Fault("status", status=500, email=broken, action="token", times=None))
        results = concurrently(50, lambda i: anthropic_call(st, f"session-{i % 10}"))
        per_account = dict(sim.refresh_count)
        broken_calls = len(sim.requests_for("token", email=broken))
    assert {status for status, _ in results} == {200}
    assert broken_calls == 1  # one failure puts the account in back-off for every request
    assert all(count == 1 for count in per_account.values()), per_account


def test_refresh_back_off_doubles_and_success_resets_it(sim: GoogleSimulator, tmp_path: Path) -> None:
    from stack import Fault

    from agfast.upstream.pool import refresh_key

    target = "demo2@sim.local"
    with expired_stack(sim, tmp_path, preferred_account_id=target) as st:
        pool = st.app.pool
        member_id = next(m.id for m in pool.members.values() if m.email == target)
        key = refresh_key(member_id)

        def back_off_left() -> float:
            return st.call(lambda: pool.state.locked_until(key)) - time.time()  # type: ignore[no-any-return]

        sim.script(Fault("status", status=503, email=target, action="token", times=2))
        assert anthropic_call(st, "s-1")[0] == 200  # served by another account
        assert 13 < back_off_left() <= 15
        assert anthropic_call(st, "s-2")[0] == 200
        assert len(sim.requests_for("token", email=target)) == 1  # the back-off held
        st.call(pool.state.unlock, key)  # as if 15 s had passed
        assert anthropic_call(st, "s-3")[0] == 200
        assert 28 < back_off_left() <= 30  # second failure in a row: doubled
        st.call(pool.state.unlock, key)
        assert anthropic_call(st, "s-4")[0] == 200
        assert len(sim.requests_for("token", email=target)) == 3
        assert st.call(lambda: pool.state.failures(key, time.time())) == 0  # success resets the doubling
        assert generations_for(sim, target)


def generations_for(sim: GoogleSimulator, email: str) -> list[Any]:
    return [r for r in sim.requests_for(email=email) if r.action in ("streamGenerateContent", "generateContent")]


# -- #8.4 upstream unreachable ------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def genai_call(st: ServerThread, text: str) -> tuple[int, dict[str, Any]]:
    client = genai.Client(
        api_key="sk-x",
        http_options=genai_types.HttpOptions(base_url=st.url, retry_options=genai_types.HttpRetryOptions(attempts=1)),
    )
    try:
        answer = client.models.generate_content(model="gemini-3-flash", contents=text)
    except genai_errors.APIError as exc:
        return exc.code, exc.details["error"]  # type: ignore[index]
    return 200, {"text": answer.text}


LEAKS = ("http://", "127.0.0.1", "v1internal", "Error:", "ClientConnector", "Traceback", "Connect call failed")


def test_unreachable_upstream_is_502_in_every_shape(
    sim: GoogleSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    cfg = stack_config(tmp_path, sim)
    onboard_all(cfg, sim)  # fresh tokens and projects: only generation needs the (closed) endpoint
    cfg.upstream_endpoints = [f"http://127.0.0.1:{port}/v1internal"]
    with caplog.at_level(logging.WARNING), ServerThread(cfg) as st:
        client = openai.OpenAI(base_url=st.url + "/v1", api_key="sk-x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as oa:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        client.close()
        with (
            anthropic.Anthropic(base_url=st.url, api_key="sk-x", max_retries=0) as ac,
            pytest.raises(anthropic.APIStatusError) as an,
        ):
            ac.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        g_status, g_error = genai_call(st, "hello there")
    assert oa.value.status_code == 502
    assert oa.value.body["type"] == "api_error"  # type: ignore[index]
    assert an.value.status_code == 502
    assert an.value.body["type"] == "error" and an.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert (g_status, g_error["code"], g_error["status"]) == (502, 502, "UNAVAILABLE")
    for message in (oa.value.body["message"], an.value.body["error"]["message"], g_error["message"]):  # type: ignore[index]
        assert "Google could not be reached" in message
        assert not any(leak in message for leak in LEAKS), message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"127.0.0.1:{port}" in logged  # the details are in the log instead


# -- #8.6 state changes are logged, accounts masked -----------------------------------------------------------


def test_account_state_changes_are_logged_masked(
    sim: GoogleSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stack import Fault

    with caplog.at_level(logging.WARNING), expired_stack(sim, tmp_path, preferred_account_id="demo1@sim.local") as st:
        # demo1: refresh revoked → disabled; demo2: refresh fails → back-off; demo3: 429 → locked.
        sim.script(Fault("invalid_grant", email="demo1@sim.local"))
        sim.script(Fault("status", status=503, email="demo2@sim.local", action="token"))
        sim.script(
            Fault("status", status=429, retry_delay=30.0, email="demo3@sim.local", action="streamGenerateContent")
        )
        anthropic_call(st, "s-logs")
        st.call(st.app.pool.state.clear_locks)  # back-off and lockout over: the next request is served
        # Twice: the upstream client retries a 403 once without the project header before it counts.
        sim.script(Fault("status", status=403, action="streamGenerateContent", times=2))
        anthropic_call(st, "s-logs-2")
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "account dem***@si*** disabled: invalid_grant" in text, text
    assert re.search(r"account dem\*\*\*@si\*\*\*: token refresh failed \(internal_failure.*\); refresh back-off until "
                     r"\d\d:\d\d:\d\dZ \(15s\)", text), text  # fmt: skip
    assert re.search(
        r"account dem\*\*\*@si\*\*\* locked( for \S+)? until \d\d:\d\d:\d\dZ \(30s\): \w+ after HTTP 429", text
    ), text
    assert re.search(r"account dem\*\*\*@si\*\*\* validation-blocked until \d\d:\d\d:\d\dZ", text), text
    for record in caplog.records:
        assert "@sim.local" not in record.getMessage(), record.getMessage()


# -- #8.8 start with no accounts, #8.7 the message said once ------------------------------------------------

CHAT = b'{"model":"gemini-3-flash","messages":[{"role":"user","content":"Is anybody there at all?"}]}'
MESSAGES = b'{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}'
GENERATE = b'{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}'
EMPTY = [
    ("/v1/chat/completions", CHAT, {"error": {"message": NO_ACCOUNTS, "type": "server_error",
                                              "code": "service_unavailable", "param": None}}),
    ("/v1/messages", MESSAGES, {"type": "error", "error": {"type": "overloaded_error", "message": NO_ACCOUNTS}}),
    ("/v1beta/models/gemini-3-flash:generateContent", GENERATE,
     {"error": {"code": 503, "message": NO_ACCOUNTS, "status": "UNAVAILABLE"}}),
]  # fmt: skip


def test_starts_without_accounts_and_uses_one_added_while_serving(sim: GoogleSimulator, tmp_path: Path) -> None:
    sim.clear_faults()
    (tmp_path / "config.toml").write_text("accounts_reload_interval = 0.2\n")
    with AgfastProcess("--port", "0", "--data-dir", str(tmp_path), env=google_env(sim)) as proc:
        assert "accounts: 0" in proc.lines[-1]
        assert request(proc.port, "GET", "/healthz").status == 200
        for path, body, expected in EMPTY:
            reply = request(proc.port, "POST", path, body, {"Content-Type": "application/json"})
            assert (reply.status, reply.json()) == (503, expected)
        onboard_all(stack_config(tmp_path, sim), sim, emails=["demo2@sim.local"])  # `agfast accounts add`
        sim.clear_requests()
        deadline = time.monotonic() + 10
        while (
            reply := request(proc.port, "POST", EMPTY[0][0], CHAT, {"Content-Type": "application/json"})
        ).status != 200:
            assert time.monotonic() < deadline, reply.body
            time.sleep(0.1)
        assert "Is anybody there" in reply.json()["choices"][0]["message"]["content"]
        assert {r.email for r in generations(sim)} == {"demo2@sim.local"}
        assert proc.stop() == 0


# -- #9.3 a removal or disable on disk wins over the server's memory ---------------------------------------


@pytest.fixture
def short_tokens() -> Iterator[GoogleSimulator]:
    """A simulator whose access tokens live 30 s: under the 90 s refresh margin, so every request refreshes."""
    with start_sim(access_token_ttl=30) as thread:
        yield thread


def traffic(st: ServerThread, stop: threading.Event, results: list[int]) -> list[threading.Thread]:
    def run(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            results.append(openai_call(st, f"Traffic from worker {n} number {i}")[0])

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    return threads


def test_removed_account_stays_removed_under_refresh_heavy_traffic(
    short_tokens: GoogleSimulator, tmp_path: Path
) -> None:
    sim = short_tokens
    target = "demo1@sim.local"
    cfg = stack_config(tmp_path, sim, accounts_reload_interval=0.2, scheduling_mode="PerformanceFirst")
    store = onboard_all(cfg, sim)
    path = tmp_path / "accounts" / f"{store.find(target).id}.json"  # type: ignore[union-attr]
    results: list[int] = []
    stop = threading.Event()
    with ServerThread(cfg) as st:
        workers = traffic(st, stop, results)
        try:
            deadline = time.monotonic() + 10
            while not generations_for(sim, target):  # the account is in use, its token refreshed each time
                assert time.monotonic() < deadline
                time.sleep(0.05)
            removed = run_agfast("accounts", "remove", target, "--data-dir", str(tmp_path))
            assert removed.returncode == 0, removed.stderr
            noticed = time.monotonic()
            while any(m.email == target for m in st.call(lambda: list(st.app.pool.members.values()))):
                assert time.monotonic() - noticed < 2, "the pool did not notice the removal"
                time.sleep(0.02)
            time.sleep(0.3)  # requests that held a lease before the removal finish
            sim.clear_requests()
            until = time.monotonic() + 3
            while time.monotonic() < until:
                assert not path.exists(), "the server re-created the removed account's file"
                time.sleep(0.02)
            used_after = {r.email for r in sim.requests}
        finally:
            stop.set()
            for t in workers:
                t.join(10)
    assert target not in used_after
    assert len(used_after) == 2 and len(results) > 20
    assert set(results) == {200}
    assert target not in {a.email for a in AccountStore(tmp_path).load_all()}
    assert target not in (tmp_path / "accounts.json").read_text()


def test_disable_on_disk_is_not_undone_by_the_server(short_tokens: GoogleSimulator, tmp_path: Path) -> None:
    sim = short_tokens
    target = "demo2@sim.local"
    cfg = stack_config(tmp_path, sim, accounts_reload_interval=0.2, scheduling_mode="PerformanceFirst")
    store = onboard_all(cfg, sim)
    results: list[int] = []
    stop = threading.Event()
    with ServerThread(cfg) as st:
        workers = traffic(st, stop, results)
        try:
            time.sleep(0.5)
            account = store.find(target)
            assert account is not None
            store.disable(account, "switched off by its owner")  # another process (admin API, a worker)
            time.sleep(0.5)  # the pool notices at its next save or reload
            sim.clear_requests()
            time.sleep(2)
            used_after = {r.email for r in sim.requests}
        finally:
            stop.set()
            for t in workers:
                t.join(10)
    saved = AccountStore(tmp_path).find(target)
    assert saved is not None and saved.disabled and saved.disabled_reason == "switched off by its owner"
    assert saved.access_token  # tokens the server refreshed meanwhile were still written onto the file
    assert target not in used_after
    assert set(results) == {200}


def test_temp_files_of_an_interrupted_write_are_removed_at_start(sim: GoogleSimulator, tmp_path: Path) -> None:
    cfg = stack_config(tmp_path, sim)
    store = onboard_all(cfg, sim, emails=["demo1@sim.local"])
    account = store.load_all()[0]
    left = [
        tmp_path / "accounts" / f".{account.id}.json.k9x2ab.tmp",  # what kill -9 during atomic_write leaves
        tmp_path / ".accounts.json.zz81qq.tmp",
    ]
    for stale in left:
        stale.write_bytes(b'{"half": ')
    unrelated = tmp_path / "accounts" / "notes.txt"
    unrelated.write_text("mine")
    with ServerThread(cfg) as st:
        assert st.call(lambda: st.app.pool.size) == 1
    assert not any(p.exists() for p in left)
    assert unrelated.read_text() == "mine"
