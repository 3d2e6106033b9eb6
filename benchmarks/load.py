"""Load generator: requests/s, latency percentiles and server CPU per request, side by side.

    python benchmarks/load.py                          # every scenario
    python benchmarks/load.py healthz --duration 20    # one scenario, longer
    python benchmarks/load.py gemini-stream --json

Scenarios (each row runs in its own server process; the table is normalised to the best CPU/request):
  healthz         GET /healthz at 64 connections: agfast (c), agfast (py), agfast (c) with IP rules, naive h11;
                  and with strict auth: the main key with no named keys, then with BENCH_KEYS named keys
                  configured (main key, and a named key: hash + lookup + rpm window)
  gemini          POST :generateContent through agfast (upstream streamed, collected) vs the simulator's
                  own v1internal :generateContent called directly
  gemini-stream   POST :streamGenerateContent?alt=sse through agfast vs the simulator's SSE directly
  openai-stream   POST /v1/chat/completions (stream) through agfast, full conversion, vs the simulator's SSE
  anthropic-stream POST /v1/messages (stream) through agfast, full conversion, vs the simulator's SSE

"server CPU µs/req" is read from /proc for the server process alone (for proxied rows: agfast, not the
simulator behind it), so it does not depend on how fast this Python client is. Client and servers share the
machine's cores, so requests/s is a floor. Each run records versions, commit and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHUNKED_END = b"\r\n0\r\n\r\n"
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Benchmark prompt: say something short please"}]}]}
SIM_REFRESH = "1//sim-refresh-demo1"


@dataclass
class Result:
    scenario: str
    target: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us_per_req: float


class Client(asyncio.Protocol):
    """Keep-alive HTTP/1.1 client: Content-Length or chunked framing, one request in flight."""

    def __init__(self, request: bytes, latencies: list[float], stop_at: float) -> None:
        self.request = request
        self.latencies = latencies
        self.stop_at = stop_at
        self.buf = b""
        self.sent = 0.0
        self.errors = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.sent = time.perf_counter()
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            if b"transfer-encoding: chunked" in head:
                stop = self.buf.find(CHUNKED_END, end)
                if stop < 0:
                    return
                consumed = stop + len(CHUNKED_END)
            else:
                start = head.find(b"content-length:")
                line_end = head.find(b"\r\n", start)
                length = int(head[start + 15 : line_end if line_end >= 0 else len(head)]) if start >= 0 else 0
                if len(self.buf) < end + 4 + length:
                    return
                consumed = end + 4 + length
            if not head.startswith(b"http/1.1 200"):
                self.errors += 1
            self.buf = self.buf[consumed:]
            now = time.perf_counter()
            self.latencies.append(now - self.sent)
            if now >= self.stop_at:
                self.transport.close()  # type: ignore[union-attr]
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def drive(port: int, request: bytes, connections: int, duration: float, warmup: float) -> tuple[list[float], int]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    stop_at = time.perf_counter() + warmup + duration
    clients = []
    for _ in range(connections):
        _, proto = await loop.create_connection(lambda: Client(request, latencies, stop_at), "127.0.0.1", port)
        clients.append(proto)
    await asyncio.sleep(warmup)
    latencies.clear()
    await asyncio.gather(*(c.done for c in clients))
    return latencies, sum(c.errors for c in clients)


def http_request(method: str, path: str, port: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = LISTENING.search(line)
        if found:
            return proc, int(found.group(1))
    raise RuntimeError(f"{cmd} did not start")


def measure(
    scenario: str, name: str, proc: subprocess.Popen[str], request: bytes, port: int, args: argparse.Namespace
) -> Result:
    cpu0 = cpu_seconds(proc.pid)
    t0 = time.perf_counter()
    latencies, errors = uvloop.run(drive(port, request, args.connections, args.duration, args.warmup))
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(proc.pid) - cpu0
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(n * p))] * 1000 if n else 0.0

    # CPU is sampled over warm-up + run; requests are counted over the run only, so scale by time.
    timed_share = args.duration / max(elapsed, 1e-9)
    return Result(
        scenario, name, n, errors, args.duration, n / args.duration, pct(0.5), pct(0.9), pct(0.99),
        latencies[-1] * 1000 if n else 0.0, cpu * timed_share / max(n, 1) * 1e6,
    )  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without agfast's settings (nor a multiprocess metrics dir): the run configures both."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGFAST_", "PROMETHEUS_"))}
    env.update(extra)
    return env


def upstream_env(upstream_port: int, **extra: str) -> dict[str, str]:
    """agfast's environment pointing every Google call (v1internal, token, userinfo) at a simulator's port."""
    base = f"http://127.0.0.1:{upstream_port}"
    return clean_env(
        AGFAST_UPSTREAM_ENDPOINTS=f"{base}/v1internal",
        AGFAST_OAUTH_TOKEN_URL=f"{base}/token",
        AGFAST_USERINFO_URL=f"{base}/oauth2/v2/userinfo",
        AGFAST_OAUTH_CLIENT_ID="bench",
        AGFAST_OAUTH_CLIENT_SECRET="bench",
        **extra,
    )


def agfast_cmd(data_dir: str) -> list[str]:
    return [sys.executable, "-m", "agfast", "--port", "0", "--data-dir", data_dir, "--auth-mode", "off",
            "--log-level", "warning"]  # fmt: skip


def run_target(
    scenario: str, name: str, cmd: list[str], env: dict[str, str], make_request: Callable[[int], bytes],
    args: argparse.Namespace,
) -> Result:  # fmt: skip
    proc, port = start(cmd, env)
    try:
        return measure(scenario, name, proc, make_request(port), port, args)
    finally:
        proc.terminate()
        proc.wait(10)


# A typical LAN rule set: what the "+ IP rules" row pays per request against the plain one.
IP_RULES = {
    "AGFAST_SECURITY_IP_ALLOW": "192.168.0.0/16,10.0.0.0/8,fd00::/8,127.0.0.1",
    "AGFAST_SECURITY_IP_DENY": "192.168.1.66,10.9.0.0/16",
    "AGFAST_SECURITY_TRUSTED_PROXIES": "10.0.0.1",
}


# Named keys configured for the "+ named keys" rows: a household's or a small team's worth, and more.
BENCH_KEYS = 50
BENCH_MAIN_KEY = "sk-bench-main-key-0123456789"


def strict_cmd(data_dir: str) -> list[str]:
    return [*agfast_cmd(data_dir)[:-4], "--auth-mode", "strict", "--api-key", BENCH_MAIN_KEY, "--log-level", "warning"]


def keyed(key: str) -> Callable[[int], bytes]:
    return lambda port: http_request("GET", "/healthz", port, headers={"Authorization": f"Bearer {key}"})


def scenario_healthz(args: argparse.Namespace) -> list[Result]:
    data_dir = tempfile.mkdtemp(prefix="agfast-bench-")
    seed = clean_env(
        AGFAST_UPSTREAM_ENDPOINTS="http://127.0.0.1:9/v1internal", AGFAST_OAUTH_TOKEN_URL="http://127.0.0.1:9/t"
    )
    sys.path.insert(0, str(ROOT))
    from agfast.upstream.accounts import AccountStore

    AccountStore(Path(data_dir)).upsert("bench@example.com", "1//bench", access_token="ya29.x", expires_in=3600)
    get = lambda port: http_request("GET", "/healthz", port)  # noqa: E731
    from agfast.keys import KeyStore

    keys_dir = tempfile.mkdtemp(prefix="agfast-bench-keys-")
    AccountStore(Path(keys_dir)).upsert("bench@example.com", "1//bench", access_token="ya29.x", expires_in=3600)
    store = KeyStore(Path(keys_dir))
    named = [store.add({"name": f"bench-{i}", "rpm": 10**9, "tpd": 10**12}, time.time())[1] for i in range(BENCH_KEYS)]
    return [
        run_target("healthz", "agfast (c) strict, main key", strict_cmd(data_dir), seed, keyed(BENCH_MAIN_KEY), args),
        run_target(
            "healthz",
            f"agfast (c) strict + {BENCH_KEYS} keys, main key",
            strict_cmd(keys_dir),
            seed,
            keyed(BENCH_MAIN_KEY),
            args,
        ),
        run_target(
            "healthz",
            f"agfast (c) strict + {BENCH_KEYS} keys, named key",
            strict_cmd(keys_dir),
            seed,
            keyed(named[-1]),
            args,
        ),
        run_target("healthz", "agfast (c)", agfast_cmd(data_dir), seed, get, args),
        run_target("healthz", "agfast (py)", agfast_cmd(data_dir), {**seed, "AGFAST_NO_EXTENSIONS": "1"}, get, args),
        run_target("healthz", "agfast (c) + IP rules", agfast_cmd(data_dir), {**seed, **IP_RULES}, get, args),
        run_target(
            "healthz", "naive h11", [sys.executable, str(ROOT / "benchmarks" / "baseline_h11.py")], seed, get, args
        ),
    ]


GEMINI_VIA = {
    False: ("/v1beta/models/gemini-3-flash:generateContent", PROMPT),
    True: ("/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse", PROMPT),
}
OPENAI_CHAT = {
    "model": "gemini-3-flash",
    "stream": True,
    "messages": [{"role": "user", "content": "Benchmark prompt: say something short please"}],
}
ANTHROPIC_MESSAGES = {
    "model": "gemini-3-flash",
    "max_tokens": 1024,
    "stream": True,
    "messages": [{"role": "user", "content": "Benchmark prompt: say something short please"}],
}


def _proxied(
    args: argparse.Namespace, scenario: str, stream: bool, via_path: str | None = None, via_body: object = None
) -> list[Result]:
    sim, sim_port = start(
        [sys.executable, "-m", "agfast", "sim", "--port", "0", "--chunks", str(args.chunks)], clean_env()
    )
    try:
        base = f"http://127.0.0.1:{sim_port}"
        env = upstream_env(sim_port)
        data_dir = tempfile.mkdtemp(prefix="agfast-bench-")
        subprocess.run([sys.executable, "-m", "agfast", "accounts", "add", "--refresh-token", SIM_REFRESH,
                        "--data-dir", data_dir], env=env, check=True, capture_output=True, cwd=ROOT)  # fmt: skip
        form = urllib.parse.urlencode(
            {"grant_type": "refresh_token", "refresh_token": SIM_REFRESH, "client_id": "b", "client_secret": "b"}
        ).encode()
        with urllib.request.urlopen(f"{base}/token", form) as fh:
            token = orjson.loads(fh.read())["access_token"]
        envelope = orjson.dumps(
            {
                "project": "sim-project-demo1",
                "requestId": "agent/bench/1",
                "model": "gemini-3-flash",
                "userAgent": "antigravity",
                "requestType": "agent",
                "request": PROMPT,
            }
        )
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        direct = http_request("POST", f"/v1internal:{action}", sim_port, envelope, {"Authorization": f"Bearer {token}"})
        path, payload = (via_path, via_body) if via_path else GEMINI_VIA[stream]
        body = orjson.dumps(payload)
        via = lambda port: http_request("POST", path, port, body)  # noqa: E731
        monitor_off = {**env, "AGFAST_MONITOR_ENABLED": "false"}
        results = [
            run_target(scenario, "agfast (c)", agfast_cmd(data_dir), env, via, args),
            # The Proxy Monitor is on by default: this row is what it costs (issue 11's bound: ≤ 10%).
            run_target(scenario, "agfast (c), monitor off", agfast_cmd(data_dir), monitor_off, via, args),
            run_target(scenario, "agfast (py)", agfast_cmd(data_dir), {**env, "AGFAST_NO_EXTENSIONS": "1"}, via, args),
        ]
        results.append(measure(scenario, "simulator direct", sim, direct, sim_port, args))
        return results
    finally:
        sim.terminate()
        sim.wait(10)


SCENARIOS: dict[str, Callable[[argparse.Namespace], list[Result]]] = {
    "healthz": scenario_healthz,
    "gemini": lambda args: _proxied(args, "gemini", stream=False),
    "gemini-stream": lambda args: _proxied(args, "gemini-stream", stream=True),
    "openai-stream": lambda args: _proxied(args, "openai-stream", True, "/v1/chat/completions", OPENAI_CHAT),
    "anthropic-stream": lambda args: _proxied(args, "anthropic-stream", True, "/v1/messages", ANTHROPIC_MESSAGES),
}


def environment() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "",
    )
    import aiohttp
    import h11

    return {
        "commit": commit.strip(), "python": platform.python_version(), "h11": h11.__version__,
        "uvloop": uvloop.__version__, "orjson": orjson.__version__, "aiohttp": aiohttp.__version__,
        "cpu": cpu, "cores": str(os.cpu_count()),
    }  # fmt: skip


def report(results: list[Result], args: argparse.Namespace, env: dict[str, str]) -> None:
    scenario = results[0].scenario
    best = min(r.server_cpu_us_per_req for r in results)
    print(f"\n{scenario}: {args.connections} connections, {args.duration:.0f} s per row — {env['cpu']} "
          f"({env['cores']} cores), python {env['python']}, commit {env['commit']}")  # fmt: skip
    print(f"{'target':<18}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'CPU µs/req':>12}{'vs best':>9}{'errors':>8}")  # fmt: skip
    for r in results:
        print(f"{r.target:<18}{r.rps:>9.0f}{r.p50_ms:>9.2f}{r.p90_ms:>9.2f}{r.p99_ms:>9.2f}{r.max_ms:>9.2f}"
              f"{r.server_cpu_us_per_req:>12.1f}{r.server_cpu_us_per_req / best:>9.2f}{r.errors:>8}")  # fmt: skip
    if args.json:
        for r in results:
            print(orjson.dumps({**asdict(r), **env}).decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--chunks", type=int, default=3, help="SSE chunks per simulated answer")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per result")
    args = parser.parse_args()
    env = environment()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    for name in args.scenarios or list(SCENARIOS):
        report(SCENARIOS[name](args), args, env)


if __name__ == "__main__":
    main()
