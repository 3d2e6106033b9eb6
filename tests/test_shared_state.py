"""Two agfast instances ("two hosts": own data dirs, own processes' state) sharing one real Redis.

What one learns (a 429, a refreshed token, a session's account, an operator's clear) holds for the other before
its next request; with Redis killed mid-load requests keep flowing, and what was learned meanwhile reaches Redis
when it is back.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest
import redis
from conftest import RedisServer
from helpers import ServerThread, request
from stack import KEY, Fault, ask_in_session, generations, onboard_all, stack_config

from agfast.sim import GoogleSimulator
from agfast.upstream.accounts import TOKEN_FIELDS, AccountStore
from agfast.upstream.state import MemoryState, RedisState

SIM_ACCOUNTS = 2
# Six engineers share this machine's two cores: a 50 ms Redis budget can pass unanswered under that load.
SHARED = {"state_timeout": 1.0}


@contextmanager
def two_hosts(
    sim: GoogleSimulator, tmp_path: Path, redis_url: str, expire_tokens: bool = False, **overrides: Any
) -> Iterator[tuple[ServerThread, ServerThread]]:
    """Two agfast servers, each with its own data dir (as on two hosts), sharing `redis_url`. The second host's
    data dir is a copy of the first's: hosts share accounts by id, as when a data dir is deployed to each host."""
    sim.clear_faults()
    servers = []
    with ExitStack() as stack:
        shared = {"state_redis_url": redis_url, "state_prefix": "t" + tmp_path.name, **SHARED, **overrides}
        first = stack_config(tmp_path / "a", sim, **shared)
        store = onboard_all(first, sim)
        if expire_tokens:
            for account in store.load_all():
                account.expiry_timestamp = 0
                store.merge(account, TOKEN_FIELDS)
        shutil.copytree(tmp_path / "a", tmp_path / "b")
        for name in ("a", "b"):
            servers.append(stack_config(tmp_path / name, sim, **shared))
        sim.clear_requests()
        sim.refresh_count.clear()
        hosts = [stack.enter_context(ServerThread(cfg)) for cfg in servers]
        yield hosts[0], hosts[1]
    sim.clear_faults()


def ask(st: ServerThread, session: str) -> str:
    """One Claude Code-style request with a session; the email of the account that answered."""
    return ask_in_session(st.url, session)


def limited_email(sim: GoogleSimulator) -> str:
    [hit] = [r for r in generations(sim) if r.status == 429]
    assert hit.email is not None
    return hit.email


