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
from typing import Any

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
# The soak stops here even short of its count (then its verdict is "not judged"): the whole --full run must fit
# in ~40 min; agfast streams ~1,000-1,800 req/s on the dev box, so 1M takes 10-17 min.
SOAK_MAX_SECONDS = 25 * 60.0
SOAK_RATE = 1000.0  # req/s assumed for the time budget
# An open stream is an error once it has run this much longer than the slow answer takes (20 × 0.25 s).
OPEN_STREAM_GRACE = 60.0
WARM_REQUESTS = 20
# The first request a proxy answers (before anything is measured) may take its lazy imports: LiteLLM's are long.
FIRST_ANSWER_SECONDS = 120.0
FIRST_ANSWER_SHOWN = 600  # bytes of a wrong first answer shown in the error
# For the time budget printed at start: seconds to start each target, ms per request one at a time (last --full).
START_SECONDS = {"nginx": 1.0, "agfast-c": 3.0, "agfast-py": 3.0, "portkey": 5.0, "litellm": 40.0}
ONE_AT_A_TIME_MS = {"nginx": 0.2, "agfast-c": 1.0, "agfast-py": 1.0, "portkey": 16.0, "litellm": 47.0}
SETTLE_SECONDS = 1.0
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
    """One proxy started in front of an upstream and shown to answer, stopped on exit.

    A proxy that does not start, or whose first request is not answered 200, raises targets.StartFailure
    naming it, the reason and its last output lines.
    """

    def __init__(self, target: str, upstream_port: int) -> None:
        self.work = Path(tempfile.mkdtemp(prefix=f"peers-{target}-"))
        try:
            self.running = targets.TARGETS[target](upstream_port, self.work)
        except BaseException:
            shutil.rmtree(self.work, ignore_errors=True)
            raise
        time.sleep(0.5)  # let start-up work settle before the idle reading
        self.idle_rss = measure.tree_rss_mib(self.running.proc.pid)  # before any request, as the README says
        try:
            first_answer_ok(target, self.running)
        except BaseException:
            self.__exit__()
            raise

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


def first_answer_ok(target: str, running: targets.Running) -> None:
    """One non-streaming request before anything is measured: a proxy that cannot answer it is not measured."""
    try:
        answer = measure.first_answer(running.port, running.request(False), FIRST_ANSWER_SECONDS)
    except OSError as exc:
        reason = f"its first request failed: {type(exc).__name__}: {exc}"
        raise targets.StartFailure(target, reason, running.log) from None
    if not answer.startswith(b"HTTP/1.1 200"):
        shown = answer[:FIRST_ANSWER_SHOWN].decode(errors="replace") or "(closed without an answer)"
        raise targets.StartFailure(target, f"its first request was not answered 200:\n{shown}", running.log)


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
    """A warm-up, then one measured wrk run per mode; peak RSS is read after both.

    A mode whose run completes fewer than measure.MIN_REQUESTS_PER_CONNECTION requests per connection is run
    again once, with fewer connections and longer (measure.retry_plan); the row keeps what the first run did.
    """
    pid, port = running.proc.pid, running.port
    for stream in modes:  # first requests one at a time: lazy imports and first-call set-up stay out of the run
        measure.one_at_a_time([(port, running.request(stream))], WARM_REQUESTS)
    measure.run_wrk(scripts[True], port, args.warmup, args.connections)
    rows = []
    for stream in modes:
        mode = "stream" if stream else "non-stream"
        load = measure.measure_load(pid, scripts[stream], port, args.duration, args.connections)
        first: dict[str, float] = {}
        plan = measure.retry_plan(load.requests, load.seconds, load.connections, args.duration)
        if plan is not None:
            connections, seconds = plan
            first = {"requests": load.requests, "errors": load.errors, "seconds": load.seconds,
                     "connections": load.connections, "cpu_ms_per_req": load.cpu_ms_per_req}  # fmt: skip
            progress(f"{name} {mode}: {load.requests} requests done at {load.connections} connections, "
                     f"measuring again at {connections} for {seconds:.0f} s")  # fmt: skip
            load = measure.measure_load(pid, scripts[stream], port, seconds, connections)
        rows.append(report.Row(name, label, mode, events, load.requests / max(load.seconds, 1e-9), load.p50_ms,
                               load.p99_ms, load.errors, load.cpu_ms_per_req, idle, 0.0, load.requests,
                               load.connections, load.seconds, load.settled, first))  # fmt: skip
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
    env["retry_rule"] = report.RULE
    progress(f"time budget: {budget_text(args)}")
    rows: list[report.Row] = []
    scenarios: list[report.Scenario] = []
    failures: dict[str, str] = {}
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
            progress(name)
            try:
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
                        rows += load_rows(name, targets.LABELS[name], session.running, session.idle_rss, scripts,
                                          args, 1, modes=(True,))  # fmt: skip
            except (RuntimeError, OSError) as exc:  # StartFailure, wrk without a summary, a peer hanging up
                failed(failures, name, exc)
    finally:
        for proc in (upstream, single):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    if args.streams:
        scenarios += open_streams(args, failures)
    if args.soak and "agfast-c" in args.target_list and "agfast-c" not in failures:
        try:
            scenarios.append(soak(args))
        except (RuntimeError, OSError) as exc:
            failed(failures, "agfast-c", exc)
    write(args, env, rows, scenarios, failures)
    progress(f"done in {(time.monotonic() - STARTED) / 60:.1f} min")
    return 1 if failures else 0


