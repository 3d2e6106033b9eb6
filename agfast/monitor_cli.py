"""`agfast logs` and `agfast stats`: the Proxy Monitor's database read from the command line.

Both open `<data-dir>/proxy_logs.db` read-only, so they work while the server runs (WAL: readers never wait
for its writer) and after it stopped. Queries are monitor.LogReader's; this module only formats.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from agfast import config
from agfast.monitor import LogReader, NoDatabase, db_path

EXIT_OK = 0
EXIT_FAILURE = 1
# `--follow` polls the database this often: a person watching, not a pipeline.
FOLLOW_INTERVAL = 1.0
DEFAULT_TAIL = 20


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `logs` and `stats`; each takes --data-dir/--config like `serve`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", dest="data_dir", metavar="DIR", default=argparse.SUPPRESS, help="(default: ~/.agfast)"
    )
    common.add_argument(
        "--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS, help="config file (for data_dir)"
    )
    common.add_argument("--json", action="store_true", help="JSON output (one object per line for logs)")
    logs = subparsers.add_parser(
        "logs",
        parents=[common],
        help="show the latest proxied requests (the Proxy Monitor)",
        description="Print the latest requests the Proxy Monitor recorded, oldest first. Works while the server runs.",
    )
    logs.add_argument("-n", type=int, default=DEFAULT_TAIL, help=f"how many (default: {DEFAULT_TAIL})")
    logs.add_argument("--errors", action="store_true", help="only failed requests (4xx/5xx or an in-stream error)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new requests until Ctrl-C")
    subparsers.add_parser(
        "stats",
        parents=[common],
        help="token totals by model and account",
        description="Print request and token totals, by model and by account (kept even with the monitor off).",
    )


def _reader(args: argparse.Namespace) -> LogReader:
    cfg = config.load({"data_dir": getattr(args, "data_dir", None), "config_file": getattr(args, "config_file", None)})
    return LogReader(db_path(cfg.data_dir))


def _no_database(reader: LogReader) -> int:
    print(
        f"agfast: no request log at {reader.path} yet: the server creates it when it first serves with this data dir",
        file=sys.stderr,
    )
    return EXIT_FAILURE


# -- logs ----------------------------------------------------------------------------------------------------


def log_line(row: dict[str, Any]) -> str:
    """One request as one line: when, what, how it went, where it went, what it cost."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["timestamp"] / 1000))
    model = row["model"] or "-"
    if row["mapped_model"] and row["mapped_model"] != row["model"]:
        model += "→" + row["mapped_model"]
    tokens = f"in {row['input_tokens']} out {row['output_tokens']}"
    if row["cached_tokens"]:
        tokens += f" cached {row['cached_tokens']}"
    line = (
        f"{when}  {row['method']} {row['url']}  {row['status']}  {row['duration'] / 1000:.2f}s  {model}  "
        f"{row['account_email'] or '-'}  {tokens}"
    )
    if row["attempts"] > 1:
        line += f"  attempts {row['attempts']}"
    if row["error"]:
        line += f"  error: {row['error']}"
    return line


def _printer(as_json: bool) -> Callable[[dict[str, Any]], None]:
    if as_json:
        return lambda row: print(orjson.dumps(row).decode(), flush=True)
    return lambda row: print(log_line(row), flush=True)


def run_logs(args: argparse.Namespace) -> int:
    reader = _reader(args)
    show = _printer(args.json)
    try:
        rows = reader.logs(errors_only=args.errors, limit=max(0, args.n))
        for row in reversed(rows):
            show(row)
        if not args.follow:
            return EXIT_OK
        last = rows[0]["id"] if rows else (reader.logs(limit=1) or [{"id": 0}])[0]["id"]
        while True:
            time.sleep(FOLLOW_INTERVAL)
            for row in reader.logs_after(last, errors_only=args.errors):
                show(row)
                last = row["id"]
    except NoDatabase:
        return _no_database(reader)


# -- stats ---------------------------------------------------------------------------------------------------

_COLUMNS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "total_tokens")
_HEADINGS = ("requests", "errors", "input", "output", "cached", "total")


def _table(title: str, key: str, rows: list[dict[str, Any]]) -> list[str]:
    width = max([len(title), *(len(str(r[key]) or "-") for r in rows)])
    out = [f"{title:<{width}}" + "".join(f"{h:>12}" for h in _HEADINGS)]
    for row in rows:
        out.append(f"{row[key] or '-':<{width}}" + "".join(f"{row[c]:>12}" for c in _COLUMNS))
    return out


def run_stats(args: argparse.Namespace) -> int:
    reader = _reader(args)
    try:
        summary = reader.stats_summary()
        models = reader.stats_models()
        accounts = reader.stats_accounts()
    except NoDatabase:
        return _no_database(reader)
    if args.json:
        print(orjson.dumps({"summary": summary, "models": models, "accounts": accounts}).decode())
        return EXIT_OK
    print(
        f"{summary['requests']} requests ({summary['success']} ok, {summary['errors']} failed); tokens: "
        f"{summary['input_tokens']} in, {summary['output_tokens']} out, {summary['cached_tokens']} cached"
    )
    print()
    print("\n".join(_table("model", "model", models)))
    print()
    print("\n".join(_table("account", "account", accounts)))
    return EXIT_OK
