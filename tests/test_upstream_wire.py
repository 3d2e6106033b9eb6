"""What a v1internal call puts on the wire, against a raw loopback server that records every request: the lean
path through aiohttp (`UpstreamClient._post`) sends the same head as `ClientSession.request` did, in one write
with its body, keeps nothing between calls (no cookies cross accounts) and starts no task of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from agfast.config import Config
from agfast.upstream.client import UpstreamClient

# What the recording server answers: a cookie a shared cookie jar would keep, and a body that keeps the connection.
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: g=account-one; Path=/\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


class Recorder:
    """A keep-alive HTTP/1.1 server on loopback: (head lines, body, socket reads that carried it) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[list[bytes], bytes, int]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        try:
            while True:
                reads = 0
                while b"\r\n\r\n" not in buf:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buf += data
                    reads += 1
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                length = next(
                    int(v) for k, _, v in (ln.partition(b": ") for ln in lines) if k.lower() == b"content-length"
                )
                while len(buf) < length:
                    buf += await reader.read(65536)
                    reads += 1
                body, buf = buf[:length], buf[length:]
                self.requests.append((lines, body, reads))
                writer.write(ANSWER)
        finally:
            writer.close()


def run(test: Callable[[UpstreamClient, Recorder], Awaitable[None]], tmp_path: Path, host: str = "127.0.0.1") -> None:
    async def main() -> None:
        recorder = Recorder()
        port = await recorder.start()
        cfg = Config(data_dir=tmp_path, upstream_endpoints=[f"http://{host}:{port}/v1internal"])
        client = UpstreamClient(cfg)
        try:
            await test(client, recorder)
        finally:
            await client.close()
            assert recorder.server is not None
            recorder.server.close()

    asyncio.run(main())


async def call(client: UpstreamClient, token: str, project: str | None = "proj-1", **kwargs: Any) -> bytes:
    answer = await client.call(
        "streamGenerateContent", b'{"request":{}}', token, project=project, stream=True, **kwargs
    )
    async with answer.response as response:
        assert response.status == 200
        return await response.read()


def headers_of(lines: list[bytes]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, _, v in (ln.partition(b": ") for ln in lines[1:])}


def test_the_head_is_what_aiohttp_sent_and_leaves_with_the_body(tmp_path: Path) -> None:
    async def test(client: UpstreamClient, recorder: Recorder) -> None:
        extra = {"anthropic-beta": "claude-code-20250219"}
        assert await call(client, "ya29.token-one", extra_headers=extra) == b"{}"
        await call(client, "ya29.token-two", project="test-project")  # a placeholder project is not sent
        (first, body, reads), (second, _, _) = recorder.requests
        assert first[0] == b"POST /v1internal:streamGenerateContent?alt=sse HTTP/1.1"
        assert body == b'{"request":{}}' and reads == 1
        sent = headers_of(first)
        port = recorder.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        assert sent.pop("host") == f"127.0.0.1:{port}"
        assert sent.pop("content-length") == str(len(body))
        assert sent.pop("x-vscode-sessionid") and sent.pop("x-machine-id")
        assert sent.pop("user-agent").startswith("Antigravity/")
        assert sent == {
            "accept": "*/*",
            "accept-encoding": "gzip, deflate",
            "content-type": "application/json",
            "x-client-name": "antigravity",
            "x-client-version": client.config.client_version,
            "authorization": "Bearer ya29.token-one",
            "x-goog-user-project": "proj-1",
            "anthropic-beta": "claude-code-20250219",
        }
        assert headers_of(second)["authorization"] == "Bearer ya29.token-two"
        assert "x-goog-user-project" not in headers_of(second)

    run(test, tmp_path)


def test_no_cookie_crosses_from_one_call_to_the_next(tmp_path: Path) -> None:
    # One session serves every account: a cookie Google set on one account's answer must not ride along with the
    # next account's call. ("localhost", not an address: aiohttp's cookie jar ignores cookies from IPs.)
    async def test(client: UpstreamClient, recorder: Recorder) -> None:
        await call(client, "ya29.account-one")
        await call(client, "ya29.account-two")
        assert [headers_of(lines).get("cookie") for lines, _, _ in recorder.requests] == [None, None]

    run(test, tmp_path, host="localhost")


def test_a_call_on_a_pooled_connection_starts_no_task(tmp_path: Path) -> None:
    async def test(client: UpstreamClient, recorder: Recorder) -> None:
        await call(client, "ya29.warm")  # opens the connection (name resolution may use tasks of its own)
        loop = asyncio.get_running_loop()
        started: list[object] = []

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            started.append(coro)
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
        try:
            await call(client, "ya29.pooled")
        finally:
            loop.set_task_factory(None)
        assert started == []
        assert len(recorder.requests) == 2

    run(test, tmp_path)


@pytest.mark.parametrize(
    ("token", "project", "extra"),
    [
        ("ya29.x\r\nX-Evil: 1", "proj", None),
        ("ya29.x", "proj\nX-Evil: 1", None),
        ("ya29.x", "proj", {"anthropic-beta": "a\r\nX-Evil: 1"}),
    ],
)
def test_a_line_break_in_a_header_value_is_refused_and_nothing_is_sent(
    tmp_path: Path, token: str, project: str, extra: dict[str, str] | None
) -> None:
    async def test(client: UpstreamClient, recorder: Recorder) -> None:
        with pytest.raises(ValueError):
            await call(client, token, project=project, extra_headers=extra)
        assert recorder.requests == []

    run(test, tmp_path)


def test_a_large_body_arrives_whole(tmp_path: Path) -> None:
    async def test(client: UpstreamClient, recorder: Recorder) -> None:
        big = orjson.dumps({"request": {"text": "x" * (3 * 1024 * 1024)}})
        answer = await client.call("generateContent", big, "ya29.big", project="proj")
        answer.response.release()
        ((_, body, _),) = recorder.requests
        assert body == big

    run(test, tmp_path)