STARTED = time.monotonic()


def progress(what: str) -> None:
    """A line on stderr with the minutes since start, so a long run shows where it is."""
    print(f"… [{(time.monotonic() - STARTED) / 60:4.1f} min] {what}", file=sys.stderr, flush=True)


def failed(failures: dict[str, str], name: str, exc: Exception) -> None:
    """Record a target that could not be (fully) measured and say so now, in full; the run goes on without it."""
    if isinstance(exc, targets.StartFailure):
        reason = f"not measured: {exc.reason}"
    else:  # wrk printed no summary, a peer hung up on the one-at-a-time client, ...
        reason = f"stopped while measured: {type(exc).__name__}: {exc}"
    failures.setdefault(name, reason.splitlines()[0])
    print(f"\n*** {name}: {exc}\n", file=sys.stderr, flush=True)


def budget(args: argparse.Namespace) -> dict[str, float]:
    """Seconds each part of the run is expected to take on the 2-core dev box (an estimate, printed at start)."""
    per_target = {name: START_SECONDS.get(name, 5.0) for name in args.target_list}
    row = args.duration + SETTLE_SECONDS
    loads = args.warmup + 2 * row  # the upstream direct
    for name, start in per_target.items():  # agfast runs a second time, streaming only, against a 1-event upstream
        sessions, rows = (2, 3) if name.startswith("agfast") else (1, 2)
        loads += sessions * (start + args.warmup) + rows * row
    sequential = sum(2 * 1.1 * args.sequential * (ONE_AT_A_TIME_MS.get(name, 1.0) + 0.2) / 1000 for name in per_target)
    streams = len(per_target) * (args.events * SLOW_EVENT_GAP + 5) if args.streams else 0.0
    if args.streams and "litellm" in per_target:
        streams += args.events * SLOW_EVENT_GAP + OPEN_STREAM_GRACE  # it runs into the timeout
    soak_s = min(args.soak / SOAK_RATE, SOAK_MAX_SECONDS) if args.soak and "agfast-c" in per_target else 0.0
    return {"loads": loads, "one at a time": sequential, "open streams": streams, "soak": soak_s}


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f}" if seconds >= 600 else f"{seconds / 60:.1f}"


def budget_text(args: argparse.Namespace) -> str:
    parts = budget(args)
    shown = ", ".join(f"{name} {minutes(seconds)}" for name, seconds in parts.items() if seconds)
    return (f"~{minutes(sum(parts.values()))} min ({shown} min; a row short of requests adds up to "
            f"{measure.RETRY_MAX_SECONDS:.0f} s; the soak stops at {SOAK_MAX_SECONDS / 60:.0f} min)")  # fmt: skip


