"""Peer comparison: agfast next to nginx, Portkey and LiteLLM in front of the same fast upstream, in one run.

    python benchmarks/peers --quick        # a few minutes: short loads, small scenarios
    python benchmarks/peers                # the table at full length, bounded scenarios
    python benchmarks/peers --full         # plus 2,000 open streams and a 1M-request soak

Installs what it needs first (apt-get nginx-light and wrk, npm Portkey, a LiteLLM venv: run as root), then
runs everything inside `unshare -n` (a network namespace with only loopback) so nothing can leave the machine.
Writes benchmarks/results/peers-<time>.{md,jsonl,png} and prints the markdown.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

if __package__ in (None, ""):  # run as `python benchmarks/peers`: make `peers` and `load` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "peers"

from peers import install, measure, report, targets

RESULTS = install.ROOT / "benchmarks" / "results"
TARGET_ORDER = ("nginx", "agfast-c", "agfast-py", "portkey", "litellm")
# Slow streams: this many seconds between events, so a 20-event stream stays open ~5 s while all are opened.
SLOW_EVENT_GAP = 0.25
SOAK_ROUND_SECONDS = 10
WARM_REQUESTS = 20
# (load seconds, warm-up seconds, one-at-a-time requests, open streams, soak requests) per size.
SIZES = {
    "quick": (3.0, 1.0, 200, 200, 20_000),
    "default": (10.0, 2.0, 1000, 500, 100_000),
    "full": (10.0, 2.0, 2000, 2000, 1_000_000),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/peers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short loads and small scenarios")
    size.add_argument("--full", action="store_true", help="2,000 open streams and a 1M-request soak")
    parser.add_argument("--targets", default=",".join(TARGET_ORDER), help="comma list (default: %(default)s)")
    parser.add_argument("--events", type=int, default=20, help="SSE events per upstream answer (default: 20)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default: 64)")
    parser.add_argument("--duration", type=float, help="seconds per load run (size default)")
    parser.add_argument("--one-at-a-time", type=int, dest="sequential", help="requests one at a time; 0 skips")
    parser.add_argument("--streams", type=int, help="slow streams opened at once; 0 skips")
    parser.add_argument("--soak", type=int, help="requests in agfast's soak; 0 skips")
    parser.add_argument("--json", action="store_true", help="also print the JSON lines")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go (default: benchmarks/results)")
    parser.add_argument("--no-install", action="store_true", help="use what is installed; install nothing")
    parser.add_argument("--no-netns", action="store_true", help="do not enter a loopback-only network namespace")
    parser.add_argument("--render", type=Path, help="only redo the tables and chart from a run's .jsonl")
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    load_s, warmup_s, sequential, streams, soak = SIZES["quick" if args.quick else "full" if args.full else "default"]
    args.duration = args.duration or load_s
    args.warmup = warmup_s
    args.sequential = sequential if args.sequential is None else args.sequential
    args.streams = streams if args.streams is None else args.streams
    args.soak = soak if args.soak is None else args.soak
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.target_list) - set(TARGET_ORDER)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))} (choose from {', '.join(TARGET_ORDER)})")
    return args


def reexec_in_netns(argv: list[str]) -> int:
    """Run this same command again inside `unshare -n`, with loopback up and nothing else."""
    inner = [sys.executable, str(Path(__file__).resolve().parent), *argv, "--in-netns", "--no-install"]
    cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *inner]
    return subprocess.run(cmd, check=False).returncode


def environment(netns: bool) -> dict[str, str]:
    from load import environment as base

    env = base()
    env.update(install.versions())
    env["loadavg_at_start"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    env["network"] = "unshare -n (loopback only)" if netns else "host loopback"
    env["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return env


class Session:
    """One proxy started in front of an upstream, stopped on exit."""

    def __init__(self, target: str, upstream_port: int) -> None:
        self.work = Path(tempfile.mkdtemp(prefix=f"peers-{target}-"))
        self.running = targets.TARGETS[target](upstream_port, self.work)
        time.sleep(0.5)  # let start-up work settle before the idle reading
        self.idle_rss = measure.tree_rss_mib(self.running.proc.pid)

    def script(self, stream: bool) -> Path:
        path = self.work / ("stream.lua" if stream else "plain.lua")
        r = self.running
        path.write_text(measure.wrk_script(r.path, targets.chat_body(stream), r.headers))
        return path

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.running.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def load_rows(
    name: str,
    label: str,
    running: targets.Running,
    idle: float,
    scripts: dict[bool, Path],
    args: argparse.Namespace,
    events: int,
    modes: tuple[bool, ...] = (False, True),
) -> list[report.Row]:
    """A warm-up, then one measured wrk run per mode; peak RSS is read after both."""
    pid, port = running.proc.pid, running.port
    for stream in modes:  # first requests one at a time: lazy imports and first-call set-up stay out of the run
        measure.one_at_a_time([(port, running.request(stream))], WARM_REQUESTS)
    measure.run_wrk(scripts[True], port, args.warmup, args.connections)
    rows = []
    for stream in modes:
        load = measure.measure_load(pid, scripts[stream], port, args.duration, args.connections)
        rows.append(report.Row(name, label, "stream" if stream else "non-stream", events, load.requests / load.seconds,
                               load.p50_ms, load.p99_ms, load.errors, load.cpu_ms_per_req, idle, 0.0,
                               load.requests))  # fmt: skip
    peak = measure.tree_peak_rss_mib(pid)
    for row in rows:
        row.peak_rss_mib = peak
    return rows


def one_at_a_time(running: targets.Running, direct: targets.Running, count: int) -> dict[str, float]:
    """Latency one request at a time, taking turns with the upstream direct; added = proxy − direct.

    agfast's direct twin is the v1internal stream it fetches for either mode; the others' is the same OpenAI
    request sent straight to the upstream.
    """
    measure.settle(running.proc.pid)  # a slow proxy may still be answering the load run's last requests
    out: dict[str, float] = {"errors": 0.0}
    for stream in (False, True):
        mode = "stream" if stream else "non-stream"
        clients = [(running.port, running.request(stream)), (direct.port, direct.request(stream))]
        measure.one_at_a_time(clients, max(20, count // 10))  # warm-up
        proxy, base = measure.one_at_a_time(clients, count)
        out["errors"] += proxy.errors
        for name, p in (("p50", 0.5), ("p99", 0.99)):
            out[f"{mode} {name} ms"] = measure.percentile(proxy.latencies, p)
            out[f"{mode} added {name} ms"] = out[f"{mode} {name} ms"] - measure.percentile(base.latencies, p)
        if stream:
            out["TTFB p50 ms"] = measure.percentile(proxy.firsts, 0.5)
            out["TTFB p99 ms"] = measure.percentile(proxy.firsts, 0.99)
    return out


def run(args: argparse.Namespace) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of open streams need the fds
    env = environment(args.in_netns)
    env["command"] = shown_command(sys.argv[1:])
    rows: list[report.Row] = []
    scenarios: list[report.Scenario] = []
    upstream, up_port = targets.start_upstream(args.events)
    single, single_port = targets.start_upstream(1)
    work = Path(tempfile.mkdtemp(prefix="peers-direct-"))
    try:
        direct = targets.direct(upstream, up_port, "openai")
        scripts = {s: work / f"{s}.lua" for s in (False, True)}
        for s, path in scripts.items():
            path.write_text(measure.wrk_script(direct.path, targets.chat_body(s), direct.headers))
        rows += load_rows("direct", targets.LABELS["direct"], direct, measure.tree_rss_mib(upstream.pid), scripts,
                          args, args.events)  # fmt: skip
        v1internal = targets.direct(upstream, up_port, "v1internal")
        for name in args.target_list:
            print(f"… {name}", file=sys.stderr, flush=True)
            with Session(name, up_port) as session:
                scripts = {s: session.script(s) for s in (False, True)}
                rows += load_rows(name, targets.LABELS[name], session.running, session.idle_rss, scripts, args,
                                  args.events)  # fmt: skip
                if args.sequential:
                    twin = v1internal if name.startswith("agfast") else direct
                    figures = one_at_a_time(session.running, twin, args.sequential)
                    scenarios.append(report.Scenario("one at a time", name, figures))
            if name.startswith("agfast"):
                with Session(name, single_port) as session:
                    scripts = {s: session.script(s) for s in (False, True)}
                    rows += load_rows(name, targets.LABELS[name], session.running, session.idle_rss, scripts, args,
                                      1, modes=(True,))  # fmt: skip
    finally:
        for proc in (upstream, single):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    if args.streams:
        scenarios += open_streams(args)
    if args.soak and "agfast-c" in args.target_list:
        scenarios.append(soak(args))
    write(args, env, rows, scenarios)
    return 0


def open_streams(args: argparse.Namespace) -> list[report.Scenario]:
    out = []
    slow, slow_port = targets.start_upstream(args.events, SLOW_EVENT_GAP)
    try:
        for name in args.target_list:
            print(f"… {name}: {args.streams} open streams", file=sys.stderr, flush=True)
            with Session(name, slow_port) as session:
                t0 = time.monotonic()
                timeout = args.events * SLOW_EVENT_GAP + 60
                errors, peak = measure.open_streams(session.running.proc.pid, session.running.port,
                                                    session.running.request(True), args.streams, timeout)  # fmt: skip
                figures = {"streams": float(args.streams), "errors": float(errors), "idle RSS MiB": session.idle_rss,
                           "peak RSS MiB": peak, "seconds": time.monotonic() - t0}  # fmt: skip
                out.append(report.Scenario("open streams", name, figures))
    finally:
        slow.terminate()
        slow.wait(10)
    return out


def soak(args: argparse.Namespace) -> report.Scenario:
    print(f"… agfast-c: soak of {args.soak} requests", file=sys.stderr, flush=True)
    upstream, up_port = targets.start_upstream(args.events)
    try:
        with Session("agfast-c", up_port) as session:
            pid, port, script = session.running.proc.pid, session.running.port, session.script(True)
            measure.run_wrk(script, port, args.warmup, args.connections)
            start_rss, cpu0 = measure.tree_rss_mib(pid), measure.tree_cpu_seconds(pid)
            done = errors = 0
            while done < args.soak:
                summary = measure.run_wrk(script, port, SOAK_ROUND_SECONDS, args.connections)
                done += summary["requests"]
                errors += summary["status"] + summary["connect"] + summary["read"] + summary["write"]
            end_rss = measure.tree_rss_mib(pid)
            cpu = measure.tree_cpu_seconds(pid) - cpu0
    finally:
        upstream.terminate()
        upstream.wait(10)
    return report.Scenario("soak", "agfast-c", {
        "requests": float(done), "errors": float(errors), "RSS start MiB": start_rss, "RSS end MiB": end_rss,
        "RSS growth %": (end_rss / start_rss - 1) * 100 if start_rss else 0.0, "CPU ms/req": cpu / max(done, 1) * 1000,
    })  # fmt: skip


def shown_command(argv: list[str]) -> str:
    """The command as a reader would type it: without the internal flags, or --render and its file."""
    hidden, shown = {"--in-netns", "--no-install"}, []
    skip = False
    for arg in argv:
        if skip or arg in hidden:
            skip = False
            continue
        if arg == "--render":
            skip = True
            continue
        shown.append(arg)
    return " ".join(["python benchmarks/peers", *shown])


def render(args: argparse.Namespace) -> int:
    """Tables and chart again from a run's JSON lines (e.g. after a change to how results are shown)."""
    rows, scenarios, env = [], [], {}
    for line in args.render.read_text().splitlines():
        item = orjson.loads(line)
        kind = item.pop("kind")
        if kind == "row":
            rows.append(report.Row(**{k: item.pop(k) for k in report.Row.__dataclass_fields__}))
        else:
            scenarios.append(report.Scenario(**{k: item.pop(k) for k in report.Scenario.__dataclass_fields__}))
        env = item
    write(args, env, rows, scenarios)
    return 0


