"""Dashboard sign-in sessions: a random id in an HttpOnly cookie, kept here with its expiry and CSRF token.

The cookie is an ambient credential (the browser sends it on its own), so a state change made with it must
also carry the session's CSRF token in `X-CSRF-Token`, which only a page of our own origin can read (from the
sign-in answer or `GET /api/session`). Keys sent by scripts are not ambient and need no token.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

COOKIE_NAME = b"agfast_session"
CSRF_HEADER = b"x-csrf-token"
# A signed-in browser stays signed in for a working day; then the password is asked again.
SESSION_TTL = 12 * 3600.0
# Sessions held at once: a handful of browsers is normal; more means someone signs in in a loop, and the oldest
# session then gives way, so memory stays bounded whatever the rate of sign-ins.
MAX_SESSIONS = 32
# Methods that change nothing: a cookie alone is enough for them.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
# Random bytes in a session id and in a CSRF token (256 bits: not guessable).
TOKEN_BYTES = 32


class Session:
    __slots__ = ("csrf", "expires", "id")

    def __init__(self, session_id: str, csrf: str, expires: float) -> None:
        self.id = session_id
        self.csrf = csrf
        self.expires = expires


class SessionStore:
    """The live sessions of one server, oldest first, at most MAX_SESSIONS."""

    __slots__ = ("_sessions", "clock")

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.clock = time.monotonic

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self) -> Session:
        now = self.clock()
        self._drop_expired(now)
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        session = Session(secrets.token_urlsafe(TOKEN_BYTES), secrets.token_urlsafe(TOKEN_BYTES), now + SESSION_TTL)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._sessions[session_id]
            return None
        return session

    def remove(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def clear(self) -> None:
        """Everyone signs in again (the admin secret changed)."""
        self._sessions.clear()

    def from_headers(self, headers: Mapping[bytes, bytes]) -> Session | None:
        """The session the request's cookie names, if it is live."""
        cookie = headers.get(b"cookie")
        if not cookie:
            return None
        session_id = cookie_value(cookie, COOKIE_NAME)
        return self.get(session_id) if session_id else None

    @staticmethod
    def csrf_ok(session: Session, headers: Mapping[bytes, bytes]) -> bool:
        token = headers.get(CSRF_HEADER)
        return token is not None and hmac.compare_digest(token.strip(), session.csrf.encode())

    def _drop_expired(self, now: float) -> None:
        for session_id in [s.id for s in self._sessions.values() if s.expires <= now]:
            del self._sessions[session_id]


def cookie_value(cookie: bytes, name: bytes) -> str | None:
    """The value of cookie `name` in a `Cookie` header, or None."""
    for part in cookie.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.decode("latin-1")
    return None


def set_cookie_header(session: Session | None, secure: bool) -> bytes:
    """The `Set-Cookie` line that stores `session` in the browser, or (None) deletes it."""
    if session is None:
        value, age = b"", b"0"
    else:
        value, age = session.id.encode(), str(int(SESSION_TTL)).encode()
    attrs = b"; Path=/; HttpOnly; SameSite=Strict; Max-Age=" + age + (b"; Secure" if secure else b"")
    return b"set-cookie: " + COOKIE_NAME + b"=" + value + attrs + b"\r\n"
