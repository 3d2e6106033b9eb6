"""API-key checks per auth mode (off / strict / all_except_health; `auto` is resolved in config).

Admin routes (`/api/…`) are guarded in every mode, by `admin_password` when set, else by the api key.

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

OK = 0
MISSING = 1
INVALID = 2
NOT_CONFIGURED = 3
REVOKED = 4
EXPIRED = 5
LIMITED = 6  # a named key over its requests per minute or tokens per day: 429 with Retry-After

MESSAGES = {
    MISSING: "Missing API key: send it as 'Authorization: Bearer <key>', 'x-api-key' or 'x-goog-api-key'.",
    INVALID: "Invalid API key.",
    NOT_CONFIGURED: "Authentication is required but agfast has no API key configured; set api_key in the config.",
    REVOKED: "This API key was revoked.",
    EXPIRED: "This API key has expired; ask the operator to renew it (agfast keys renew).",
}
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
    __slots__ = ("_admin_key", "_key", "bodies", "limited", "mode", "user", "users")

    def __init__(self, mode: str, api_key: str | None, admin_password: str | None = None) -> None:
        self.mode = mode
        self._key: bytes | None = None
        self._admin_key: bytes | None = None
        self.configure(mode, api_key, admin_password)
        self.users: UserCheck | None = None
        self.user: Any = None  # the named key the last OK check admitted; None: the main key
        # Why the last LIMITED check refused, and when to come back: (message, Retry-After seconds).
        self.limited: Callable[[], tuple[str, int]] = lambda: ("", 1)
        # Every 401 body is constant: build them once per family.
        self.bodies = {
            (family, outcome): error_body(family, 401, message)
            for family in Family
            for outcome, message in MESSAGES.items()
        }

    def configure(self, mode: str, api_key: str | None, admin_password: str | None) -> None:
        """(Re)set the mode and secrets; live config changes land here without a restart."""
        self.mode = mode
        self._key = api_key.encode() if api_key else None
        self._admin_key = admin_password.encode() if admin_password else self._key

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

    def check(self, headers: Mapping[bytes, bytes], admin: bool = False, charge: bool = True) -> int:
        """OK, MISSING, INVALID, NOT_CONFIGURED, or a named key's REVOKED/EXPIRED/LIMITED; `admin` checks the
        admin secret (named keys never open admin routes); `charge=False` asks without counting a request.
        Constant-time comparison; named keys by hash."""
        self.user = None
        expected = self._admin_key if admin else self._key
        users = None if admin else self.users
        if expected is None and users is None:
            return NOT_CONFIGURED
        key = extract_key(headers)
        if not key:
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
        return 401, self.bodies[(family, outcome)], UNAUTHORIZED_HEADERS
