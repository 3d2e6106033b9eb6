"""The peer comparison's output: one markdown table, JSON lines, the issue's targets marked met or not, a chart."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .measure import MIN_REQUESTS_PER_CONNECTION as MIN_PER_CONNECTION
from .measure import RETRY_CONNECTIONS, RETRY_MAX_SECONDS

FLOOR = "nginx"
AGFAST = "agfast-c"


@dataclass(slots=True)
class Row:
    """One proxy under one load (mode "non-stream" or "stream"; `events` upstream SSE events per answer)."""

    target: str
    label: str
    mode: str
    events: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_req: float
    idle_rss_mib: float
    peak_rss_mib: float
    requests: int = 0
    connections: int = 0  # wrk's connections for this row (0: not recorded, runs before the retry rule)
    seconds: float = 0.0
    settled: bool = True  # False: the proxy was still busy with an earlier run's requests when this one began
    # When the row's first run completed too few requests (see measure.retry_plan), what that run did: the row's
    # other figures are its second run's.
    first_run: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Scenario:
    """An extra scenario's figures for one target (latency one at a time, open streams, soak)."""

    name: str
    target: str
    figures: dict[str, float] = field(default_factory=dict)


def _fmt(value: float) -> str:
    if value == int(value):
        return str(int(value))
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown_table(rows: list[Row]) -> str:
    """Rows grouped by target; "× nginx" is CPU per request over nginx's in the same mode and event count."""
    floor = {(r.mode, r.events): r.cpu_ms_per_req for r in rows if r.target == FLOOR}
    head = (
        "| proxy | mode | upstream events | CPU ms/req | × nginx | req/s | p50 ms | p99 ms | errors "
        "| idle RSS MiB | peak RSS MiB |"
    )
    out = [head, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        base = floor.get((r.mode, r.events))
        ratio = f"{r.cpu_ms_per_req / base:.1f}×" if base and r.requests else "–"
        cpu = _fmt(r.cpu_ms_per_req) if r.requests else "no request done"
        mode = f"{r.mode} †" if r.first_run else r.mode
        out.append(
            f"| {r.label} | {mode} | {r.events} | {cpu} | {ratio} | {r.rps:.0f} | "
            f"{_fmt(r.p50_ms)} | {_fmt(r.p99_ms)} | {r.errors} | {r.idle_rss_mib:.0f} | {r.peak_rss_mib:.0f} |"
        )
    return "\n".join(out)


# The rule, as the table's notes state it (measure.retry_plan applies it).
RULE = (
    f"A row that completes fewer than {MIN_PER_CONNECTION} requests per connection is measured once more with "
    f"{RETRY_CONNECTIONS} connections, for as long as its first rate says {MIN_PER_CONNECTION} per connection take "
    f"(at least the row's length, at most {RETRY_MAX_SECONDS:.0f} s); such rows are marked † and their first run "
    "is listed under the table and kept in the JSON (`first_run`)."
)


def retry_notes(rows: list[Row]) -> list[str]:
    """One line per row measured twice (†), saying what its first run did and what the shown run was."""
    out = []
    for r in rows:
        if not r.first_run:
            continue
        first = r.first_run
        line = (
            f"† {r.label}, {r.mode}: its first run ({first['connections']:.0f} connections, {first['seconds']:.0f} s) "
            f"completed {first['requests']:.0f} requests with {first['errors']:.0f} errors, fewer than "
            f"{MIN_PER_CONNECTION} per connection; the row is its second run, {r.connections} connections for "
            f"{r.seconds:.0f} s"
        )
        if r.requests < MIN_PER_CONNECTION * r.connections:
            line += f", which still completed only {r.requests} (its CPU per request is an over-estimate)"
        out.append(line + ".")
    for r in rows:
        if not r.settled:
            out.append(f"{r.label}, {r.mode}: still busy with earlier requests after 60 s when its run began.")
    return out


def scenario_table(scenarios: list[Scenario]) -> str:
    out = []
    for name in dict.fromkeys(s.name for s in scenarios):
        group = [s for s in scenarios if s.name == name]
        keys = list(dict.fromkeys(k for s in group for k in s.figures))
        out.append(f"\n{name}\n")
        out.append("| target | " + " | ".join(keys) + " |")
        out.append("|---|" + "--:|" * len(keys))
        for s in group:
            out.append(
                f"| {s.target} | " + " | ".join(_fmt(s.figures[k]) if k in s.figures else "–" for k in keys) + " |"
            )
    return "\n".join(out)


def _cpu(rows: list[Row], target: str, mode: str, events: int) -> float | None:
    """CPU ms/req of that row; None when absent or when no request completed (then there is no per-request)."""
    found = (r.cpu_ms_per_req for r in rows if (r.target, r.mode, r.events) == (target, mode, events) and r.requests)
    return next(found, None)


def _figure(scenarios: list[Scenario], name: str, target: str, key: str) -> float | None:
    return next((s.figures.get(key) for s in scenarios if s.name == name and s.target == target), None)


def verdicts(rows: list[Row], scenarios: list[Scenario], events: int) -> list[tuple[str, str, bool | None]]:
    """(goal, figure, met) for each of issue 14's targets; met is None when this run did not measure it."""
    out: list[tuple[str, str, bool | None]] = []

    def ratio(goal: str, a: float | None, b: float | None, limit: float, at_most: bool) -> None:
        if a is None or b is None or b == 0:
            out.append((goal, "not measured", None))
            return
        value = a / b
        out.append((goal, f"{value:.1f}×", value <= limit if at_most else value >= limit))

    ratio("CPU/req ≤ 8× nginx, non-stream", _cpu(rows, AGFAST, "non-stream", events),
          _cpu(rows, FLOOR, "non-stream", events), 8, True)  # fmt: skip
    ratio(f"CPU/req ≤ 3× nginx, {events}-event stream", _cpu(rows, AGFAST, "stream", events),
          _cpu(rows, FLOOR, "stream", events), 3, True)  # fmt: skip
    many, one = _cpu(rows, AGFAST, "stream", events), _cpu(rows, AGFAST, "stream", 1)
    if many is None or one is None or events <= 1:
        out.append(("marginal CPU per upstream event ≤ 4 µs", "not measured", None))
    else:
        per_event = (many - one) / (events - 1) * 1000
        out.append(("marginal CPU per upstream event ≤ 4 µs", f"{per_event:.1f} µs", per_event <= 4))
    for peer, limit in (("portkey", 10), ("litellm", 100)):
        for mode in ("non-stream", "stream"):
            ratio(f"≥ {limit}× less CPU/req than {peer}, {mode}", _cpu(rows, peer, mode, events),
                  _cpu(rows, AGFAST, mode, events), limit, False)  # fmt: skip
    for pct, limit in (("p50", 0.3), ("p99", 1.0)):
        value = _figure(scenarios, "one at a time", AGFAST, f"non-stream added {pct} ms")
        goal = f"added latency one at a time (non-stream), {pct} ≤ {limit} ms"
        out.append((goal, "not measured", None) if value is None else (goal, f"{value:.3f} ms", value <= limit))
    idle = next((r.idle_rss_mib for r in rows if r.target == AGFAST), None)
    out.append(
        ("≤ 60 MB idle", "not measured", None) if idle is None else ("≤ 60 MB idle", f"{idle:.0f} MiB", idle <= 60)
    )
    streams = _figure(scenarios, "open streams", AGFAST, "peak RSS MiB")
    count = _figure(scenarios, "open streams", AGFAST, "streams")
    goal = "≤ 150 MB with 2,000 open streams"
    if streams is None or count is None:
        out.append((goal, "not measured", None))
    else:
        out.append((goal, f"{streams:.0f} MiB at {count:.0f} streams", streams <= 150 if count >= 2000 else None))
    growth = _figure(scenarios, "soak", AGFAST, "RSS growth %")
    soaked = _figure(scenarios, "soak", AGFAST, "requests")
    goal = "RSS growth ≤ 5% over a 1M-request soak"
    if growth is None or soaked is None:
        out.append((goal, "not measured", None))
    else:
        out.append((goal, f"{growth:+.1f}% over {soaked:,.0f} requests", growth <= 5 if soaked >= 1_000_000 else None))
    return out


def verdict_table(items: list[tuple[str, str, bool | None]]) -> str:
    marks = {True: "met", False: "**not met**", None: "not judged (smaller run)"}
    out = ["| target | this run | verdict |", "|---|--:|---|"]
    out += [f"| {goal} | {figure} | {marks[met] if figure != 'not measured' else 'not measured'} |"
            for goal, figure, met in items]  # fmt: skip
    return "\n".join(out)


def json_lines(rows: list[Row], scenarios: list[Scenario], env: dict[str, Any],
               failures: dict[str, str] | None = None) -> str:  # fmt: skip
    """One line per row, scenario and target that could not be measured, each with the run's environment."""
    lines = [orjson.dumps({"kind": "row", **asdict(r), **env}).decode() for r in rows]
    lines += [orjson.dumps({"kind": "scenario", **asdict(s), **env}).decode() for s in scenarios]
    lines += [orjson.dumps({"kind": "failure", "target": t, "reason": why, **env}).decode()
              for t, why in (failures or {}).items()]  # fmt: skip
    return "\n".join(lines)


def chart(rows: list[Row], events: int, path: Path, title: str) -> None:
    """Grouped bars of CPU per request (log scale), non-stream and stream, one group per proxy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r.label for r in rows if r.events == events))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    width = 0.38
    for i, mode in enumerate(("non-stream", "stream")):
        values = [next((r.cpu_ms_per_req for r in rows
                        if (r.label, r.mode, r.events) == (lb, mode, events) and r.requests), 0.0)
                  for lb in labels]  # fmt: skip
        xs = [x + (i - 0.5) * width for x in range(len(labels))]
        bars = ax.bar(xs, values, width, label=mode if mode == "non-stream" else f"stream ({events} events)")
        ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize=7, padding=2)
    ax.set_yscale("log")
    ax.set_ylabel("CPU ms per request (log)")
    ax.set_xticks(range(len(labels)), [lb.replace(" (", "\n(") for lb in labels], fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
