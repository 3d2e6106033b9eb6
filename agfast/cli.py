"""Command line: subcommands and flags → Config, then hand over. Failures are one line on stderr, never a trace."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from agfast import __version__, accounts_cli, config, keys_cli, monitor_cli
from agfast.keys import KeyDefinitionError

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
    g.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain) file; needs --tls-key")
    g.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    g.add_argument(
        "--workers",
        type=int,
        help="server processes on the port, sharing the pool through Redis; 0 = one per core (default: 1)",
    )
    g.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="also run a local Google simulator with three demo accounts (no Google account needed)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agfast",
        description="Local gateway from OpenAI, Anthropic and Gemini clients to Google Antigravity accounts.",
    )
    parser.add_argument("--version", action="version", version=f"agfast {__version__}")
    _serve_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="{serve,accounts,keys,logs,stats,sim}")
    serve = sub.add_parser(
        "serve",
        help="run the proxy (the default command)",
        description="Run the gateway: OpenAI, Anthropic and Gemini routes in front of the account pool. It "
        "serves even with no account yet (proxy routes answer 503 until one is added).",
    )
    _serve_flags(serve)
    accounts_cli.add_parser(sub)
    keys_cli.add_parser(sub)
    monitor_cli.add_parsers(sub)
    sim = sub.add_parser(
        "sim",
        help="run the local Google simulator alone",
        description="Run agfast's Google simulator (OAuth, userinfo, v1internal) on loopback, with demo "
        "accounts whose refresh tokens it prints: for tests, benchmarks and trying clients.",
    )
    sim.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8046, help="(default: 8046)")
    sim.add_argument("--accounts", type=int, default=3, help="demo accounts to create (default: 3)")
    sim.add_argument("--chunks", type=int, default=3, help="SSE chunks per answer (default: 3)")
    sim.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks (default: 0)")
    sim.add_argument(
        "--fast",
        action="store_true",
        help="benchmark upstream: pre-encoded answers (v1internal and OpenAI chat SSE), each chunk its own write; "
        "no validation, any token accepted",
    )
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
    "tls_cert",
    "tls_key",
    "demo",
    "workers",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sim":
            return run_sim(args)
        if args.command == "accounts":
            return accounts_cli.run(args)
        if args.command == "keys":
            return keys_cli.run(args)
        if args.command == "logs":
            return monitor_cli.run_logs(args)
        if args.command == "stats":
            return monitor_cli.run_stats(args)
        return serve({k: getattr(args, k, None) for k in SERVE_KEYS})
    except config.ConfigError as exc:
        print(f"agfast: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyDefinitionError as exc:  # an unreadable user_tokens.json: say which file and why, no trace
        print(f"agfast: {exc}", file=sys.stderr)
        return EXIT_FAILURE
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
    from agfast.workers import Supervisor, worker_count

    count = worker_count(cfg)
    if count > 1:
        return Supervisor(cfg, count, _run_worker).run()
    return _run(_serve(cfg))


def say(text: str) -> None:
    """One stdout line in one write: with `--workers` several processes share stdout, and `print` under
    PYTHONUNBUFFERED writes the text and its newline apart, so two workers' lines could run together."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _run_worker(cfg: config.Config, listener: Any) -> int:
    """One of `--workers N` (forked by the supervisor): today's server on the shared port."""
    import socket

    return _run(_serve(cfg, listener=None if hasattr(socket, "SO_REUSEPORT") else listener))


def _run(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on every supported platform
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


NO_ACCOUNT = (
    "no usable account yet: add one with 'agfast accounts add' (or try --demo); serving anyway, proxy routes "
    "answer 503 until an account is added"
)


async def _serve(cfg: config.Config, listener: Any = None) -> int:
    from agfast import sse
    from agfast.app import App, build_router
    from agfast.server import BindError, Server

    demo = None
    if cfg.demo:
        from agfast.demo import Demo

        demo = Demo()
        try:
            await demo.start(cfg)
        except Exception as exc:  # the demo must never greet a newcomer with a traceback
            print(f"agfast: demo failed to start: {exc}", file=sys.stderr)
            await demo.stop()
            return EXIT_FAILURE
    try:
        generated = config.ensure_api_key(cfg)
        if generated is not None and demo is None:
            say(f"agfast: generated API key {generated} (saved to {cfg.config_path})")
        if demo is None and not cfg.oauth_client_chain():
            logging.getLogger("agfast.config").warning(
                "no OAuth client configured (oauth.client_id / oauth.client_secret, or AGFAST_OAUTH_CLIENT_ID / "
                "_SECRET): expired access tokens cannot be refreshed"
            )
        app = App(cfg)
        app.start()
        if app.pool.size == 0 and cfg.zai.dispatch_mode == "off":
            # Not a start-up failure: accounts added while serving join within accounts_reload_interval.
            print(f"agfast: {NO_ACCOUNT}", file=sys.stderr)
            for email, reason in app.pool.skipped.items():
                print(f"agfast: skipped {email}: {reason}", file=sys.stderr)
        server = app.server = Server(cfg, build_router(app), app.live, app.keys)
        if cfg.workers != 1:
            server.reuse_port, server.listener = True, listener
        try:
            await server.start()
        except BindError as exc:
            print(f"agfast: {exc}", file=sys.stderr)
            await app.close()
            return EXIT_FAILURE
        # Handlers go in before the start-up line: whoever reads that line may signal us right away.
        server.install_signal_handlers()
        host = cfg.bind_host
        scheme = cfg.scheme
        shown = f"{scheme}://[{host}]:{server.port}" if ":" in host else f"{scheme}://{host}:{server.port}"
        if demo is not None:
            say(
                f"agfast demo: Google simulator at {demo.sim.base_url} with {len(demo.emails)} accounts "
                f"({', '.join(demo.emails)}); data in {cfg.data_dir} (removed on exit)"
            )
        say(
            f"agfast {__version__} listening on {shown} "
            f"(auth: {cfg.effective_auth_mode}, accounts: {app.pool.size}, hot path: {sse.IMPLEMENTATION}"
            f"{f', worker pid: {os.getpid()}' if cfg.workers != 1 else ''})"
        )
        local = f"{scheme}://127.0.0.1:{server.port}" if host in ("0.0.0.0", "::") else shown
        if demo is not None:
            say(f"  api key: {cfg.api_key}\n  OpenAI base URL: {local}/v1   Anthropic / Gemini base URL: {local}")
        # The secret itself is printed only for the throw-away demo; otherwise say which one signs in.
        secret = "admin_password" if cfg.admin_password else "the api key"
        say(f"  dashboard: {local}/ (sign in with {secret})")
        await server.wait_stopped()
        logging.getLogger("agfast.server").info("shutting down: finishing %d in-flight request(s)", server.in_flight)
        await server.shutdown()
        await app.close()
    finally:
        if demo is not None:
            await demo.stop()
    logging.shutdown()
    return 0


def run_sim(args: argparse.Namespace) -> int:
    from agfast.sim import demo_accounts
    from agfast.sim.runner import run_forever

    _setup_logging("info")
    if args.fast:
        from agfast.sim.fast import run_fast_forever

        run_fast_forever(args.host, args.port, args.chunks, args.chunk_delay)
        return 0
    run_forever(args.host, args.port, demo_accounts(args.accounts), args.chunks, args.chunk_delay)
    return 0
