"""What key and IP checks cost per request (issue 16: "key and IP checks add ≤ 2% CPU per request").

    python benchmarks/access_cost.py                    # callgrind, /proc rounds and timeit: ~15–30 min
    python benchmarks/access_cost.py --quick            # fewer requests and rounds: ~10 min
    python benchmarks/access_cost.py --no-callgrind     # /proc rounds and timeit only
    python benchmarks/access_cost.py --json             # also one JSON line per row

agfast runs in front of `agfast sim --fast` three ways, every request an OpenAI non-streaming chat:

  open    auth off, no IP rules
  main    auth strict, the main key only (the request sends it)
  named   auth strict, NAMED_KEYS named keys with rpm / tokens-per-day limits and model patterns, the request
          using one of them; IP allow and deny lists of ~100 CIDRs each and a trusted proxy, the request
          arriving through it with X-Forwarded-For

Three measurements, each with a different weakness:

1. instructions (the verdict): agfast under `valgrind --tool=callgrind` serves WARMUP + N requests one at a
   time, and again WARMUP + 0 requests followed by as many idle seconds as the N requests took; (Ir(N) −
   Ir(0)) / N is its instructions per request, with start-up, warm-up and shutdown cancelled. Instruction
   counts do not move with the other processes on the machine, but callgrind slows agfast ~50×, so a
   1,000-request run lasts minutes and work done per second of wall time would count as per-request work
   (and vary with the load): the idle seconds cancel the 1 s tick, and the named keys' usage write-back
   (every keys.FLUSH_EVERY s while keys are used, ~0.5–1 ms: half a request's worth) is moved out of the
   window (the launcher sets FLUSH_EVERY to a day; the write at exit is in both runs) and timed in (3).
2. /proc CPU (a second opinion): the three servers run side by side; ROUNDS rounds each send M requests to
   every server in turn (the order rotating), charging each the CPU time its threads ran (schedstat, ns);
   the median round. Other processes on the machine move this by ±10–30%.
3. the checks alone (in process, `timeit`): the named key's lookup + rpm window, model patterns and token
   charging, the main key's comparison, and the IP screen with X-Forwarded-For, against the per-request CPU
   of (2).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from load import SIM_REFRESH, clean_env, environment, start  # noqa: E402
from peers.measure import one_at_a_time  # noqa: E402
from peers.targets import MODEL, chat_body, start_upstream  # noqa: E402

from agfast.keys import FLUSH_EVERY  # noqa: E402

# As long as a named key (sk-ag- + 43), so every configuration's request has the same bytes to parse.
MAIN_KEY = "sk-access-bench-main-" + "0123456789" * 2 + "01234567"
# Named keys in the "named" configuration: a small team's worth, and more.
NAMED_KEYS = 50
# Patterns every named key carries; the benchmark's model matches the last one, so every pattern is tried.
KEY_MODELS = ["claude-sonnet-*", "claude-opus-*", "gpt-*", "gemini-3-*"]
# Limits high enough never to refuse the benchmark, so the limiter's bookkeeping runs on every request.
KEY_RPM = 1_000_000
KEY_TPD = 10**12
# ~100 CIDRs per list, in the shapes a LAN rule set has; the client matches the last allow rule (the
# longest scan) and no deny rule (so every deny rule is tried).
ALLOW_RULES = [f"10.{i}.0.0/16" for i in range(60)] + [f"fd00:{i:x}::/32" for i in range(38)] + ["192.168.7.0/24"]
DENY_RULES = [f"192.168.{i}.{j}" for i in range(1, 6) for j in range(1, 21)]
TRUSTED_PROXY = "127.0.0.1"
FORWARDED_FOR = "192.168.7.42"
# Requests before anything is counted: the token refresh, first-use imports and caches.
WARMUP = 20
# agfast under callgrind: as `python -m agfast`, with the key-usage write-back moved out of the window.
CALLGRIND_LAUNCHER = (
    "import sys, agfast.cli, agfast.keys; agfast.keys.FLUSH_EVERY = 86400.0; sys.exit(agfast.cli.main())"
)
# The one timed step that is not per request: the named keys' usage written back every keys.FLUSH_EVERY s.
WRITE_BACK = f"named keys: usage written back (every {FLUSH_EVERY:.0f} s, not per request)"
CALLGRIND_OUT = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Setup:
    """One way of running agfast: its flags, environment and the headers its request carries."""

    name: str
    label: str
    flags: list[str]
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Row:
    """One configuration's figures; None where that measurement was not run."""

    name: str
    label: str
    instructions: float | None = None  # per request
    cpu_us: float | None = None  # per request, median round
    cpu_rounds: list[float] = field(default_factory=list)
    startup_instructions: int | None = None  # the 0 run: start-up, warm-up and shutdown


