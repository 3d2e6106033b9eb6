"""Outbound proxies: every call to Google (generation, refresh, userinfo, project, quota) through an HTTP CONNECT or
SOCKS5 proxy started here, per account or global, NO_PROXY honoured, and a failing proxy named in a 502."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import openai
import orjson
import pytest
import trustme
from helpers import ServerThread, run_agfast
from proxies import HttpConnectProxy, Socks5Proxy, proxy_url
from stack import KEY, google_env, onboard_all, stack_config

from agfast.sim import GoogleSimulator
from agfast.upstream.accounts import AccountStore
from agfast.upstream.proxy import NoProxy

CREDENTIALS = ("proxy-user", "pr0xy-s3cret")
PROXIES = {"http": HttpConnectProxy, "socks5": Socks5Proxy}
MODEL = "gemini-2.5-flash"


@pytest.fixture(params=sorted(PROXIES))
def proxy(request: pytest.FixtureRequest) -> Iterator[HttpConnectProxy | Socks5Proxy]:
    with PROXIES[request.param](CREDENTIALS) as running:
        yield running


@contextmanager
def serving(sim: GoogleSimulator, data_dir: Path, **overrides: object) -> Iterator[ServerThread]:
    """agfast over accounts onboarded directly, then served with `overrides` (a proxy, say)."""
    sim.clear_faults()
    onboard_all(stack_config(data_dir, sim), sim)
    sim.clear_requests()
    with ServerThread(stack_config(data_dir, sim, **overrides)) as st:
        yield st


def chat(st: ServerThread) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=st.url + "/v1", api_key=KEY, max_retries=0)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])


def actions(sim: GoogleSimulator) -> list[str]:
    return [r.action for r in sim.requests]


def on_loop(st: ServerThread, coro: object) -> object:
    return asyncio.run_coroutine_threadsafe(coro, st.loop).result(10)  # type: ignore[arg-type]


def test_onboarding_and_generation_go_through_the_global_proxy(
    sim: GoogleSimulator, tmp_path: Path, proxy: HttpConnectProxy | Socks5Proxy
) -> None:
    cfg = stack_config(tmp_path, sim, upstream_proxy=proxy_url(proxy, CREDENTIALS))
    onboard_all(cfg, sim)
    # refresh, userinfo, loadCodeAssist and fetchAvailableModels of every account went through the tunnel
    for path in (b"POST /token", b"GET /oauth2/v2/userinfo", b":loadCodeAssist", b":fetchAvailableModels"):
        assert path in proxy.log.sent
    assert {port for _, port in proxy.log.targets} == {sim.port}
    sim.clear_requests()
    proxy.log.sent.clear()
    with ServerThread(cfg) as st:
        answer = chat(st)
    assert answer.choices[0].message.content
    assert b":streamGenerateContent" in proxy.log.sent
    assert "streamGenerateContent" in actions(sim)
    assert proxy.log.refused == 0


def test_refresh_and_quota_calls_of_a_running_server_use_the_proxy(
    sim: GoogleSimulator, tmp_path: Path, proxy: HttpConnectProxy | Socks5Proxy
) -> None:
    with serving(sim, tmp_path, upstream_proxy=proxy_url(proxy, CREDENTIALS)) as st:
        member = next(iter(st.app.pool.members.values()))
        member.account.expiry_timestamp = 0  # due for a refresh
        on_loop(st, st.app.pool.refresh_quota(member))
    assert b"POST /token" in proxy.log.sent
    assert b":fetchAvailableModels" in proxy.log.sent
    assert {"token", "fetchAvailableModels"} <= set(actions(sim))


def test_per_account_proxy_is_used_for_that_account_only(sim: GoogleSimulator, tmp_path: Path) -> None:
    onboard_all(stack_config(tmp_path, sim), sim)
    store = AccountStore(tmp_path)
    first, second, _ = sorted(store.load_all(), key=lambda a: a.email)
    with Socks5Proxy() as socks:
        done = run_agfast("accounts", "set-proxy", first.email, proxy_url(socks), "--data-dir", str(tmp_path))
        assert done.returncode == 0, done.stderr
        assert f"socks5://127.0.0.1:{socks.port}" in done.stdout
        assert store.get(first.id).proxy_url == proxy_url(socks)  # type: ignore[union-attr]

        sim.clear_requests()
        with ServerThread(stack_config(tmp_path, sim, preferred_account_id=second.id)) as st:
            chat(st)
        assert socks.log.targets == []  # the other account goes direct
        assert "streamGenerateContent" in actions(sim)

        with ServerThread(stack_config(tmp_path, sim, preferred_account_id=first.id)) as st:
            chat(st)
            assert b":streamGenerateContent" in socks.log.sent
            # its token refresh, project and quota lookups take the same way; the other accounts' do not
            for member in st.app.pool.members.values():
                socks.log.sent.clear()
                member.account.expiry_timestamp = 0
                on_loop(st, st.app.pool.refresh_quota(member))
                through = [
                    p for p in (b"POST /token", b":loadCodeAssist", b":fetchAvailableModels") if p in socks.log.sent
                ]
                assert len(through) == (3 if member.id == first.id else 0), (member.email, through)

        cleared = run_agfast("accounts", "set-proxy", first.email, "--clear", "--data-dir", str(tmp_path))
        assert cleared.returncode == 0, cleared.stderr
        assert store.get(first.id).proxy_url is None  # type: ignore[union-attr]


def test_no_proxy_hosts_go_direct(sim: GoogleSimulator, tmp_path: Path) -> None:
    with Socks5Proxy() as socks:
        with serving(sim, tmp_path, upstream_proxy=proxy_url(socks), no_proxy=["localhost", "127.0.0.0/8"]) as st:
            chat(st)
        assert socks.log.targets == []
        assert "streamGenerateContent" in actions(sim)


def test_no_proxy_comes_from_the_environment_too(sim: GoogleSimulator, tmp_path: Path) -> None:
    from agfast import config

    cfg = config.load({"data_dir": str(tmp_path)}, env={"NO_PROXY": ".example.com, 10.0.0.0/8,localhost"})
    assert cfg.no_proxy == [".example.com", "10.0.0.0/8", "localhost"]
    own = config.load({"data_dir": str(tmp_path)}, env={"NO_PROXY": "a", "AGFAST_UPSTREAM_NO_PROXY": "b"})
    assert own.no_proxy == ["b"]


@pytest.mark.parametrize("scheme", ["http", "socks5"])
def test_a_dead_proxy_is_a_502_naming_it_and_the_account_stays_usable(
    sim: GoogleSimulator, tmp_path: Path, scheme: str
) -> None:
    with PROXIES[scheme]() as dead:
        port = dead.port
    url = f"{scheme}://{CREDENTIALS[0]}:{CREDENTIALS[1]}@127.0.0.1:{port}"
    with serving(sim, tmp_path, upstream_proxy=url) as st:
        with pytest.raises(openai.APIStatusError) as caught:
            chat(st)
        assert caught.value.status_code == 502
        error = caught.value.body
        assert isinstance(error, dict)
        assert f"{scheme}://127.0.0.1:{port}" in error["message"]
        assert error["code"] == "upstream_proxy_error"
        client = anthropic.Anthropic(base_url=st.url, api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as shaped:
            client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert shaped.value.status_code == 502
        assert shaped.value.body["error"]["type"] == "api_error"  # type: ignore[index]
        for text in (str(error), str(shaped.value.body)):
            assert CREDENTIALS[1] not in text and CREDENTIALS[0] not in text
        pool = st.app.pool
        assert len(pool.members) == 3
        assert all(pool.state.locked_until(m.id) == 0 for m in pool.members.values())
        assert not any(m.account.disabled for m in pool.members.values())
    assert "streamGenerateContent" not in actions(sim)


def test_wrong_proxy_credentials_are_reported_without_them(
    sim: GoogleSimulator, tmp_path: Path, proxy: HttpConnectProxy | Socks5Proxy
) -> None:
    wrong = ("proxy-user", "not-the-password")
    with (
        serving(sim, tmp_path, upstream_proxy=proxy_url(proxy, wrong)) as st,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        chat(st)
    assert caught.value.status_code == 502
    message = caught.value.body["message"]  # type: ignore[index]
    assert f"127.0.0.1:{proxy.port}" in message
    assert "not-the-password" not in message
    assert proxy.log.refused >= 1


def test_bad_proxy_urls_are_refused_at_start(tmp_path: Path, sim: GoogleSimulator) -> None:
    for url, says in (("ftp://h:1", "scheme"), ("http://user:pw@:8080", "host"), ("http://h:1/path", "path")):
        done = run_agfast("--data-dir", str(tmp_path), env={**google_env(sim), "AGFAST_UPSTREAM_PROXY": url})
        assert done.returncode == 2
        assert "upstream.proxy" in done.stderr and says in done.stderr
        assert "pw@" not in done.stderr
    bad = run_agfast("accounts", "set-proxy", "nobody@example.com", "gopher://x:1", "--data-dir", str(tmp_path))
    assert bad.returncode == 2 and "scheme" in bad.stderr


def test_accounts_add_through_a_dead_proxy_names_it(sim: GoogleSimulator, tmp_path: Path) -> None:
    with Socks5Proxy() as dead:
        port = dead.port
    env = {**google_env(sim), "AGFAST_UPSTREAM_PROXY": f"socks5://{CREDENTIALS[0]}:{CREDENTIALS[1]}@127.0.0.1:{port}"}
    refresh = next(iter(sim.accounts.values())).refresh_token
    done = run_agfast("accounts", "add", "--refresh-token", refresh, "--data-dir", str(tmp_path), env=env)
    assert done.returncode == 1
    assert f"socks5://127.0.0.1:{port}" in done.stderr
    assert CREDENTIALS[1] not in done.stderr and "Traceback" not in done.stderr
    assert AccountStore(tmp_path).load_all() == []


def test_accounts_list_shows_the_proxy_without_credentials(sim: GoogleSimulator, tmp_path: Path) -> None:
    onboard_all(stack_config(tmp_path, sim), sim)
    email = sorted(a.email for a in AccountStore(tmp_path).load_all())[0]
    url = f"http://{CREDENTIALS[0]}:{CREDENTIALS[1]}@proxy.example:3128"
    assert run_agfast("accounts", "set-proxy", email, url, "--data-dir", str(tmp_path)).returncode == 0
    listed = run_agfast("accounts", "list", "--json", "--data-dir", str(tmp_path))
    rows = {row["email"]: row for row in orjson.loads(listed.stdout)}
    assert rows[email]["proxy"] == "http://proxy.example:3128"
    assert sum(row["proxy"] is None for row in rows.values()) == 2
    assert CREDENTIALS[1] not in listed.stdout


def test_https_proxy_speaks_tls_to_the_proxy(
    sim: GoogleSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_side)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # agfast trusts proxies as the system does
    with HttpConnectProxy(CREDENTIALS, tls=server_side) as tls_proxy:
        url = proxy_url(tls_proxy, CREDENTIALS)
        assert url.startswith("https://")
        with serving(sim, tmp_path / "data", upstream_proxy=url) as st:
            chat(st)
    assert b":streamGenerateContent" in tls_proxy.log.sent


NO_PROXY_CASES = [
    # (NO_PROXY entries, host, goes direct)
    (["*"], "cloudcode-pa.googleapis.com", True),
    (["googleapis.com"], "cloudcode-pa.googleapis.com", True),
    (["googleapis.com"], "googleapis.com", True),
    ([".googleapis.com"], "oauth2.googleapis.com", True),
    (["*.googleapis.com"], "oauth2.googleapis.com", True),
    (["googleapis.com"], "notgoogleapis.com", False),
    (["GoogleAPIs.com:443"], "www.googleapis.com", True),
    (["10.0.0.0/8"], "10.1.2.3", True),
    (["10.0.0.0/8"], "11.1.2.3", False),
    (["::1"], "::1", True),
    (["[::1]"], "::1", True),
    (["fd00::/8"], "fd12::1", True),
    (["localhost"], "127.0.0.1", False),
    ([], "127.0.0.1", False),
]


@pytest.mark.parametrize(("entries", "host", "direct"), NO_PROXY_CASES)
def test_no_proxy_matching(entries: list[str], host: str, direct: bool) -> None:
    assert NoProxy(entries).bypass(host) is direct


def test_set_proxy_reaches_a_running_server(sim: GoogleSimulator, tmp_path: Path) -> None:
    onboard_all(stack_config(tmp_path, sim), sim)
    first = sorted(AccountStore(tmp_path).load_all(), key=lambda a: a.email)[0]
    cfg = stack_config(tmp_path, sim, preferred_account_id=first.id, accounts_reload_interval=0.1)
    with Socks5Proxy() as socks, ServerThread(cfg) as st:
        chat(st)
        assert socks.log.targets == []
        done = run_agfast("accounts", "set-proxy", first.id, proxy_url(socks), "--data-dir", str(tmp_path))
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        while st.app.pool.members[first.id].account.proxy_url is None and time.monotonic() < deadline:
            time.sleep(0.05)
        chat(st)
        assert b":streamGenerateContent" in socks.log.sent
