"""`agfast keys add|list|revoke|renew`: named API keys in `<data-dir>/user_tokens.json`, edited under the same
lock the server writes usage under, so both can run at once; a running server picks changes up within
keys.FLUSH_EVERY seconds. `add` prints the key once; nothing prints it again."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from agfast import config
from agfast.keys import KeyDefinitionError, KeyStore, views

EXIT_OK = 0
EXIT_FAILURE = 1
COLUMNS = ("name", "prefix", "status", "rpm", "tpd", "models", "expires", "requests", "tokens", "last_used")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", dest="data_dir", metavar="DIR", default=argparse.SUPPRESS, help="(default: ~/.agfast)"
    )
    common.add_argument(
        "--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS, help="config file (for data_dir)"
    )
    keys = subparsers.add_parser(
        "keys",
        help="named API keys with limits (besides the main api_key)",
        description="Named API keys: each with optional expiry, allowed models, requests per minute and tokens "
        "per day. Stored hashed; the key is printed once, by add.",
    )
    sub = keys.add_subparsers(dest="keys_command", metavar="{add,list,revoke,renew}", required=True)
    add = sub.add_parser(
        "add",
        parents=[common],
        help="make a key (printed once)",
        description="Make a named API key and print it, once: agfast keeps only its hash. Limits left out do "
        "not apply.",
    )
    add.add_argument("name")
    add.add_argument("--rpm", type=int, help="requests per minute (no limit unless given)")
    add.add_argument("--tpd", type=int, help="tokens per UTC day, input + output (no limit unless given)")
    add.add_argument("--models", help="allowed model patterns, comma-separated: gemini-*,claude-* (all unless given)")
    add.add_argument("--expires", help="ISO date (valid through that UTC day) or datetime (default: never)")
    listing = sub.add_parser(
        "list",
        parents=[common],
        help="show keys: prefix, limits, expiry, usage",
        description="Show every named key: name, display prefix, status, limits, expiry and usage (never the key).",
    )
    listing.add_argument("--json", action="store_true", help="JSON output")
    revoke = sub.add_parser(
        "revoke",
        parents=[common],
        help="revoke a key for good",
        description="Revoke a named key for good: it gets 401 from then on and cannot be renewed.",
    )
    revoke.add_argument("name", help="the key's name or id")
    renew = sub.add_parser(
        "renew",
        parents=[common],
        help="extend a key's expiry (the key itself does not change)",
        description="Extend a named key's expiry; the key stays the same (make a new key to rotate).",
    )
    renew.add_argument("name", help="the key's name or id")
    when = renew.add_mutually_exclusive_group()
    when.add_argument(
        "--days", type=float, help="extend by this many days from now or its expiry, the later (30 unless given)"
    )
    when.add_argument("--expires", help="new expiry: ISO date or datetime")


def run(args: argparse.Namespace) -> int:
    cfg = config.load({"data_dir": getattr(args, "data_dir", None), "config_file": getattr(args, "config_file", None)})
    try:
        store = KeyStore(cfg.data_dir)
        return COMMANDS[args.keys_command](store, args)
    except KeyDefinitionError as exc:
        print(f"agfast keys: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _add(store: KeyStore, args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"name": args.name, "rpm": args.rpm, "tpd": args.tpd, "models": args.models}
    if args.expires:
        fields["expires"] = args.expires
    key, secret = store.add(fields, time.time())
    print(f"{secret}\nAPI key {key.name!r} made; it is shown once: copy it now (agfast keeps only its hash).")
    return EXIT_OK


def _list(store: KeyStore, args: argparse.Namespace) -> int:
    rows = views(store.keys.values(), time.time())
    if args.json:
        print(orjson.dumps(rows).decode())
        return EXIT_OK
    if not rows:
        print("no API keys yet (agfast keys add NAME)")
        return EXIT_OK
    table = [[_cell(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(COLUMNS)]
    for line in ([c.upper() for c in COLUMNS], *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) or "*"
    if value == 0 and not isinstance(value, bool):
        return "-"
    return str(value)


def _revoke(store: KeyStore, args: argparse.Namespace) -> int:
    key = store.revoke(args.name)
    print(f"API key {key.name!r} revoked")
    return EXIT_OK


def _renew(store: KeyStore, args: argparse.Namespace) -> int:
    key = store.renew(args.name, time.time(), args.days, args.expires)
    print(f"API key {key.name!r} now expires {key.view(time.time())['expires']}")
    return EXIT_OK


COMMANDS = {"add": _add, "list": _list, "revoke": _revoke, "renew": _renew}
