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


async def discover(client: UpstreamClient, refresh: str) -> Discovery:
    """refresh → userinfo → loadCodeAssist → fetchAvailableModels; only the quota step may fail softly."""
    cfg = client.config
    async with asyncio.timeout(cfg.request_timeout):
        grant = await oauth.refresh_token(client.session_for(cfg.oauth_token_url), cfg, refresh)
        info = await oauth.userinfo(client.session_for(cfg.userinfo_url), cfg, grant.access_token)
        project, tier = await oauth.load_code_assist(client, grant.access_token)
        quota: oauth.QuotaSnapshot | None = None
        quota_error: str | None = None
        try:
            quota = await oauth.fetch_quota(client, grant.access_token, project)
        except oauth.AccountSetupError as exc:
            quota_error = str(exc)
    name = info.get("name")
    return Discovery(grant, info["email"], name if isinstance(name, str) else None, project, tier, quota, quota_error)


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
