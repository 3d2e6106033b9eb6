"""`agfast accounts …` as a user runs it: the real CLI in a subprocess, "Google" played by the simulator.

Every run is checked for what must never happen: a traceback, a warning (unclosed aiohttp session included:
the child runs in dev mode with warnings as errors) or a token on screen.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import AGFAST_ROOT, run_agfast

from agfast.sim import DEFAULT_MODELS, Fault, GoogleSimulator, SimulatorThread, demo_accounts
from agfast.sim.accounts import DEPRECATED_MODEL_IDS
from agfast.upstream.accounts import AccountStore

RT1, RT2, RT3 = (f"1//sim-refresh-demo{i}" for i in (1, 2, 3))
EMAIL1, EMAIL2, EMAIL3 = (f"demo{i}@sim.local" for i in (1, 2, 3))
REVOKED = "invalid_grant: Token has been expired or revoked."
CLIENT = {"AGFAST_OAUTH_CLIENT_ID": "sim-client-id", "AGFAST_OAUTH_CLIENT_SECRET": "sim-client-secret"}
# Unclosed sessions and other ResourceWarnings become visible (and fatal) in the child.
STRICT = {"PYTHONDEVMODE": "1", "PYTHONWARNINGS": "error"}
# Substrings of every token the simulator or the tests hand out; none may ever be printed.
SECRETS = ("sim-refresh", "ya29.sim-", "seeded-secret")
N_MODELS = len(DEFAULT_MODELS)


@pytest.fixture
def sim() -> Iterator[GoogleSimulator]:
    with SimulatorThread(GoogleSimulator(accounts=demo_accounts(3))) as simulator:
        yield simulator


def google_env(sim: GoogleSimulator, client: bool = True) -> dict[str, str]:
    env = {
        "AGFAST_OAUTH_TOKEN_URL": sim.token_url,
        "AGFAST_USERINFO_URL": sim.userinfo_url,
        "AGFAST_UPSTREAM_ENDPOINTS": sim.endpoint,
        **STRICT,
    }
    return {**env, **CLIENT} if client else env


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The invariants of every run: no trace, no warning, no secret."""
    both = result.stdout + result.stderr
    for bad in ("Traceback", "Warning", "Unclosed", *SECRETS):
        assert bad not in both, f"{bad!r} in output:\n{both}"
    return result