def setups(named_key: str) -> list[Setup]:
    ip_env = {
        "AGFAST_SECURITY_IP_ALLOW": ",".join(ALLOW_RULES),
        "AGFAST_SECURITY_IP_DENY": ",".join(DENY_RULES),
        "AGFAST_SECURITY_TRUSTED_PROXIES": TRUSTED_PROXY,
    }
    strict = ["--auth-mode", "strict", "--api-key", MAIN_KEY]
    # Every configuration's request carries the same headers (h11 spends ~20 k instructions on each header
    # line, ~0.8% of a request): the rows differ by the checks only, not by what the client sent.
    sent = {"Authorization": f"Bearer {MAIN_KEY}", "X-Forwarded-For": f"203.0.113.9, {FORWARDED_FOR}"}
    return [
        Setup("open", "auth off, no IP rules", ["--auth-mode", "off"], headers=sent),
        Setup("main", "auth strict, main key", strict, headers=sent),
        Setup(
            "named",
            f"{NAMED_KEYS} named keys (rpm, tpd, models), {len(ALLOW_RULES)} allow + {len(DENY_RULES)} deny "
            "CIDRs, trusted proxy + X-Forwarded-For",
            strict,
            ip_env,
            {"Authorization": f"Bearer {named_key}", "X-Forwarded-For": f"203.0.113.9, {FORWARDED_FOR}"},
        ),
    ]


def cpu_ns(pid: int) -> int:
    """CPU time the process's threads have run, in ns (schedstat: /proc/stat's ticks are 10 ms, too coarse
    for a round of a few hundred sub-millisecond requests)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return total


def request_bytes(port: int, headers: dict[str, str]) -> bytes:
    body = chat_body(stream=False)
    lines = ["POST /v1/chat/completions HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def make_named_keys(data_dir: Path) -> str:
    """NAMED_KEYS keys in `data_dir`; returns one of them (from the middle: a lookup is a hash either way)."""
    from agfast.keys import KeyStore

    store = KeyStore(data_dir)
    fields = {"rpm": KEY_RPM, "tpd": KEY_TPD, "models": KEY_MODELS}
    made = [store.add({"name": f"bench-{i}", **fields}, time.time())[1] for i in range(NAMED_KEYS)]
    return made[NAMED_KEYS // 2]


class Bench:
    """The upstream, one data directory per configuration (an onboarded account each), and the requests."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.upstream, self.upstream_port = start_upstream(chunks=20)
        base = f"http://127.0.0.1:{self.upstream_port}"
        self.env = clean_env(
            AGFAST_UPSTREAM_ENDPOINTS=f"{base}/v1internal",
            AGFAST_OAUTH_TOKEN_URL=f"{base}/token",
            AGFAST_USERINFO_URL=f"{base}/oauth2/v2/userinfo",
            AGFAST_OAUTH_CLIENT_ID="bench",
            AGFAST_OAUTH_CLIENT_SECRET="bench",
            PYTHONHASHSEED="0",  # the same start-up work in the N run and the 0 run
        )
        self.data_dirs: dict[str, Path] = {}
        named_dir = self._data_dir("named")
        self.setups = setups(make_named_keys(named_dir))
        for setup in self.setups:
            if setup.name != "named":
                self._data_dir(setup.name)

    def _data_dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir()
        subprocess.run([sys.executable, "-m", "agfast", "accounts", "add", "--refresh-token", SIM_REFRESH,
                        "--data-dir", str(path)], env=self.env, check=True, capture_output=True, cwd=ROOT)  # fmt: skip
        self.data_dirs[name] = path
        return path

    def command(self, setup: Setup, launcher: list[str]) -> list[str]:
        return [sys.executable, *launcher, "--port", "0", "--data-dir", str(self.data_dirs[setup.name]),
                "--log-level", "warning", *setup.flags]  # fmt: skip

    def serve(self, setup: Setup, prefix: list[str] | None = None) -> tuple[subprocess.Popen[str], int]:
        launcher = ["-c", CALLGRIND_LAUNCHER] if prefix else ["-m", "agfast"]
        return start([*(prefix or []), *self.command(setup, launcher)], {**self.env, **setup.env})

    def send(self, setup: Setup, port: int, count: int) -> None:
        if count <= 0:
            return
        (timings,) = one_at_a_time([(port, request_bytes(port, setup.headers))], count)
        if timings.errors:
            raise RuntimeError(f"{setup.name}: {timings.errors} of {count} answers were not 200")

    def close(self) -> None:
        self.upstream.terminate()
        self.upstream.wait(10)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(300)  # valgrind writes its profile on the way out
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def callgrind_total(bench: Bench, setup: Setup, count: int, out: Path, idle: float = 0.0) -> tuple[int, float]:
    """(instructions agfast executed from start to exit, seconds the counted part took): WARMUP requests,
    then `count` requests, or none and `idle` seconds of nothing."""
    prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    proc, port = bench.serve(setup, prefix)
    try:
        bench.send(setup, port, WARMUP)
        started = time.monotonic()
        bench.send(setup, port, count)
        time.sleep(idle)
        seconds = time.monotonic() - started
    finally:
        stop(proc)
    return parse_callgrind(out.read_bytes()), seconds


