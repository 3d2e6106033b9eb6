"""Warmup (reference §1.1 `/internal/warmup`): a tiny request per account and model, on demand over HTTP and from
`agfast accounts warmup`, never for a model quota protection keeps for the account's owner."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import ServerThread, request, run_agfast
from stack import agfast_on, generations, google_env, onboard_all, stack_config, start_sim

from agfast import config
from agfast.convert.models import normalize_to_standard_id
from agfast.sim import MODEL_CATALOG, GoogleSimulator
from agfast.upstream.warmup import WarmupResult

SIM_ACCOUNTS = 2
LOW, HIGH = "demo1@sim.local", "demo2@sim.local"
FLASH = "gemini-3-flash"
PROTECTION = {"quota_protection_enabled": True}


@pytest.fixture
def sim() -> Iterator[GoogleSimulator]:
    """LOW has 5 % of the Flash family left (below the default 10 % threshold)."""
    with start_sim(accounts=SIM_ACCOUNTS) as simulator:
        for model in MODEL_CATALOG:
            if normalize_to_standard_id(model) == FLASH:
                simulator.accounts[LOW].remaining[model] = 0.05
        yield simulator


def warm(st: ServerThread, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    # No API key: the route is auth-exempt (loopback only), as in the reference.
    reply = request(st.port, "POST", "/internal/warmup", orjson.dumps(body), {"Content-Type": "application/json"})
    return reply.status, reply.json()


def test_warmup_sends_one_tiny_request_for_that_account(sim: GoogleSimulator, tmp_path: Path) -> None:
    with agfast_on(sim, tmp_path, auth_mode="strict") as st:
        status, answer = warm(st, {"email": HIGH, "model": FLASH})
        assert (status, answer["success"]) == (200, True), answer
        [sent] = generations(sim)
        envelope = orjson.loads(sent.body)
        assert envelope["model"] == FLASH
        assert envelope["request"]["contents"][0]["parts"] == [{"text": "Say hi"}]
        assert sent.email == HIGH
        assert st.app.warmup.counts["sent"] == 1


def test_quota_protection_forbids_a_warmup(sim: GoogleSimulator, tmp_path: Path) -> None:
    with agfast_on(sim, tmp_path, **PROTECTION) as st:
        status, answer = warm(st, {"email": LOW, "model": FLASH})
        assert status == 409 and answer["success"] is False
        assert "quota protection" in str(answer["error"])
        assert generations(sim) == []
        assert warm(st, {"email": LOW, "model": "claude-sonnet-4-6"})[0] == 200  # other models still warm


@pytest.mark.parametrize(
    ("body", "status"),
    [({"model": FLASH}, 400), ({"email": HIGH}, 400), ({"email": "nobody@sim.local", "model": FLASH}, 404)],
)
def test_bad_requests(sim: GoogleSimulator, tmp_path: Path, body: dict[str, object], status: int) -> None:
    with agfast_on(sim, tmp_path) as st:
        assert warm(st, body)[0] == status
        assert generations(sim) == []


def cli_warmup(sim: GoogleSimulator, data_dir: Path, *args: str) -> tuple[int, str]:
    env = {**google_env(sim), "PYTHONDEVMODE": "1", "PYTHONWARNINGS": "error"}
    result = run_agfast("accounts", "warmup", *args, "--data-dir", str(data_dir), env=env)
    both = result.stdout + result.stderr
    for bad in ("Traceback", "Warning", "Unclosed", "ya29.sim-", "sim-refresh", *(LOW, HIGH)):
        assert bad not in both, f"{bad!r} in output:\n{both}"  # emails are masked, tokens never shown
    return result.returncode, result.stdout


def test_cli_warms_every_account_but_what_protection_keeps(sim: GoogleSimulator, tmp_path: Path) -> None:
    cfg = stack_config(tmp_path, sim)
    onboard_all(cfg, sim)
    (tmp_path / "config.toml").write_text("[quota_protection]\nenabled = true\n")
    code, out = cli_warmup(sim, tmp_path, "--model", FLASH, "--model", "claude-sonnet-4-6")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "warmup: 3 sent, 1 skipped, 0 failed, 0 unknown account(s)"
    sent = {(r.email, orjson.loads(r.body)["model"]) for r in generations(sim)}
    assert sent == {(HIGH, FLASH), (HIGH, "claude-sonnet-4-6"), (LOW, "claude-sonnet-4-6")}


def test_cli_unknown_account_fails(sim: GoogleSimulator, tmp_path: Path) -> None:
    onboard_all(stack_config(tmp_path, sim), sim)
    code, out = cli_warmup(sim, tmp_path, "nobody@sim.local", "--model", FLASH)
    assert code == 1 and "unknown account" in out
    assert generations(sim) == []


def test_scheduled_tick_warms_full_windows_once(sim: GoogleSimulator, tmp_path: Path) -> None:
    """One pass of the schedule (run directly: the pass is what a timer would start): every account whose
    quota for a monitored model is full gets one warmup; LOW's Flash window has started (5 % left), so not it;
    a second pass in the same windows sends nothing."""
    models = [FLASH, "claude-sonnet-4-6"]
    with agfast_on(sim, tmp_path, warmup_schedule_enabled=True, warmup_models=models) as st:
        app = st.app
        assert app._warmup_schedule is not None and not app._warmup_schedule.done()  # the timer runs

        def tick() -> list[WarmupResult]:
            return asyncio.run_coroutine_threadsafe(app.warmup.tick(models), st.loop).result(30)

        warmed = [r for r in tick() if r.success]
        sent = {(r.email, orjson.loads(r.body)["model"]) for r in generations(sim)}
        assert sent == {(HIGH, FLASH), (HIGH, "claude-sonnet-4-6"), (LOW, "claude-sonnet-4-6")}
        assert len(warmed) == 3
        sim.clear_requests()
        assert tick() == [] and generations(sim) == []


def test_schedule_is_read_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[scheduled_warmup]\nenabled = true\nmonitored_models = ["gemini-3-flash"]\n')
    cfg = config.load({"data_dir": str(tmp_path)}, {})
    assert (cfg.warmup_schedule_enabled, cfg.warmup_models) == (True, ["gemini-3-flash"])
    (tmp_path / "config.toml").write_text('[scheduled_warmup]\nenabled = "often"\n')
    with pytest.raises(config.ConfigError):
        config.load({"data_dir": str(tmp_path)}, {})
