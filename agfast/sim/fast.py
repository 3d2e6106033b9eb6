"""The simulator's fast mode: every answer encoded once at start, so a benchmark's upstream costs next to nothing.

Fast mode is for measuring proxies, not for testing them: it neither validates requests nor checks tokens. The
control endpoints (token, userinfo, loadCodeAssist, fetchAvailableModels) answer with bodies recorded once from
the faithful simulator at start, so agfast onboards against it as against Google. A generate call is answered with
`chunks` SSE events, each in its own write (one per event-loop turn, or `chunk_delay` apart), in two shapes whose
writes are byte-for-byte the same size: v1internal SSE (what agfast asks Google for) and OpenAI chat-completion
SSE (what nginx, Portkey and LiteLLM ask an OpenAI upstream for), so every proxy reads the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from .accounts import demo_accounts
from .runner import until_signalled
from .server import GoogleSimulator

__all__ = ["FastUpstream", "run_fast_forever"]

MODEL = "gemini-3-flash"
CREATED = 1764547200  # a fixed 2025-12-01 timestamp: answers are the same bytes on every run
CREATE_TIME = "2025-12-01T00:00:00.000000Z"
PROMPT_TOKENS = 12
TOKENS_PER_EVENT = 5
# One event's text, like a few tokens of a model's answer.
EVENT_TEXT = "Benchmark answer words "
# A request head bigger than this is not a client of ours: the connection is closed.
MAX_HEAD = 64 * 1024
LOAD_CODE_ASSIST = {"metadata": {"ideType": "ANTIGRAVITY", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}}

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
CHUNKED_END = b"0\r\n\r\n"
OPENAI_DONE = b"data: [DONE]\n\n"
REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found"}


def json_reply(status: int, body: bytes, content_type: bytes = b"application/json; charset=UTF-8") -> bytes:
    """A whole Content-Length response, head and body, ready to write."""
    reason = REASONS.get(status, b"Error")
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
        status,
        reason,
        content_type,
        len(body),
    )
    return head + body


def chunk_frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_frames(events: list[bytes]) -> tuple[bytes, ...]:
    """One write per event: the head rides with the first, the chunked terminator with the last."""
    frames = [chunk_frame(e) for e in events]
    frames[0] = SSE_HEAD + frames[0]
    frames[-1] += CHUNKED_END
    return tuple(frames)


def _usage(k: int, n: int) -> dict[str, int]:
    out = TOKENS_PER_EVENT * (k + 1)
    return {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": out, "totalTokenCount": PROMPT_TOKENS + out}


def v1internal_event(k: int, n: int, text: str) -> bytes:
    """One `data:` event as Google's v1internal stream writes it (CRLF CRLF ends it)."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if k == n - 1:
        candidate["finishReason"] = "STOP"
    response = {
        "candidates": [candidate],
        "usageMetadata": _usage(k, n),
        "modelVersion": MODEL,
        "createTime": CREATE_TIME,
        "responseId": "fastsimresponse0",
    }
    return b"data: " + orjson.dumps({"response": response, "traceId": "fastsimtrace0000"}) + b"\r\n\r\n"


def openai_event(k: int, n: int, text: str) -> bytes:
    """One chat.completion.chunk event; the last also carries usage and `[DONE]` (one write, like the others)."""
    delta: dict[str, Any] = {"role": "assistant", "content": text} if k == 0 else {"content": text}
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fastsim",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if k == n - 1 else None}],
    }
    if k == n - 1:
        u = _usage(k, n)
        chunk["usage"] = {
            "prompt_tokens": u["promptTokenCount"],
            "completion_tokens": u["candidatesTokenCount"],
            "total_tokens": u["totalTokenCount"],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n" + OPENAI_DONE
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def equal_events(n: int) -> tuple[list[bytes], list[bytes]]:
    """(v1internal, OpenAI) events, pairwise the same size: the shorter one's text is padded with spaces."""
    google, openai = [], []
    for k in range(n):
        g, o = v1internal_event(k, n, EVENT_TEXT), openai_event(k, n, EVENT_TEXT)
        pad = len(g) - len(o)
        if pad > 0:
            o = openai_event(k, n, EVENT_TEXT + " " * pad)
        elif pad < 0:
            g = v1internal_event(k, n, EVENT_TEXT + " " * -pad)
        google.append(g)
        openai.append(o)
    return google, openai


def openai_completion(n: int) -> bytes:
    u = _usage(n - 1, n)
    return orjson.dumps(
        {
            "id": "chatcmpl-fastsim",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": EVENT_TEXT * n},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": u["promptTokenCount"],
                "completion_tokens": u["candidatesTokenCount"],
                "total_tokens": u["totalTokenCount"],
            },
        }
    )