def parse_callgrind(data: bytes) -> int:
    """The total instruction count of a callgrind output file."""
    found = CALLGRIND_OUT.search(data)
    if found is None:
        raise RuntimeError("no summary line in the callgrind output")
    return int(found.group(1))


def measure_instructions(bench: Bench, rows: dict[str, Row], count: int) -> None:
    for setup in bench.setups:
        full, busy = callgrind_total(bench, setup, count, bench.work / f"{setup.name}-{count}.callgrind")
        # The 0 run idles as long as the N run served: what agfast does per second (its tick) cancels.
        base, _ = callgrind_total(bench, setup, 0, bench.work / f"{setup.name}-0.callgrind", idle=busy)
        rows[setup.name].instructions = (full - base) / count
        rows[setup.name].startup_instructions = base
        print(f"  {setup.name}: {(full - base) / count:,.0f} instructions/request (0 run: {base:,}, "
              f"{busy:.0f} s counted)", file=sys.stderr)  # fmt: skip


def measure_proc_cpu(bench: Bench, rows: dict[str, Row], rounds: int, count: int) -> None:
    running = [(setup, *bench.serve(setup)) for setup in bench.setups]
    try:
        for setup, _, port in running:
            bench.send(setup, port, WARMUP)
        for r in range(rounds):
            order = running[r % len(running) :] + running[: r % len(running)]
            for setup, proc, port in order:
                before = cpu_ns(proc.pid)
                bench.send(setup, port, count)
                rows[setup.name].cpu_rounds.append((cpu_ns(proc.pid) - before) / count / 1e3)
    finally:
        for _, proc, _ in running:
            stop(proc)
    for row in rows.values():
        row.cpu_us = statistics.median(row.cpu_rounds)


# -- the checks alone ---------------------------------------------------------------------------------------


def time_checks(work: Path, repeat: int) -> dict[str, float]:
    """µs per call of each check as the request path makes it, on the benchmark's own key file and rules."""
    from agfast.http.access import IpRules
    from agfast.http.auth import Authenticator
    from agfast.http.errors import Family
    from agfast.http.request import Request
    from agfast.keys import KeyPolicy, KeyStore
    from agfast.record import RequestRecord

    data_dir = work / "timeit"
    data_dir.mkdir()
    named = make_named_keys(data_dir)
    policy = KeyPolicy(KeyStore(data_dir))
    authenticator = Authenticator("strict", MAIN_KEY)
    authenticator.users = policy.admit
    rules = IpRules(ALLOW_RULES, DENY_RULES, [TRUSTED_PROXY])
    named_headers = {b"authorization": f"Bearer {named}".encode()}
    main_headers = {b"authorization": f"Bearer {MAIN_KEY}".encode()}
    forwarded = {b"x-forwarded-for": f"203.0.113.9, {FORWARDED_FOR}".encode()}
    req = Request(b"POST", "/v1/chat/completions", b"", forwarded)
    key = policy.store.by_digest[next(iter(policy.store.by_digest))]
    record = RequestRecord("bench", "POST", "/v1/chat/completions", "openai", FORWARDED_FOR, time.time())
    record.key_name, record.input_tokens, record.output_tokens = key.name, 12, 30
    assert authenticator.check(named_headers) == 0 and rules.screen(req, Family.OPENAI, TRUSTED_PROXY) is None

    def per_call(fn: Callable[[], object], number: int = 20_000) -> float:
        return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6

    def write_usage_back() -> None:
        policy._dirty = True
        policy.flush()

    return {
        "main key: compare": per_call(lambda: authenticator.check(main_headers)),
        "named key: hash + lookup + rpm window": per_call(lambda: authenticator.check(named_headers)),
        "named key: model patterns": per_call(lambda: policy.allows_model(key, MODEL)),
        "named key: tokens charged (observer)": per_call(lambda: policy.observe(record)),
        "IP screen, trusted proxy + X-Forwarded-For": per_call(lambda: rules.screen(req, Family.OPENAI, TRUSTED_PROXY)),
        # Not per request: once per FLUSH_EVERY seconds while keys are in use (the table shows it apart).
        WRITE_BACK: per_call(write_usage_back, number=50),
    }


