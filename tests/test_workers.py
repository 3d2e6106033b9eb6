"""`agfast serve --workers 2` as a real child process: two workers on one port, sharing the pool through the
private Redis the supervisor starts; a killed worker is replaced; SIGTERM stops everything in order."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from conftest import RedisServer
from helpers import AgfastProcess, Reply, request, run_agfast
from stack import KEY, Fault, ask_in_session, generations, google_env, onboard_all, stack_config
from test_operations import metric

from agfast.metrics import SAMPLE_EVERY
from agfast.monitor import MAX_PAGE, LogReader, db_path
from agfast.sim import GoogleSimulator
from agfast.upstream.accounts import TOKEN_FIELDS, AccountStore

SIM_ACCOUNTS = 2
WORKER_PID = re.compile(r"worker pid: (\d+)")


@pytest.fixture
def workers(sim: GoogleSimulator, tmp_path: Path, redis_server: object) -> AgfastProcess:
    """Two workers (redis_server only makes sure redis-server is installed: agfast starts its own)."""
    return start_workers(sim, tmp_path)


def worker_pids(proc: AgfastProcess, count: int, timeout: float = 20.0) -> list[int]:
    """The pids of the first `count` workers that said they listen (read from the start-up lines)."""
    return [int(m.group(1)) for m in proc.wait_lines(WORKER_PID, count, timeout)]


def ask(port: int, session: str) -> str:
    return ask_in_session(f"http://127.0.0.1:{port}", session, "Say hello to the workers")


def test_two_workers_share_lockouts_restart_and_stop_in_order(sim: GoogleSimulator, workers: AgfastProcess) -> None:
    try:
        first, second = worker_pids(workers, 2)
        assert first != second
        sim.script(Fault("status", status=429, retry_delay=60, action="streamGenerateContent"))
        ask(workers.port, "s0")
        [hit] = [r for r in generations(sim) if r.status == 429]
        # New connections spread over both workers; none of them picks the account one worker saw limited.
        for n in range(8):
            assert ask(workers.port, f"s{n + 1}") != hit.email
        os.kill(second, signal.SIGKILL)
        [*_, replacement] = worker_pids(workers, 3)
        assert replacement not in (first, second)
        for n in range(4):
            assert ask(workers.port, f"r{n}") != hit.email
        assert workers.stop(signal.SIGTERM, timeout=20) == 0
        for pid in (first, replacement):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        workers.close()


PREFERRED = "demo1@sim.local"
# Requests per phase over new connections: SO_REUSEPORT spreads them, so both workers serve some of each phase
# (all on one worker: 2 in 2**ROUND_REQUESTS; the monitor rows checked at the end name both).
ROUND_REQUESTS = 10


def start_workers(
    sim: GoogleSimulator, tmp_path: Path, extra: str = "", expire_tokens: bool = False, state: str = ""
) -> AgfastProcess:
    store = onboard_all(stack_config(tmp_path, sim), sim)
    if expire_tokens:
        for account in store.load_all():
            account.expiry_timestamp = 0
            store.merge(account, TOKEN_FIELDS)
    (tmp_path / "config.toml").write_text(
        f'api_key = "{KEY}"\nshutdown_timeout = 2\n{extra}[upstream]\nretry_wait_scale = 0.01\n'
        f"[state]\ntimeout = 1.0\n{state}"
    )
    sim.clear_requests()
    sim.clear_faults()
    sim.refresh_count.clear()
    proc = AgfastProcess("serve", "--port", "0", "--data-dir", str(tmp_path), "--workers", "2", env=google_env(sim))
    proc.wait_listening()
    return proc


def both_served(proc: AgfastProcess, tmp_path: Path, pids: list[int]) -> None:
    """Stop the workers, then check the monitor: both wrote rows (so both served the phases above)."""
    assert proc.stop(signal.SIGTERM, timeout=30) == 0
    served = Counter(row["worker"] for row in LogReader(db_path(tmp_path)).logs(limit=MAX_PAGE))
    assert set(served) == set(pids), served


def test_two_workers_refresh_each_expired_token_once_and_keep_a_session_on_one_account(
    sim: GoogleSimulator, tmp_path: Path, redis_server: object
) -> None:
    workers = start_workers(sim, tmp_path, expire_tokens=True)
    try:
        pids = worker_pids(workers, 2)
        with ThreadPoolExecutor(ROUND_REQUESTS) as clients:  # all at once: both workers find the token expired
            emails = list(clients.map(lambda n: ask(workers.port, f"fresh{n}"), range(ROUND_REQUESTS)))
        for email in set(emails):
            assert sim.refresh_count[email] == 1, dict(sim.refresh_count)
        assert len(sim.requests_for("token")) == len(set(emails))
        first = ask(workers.port, "kept")
        assert [ask(workers.port, "kept") for _ in range(ROUND_REQUESTS)] == [first] * ROUND_REQUESTS
        both_served(workers, tmp_path, pids)
    finally:
        workers.close()


def test_an_operators_clear_through_one_worker_is_honoured_by_both(
    sim: GoogleSimulator, tmp_path: Path, redis_server: object
) -> None:
    workers = start_workers(sim, tmp_path, extra=f'preferred_account_id = "{PREFERRED}"\n')
    try:
        pids = worker_pids(workers, 2)
        sim.script(Fault("status", status=429, retry_delay=60, action="streamGenerateContent"))
        assert ask(workers.port, "limit") != PREFERRED
        [hit] = [r for r in generations(sim) if r.status == 429]
        assert hit.email == PREFERRED
        assert all(ask(workers.port, f"locked{n}") != PREFERRED for n in range(ROUND_REQUESTS))
        reply = request(workers.port, "DELETE", "/api/proxy/rate-limits", headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status == 200, reply.body
        time.sleep(0.5)  # the clear reaches the other worker through Redis pub/sub
        assert [ask(workers.port, f"cleared{n}") for n in range(ROUND_REQUESTS)] == [PREFERRED] * ROUND_REQUESTS
        both_served(workers, tmp_path, pids)
    finally:
        workers.close()


def test_two_workers_serve_on_while_their_redis_is_killed_and_share_what_they_learned_when_it_returns(
    sim: GoogleSimulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    workers = start_workers(
        sim, tmp_path, extra=f'preferred_account_id = "{PREFERRED}"\n', state=f'redis_url = "{redis_server.url}"\n'
    )
    try:
        pids = worker_pids(workers, 2)
        assert all(ask(workers.port, f"before{n}") == PREFERRED for n in range(4))
        redis_server.kill()
        # Redis gone: requests keep flowing on each worker's own state; one worker learns a 429 meanwhile.
        assert all(ask(workers.port, f"down{n}") == PREFERRED for n in range(ROUND_REQUESTS))
        sim.script(Fault("status", status=429, retry_delay=60, action="streamGenerateContent"))
        assert ask(workers.port, "limit") != PREFERRED
        redis_server.start()
        # Back: the lock the worker learned alone reaches Redis, and from there the other worker.
        [account_id] = [a.id for a in AccountStore(tmp_path).load_all() if a.email == PREFERRED]
        client = redis.Redis(port=redis_server.port)
        until(lambda: any(k.decode().startswith(account_id) for k in client.hkeys("agfast:locks")))
        client.close()
        time.sleep(0.5)  # the other worker applies it from pub/sub
        assert all(ask(workers.port, f"after{n}") != PREFERRED for n in range(ROUND_REQUESTS))
        both_served(workers, tmp_path, pids)
    finally:
        workers.close()


def test_workers_on_a_port_in_use_fail_at_once(tmp_path: Path, redis_server: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_agfast("serve", "--port", str(port), "--data-dir", str(tmp_path), "--workers", "2")
    assert done.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}" in done.stderr


def test_a_supervisor_killed_outright_leaves_no_worker_or_redis_behind(workers: AgfastProcess, tmp_path: Path) -> None:
    pids = worker_pids(workers, 2)
    workers.proc.kill()
    workers.proc.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in pids if _running(pid)]
    workers.close()
    assert alive == []
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(tmp_path / "redis.sock"))
            except OSError:
                break
        time.sleep(0.05)
    else:
        pytest.fail("the private redis-server outlived its supervisor")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, possibly a moment later)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- the monitor and /metrics across workers ------------------------------------------------------------

# Requests spread over the workers (each on a new connection, so SO_REUSEPORT picks a worker for each), sent
# by this many clients at once so both workers' monitor writers commit into the one database together.
SPREAD_REQUESTS = 60
SPREAD_CLIENTS = 6
# Admin reads on new connections: with two workers, 2 × 0.5^12 is the chance they all reach the same one.
READS = 12


def spread(port: int, count: int) -> None:
    with ThreadPoolExecutor(SPREAD_CLIENTS) as clients:
        list(clients.map(lambda n: ask(port, f"spread{n}"), range(count)))


def admin_read(port: int, path: str) -> Reply:
    reply = request(port, "GET", path, headers={"Authorization": f"Bearer {KEY}"})
    assert reply.status == 200, (path, reply.status, reply.body)
    return reply


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for what the workers' monitor writers commit (every FLUSH_INTERVAL) to be visible."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def test_monitor_rows_and_stats_count_every_request_once_whichever_worker_serves(
    workers: AgfastProcess, tmp_path: Path
) -> None:
    try:
        pids = worker_pids(workers, 2)
        spread(workers.port, SPREAD_REQUESTS)
        totals = lambda: admin_read(workers.port, "/api/proxy/stats").json()["total_requests"]  # noqa: E731
        until(lambda: totals() == SPREAD_REQUESTS)
        for _ in range(READS):
            assert totals() == SPREAD_REQUESTS
            assert admin_read(workers.port, "/api/logs/count").json()["count"] == SPREAD_REQUESTS
        assert workers.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        workers.close()
    reader = LogReader(db_path(tmp_path))
    rows = reader.logs(limit=MAX_PAGE)
    assert len(rows) == len({row["request_id"] for row in rows}) == SPREAD_REQUESTS
    served = Counter(row["worker"] for row in rows)
    assert set(served) == set(pids), served  # both workers wrote rows into the one database
    assert reader.stats_summary()["requests"] == SPREAD_REQUESTS
    assert "monitor: could not write" not in workers.stderr_text


def scraped_requests(port: int) -> tuple[str, float]:
    text = admin_read(port, "/metrics").body.decode()
    return text, metric(text, "agfast_requests_total", route="/v1/messages", status="200")


def test_metrics_count_the_requests_of_every_worker_whichever_answers_the_scrape(workers: AgfastProcess) -> None:
    """Each worker counts in plain numbers and relays them to the shared files every SAMPLE_EVERY (and at each
    scrape it answers, and when it stops): a scrape sees every worker's requests at most that late."""
    try:
        first, _ = worker_pids(workers, 2)
        spread(workers.port, SPREAD_REQUESTS)
        deadline = time.monotonic() + 3 * SAMPLE_EVERY + 2
        while scraped_requests(workers.port)[1] != SPREAD_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(READS):
            text, requests = scraped_requests(workers.port)
            assert requests == SPREAD_REQUESTS
            assert metric(text, "agfast_request_duration_seconds_count", surface="anthropic") == SPREAD_REQUESTS
            assert metric(text, "agfast_accounts", state="available") == SIM_ACCOUNTS
            # Per-worker values summed over the live workers: nothing open, nothing dropped.
            assert "agfast_open_streams 0.0" in text.splitlines()
            assert "# TYPE agfast_monitor_queue_depth gauge" in text
            assert metric(text, "agfast_monitor_dropped_total", what="rows") == 0
            assert text.count("# TYPE agfast_requests_total counter") == 1
        # A worker stopped right after serving relays its last counts on the way out: none is lost.
        spread(workers.port, SPREAD_REQUESTS)
        os.kill(first, signal.SIGTERM)
        worker_pids(workers, 3)  # its replacement listens
        deadline = time.monotonic() + 3 * SAMPLE_EVERY + 2
        while scraped_requests(workers.port)[1] != 2 * SPREAD_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scraped_requests(workers.port)[1] == 2 * SPREAD_REQUESTS
        assert workers.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        workers.close()


