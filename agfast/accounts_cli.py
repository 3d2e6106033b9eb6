"""`agfast accounts …`: sign in, add, list, remove, import, refresh, switch, export, inspect and set the proxy
of the Google accounts of a data dir, and manage the OAuth clients they are issued by.

Files are AccountStore's business and Google is upstream.oauth's; this module is the user-facing part: one
line per account, one clear line on stderr per failure, exit codes a script can rely on, and never a token
on screen. Network work happens before anything is written, so a failed add leaves the data dir untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import html
import logging
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from agfast import config, warmup_cli
from agfast.netaddr import ProxyURLError
from agfast.upstream import oauth
from agfast.upstream.accounts import (
    DISABLE_FIELDS,
    PROXY_FIELD,
    PROXY_FIELDS,
    Account,
    AccountFileError,
    AccountStore,
    account_view,
    status_detail,
    usable,
)
from agfast.upstream.client import UpstreamClient
from agfast.upstream.onboarding import Discovery, discover, save_discovery, store_quota
from agfast.upstream.proxy import ProxyFailure, parse_proxy
from agfast.upstream.signin import SignIn, SignInError

log = logging.getLogger("agfast.accounts")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# Accounts set up at once by import/refresh: quick for a big pool, gentle on Google's per-IP limits.
CONCURRENCY = 4
# The table's status cell; the full reason is in `--json`.
STATUS_WIDTH = 60
# Asking a running server for its lockouts: loopback answers in milliseconds, a dead port fails at once.
SERVER_TIMEOUT = 2.0
ADD_HINT = "agfast accounts add --refresh-token -"
LOGIN_HINT = "agfast accounts login"
COMMANDS = (
    "login",
    "add",
    "list",
    "remove",
    "import",
    "refresh",
    "enable",
    "disable",
    "export",
    "quota",
    "client",
    "set-proxy",
    "warmup",
)
# How long `login` waits for the browser to come back (a user reading Google's consent page takes a minute).
LOGIN_TIMEOUT = 300.0
# Where `login`'s one-shot loopback listener expects Google's redirect.
CALLBACK_PATH = "/oauth-callback"
SWITCH_OFF_REASON = "switched off with 'agfast accounts disable'"
EXPORT_WARNING = (
    "the export holds refresh tokens: whoever has it can use these Google accounts; keep it private and delete "
    "it once imported"
)


class UsageError(Exception):
    """Bad input from the user (exit 2), as opposed to a failure at Google or on disk (exit 1)."""


# ---------------------------------------------------------------------------------------------------------
# Parser


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `accounts` and its sub-commands; each takes --data-dir/--config like `serve`."""
    # SUPPRESS keeps `agfast --data-dir X accounts list` working: an absent flag does not reset the parent's.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        dest="data_dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="accounts directory (default: ~/.agfast)",
    )
    common.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="config file (default: <data-dir>/config.toml); its oauth.* and upstream.* settings apply",
    )
    parser = subparsers.add_parser(
        "accounts",
        parents=[common],
        help="manage Google accounts (login, add, list, remove, import, refresh, enable, disable, export, quota, "
        "client)",
        description="Manage the Google accounts agfast serves from. Without a sub-command: list.",
    )
    sub = parser.add_subparsers(dest="accounts_command", metavar="{" + ",".join(COMMANDS) + "}")

    login = sub.add_parser(
        "login",
        parents=[common],
        help="add an account by signing in with Google in a browser",
        description="Open Google's sign-in page (PKCE, local callback on 127.0.0.1), then do what 'add' does "
        "with the new grant. --no-browser prints the URL and takes the address the browser was sent to (or "
        "the bare code) on stdin, for SSH hosts.",
    )
    login.add_argument("--no-browser", action="store_true", help="print the URL instead of opening a browser")
    login.add_argument(
        "--timeout",
        type=float,
        default=LOGIN_TIMEOUT,
        metavar="SECONDS",
        help="give up after this many seconds (default: %(default)s)",
    )
    login.add_argument("--client", metavar="KEY", help="the OAuth client to sign in with (default: the first)")

    add = sub.add_parser(
        "add",
        parents=[common],
        help="add (or update) an account from a refresh token",
        description="Refresh the token, look up the email, project, tier and quota at Google, and save the "
        "account (an account with the same email is updated).",
    )
    add.add_argument(
        "--refresh-token",
        required=True,
        metavar="RT",
        help="the OAuth refresh token (1//…); '-' reads it from stdin, which keeps it out of shell history "
        "and the process list",
    )

    lst = sub.add_parser(
        "list",
        parents=[common],
        help="show the accounts, their status and quota",
        description="One line per account: email, id, tier, project, status (with the reason when it is not "
        "usable), remaining quota and access-token expiry. Never shows a token.",
    )
    lst.add_argument("--json", action="store_true", help="a JSON array instead of the table (no tokens)")

    rm = sub.add_parser(
        "remove",
        parents=[common],
        help="delete an account",
        description="Delete the account's file and index entry. A running server drops it from its pool as "
        "soon as it notices (at the latest after accounts_reload_interval) and never writes it back.",
    )
    rm.add_argument("target", metavar="ID_OR_EMAIL")

    imp = sub.add_parser(
        "import",
        parents=[common],
        help="add every account of an Antigravity Tools data dir or an export file",
        description="PATH is an Antigravity Tools data dir (e.g. ~/.antigravity_tools), its accounts/ dir, "
        'one account file, or an export file {"accounts": [{"email", "refresh_token"}]}. Each account goes '
        "through the same steps as 'add'.",
    )
    imp.add_argument("path", metavar="PATH")

    ref = sub.add_parser(
        "refresh",
        parents=[common],
        help="refresh tokens, project, tier and quota of the accounts",
        description="Refresh every account that is not disabled (or only the ones named; a named disabled "
        "account is retried and re-enabled if its token works). invalid_grant disables the account on disk.",
    )
    ref.add_argument("targets", nargs="*", metavar="ID_OR_EMAIL")

    warm = sub.add_parser(
        "warmup",
        parents=[common],
        help="send each account the reference's tiny request per model (starts its quota window)",
        description="Send each account (or the ones named) a tiny request per model, skipping models the account "
        "does not offer and models quota protection keeps for its owner.",
    )
    warmup_cli.add_arguments(warm)

    for verb, text in (("enable", "use the account again"), ("disable", "stop using the account (kept on disk)")):
        switch = sub.add_parser(verb, parents=[common], help=text, description=text.capitalize() + ".")
        switch.add_argument("target", metavar="ID_OR_EMAIL")

    export = sub.add_parser(
        "export",
        parents=[common],
        help="print email + refresh token of the accounts as JSON (to stdout only)",
        description='Print {"accounts": [{"email", "refresh_token"}]}, the format \'import\' reads, to stdout. '
        "It holds secrets: redirect it to a private file.",
    )
    export.add_argument("--emails", metavar="EMAIL[,EMAIL…]", help="only these accounts")

    quota = sub.add_parser(
        "quota",
        parents=[common],
        help="every model's remaining quota and reset time",
        description="Per account: tier, each model's remaining percentage and reset time, and the 5-hour / "
        "weekly windows where Google reported them (as of the last refresh; 'agfast accounts refresh' updates).",
    )
    quota.add_argument("target", nargs="?", metavar="ID_OR_EMAIL")
    quota.add_argument("--json", action="store_true", help="JSON instead of the table")

    client = sub.add_parser(
        "client",
        parents=[common],
        help="the OAuth clients accounts are signed in and refreshed with",
        description="agfast ships no OAuth client: bring yours. Clients are [[oauth.clients]] entries of the "
        "config file; oauth.client_id and ANTIGRAVITY_OAUTH_CLIENTS are listed too.",
    )
    client_sub = client.add_subparsers(dest="client_command", metavar="{add,list,remove}")
    cadd = client_sub.add_parser(
        "add",
        parents=[common],
        help="add an OAuth client to the config file",
        description="Append an [[oauth.clients]] entry to the config file; accounts signed in with it remember KEY.",
    )
    cadd.add_argument("key", metavar="KEY", help="a short name accounts remember (letters, digits, . _ -)")
    cadd.add_argument("--client-id", required=True, metavar="ID")
    cadd.add_argument(
        "--client-secret", required=True, metavar="SECRET", help="'-' reads it from stdin (keeps it out of history)"
    )
    cadd.add_argument("--label", help="a description")
    client_sub.add_parser(
        "list",
        parents=[common],
        help="the configured OAuth clients (secrets masked)",
        description="Every OAuth client agfast knows, in the order a refresh tries them; secrets masked.",
    )
    crm = client_sub.add_parser(
        "remove",
        parents=[common],
        help="remove an OAuth client from the config file",
        description="Drop the [[oauth.clients]] entry with this key from the config file.",
    )
    crm.add_argument("key", metavar="KEY")

    setp = sub.add_parser(
        "set-proxy",
        parents=[common],
        help="send one account's calls to Google through its own outbound proxy",
        description="Every call made for this account (generation, token refresh, project and quota lookups) "
        "goes through PROXY_URL (http://, https://, socks4://, socks5:// or socks5h://, credentials allowed: "
        "scheme://user:password@host:port) instead of upstream.proxy. --clear goes back to upstream.proxy "
        "(or direct). A running server picks the change up within accounts_reload_interval.",
    )
    setp.add_argument("target", metavar="ID_OR_EMAIL")
    which = setp.add_mutually_exclusive_group(required=True)
    which.add_argument("url", nargs="?", metavar="PROXY_URL")
    which.add_argument("--clear", action="store_true", help="remove the account's own proxy")


