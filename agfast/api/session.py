"""The dashboard's sign-in: `POST /api/session` trades the admin secret for a session cookie and CSRF token.

`POST` is public (it is how one gets in). `GET` is public too, so a page load that finds no session is a 200,
not an error in the console; for a signed-in page it repeats the CSRF token (after a reload). `DELETE` signs
out. The cookie is HttpOnly, SameSite=Strict, Path=/ and Secure when agfast serves TLS; the session itself
stays here (`http/sessions.py`), so signing out or a new admin secret ends it at once.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import orjson

from agfast.http.errors import Family, HttpError
from agfast.http.protocol import Request
from agfast.http.response import Response
from agfast.http.router import DELETE, GET, POST, Router
from agfast.http.sessions import SESSION_TTL, SessionStore, set_cookie_header

if TYPE_CHECKING:
    from agfast.config import Config

PATH = "/api/session"
# Longest password we compare; a bigger field is a mistake (or an attack on the comparison), not a password.
MAX_PASSWORD = 1024
SIGNED_OUT = orjson.dumps({"signed_in": False, "csrf_token": None})


class SessionApi:
    __slots__ = ("config", "sessions")

    def __init__(self, config: Config, sessions: SessionStore) -> None:
        self.config = config
        self.sessions = sessions

    def register(self, router: Router) -> None:
        router.add((POST,), PATH, self.sign_in, Family.ADMIN, public=True)
        router.add((GET,), PATH, self.current, Family.ADMIN, public=True)
        router.add((DELETE,), PATH, self.sign_out, Family.ADMIN, admin=True)

    def _secret(self) -> bytes | None:
        config = self.config
        secret = config.admin_password or config.api_key
        return secret.encode() if secret else None

    def sign_in(self, req: Request, resp: Response) -> None:
        try:
            body = orjson.loads(req.body) if req.body.strip() else {}
        except orjson.JSONDecodeError:
            body = None
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
            raise HttpError(400, 'Body must be {"password": "<admin password, else the api key>"}.')
        secret = self._secret()
        if secret is None:
            raise HttpError(401, "agfast has no admin password or api key configured; set one to sign in.")
        if not hmac.compare_digest(password.encode(), secret):
            raise HttpError(401, "Wrong password.")
        session = self.sessions.create()
        cookie = set_cookie_header(session, self.config.tls_cert is not None)
        resp.send(200, orjson.dumps({"csrf_token": session.csrf, "expires_in": int(SESSION_TTL)}), headers=cookie)

    def current(self, req: Request, resp: Response) -> None:
        """Whether the caller's cookie holds a live session, and then its CSRF token (readable by our origin only:
        the cookie is SameSite=Strict and no CORS header goes to another origin for it)."""
        session = self.sessions.from_headers(req.headers)
        if session is None:
            resp.send(200, SIGNED_OUT)
            return
        resp.send(200, orjson.dumps({"signed_in": True, "csrf_token": session.csrf}))

    def sign_out(self, req: Request, resp: Response) -> None:
        session = self.sessions.from_headers(req.headers)
        if session is not None:
            self.sessions.remove(session.id)
        cookie = set_cookie_header(None, self.config.tls_cert is not None)
        resp.send(200, orjson.dumps({"signed_out": session is not None}), headers=cookie)
