"""Google sign-in end to end: `agfast accounts login` as a user runs it, and the proxy's `GET /auth/callback`.

"Google" is the simulator: its consent page redirects with a code bound to the client, the redirect URI and
the PKCE challenge, and its token endpoint checks all of them, so nothing here is taken on trust from agfast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from helpers import AGFAST_ROOT, ServerThread, request
from stack import CLIENT_ID, CLIENT_SECRET, agfast_on, onboard_all, stack_config, start_sim

from agfast.config import OAuthClient
from agfast.sim import GoogleSimulator, SimAccount
from agfast.upstream.accounts import AccountStore

NEWCOMER = "newcomer@sim.local"
# Every child runs in dev mode with warnings as errors: an unclosed listener or session fails the run.
STRICT = {"PYTHONDEVMODE": "1", "PYTHONWARNINGS": "error"}
SECRETS = ("sim-refresh", "sim-signin", "ya29.sim-", CLIENT_SECRET, "wrong-secret", "good-secret")
CHAT = orjson.dumps({"model": "gemini-3-flash", "messages": [{"role": "user", "content": "Who answers me?"}]})


@pytest.fixture(scope="module")
def sim() -> Iterator[GoogleSimulator]:
    """Knows the stack's client and two more; NEWCOMER exists at "Google" but in no data dir yet."""
    with start_sim(accounts=2) as simulator:
        simulator.clients = {"cid-bad": "bad-real-secret", "cid-good": "good-secret"}
        simulator.add_account(SimAccount(email=NEWCOMER, refresh_token="1//sim-refresh-newcomer", tier="ULTRA"))
        yield simulator


