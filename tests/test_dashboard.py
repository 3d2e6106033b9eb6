"""The dashboard's server side (issue 13): static files with their security headers, and the sign-in session
(HttpOnly SameSite=Strict cookie + CSRF token) the admin API accepts, over raw sockets."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import ServerThread, make_config, request
from test_tls import TlsFiles

from agfast.http.sessions import MAX_SESSIONS

KEY = "sk-test-key-123456"
ADMIN = "dashboard-admin-password"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(make_config(tmp_path, api_key=KEY, admin_password=ADMIN, auth_mode="strict")) as st:
        yield st


def sign_in(st: ServerThread, password: str = ADMIN) -> tuple[str, str]:
    """(Cookie header value, CSRF token) of a new session."""
    reply = request(st.port, "POST", "/api/session", orjson.dumps({"password": password}))
    assert reply.status == 200, reply.body
    cookie = reply.headers["set-cookie"].split(";", 1)[0]
    return cookie, reply.json()["csrf_token"]


def test_dashboard_is_served_with_type_etag_and_a_strict_csp(server: ServerThread) -> None:
    for path in ("/", "/ui", "/ui/"):
        page = request(server.port, "GET", path)  # public even in strict mode: the sign-in page must load
        assert page.status == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert b'<script type="module" src="/ui/app.js">' in page.body
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    etag = page.headers["etag"]
    again = request(server.port, "GET", "/", headers={"If-None-Match": etag})
    assert (again.status, again.body) == (304, b"")
    script = request(server.port, "GET", "/ui/app.js")
    assert (script.status, script.headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    assert request(server.port, "GET", "/ui/app.css").headers["content-type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize(
    "path", ["/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py", "/ui//etc/passwd", "/ui/app.py", "/ui/ui.py"]
)
def test_no_path_outside_the_shipped_files_is_served(server: ServerThread, path: str) -> None:
    reply = request(server.port, "GET", path, headers={"Authorization": f"Bearer {KEY}"})
    assert reply.status == 404
    assert b"import" not in reply.body


def test_sign_in_sets_an_httponly_strict_cookie_and_returns_a_csrf_token(server: ServerThread) -> None:
    reply = request(server.port, "POST", "/api/session", orjson.dumps({"password": ADMIN}))
    assert reply.status == 200
    attrs = [a.strip() for a in reply.headers["set-cookie"].split(";")]
    assert attrs[0].startswith("agfast_session=") and len(attrs[0]) > 40
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs)
    assert "Secure" not in attrs  # plain HTTP: a Secure cookie would never come back
    assert len(reply.json()["csrf_token"]) >= 40
    assert ADMIN.encode() not in reply.body and KEY.encode() not in reply.body


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"password": "wrong"}', 401, "Wrong password"),
        (orjson.dumps({"password": KEY}), 401, "Wrong password"),  # the admin password is set: the key is not it
        (b"{}", 400, "password"),
        (b"[1]", 400, "password"),
        (b"not json", 400, "password"),
        (b'{"password": 5}', 400, "password"),
    ],
)
def test_a_wrong_sign_in_is_refused_in_the_admin_shape(server: ServerThread, body: bytes, status: int, says: str):
    reply = request(server.port, "POST", "/api/session", body)
    assert reply.status == status
    assert says in reply.json()["error"]
    assert "set-cookie" not in reply.headers


def test_without_an_admin_password_the_api_key_signs_in(tmp_path: Path) -> None:
    with ServerThread(make_config(tmp_path, api_key=KEY)) as st:
        cookie, _ = sign_in(st, KEY)
        assert request(st.port, "GET", "/api/accounts", headers={"Cookie": cookie}).status == 200


def test_the_cookie_reads_and_with_the_csrf_token_changes(server: ServerThread) -> None:
    cookie, csrf = sign_in(server)
    assert request(server.port, "GET", "/api/proxy/status", headers={"Cookie": cookie}).json()["running"] is True
    assert request(server.port, "GET", "/api/session", headers={"Cookie": cookie}).json() == {
        "signed_in": True,
        "csrf_token": csrf,
    }
    # A change by cookie alone (what a forged cross-site form would send) is refused and changes nothing.
    for headers in ({"Cookie": cookie}, {"Cookie": cookie, "X-CSRF-Token": "not-the-token"}):
        refused = request(server.port, "POST", "/api/proxy/stop", headers=headers)
        assert refused.status == 403
        assert "X-CSRF-Token" in refused.json()["error"]
        assert server.app.proxy_running
    stopped = request(server.port, "POST", "/api/proxy/stop", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert (stopped.status, stopped.json()["running"]) == (200, False)
    # Scripts with the key need no CSRF token (a key is not sent by the browser on its own).
    started = request(server.port, "POST", "/api/proxy/start", headers={"Authorization": f"Bearer {ADMIN}"})
    assert (started.status, started.json()["running"]) == (200, True)


def test_the_cookie_is_not_a_proxy_key_nor_a_cors_pass(server: ServerThread) -> None:
    cookie, csrf = sign_in(server)
    chat = request(server.port, "POST", "/v1/chat/completions", b"{}", headers={"Cookie": cookie})
    assert chat.status == 401  # strict mode: the proxy routes want the api key, not a dashboard session
    other = {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "http://localhost:3000"}
    refused = request(server.port, "GET", "/api/session", headers=other)
    assert refused.status == 403 and "access-control-allow-origin" not in refused.headers
    assert request(server.port, "POST", "/api/proxy/stop", headers=other).status == 403
    assert server.app.proxy_running


def test_sign_out_ends_the_session(server: ServerThread) -> None:
    cookie, csrf = sign_in(server)
    out = request(server.port, "DELETE", "/api/session", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert out.status == 200 and out.json() == {"signed_out": True}
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert request(server.port, "GET", "/api/accounts", headers={"Cookie": cookie}).status == 401
    assert request(server.port, "GET", "/api/session", headers={"Cookie": cookie}).json()["signed_in"] is False


def test_a_new_admin_password_signs_every_browser_out(server: ServerThread) -> None:
    cookie, csrf = sign_in(server)
    headers = {"Cookie": cookie, "X-CSRF-Token": csrf}
    changed = request(server.port, "POST", "/api/config", b'{"admin_password": "another-password"}', headers)
    assert changed.status == 200
    assert request(server.port, "GET", "/api/accounts", headers={"Cookie": cookie}).status == 401


def test_sessions_are_bounded_the_oldest_giving_way(server: ServerThread) -> None:
    first, _ = sign_in(server)
    later = [sign_in(server)[0] for _ in range(MAX_SESSIONS)]
    assert request(server.port, "GET", "/api/accounts", headers={"Cookie": first}).status == 401
    assert request(server.port, "GET", "/api/accounts", headers={"Cookie": later[0]}).status == 200
    assert len(server.server.router.sessions) == MAX_SESSIONS


def test_over_tls_the_cookie_is_secure(tmp_path: Path) -> None:
    tls = TlsFiles(tmp_path)
    cfg = make_config(tmp_path / "data", api_key=KEY, tls_cert=tls.cert, tls_key=tls.key)
    with ServerThread(cfg) as st:
        context = ssl.create_default_context(cafile=str(tls.ca))
        ask = urllib.request.Request(
            f"https://127.0.0.1:{st.port}/api/session", data=orjson.dumps({"password": KEY}), method="POST"
        )
        with urllib.request.urlopen(ask, context=context, timeout=10) as reply:
            attrs = [a.strip() for a in reply.headers["set-cookie"].split(";")]
    assert {"Secure", "HttpOnly", "SameSite=Strict"} <= set(attrs)
