"""The admin API under `/api`: JSON in and out, `{"error": "..."}` on failure, always behind the admin secret.

What an operator needs while agfast serves (reference §1.2): the proxy's on/off switch, lockouts and session
bindings, the accounts (never their tokens), per-model quota, and the settings that can change live. The
routes are one table (`AdminApi.table`): adding one is a row. `{id}` is one path segment, handed to the
handler as its third argument. Another module's routes join with `AdminApi.add`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from agfast import __version__
from agfast.api.operations import OperationsApi, OpsServices
from agfast.config import Config, ConfigError, LiveConfig, public_view
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.http.router import DELETE, GET, POST, Router
from agfast.upstream import oauth
from agfast.upstream.accounts import PROXY_FIELDS, Account, AccountFileError, AccountStore, account_view
from agfast.upstream.client import UpstreamClient
from agfast.upstream.onboarding import discover, save_discovery
from agfast.upstream.pool import AccountPool
from agfast.upstream.proxy import ProxyFailure
from agfast.upstream.signin import SignIn, SignInError


class AdminServices(OpsServices, Protocol):
    """What the admin API uses of the application (agfast.app.App), so `api/` imports nothing above it."""

    config: Config
    live: LiveConfig
    pool: AccountPool
    store: AccountStore
    client: UpstreamClient
    signin: SignIn
    proxy_running: bool

    def set_running(self, running: bool) -> None: ...


Handler = Callable[[Request, Response], Any]
IdHandler = Callable[[Request, Response, str], Any]
ID = "{id}"
# Longest refresh token we take (Google's are ~100 characters); a bigger body field is a mistake, not a token.
MAX_REFRESH_TOKEN = 4096


def _json_body(req: Request) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body); anything else is a 400 saying what is wrong."""
    if not req.body.strip():
        return {}
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"Request body is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(body, dict):
        raise HttpError(400, "Request body must be a JSON object.")
    return body


def _send(resp: Response, body: Any, status: int = 200) -> None:
    resp.send(status, orjson.dumps(body))