def test_a_429_learned_by_one_host_is_honoured_by_the_other(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        sim.script(Fault("status", status=429, retry_delay=60, action="streamGenerateContent"))
        served = ask(a, "session-a1")
        locked = limited_email(sim)
        assert served != locked
        # B never saw the 429; the fuller account it would pick on its own is the locked one.
        trips = b.app.state.round_trips  # type: ignore[attr-defined]
        for n in range(4):
            assert ask(b, f"session-b{n}") != locked
        # One round trip per request on the request path, the GET of a session B has not seen (writes go
        # behind, batched).
        assert b.app.state.round_trips - trips == 4  # type: ignore[attr-defined]


def test_a_lockout_cleared_through_the_admin_api_of_one_host_is_cleared_for_both(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        sim.script(Fault("status", status=429, retry_delay=60, action="streamGenerateContent"))
        ask(a, "s1")
        locked = limited_email(sim)
        reply = request(b.port, "DELETE", "/api/proxy/rate-limits", headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status == 200, reply.body
        # A learned the 429 itself; only the shared clear lets it use that account again.
        assert ask(a, "s2") == locked


def test_one_token_refresh_per_expiry_across_hosts(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url, expire_tokens=True) as (a, b):
        emails: list[str] = []
        threads = [
            threading.Thread(target=lambda st=st, n=n: emails.append(ask(st, f"t{n}")))
            for n in range(3)
            for st in (a, b)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(emails) == 6
        for email in set(emails):
            assert sim.refresh_count[email] == 1, dict(sim.refresh_count)
        assert len(sim.requests_for("token")) == len(set(emails))


def test_a_token_published_between_a_hosts_look_and_its_lease_is_taken_not_refreshed_again(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    """B looks for a shared token (none yet), A then publishes its refresh and frees the lease, B takes the free
    lease: B must take A's token, not refresh a second time (seen once in a full run: two refreshes)."""
    with two_hosts(sim, tmp_path, redis_server.url, expire_tokens=True, preferred_account_id=PREFERRED) as (a, b):
        assert ask(a, "first") == PREFERRED
        assert sim.refresh_count[PREFERRED] == 1
        state = state_of(b)
        real = state.shared_token
        looks: list[str] = []

        async def looked_too_early(account_id: str) -> tuple[str, int] | None:
            looks.append(account_id)
            return None if len(looks) == 1 else await real(account_id)

        state.shared_token = looked_too_early  # type: ignore[method-assign]
        assert ask(b, "second") == PREFERRED
        assert len(looks) == 2  # the second look is the one after the lease
        assert sim.refresh_count[PREFERRED] == 1, dict(sim.refresh_count)


def test_a_session_stays_on_one_account_whichever_host_serves_it(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        # A's first choice answers 429 once (a short lockout), so the conversation starts on the other account.
        sim.script(Fault("status", status=429, retry_delay=2, action="streamGenerateContent"))
        ask(a, "warm-up")
        bound = ask(a, "conversation-1")
        assert bound != limited_email(sim)
        time.sleep(2.2)  # the lockout is over: on its own, B would pick the fuller (previously locked) account
        for st in (b, a, b, b):
            assert ask(st, "conversation-1") == bound
        # The binding is the shared one (with equal quotas, B's own pick could match A's by chance).
        ids = {acc.email: acc.id for acc in AccountStore(tmp_path / "b").load_all()}
        client = redis.Redis(port=redis_server.port)
        assert client.get(f"t{tmp_path.name}:bind:conversation-1") == ids[bound].encode()
        client.close()


def test_redis_killed_mid_load_requests_flow_and_state_is_reconciled_after_restart(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        failures: list[BaseException] = []
        served = [0]
        stop = threading.Event()

        def load(st: ServerThread, name: str) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    ask(st, f"{name}-{n}")
                    served[0] += 1
                except Exception as exc:
                    failures.append(exc)

        workers = [threading.Thread(target=load, args=(st, name)) for st, name in ((a, "la"), (b, "lb"))]
        for w in workers:
            w.start()
        time.sleep(0.5)
        redis_server.kill()
        # While Redis is gone, A learns a 429 (it keeps it locally, and for Redis when it returns).
        sim.script(Fault("status", status=429, retry_delay=120, action="streamGenerateContent", prefix=None))
        time.sleep(1.0)
        before_restart = served[0]
        redis_server.start()
        time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join(30)
        assert not failures, failures[:3]
        assert before_restart > 0
        locked = limited_email(sim)
        # Reconciled: the lockout learned during the outage reaches the restarted (empty) Redis ...
        client = redis.Redis(port=redis_server.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not client.hlen(f"t{tmp_path.name}:locks"):
            time.sleep(0.05)
        # Both hosts find Redis back on their own (no request needed); then both honour the lockout.
        while time.monotonic() < deadline and (a.app.state._down or b.app.state._down):
            time.sleep(0.05)
        ids = {acc.email: acc.id for acc in AccountStore(tmp_path / "a").load_all()}
        assert any(key.startswith(ids[locked].encode()) for key in client.hkeys(f"t{tmp_path.name}:locks"))
        client.close()
        # ... and both hosts honour it.
        for st in (a, b, a, b):
            assert ask(st, f"after-{st.port}") != locked


@pytest.mark.parametrize("running", [False])
def test_the_proxy_switch_reaches_every_host(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer, running: bool
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        client = redis.Redis(port=redis_server.port)
        channel = f"t{tmp_path.name}:events"
        while client.pubsub_numsub(channel)[0][1] < 2:  # both hosts listening
            time.sleep(0.02)
        client.close()
        reply = request(a.port, "POST", "/api/proxy/stop", headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status == 200
        deadline = time.monotonic() + 5
        while b.app.proxy_running is not running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert b.app.proxy_running is running
        with pytest.raises(anthropic.APIStatusError) as caught:
            ask(b, "stopped")
        assert caught.value.status_code == 503
        # A host that starts later finds the proxy stopped too.
        late = stack_config(tmp_path / "b", sim, state_redis_url=redis_server.url, state_prefix="t" + tmp_path.name)
        with ServerThread(late) as c:
            deadline = time.monotonic() + 5
            while c.app.proxy_running and time.monotonic() < deadline:
                time.sleep(0.02)
            assert c.app.proxy_running is False


def test_one_accounts_lockouts_cleared_on_a_host_that_has_not_seen_them(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        sim.script(Fault("status", status=429, retry_delay=60, action="streamGenerateContent"))
        ask(a, "s1")
        locked = limited_email(sim)
        ids = {acc.email: acc.id for acc in AccountStore(tmp_path / "b").load_all()}
        # B has served nothing since A's 429: its own copy of the state does not have the lockout yet.
        path = f"/api/proxy/rate-limits/{ids[locked]}"
        reply = request(b.port, "DELETE", path, headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status == 200, reply.body
        assert ask(a, "s2") == locked


# -- the mirror that pub/sub keeps current ------------------------------------------------------------------

# The race of a 429 learned by one host and the other's very next request, run this many times.
RACE_ROUNDS = 20
# The account both hosts prefer in the lockout tests: what a host picks when it knows of no lock on it.
PREFERRED = "demo1@sim.local"


def state_of(st: ServerThread) -> RedisState:
    state = st.app.state
    assert isinstance(state, RedisState)
    return state


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def current(*hosts: ServerThread) -> None:
    """Wait until every host is subscribed and has pulled its mirror (the steady state)."""
    until(lambda: all(state_of(st).current for st in hosts))


def on_loop(st: ServerThread, change: Callable[[], None]) -> None:
    """Run `change` on the host's own event loop (its state is not thread-safe) and wait for it."""

    async def run() -> None:
        change()

    asyncio.run_coroutine_threadsafe(run(), st.loop).result(5)


def account_ids(tmp_path: Path) -> dict[str, str]:
    return {acc.email: acc.id for acc in AccountStore(tmp_path / "a").load_all()}


def test_a_429_learned_by_one_host_is_honoured_by_the_others_very_next_request(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    # Both hosts prefer one account: each uses it whenever it knows of no lock on it.
    with two_hosts(sim, tmp_path, redis_server.url, preferred_account_id=PREFERRED) as (a, b):
        current(a, b)
        own_pick = ask(b, "pick")
        assert own_pick == PREFERRED
        ids = account_ids(tmp_path)
        for n in range(RACE_ROUNDS):
            sim.clear_requests()
            sim.script(Fault("status", status=429, retry_delay=60, action="streamGenerateContent"))
            assert ask(a, f"a{n}") != own_pick
            assert limited_email(sim) == own_pick  # A's pick is B's: without the lock B would use it
            assert ask(b, f"b{n}") != own_pick, f"round {n}: B used the account A had just seen limited"
            reply = request(a.port, "DELETE", "/api/proxy/rate-limits", headers={"Authorization": f"Bearer {KEY}"})
            assert reply.status == 200, reply.body
            # The operator's clear on A reaches B's mirror (and the account serves on B again).
            until(lambda: not b.app.pool.lockouts(ids[own_pick]))
            assert ask(b, f"c{n}") == own_pick


def test_the_steady_state_request_path_costs_redis_no_round_trip(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        current(a, b)
        ask(b, "known")
        ask(a, "from-a")
        state = state_of(b)
        trips = state.round_trips
        for _ in range(6):  # a session B served, one A bound (B heard it), and no session at all
            ask(b, "known")
            ask(b, "from-a")
        assert state.round_trips == trips
        # A session B has never heard of costs one GET; concurrent requests of that session share it. Redis
        # holds its answers back meanwhile, so the requests all arrive while that GET is in flight.
        client = redis.Redis(port=redis_server.port)
        client.execute_command("CLIENT", "PAUSE", 400, "ALL")
        threads = [threading.Thread(target=ask, args=(b, "brand-new")) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        client.close()
        assert state.round_trips == trips + 1
        ask(b, "brand-new")
        assert state.round_trips == trips + 1


def both_at_once(hosts: tuple[ServerThread, ...], session: str) -> dict[int, str]:
    """One request of `session` to every host, released together; the account each answered with."""
    start = threading.Barrier(len(hosts))
    served: dict[int, str] = {}

    def go(st: ServerThread) -> None:
        start.wait(5)
        served[st.port] = ask(st, session)

    threads = [threading.Thread(target=go, args=(st,)) for st in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(served) == len(hosts)
    return served


def test_a_brand_new_session_hitting_both_hosts_at_once_stays_on_one_account(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        current(a, b)
        ids = account_ids(tmp_path)
        first, second = sorted(ids.values())
        client = redis.Redis(port=redis_server.port)
        for n in range(5):
            session = f"both-{n}"
            # Each host's own choice for a new conversation differs: its mirror says it used another account
            # last (set on the mirror alone, as if just learned).
            now = time.time()
            on_loop(a, lambda now=now: MemoryState.set_last_used(state_of(a), first, now))
            on_loop(b, lambda now=now: MemoryState.set_last_used(state_of(b), second, now))
            # Redis holds its answers back until both hosts asked for the session's binding: both learn it is
            # new at the same moment, and both bind it.
            client.execute_command("CLIENT", "PAUSE", 300, "ALL")
            served = both_at_once((a, b), session)
            winner = client.get(f"t{tmp_path.name}:bind:{session}")
            assert winner is not None
            bound_id = winner.decode()
            bound = {ids[email]: email for email in ids}[bound_id]
            # From the next request on, both hosts serve the conversation on the account bound first.
            until(lambda s=session, w=bound_id: state_of(a).binding(s) == state_of(b).binding(s) == w)
            for st in (a, b, a, b):
                assert ask(st, session) == bound, (n, served)
        client.close()


def test_a_lock_written_while_a_host_was_disconnected_is_honoured_once_it_is_back(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url, preferred_account_id=PREFERRED) as (a, b):
        current(a, b)
        own_pick = ask(b, "pick")
        locked = account_ids(tmp_path)[own_pick]
        redis_server.kill()
        until(lambda: not state_of(b).current)
        redis_server.start()
        # Written while B was not listening: no message tells B; only its pull on return can.
        client = redis.Redis(port=redis_server.port)
        client.hset(f"t{tmp_path.name}:locks", locked, f"{time.time() + 120!r}|RATE_LIMIT_EXCEEDED")
        client.close()
        current(b)
        assert state_of(b).locked_until(locked) > time.time()
        trips = state_of(b).round_trips
        for n in range(3):
            assert ask(b, "pick") != own_pick, n
        # Read from the mirror: the one round trip is the session's binding, checked once after the return.
        assert state_of(b).round_trips == trips + 1


def test_while_a_host_cannot_subscribe_each_request_pulls_the_shared_state_first(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url, preferred_account_id=PREFERRED) as (a, b):
        current(a, b)
        own_pick = ask(b, "pick")
        locked = account_ids(tmp_path)[own_pick]
        client = redis.Redis(port=redis_server.port)
        # Subscribing is refused from now on, and the live subscriptions are cut: no message reaches B.
        client.execute_command("ACL", "SETUSER", "default", "-subscribe")
        client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        until(lambda: not state_of(b).current)
        client.hset(f"t{tmp_path.name}:locks", locked, f"{time.time() + 120!r}|RATE_LIMIT_EXCEEDED")
        trips = state_of(b).round_trips
        for n in range(3):
            assert ask(b, "pick") != own_pick, n
        assert state_of(b).round_trips == trips + 3  # one pull per request
        assert not state_of(b).current
        client.execute_command("ACL", "SETUSER", "default", "+subscribe")
        client.close()
        current(b)  # subscribed again


def test_the_first_binding_of_a_session_wins_over_a_later_one_made_without_seeing_it(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_hosts(sim, tmp_path, redis_server.url) as (a, b):
        current(a, b)
        ids = account_ids(tmp_path)
        first, second = sorted(ids.values())
        emails = {account_id: email for email, account_id in ids.items()}
        # Another process bound the session, and B missed the news: B takes it for new and picks its own.
        client = redis.Redis(port=redis_server.port)
        client.set(f"t{tmp_path.name}:bind:crossed", first)
        client.close()
        now = time.time()
        on_loop(b, lambda: MemoryState.set_last_used(state_of(b), second, now))
        on_loop(b, lambda: state_of(b)._verify("crossed"))
        assert ask(b, "crossed") == emails[second]  # its own pick, made before Redis answered
        # The first binding stands: B's write lost and B adopted it, and no host moved to B's.
        until(lambda: state_of(b).binding("crossed") == first)
        for st in (a, b, a, b):
            assert ask(st, "crossed") == emails[first]
