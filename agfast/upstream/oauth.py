"""Account discovery and upkeep against Google: token refresh, userinfo, project id, tier and quota.

No hard-coded fallback project: an account whose project cannot be found is an account error (spec §3).
Error texts never carry tokens; Google's own error descriptions are passed on (they name no secret).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from agfast.config import Config
from agfast.upstream.client import TransportError, UpstreamClient

log = logging.getLogger("agfast.oauth")

# OAuth errors that mean "wrong or missing OAuth client", not "dead token".
CLIENT_ERRORS = frozenset({"invalid_request", "invalid_client", "unauthorized_client"})
CLIENT_HINT = (
    " — is oauth.client_id (AGFAST_OAUTH_CLIENT_ID) the OAuth client that issued this account's refresh token?"
)
# Antigravity's IDE identity for loadCodeAssist (reference §4.5).
LOAD_CODE_ASSIST_BODY = {
    "metadata": {"ideType": "ANTIGRAVITY", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}
}
# Quota names agfast keeps from fetchAvailableModels (reference §4.6).
QUOTA_PREFIXES = ("gemini", "claude", "gpt", "image", "imagen")
# Tier names ordered best first (reference §4.8: ULTRA < PRO < FREE < unknown).
TIER_RANKS = (("ULTRA", 0), ("PRO", 1), ("FREE", 2))


class OAuthError(Exception):
    """Token refresh failed; `invalid_grant` means the refresh token is dead and the account must be disabled."""

    def __init__(self, status: int, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.status = status
        self.error = error
        self.description = description

    @property
    def invalid_grant(self) -> bool:
        return self.error == "invalid_grant"


def client_hint(exc: OAuthError) -> str:
    """A pointer at the setting to fix when Google refused the OAuth client rather than the token."""
    return CLIENT_HINT if exc.error in CLIENT_ERRORS else ""


class AccountSetupError(Exception):
    """userinfo / project / quota lookup failed for an account (it rotates out and the reason is reported)."""


@dataclass(slots=True)
class TokenGrant:
    access_token: str
    expires_in: int
    refresh_token: str | None = None
    id_token: str | None = None


@dataclass(slots=True)
class QuotaSnapshot:
    models: list[dict[str, Any]] = field(default_factory=list)
    forwarding: dict[str, str] = field(default_factory=dict)


async def refresh_token(session: aiohttp.ClientSession, config: Config, token: str) -> TokenGrant:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    if config.oauth_client_id:
        form["client_id"] = config.oauth_client_id
    if config.oauth_client_secret:
        form["client_secret"] = config.oauth_client_secret
    headers = {"User-Agent": f"vscode/1.X.X (Antigravity/{config.client_version})"}
    try:
        async with session.post(config.oauth_token_url, data=form, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("token endpoint %s unreachable: %s: %s", config.oauth_token_url, type(exc).__name__, exc)
        raise OAuthError(0, "transport_error", "Google's token endpoint could not be reached") from None
    doc = _json(raw)
    if status != 200 or not isinstance(doc.get("access_token"), str):
        error = str(doc.get("error") or f"http_{status}")
        description = str(doc.get("error_description") or "")
        raise OAuthError(status, error, description[:300])
    return TokenGrant(
        access_token=doc["access_token"],
        expires_in=int(doc.get("expires_in") or 3599),
        refresh_token=doc.get("refresh_token") if isinstance(doc.get("refresh_token"), str) else None,
        id_token=doc.get("id_token") if isinstance(doc.get("id_token"), str) else None,
    )


async def userinfo(session: aiohttp.ClientSession, config: Config, access_token: str) -> dict[str, Any]:
    try:
        async with session.get(config.userinfo_url, headers={"Authorization": "Bearer " + access_token}) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("userinfo endpoint %s unreachable: %s: %s", config.userinfo_url, type(exc).__name__, exc)
        raise AccountSetupError("Google's userinfo endpoint could not be reached") from None
    doc = _json(raw)
    if status != 200 or not isinstance(doc.get("email"), str):
        raise AccountSetupError(f"userinfo failed: HTTP {status} {_google_message(doc)}".strip())
    return doc


async def load_code_assist(
    client: UpstreamClient, access_token: str, proxy: str | None = None
) -> tuple[str, str | None]:
    """(project id, subscription tier) from loadCodeAssist (through the account's `proxy`, if it has one)."""
    try:
        status, doc, _ = await client.call_json("loadCodeAssist", LOAD_CODE_ASSIST_BODY, access_token, proxy=proxy)
    except TransportError as exc:
        log.warning("loadCodeAssist unreachable: %s", exc)
        raise AccountSetupError("Google could not be reached (loadCodeAssist)") from None
    if status != 200 or not isinstance(doc, dict):
        raise AccountSetupError(f"loadCodeAssist failed: HTTP {status} {_google_message(doc)}".strip())
    project = doc.get("cloudaicompanionProject")
    if isinstance(project, dict):
        project = project.get("id") or project.get("name")
    if not isinstance(project, str) or not project:
        raise AccountSetupError("loadCodeAssist returned no project for this account (is it onboarded?)")
    return project, _tier(doc)


def _tier(doc: dict[str, Any]) -> str | None:
    """paidTier, else currentTier, else the default allowed tier marked restricted (reference §4.5)."""
    for key in ("paidTier", "currentTier"):
        tier = doc.get(key)
        if isinstance(tier, dict) and (tier.get("name") or tier.get("id")):
            if key == "currentTier" and doc.get("ineligibleTiers"):
                continue
            return str(tier.get("name") or tier.get("id"))
    for tier in doc.get("allowedTiers") or ():
        if isinstance(tier, dict) and tier.get("isDefault"):
            return f"{tier.get('name') or tier.get('id')} (Restricted)"
    return None


def tier_rank(tier: str | None) -> int:
    upper = (tier or "").upper()
    for marker, rank in TIER_RANKS:
        if marker in upper:
            return rank
    return len(TIER_RANKS)


async def fetch_quota(
    client: UpstreamClient, access_token: str, project: str | None, proxy: str | None = None
) -> QuotaSnapshot:
    payload: dict[str, Any] = {"project": project} if project else {}
    try:
        status, doc, _ = await client.call_json("fetchAvailableModels", payload, access_token, project, proxy)
        if status == 403 and project:
            status, doc, _ = await client.call_json("fetchAvailableModels", {}, access_token, proxy=proxy)
    except TransportError as exc:
        log.warning("fetchAvailableModels unreachable: %s", exc)
        raise AccountSetupError("Google could not be reached (fetchAvailableModels)") from None
    if status != 200 or not isinstance(doc, dict):
        raise AccountSetupError(f"fetchAvailableModels failed: HTTP {status} {_google_message(doc)}".strip())
    snapshot = QuotaSnapshot()
    models = doc.get("models")
    for name, info in models.items() if isinstance(models, dict) else ():
        if not isinstance(name, str) or not name.lower().startswith(QUOTA_PREFIXES) or not isinstance(info, dict):
            continue
        quota = info.get("quotaInfo")
        if not isinstance(quota, dict):
            quota = {}
        fraction = quota.get("remainingFraction")
        entry: dict[str, Any] = {
            "name": name,
            "percentage": math.floor(float(fraction) * 100) if isinstance(fraction, int | float) else 0,
            "reset_time": quota.get("resetTime") or "",
        }
        for src, dst in (
            ("displayName", "display_name"),
            ("supportsImages", "supports_images"),
            ("supportsThinking", "supports_thinking"),
            ("thinkingBudget", "thinking_budget"),
            ("recommended", "recommended"),
            ("maxTokens", "max_tokens"),
            ("maxOutputTokens", "max_output_tokens"),
            ("supportedMimeTypes", "supported_mime_types"),
        ):
            if src in info:
                entry[dst] = info[src]
        snapshot.models.append(entry)
    deprecated = doc.get("deprecatedModelIds")
    for old, info in deprecated.items() if isinstance(deprecated, dict) else ():
        new = info.get("newModelId") if isinstance(info, dict) else None
        if isinstance(old, str) and isinstance(new, str) and new:
            snapshot.forwarding[old] = new
    return snapshot


def _json(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _google_message(doc: Any) -> str:
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or "")[:300]
        if isinstance(err, str):
            return err
    return ""