def login_env(sim: GoogleSimulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGFAST_", "ANTIGRAVITY_"))}
    env.update(STRICT)
    env.update(
        {
            "AGFAST_OAUTH_TOKEN_URL": sim.token_url,
            "AGFAST_USERINFO_URL": sim.userinfo_url,
            "AGFAST_UPSTREAM_ENDPOINTS": sim.endpoint,
            "AGFAST_OAUTH_AUTH_URL": sim.auth_url,
            "AGFAST_OAUTH_CLIENT_ID": CLIENT_ID,
            "AGFAST_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        }
    )
    env.update(extra)
    return env


def follow(url: str, **params: str) -> str:
    """Play the browser on the simulator's consent page: its redirect target (where Google sends the user)."""

    async def run() -> str:
        async with aiohttp.ClientSession() as session:
            target = url + ("&" + urllib.parse.urlencode(params) if params else "")
            async with session.get(target, allow_redirects=False) as resp:
                assert resp.status == 302, await resp.text()
                return resp.headers["Location"]

    return asyncio.run(run())


class Login:
    """`agfast accounts login --no-browser` in a child process, fed on stdin like a user pasting."""

    def __init__(self, data_dir: Path, env: dict[str, str], *args: str) -> None:
        command = [sys.executable, "-m", "agfast", "accounts", "login", "--no-browser", "--data-dir", str(data_dir)]
        self.proc = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=AGFAST_ROOT,
        )
        self.shown: list[str] = []

    def url(self) -> str:
        """The consent URL the command printed for the user."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.shown.append(line)
            if line.startswith("http"):
                return line.strip()
        raise AssertionError("no URL printed:\n" + "".join(self.shown) + self.finish("")[1])

    def finish(self, pasted: str | None) -> tuple[int, str, str]:
        """Paste a line (None: close stdin without one) and wait for the end."""
        out, err = self.proc.communicate(None if pasted is None else pasted + "\n", timeout=30)
        err = "".join(self.shown) + err
        for bad in ("Traceback", "Warning", "Unclosed", *SECRETS):
            assert bad not in out + err, f"{bad!r} in output:\n{out}{err}"
        return self.proc.returncode, out, err


def run_login(data_dir: Path, env: dict[str, str], *args: str, **consent: str) -> tuple[int, str, str, str]:
    """A whole login: (exit code, stdout, stderr, the redirect pasted)."""
    login = Login(data_dir, env, *args)
    location = follow(login.url(), **consent)
    return (*login.finish(location), location)


def saved(data_dir: Path) -> dict[str, dict[str, Any]]:
    return {a.email: a.raw for a in AccountStore(data_dir).load_all()}


def token_calls(sim: GoogleSimulator, grant: str) -> list[dict[str, str]]:
    return [r.form or {} for r in sim.requests_for("token") if (r.form or {}).get("grant_type") == grant]


# ---------------------------------------------------------------------------------------------------------
# agfast accounts login


def test_login_no_browser_adds_the_account_with_pkce(sim: GoogleSimulator, tmp_path: Path) -> None:
    sim.clear_requests()
    code, out, err, location = run_login(tmp_path, login_env(sim), login_hint=NEWCOMER)
    assert code == 0, err
    assert out.startswith(f"added {NEWCOMER} (project sim-newcomer-")
    account = saved(tmp_path)[NEWCOMER]
    assert account["token"]["oauth_client_key"] == "default"
    assert account["token"]["refresh_token"].startswith("1//sim-signin-")  # the grant's, not the old one
    assert account["quota"]["subscription_tier"] == "Google AI Ultra"
    [exchange] = token_calls(sim, "authorization_code")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert exchange["code"] == query["code"] and exchange["code_verifier"]
    [authorize] = sim.requests_for("authorize")
    assert authorize.query["code_challenge_method"] == "S256"
    assert authorize.query["access_type"] == "offline" and authorize.query["prompt"] == "consent"
    assert "https://www.googleapis.com/auth/cclog" in authorize.query["scope"].split()


def test_login_accepts_the_bare_code(sim: GoogleSimulator, tmp_path: Path) -> None:
    login = Login(tmp_path, login_env(sim))
    location = follow(login.url(), login_hint=NEWCOMER)
    code, out, err = login.finish(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"])
    assert code == 0, err
    assert out.startswith(f"added {NEWCOMER} ")


FAILURES = [
    # (consent page parameters, how the pasted redirect is spoiled, what the one error line says)
    ({"sim_consent": "deny"}, None, "Google sign-in was denied (access_denied)"),
    ({}, ("state", "not-the-state"), "unknown or expired sign-in (the state does not match a pending sign-in)"),
]


@pytest.mark.parametrize(("consent", "spoil", "says"), FAILURES, ids=["denied", "wrong-state"])
def test_failed_login_says_why_and_adds_nothing(
    sim: GoogleSimulator, tmp_path: Path, consent: dict[str, str], spoil: tuple[str, str] | None, says: str
) -> None:
    sim.clear_requests()
    login = Login(tmp_path, login_env(sim))
    location = follow(login.url(), login_hint=NEWCOMER, **consent)
    if spoil is not None:
        parts = urllib.parse.urlsplit(location)
        query = dict(urllib.parse.parse_qsl(parts.query)) | {spoil[0]: spoil[1]}
        location = parts._replace(query=urllib.parse.urlencode(query)).geturl()
    code, out, err = login.finish(location)
    assert code == 1
    assert out == ""
    assert f"agfast: sign-in failed: {says}" in err and err.rstrip().endswith("nothing was added")
    assert saved(tmp_path) == {}
    assert token_calls(sim, "authorization_code") == []


def test_login_times_out_with_a_clear_message(sim: GoogleSimulator, tmp_path: Path) -> None:
    login = Login(tmp_path, login_env(sim), "--timeout", "0.5")
    login.url()  # the user never comes back, and pastes nothing (stdin ends: the browser could still come)
    code, _out, err = login.finish(None)
    assert code == 1, err
    assert "sign-in timed out after 0.5 s; nothing was added" in err
    assert saved(tmp_path) == {}


def test_bad_client_then_good_client(sim: GoogleSimulator, tmp_path: Path) -> None:
    """The first client's secret is wrong: the code exchange fails clearly and nothing is saved; signing in
    with the next client works and the account remembers it; its refreshes ask that client first."""
    clients = "bad|cid-bad|wrong-secret|Typo;good|cid-good|good-secret|Mine"
    env = login_env(sim, AGFAST_OAUTH_CLIENT_ID="", AGFAST_OAUTH_CLIENT_SECRET="", ANTIGRAVITY_OAUTH_CLIENTS=clients)
    code, out, err, _ = run_login(tmp_path, env, login_hint=NEWCOMER)
    assert (code, out) == (1, "")
    assert "the authorization code exchange failed: invalid_client: Unauthorized" in err
    assert "OAuth client 'bad'" in err
    assert saved(tmp_path) == {}

    code, _out, err, _ = run_login(tmp_path, env, "--client", "good", login_hint=NEWCOMER)
    assert code == 0, err
    assert saved(tmp_path)[NEWCOMER]["token"]["oauth_client_key"] == "good"

    sim.clear_requests()
    refreshed = subprocess.run(
        [sys.executable, "-m", "agfast", "accounts", "refresh", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=AGFAST_ROOT,
        timeout=30,
    )
    assert refreshed.returncode == 0, refreshed.stderr
    assert [f["client_id"] for f in token_calls(sim, "refresh_token")] == ["cid-good"]


def test_refresh_falls_back_to_the_next_client_and_remembers_it(sim: GoogleSimulator, tmp_path: Path) -> None:
    """§4.4: a token another client issued is `unauthorized_client` for this one: the next client is tried."""
    env = login_env(sim, AGFAST_OAUTH_CLIENT_ID="", AGFAST_OAUTH_CLIENT_SECRET="")
    env["ANTIGRAVITY_OAUTH_CLIENTS"] = "good|cid-good|good-secret|Mine"
    assert run_login(tmp_path, env, login_hint=NEWCOMER)[0] == 0
    # The user now lists another client first.
    env["ANTIGRAVITY_OAUTH_CLIENTS"] = "bad|cid-bad|bad-real-secret|Other;good|cid-good|good-secret|Mine"
    account = AccountStore(tmp_path).find(NEWCOMER)
    assert account is not None
    account.oauth_client_key = None  # forget who issued it: every client is asked in order
    AccountStore(tmp_path).save(account)
    sim.clear_requests()
    result = subprocess.run(
        [sys.executable, "-m", "agfast", "accounts", "refresh", NEWCOMER, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=AGFAST_ROOT,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    calls = [r for r in sim.requests_for("token") if (r.form or {}).get("grant_type") == "refresh_token"]
    assert [(r.form or {}).get("client_id") for r in calls] == ["cid-bad", "cid-good"]
    assert [r.status for r in calls] == [401, 200]
    assert saved(tmp_path)[NEWCOMER]["token"]["oauth_client_key"] == "good"


def test_login_without_a_client_says_what_to_set(sim: GoogleSimulator, tmp_path: Path) -> None:
    env = login_env(sim, AGFAST_OAUTH_CLIENT_ID="", AGFAST_OAUTH_CLIENT_SECRET="")
    for args in (["login", "--no-browser"], ["add", "--refresh-token", "1//sim-refresh-newcomer"]):
        result = subprocess.run(
            [sys.executable, "-m", "agfast", "accounts", *args, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=AGFAST_ROOT,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert "no OAuth client configured" in result.stderr
        assert "oauth.client_id" in result.stderr and "agfast accounts client add" in result.stderr
    assert saved(tmp_path) == {}


# ---------------------------------------------------------------------------------------------------------
# The simulator verifies PKCE, the redirect URI and single use (so the tests above prove agfast sends them)


def exchange(sim: GoogleSimulator, **form: str) -> tuple[int, dict[str, Any]]:
    async def run() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.post(sim.token_url, data=form) as resp:
            return resp.status, await resp.json()

    return asyncio.run(run())


def test_simulator_checks_verifier_redirect_and_single_use(sim: GoogleSimulator) -> None:
    verifier = "v" * 50
    from agfast.upstream.oauth import pkce_challenge

    redirect = "http://127.0.0.1:9/cb"
    query = urllib.parse.urlencode(
        {
            "client_id": CLIENT_ID,
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": "openid",
            "state": "s1",
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(follow(sim.auth_url + "?" + query)).query))["code"]
    base = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    assert exchange(sim, **base, redirect_uri=redirect, code_verifier="w" * 50) == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid code verifier."},
    )
    assert exchange(sim, **base, redirect_uri="http://127.0.0.1:9/other", code_verifier=verifier)[1]["error"] == (
        "redirect_uri_mismatch"
    )
    status, body = exchange(sim, **base, redirect_uri=redirect, code_verifier=verifier)
    assert status == 200 and body["refresh_token"].startswith("1//sim-signin-")
    assert exchange(sim, **base, redirect_uri=redirect, code_verifier=verifier)[1]["error"] == "invalid_grant"


# ---------------------------------------------------------------------------------------------------------
# GET /auth/callback on a running agfast (the dashboard's "Sign in with Google")


@pytest.fixture
def proxy(sim: GoogleSimulator, tmp_path: Path) -> Iterator[ServerThread]:
    """An agfast with the simulator's other accounts; fixed-account mode prefers NEWCOMER once it exists."""
    with contextlib.ExitStack() as stack:
        sim.accounts.pop(NEWCOMER)
        try:
            config = {"oauth_auth_url": sim.auth_url, "preferred_account_id": NEWCOMER, "auth_mode": "strict"}
            st = stack.enter_context(agfast_on(sim, tmp_path / "agfast", **config))
        finally:
            sim.add_account(SimAccount(email=NEWCOMER, refresh_token="1//sim-refresh-newcomer", tier="ULTRA"))
        yield st


def callback(st: ServerThread, location: str) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(location)
    assert parts.path == "/auth/callback" and parts.port == st.port
    reply = request(st.port, "GET", f"/auth/callback?{parts.query}", headers={"Host": f"127.0.0.1:{st.port}"})
    assert reply.headers["content-type"].startswith("text/html")
    return reply.status, reply.body.decode()


def start(st: ServerThread) -> str:
    return st.call(st.app.signin.start, st.url + "/auth/callback")  # type: ignore[no-any-return]


def chat(st: ServerThread) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {st.config.api_key}"}
    reply = request(st.port, "POST", "/v1/chat/completions", CHAT, headers)
    return reply.status, reply.headers.get("x-account-email", "")


def test_callback_adds_the_account_and_it_serves_at_once(sim: GoogleSimulator, proxy: ServerThread) -> None:
    status, who = chat(proxy)
    assert status == 200 and who != NEWCOMER
    status, page = callback(proxy, follow(start(proxy), login_hint=NEWCOMER))
    assert status == 200, page
    assert f"Added {NEWCOMER}" in page
    assert chat(proxy) == (200, NEWCOMER)  # no restart, no reload interval
    assert proxy.call(lambda: proxy.app.signin.pending) == 0


def test_callback_denied_adds_nothing(sim: GoogleSimulator, proxy: ServerThread) -> None:
    status, page = callback(proxy, follow(start(proxy), login_hint=NEWCOMER, sim_consent="deny"))
    assert status == 400 and "denied (access_denied)" in page
    assert NEWCOMER not in saved(proxy.config.data_dir)


def test_callback_for_an_unknown_state_is_refused(sim: GoogleSimulator, proxy: ServerThread) -> None:
    location = follow(start(proxy), login_hint=NEWCOMER)
    parts = urllib.parse.urlsplit(location)
    forged = dict(urllib.parse.parse_qsl(parts.query)) | {"state": "forged"}
    status, page = callback(proxy, parts._replace(query=urllib.parse.urlencode(forged)).geturl())
    assert status == 400 and "unknown or expired sign-in" in page
    status, page = callback(proxy, location)  # the real one still works: a forged state does not burn it
    assert status == 200, page
    status, page = callback(proxy, location)  # but only once
    assert status == 400 and "unknown or expired sign-in" in page


def test_callback_for_an_expired_flow_is_refused(sim: GoogleSimulator, proxy: ServerThread) -> None:
    proxy.call(setattr, proxy.app.signin, "ttl", 0.0)  # flows started now are already past their expiry
    status, page = callback(proxy, follow(start(proxy), login_hint=NEWCOMER))
    assert status == 400 and "unknown or expired sign-in" in page
    assert NEWCOMER not in saved(proxy.config.data_dir)
    assert proxy.call(lambda: proxy.app.signin.pending) == 0


def test_the_server_refreshes_with_the_next_client_and_remembers_it(sim: GoogleSimulator, tmp_path: Path) -> None:
    """§4.4 in the pool: an expired token whose client is unknown is refreshed by each client in turn; the one
    that worked is saved with the token, so the next refresh asks it first."""
    owner = sim.accounts["demo1@sim.local"]
    owner.client_id = "cid-good"  # this refresh token was issued to cid-good: other clients are refused
    clients = [OAuthClient("bad", "cid-bad", "bad-real-secret"), OAuthClient("good", "cid-good", "good-secret")]
    cfg = stack_config(tmp_path, sim, oauth_client_id=None, oauth_client_secret=None, oauth_clients=clients)
    try:
        store = onboard_all(cfg, sim, emails=[owner.email])
        account = store.find(owner.email)
        assert account is not None and account.oauth_client_key == "good"
        account.oauth_client_key = None
        account.expiry_timestamp = 0  # refresh before the first use
        store.save(account)
        sim.clear_requests()
        with ServerThread(cfg) as st:
            reply = request(st.port, "POST", "/v1/chat/completions", CHAT, {"Content-Type": "application/json"})
        assert reply.status == 200, reply.body
    finally:
        owner.client_id = None
    calls = [r for r in sim.requests_for("token") if (r.form or {}).get("grant_type") == "refresh_token"]
    assert [((r.form or {}).get("client_id"), r.status) for r in calls] == [("cid-bad", 401), ("cid-good", 200)]
    saved_account = AccountStore(tmp_path).find(owner.email)
    assert saved_account is not None and saved_account.oauth_client_key == "good"