def open_streams(args: argparse.Namespace, failures: dict[str, str]) -> list[report.Scenario]:
    """Every target's open-streams scenario; each stream is given the slow answer's length plus a grace."""
    out = []
    slow, slow_port = targets.start_upstream(args.events, SLOW_EVENT_GAP)
    try:
        for name in args.target_list:
            if name in failures:
                continue
            progress(f"{name}: {args.streams} open streams")
            try:
                with Session(name, slow_port) as session:
                    t0 = time.monotonic()
                    timeout = args.events * SLOW_EVENT_GAP + OPEN_STREAM_GRACE
                    got = measure.open_streams(session.running.proc.pid, session.running.port,
                                               session.running.request(True), args.streams, timeout)  # fmt: skip
                    figures = {"streams": float(args.streams), "errors": float(got.errors)}
                    figures |= {name: float(count) for name, count in got.outcomes.items() if name != measure.DONE}
                    figures |= {"first byte": float(got.answered), "done p50 s": got.done_p50_s,
                                "idle RSS MiB": session.idle_rss, "peak RSS MiB": got.peak_rss_mib,
                                "seconds": time.monotonic() - t0}  # fmt: skip
                    out.append(report.Scenario("open streams", name, figures))
            except (RuntimeError, OSError) as exc:
                failed(failures, name, exc)
    finally:
        slow.terminate()
        slow.wait(10)
    return out


def soak(args: argparse.Namespace) -> report.Scenario:
    """agfast (compiled) streaming under wrk in rounds until args.soak requests or SOAK_MAX_SECONDS."""
    progress(f"agfast-c: soak of {args.soak} requests")
    upstream, up_port = targets.start_upstream(args.events)
    try:
        with Session("agfast-c", up_port) as session:
            pid, port, script = session.running.proc.pid, session.running.port, session.script(True)
            measure.run_wrk(script, port, args.warmup, args.connections)
            start_rss, cpu0 = measure.tree_rss_mib(pid), measure.tree_cpu_seconds(pid)
            done = errors = 0
            deadline = time.monotonic() + SOAK_MAX_SECONDS
            while done < args.soak and time.monotonic() < deadline:
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
    rows, scenarios, env, failures = [], [], {}, {}
    for line in args.render.read_text().splitlines():
        item = orjson.loads(line)
        kind = item.pop("kind")
        if kind == "row":
            rows.append(report.Row(**pop_fields(item, report.Row)))
        elif kind == "scenario":
            scenarios.append(report.Scenario(**pop_fields(item, report.Scenario)))
        elif kind == "failure":
            failures[item.pop("target")] = item.pop("reason")
        env = item
    write(args, env, rows, scenarios, failures)
    return 0


def pop_fields(item: dict[str, Any], kind: Any) -> dict[str, Any]:
    """The dataclass's fields found in a JSON line (a line from an older run lacks the newer ones: defaults)."""
    return {k: item.pop(k) for k in kind.__dataclass_fields__ if k in item}


def write(args: argparse.Namespace, env: dict[str, str], rows: list[report.Row], scenarios: list[report.Scenario],
          failures: dict[str, str]) -> None:  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = args.out / f"peers-{stamp}"
    machine = f"{env['cpu']} ({env['cores']} cores)"
    title = f"CPU per request, {args.connections} connections — {machine}, commit {env['commit']}, {env['date']}"
    versions = ", ".join(f"{k} {env[k]}" for k in ("python", "nginx", "wrk", "node", "portkey", "hono_node_server",
                                                       "litellm", "aiohttp", "uvloop") if env.get(k))  # fmt: skip
    command = env.get("command") or shown_command(sys.argv[1:])
    notes = report.retry_notes(rows) + [f"**{name}** {reason}" for name, reason in failures.items()]
    text = "\n".join([
        f"### Peer comparison, {env['date']}",
        "",
        f"`{command.strip()}` — {machine}, commit {env['commit']}, load average at start {env['loadavg_at_start']}, "
        f"network: {env['network']}. wrk: 1 thread, {args.connections} connections, {args.duration:.0f} s per row "
        f"after a {args.warmup:.0f} s warm-up; upstream answers are {args.events} SSE events, each in its own write. "
        f"{report.RULE}",
        "",
        f"Versions: {versions}.",
        "",
        report.markdown_table(rows),
        *(["", *(f"- {note}" for note in notes)] if notes else []),
        "",
        report.verdict_table(report.verdicts(rows, scenarios, args.events)),
        report.scenario_table(scenarios),
        "",
    ])  # fmt: skip
    base.with_suffix(".md").write_text(text)
    jsonl = report.json_lines(rows, scenarios, env, failures)
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
    try:
        return run(args)
    except targets.StartFailure as exc:  # the upstream itself: nothing can be measured without it
        print(f"\n*** the run stopped: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