def v1internal_completion(n: int) -> bytes:
    candidate = {"content": {"role": "model", "parts": [{"text": EVENT_TEXT * n}]}, "finishReason": "STOP"}
    response = {
        "candidates": [candidate],
        "usageMetadata": _usage(n - 1, n),
        "modelVersion": MODEL,
        "createTime": CREATE_TIME,
        "responseId": "fastsimresponse0",
    }
    return orjson.dumps({"response": response, "traceId": "fastsimtrace0000"})


async def record_control_answers() -> dict[bytes, bytes]:
    """token / userinfo / loadCodeAssist / fetchAvailableModels as the faithful simulator answers them, once."""
    account = demo_accounts(1)[0]
    sim = GoogleSimulator([account], record=False)
    await sim.start()
    answers: dict[bytes, bytes] = {}
    try:
        async with aiohttp.ClientSession() as session:
            form = {"grant_type": "refresh_token", "refresh_token": account.refresh_token}
            form |= {"client_id": "fast", "client_secret": "fast"}
            async with session.post(sim.token_url, data=form) as resp:
                answers[b"token"] = json_reply(resp.status, await resp.read())
                token = orjson.loads(answers[b"token"].split(b"\r\n\r\n", 1)[1])["access_token"]
            bearer = {"Authorization": f"Bearer {token}"}
            async with session.get(sim.userinfo_url, headers=bearer) as resp:
                answers[b"userinfo"] = json_reply(resp.status, await resp.read())
            calls = {
                b"v1internal:loadCodeAssist": LOAD_CODE_ASSIST,
                b"v1internal:fetchAvailableModels": {"project": account.project_id},
            }
            for name, payload in calls.items():
                async with session.post(
                    f"{sim.endpoint}:{name.decode().split(':')[1]}", json=payload, headers=bearer
                ) as resp:
                    answers[name] = json_reply(resp.status, await resp.read())
    finally:
        await sim.stop()
    return answers


class _Answers:
    """What each request gets, chosen by the path's last segment (and, for chat completions, `stream`)."""

    __slots__ = ("by_segment", "openai_json", "openai_sse")

    def __init__(self, chunks: int, control: dict[bytes, bytes]) -> None:
        google, openai = equal_events(chunks)
        self.openai_sse = sse_frames(openai)
        self.openai_json = (json_reply(200, openai_completion(chunks)),)
        self.by_segment: dict[bytes, tuple[bytes, ...]] = {name: (reply,) for name, reply in control.items()}
        self.by_segment[b"v1internal:streamGenerateContent"] = sse_frames(google)
        self.by_segment[b"v1internal:generateContent"] = (json_reply(200, v1internal_completion(chunks)),)

    def pick(self, path: bytes, body: bytes) -> tuple[bytes, ...]:
        segment = path.split(b"?", 1)[0].rsplit(b"/", 1)[-1]
        if segment == b"completions":
            try:
                stream = orjson.loads(body).get("stream") is True
            except (orjson.JSONDecodeError, AttributeError):
                return (json_reply(400, b'{"error":{"message":"bad JSON","type":"invalid_request_error"}}'),)
            return self.openai_sse if stream else self.openai_json
        return self.by_segment.get(segment) or (json_reply(404, b'{"error":{"code":404,"status":"NOT_FOUND"}}'),)