def accounts(sim: GoogleSimulator | None, data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`agfast accounts ARGS --data-dir DATA_DIR`, pointed at the simulator."""
    full_env = {**(google_env(sim) if sim else STRICT), **env}
    return checked(run_agfast("accounts", *args, "--data-dir", str(data_dir), env=full_env))


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Like run_agfast, with stdin, and without its offline AGFAST_* URLs (for tests of the config file)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AGFAST_")}
    full_env.update({**STRICT, **(env or {})})
    command = [sys.executable, "-m", "agfast", *args]
    return checked(
        subprocess.run(command, input=stdin, capture_output=True, text=True, env=full_env, cwd=AGFAST_ROOT, timeout=20)
    )


def saved(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Account files by email, after checking the index lists exactly those files."""
    files = sorted((data_dir / "accounts").glob("*.json")) if (data_dir / "accounts").is_dir() else []
    raws = [orjson.loads(p.read_bytes()) for p in files]
    if files:
        index = orjson.loads((data_dir / "accounts.json").read_bytes())
        assert sorted(e["id"] for e in index["accounts"]) == sorted(r["id"] for r in raws)
        assert {p.stem for p in files} == {r["id"] for r in raws}
    return {r["email"]: r for r in raws}


def nothing_saved(data_dir: Path) -> bool:
    return not (data_dir / "accounts").exists() and not (data_dir / "accounts.json").exists()


# ---------------------------------------------------------------------------------------------------------
# add


def test_add_saves_email_project_tier_and_quota(sim: GoogleSimulator, tmp_path: Path) -> None:
    result = accounts(sim, tmp_path, "add", "--refresh-token", RT1)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"added {EMAIL1} (project sim-project-demo1, tier Google AI Pro, {N_MODELS} models)\n"
    assert result.stderr == ""

    raw = saved(tmp_path)[EMAIL1]
    assert raw["name"] == "Demo User 1"
    token = raw["token"]
    assert token["refresh_token"] == RT1
    assert token["access_token"].startswith("ya29.sim-")
    assert token["project_id"] == "sim-project-demo1"
    assert token["expiry_timestamp"] > time.time() + 3000
    assert token["id_token"].count(".") == 2
    quota = raw["quota"]
    assert quota["subscription_tier"] == "Google AI Pro"
    assert sorted(m["name"] for m in quota["models"]) == sorted(DEFAULT_MODELS)
    assert all(m["percentage"] == 100 and m["reset_time"] for m in quota["models"])
    assert quota["model_forwarding_rules"] == DEPRECATED_MODEL_IDS
    assert raw["disabled"] is False
    for path in (tmp_path / "accounts.json", tmp_path / "accounts" / f"{raw['id']}.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # What Google saw: the four discovery calls, in order, with the token and project they need.
    assert [r.action for r in sim.requests] == ["token", "userinfo", "loadCodeAssist", "fetchAvailableModels"]
    refresh, info, load, models = sim.requests
    assert refresh.form is not None
    assert refresh.form["refresh_token"] == RT1 and refresh.form["grant_type"] == "refresh_token"
    assert refresh.form["client_id"] == CLIENT["AGFAST_OAUTH_CLIENT_ID"]
    for call in (info, load, models):
        assert call.headers["authorization"] == "Bearer " + token["access_token"]
    assert load.json["metadata"]["ideType"] == "ANTIGRAVITY"
    assert models.json == {"project": "sim-project-demo1"}


def test_add_twice_updates_the_same_account(sim: GoogleSimulator, tmp_path: Path) -> None:
    first = accounts(sim, tmp_path, "add", "--refresh-token", RT1)
    before = saved(tmp_path)[EMAIL1]
    second = accounts(sim, tmp_path, "add", "--refresh-token", RT1)
    assert first.stdout.startswith(f"added {EMAIL1} ")
    assert second.returncode == 0
    assert second.stdout.startswith(f"updated {EMAIL1} (project sim-project-demo1")
    after = saved(tmp_path)
    assert list(after) == [EMAIL1]
    assert after[EMAIL1]["id"] == before["id"]
    assert after[EMAIL1]["token"]["access_token"] != before["token"]["access_token"]
    assert sim.refresh_count[EMAIL1] == 2


def test_add_revives_an_account_disabled_for_invalid_grant(sim: GoogleSimulator, tmp_path: Path) -> None:
    accounts(sim, tmp_path, "add", "--refresh-token", RT1)
    store = AccountStore(tmp_path)
    account = store.find(EMAIL1)
    assert account is not None
    store.disable(account, REVOKED)
    result = accounts(sim, tmp_path, "add", "--refresh-token", RT1)
    assert result.stdout.startswith(f"updated and re-enabled {EMAIL1} ")
    raw = saved(tmp_path)[EMAIL1]
    assert raw["disabled"] is False and "disabled_reason" not in raw


def test_add_reads_the_token_from_stdin(sim: GoogleSimulator, tmp_path: Path) -> None:
    args = ("accounts", "add", "--refresh-token", "-", "--data-dir", str(tmp_path))
    result = run_cli(*args, env=google_env(sim), stdin=f"  {RT2}\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"added {EMAIL2} (project sim-project-demo2, tier Google AI Ultra, ")
    assert saved(tmp_path)[EMAIL2]["token"]["refresh_token"] == RT2


ADD_FAILURES = [
    # (refresh token, scripted fault, stderr starts with)
    ("1//not-a-token-google-knows", None, f"agfast: cannot add account: {REVOKED}\n"),
    (RT1, Fault("invalid_grant", email=EMAIL1), f"agfast: cannot add account: {REVOKED}\n"),
    (RT1, Fault("status", action="userinfo", status=401), "agfast: cannot add account: userinfo failed: HTTP 401"),
    (
        RT1,
        Fault("status", action="loadCodeAssist", status=403, reason="PERMISSION_DENIED"),
        "agfast: cannot add account: loadCodeAssist failed: HTTP 403",
    ),
    (RT1, Fault("status", action="token", status=503), "agfast: cannot add account: internal_failure: Backend Error"),
]


@pytest.mark.parametrize(("token", "fault", "stderr"), ADD_FAILURES)
def test_add_failure_is_one_line_and_saves_nothing(
    sim: GoogleSimulator, tmp_path: Path, token: str, fault: Fault | None, stderr: str
) -> None:
    if fault is not None:
        sim.script(fault)
    result = accounts(sim, tmp_path, "add", "--refresh-token", token)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(stderr)
    assert result.stderr.count("\n") == 1
    assert nothing_saved(tmp_path)


def test_add_without_an_oauth_client_says_how_to_configure_one(sim: GoogleSimulator, tmp_path: Path) -> None:
    result = checked(
        run_agfast("accounts", "add", "--refresh-token", RT1, "--data-dir", str(tmp_path), env=google_env(sim, False))
    )
    assert result.returncode == 1
    assert result.stderr.startswith("agfast: cannot add account: no OAuth client configured")
    assert "AGFAST_OAUTH_CLIENT_ID" in result.stderr and "oauth.client_id" in result.stderr
    assert result.stderr.count("\n") == 1
    assert nothing_saved(tmp_path)
    assert sim.requests_for("token") == []  # nothing to ask Google with


def test_add_uses_the_config_file(sim: GoogleSimulator, tmp_path: Path) -> None:
    config = tmp_path / "agfast.toml"
    config.write_text(
        f'[oauth]\ntoken_url = "{sim.token_url}"\nuserinfo_url = "{sim.userinfo_url}"\n'
        f'client_id = "cid"\nclient_secret = "csecret"\n[upstream]\nendpoints = ["{sim.endpoint}"]\n'
    )
    data = tmp_path / "data"
    result = run_cli("accounts", "add", "--refresh-token", RT3, "--config", str(config), "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert saved(data)[EMAIL3]["quota"]["subscription_tier"] == "Free"


def test_quota_failure_still_saves_the_account(sim: GoogleSimulator, tmp_path: Path) -> None:
    sim.script(Fault("status", action="fetchAvailableModels", status=500))
    result = accounts(sim, tmp_path, "add", "--refresh-token", RT1)
    assert result.returncode == 0
    assert result.stdout.startswith(f"added {EMAIL1} (project sim-project-demo1, tier Google AI Pro; quota not fetched")
    assert "HTTP 500" in result.stdout and "agfast accounts refresh" in result.stdout
    raw = saved(tmp_path)[EMAIL1]
    assert raw["token"]["project_id"] == "sim-project-demo1"
    assert raw["quota"]["subscription_tier"] == "Google AI Pro"
    assert raw["quota"]["models"] == []


@pytest.mark.parametrize(
    ("token", "stderr"),
    [
        ("", "agfast: no refresh token given on --refresh-token\n"),
        ("ya29.an-access-token", "agfast: that is an access token (ya29.…), not a refresh token (1//…)\n"),
        ("1//a 1//b", "agfast: --refresh-token must hold exactly one refresh token\n"),
    ],
)
def test_add_refuses_what_is_not_a_refresh_token(sim: GoogleSimulator, tmp_path: Path, token: str, stderr: str) -> None:
    result = accounts(sim, tmp_path, "add", "--refresh-token", token)
    assert (result.returncode, result.stderr) == (2, stderr)
    assert sim.requests == []


# ---------------------------------------------------------------------------------------------------------
# list


def seed(data_dir: Path) -> dict[str, str]:
    """Four accounts in four states, written the way the server would; returns email -> id."""
    store = AccountStore(data_dir)
    now = time.time()
    ids: dict[str, str] = {}
    for n, email in enumerate(("ok@x.test", "low@x.test", "revoked@x.test", "blocked@x.test")):
        account = store.upsert(
            email, f"1//seeded-secret-{n}", access_token=f"ya29.seeded-secret-{n}", expires_in=3600, now=now
        )
        account.project_id = f"proj-{n}"
        models: list[dict[str, Any]] = [
            {"name": "gemini-3-flash", "percentage": 100},
            {"name": "claude-sonnet-4-6", "percentage": (0, 40, 80, 100)[n]},
        ]
        account.set_quota(models, now, subscription_tier="Google AI Pro")
        if email.startswith("revoked"):
            account.disable(REVOKED, now)
        if email.startswith("blocked"):
            account.block_validation(now + 600, "VALIDATION_REQUIRED", "https://accounts.google.com/verify")
        store.save(account)
        ids[email] = account.id
    return ids


def test_list_empty_points_at_add(tmp_path: Path) -> None:
    table = accounts(None, tmp_path, "list")
    assert table.returncode == 0
    assert "no accounts" in table.stdout and "agfast accounts add" in table.stdout
    as_json = accounts(None, tmp_path, "list", "--json")
    assert (as_json.returncode, orjson.loads(as_json.stdout)) == (0, [])
    assert nothing_saved(tmp_path)


def test_list_table(tmp_path: Path) -> None:
    ids = seed(tmp_path)
    result = accounts(None, tmp_path, "list")
    assert result.returncode == 0
    header, *rows = result.stdout.split("\n\n")[0].splitlines()
    assert header.split() == ["EMAIL", "ID", "TIER", "PROJECT", "STATUS", "QUOTA", "ACCESS", "TOKEN"]
    by_email = {row.split()[0]: row for row in rows}
    assert list(by_email) == sorted(ids)  # sorted by email
    expected = {
        # email: (status starts with, quota)
        "ok@x.test": ("ok ", "0-100% (2 models)"),
        "low@x.test": ("ok ", "40-100% (2 models)"),
        "revoked@x.test": (f"disabled: {REVOKED}", "80-100% (2 models)"),
        "blocked@x.test": ("validation_blocked: VALIDATION_REQUIRED until ", "100% (2 models)"),
    }
    status_at = header.index("STATUS")
    for email, (status, quota) in expected.items():
        row = by_email[email]
        assert ids[email] in row and "Google AI Pro" in row
        assert row[status_at:].startswith(status), row
        assert quota in row and "expires in 59m" in row


def test_list_json_has_the_fields_and_no_secrets(tmp_path: Path) -> None:
    ids = seed(tmp_path)
    result = accounts(None, tmp_path, "list", "--json")
    rows = {r["email"]: r for r in orjson.loads(result.stdout)}
    assert set(rows) == set(ids)
    keys = {"id", "email", "name", "tier", "project_id", "status", "status_detail", "quota", "token_expires_at"}
    assert all(keys <= set(r) for r in rows.values())
    low = rows["low@x.test"]
    assert (low["id"], low["tier"], low["project_id"], low["status"]) == (
        ids["low@x.test"],
        "Google AI Pro",
        "proj-1",
        "ok",
    )
    assert low["quota"]["models"] == 2
    assert (low["quota"]["lowest_percentage"], low["quota"]["highest_percentage"]) == (40, 100)
    assert low["token_expires_at"] > time.time()
    assert (rows["revoked@x.test"]["status"], rows["revoked@x.test"]["status_detail"]) == ("disabled", REVOKED)
    assert rows["blocked@x.test"]["status"] == "validation_blocked"
    assert "https://accounts.google.com/verify" in rows["blocked@x.test"]["status_detail"]
    assert "token" not in result.stdout.replace("token_expires_at", "")


def test_data_dir_from_parent_flag_and_environment(tmp_path: Path) -> None:
    seed(tmp_path)
    for args, env in (
        (("--data-dir", str(tmp_path), "accounts", "list"), {}),
        (("accounts", "--data-dir", str(tmp_path), "list"), {}),
        (("accounts", "list"), {"AGFAST_DATA_DIR": str(tmp_path)}),
        (("accounts",), {"AGFAST_DATA_DIR": str(tmp_path)}),  # bare `accounts` lists
    ):
        result = checked(run_agfast(*args, env={**STRICT, **env}))
        assert result.returncode == 0, (args, result.stderr)
        assert "ok@x.test" in result.stdout, args


# ---------------------------------------------------------------------------------------------------------
# remove


@pytest.mark.parametrize("how", ["email", "EMAIL", "id"])
def test_remove(tmp_path: Path, how: str) -> None:
    ids = seed(tmp_path)
    target = {"email": "low@x.test", "EMAIL": "LOW@X.TEST", "id": ids["low@x.test"]}[how]
    result = accounts(None, tmp_path, "remove", target)
    assert (result.returncode, result.stdout) == (0, f"removed low@x.test ({ids['low@x.test']})\n")
    assert set(saved(tmp_path)) == set(ids) - {"low@x.test"}


@pytest.mark.parametrize("target", ["nobody@x.test", "00000000-0000-4000-8000-000000000000", "../accounts"])
def test_remove_unknown_is_exit_1(tmp_path: Path, target: str) -> None:
    ids = seed(tmp_path)
    result = accounts(None, tmp_path, "remove", target)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"agfast: no account matches {target!r} (see 'agfast accounts list')\n"
    assert set(saved(tmp_path)) == set(ids)


# ---------------------------------------------------------------------------------------------------------
# import


def antigravity_account(email: str, refresh: str) -> dict[str, Any]:
    """An account file as Antigravity Tools writes it (§4.1), stale project and quota included."""
    now = int(time.time())
    return {
        "id": str(uuid.uuid4()),
        "email": email,
        "name": email.split("@")[0],
        "token": {
            "access_token": "ya29.seeded-secret-stale",
            "refresh_token": refresh,
            "expires_in": 3599,
            "expiry_timestamp": now - 7200,
            "token_type": "Bearer",
            "email": email,
            "project_id": "stale-project-123",
            "oauth_client_key": "antigravity-desktop",
            "session_id": "-3750763034362895579",
            "is_gcp_tos": False,
            "id_token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        },
        "quota": {
            "models": [{"name": "gemini-3-flash", "percentage": 3, "reset_time": "2026-01-01T05:00:00Z"}],
            "last_updated": now - 86400,
            "is_forbidden": False,
            "forbidden_reason": None,
            "subscription_tier": "FREE",
            "model_forwarding_rules": {},
        },
        "disabled": False,
        "disabled_reason": None,
        "disabled_at": None,
        "proxy_disabled": False,
        "proxy_disabled_reason": None,
        "proxy_disabled_at": None,
        "protected_models": [],
        "live_limited_models": {},
        "validation_blocked": False,
        "validation_blocked_until": None,
        "validation_blocked_reason": None,
        "validation_url": None,
        "created_at": now - 86400 * 30,
        "last_used": now - 3600,
        "proxy_id": None,
        "proxy_bound_at": None,
        "custom_label": "work",
        "device_profile": {"machine_id": "auth0|user_01HZX8Q4C2", "sqm_id": "{A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF}"},
        "device_history": [],
    }


def antigravity_dir(root: Path, pairs: list[tuple[str, str]]) -> Path:
    """An Antigravity Tools data dir: accounts.json index, accounts/<uuid>.json, and app files beside."""
    (root / "accounts").mkdir(parents=True)
    files = [antigravity_account(email, rt) for email, rt in pairs]
    for raw in files:
        (root / "accounts" / f"{raw['id']}.json").write_bytes(orjson.dumps(raw))
    summaries = [{k: raw[k] for k in ("id", "email", "name", "disabled", "created_at", "last_used")} for raw in files]
    index = {"version": "2.0", "accounts": summaries, "current_account_id": files[0]["id"], "current_target_ide": None}
    (root / "accounts.json").write_bytes(orjson.dumps(index))
    (root / "gui_config.json").write_text("{}")
    return root


@pytest.mark.parametrize("which", ["data dir", "accounts dir"])
def test_import_antigravity_tools_data_dir(sim: GoogleSimulator, tmp_path: Path, which: str) -> None:
    source = antigravity_dir(
        tmp_path / "antigravity_tools", [(EMAIL1, RT1), (EMAIL2, RT2), ("gone@x.test", "1//seeded-secret-gone")]
    )
    path = source if which == "data dir" else source / "accounts"
    before = {p: p.read_bytes() for p in source.rglob("*.json")}
    data = tmp_path / "agfast"
    result = accounts(sim, data, "import", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines[:2]) == [
        f"added {EMAIL1} (project sim-project-demo1, tier Google AI Pro, {N_MODELS} models)",
        f"added {EMAIL2} (project sim-project-demo2, tier Google AI Ultra, {N_MODELS} models)",
    ]
    assert lines[2] == f"imported 2 of 3 accounts from {path}"
    assert result.stderr == f"agfast: cannot import gone@x.test: {REVOKED}\n"
    stored = saved(data)
    assert set(stored) == {EMAIL1, EMAIL2}
    assert stored[EMAIL1]["token"]["project_id"] == "sim-project-demo1"  # Google's answer, not the stale file
    assert len(stored[EMAIL2]["quota"]["models"]) == N_MODELS
    assert {p: p.read_bytes() for p in source.rglob("*.json")} == before  # the source is only read


def test_import_export_file(sim: GoogleSimulator, tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_bytes(
        orjson.dumps(
            {"accounts": [{"email": EMAIL3, "refresh_token": RT3}, {"email": "old-name@x.test", "refresh_token": RT1}]}
        )
    )
    result = accounts(sim, tmp_path / "data", "import", str(export))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"added {EMAIL3} (project sim-project-demo3, tier Free, {N_MODELS} models)",
        f"added {EMAIL1} (project sim-project-demo1, tier Google AI Pro, {N_MODELS} models)"
        " [the import file said old-name@x.test]",
        f"imported 2 of 2 accounts from {export}",
    ]
    assert set(saved(tmp_path / "data")) == {EMAIL1, EMAIL3}


IMPORT_FAILURES = [
    # (file content or None for a missing file, stderr contains)
    (
        {"accounts": [{"email": "a@x.test", "refresh_token": "1//seeded-secret-a"}]},
        f"cannot import a@x.test: {REVOKED}",
    ),
    ({"accounts": []}, "no accounts found in "),
    ({"something": "else"}, "no accounts found in "),
    (b"{not json", "invalid JSON at line 1"),
    (None, "no such file or directory"),
]


@pytest.mark.parametrize(("content", "stderr"), IMPORT_FAILURES)
def test_import_failures_exit_1(sim: GoogleSimulator, tmp_path: Path, content: Any, stderr: str) -> None:
    export = tmp_path / "export.json"
    if content is not None:
        export.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    result = accounts(sim, tmp_path / "data", "import", str(export))
    assert result.returncode == 1
    assert stderr in result.stderr
    assert nothing_saved(tmp_path / "data")


# ---------------------------------------------------------------------------------------------------------
# refresh


def seed_google_accounts(data_dir: Path, *pairs: tuple[str, str]) -> None:
    """Accounts as an older version left them: no access token, no project, no quota."""
    store = AccountStore(data_dir)
    for email, rt in pairs:
        store.upsert(email, rt)


def test_refresh_updates_tokens_and_quota_and_disables_revoked(sim: GoogleSimulator, tmp_path: Path) -> None:
    seed_google_accounts(tmp_path, (EMAIL1, RT1), (EMAIL2, RT2))
    sim.accounts[EMAIL2].revoked = True
    result = accounts(sim, tmp_path, "refresh")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"refreshed {EMAIL1} (project sim-project-demo1, tier Google AI Pro, quota 100% ({N_MODELS} models))",
        "refreshed 1 of 2 accounts (1 failed, 0 skipped)",
    ]
    assert (
        result.stderr
        == f"agfast: cannot refresh {EMAIL2}: {REVOKED} (account disabled; add it again with a new refresh token)\n"
    )
    stored = saved(tmp_path)
    ok, revoked = stored[EMAIL1], stored[EMAIL2]
    assert ok["token"]["access_token"].startswith("ya29.sim-") and ok["token"]["project_id"] == "sim-project-demo1"
    assert len(ok["quota"]["models"]) == N_MODELS and ok["quota"]["subscription_tier"] == "Google AI Pro"
    assert (revoked["disabled"], revoked["disabled_reason"]) == (True, REVOKED)
    assert revoked["disabled_at"] >= int(time.time()) - 60

    # Next time the disabled account is skipped without asking Google; naming it retries (and revives) it.
    sim.clear_requests()
    again = accounts(sim, tmp_path, "refresh")
    assert again.returncode == 0
    assert f"skipped {EMAIL2}: disabled ({REVOKED}); add it again to revive it" in again.stdout.splitlines()
    assert {r.email for r in sim.requests_for("token")} == {EMAIL1}
    sim.accounts[EMAIL2].revoked = False
    named = accounts(sim, tmp_path, "refresh", EMAIL2)
    assert named.stdout.startswith(f"refreshed and re-enabled {EMAIL2} (project sim-project-demo2")
    assert saved(tmp_path)[EMAIL2]["disabled"] is False


@pytest.mark.parametrize(
    ("setup", "code", "stdout", "stderr"),
    [
        # every account failed
        ("all revoked", 1, "refreshed 0 of 2 accounts (2 failed, 0 skipped)\n", REVOKED),
        # the token works but quota does not: still a refresh, reported
        ("quota 500", 0, "quota not fetched: fetchAvailableModels failed: HTTP 500", ""),
        ("empty store", 0, "no accounts in ", ""),
        ("unknown target", 1, "", "agfast: no account matches 'nobody@x.test'"),
    ],
)
def test_refresh_outcomes(
    sim: GoogleSimulator, tmp_path: Path, setup: str, code: int, stdout: str, stderr: str
) -> None:
    args: tuple[str, ...] = ()
    if setup != "empty store":
        seed_google_accounts(tmp_path, (EMAIL1, RT1), (EMAIL2, RT2))
    if setup == "all revoked":
        sim.accounts[EMAIL1].revoked = sim.accounts[EMAIL2].revoked = True
    if setup == "quota 500":
        sim.script(Fault("status", action="fetchAvailableModels", status=500, email=EMAIL1))
    if setup == "unknown target":
        args = ("nobody@x.test",)
    result = accounts(sim, tmp_path, "refresh", *args)
    assert result.returncode == code
    assert stdout in result.stdout
    assert stderr in result.stderr
    if setup == "all revoked":
        assert all(raw["disabled"] for raw in saved(tmp_path).values())
    if setup == "quota 500":
        raw = saved(tmp_path)[EMAIL1]
        assert raw["token"]["project_id"] == "sim-project-demo1" and raw["quota"]["models"] == []