# -- SIGTERM, again and again ------------------------------------------------------------------------------

# Start-and-stop rounds: a worker outliving SIGTERM did so in about half of the rounds that stopped right after
# start (its Redis subscriber swallowed the cancellation), so four rounds catch it almost surely.
STOP_ROUNDS = 4
# shutdown_timeout in the fixture is 2 s; a worker that outlives SIGTERM is killed by the supervisor only
# shutdown_timeout + STOP_GRACE (5 s) later, so an orderly stop must come well before that.
ORDERLY_STOP = 4.5


def test_sigterm_right_after_start_stops_every_worker_in_order_every_time(sim: GoogleSimulator, tmp_path: Path) -> None:
    onboard_all(stack_config(tmp_path, sim), sim)
    (tmp_path / "config.toml").write_text(f'api_key = "{KEY}"\nshutdown_timeout = 2\n')
    for _ in range(STOP_ROUNDS):
        proc = AgfastProcess("serve", "--port", "0", "--data-dir", str(tmp_path), "--workers", "2", env=google_env(sim))
        try:
            proc.wait_listening()
            pids = worker_pids(proc, 2)
            started = time.monotonic()
            assert proc.stop(signal.SIGTERM, timeout=20) == 0
            took = time.monotonic() - started
        finally:
            proc.close()
        assert "still running after the shutdown grace" not in proc.stderr_text
        assert took < ORDERLY_STOP
        assert [pid for pid in pids if _running(pid)] == []


def test_waiting_for_a_start_up_line_that_never_comes_fails_at_its_deadline(tmp_path: Path) -> None:
    """A worker that never says it listens fails the test in time instead of hanging the suite (the helper
    once sat in readline() for ever). A single process never prints a worker pid: the line never comes."""
    (tmp_path / "config.toml").write_text(f'api_key = "{KEY}"\n')
    proc = AgfastProcess("serve", "--port", "0", "--data-dir", str(tmp_path)).wait_listening()
    pool = ThreadPoolExecutor(1)
    try:
        waiting = pool.submit(worker_pids, proc, 1, 1.0)
        with pytest.raises(TimeoutError, match=r"not seen in 1\.0 s"):
            waiting.result(timeout=10)
    finally:
        proc.close()  # ends a wait still blocked on the child's stdout
        pool.shutdown(wait=False)