# ---------------------------------------------------------------------------------------------------------
# Entry


def run(args: argparse.Namespace) -> int:
    """Execute `agfast accounts …`; every failure is one line on stderr, never a traceback."""
    if not logging.getLogger().handlers:
        # AccountStore reports skipped (unreadable) account files through logging.
        logging.basicConfig(level=logging.WARNING, format="agfast: %(message)s", stream=sys.stderr)
    command = getattr(args, "accounts_command", None) or "list"
    try:
        cfg = config.load(
            {"data_dir": getattr(args, "data_dir", None), "config_file": getattr(args, "config_file", None)}
        )
        store = AccountStore(cfg.data_dir)
        if command == "list":
            return list_accounts(store, as_json=getattr(args, "json", False), cfg=cfg)
        if command == "remove":
            return remove_account(store, args.target)
        if command in ("enable", "disable"):
            return switch_account(store, args.target, on=command == "enable")
        if command == "export":
            return export_accounts(store, args.emails)
        if command == "quota":
            return show_quota(store, args.target, as_json=args.json)
        if command == "client":
            return client_command(cfg, args)
        if command == "login":
            if args.timeout <= 0:
                raise UsageError("--timeout must be positive")
            return _with_client(
                cfg,
                partial(login_command, store=store, no_browser=args.no_browser, timeout=args.timeout, key=args.client),
            )
        if command == "import" and not cfg.oauth_client_chain():
            _error(f"cannot import: {oauth.NO_CLIENT_MESSAGE}")
            return EXIT_FAILURE
        if command == "add":
            token = read_refresh_token(args.refresh_token)
            return _with_client(cfg, partial(add_command, store=store, refresh=token))
        if command == "import":
            pairs = store.import_path(Path(args.path).expanduser())
            return _with_client(cfg, partial(import_command, store=store, path=args.path, pairs=pairs))
        if command == "set-proxy":
            return set_proxy(store, args.target, None if args.clear else args.url)
        if command == "refresh":
            accounts, named = _refresh_targets(store, args.targets)
            return _with_client(cfg, partial(refresh_command, store=store, accounts=accounts, named=named))
        if command == "warmup":
            return _with_client(cfg, partial(warmup_cli.warmup_command, cfg=cfg, store=store, args=args))
        raise UsageError(f"unknown accounts command {command!r}")
    except (config.ConfigError, UsageError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except AccountFileError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    except OSError as exc:
        _error(f"{exc.filename or 'data dir'}: {exc.strerror or type(exc).__name__}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _with_client(cfg: config.Config, body: Callable[[UpstreamClient], Awaitable[int]]) -> int:
    """One UpstreamClient for the whole command, closed however the command ends."""

    async def main() -> int:
        client = UpstreamClient(cfg)
        try:
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


def _error(message: str) -> None:
    print(f"agfast: {message}", file=sys.stderr, flush=True)


def read_refresh_token(value: str) -> str:
    """The token from the flag, or from stdin for '-' (hidden prompt on a terminal)."""
    source = "--refresh-token"
    if value == "-":
        source = "stdin"
        value = getpass.getpass("refresh token: ") if sys.stdin.isatty() else sys.stdin.read()
    token = value.strip().strip("'\"")
    if not token:
        raise UsageError(f"no refresh token given on {source}")
    if any(ch.isspace() for ch in token):
        raise UsageError(f"{source} must hold exactly one refresh token")
    if token.startswith("ya29."):
        raise UsageError("that is an access token (ya29.…), not a refresh token (1//…)")
    return token


# ---------------------------------------------------------------------------------------------------------
# Talking to Google


@dataclass(slots=True)
class Outcome:
    """One account's result: `ok` lines go to stdout, failures to stderr; skipped ones count as neither."""

    ok: bool
    line: str
    skipped: bool = False


def describe_failure(exc: BaseException, cfg: config.Config) -> str:
    """What went wrong, in words a user can act on; never a token."""
    if isinstance(exc, oauth.OAuthError):
        if exc.error == oauth.NO_CLIENT:
            return exc.description
        text = str(exc)
        if exc.error in oauth.CLIENT_ERRORS:
            if not cfg.oauth_client_chain():
                text += (
                    " (no OAuth client configured: set oauth.client_id and oauth.client_secret in config.toml, "
                    "or AGFAST_OAUTH_CLIENT_ID and AGFAST_OAUTH_CLIENT_SECRET, to the client that issued the token)"
                )
            else:
                text += " (is oauth.client_id the OAuth client that issued this token?)"
        return text
    if isinstance(exc, oauth.AccountSetupError | ProxyFailure):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"Google did not answer within {cfg.request_timeout:g} s"
    if isinstance(exc, OSError):
        return f"{exc.filename or 'data dir'}: {exc.strerror or type(exc).__name__}"
    log.debug("unexpected failure", exc_info=exc)
    return f"unexpected error ({type(exc).__name__})"


async def add_one(client: UpstreamClient, store: AccountStore, refresh: str, claimed: str | None = None) -> Outcome:
    """The whole add flow for one refresh token; nothing is written unless refresh, email and project worked."""
    try:
        found = await discover(client, refresh)
        account, verb = save_discovery(store, found, refresh)
    except Exception as exc:
        return Outcome(False, describe_failure(exc, client.config))
    line = f"{verb} {account.email} ({discovery_details(found)})"
    if claimed is not None and claimed.casefold() != account.email.casefold():
        line += f" [the import file said {claimed}]"
    return Outcome(True, line)


# ---------------------------------------------------------------------------------------------------------
# Commands


async def add_command(client: UpstreamClient, store: AccountStore, refresh: str) -> int:
    outcome = await add_one(client, store, refresh)
    if not outcome.ok:
        _error(f"cannot add account: {outcome.line}")
        return EXIT_FAILURE
    print(outcome.line, flush=True)
    return EXIT_OK


async def import_command(
    client: UpstreamClient, store: AccountStore, path: str, pairs: Sequence[tuple[str, str]]
) -> int:
    if not pairs:
        _error(
            f"no accounts found in {path} (expected an Antigravity Tools data dir, its accounts/ dir, or an "
            'export file {"accounts": [{"email": …, "refresh_token": …}]})'
        )
        return EXIT_FAILURE
    outcomes = await _each(
        [(email, partial(add_one, client, store, rt, email)) for email, rt in pairs],
        fail_prefix="cannot import",
    )
    added = sum(o.ok for o in outcomes)
    print(f"imported {added} of {_count(len(pairs), 'account')} from {path}", flush=True)
    return EXIT_OK if added else EXIT_FAILURE


def _refresh_targets(store: AccountStore, targets: Sequence[str]) -> tuple[list[Account], bool]:
    """The accounts to refresh, and whether the user named them (named disabled ones are retried)."""
    if not targets:
        return sorted(store.load_all(), key=lambda a: a.email.casefold()), False
    chosen: dict[str, Account] = {}
    for target in targets:
        account = store.find(target)
        if account is None:
            raise AccountFileError(f"no account matches {target!r} (see 'agfast accounts list')")
        chosen.setdefault(account.id, account)
    return list(chosen.values()), True


async def refresh_command(client: UpstreamClient, store: AccountStore, accounts: list[Account], named: bool) -> int:
    if not accounts:
        print(f"no accounts in {store.data_dir}; add one with: {ADD_HINT}", flush=True)
        return EXIT_OK
    outcomes = await _each(
        [(a.email, partial(refresh_one, client, store, a, named)) for a in accounts],
        fail_prefix="cannot refresh",
    )
    ok = sum(o.ok for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    failed = len(outcomes) - ok - skipped
    print(f"refreshed {ok} of {_count(len(outcomes), 'account')} ({failed} failed, {skipped} skipped)", flush=True)
    return EXIT_FAILURE if failed and not ok else EXIT_OK


async def _each(jobs: list[tuple[str, Callable[[], Awaitable[Outcome]]]], fail_prefix: str) -> list[Outcome]:
    """Run jobs a few at a time, printing each result in input order as soon as it (and those before) are done."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(job: Callable[[], Awaitable[Outcome]]) -> Outcome:
        async with gate:
            return await job()

    tasks = [asyncio.ensure_future(gated(job)) for _, job in jobs]
    outcomes: list[Outcome] = []
    for (label, _), task in zip(jobs, tasks):
        outcome = await task
        outcomes.append(outcome)
        if outcome.ok or outcome.skipped:
            print(outcome.line, flush=True)
        else:
            _error(f"{fail_prefix} {label}: {outcome.line}")
    return outcomes


async def refresh_one(client: UpstreamClient, store: AccountStore, account: Account, retry_disabled: bool) -> Outcome:
    """New access token, then project/tier and quota; whatever Google gave is saved even if a later step fails."""
    if account.disabled and not retry_disabled:
        reason = _clip(account.disabled_reason or "no reason recorded", STATUS_WIDTH)
        return Outcome(False, f"skipped {account.email}: disabled ({reason}); add it again to revive it", skipped=True)
    cfg = client.config
    grant: oauth.TokenGrant | None = None
    project, tier = account.project_id, None
    quota: oauth.QuotaSnapshot | None = None
    problems: list[str] = []
    try:
        async with asyncio.timeout(cfg.request_timeout):
            proxy = account.proxy_url
            session = client.session_for(cfg.oauth_token_url, proxy)
            grant, client_key = await oauth.refresh_any(session, cfg, account.refresh_token, account.oauth_client_key)
            account.oauth_client_key = oauth.client_to_remember(cfg, account.oauth_client_key, client_key)
            try:
                project, tier = await oauth.load_code_assist(client, grant.access_token, proxy)
            except oauth.AccountSetupError as exc:
                problems.append(f"project lookup failed: {exc}")
            if project:
                try:
                    quota = await oauth.fetch_quota(client, grant.access_token, project, proxy)
                except oauth.AccountSetupError as exc:
                    problems.append(f"quota not fetched: {exc}")
    except oauth.OAuthError as exc:
        if not exc.invalid_grant:
            return Outcome(False, f"token refresh failed: {describe_failure(exc, cfg)}")
        try:
            current = store.get(account.id)
            if current is not None:
                store.disable(current, str(exc))
        except (OSError, AccountFileError) as save_exc:
            return Outcome(False, f"{exc}; could not disable the account: {describe_failure(save_exc, cfg)}")
        return Outcome(False, f"{exc} (account disabled; add it again with a new refresh token)")
    except Exception as exc:
        if grant is None:
            return Outcome(False, describe_failure(exc, cfg))
        problems.append(describe_failure(exc, cfg))

    try:
        saved = _save_refresh(store, account, grant, project, tier, quota)
    except (OSError, AccountFileError) as exc:
        return Outcome(False, f"cannot save: {describe_failure(exc, cfg)}")
    if saved is None:
        return Outcome(False, "the account was removed while it was being refreshed")
    if not project:
        return Outcome(False, "token refreshed, but " + "; ".join(problems))
    details = f"project {project}, tier {saved.subscription_tier or 'unknown'}, quota {quota_summary(saved)}"
    if problems:
        details += "; " + "; ".join(problems)
    verb = "refreshed and re-enabled" if account.disabled else "refreshed"
    return Outcome(True, f"{verb} {saved.email} ({details})")


def _save_refresh(
    store: AccountStore,
    account: Account,
    grant: oauth.TokenGrant,
    project: str | None,
    tier: str | None,
    quota: oauth.QuotaSnapshot | None,
) -> Account | None:
    """Apply the results to the file as it is now (a running server may have written it meanwhile)."""
    current = store.get(account.id)
    if current is None:
        return None
    now = time.time()
    current.apply_refresh(
        grant.access_token, grant.expires_in, now, refresh_token=grant.refresh_token, id_token=grant.id_token
    )
    if project:
        current.project_id = project
    current.oauth_client_key = account.oauth_client_key  # the client that just worked
    if current.disabled:  # only retried when named; a working token revives it
        current.enable()
    store_quota(current, tier, quota, now)
    store.save(current)
    return current


def set_proxy(store: AccountStore, target: str, url: str | None) -> int:
    """Write (or clear) the account's `proxy_url`; the URL is checked first and never printed (credentials)."""
    label = None
    if url is not None:
        try:
            label = parse_proxy(url).label
        except ProxyURLError as exc:
            raise UsageError(str(exc)) from None
    account = store.find(target)
    if account is None:
        _error(f"no account matches {target!r} (see 'agfast accounts list')")
        return EXIT_FAILURE
    account.proxy_url = url.strip() if url is not None else None
    if store.merge(account, (PROXY_FIELD,)) is None:
        _error(f"{account.email} was removed meanwhile")
        return EXIT_FAILURE
    if label is None:
        print(f"{account.email} ({account.id}): own proxy cleared", flush=True)
    else:
        print(f"{account.email} ({account.id}): calls go through {label}", flush=True)
    return EXIT_OK


def remove_account(store: AccountStore, target: str) -> int:
    account = store.find(target)
    if account is None or not store.remove(account.id):
        _error(f"no account matches {target!r} (see 'agfast accounts list')")
        return EXIT_FAILURE
    print(f"removed {account.email} ({account.id})")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------------
# Listing


def quota_summary(account: Account) -> str:
    """Lowest and highest remaining percentage across models: one glance tells whether it is spent."""
    percentages = [m.percentage for m in account.quota_models]
    if not percentages:
        return "unknown"
    low, high = min(percentages), max(percentages)
    span = f"{low}%" if low == high else f"{low}-{high}%"
    return f"{span} ({len(percentages)} models)"


def server_lockouts(cfg: config.Config) -> tuple[dict[str, list[dict[str, Any]]] | None, str]:
    """Lockouts live in the running server's memory: ask its admin API. (id → lockouts, or None; a note)."""
    url = f"{cfg.base_url}/api/accounts"
    key = cfg.admin_password or cfg.api_key
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    # No proxy from the environment: the server is on this machine, and its key must go nowhere else.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=SERVER_TIMEOUT) as answer:
            body = orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        exc.close()
        return None, f"lockouts unknown: agfast at {cfg.base_url} refused the admin key (HTTP {exc.code})"
    except (OSError, orjson.JSONDecodeError):
        return None, f"lockouts unknown: agfast is not running at {cfg.base_url}"
    found = {a["id"]: a.get("lockouts") or [] for a in body.get("accounts", []) if isinstance(a, dict)}
    return found, f"lockouts from agfast running at {cfg.base_url}"


def model_lines(account: Account, lockouts: list[dict[str, Any]] | None, now: float) -> list[str]:
    """Per-model quota with reset times, then the account's lockouts (None: the server could not be asked)."""
    lines = [f"{account.email} ({account.id})"]
    for model in sorted(account.quota_models, key=lambda m: m.name):
        reset = model.reset_time or "-"
        left = _seconds_until(model.reset_time, now)
        if left is not None:
            reset += f" (in {_duration(left)})"
        lines.append(f"  {model.name:<32} {model.percentage:>3}%  resets {reset}")
    if not account.quota_models:
        lines.append("  quota unknown (not fetched yet)")
    if lockouts is not None:
        for lock in lockouts:
            lines.append(
                f"  locked ({lock['scope']}): {lock['reason']} until {lock['until']} "
                f"({_duration(float(lock['seconds_left']))} left)"
            )
        if not lockouts:
            lines.append("  no lockouts")
    return lines


def list_accounts(store: AccountStore, as_json: bool, cfg: config.Config | None = None) -> int:
    now = time.time()
    accounts = sorted(store.load_all(), key=lambda a: a.email.casefold())
    live, note = server_lockouts(cfg) if cfg is not None and accounts else (None, "")
    if as_json:
        rows = [account_view(a, now) for a in accounts]
        for row, account in zip(rows, accounts):
            row["models"] = [
                {"name": m.name, "percentage": m.percentage, "reset_time": m.reset_time} for m in account.quota_models
            ]
            row["lockouts"] = None if live is None else live.get(account.id, [])
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    if not accounts:
        print(f"no accounts in {store.data_dir}; add one with: {ADD_HINT}")
        return EXIT_OK
    table = [("EMAIL", "ID", "TIER", "PROJECT", "STATUS", "QUOTA", "ACCESS TOKEN")]
    for account in accounts:
        ok, reason = usable(account, now)
        detail = None if ok else status_detail(account, reason)
        status = "ok" if ok else f"{reason}: {detail}" if detail else reason
        table.append(
            (
                account.email,
                account.id,
                account.subscription_tier or "-",
                account.project_id or "-",
                _clip(status, STATUS_WIDTH),
                quota_summary(account),
                _token_state(account.expiry_timestamp, now),
            )
        )
    print(_format_table(table))
    for account in accounts:
        print()
        print("\n".join(model_lines(account, None if live is None else live.get(account.id, []), now)))
    if note:
        print()
        print(note)
    return EXIT_OK


def _seconds_until(stamp: str | None, now: float) -> float | None:
    if not stamp:
        return None
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    left = at.timestamp() - now
    return left if left > 0 else None


def _format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _token_state(expiry: int, now: float) -> str:
    """Access tokens last an hour and are refreshed on use, so "expired" is normal, not an error."""
    if not expiry:
        return "none"
    if expiry > now:
        return f"expires in {_duration(expiry - now)}"
    return f"expired {_duration(now - expiry)} ago"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d"


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# Sign-in


class CallbackListener:
    """`login`'s one-shot loopback server: takes Google's redirect, shows the outcome in the browser tab."""

    def __init__(self) -> None:
        self.arrived: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self.outcome: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get(CALLBACK_PATH, self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    async def _callback(self, request: web.Request) -> web.Response:
        if self.arrived.done():
            return web.Response(status=409, text="This sign-in is over; start a new one.")
        self.arrived.set_result(dict(request.query))
        ok, text = await asyncio.shield(self.outcome)
        title = "Signed in" if ok else "Sign-in failed"
        return web.Response(status=200 if ok else 400, body=signin_page(title, text), content_type="text/html")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def read_pasted(loop: asyncio.AbstractEventLoop) -> asyncio.Future[str]:
    """The first line of stdin, read in a daemon thread (a blocked read must not keep the process alive)."""
    future: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        line = sys.stdin.readline()
        if line:  # at end of input nothing can be pasted any more, but the browser may still come back
            loop.call_soon_threadsafe(lambda: None if future.done() else future.set_result(line))

    threading.Thread(target=read, name="agfast-login-stdin", daemon=True).start()
    return future


def parse_pasted(text: str, state: str) -> dict[str, str]:
    """The redirected address (its query: code, state or error), or a bare code (for this flow's state)."""
    text = text.strip().strip("'\"")
    if not text:
        raise UsageError("nothing was pasted (expected the address the browser was sent to, or the code)")
    if "?" in text or text.startswith(("http://", "https://")):
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(text).query))
        if not query.get("code") and not query.get("error"):
            raise UsageError("the pasted address has no code= (paste the whole address the browser was sent to)")
        return query
    return {"code": text, "state": state}


async def login_command(
    client: UpstreamClient, store: AccountStore, no_browser: bool, timeout: float, key: str | None
) -> int:
    signin = SignIn(client.config, client, store)
    signin.ttl = timeout
    try:
        signin.oauth_client(key)
    except SignInError as exc:
        _error(f"cannot sign in: {exc}")
        return EXIT_FAILURE
    loop = asyncio.get_running_loop()
    listener = CallbackListener()
    try:
        url = signin.start(await listener.start(), key)
        state = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["state"][0]
        waiters: list[asyncio.Future[Any]] = [listener.arrived]
        if no_browser:
            print(
                f"Open this address in a browser and sign in with Google:\n\n{url}\n\nThen paste here the "
                "address the browser was sent to (it may show an error page; copy its address), or the code:",
                file=sys.stderr,
                flush=True,
            )
            waiters.append(read_pasted(loop))
        else:
            opened = webbrowser.open(url)
            print(
                f"{'Opened' if opened else 'Open'} Google's sign-in page in your browser; if it did not appear, "
                f"visit:\n{url}",
                file=sys.stderr,
                flush=True,
            )
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            _error(f"sign-in timed out after {timeout:g} s; nothing was added (run 'agfast accounts login' again)")
            listener.outcome.set_result((False, "The sign-in timed out; nothing was added."))
            return EXIT_FAILURE
        got = done.pop().result()
        try:
            query = got if isinstance(got, dict) else parse_pasted(got, state)
            signed = await signin.complete(query.get("state", ""), query.get("code"), query.get("error"))
        except (SignInError, UsageError) as exc:
            _error(f"sign-in failed: {exc}; nothing was added")
            if not listener.outcome.done():
                listener.outcome.set_result((False, f"{exc}. Nothing was added."))
            return EXIT_FAILURE
        line = f"{signed.verb} {signed.account.email} ({discovery_details(signed.found)})"
        listener.outcome.set_result((True, f"{line}. You can close this tab."))
        print(line, flush=True)
        return EXIT_OK
    finally:
        if not listener.outcome.done():
            listener.outcome.set_result((False, "The sign-in was abandoned."))
        await listener.close()


def signin_page(title: str, text: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>agfast sign-in</title></head><body "
        f"style='font-family:sans-serif;margin:3em'><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )


# ---------------------------------------------------------------------------------------------------------
# enable / disable / export / quota


def switch_account(store: AccountStore, target: str, on: bool) -> int:
    """Antigravity Tools' proxy switch; enabling also lifts a disable (the next refresh shows if it works)."""
    account = store.find(target)
    if account is None:
        _error(f"no account matches {target!r} (see 'agfast accounts list')")
        return EXIT_FAILURE
    if on:
        was_disabled = account.disabled
        account.set_proxy_disabled(False)
        account.enable()
        saved = store.merge(account, PROXY_FIELDS + DISABLE_FIELDS)
        note = (
            " (it had been disabled by Google's answer; if its token is dead it will be again)" if was_disabled else ""
        )
        verb = "enabled"
    else:
        account.set_proxy_disabled(True, SWITCH_OFF_REASON)
        saved = store.merge(account, PROXY_FIELDS)
        note, verb = "", "disabled"
    if saved is None:
        _error(f"{account.email} was removed meanwhile")
        return EXIT_FAILURE
    print(f"{verb} {account.email} ({account.id}){note}; a running agfast applies it within accounts_reload_interval")
    return EXIT_OK


def export_accounts(store: AccountStore, emails: str | None) -> int:
    accounts = sorted(store.load_all(), key=lambda a: a.email.casefold())
    if emails:
        wanted = {e.strip().casefold() for e in emails.split(",") if e.strip()}
        missing = wanted - {a.email.casefold() for a in accounts}
        if missing:
            _error(f"no account for {', '.join(sorted(missing))} (see 'agfast accounts list')")
            return EXIT_FAILURE
        accounts = [a for a in accounts if a.email.casefold() in wanted]
    _error(EXPORT_WARNING)
    doc = {"accounts": [{"email": a.email, "refresh_token": a.refresh_token} for a in accounts]}
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode(), flush=True)
    return EXIT_OK


def quota_view(account: Account) -> dict[str, Any]:
    """One account's quota as `quota --json` shows it."""
    quota = account.quota or {}
    groups = quota.get("quota_groups")
    return {
        "email": account.email,
        "tier": account.subscription_tier,
        "last_updated": account.quota_last_updated,
        "models": [
            {"name": m.name, "percentage": m.percentage, "reset_time": m.reset_time}
            for m in sorted(account.quota_models, key=lambda m: m.name)
        ],
        "windows": [
            {
                "group": g.get("displayName"),
                "window": b.get("window") or b.get("bucketId"),
                "remaining_fraction": b.get("remainingFraction"),
                "reset_time": b.get("resetTime"),
            }
            for g in (groups if isinstance(groups, list) else [])
            if isinstance(g, dict)
            for b in (g.get("buckets") or [])
            if isinstance(b, dict)
        ],
    }


def show_quota(store: AccountStore, target: str | None, as_json: bool) -> int:
    if target:
        found = store.find(target)
        if found is None:
            _error(f"no account matches {target!r} (see 'agfast accounts list')")
            return EXIT_FAILURE
        accounts = [found]
    else:
        accounts = sorted(store.load_all(), key=lambda a: a.email.casefold())
    views = [quota_view(a) for a in accounts]
    if as_json:
        print(orjson.dumps(views, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    if not views:
        print(f"no accounts in {store.data_dir}; add one with: {LOGIN_HINT}")
        return EXIT_OK
    now = time.time()
    blocks = []
    for view in views:
        stamp = f"as of {_iso(view['last_updated'])}" if view["last_updated"] else "never fetched"
        head = f"{view['email']}  tier {view['tier'] or 'unknown'}  ({stamp})"
        rows: list[tuple[str, ...]] = [("MODEL", "REMAINING", "RESETS")]
        rows += [(m["name"], f"{m['percentage']}%", _reset(m["reset_time"], now)) for m in view["models"]]
        for w in view["windows"]:
            fraction = w["remaining_fraction"]
            pct = f"{int(fraction * 100)}%" if isinstance(fraction, int | float) else "-"
            rows.append((f"[{w['group'] or 'quota'}: {w['window']}]", pct, _reset(w["reset_time"], now)))
        blocks.append(head + "\n" + (_format_table(rows) if len(rows) > 1 else "  no quota data yet"))
    print("\n\n".join(blocks))
    return EXIT_OK


def _reset(reset_time: Any, now: float) -> str:
    if not isinstance(reset_time, str) or not reset_time:
        return "-"
    try:
        at = datetime.fromisoformat(reset_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return reset_time
    return f"{reset_time} (in {_duration(at - now)})" if at > now else f"{reset_time} (passed)"


# ---------------------------------------------------------------------------------------------------------
# OAuth clients


def _mask(secret: str) -> str:
    return secret[:4] + "…" if len(secret) > 8 else "…"


def client_command(cfg: config.Config, args: argparse.Namespace) -> int:
    sub = getattr(args, "client_command", None) or "list"
    path = cfg.config_path
    if sub == "add":
        secret = args.client_secret
        if secret == "-":
            secret = getpass.getpass("client secret: ") if sys.stdin.isatty() else sys.stdin.read()
        secret = secret.strip()
        if not secret or not args.client_id.strip():
            raise UsageError("--client-id and --client-secret must not be empty")
        if not config.CLIENT_KEY_PATTERN.fullmatch(args.key):
            raise UsageError("KEY must be letters, digits, '.', '_' or '-' (at most 64)")
        config.add_client_to_file(path, config.OAuthClient(args.key, args.client_id.strip(), secret, args.label or ""))
        print(f"added OAuth client {args.key} ({args.client_id.strip()}) to {path}")
        return EXIT_OK
    if sub == "remove":
        if not config.remove_client_from_file(path, args.key):
            where = ""
            if args.key == config.DEFAULT_CLIENT_KEY:
                where = " (it is oauth.client_id / oauth.client_secret: edit or unset those)"
            elif any(c.key == args.key for c in cfg.oauth_clients):
                where = f" (it comes from {config.ANTIGRAVITY_CLIENTS_ENV} or AGFAST_OAUTH_CLIENTS)"
            _error(f"{path} has no [[oauth.clients]] entry with key {args.key!r}{where}")
            return EXIT_FAILURE
        print(f"removed OAuth client {args.key} from {path}")
        return EXIT_OK
    chain = cfg.oauth_client_chain()
    if not chain:
        print(oauth.NO_CLIENT_MESSAGE)
        return EXIT_OK
    rows = [("KEY", "CLIENT ID", "SECRET", "LABEL")]
    rows += [(c.key, c.client_id, _mask(c.client_secret), c.label or "-") for c in chain]
    print(_format_table(rows))
    return EXIT_OK


def discovery_details(found: Discovery) -> str:
    details = f"project {found.project}, tier {found.tier or 'unknown'}"
    if found.quota is not None:
        return details + f", {len(found.quota.models)} models"
    return details + f"; quota not fetched ({found.quota_error}), run 'agfast accounts refresh' later"
