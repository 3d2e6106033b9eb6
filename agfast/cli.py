"""Command line: subcommands and flags → Config, then hand over. Failures are one line on stderr, never a trace."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from agfast import __version__, config

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _serve_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("serve options (CLI > AGFAST_* env > config file > default)")
    g.add_argument("--host", help="bind address (default: 127.0.0.1, or 0.0.0.0 with --allow-lan)")
    g.add_argument("--port", type=int, help="listen port; 0 picks a free one (default: 8045)")
    g.add_argument(
        "--allow-lan",
        dest="allow_lan_access",
        action="store_true",
        default=None,
        help="listen on all interfaces (default: loopback only)",
    )
    g.add_argument("--data-dir", help="accounts and config directory (default: ~/.agfast)")
    g.add_argument("--config", dest="config_file", help="config file (default: <data-dir>/config.toml)")
    g.add_argument(
        "--auth-mode",
        choices=config.AUTH_MODES,
        help="off | strict | all_except_health | auto (default: auto = all_except_health when reachable "
        "from the LAN, else off)",
    )
    g.add_argument("--api-key", help="the key clients must send (default: generated on first start)")
    g.add_argument("--log-level", choices=config.LOG_LEVELS, help="(default: info)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agfast",
        description="Local gateway from OpenAI, Anthropic and Gemini clients to Google Antigravity accounts.",
    )
    parser.add_argument("--version", action="version", version=f"agfast {__version__}")
    _serve_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="{serve,sim}")
    serve = sub.add_parser("serve", help="run the proxy (the default command)")
    _serve_flags(serve)
    sim = sub.add_parser("sim", help="run the local Google simulator alone")
    sim.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8046, help="(default: 8046)")
    sim.add_argument("--accounts", type=int, default=3, help="demo accounts to create (default: 3)")
    sim.add_argument("--chunks", type=int, default=3, help="SSE chunks per answer (default: 3)")
    sim.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks (default: 0)")
    return parser


SERVE_KEYS = (
    "host",
    "port",
    "allow_lan_access",
    "data_dir",
    "config_file",
    "auth_mode",
    "api_key",
    "log_level",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sim":
            return run_sim(args)
        return serve({k: getattr(args, k, None) for k in SERVE_KEYS})
    except config.ConfigError as exc:
        print(f"agfast: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(cli: dict[str, Any]) -> int:
    cfg = config.load(cli)
    _setup_logging(cfg.log_level)
    for key in cfg.unknown_keys:
        logging.getLogger("agfast.config").warning("%s: unknown key %r ignored", cfg.config_path, key)
    generated = config.ensure_api_key(cfg)
    if generated is not None:
        print(f"agfast: generated API key {generated} (saved to {cfg.config_path})", flush=True)
    return _run(_serve(cfg))


def _run(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on every supported platform
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


async def _serve(cfg: config.Config) -> int:
    from agfast import sse
    from agfast.app import build_router
    from agfast.server import BindError, Server

    server = Server(cfg, build_router())
    try:
        await server.start()
    except BindError as exc:
        print(f"agfast: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    # Handlers go in before the start-up line: whoever reads that line may signal us right away.
    server.install_signal_handlers()
    accounts = _count_accounts(cfg)
    host = cfg.bind_host
    shown = f"http://[{host}]:{server.port}" if ":" in host else f"http://{host}:{server.port}"
    print(
        f"agfast {__version__} listening on {shown} "
        f"(auth: {cfg.effective_auth_mode}, accounts: {accounts}, hot path: {sse.IMPLEMENTATION})",
        flush=True,
    )
    await server.wait_stopped()
    logging.getLogger("agfast.server").info("shutting down: finishing %d in-flight request(s)", server.in_flight)
    await server.shutdown()
    logging.shutdown()
    return 0


def _count_accounts(cfg: config.Config) -> int:
    folder = cfg.data_dir / "accounts"
    try:
        return sum(1 for p in folder.iterdir() if p.suffix == ".json")
    except OSError:
        return 0


def run_sim(args: argparse.Namespace) -> int:
    from agfast.sim import demo_accounts
    from agfast.sim.runner import run_forever

    _setup_logging("info")
    run_forever(args.host, args.port, demo_accounts(args.accounts), args.chunks, args.chunk_delay)
    return 0