def _chunked_body(buf: bytes, start: int) -> tuple[bytes, int] | None:
    """(body, end offset) of a complete chunked body starting at `start`, or None while more is needed."""
    parts: list[bytes] = []
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(buf[pos:line_end].split(b";", 1)[0], 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", line_end)
            return (b"".join(parts), trailer_end + 4) if trailer_end >= 0 else None
        data_start = line_end + 2
        if len(buf) < data_start + size + 2:
            return None
        parts.append(buf[data_start : data_start + size])
        pos = data_start + size + 2


class _Connection(asyncio.Protocol):
    """One keep-alive client connection: parse a request, write its pre-encoded frames, then the next."""

    __slots__ = ("answers", "buf", "busy", "close_after", "delay", "loop", "transport")

    def __init__(self, answers: _Answers, delay: float) -> None:
        self.answers = answers
        self.delay = delay
        self.buf = b""
        self.busy = False
        self.close_after = False
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._serve()

    def _serve(self) -> None:
        while not self.busy and self.transport is not None:
            buf = self.buf
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                if len(buf) > MAX_HEAD:
                    self.transport.close()
                return
            head = buf[:head_end]
            headers = head.lower()
            body_start = head_end + 4
            if b"\ntransfer-encoding: chunked" in headers:
                found = _chunked_body(buf, body_start)
                if found is None:
                    return
                body, end = found
            else:
                at = headers.find(b"\ncontent-length:")
                length = 0
                if at >= 0:
                    line_end = headers.find(b"\r\n", at + 1)
                    length = int(headers[at + 16 : line_end if line_end >= 0 else len(headers)])
                end = body_start + length
                if len(buf) < end:
                    return
                body = buf[body_start:end]
            self.buf = buf[end:]
            self.close_after = b"\nconnection: close" in headers
            path = head.split(b" ", 2)[1]
            self.busy = True
            self._write(self.answers.pick(path, body), 0)

    def _write(self, frames: tuple[bytes, ...], index: int) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(frames[index])
        index += 1
        if index < len(frames):
            if self.delay:
                self.loop.call_later(self.delay, self._write, frames, index)
            else:
                self.loop.call_soon(self._write, frames, index)
            return
        self.busy = False
        if self.close_after:
            transport.close()
            return
        if self.buf:
            self._serve()


class FastUpstream:
    """Google's v1internal and an OpenAI chat-completions upstream in one, every answer pre-encoded."""

    def __init__(self, chunks: int = 20, chunk_delay: float = 0.0) -> None:
        self.chunks = max(1, chunks)
        self.chunk_delay = chunk_delay
        self.refresh_token = demo_accounts(1)[0].refresh_token
        self._server: asyncio.AbstractServer | None = None
        self._host = "127.0.0.1"
        self._port = 0

    @property
    def base_url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return self.base_url + "/v1internal"

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def userinfo_url(self) -> str:
        return self.base_url + "/oauth2/v2/userinfo"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1"):
            raise ValueError(f"the simulator binds loopback only (127.0.0.1 or ::1), not {host!r}")
        answers = _Answers(self.chunks, await record_control_answers())
        factory: Callable[[], _Connection] = lambda: _Connection(answers, self.chunk_delay)  # noqa: E731
        self._server = await asyncio.get_running_loop().create_server(factory, host, port, backlog=4096)
        self._host = host
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)


def run_fast_forever(host: str, port: int, chunks: int, chunk_delay: float) -> None:
    """Serve fast mode until SIGINT/SIGTERM, on uvloop where it exists (the upstream should cost least)."""

    async def main() -> None:
        upstream = FastUpstream(chunks, chunk_delay)
        await upstream.start(host, port)
        print(f"agfast sim (fast mode) listening on {upstream.base_url}", flush=True)
        print(f"  refresh_token={upstream.refresh_token}", flush=True)
        try:
            await until_signalled()
        finally:
            await upstream.stop()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(main())
