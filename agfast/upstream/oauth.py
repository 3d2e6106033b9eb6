"""Account discovery and upkeep against Google: token refresh, userinfo, project id, tier and quota.

No hard-coded fallback project: an account whose project cannot be found is an account error (spec §3).
Error texts never carry tokens; Google's own error descriptions are passed on (they name no secret).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from agfast.config import Config, OAuthClient
from agfast.upstream.client import TransportError, UpstreamClient

log = logging.getLogger("agfast.oauth")

# OAuth errors that mean "wrong or missing OAuth client", not "dead token".
CLIENT_ERRORS = frozenset({"invalid_request", "invalid_client", "unauthorized_client"})
CLIENT_HINT = (
    " — is oauth.client_id (AGFAST_OAUTH_CLIENT_ID) the OAuth client that issued this account's refresh token?"
)
# Google refused the client, not the token: the next configured client may be the one that issued it (§4.4).
NEXT_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
NO_CLIENT = "no_oauth_client"
NO_CLIENT_MESSAGE = (
    "no OAuth client configured (agfast ships none): set oauth.client_id and oauth.client_secret in "
    "config.toml, or AGFAST_OAUTH_CLIENT_ID and AGFAST_OAUTH_CLIENT_SECRET, or add one with "
    "'agfast accounts client add' (Antigravity Tools' ANTIGRAVITY_OAUTH_CLIENTS is read too)"
)
# What `accounts login` asks Google for (reference §4.3).
SIGNIN_SCOPES = " ".join(
    (
        "openid",
        "https://www.googleapis.com/auth/cloud-platform",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
        "https://www.googleapis.com/auth/cclog",
        "https://www.googleapis.com/auth/experimentsandconfigs",
    )
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


def client_order(config: Config, preferred: str | None) -> list[OAuthClient]:
    """The configured clients, the one that issued the account's token (if known) first."""
    chain = config.oauth_client_chain()
    if not chain:
        raise OAuthError(0, NO_CLIENT, NO_CLIENT_MESSAGE)
    return sorted(chain, key=lambda c: c.key != preferred)


async def refresh_any(
    session: aiohttp.ClientSession, config: Config, token: str, preferred: str | None = None
) -> tuple[TokenGrant, str]:
    """Refresh with the account's own client, then each other one on invalid_client / unauthorized_client (§4.4);
    returns the grant and the key of the client that worked."""
    clients = client_order(config, preferred)
    for i, client in enumerate(clients):
        try:
            return await refresh_token(session, config, token, client), client.key
        except OAuthError as exc:
            if exc.error not in NEXT_CLIENT_ERRORS or i == len(clients) - 1:
                raise
            log.info("OAuth client %r refused the token (%s); trying the next one", client.key, exc.error)
    raise AssertionError("unreachable")  # pragma: no cover


def client_to_remember(config: Config, previous: str | None, worked: str) -> str | None:
    """The account's new oauth_client_key: the client that worked, unless the file names a client agfast does
    not know (Antigravity Tools' own): that one is kept, so the desktop app still finds its client."""
    if previous is None or any(c.key == previous for c in config.oauth_client_chain()):
        return worked
    return previous


async def refresh_token(
    session: aiohttp.ClientSession, config: Config, token: str, client: OAuthClient | None = None
) -> TokenGrant:
    """One refresh with one client (the first configured when none is named)."""
    if client is None:
        client = client_order(config, None)[0]
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
    }
    return await _token_call(session, config, form)


async def exchange_code(
    session: aiohttp.ClientSession, config: Config, client: OAuthClient, code: str, verifier: str, redirect_uri: str
) -> TokenGrant:
    """The sign-in's authorization code (with its PKCE verifier) → tokens (§4.3); must include a refresh token."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": redirect_uri,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
    }
    grant = await _token_call(session, config, form)
    if not grant.refresh_token:
        raise OAuthError(200, "no_refresh_token", "Google returned no refresh token (was prompt=consent dropped?)")
    return grant


def pkce_challenge(verifier: str) -> str:
    """S256: base64url(sha256(verifier)) without padding (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorization_url(config: Config, client: OAuthClient, redirect_uri: str, state: str, challenge: str) -> str:
    """Google's consent page for an offline grant (reference §4.3), PKCE S256."""
    query = {
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": SIGNIN_SCOPES,
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    sep = "&" if "?" in config.oauth_auth_url else "?"
    return config.oauth_auth_url + sep + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


async def _token_call(session: aiohttp.ClientSession, config: Config, form: dict[str, str]) -> TokenGrant:
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