def write(args: argparse.Namespace, env: dict[str, str], rows: list[report.Row],
          scenarios: list[report.Scenario]) -> None:  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = args.out / f"peers-{stamp}"
    machine = f"{env['cpu']} ({env['cores']} cores)"
    title = f"CPU per request, {args.connections} connections — {machine}, commit {env['commit']}, {env['date']}"
    versions = ", ".join(f"{k} {env[k]}" for k in ("python", "nginx", "wrk", "node", "portkey", "hono_node_server",
                                                       "litellm", "aiohttp", "uvloop") if env.get(k))  # fmt: skip
    command = env.get("command") or shown_command(sys.argv[1:])
    text = "\n".join([
        f"### Peer comparison, {env['date']}",
        "",
        f"`{command.strip()}` — {machine}, commit {env['commit']}, load average at start {env['loadavg_at_start']}, "
        f"network: {env['network']}. wrk: 1 thread, {args.connections} connections, {args.duration:.0f} s per row "
        f"after a {args.warmup:.0f} s warm-up; upstream answers are {args.events} SSE events, each in its own write.",
        "",
        f"Versions: {versions}.",
        "",
        report.markdown_table(rows),
        "",
        report.verdict_table(report.verdicts(rows, scenarios, args.events)),
        report.scenario_table(scenarios),
        "",
    ])  # fmt: skip
    base.with_suffix(".md").write_text(text)
    jsonl = report.json_lines(rows, scenarios, env)
    base.with_suffix(".jsonl").write_text(jsonl + "\n")
    report.chart(rows, args.events, base.with_suffix(".png"), title)
    print(text)
    if args.json:
        print(jsonl)
    print(f"written: {base}.md, .jsonl, .png", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    if args.render:
        return render(args)
    if not args.in_netns:
        if not args.no_install:
            install.ensure_all(set(args.target_list))
        if not args.no_netns and shutil.which("unshare") and os.geteuid() == 0:
            return reexec_in_netns([a for a in raw if a != "--no-install"])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
