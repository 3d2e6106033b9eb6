"""The HTTP shell over real loopback sockets: keep-alive, pipelining, bodies, limits and bad input."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import orjson
import pytest
from helpers import Reader, ServerThread, connect, encode, make_config, request

JSON = {"Content-Type": "application/json"}
CHAT = b'{"model":"gemini-3-flash","messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    cfg = make_config(
        tmp_path_factory.mktemp("http"),
        auth_mode="off",
        max_body_size=64 * 1024,
        header_timeout=1.5,
        body_timeout=1.5,
    )
    with ServerThread(cfg) as st:
        yield st


def still_serving(server: ServerThread) -> None:
    reply = request(server.port, "GET", "/healthz")
    assert reply.status == 200
    assert reply.json()["status"] == "ok"


def test_health_shape_and_standard_headers(server: ServerThread) -> None:
    reply = request(server.port, "GET", "/healthz")
    assert reply.status == 200
    assert reply.json() == {"status": "ok", "version": "0.1.0"}
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"].startswith("req_")
    assert float(reply.headers["x-agfast-overhead-ms"]) >= 0
    assert reply.headers["date"].endswith("GMT")
    assert request(server.port, "GET", "/health").json()["status"] == "ok"


def test_request_ids_unique_and_client_id_echoed(server: ServerThread) -> None:
    ids = {request(server.port, "GET", "/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    mine = request(server.port, "GET", "/healthz", headers={"X-Request-Id": "trace-42.a"})
    assert mine.headers["x-request-id"] == "trace-42.a"
    evil = request(server.port, "GET", "/healthz", headers={"X-Request-Id": "a b<script>"})
    assert evil.headers["x-request-id"].startswith("req_")


def test_head_is_get_without_body(server: ServerThread) -> None:
    get = request(server.port, "GET", "/healthz")
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(encode("HEAD", "/healthz") + encode("GET", "/healthz"))
        reader = Reader(sock)
        head = reader.read(head_only=True)
        after = reader.read()
    assert head.status == 200
    assert head.headers["content-length"] == get.headers["content-length"]
    assert after.body == get.body  # nothing of the HEAD body leaked into the next answer


def test_keep_alive_serves_many_requests_on_one_connection(server: ServerThread) -> None:
    with contextlib.closing(connect(server.port)) as sock:
        reader = Reader(sock)
        for _ in range(20):
            sock.sendall(encode("GET", "/healthz"))
            reply = reader.read()
            assert reply.status == 200
            assert "connection" not in reply.headers


def test_connection_close_is_honoured(server: ServerThread) -> None:
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(encode("GET", "/healthz", headers={"Connection": "close"}))
        reader = Reader(sock)
        assert reader.read().headers["connection"] == "close"
        assert reader.closed()


def test_http10_closes_unless_keep_alive(server: ServerThread) -> None:
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        reader = Reader(sock)
        assert reader.read().status == 200
        assert reader.closed()
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
        reader = Reader(sock)
        assert reader.read().headers["connection"] == "keep-alive"
        assert reader.read().status == 200


def test_pipelined_requests_answered_in_order(server: ServerThread) -> None:
    batch = (
        encode("GET", "/healthz")
        + encode("POST", "/v1/messages", b"{not json", JSON)
        + encode("POST", "/v1/chat/completions", b'{"model":"m"}', JSON)
        + encode("GET", "/nope")
        + encode("GET", "/health")
    )
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(batch)
        reader = Reader(sock)
        replies = [reader.read() for _ in range(5)]
    assert [r.status for r in replies] == [200, 400, 400, 404, 200]
    assert replies[1].json()["type"] == "error"  # Anthropic shape for /v1/messages
    assert replies[2].json()["error"]["param"] == "messages"
    ids = [r.headers["x-request-id"] for r in replies]
    assert ids == sorted(ids, key=lambda s: int(s.rsplit("_", 1)[1], 16))


def test_a_body_that_came_with_its_head_costs_h11_one_event(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """h11 parses the head; a Content-Length body already in hand is taken at once, not asked of h11 as Data and
    EndOfMessage events (two more `next_event` calls, each costing about what the rest of the shell does)."""
    kinds: list[object] = []
    next_event = h11.Connection.next_event

    def counted(conn: h11.Connection) -> object:
        event = next_event(conn)
        kinds.append(event if event in (h11.NEED_DATA, h11.PAUSED) else type(event))
        return event

    monkeypatch.setattr(h11.Connection, "next_event", counted)
    with contextlib.closing(connect(server.port)) as sock:
        reader = Reader(sock)
        for _ in range(3):
            sock.sendall(encode("POST", "/v1/chat/completions", b'{"model":"m"}', JSON))
            assert reader.read().json()["error"]["param"] == "messages"
        sock.sendall(encode("GET", "/healthz"))
        assert reader.read().status == 200
    assert kinds.count(h11.Request) == 4
    assert h11.Data not in kinds and h11.EndOfMessage not in kinds


def test_body_bigger_than_a_parser_piece_with_a_request_behind_it(server: ServerThread) -> None:
    """One packet holding a body larger than what h11 is handed at a time (HEAD_PIECE) and the next request."""
    body = orjson.dumps({"model": "gemini-3-flash", "messages": "x", "pad": "y" * 10_000})
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(encode("POST", "/v1/chat/completions", body, JSON) + encode("GET", "/healthz") * 2)
        reader = Reader(sock)
        replies = [reader.read() for _ in range(3)]
    assert replies[0].json()["error"]["param"] == "messages"  # the whole body arrived and parsed
    assert [r.status for r in replies] == [400, 200, 200]


def test_request_then_eof_is_answered_then_closed(server: ServerThread) -> None:
    got, closed = raw_exchange(server.port, encode("POST", "/v1/chat/completions", b'{"model":"m"}', JSON), True)
    assert (got, closed) == (400, True)


def test_query_string_is_ignored_for_routing(server: ServerThread) -> None:
    reply = request(server.port, "POST", "/v1/messages?beta=true", b"[]", JSON)
    assert reply.status == 400
    assert "JSON object" in reply.json()["error"]["message"]


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_chunked_request_body_is_reassembled(server: ServerThread) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    with contextlib.closing(connect(server.port)) as sock:
        # Split mid-JSON: only a correctly reassembled body parses and reaches the field checks.
        sock.sendall(head + chunked(b'{"model":"gem', b'ini-3-flash"', b',"messages":"x"}'))
        reply = Reader(sock).read()
    assert reply.status == 400
    assert reply.json()["error"] == {
        "message": "Field 'messages' must be an array.",
        "type": "invalid_request_error",
        "code": None,
        "param": "messages",
    }


def test_expect_100_continue(server: ServerThread) -> None:
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(CHAT)
        )
        reader = Reader(sock)
        reader.sock.settimeout(3)
        while b"\r\n\r\n" not in reader.buf:
            assert reader._fill()
        assert reader.buf.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        reader.buf = b""
        sock.sendall(CHAT)
        assert reader.read().status == 503  # the body arrived and was understood: no account here


# -- errors in each family's shape ---------------------------------------------------------------------------

NOT_FOUND = [
    # (method, path, family key check, hint in message)
    ("POST", "/v1/v1/messages", "anthropic", "Did you mean /v1/messages?"),
    ("POST", "/v1/v1/chat/completions", "openai", "Did you mean /v1/chat/completions?"),
    ("POST", "/v1/chat/completions/responses", "openai", "Did you mean /v1/responses?"),
    ("POST", "/v1beta/v1beta/models/gemini-3-flash:generateContent", "gemini", "Did you mean /v1beta/models/"),
    ("GET", "/v2/whatever", "openai", "Unknown path: GET /v2/whatever"),
    ("GET", "/v1beta/nothing", "gemini", "Unknown path"),
]


def family_of(body: dict) -> str:  # type: ignore[type-arg]
    if body.get("type") == "error":
        return "anthropic"
    if "status" in body.get("error", {}):
        return "gemini"
    assert set(body["error"]) == {"message", "type", "code", "param"}
    return "openai"


def message_of(body: dict) -> str:  # type: ignore[type-arg]
    return body["error"]["message"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("method", "path", "family", "hint"), NOT_FOUND)
def test_unknown_paths_404_in_family_shape_with_hint(
    server: ServerThread, method: str, path: str, family: str, hint: str
) -> None:
    reply = request(server.port, method, path, b"{}" if method == "POST" else None, JSON)
    assert reply.status == 404
    body = reply.json()
    assert family_of(body) == family
    assert hint in message_of(body)


def test_doubled_v1_hint_names_the_right_base_url(server: ServerThread) -> None:
    msg = message_of(request(server.port, "POST", "/v1/v1/messages", b"{}", JSON).json())
    assert msg.endswith(f"set it to http://127.0.0.1:{server.port}")
    msg = message_of(request(server.port, "POST", "/v1/v1/chat/completions", b"{}", JSON).json())
    assert msg.endswith(f"set it to http://127.0.0.1:{server.port}/v1")


def test_wrong_method_is_405_with_allow(server: ServerThread) -> None:
    reply = request(server.port, "GET", "/v1/chat/completions")
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"
    assert family_of(reply.json()) == "openai"


def test_unsupported_gemini_action_is_400(server: ServerThread) -> None:
    reply = request(server.port, "POST", "/v1beta/models/gemini-3-flash:embedContent", b"{}", JSON)
    assert reply.status == 400
    assert reply.json()["error"] == {
        "code": 400,
        "message": "Unsupported method: embedContent",
        "status": "INVALID_ARGUMENT",
    }


BAD_BODIES = [
    # (path, body, status, message fragment, param)
    ("/v1/chat/completions", b"", 400, "empty", None),
    ("/v1/chat/completions", b"{oops", 400, "not valid JSON", None),
    ("/v1/chat/completions", b"[1,2]", 400, "must be a JSON object, not an array", None),
    ("/v1/chat/completions", b'"text"', 400, "not a string", None),
    ("/v1/chat/completions", b'{"messages":[]}', 400, "Missing required field 'model'", "model"),
    ("/v1/chat/completions", b'{"model":1,"messages":[]}', 400, "Field 'model' must be a string", "model"),
    ("/v1/messages", b'{"model":"claude-sonnet-4-6","messages":[]}', 400, "'max_tokens'", None),
    ("/v1/messages", b"null", 400, "not null", None),
    ("/v1beta/models/gemini-3-flash:generateContent", b"{}", 400, "'contents'", None),
    ("/v1/models/gemini-3-flash:generateContent", b"{]", 400, "not valid JSON", None),
    ("/v1/chat/completions", CHAT, 503, "no accounts yet: add one with `agfast accounts add`", None),
]


@pytest.mark.parametrize(("path", "body", "status", "fragment", "param"), BAD_BODIES)
def test_bad_json_bodies(
    server: ServerThread, path: str, body: bytes, status: int, fragment: str, param: str | None
) -> None:
    reply = request(server.port, "POST", path, body, JSON)
    assert reply.status == status
    parsed = reply.json()
    assert fragment in message_of(parsed)
    if param is not None:
        assert parsed["error"]["param"] == param


# -- malformed HTTP: each answered (or cut) and the server keeps serving -------------------------------------


def raw_exchange(port: int, data: bytes, half_close: bool = False) -> tuple[int | None, bool]:
    """Send bytes; return (status or None, whether the server then closed the connection)."""
    with contextlib.closing(connect(port)) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        try:
            status: int | None = reader.read().status
        except (EOFError, ConnectionResetError):
            status = None
        return status, reader.closed()


MALFORMED = [
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello\r\n\r\n", 400),
    ("bad request line", b"GET\r\n\r\n", 400),
    ("bad version", b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n", 505),
    ("header without colon", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nNoColonHere\r\n\r\n", 400),
    ("20 KB of headers", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    ("bad content-length", b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: nope\r\n\r\n", 400),
    (
        "bad chunk size",
        b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
]


@pytest.mark.parametrize(("name", "data", "status"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_http(server: ServerThread, name: str, data: bytes, status: int) -> None:
    got, closed = raw_exchange(server.port, data)
    assert got == status
    assert closed
    still_serving(server)


@pytest.mark.parametrize(("name", "data", "status"), MALFORMED[:4], ids=[m[0] for m in MALFORMED[:4]])
def test_malformed_http_is_explained_without_python_reprs(
    server: ServerThread, name: str, data: bytes, status: int
) -> None:
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(data)
        reply = Reader(sock).read()
    message = reply.json()["error"]["message"]
    assert reply.status == status and message
    assert "bytearray(" not in message and "b'" not in message, message


def test_content_length_larger_than_body_then_close(server: ServerThread) -> None:
    data = b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 500\r\n\r\n" + b'{"model":'
    got, closed = raw_exchange(server.port, data, half_close=True)
    assert got == 400
    assert closed
    still_serving(server)


def test_body_over_limit_by_content_length_is_413(server: ServerThread) -> None:
    big = b"x" * (100 * 1024)
    got, closed = raw_exchange(server.port, encode("POST", "/v1/messages", big, JSON))
    assert got == 413
    assert closed
    still_serving(server)


def test_body_over_limit_chunked_is_413(server: ServerThread) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(head)
        reader = Reader(sock)
        piece = b"%x\r\n%b\r\n" % (8192, b"y" * 8192)
        try:
            for _ in range(20):
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = reader.read()
    assert reply.status == 413
    error = reply.json()["error"]
    # The message names the limit in bytes and the setting that raises it.
    assert str(64 * 1024) in error["message"].split() and "max_body_size" in error["message"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    still_serving(server)


def test_slow_header_client_gets_408(server: ServerThread) -> None:
    """A slowloris sending one header byte a second is cut off after header_timeout (1.5 s here)."""
    data = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 50
    started = time.monotonic()
    with contextlib.closing(connect(server.port)) as sock:
        sock.settimeout(10)
        closed_after = None
        try:
            for i in range(len(data)):
                sock.sendall(data[i : i + 1])
                time.sleep(0.25 if i > 3 else 0)
                if time.monotonic() - started > 8:
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - started
        reader = Reader(sock)
        reply = reader.read()
        closed_after = closed_after or time.monotonic() - started
    assert reply.status == 408
    assert closed_after < 5
    still_serving(server)


def test_idle_keep_alive_connection_survives_then_stalled_body_is_cut(server: ServerThread) -> None:
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n{")
        reader = Reader(sock)
        assert reader.read().status == 408
        assert reader.closed()


def test_many_bad_clients_do_not_stop_good_ones(server: ServerThread) -> None:
    errors: list[BaseException] = []

    def bad() -> None:
        try:
            for _, data, _ in MALFORMED:
                raw_exchange(server.port, data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bad) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(20):
        still_serving(server)
    for t in threads:
        t.join(20)
    assert not errors


def test_server_closes_idle_keep_alive_after_timeout(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, auth_mode="off", keepalive_timeout=1.0)
    with ServerThread(cfg) as st, contextlib.closing(connect(st.port)) as sock:
        sock.sendall(encode("GET", "/healthz"))
        reader = Reader(sock)
        assert reader.read().status == 200
        started = time.monotonic()
        assert reader.closed(timeout=5)
        assert 0.5 < time.monotonic() - started < 4


def test_percent_encoded_path(server: ServerThread) -> None:
    reply = request(server.port, "POST", "/v1beta/models/gemini-3-flash%3AgenerateContent", b"{}", JSON)
    assert reply.status == 400
    assert "'contents'" in message_of(reply.json())
    assert orjson.loads(reply.body)["error"]["status"] == "INVALID_ARGUMENT"


# -- abuse at the edges of HTTP (issue #9.5) -----------------------------------------------------------------


def test_content_length_with_transfer_encoding_is_400_and_closes(server: ServerThread) -> None:
    """RFC 9112 §6.3: such a message may be a smuggling attempt; we refuse it and hang up, so the bytes after the
    chunked end (a second request to a front proxy that framed by Content-Length) are never served."""
    smuggled = encode("GET", "/nope-smuggled")
    body = chunked(CHAT)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    data = head + b"Content-Length: %d\r\n\r\n" % (len(body) + len(smuggled)) + body + smuggled
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 400
        assert "Content-Length" in message_of(reply.json()) and family_of(reply.json()) == "openai"
        assert reply.headers["connection"] == "close"
        assert reader.closed()
        assert b"HTTP/1.1" not in reader.buf  # no answer to the smuggled request
    still_serving(server)


def test_chunk_over_the_body_limit_is_413_as_soon_as_it_passes_the_limit(server: ServerThread) -> None:
    """A chunk announcing more than max_body_size is refused once its bytes pass the limit, not after the whole
    chunk nor at the body deadline (1.5 s here): h11 hands over a chunk's bytes as they arrive."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    over = b"y" * (64 * 1024 + 1)
    for size in (b"%x" % (1024 * 1024), b"ffffffffffffffffffff"):  # 20 hex digits: h11's longest chunk size
        for first in (b"", b"%x\r\n%b\r\n" % (10, b"0123456789")):
            with contextlib.closing(connect(server.port)) as sock:
                sock.sendall(head + first + size + b"\r\n")
                started = time.monotonic()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(over)
                reader = Reader(sock)
                reply = reader.read()  # the rest of the chunk never comes
                assert reply.status == 413
                assert time.monotonic() - started < 1.0
                assert reader.closed()
    still_serving(server)


