"""`agfast serve --workers 2` as a real child process: two workers on one port, sharing the pool through the
private Redis the supervisor starts; a killed worker is replaced; SIGTERM stops everything in order."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import anthropic
import pytest
from helpers import AgfastProcess, run_agfast
from stack import KEY, Fault, generations, google_env, onboard_all, stack_config

from agfast.sim import GoogleSimulator

SIM_ACCOUNTS = 2
MODEL = "claude-sonnet-4-6"
WORKER_PID = re.compile(r"worker pid: (\d+)")


@pytest.fixture
def workers(sim: GoogleSimulator, tmp_path: Path, redis_server: object) -> AgfastProcess:
    """Two workers (redis_server only makes sure redis-server is installed: agfast starts its own)."""
    onboard_all(stack_config(tmp_path, sim), sim)
    (tmp_path / "config.toml").write_text(
        f'api_key = "{KEY}"\nshutdown_timeout = 2\n[upstream]\nretry_wait_scale = 0.01\n[state]\ntimeout = 1.0\n'
    )
    sim.clear_requests()
    sim.clear_faults()
    proc = AgfastProcess("serve", "--port", "0", "--data-dir", str(tmp_path), "--workers", "2", env=google_env(sim))
    proc.wait_listening()
    return proc


def worker_pids(proc: AgfastProcess, count: int, timeout: float = 20.0) -> list[int]:
    """The pids of the first `count` workers that said they listen (read from the start-up lines)."""
    assert proc.proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(m.group(1)) for line in proc.lines if (m := WORKER_PID.search(line))]
        if len(pids) >= count:
            return pids
        proc.lines.append(proc.proc.stdout.readline())
    raise TimeoutError(proc.lines)


def ask(port: int, session: str) -> str:
    with anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=32,
            messages=[{"role": "user", "content": "Say hello to the workers"}],
            extra_headers={"X-Claude-Code-Session-Id": session},
        )
    return raw.headers["x-account-email"]


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
