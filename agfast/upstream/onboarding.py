"""Turning a refresh token into a saved account: who it is, its project, tier and quota.

Shared by `agfast accounts add/import` and `agfast --demo`. All network work happens before anything is
written, so a failed discovery leaves the data dir untouched; only the quota step may fail softly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from agfast.upstream import oauth
from agfast.upstream.accounts import Account, AccountStore
from agfast.upstream.client import UpstreamClient


@dataclass(slots=True)
class Discovery:
    """Google's view of one refresh token: who it belongs to, its project, tier and quota."""

    grant: oauth.TokenGrant
    email: str
    name: str | None
    project: str
    tier: str | None
    quota: oauth.QuotaSnapshot | None
    quota_error: str | None
    # The OAuth client that issued the token (saved as the account's oauth_client_key).
    client_key: str | None = None


async def discover(client: UpstreamClient, refresh: str) -> Discovery:
    """refresh → userinfo → loadCodeAssist → fetchAvailableModels; only the quota step may fail softly."""
    async with asyncio.timeout(client.config.request_timeout):
        grant, client_key = await oauth.refresh_any(
            client.session_for(client.config.oauth_token_url), client.config, refresh
        )
    return await discover_grant(client, grant, client_key)


async def discover_grant(client: UpstreamClient, grant: oauth.TokenGrant, client_key: str | None) -> Discovery:
    """What `discover` does after the refresh, for a grant obtained otherwise (a sign-in's code exchange)."""
    cfg = client.config
    async with asyncio.timeout(cfg.request_timeout):
        info = await oauth.userinfo(client.session_for(cfg.userinfo_url), cfg, grant.access_token)
        project, tier = await oauth.load_code_assist(client, grant.access_token)
        quota: oauth.QuotaSnapshot | None = None
        quota_error: str | None = None
        try:
            quota = await oauth.fetch_quota(client, grant.access_token, project)
        except oauth.AccountSetupError as exc:
            quota_error = str(exc)
    name = info.get("name")
    name = name if isinstance(name, str) else None
    return Discovery(grant, info["email"], name, project, tier, quota, quota_error, client_key)


def set_tier(account: Account, tier: str) -> None:
    """Store the tier without touching the quota models (Account only sets the tier with a full quota)."""
    quota = account.quota
    if quota is None:
        quota = account.raw["quota"] = {"models": [], "last_updated": 0, "is_forbidden": False}
    quota["subscription_tier"] = tier


def store_quota(account: Account, tier: str | None, quota: oauth.QuotaSnapshot | None, now: float) -> None:
    if quota is not None:
        account.set_quota(quota.models, now, subscription_tier=tier, forwarding_rules=quota.forwarding)
    elif tier:
        set_tier(account, tier)


def save_discovery(store: AccountStore, found: Discovery, refresh: str) -> tuple[Account, str]:
    """Upsert by email; returns the account and "added" / "updated". Runs without an await: atomic here."""
    now = time.time()
    previous = _by_email(store, found.email)
    grant = found.grant
    account = store.upsert(
        found.email,
        grant.refresh_token or refresh,
        access_token=grant.access_token,
        expires_in=grant.expires_in,
        name=found.name,
        project_id=found.project,
        now=now,
    )
    account.apply_refresh(grant.access_token, grant.expires_in, now, id_token=grant.id_token)
    if found.client_key:
        account.oauth_client_key = found.client_key
    verb = "added" if previous is None else "updated"
    if account.disabled:  # the same token was disabled earlier, and Google accepts it now
        account.enable()
    if previous is not None and previous.disabled:
        verb += " and re-enabled"
    store_quota(account, found.tier, found.quota, now)
    store.save(account)
    return account, verb


def _by_email(store: AccountStore, email: str) -> Account | None:
    wanted = email.casefold()
    return next((a for a in store.load_all() if a.email.casefold() == wanted), None)