class AdminApi:
    """Handlers over the running App; each reads or changes it and answers with what is now true."""

    __slots__ = ("app", "live", "ops")

    def __init__(self, app: AdminServices) -> None:
        self.app = app
        self.live: LiveConfig = app.live
        self.ops = OperationsApi(app)

    def table(self) -> list[tuple[bytes, str, Handler | IdHandler]]:
        """(method, path, handler): the whole admin API in one screen."""
        ops = self.ops
        return [
            (GET, "/api/proxy/status", self.proxy_status),
            (POST, "/api/proxy/start", self.proxy_start),
            (POST, "/api/proxy/stop", self.proxy_stop),
            (DELETE, "/api/proxy/rate-limits", self.clear_rate_limits),
            (DELETE, "/api/proxy/rate-limits/{id}", self.clear_account_rate_limits),
            (POST, "/api/proxy/session-bindings/clear", self.clear_session_bindings),
            (GET, "/api/proxy/stats", ops.proxy_stats),
            (GET, "/api/proxy/preferred-account", self.preferred_account),
            (POST, "/api/proxy/preferred-account", self.set_preferred_account),
            (GET, "/api/accounts", self.list_accounts),
            (POST, "/api/accounts", self.add_account),
            (POST, "/api/accounts/refresh", self.refresh_accounts),
            (POST, "/api/accounts/oauth/start", self.oauth_start),
            (DELETE, "/api/accounts/{id}", self.delete_account),
            (POST, "/api/accounts/{id}/toggle-proxy", self.toggle_proxy),
            (GET, "/api/accounts/{id}/quota", self.account_quota),
            (GET, "/api/config", self.get_config),
            (POST, "/api/config", self.set_config),
            (GET, "/api/logs", ops.logs),
            (GET, "/api/logs/count", ops.logs_count),
            (POST, "/api/logs/clear", ops.clear_logs),
            (GET, "/api/logs/{id}", ops.log),
            (GET, "/api/stats/summary", ops.stats_summary),
            (GET, "/api/stats/hourly", ops.stats_hourly),
            (GET, "/api/stats/daily", ops.stats_daily),
            (GET, "/api/stats/accounts", ops.stats_accounts),
            (GET, "/api/stats/models", ops.stats_models),
            (GET, "/api/stats/keys", ops.stats_keys),
            (GET, "/api/security/events", ops.security_events),
            (GET, "/api/security/stats", ops.security_stats),
            (GET, "/api/security/lists", ops.security_lists),
        ]

    def register(self, router: Router) -> None:
        router.add((GET,), "/api/health", health, Family.ADMIN, public=True)
        for method, path, handler in self.table():
            self.add(router, method, path, handler)

    @staticmethod
    def add(router: Router, method: bytes, path: str, handler: Handler | IdHandler) -> None:
        """One admin route: admin auth, admin error shape; a path with `{id}` passes the id to the handler."""
        if ID not in path:
            router.add((method,), path, handler, Family.ADMIN, admin=True)  # type: ignore[arg-type]
            return
        prefix, _, suffix = path.partition(ID)
        router.add_pattern((method,), prefix, suffix, _with_id(prefix, suffix, handler), Family.ADMIN, admin=True)

    # -- proxy ---------------------------------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        app = self.app
        return {
            "running": app.proxy_running,
            "port": app.config.port,
            "base_url": app.config.base_url,
            "active_accounts": app.pool.size,
            "monitor": app.monitor.status() if app.monitor is not None else {"error": app.monitor_error},
        }

    def proxy_status(self, req: Request, resp: Response) -> None:
        _send(resp, self._status())

    def proxy_start(self, req: Request, resp: Response) -> None:
        self.app.set_running(True)
        self.app.pool.load()  # like the reference: starting re-reads the accounts
        _send(resp, self._status())

    def proxy_stop(self, req: Request, resp: Response) -> None:
        self.app.set_running(False)
        _send(resp, self._status())

    def clear_rate_limits(self, req: Request, resp: Response) -> None:
        _send(resp, {"cleared": self.app.pool.clear_lockouts()})

    def clear_account_rate_limits(self, req: Request, resp: Response, account_id: str) -> None:
        account = self._account(account_id)
        _send(resp, {"cleared": self.app.pool.clear_lockouts(account.id)})

    def clear_session_bindings(self, req: Request, resp: Response) -> None:
        _send(resp, {"cleared": self.app.pool.clear_bindings()})

    def preferred_account(self, req: Request, resp: Response) -> None:
        _send(resp, {"accountId": self.app.config.preferred_account_id})

    def set_preferred_account(self, req: Request, resp: Response) -> None:
        body = _json_body(req)
        if "accountId" not in body:
            raise HttpError(400, 'Body must be {"accountId": "<id or email>"} or {"accountId": null} to clear.')
        wanted = body["accountId"]
        if wanted is not None:
            if not isinstance(wanted, str) or not wanted:
                raise HttpError(400, "accountId must be an account id or email, or null.")
            found = self.app.store.find(wanted)
            if found is None:
                raise HttpError(404, f"No account {wanted!r}; GET /api/accounts lists them.")
            wanted = found.id
        self._update_config({"preferred_account_id": wanted})
        _send(resp, {"accountId": wanted})

    # -- accounts ------------------------------------------------------------------------------------------

    def _account(self, account_id: str) -> Account:
        account = self.app.store.get(account_id)
        if account is None:
            raise HttpError(404, f"No account with id {account_id!r}; GET /api/accounts lists them.")
        return account

    def _view(self, account: Account, now: float) -> dict[str, Any]:
        """What the API shows of an account: everything an operator needs, never a token."""
        view = account_view(account, now)
        view["in_pool"] = account.id in self.app.pool.members
        view["lockouts"] = self.app.pool.lockouts(account.id)
        return view

    def _accounts(self) -> dict[str, Any]:
        now = time.time()
        accounts = sorted(self.app.store.load_all(), key=lambda a: a.email.casefold())
        return {"accounts": [self._view(a, now) for a in accounts]}

    def list_accounts(self, req: Request, resp: Response) -> None:
        _send(resp, self._accounts())

    async def add_account(self, req: Request, resp: Response) -> None:
        """`agfast accounts add` over HTTP: refresh, userinfo, project and quota, saved; joins the pool now."""
        body = _json_body(req)
        refresh = body.get("refreshToken")
        if not isinstance(refresh, str) or not refresh.strip() or len(refresh) > MAX_REFRESH_TOKEN:
            raise HttpError(400, 'Body must be {"refreshToken": "1//…"}.')
        refresh = refresh.strip()
        if refresh.startswith("ya29."):
            raise HttpError(400, "That is an access token (ya29.…), not a refresh token (1//…).")
        app = self.app
        try:
            found = await discover(app.client, refresh)
        except oauth.OAuthError as exc:
            raise HttpError(400, f"Cannot add the account: {exc}{oauth.client_hint(exc)}") from None
        except oauth.AccountSetupError as exc:
            raise HttpError(400, f"Cannot add the account: {exc}") from None
        except TimeoutError:
            raise HttpError(504, f"Google did not answer within {app.config.request_timeout:g} s.") from None
        except ProxyFailure as exc:
            raise HttpError(exc.status, exc.message) from None
        loop = asyncio.get_running_loop()
        account, verb = await loop.run_in_executor(None, save_discovery, app.store, found, refresh)
        app.pool.load()
        _send(resp, {"result": verb, "account": self._view(account, time.time())})

    async def refresh_accounts(self, req: Request, resp: Response) -> None:
        """Quota (and tier) of every pooled account fetched now."""
        await self.app.pool.refresh_quotas()
        _send(resp, self._accounts())

    def oauth_start(self, req: Request, resp: Response) -> None:
        """`{"client"?: key}` → `{"url"}`: Google's consent page; Google sends the browser back to this server's
        `/auth/callback`, which adds the account to the pool."""
        client = _json_body(req).get("client")
        if client is not None and not isinstance(client, str):
            raise HttpError(400, "client must be the key of a configured OAuth client.")
        signin = self.app.signin
        try:
            url = signin.start(self.app.config.base_url + "/auth/callback", client)
        except SignInError as exc:
            raise HttpError(400, f"Cannot start a sign-in: {exc}") from None
        _send(resp, {"url": url})

    def delete_account(self, req: Request, resp: Response, account_id: str) -> None:
        account = self._account(account_id)
        app = self.app
        app.pool.clear_lockouts(account.id)
        try:
            app.store.remove(account.id)
        except (OSError, AccountFileError) as exc:
            raise HttpError(500, f"Cannot remove the account file: {exc}") from None
        app.pool.load()
        _send(resp, {"removed": account.id, "email": account.email})

    def toggle_proxy(self, req: Request, resp: Response, account_id: str) -> None:
        """`{"enable": bool, "reason"?}`, or no body to flip; a proxy-disabled account is never selected."""
        body = _json_body(req)
        account = self._account(account_id)
        enable = body.get("enable", account.proxy_disabled)
        reason = body.get("reason")
        if not isinstance(enable, bool):
            raise HttpError(400, "enable must be true or false.")
        if reason is not None and not isinstance(reason, str):
            raise HttpError(400, "reason must be a string.")
        account.set_proxy_disabled(not enable, reason)
        saved = self.app.store.merge(account, PROXY_FIELDS)
        if saved is None:
            raise HttpError(404, f"No account with id {account_id!r} (removed meanwhile).")
        self.app.pool.load()
        _send(resp, self._view(saved, time.time()))

    def account_quota(self, req: Request, resp: Response, account_id: str) -> None:
        """Every model's remaining fraction and reset time, and the account's current lockouts."""
        account = self._account(account_id)
        models = [
            {
                "name": m.name,
                "remaining_fraction": m.percentage / 100,
                "percentage": m.percentage,
                "reset_time": m.reset_time,
            }
            for m in account.quota_models
        ]
        _send(
            resp,
            {
                "id": account.id,
                "email": account.email,
                "tier": account.subscription_tier,
                "last_updated": account.quota_last_updated,
                "is_forbidden": account.is_forbidden,
                "models": models,
                "lockouts": self.app.pool.lockouts(account.id),
            },
        )

    # -- config --------------------------------------------------------------------------------------------

    def get_config(self, req: Request, resp: Response) -> None:
        _send(resp, public_view(self.app.config))

    def set_config(self, req: Request, resp: Response) -> None:
        """Live settings, validated all at once (nothing applied when one is wrong), applied and saved."""
        body = _json_body(req)
        if not body:
            raise HttpError(400, 'Body must be a JSON object of settings, e.g. {"auth_mode": "strict"}.')
        changed = self._update_config(body)
        _send(resp, {"changed": sorted(changed), "config": public_view(self.app.config)})

    def _update_config(self, values: dict[str, Any]) -> list[str]:
        try:
            return self.live.update(values)
        except ConfigError as exc:
            raise HttpError(400, str(exc)) from None


HEALTH_BODY = orjson.dumps({"status": "ok", "version": __version__})


def health(req: Request, resp: Response) -> None:
    """`GET /api/health`: public, like `/healthz`."""
    resp.send(200, HEALTH_BODY)


def _with_id(prefix: str, suffix: str, handler: Handler | IdHandler) -> Handler:
    """A (req, resp) handler that hands `handler` the `{id}` segment of the path."""
    end = -len(suffix) if suffix else None

    def with_id(req: Request, resp: Response) -> Awaitable[None] | None:
        return handler(req, resp, req.path[len(prefix) : end])  # type: ignore[call-arg]

    if inspect.iscoroutinefunction(handler):

        async def with_id_async(req: Request, resp: Response) -> None:
            await handler(req, resp, req.path[len(prefix) : end])  # type: ignore[call-arg]

        return with_id_async
    return with_id
