"""`GET /auth/callback`: where Google sends the browser back after the dashboard's "Sign in with Google".

Public like the reference's (the browser arriving from Google carries no api key; the one-time `state` is the
credential). Answers a small HTML page: the account added, or what went wrong; an unknown or expired state is
refused with 400.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any

from agfast.http.request import Request
from agfast.http.response import Response
from agfast.upstream.signin import SignedIn, SignIn, SignInError

CT_HTML = b"text/html; charset=utf-8"
# The page must never be cached or shown to another site (it names the account).
PAGE_HEADERS = b"cache-control: no-store\r\nx-frame-options: DENY\r\n"
PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>agfast sign-in</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)


def page(title: str, text: str) -> bytes:
    return PAGE.format(title=html.escape(title), text=html.escape(text)).encode()


def callback_handler(signin: SignIn) -> Callable[[Request, Response], Coroutine[Any, Any, None]]:
    """The route handler bound to the app's pending sign-ins."""

    async def auth_callback(req: Request, resp: Response) -> None:
        query = dict(urllib.parse.parse_qsl(req.query.decode("latin-1")))
        try:
            done: SignedIn = await signin.complete(query.get("state", ""), query.get("code"), query.get("error"))
        except SignInError as exc:
            resp.send(400, page("Sign-in failed", str(exc)), CT_HTML, PAGE_HEADERS)
            return
        text = f"{done.verb.capitalize()} {done.account.email}: it serves requests now. You can close this tab."
        resp.send(200, page("Signed in", text), CT_HTML, PAGE_HEADERS)

    return auth_callback
