"""Browser-safe defaults (issue #9.2): Host (DNS rebinding) and Origin (cross-site pages) checks over raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
from helpers import Reader, ServerThread, encode, make_config, request

from agfast import config

KEY = "sk-test-key-123456"
CHAT = b'{"model":"gemini-3-flash","messages":[{"role":"user","content":"hi"}]}'
EVIL = "https://evil.example"
APP = "http://localhost:3000"

# (family, method, path, body, how the family's 403 body reads)
FAMILIES = [
    ("openai", "POST", "/v1/chat/completions", CHAT, lambda b: (b["error"]["type"], b["error"]["code"])),
    ("anthropic", "POST", "/v1/messages", b"{}", lambda b: (b["type"], b["error"]["type"])),
    ("gemini", "POST", "/v1beta/models/gemini-3-flash:generateContent", b"{}", lambda b: (b["error"]["status"],)),
]
HOST_403 = {
    "openai": ("permission_error", "host_not_allowed"),
    "anthropic": ("error", "permission_error"),
    "gemini": ("PERMISSION_DENIED",),
}
ORIGIN_403 = {**HOST_403, "openai": ("permission_error", "origin_not_allowed")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Defaults: loopback, auth auto (= off), no allowed origins."""
    with ServerThread(make_config(tmp_path_factory.mktemp("browser"))) as st:
        yield st


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    cfg = make_config(
        tmp_path_factory.mktemp("open"), cors_allowed_origins=[APP, "null"], allowed_hosts=["proxy.example"]
    )
    with ServerThread(cfg) as st:
        yield st


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(make_config(tmp_path_factory.mktemp("strict"), auth_mode="strict", api_key=KEY)) as st:
        yield st


def no_cors(reply_headers: dict[str, str]) -> bool:
    return not any(name.startswith("access-control-") for name in reply_headers)


