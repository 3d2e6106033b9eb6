"""API-key checks per auth mode (off / strict / all_except_health; `auto` is resolved in config).

Admin routes (`/api/…`) are guarded in every mode, by `admin_password` when set, else by the api key.

The dashboard's session cookie (`http/sessions.py`) also passes the admin check, when no key is sent and
the caller says which method it checks: a state change by cookie needs the session's CSRF token too (CSRF).

Key sources, first present wins: `Authorization` (with or without `Bearer `), `x-api-key`, `x-goog-api-key`.
A present `Authorization` shadows the others even when its value is wrong, exactly like Antigravity Tools.

Named keys (`agfast.keys`) join through one callback, `users(key) -> (outcome, identity)`, asked only when the
main key does not match and never for admin routes: the main key's path costs what it did. An admitted named
key is left in `Authenticator.user` for the request that was just checked (the loop runs one check at a time).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

from agfast.http.errors import Family, error_body
from agfast.http.router import Route
from agfast.http.sessions import SAFE_METHODS, SessionStore

OK = 0
MISSING = 1
INVALID = 2
NOT_CONFIGURED = 3
CSRF = 4
REVOKED = 5
EXPIRED = 6
LIMITED = 7  # a named key over its requests per minute or tokens per day: 429 with Retry-After

MESSAGES = {
    MISSING: "Missing API key: send it as 'Authorization: Bearer <key>', 'x-api-key' or 'x-goog-api-key'.",
    INVALID: "Invalid API key.",
    NOT_CONFIGURED: "Authentication is required but agfast has no API key configured; set api_key in the config.",
    CSRF: "This change needs the session's CSRF token in the X-CSRF-Token header (sign in again to get one).",
    REVOKED: "This API key was revoked.",
    EXPIRED: "This API key has expired; ask the operator to renew it (agfast keys renew).",
}
# The answer's status per outcome: a signed-in browser without its CSRF token is known but not allowed.
STATUS = {MISSING: 401, INVALID: 401, NOT_CONFIGURED: 401, CSRF: 403, REVOKED: 401, EXPIRED: 401}
UNAUTHORIZED_HEADERS = b'www-authenticate: Bearer realm="agfast"\r\n'

# A named-key check: (presented key, count the request?) → (OK or a refusal outcome, the key's identity or None).
UserCheck = Callable[[bytes, bool], tuple[int, Any]]


def extract_key(headers: Mapping[bytes, bytes]) -> bytes | None:
    value = headers.get(b"authorization")
    if value is not None:
        value = value.strip()
        if value[:7].lower() == b"bearer ":
            return value[7:].strip()
        return value
    value = headers.get(b"x-api-key")
    if value is None:
        value = headers.get(b"x-goog-api-key")
    return value.strip() if value is not None else None


class Authenticator:
    __slots__ = ("_admin_key", "_key", "bodies", "limited", "mode", "sessions", "user", "users")

    def __init__(
        self, mode: str, api_key: str | None, admin_password: str | None = None, sessions: SessionStore | None = None
    ) -> None:
        self.mode = mode
        self._key: bytes | None = None
        self._admin_key: bytes | None = None
        self.sessions = sessions if sessions is not None else SessionStore()
        self.configure(mode, api_key, admin_password)
        self.users: UserCheck | None = None
        self.user: Any = None  # the named key the last OK check admitted; None: the main key
        # Why the last LIMITED check refused, and when to come back: (message, Retry-After seconds).
        self.limited: Callable[[], tuple[str, int]] = lambda: ("", 1)
        # Every 401 body is constant: build them once per family.
        self.bodies = {
            (family, outcome): error_body(family, STATUS[outcome], message)
            for family in Family
            for outcome, message in MESSAGES.items()
        }

    def configure(self, mode: str, api_key: str | None, admin_password: str | None) -> None:
        """(Re)set the mode and secrets; live config changes land here without a restart."""
        self.mode = mode
        old_admin_key = self._admin_key
        self._key = api_key.encode() if api_key else None
        self._admin_key = admin_password.encode() if admin_password else self._key
        if self._admin_key != old_admin_key:
            self.sessions.clear()  # a new admin secret signs every browser out

    def guards(self, route: Route | None) -> bool:
        """Whether requests to `route` (None: an unknown path) must carry the key."""
        if route is not None:
            if route.public:
                return False
            if route.admin:
                return True
        if self.mode == "off":
            return False
        if route is None:
            return True
        return not (route.health and self.mode == "all_except_health")

    def check(
        self, headers: Mapping[bytes, bytes], admin: bool = False, method: bytes | None = None, charge: bool = True
    ) -> int:
        """OK, MISSING, INVALID, NOT_CONFIGURED, CSRF, or a named key's REVOKED/EXPIRED/LIMITED; `admin` checks
        the admin secret (named keys never open admin routes); `charge=False` asks without counting a request.
        Constant-time comparison; named keys by hash.

        With `method` given, an admin request without a key may instead show a live session cookie (plus the
        CSRF token unless `method` is safe). Without it only a key counts: the Origin check asks that way, so a
        cookie never opens CORS to another origin."""
        self.user = None
        expected = self._admin_key if admin else self._key
        users = None if admin else self.users
        if expected is None and users is None:
            return NOT_CONFIGURED
        key = extract_key(headers)
        if not key:
            if admin and method is not None and (session := self.sessions.from_headers(headers)) is not None:
                return OK if method in SAFE_METHODS or self.sessions.csrf_ok(session, headers) else CSRF
            return MISSING if expected is not None else NOT_CONFIGURED
        if expected is not None and hmac.compare_digest(key, expected):
            return OK
        if users is None:
            return INVALID
        outcome, self.user = users(key, charge)
        # No main key and not a named one: say what the operator must fix, as before named keys.
        return NOT_CONFIGURED if outcome == INVALID and expected is None else outcome

    def rejection(self, family: Family, outcome: int) -> tuple[int, bytes, bytes]:
        """(status, body, extra head lines) answering a refused check in `family`'s shape."""
        if outcome == LIMITED:
            message, retry_after = self.limited()
            return 429, error_body(family, 429, message), b"retry-after: %d\r\n" % retry_after
        status = STATUS[outcome]
        return status, self.bodies[(family, outcome)], UNAUTHORIZED_HEADERS if status == 401 else b""
