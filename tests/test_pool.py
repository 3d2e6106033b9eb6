"""Account selection rules (reference §4.8–4.9) on an in-memory pool: no network, ready accounts only."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import orjson
import pytest

from agfast.config import Config
from agfast.upstream.accounts import Account, AccountStore
from agfast.upstream.client import UpstreamClient
from agfast.upstream.pool import QUOTA_KEY_MEMO_SIZE, AccountPool, Lease, NoAccountError, _quota_keys, quota_key

MODEL = "gemini-3-flash"


def account(store: AccountStore, name: str, tier: str | None, flash_pct: int | None) -> Account:
    acct = Account.new(f"{name}@example.com", f"1//{name}", access_token=f"ya29.{name}", expires_in=3600,
                       project_id=f"project-{name}")  # fmt: skip
    if flash_pct is not None:
        acct.set_quota([{"name": MODEL, "percentage": flash_pct, "reset_time": ""}], time.time(),
                       subscription_tier=tier)  # fmt: skip
    store.save(acct)
    return acct


def make_pool(tmp_path: Path, rows: list[tuple[str, str | None, int | None]], **config: object) -> AccountPool:
    store = AccountStore(tmp_path)
    for name, tier, pct in rows:
        account(store, name, tier, pct)
    cfg = Config(data_dir=tmp_path, api_key="sk-pool-test-1")
    for key, value in config.items():
        setattr(cfg, key, value)
    pool = AccountPool(cfg, store, UpstreamClient(cfg), rng=random.Random(18))  # P2C draws are reproducible
    pool.load()
    return pool


def pick(pool: AccountPool, session: str | None = None, rotate: bool = False, exclude: tuple[str, ...] = ()) -> str:
    async def run() -> Lease:
        return await pool.acquire(MODEL, session, rotate=rotate, exclude=exclude)

    return asyncio.run(run()).email.split("@")[0]


RANKING = [
    # (accounts: name, tier, flash quota %), expected order
    ([("free", "Free", 100), ("pro", "Google AI Pro", 10), ("ultra", "Google AI Ultra", 5)], ["ultra", "pro", "free"]),
    ([("a", "Google AI Pro", 20), ("b", "Google AI Pro", 90), ("c", "Google AI Pro", 50)], ["b", "c", "a"]),
    ([("known", "Google AI Pro", 30), ("unknown", None, None)], ["known", "unknown"]),
]


@pytest.mark.parametrize(("rows", "order"), RANKING)
def test_ranking_is_tier_then_quota(tmp_path: Path, rows: list, order: list[str]) -> None:  # type: ignore[type-arg]
    pool = make_pool(tmp_path, rows)
    assert [m.email.split("@")[0] for m in pool._ranked(MODEL, ())] == order


def test_account_without_the_model_in_its_quota_is_skipped(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [("has", "Google AI Pro", 50)])
    other = account(pool.store, "other", "Google AI Ultra", None)
    other.set_quota([{"name": "claude-sonnet-4-6", "percentage": 100, "reset_time": ""}], time.time())
    pool.store.save(other)
    pool.load()
    assert {pick(pool, rotate=True) for _ in range(10)} == {"has"}


def test_no_account_for_model_is_a_clear_error(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [("a", "Google AI Pro", 50)])
    with pytest.raises(NoAccountError, match="No accounts available with quota for model: claude-opus"):
        asyncio.run(pool.acquire("claude-opus-4-6-thinking"))


def test_session_sticks_and_rotation_moves(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [(n, "Google AI Pro", 50) for n in "abcd"])
    first = pick(pool, "sid-1")
    pool.state.set_last_used("nobody", time.time())  # only the binding can keep it now
    assert {pick(pool, "sid-1") for _ in range(5)} == {first}


def test_rotation_ignores_the_binding_and_the_reuse_window(tmp_path: Path) -> None:
    """With two accounts P2C always keeps the fuller one: a rotating pick that still honoured the session's
    binding or the last-used account (both on the emptier one) would return the emptier one."""
    pool = make_pool(tmp_path, [("full", "Google AI Pro", 90), ("empty", "Google AI Pro", 10)])
    empty = next(m.id for m in pool.members.values() if m.email.startswith("empty"))
    pool.state.bind("sid-1", empty)
    pool.state.set_last_used(empty, time.time())
    assert pick(pool, "sid-1") == "empty"
    assert pick(pool) == "empty"
    assert pick(pool, "sid-1", rotate=True) == "full"


def test_preferred_account_until_it_is_locked(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [(n, "Google AI Pro", 50) for n in "abc"], preferred_account_id="b@example.com")
    assert {pick(pool, rotate=True) for _ in range(5)} == {"b"}
    lease = asyncio.run(pool.acquire(MODEL))
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}
    error = {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}
    body = orjson.dumps({"error": {**error, "details": [retry_info]}})
    pool.mark_failure(lease, 429, body, None, MODEL)
    assert "b" not in {pick(pool, rotate=True) for _ in range(10)}


def test_lockouts_are_capped_and_cleared_by_success(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [("a", "Google AI Pro", 50), ("b", "Google AI Pro", 50)])
    lease = asyncio.run(pool.acquire(MODEL))
    body = orjson.dumps({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
                                   "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                "reason": "QUOTA_EXHAUSTED",
                                                "metadata": {"quotaResetDelay": "5h0m0s"}}]}})  # fmt: skip
    pool.mark_failure(lease, 429, body, None, MODEL)
    wait = pool._limited(lease.member, "gemini-3-flash", time.time())
    assert 295 <= wait <= 300  # 5 h stated, 300 s cap
    pool.mark_success(lease)  # clears the account-level lock (this one is model-level, it stays)
    assert pool._limited(lease.member, "gemini-3-flash", time.time()) > 0


def test_model_lockout_holds_however_many_model_names_clients_send(tmp_path: Path) -> None:
    """Selection memoises quota keys and per-model lockout keys (issue 14); the memos stay bounded when clients
    send endless distinct names, and a model lockout still keeps the account away after they were cleared."""
    pool = make_pool(tmp_path, [("a", "Google AI Pro", 50), ("b", "Google AI Pro", 50)])
    lease = asyncio.run(pool.acquire(MODEL))
    body = orjson.dumps({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
                                   "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                "reason": "QUOTA_EXHAUSTED", "metadata": {}}]}})  # fmt: skip
    pool.mark_failure(lease, 429, body, None, MODEL)
    now = time.time()
    for n in range(3 * QUOTA_KEY_MEMO_SIZE):
        pool._limited(lease.member, quota_key(f"client-model-{n}"), now)
    assert len(_quota_keys) <= QUOTA_KEY_MEMO_SIZE
    assert len(lease.member.model_lock_keys) <= QUOTA_KEY_MEMO_SIZE
    assert pool._limited(lease.member, quota_key(MODEL), now) > 0
    other = asyncio.run(pool.acquire(MODEL, rotate=True))
    assert other.account_id != lease.account_id


def test_success_lifts_the_account_lockout(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [("a", "Google AI Pro", 50)])
    lease = asyncio.run(pool.acquire(MODEL))
    pool.mark_failure(lease, 500, b'{"error":{"code":500,"message":"boom","status":"INTERNAL"}}', None, MODEL)
    assert pool._limited(lease.member, MODEL, time.time()) > 2  # 8 s server-error back-off
    pool.mark_success(lease)  # it served after all (e.g. a short wait-out): no reason to keep it out
    assert pool._limited(lease.member, MODEL, time.time()) == 0
    assert pick(pool, rotate=True) == "a"


def test_all_locked_says_how_long(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [("a", "Google AI Pro", 50)])
    lease = asyncio.run(pool.acquire(MODEL))
    pool.mark_failure(lease, 500, b'{"error":{"code":500,"message":"boom","status":"INTERNAL"}}', None, MODEL)
    with pytest.raises(NoAccountError, match=r"All accounts limited\. Wait \d+s\.") as info:
        asyncio.run(pool.acquire(MODEL, rotate=True))
    assert info.value.retry_after is not None and info.value.retry_after > 2


def test_ranking_follows_quota_changes(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [("a", "Google AI Pro", 90), ("b", "Google AI Pro", 10)])
    assert [m.email[0] for m in pool._ranked(MODEL, ())] == ["a", "b"]
    member = next(m for m in pool.members.values() if m.email.startswith("b"))
    member.account.set_quota([{"name": MODEL, "percentage": 100, "reset_time": ""}], time.time())
    member.reindex()
    pool.changed()
    assert [m.email[0] for m in pool._ranked(MODEL, ())] == ["b", "a"]


def test_p2c_only_draws_from_the_best_five(tmp_path: Path) -> None:
    rows = [(f"n{i:02d}", "Google AI Pro", 100 - i) for i in range(12)]
    pool = make_pool(tmp_path, rows, scheduling_mode="PerformanceFirst")
    seen = {pick(pool) for _ in range(200)}
    assert seen <= {"n00", "n01", "n02", "n03", "n04"}
    assert len(seen) >= 2


def test_empty_pool_says_how_to_add_an_account(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [])
    with pytest.raises(NoAccountError) as info:
        asyncio.run(pool.acquire(MODEL))
    assert str(info.value) == "no accounts yet: add one with `agfast accounts add` (or try `agfast --demo`)"


def test_pool_of_unusable_accounts_says_why(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [("a", "Google AI Pro", 50), ("b", "Google AI Pro", 50), ("c", None, None)])
    for name in "ab":
        pool.store.disable(pool.store.find(f"{name}@example.com"), "revoked")  # type: ignore[arg-type]
    forbidden = pool.store.find("c@example.com")
    assert forbidden is not None
    forbidden.mark_forbidden("403")
    pool.store.save(forbidden)
    pool.load()
    with pytest.raises(NoAccountError) as info:
        asyncio.run(pool.acquire(MODEL))
    assert str(info.value) == (
        "no usable account (2 disabled, 1 forbidden): see `agfast accounts list`, or add one with `agfast accounts add`"
    )


TOKENS = [
    {"access_token": "ya29.a", "project_id": "p", "expiry_timestamp": 2_000_000_000},
    {"access_token": "ya29.a", "project_id": "p", "expiry_timestamp": 2_000_000_000.5},
    {"access_token": "ya29.a", "project_id": "p", "expiry_timestamp": 1_000_000_060},  # inside the refresh skew
    {"access_token": "ya29.a", "project_id": "p", "expiry_timestamp": True},
    {"access_token": "ya29.a", "project_id": "p"},
    {"access_token": "", "project_id": "p", "expiry_timestamp": 2_000_000_000},
    {"access_token": "ya29.a", "project_id": "", "expiry_timestamp": 2_000_000_000},
    {"access_token": 7, "project_id": "p", "expiry_timestamp": 2_000_000_000},
    {"project_id": ["p"], "access_token": "ya29.a", "expiry_timestamp": 2_000_000_000},
    "not an object",
]


@pytest.mark.parametrize("token", TOKENS)
def test_ready_token_answers_as_the_properties_do(token: object) -> None:
    """The per-request readiness check (one read of the token object) agrees with `project_id` and
    `needs_refresh`, which the refresh path keeps using."""
    acct = Account.new("t@example.com", "1//t", access_token="x", expires_in=3600, project_id="x")
    acct.raw["token"] = token
    now = 1_000_000_000.0
    ready = (acct.access_token, acct.project_id) if acct.project_id and not acct.needs_refresh(now) else None
    assert acct.ready_token(now) == ready


def test_member_email_follows_a_reread_account(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, [("a", "Google AI Pro", 50)])
    store = AccountStore(tmp_path)
    (acct,) = store.load_all()
    acct.raw["email"] = "renamed@example.com"
    store.save(acct)
    pool.load()
    assert asyncio.run(pool.acquire(MODEL)).email == "renamed@example.com"