# -- the report ---------------------------------------------------------------------------------------------


def added(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0:
        return "–"
    return f"{(value - base) / base * 100:+.2f}%"


def results_table(rows: list[Row], count: int, rounds: int, per_round: int) -> str:
    """The markdown table: per-request instructions and CPU, and what each configuration adds to `open`."""
    base = rows[0]
    lines = [
        f"| configuration | instructions/request (N={count}) | added | /proc CPU µs/request (median of {rounds} "
        f"× {per_round}) | added |",
        "|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        ins = f"{row.instructions:,.0f}" if row.instructions is not None else "–"
        cpu = f"{row.cpu_us:.1f}" if row.cpu_us is not None else "–"
        lines.append(
            f"| {row.name}: {row.label} | {ins} | {added(row.instructions, base.instructions)} | {cpu} | "
            f"{added(row.cpu_us, base.cpu_us)} |"
        )
    return "\n".join(lines)


def checks_table(checks: dict[str, float], per_request_us: float | None) -> str:
    """µs per check call, and its share of a whole request's CPU (open, /proc median)."""
    lines = ["| check (in process, best of timeit repeats) | µs/call | share of a request |", "|---|--:|--:|"]
    for name, us in checks.items():
        share = f"{us / per_request_us * 100:.2f}%" if per_request_us and name != WRITE_BACK else "–"
        lines.append(f"| {name} | {us:.2f} | {share} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="N: requests counted under callgrind")
    parser.add_argument("--rounds", type=int, default=30, help="/proc rounds (the median is reported)")
    parser.add_argument("--per-round", type=int, default=200, help="requests per server per /proc round")
    parser.add_argument("--quick", action="store_true", help="N=300, 10 rounds of 100")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the valgrind runs")
    parser.add_argument("--no-proc", action="store_true", help="skip the /proc rounds")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per row")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds, args.per_round = 300, 10, 100
    if min(args.requests, args.rounds, args.per_round) < 1:
        parser.error("--requests, --rounds and --per-round must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out, as Ctrl-C does
    env = environment()
    with tempfile.TemporaryDirectory(prefix="agfast-access-") as scratch:
        work = Path(scratch)
        bench = Bench(work)
        rows = {setup.name: Row(setup.name, setup.label) for setup in bench.setups}
        try:
            if not args.no_proc:
                print("/proc rounds …", file=sys.stderr)
                measure_proc_cpu(bench, rows, args.rounds, args.per_round)
            if not args.no_callgrind:
                print("callgrind runs …", file=sys.stderr)
                measure_instructions(bench, rows, args.requests)
        finally:
            bench.close()
        checks = time_checks(work, repeat=7)
    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n`python benchmarks/access_cost.py` — {env['cpu']} ({env['cores']} cores), python {env['python']}, "
          f"commit {env['commit']}, load average at the end {load_avg}\n")  # fmt: skip
    ordered = list(rows.values())
    print(results_table(ordered, args.requests, args.rounds, args.per_round))
    print()
    print(checks_table(checks, rows["open"].cpu_us))
    if args.json:
        for row in ordered:
            print(orjson.dumps({**asdict(row), **env}).decode())
        print(orjson.dumps({"checks_us": checks, **env}).decode())


if __name__ == "__main__":
    main()