# -- Host ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example:8045", "evil.example", "example.com", "127.0.0.1.evil.example"])
@pytest.mark.parametrize(("family", "method", "path", "body", "shape"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_foreign_host_is_403_in_family_shape(server: ServerThread, host, family, method, path, body, shape) -> None:  # type: ignore[no-untyped-def]
    reply = request(server.port, method, path, body, {"Host": host})
    assert reply.status == 403
    assert shape(reply.json()) == HOST_403[family]
    assert f"Host '{host}' is not allowed" in reply.body.decode()
    assert "allowed_hosts" in reply.body.decode()
    assert no_cors(reply.headers)


@pytest.mark.parametrize("host", ["evil.example:8045", "bad host", "localhost:80:80", "[::1", "localhost:x"])
def test_foreign_or_malformed_host_refuses_preflight_and_health(server: ServerThread, host: str) -> None:
    assert request(server.port, "GET", "/healthz", headers={"Host": host}).status == 403
    preflight = request(server.port, "OPTIONS", "/v1/messages", headers={"Host": host, "Origin": EVIL})
    assert preflight.status == 403
    assert preflight.json()["type"] == "error"


LOOPBACK_HOSTS = ["localhost", "localhost:8045", "127.0.0.1:1", "[::1]", "[::1]:65535", "LocalHost:9"]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_names_on_any_port_are_served(server: ServerThread, host: str) -> None:
    for _ in range(2):  # the second time from the learned set
        reply = request(server.port, "GET", "/healthz", headers={"Host": host})
        assert reply.status == 200, reply.body


def test_http10_without_host_is_served(server: ServerThread) -> None:
    with contextlib.closing(socket.create_connection(("127.0.0.1", server.port), timeout=5)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert Reader(sock).read().status == 200


def test_allowed_hosts_config(open_server: ServerThread, tmp_path: Path) -> None:
    assert request(open_server.port, "GET", "/healthz", headers={"Host": "proxy.example:443"}).status == 200
    assert request(open_server.port, "GET", "/healthz", headers={"Host": "other.example"}).status == 403
    with ServerThread(make_config(tmp_path, allowed_hosts=["*"])) as st:
        assert request(st.port, "GET", "/healthz", headers={"Host": "anything.example:1"}).status == 200


def test_bind_address_is_an_allowed_host(tmp_path: Path) -> None:
    with (
        ServerThread(make_config(tmp_path, host="127.0.0.2")) as st,
        contextlib.closing(socket.create_connection(("127.0.0.2", st.port), timeout=5)) as sock,
    ):
        sock.sendall(encode("GET", "/healthz", headers={"Host": f"127.0.0.2:{st.port}"}))
        assert Reader(sock).read().status == 200


def test_lan_bind_allows_hostname_and_the_address_reached(tmp_path: Path) -> None:
    with ServerThread(make_config(tmp_path, allow_lan_access=True, auth_mode="off")) as st:
        assert st.config.bind_host == "0.0.0.0"
        hostname = socket.gethostname()
        assert request(st.port, "GET", "/healthz", headers={"Host": f"{hostname}:{st.port}"}).status == 200
        for host, status in ((f"127.0.0.2:{st.port}", 200), (f"127.0.0.3:{st.port}", 403), ("evil.example", 403)):
            # Connected to 127.0.0.2: only that address (or a name of ours) is a Host this client could mean.
            with contextlib.closing(socket.create_connection(("127.0.0.2", st.port), timeout=5)) as sock:
                sock.sendall(encode("GET", "/healthz", headers={"Host": host}))
                assert Reader(sock).read().status == status, host


# -- Origin ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "method", "path", "body", "shape"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_foreign_origin_is_403_in_family_shape(server: ServerThread, family, method, path, body, shape) -> None:  # type: ignore[no-untyped-def]
    reply = request(server.port, method, path, body, {"Origin": EVIL})
    assert reply.status == 403
    assert shape(reply.json()) == ORIGIN_403[family]
    assert f"'{EVIL}' refused" in reply.body.decode() and "cors.allowed_origins" in reply.body.decode()
    assert no_cors(reply.headers)  # nothing, X-Account-Email included, is exposed to that page


@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1", "http://localhost:3000"])
def test_foreign_origin_preflight_refused(server: ServerThread, origin: str) -> None:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    reply = request(server.port, "OPTIONS", "/v1/chat/completions", headers=headers)
    assert reply.status == 403
    assert reply.json()["error"]["code"] == "origin_not_allowed"
    assert no_cors(reply.headers)


def test_own_origin_is_served_without_cors(server: ServerThread) -> None:
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
        reply = request(server.port, "GET", "/healthz", headers={"Host": host, "Origin": f"http://{host}"})
        assert reply.status == 200
        assert no_cors(reply.headers)


def test_preflight_without_origin_is_no_cors(server: ServerThread) -> None:
    reply = request(server.port, "OPTIONS", "/v1/messages")
    assert reply.status == 204
    assert "access-control-allow-origin" not in reply.headers


def test_configured_origin_gets_cors_echoing_it(open_server: ServerThread) -> None:
    headers = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
        "Access-Control-Request-Private-Network": "true",
    }
    preflight = request(open_server.port, "OPTIONS", "/v1/chat/completions", headers=headers)
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-private-network"] == "true"
    assert preflight.headers["vary"] == "origin"
    reply = request(open_server.port, "GET", "/healthz", headers={"Origin": APP})
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == APP
    assert "x-account-email" in reply.headers["access-control-expose-headers"]
    assert request(open_server.port, "GET", "/healthz", headers={"Origin": "null"}).status == 200
    # A listed origin does not open the door to others, nor to look-alikes.
    for other in (EVIL, APP + ".evil.example", "https://localhost:3000", "http://localhost:30000"):
        assert request(open_server.port, "GET", "/healthz", headers={"Origin": other}).status == 403


def test_any_origin_when_configured_explicitly(tmp_path: Path) -> None:
    with ServerThread(make_config(tmp_path, cors_allowed_origins=["*"])) as st:
        reply = request(st.port, "POST", "/v1/chat/completions", CHAT, {"Origin": EVIL})
        assert reply.status == 503  # served: the pool is empty here
        assert reply.headers["access-control-allow-origin"] == EVIL


def test_auth_required_and_key_sent_allows_origin(strict_server: ServerThread) -> None:
    port = strict_server.port
    keyed = request(port, "POST", "/v1/chat/completions", CHAT, {"Origin": EVIL, "Authorization": f"Bearer {KEY}"})
    assert keyed.status == 503  # past auth and origin: the pool is empty here
    assert keyed.headers["access-control-allow-origin"] == EVIL
    # A preflight cannot carry the key: on a key-guarded route it passes, and the real request is checked.
    preflight = request(
        port, "OPTIONS", "/v1/chat/completions", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == EVIL
    for wrong in ({}, {"x-api-key": "sk-wrong-key-000000"}):
        reply = request(port, "POST", "/v1/messages", b"{}", {"Origin": EVIL, **wrong})
        assert reply.status == 403
        assert reply.json()["error"]["type"] == "permission_error"
        assert no_cors(reply.headers)


# Values h11 accepts (any byte but NUL and blanks) that no browser sends: echoed, they would put a control
# character into our own response head, which strict HTTP clients reject as a malformed answer. (Fuzz finding.)
CONTROL_ORIGINS = ["https://evil.example\x01", "\x1b[31m", "http://a\x7f.example"]


@pytest.mark.parametrize("origin", CONTROL_ORIGINS)
def test_origin_with_control_bytes_is_refused_not_echoed(strict_server: ServerThread, origin: str) -> None:
    keyed = {"Origin": origin, "Authorization": f"Bearer {KEY}"}
    reply = request(strict_server.port, "POST", "/v1/chat/completions", CHAT, keyed)
    assert reply.status == 403
    assert reply.json()["error"]["code"] == "origin_not_allowed"
    assert no_cors(reply.headers)
    preflight = request(strict_server.port, "OPTIONS", "/v1/chat/completions", headers={"Origin": origin})
    assert preflight.status == 403
    assert no_cors(preflight.headers)


def test_any_origin_still_refuses_control_bytes(tmp_path: Path) -> None:
    with ServerThread(make_config(tmp_path, cors_allowed_origins=["*"])) as st:
        reply = request(st.port, "GET", "/healthz", headers={"Origin": CONTROL_ORIGINS[0]})
        assert reply.status == 403
        assert no_cors(reply.headers)


@pytest.mark.parametrize("asked", ["x-a\x01", "authorization,\x1b", "\x7f"])
def test_preflight_does_not_echo_control_bytes_in_request_headers(open_server: ServerThread, asked: str) -> None:
    headers = {"Origin": APP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asked}
    preflight = request(open_server.port, "OPTIONS", "/v1/chat/completions", headers=headers)
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-headers"] == "*"
    assert all(0x20 <= ord(c) < 0x7F for c in preflight.raw_head.decode("latin-1").replace("\r\n", ""))


def test_unguarded_route_needs_listed_origin_even_with_auth(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, auth_mode="all_except_health", api_key=KEY)
    with ServerThread(cfg) as st:
        assert request(st.port, "GET", "/healthz", headers={"Origin": EVIL, "x-api-key": KEY}).status == 403


# -- clients without Origin are unaffected ---------------------------------------------------------------------


def test_sdk_and_aiohttp_requests_unaffected(server: ServerThread) -> None:
    client = openai.OpenAI(base_url=f"http://localhost:{server.port}/v1", api_key="sk-any", max_retries=0)
    assert client.models.list().object == "list"
    client.close()

    async def fetch() -> tuple[int, dict[str, str]]:
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/healthz") as resp:
            return resp.status, dict(resp.headers)

    status, headers = asyncio.run(fetch())
    assert status == 200
    assert no_cors({k.lower(): v for k, v in headers.items()})


# -- config ----------------------------------------------------------------------------------------------------


def test_config_lists_from_file_and_env(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'allowed_hosts = ["Proxy.Example"]\n[cors]\nallowed_origins = ["http://LocalHost:3000/"]\n'
    )
    cfg = config.load({"data_dir": str(tmp_path)}, env={})
    assert cfg.allowed_hosts == ["proxy.example"]
    assert cfg.cors_allowed_origins == ["http://localhost:3000"]
    env = {"AGFAST_CORS_ALLOWED_ORIGINS": "http://a.example, https://b.example:8443", "AGFAST_ALLOWED_HOSTS": "*"}
    cfg = config.load({"data_dir": str(tmp_path)}, env=env)
    assert cfg.cors_allowed_origins == ["http://a.example", "https://b.example:8443"]
    assert cfg.allowed_hosts == ["*"]


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('[cors]\nallowed_origins = ["localhost:3000"]\n', "cors.allowed_origins entries must be origins"),
        ('[cors]\nallowed_origins = ["http://a.example/app"]\n', "cors.allowed_origins entries must be origins"),
        ("[cors]\nallowed_origins = 3\n", "cors_allowed_origins must be a list of origins"),
        ('allowed_hosts = ["http://proxy.example"]\n', "allowed_hosts entries must be host names"),
    ],
)
def test_bad_browser_settings_refused(tmp_path: Path, toml: str, fragment: str) -> None:
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(config.ConfigError, match=fragment):
        config.load({"data_dir": str(tmp_path)}, env={})
