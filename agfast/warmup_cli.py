"""`agfast accounts warmup`: the reference's tiny request per account and model, from the command line.

Runs its own pool over the data dir (tokens refreshed as the server would), so it works with or without a
server running; quota protection from the config applies exactly as in the server."""

from __future__ import annotations

import argparse

from agfast.config import Config
from agfast.logtext import mask_email
from agfast.upstream.accounts import AccountStore
from agfast.upstream.client import UpstreamClient
from agfast.upstream.pool import AccountPool
from agfast.upstream.warmup import DEFAULT_WARMUP_MODELS, Warmup, WarmupResult

EXIT_OK, EXIT_FAILURE = 0, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="*", metavar="EMAIL", help="only these accounts (default: all)")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="MODEL",
        help=f"a model to warm (repeatable; default: {', '.join(DEFAULT_WARMUP_MODELS)})",
    )


def line(result: WarmupResult) -> str:
    status = "ok" if result.success else result.outcome
    detail = result.error or result.message
    return f"{mask_email(result.email)}  {result.model}  {status}: {detail}"


async def warmup_command(client: UpstreamClient, cfg: Config, store: AccountStore, args: argparse.Namespace) -> int:
    pool = AccountPool(cfg, store, client)
    pool.load()
    warmup = Warmup(pool)
    models = args.models or list(DEFAULT_WARMUP_MODELS)
    try:
        if args.targets:
            results = [await warmup.warm(email, model) for email in args.targets for model in models]
        else:
            results = await warmup.warm_all(models)
    finally:
        await pool.close()
    for result in results:
        print(line(result), flush=True)
    counts = warmup.counts
    print(
        f"warmup: {counts['sent']} sent, {counts['skipped']} skipped, {counts['failed']} failed, "
        f"{counts['unknown']} unknown account(s)",
        flush=True,
    )
    return EXIT_FAILURE if counts["failed"] or counts["unknown"] else EXIT_OK
