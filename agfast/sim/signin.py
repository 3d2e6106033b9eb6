"""Google's sign-in as the simulator plays it: the consent page, authorization codes and PKCE (RFC 7636).

The authorization endpoint approves at once (no page to click) and redirects to `redirect_uri` with a code and
the caller's `state`; it denies (`error=access_denied`) when the query carries `sim_consent=deny` or the
simulator's `consent` is "deny". `login_hint` (or the simulator's `signin_email`) picks who signs in. Codes
are single-use, expire, and are bound to the client, the redirect URI and the S256 challenge; the token
endpoint checks all three, as Google does, so a client that skips PKCE or mixes up its state cannot pass.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import urllib.parse
from dataclasses import dataclass

__all__ = ["AuthCode", "CodeBook", "s256"]

# Google's authorization codes are short-lived; ten minutes is what its docs allow for the exchange.
CODE_TTL = 600.0


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass(slots=True)
class AuthCode:
    email: str
    client_id: str
    redirect_uri: str
    challenge: str
    expires: float
    used: bool = False


class CodeBook:
    """Authorization codes issued by the consent page and redeemed (once) at the token endpoint."""

    def __init__(self, ttl: float = CODE_TTL) -> None:
        self.ttl = ttl
        self._codes: dict[str, AuthCode] = {}

    def issue(self, email: str, client_id: str, redirect_uri: str, challenge: str) -> str:
        code = "4/0Asim-" + secrets.token_urlsafe(32)
        self._codes[code] = AuthCode(email, client_id, redirect_uri, challenge, time.time() + self.ttl)
        return code

    def redeem(self, code: str, client_id: str, redirect_uri: str, verifier: str) -> tuple[AuthCode | None, str, str]:
        """(the code, "", "") when every check passes, else (None, oauth error, description) as Google words it."""
        entry = self._codes.get(code)
        if entry is None:
            return None, "invalid_grant", "Malformed auth code."
        if entry.used or time.time() >= entry.expires:
            return None, "invalid_grant", "Bad Request"
        if entry.client_id != client_id:
            return None, "unauthorized_client", "Unauthorized"
        if entry.redirect_uri != redirect_uri:
            return None, "redirect_uri_mismatch", "Bad Request"
        if not verifier:
            return None, "invalid_grant", "Missing code verifier."
        if s256(verifier) != entry.challenge:
            return None, "invalid_grant", "Invalid code verifier."
        entry.used = True
        return entry, "", ""


def redirect_with(redirect_uri: str, params: dict[str, str]) -> str:
    sep = "&" if urllib.parse.urlsplit(redirect_uri).query else "?"
    return redirect_uri + sep + urllib.parse.urlencode(params)


def loopback_redirect(uri: str) -> bool:
    """Desktop clients may only redirect to a loopback address over http (Google's rule for installed apps)."""
    parts = urllib.parse.urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")
