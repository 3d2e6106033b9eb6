"""`agfast accounts enable|disable|export|quota` and `accounts client add|list|remove`, run as a user runs them,
and the OAuth-client settings they rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from helpers import AGFAST_ROOT, ServerThread, request
from stack import google_env, onboard_all, stack_config

from agfast import config
from agfast.config import ConfigError, OAuthClient
from agfast.sim import GoogleSimulator

SIM_ACCOUNTS = 2
EMAIL1, EMAIL2 = "demo1@sim.local", "demo2@sim.local"
STRICT = {"PYTHONDEVMODE": "1", "PYTHONWARNINGS": "error"}


def run(data_dir: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AGFAST_", "ANTIGRAVITY_"))}
    full.update({**STRICT, **env})
    result = subprocess.run(
        [sys.executable, "-m", "agfast", "accounts", *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        env=full,
        cwd=AGFAST_ROOT,
        timeout=30,
    )
    for bad in ("Traceback", "Warning", "Unclosed"):
        assert bad not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


@pytest.fixture
def data_dir(sim: GoogleSimulator, tmp_path: Path) -> Path:
    """Both simulator accounts, onboarded the real way."""
    onboard_all(stack_config(tmp_path, sim), sim)
    return tmp_path


def statuses(data_dir: Path) -> dict[str, str]:
    rows = orjson.loads(run(data_dir, "list", "--json").stdout)
    return {row["email"]: row["status"] for row in rows}


def served_by(sim: GoogleSimulator, data_dir: Path) -> str:
    """Who a fresh agfast on this data dir sends a chat to, preferring EMAIL1 when it may."""
    body = orjson.dumps({"model": "gemini-3-flash", "messages": [{"role": "user", "content": "Which account?"}]})
    with ServerThread(stack_config(data_dir, sim, preferred_account_id=EMAIL1)) as st:
        reply = request(st.port, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body
    return reply.headers["x-account-email"]


def test_disable_and_enable(sim: GoogleSimulator, data_dir: Path) -> None:
    result = run(data_dir, "disable", EMAIL1)
    assert result.returncode == 0 and result.stdout.startswith(f"disabled {EMAIL1} ")
    assert statuses(data_dir) == {EMAIL1: "proxy_disabled", EMAIL2: "ok"}
    assert served_by(sim, data_dir) == EMAIL2

    result = run(data_dir, "enable", EMAIL1)
    assert result.returncode == 0 and result.stdout.startswith(f"enabled {EMAIL1} ")
    assert statuses(data_dir) == {EMAIL1: "ok", EMAIL2: "ok"}
    assert served_by(sim, data_dir) == EMAIL1

    missing = run(data_dir, "disable", "nobody@sim.local")
    assert missing.returncode == 1 and "no account matches 'nobody@sim.local'" in missing.stderr


def test_export_prints_tokens_to_stdout_only_and_imports_back(sim: GoogleSimulator, data_dir: Path) -> None:
    result = run(data_dir, "export")
    assert result.returncode == 0
    doc = orjson.loads(result.stdout)
    assert doc == {
        "accounts": [
            {"email": EMAIL1, "refresh_token": sim.accounts[EMAIL1].refresh_token},
            {"email": EMAIL2, "refresh_token": sim.accounts[EMAIL2].refresh_token},
        ]
    }
    assert "refresh tokens" in result.stderr and "sim-refresh" not in result.stderr

    only = orjson.loads(run(data_dir, "export", "--emails", EMAIL2.upper()).stdout)
    assert [a["email"] for a in only["accounts"]] == [EMAIL2]
    assert run(data_dir, "export", "--emails", "nobody@sim.local").returncode == 1

    export = data_dir / "export.json"
    export.write_text(result.stdout)
    other = data_dir / "other"
    imported = run(other, "import", str(export), **google_env(sim))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.endswith("imported 2 of 2 accounts from " + str(export) + "\n")


def test_quota_shows_every_model_and_the_windows(sim: GoogleSimulator, tmp_path: Path) -> None:
    sim.accounts[EMAIL1].remaining["claude-sonnet-4-6"] = 0.25
    try:
        onboard_all(stack_config(tmp_path, sim), sim)
    finally:
        sim.accounts[EMAIL1].remaining.clear()
    # The 5-hour / weekly windows, as Antigravity Tools stores them from retrieveUserQuotaSummary.
    from agfast.upstream.accounts import AccountStore

    store = AccountStore(tmp_path)
    account = store.find(EMAIL1)
    assert account is not None and account.quota is not None
    account.quota["quota_groups"] = [
        {
            "displayName": "Claude",
            "buckets": [{"window": "5h", "remainingFraction": 0.4, "resetTime": "2099-01-01T00:00:00Z"}],
        }
    ]
    store.save(account)

    views = orjson.loads(run(tmp_path, "quota", EMAIL1, "--json").stdout)
    [view] = views
    assert view["email"] == EMAIL1 and view["tier"] == "Google AI Pro"
    models = {m["name"]: m for m in view["models"]}
    assert models["claude-sonnet-4-6"]["percentage"] == 25 and models["claude-sonnet-4-6"]["reset_time"]
    assert models["gemini-3-flash"]["percentage"] == 100
    assert view["windows"] == [
        {"group": "Claude", "window": "5h", "remaining_fraction": 0.4, "reset_time": "2099-01-01T00:00:00Z"}
    ]

    text = run(tmp_path, "quota").stdout
    assert text.startswith(f"{EMAIL1}  tier Google AI Pro  (as of ")
    line = next(line for line in text.splitlines() if line.startswith("claude-sonnet-4-6 "))
    assert " 25% " in line and "(in " in line
    assert "[Claude: 5h]" in text and EMAIL2 in text


def test_client_add_list_remove(tmp_path: Path) -> None:
    added = run(tmp_path, "client", "add", "mine", "--client-id", "cid-1", "--client-secret", "-", stdin="s3cr3t-val\n")
    assert added.returncode == 0, added.stderr
    assert "s3cr3t-val" not in added.stdout + added.stderr
    cfg = config.load({"data_dir": str(tmp_path)}, {})
    assert cfg.oauth_clients == [OAuthClient("mine", "cid-1", "s3cr3t-val", "")]

    listed = run(tmp_path, "client", "list", AGFAST_OAUTH_CLIENT_ID="cid-0", AGFAST_OAUTH_CLIENT_SECRET="top-secret0")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["KEY", "default", "mine"]
    assert "s3cr3t-val" not in listed.stdout and "top-secret0" not in listed.stdout and "s3cr…" in listed.stdout

    again = run(tmp_path, "client", "add", "mine", "--client-id", "x", "--client-secret", "y")
    assert again.returncode == 2 and "exists already" in again.stderr

    removed = run(tmp_path, "client", "remove", "mine")
    assert removed.returncode == 0
    assert config.load({"data_dir": str(tmp_path)}, {}).oauth_clients == []
    assert run(tmp_path, "client", "remove", "mine").returncode == 1


CLIENT_SETTINGS = [
    # (config file, environment, expected keys in the refresh order)
    ("", {"ANTIGRAVITY_OAUTH_CLIENTS": "a|ida|sa|A;b|idb|sb|B"}, ["a", "b"]),
    ('[[oauth.clients]]\nkey = "f"\nclient_id = "idf"\nclient_secret = "sf"\n', {}, ["f"]),
    (
        '[[oauth.clients]]\nkey = "f"\nclient_id = "idf"\nclient_secret = "sf"\n',
        {"ANTIGRAVITY_OAUTH_CLIENTS": "a|ida|sa", "AGFAST_OAUTH_CLIENT_ID": "id0", "AGFAST_OAUTH_CLIENT_SECRET": "s0"},
        ["default", "f", "a"],
    ),
    ("", {"AGFAST_OAUTH_CLIENTS": "x|idx|sx|X"}, ["x"]),
]


@pytest.mark.parametrize(("text", "env", "keys"), CLIENT_SETTINGS)
def test_oauth_clients_from_file_and_env(tmp_path: Path, text: str, env: dict[str, str], keys: list[str]) -> None:
    (tmp_path / "config.toml").write_text(text)
    cfg = config.load({"data_dir": str(tmp_path)}, env)
    assert [c.key for c in cfg.oauth_client_chain()] == keys


def test_a_malformed_client_list_is_refused_without_quoting_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load({"data_dir": str(tmp_path)}, {"ANTIGRAVITY_OAUTH_CLIENTS": "a|ida|verysecret|A;broken"})
    assert "ANTIGRAVITY_OAUTH_CLIENTS" in str(info.value) and "verysecret" not in str(info.value)
    assert "verysecret" not in repr(OAuthClient("a", "ida", "verysecret"))