def test_body_dribbled_a_byte_at_a_time_hits_the_total_body_timeout(server: ServerThread) -> None:
    """body_timeout (1.5 s here) bounds the whole body, not each gap between bytes."""
    started = time.monotonic()
    with contextlib.closing(connect(server.port, timeout=10)) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n")
        try:
            for _ in range(100):
                sock.sendall(b" ")
                time.sleep(0.2)
                if time.monotonic() - started > 6:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = Reader(sock).read()
    assert reply.status == 408
    assert time.monotonic() - started < 4
    still_serving(server)


INJECTIONS = [
    # (method, path, body, family): model names carrying CR LF, in the path or in the body
    ("POST", "/v1beta/models/foo%0d%0aX-Evil:1:generateContent", b'{"contents":[{"parts":[{"text":"hi"}]}]}', "gemini"),
    ("POST", "/v1/models/foo%0aX-Evil:1:streamGenerateContent", b'{"contents":[{"parts":[{"text":"hi"}]}]}', "gemini"),
    ("GET", "/v1beta/models/foo%0d%0aX-Evil:1", None, "gemini"),
    (
        "POST",
        "/v1/chat/completions",
        b'{"model":"gemini-3-flash\\r\\nX-Evil: 1","messages":[{"role":"user","content":"hi"}]}',
        "openai",
    ),
    ("POST", "/v1/responses", b'{"model":"gemini-3-flash\\r\\nX-Evil: 1","input":"hi"}', "openai"),
    (
        "POST",
        "/v1/messages",
        b'{"model":"claude-x\\u0000\\r\\nX-Evil: 1","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}',
        "anthropic",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "family"), INJECTIONS)
