"""Warmup (reference §1.1 `/internal/warmup`): a tiny request per account and model, on demand over HTTP and from
`agfast accounts warmup`, never for a model quota protection keeps for the account's owner."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from helpers import ServerThread, request, run_agfast
from stack import agfast_on, generations, google_env, onboard_all, stack_config, start_sim

from agfast import config
from agfast.convert.models import normalize_to_standard_id
from agfast.sim import MODEL_CATALOG, GoogleSimulator
from agfast.upstream.warmup import SCHEDULE_INTERVAL_S, WarmupResult

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


# -- the schedule on a fake clock -----------------------------------------------------------------------------

# Bounds a wait for the schedule's pass (real upstream calls to the simulator); a pass takes milliseconds.
PASS_TIMEOUT_S = 30.0


class FakeClock:
    """The schedule's clock, moved by the test: `sleep` parks the caller until `advance_to` passes its deadline,
    and `advance_to` returns once every woken sleeper has finished its pass and sleeps again."""

    def __init__(self, start: float) -> None:
        self.t = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._asleep = asyncio.Event()
        self.naps: list[float] = []  # every sleep asked for, in order

    def now(self) -> float:
        return self.t

    def next_wake(self) -> float | None:
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._order), future))
        self.naps.append(seconds)
        self._asleep.set()
        await future

    async def settle(self) -> None:
        """Until the schedule sleeps (its first sleep starts with the server)."""
        await asyncio.wait_for(self._asleep.wait(), PASS_TIMEOUT_S)

    async def advance_to(self, moment: float) -> None:
        while self._sleepers and self._sleepers[0][0] <= moment:
            deadline, _, future = heapq.heappop(self._sleepers)
            self.t = max(self.t, deadline)
            self._asleep.clear()
            future.set_result(None)
            await self.settle()
        self.t = max(self.t, moment)


def reset_of(member_reset_times: dict[str, str], key: str) -> float:
    return datetime.fromisoformat(member_reset_times[key]).timestamp()


def test_schedule_fires_at_the_reset_once_per_account_and_family(tmp_path: Path) -> None:
    """Every monitored family's window has started (60 % left), so nothing is due until it resets. HIGH's windows
    reset first, LOW's an hour later; LOW's Flash family is below the protection threshold. The running server's
    schedule, on a fake clock: nothing before HIGH's reset; at it one warmup per family for HIGH (two Flash models
    monitored are one family); at LOW's only Claude (Flash protected); later passes send nothing again."""
    models = [FLASH, "gemini-2.5-flash", "claude-sonnet-4-6"]
    with start_sim(accounts=SIM_ACCOUNTS) as sim:
        for account in sim.accounts.values():
            account.default_remaining = 0.6
        sim.accounts[HIGH].reset_after = 3 * 3600.0
        sim.accounts[LOW].reset_after = 4 * 3600.0
        for model in MODEL_CATALOG:
            if normalize_to_standard_id(model) == FLASH:
                sim.accounts[LOW].remaining[model] = 0.05
        cfg = stack_config(tmp_path, sim, warmup_schedule_enabled=True, warmup_models=models, **PROTECTION)
        onboard_all(cfg, sim)
        sim.clear_requests()
        server = ServerThread(cfg)
        clock = FakeClock(datetime.now().timestamp())
        server.app.warmup.clock = clock
        with server as st:

            def advance_to(moment: float) -> set[tuple[str, str]]:
                """Move the clock; what the schedule sent meanwhile, as the simulator saw it."""
                sim.clear_requests()
                asyncio.run_coroutine_threadsafe(clock.advance_to(moment), st.loop).result(PASS_TIMEOUT_S * 4)
                return {(str(r.email), orjson.loads(r.body)["model"]) for r in generations(sim)}

            asyncio.run_coroutine_threadsafe(clock.settle(), st.loop).result(PASS_TIMEOUT_S)
            members = {m.email: m for m in st.app.pool.members.values()}
            high_reset = reset_of(members[HIGH].reset_times, FLASH)
            low_reset = reset_of(members[LOW].reset_times, "claude")
            assert clock.naps[0] == SCHEDULE_INTERVAL_S  # the first reset is hours away: sleep the longest nap

            assert advance_to(high_reset - 1) == set()  # woken every interval, nothing due yet
            assert clock.next_wake() == high_reset  # it wakes at the reset itself, not at the next interval
            assert advance_to(high_reset) == {(HIGH, FLASH), (HIGH, "claude-sonnet-4-6")}
            assert advance_to(low_reset - 1) == set()  # not twice for HIGH, not early for LOW
            assert advance_to(low_reset) == {(LOW, "claude-sonnet-4-6")}  # LOW's Flash: protected
            assert advance_to(low_reset + 3 * SCHEDULE_INTERVAL_S) == set()
            counts = st.app.warmup.counts
            assert (counts["sent"], counts["skipped"], counts["failed"]) == (3, 1, 0)  # one refusal at LOW's reset


def test_schedule_is_read_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[scheduled_warmup]\nenabled = true\nmonitored_models = ["gemini-3-flash"]\n')
    cfg = config.load({"data_dir": str(tmp_path)}, {})
    assert (cfg.warmup_schedule_enabled, cfg.warmup_models) == (True, ["gemini-3-flash"])
    (tmp_path / "config.toml").write_text('[scheduled_warmup]\nenabled = "often"\n')
    with pytest.raises(config.ConfigError):
        config.load({"data_dir": str(tmp_path)}, {})