def test_model_names_with_control_bytes_are_refused(
    server: ServerThread, method: str, path: str, body: bytes | None, family: str
) -> None:
    reply = request(server.port, method, path, body, JSON)
    assert reply.status == 400
    assert family_of(reply.json()) == family
    assert "control characters" in message_of(reply.json())
    assert b"evil" not in reply.raw_head.lower()
    if family == "openai":
        assert reply.json()["error"]["param"] == "model"


def test_mapped_model_with_control_bytes_never_becomes_a_header(tmp_path: Path) -> None:
    """Even a configured mapping cannot split our head: such a value is left out of X-Mapped-Model."""
    cfg = make_config(tmp_path, auth_mode="off", custom_mapping={"evil": "gemini\r\nX-Evil: 1"})
    with ServerThread(cfg) as st:
        body = b'{"model":"evil","messages":[{"role":"user","content":"hi"}]}'
        reply = request(st.port, "POST", "/v1/chat/completions", body, JSON)
    assert reply.status == 503  # no account here; the error still carries the upstream headers
    assert b"evil" not in reply.raw_head.lower()
    assert "x-mapped-model" not in reply.headers


def test_http_layer_uses_only_h11s_public_api() -> None:
    """h11 is a dependency, not pinned internals: no private attribute (`conn._reader`, `_receive_buffer`, …)."""
    import re
    from pathlib import Path

    import agfast

    private = re.compile(r"""\b(?:conn|old|new|h11|_reader)\._[a-z]|getattr\([^)]*["']_[a-z]""")
    root = Path(agfast.__file__).parent
    found = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert found == []
