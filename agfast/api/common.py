"""What every surface shares: one parse and one clear 400 naming what is wrong; response headers; the pump
that streams converted upstream events to a client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from agfast.convert.checks import json_kind
from agfast.convert.limits import MAX_BODY_DEPTH, Path, body_too_deep, dotted
from agfast.convert.outcomes import BROKEN, SHUTDOWN
from agfast.http.errors import Family, HttpError
from agfast.http.request import Request
from agfast.http.response import SHUTDOWN_MESSAGE, Response
from agfast.upstream.gateway import (
    DONE,
    STREAM_BREAKS,
    UNREACHABLE_MESSAGE,
    ExhaustedError,
    Stream,
    UpstreamError,
    parse_event,
    stream_broke,
)
from agfast.upstream.pool import NoAccountError
from agfast.upstream.proxy import ProxyFailure

# A converter's per-event fast path: (batch, start) → (bytes for batch[start:stop], stop, last usageMetadata).
FastConvert = Callable[[list[bytes], int], tuple[bytes, int, dict[str, Any] | None]]


def json_object(req: Request) -> dict[str, Any]:
    """The body as a JSON object, parsed exactly once.

    The raw bytes are released once parsed (sniff them before calling): a big body would otherwise stay alive
    as a whole extra copy while it is converted, encoded and sent upstream.
    """
    raw = req.body
    if not raw:
        raise HttpError(400, "Request body is empty; expected a JSON object.")
    req.body = b""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"Request body is not valid JSON: {exc}") from None
    del raw
    if not isinstance(body, dict):
        raise HttpError(400, f"Request body must be a JSON object, not {json_kind(body)}.")
    deep = body_too_deep(body)
    if deep is not None:
        raise too_deep_error(req, deep, MAX_BODY_DEPTH)
    return body


def too_deep_error(req: Request, path: Path, limit: int, base: str = "") -> HttpError:
    """The 400 for a field nested past `limit` levels, its path written the way the caller's API writes it."""
    anthropic = req.route is not None and req.route.family is Family.ANTHROPIC
    name = dotted(path, brackets=not anthropic)
    name = f"{base}.{name}" if base and name else base or name
    return HttpError(400, f"'{name}' is nested more than {limit} levels deep.", param=name)


def upstream_headers(email: str, mapped: str) -> bytes:
    """`X-Mapped-Model` always, `X-Account-Email` once an account was picked (reference §8.1).

    A value with control characters (CR LF would start a header of the client's choosing) is left out.
    """
    head = b"x-mapped-model: " + mapped.encode() + b"\r\n" if mapped.isprintable() else b""
    if email and email.isprintable():
        head += b"x-account-email: " + email.encode() + b"\r\n"
    return head


def upstream_done(chunk: dict[str, Any]) -> bool:
    """Google marked the answer finished: what follows is only our own tail, so it can wait for `end()`."""
    return any(isinstance(cand, dict) and cand.get("finishReason") for cand in chunk.get("candidates") or ())


def convert_batch(
    batch: list[bytes], stream: Stream, feed: Callable[[dict[str, Any]], bytes], convert: FastConvert | None
) -> tuple[bytes, bool, tuple[int, str] | None]:
    """One network read's events → (client bytes, Google marked the answer finished, error event or None).

    `convert` (the converter's per-event fast path, sse.ChatDeltas / sse.AnthropicDeltas) takes each run of
    plain text events straight from bytes to bytes; `feed` gets the rest, parsed (first and last events, tool
    calls, signatures). The output is byte for byte the same either way. On an error event the bytes are what
    came before it.
    """
    out: list[bytes] = []
    done = False
    k = 0
    n = len(batch)
    if convert is not None:
        converted, k, usage = convert(batch, 0)
        if usage is not None:
            stream.usage = usage
        if k == n:  # the usual read: every event plain
            return converted, False, None
        out.append(converted)
    while k < n:
        data = batch[k]
        k += 1
        if data != DONE:
            chunk, error = parse_event(data)
            if error is not None:
                return b"".join(out), done, error
            if chunk is not None:
                stream.note(chunk)
                out.append(feed(chunk))
                done = done or upstream_done(chunk)
        if convert is not None and k < n:
            converted, k, usage = convert(batch, k)
            out.append(converted)
            if usage is not None:
                stream.usage = usage
    return b"".join(out), done, None


def fast_path(feed: Callable[[dict[str, Any]], bytes]) -> FastConvert | None:
    """The per-event fast path of the converter whose `feed` this is (its `fast` attribute), if it has one."""
    fast = getattr(getattr(feed, "__self__", None), "fast", None)
    return fast.convert if fast is not None else None


# One network read's events → (bytes to send, upstream finished?, (status, message) of an error event or None).
BatchStep = Callable[[list[bytes]], tuple[bytes, bool, tuple[int, str] | None]]


async def pump(resp: Response, stream: Stream, feed: Callable[[dict[str, Any]], bytes]) -> tuple[int, str] | None:
    """Stream converted events to a client that asked to stream; the caller ends the response.

    Returns None when upstream finished, else (Google status, message) for an error event, (BROKEN, …)
    when the upstream connection broke, or (SHUTDOWN, …) when agfast's shutdown cut it. Past the first byte
    nothing can be retried: the surface reports it in-stream. Once Google marks the answer finished, the rest
    is held for `end()` (one write less). One write per network read, however many events it held.
    """
    convert = fast_path(feed)
    return await _pump(resp, stream, lambda batch: convert_batch(batch, stream, feed, convert))


async def pump_raw(resp: Response, stream: Stream, feed: Callable[[bytes], bytes]) -> tuple[int, str] | None:
    """`pump` for a surface that passes Google's events through (Gemini): `feed` gets each event's raw bytes,
    none is parsed but the one carrying finishReason (for the token counts), which is held for `end()`."""

    def step(batch: list[bytes]) -> tuple[bytes, bool, None]:
        out = b"".join([feed(data) for data in batch if data != DONE])
        # The event carrying finishReason is the last one Google sends: it can leave with the end.
        if batch and b'"finishReason"' in batch[-1]:
            last, _ = parse_event(batch[-1])
            if last is not None:
                stream.note(last)
            return out, True, None
        return out, False, None

    return await _pump(resp, stream, step)


async def _pump(resp: Response, stream: Stream, step: BatchStep) -> tuple[int, str] | None:
    """The loop both pumps share: one write per read, the finished answer's tail deferred to `end()`,
    backpressure, and how a stream stops early.

    `deliver` runs inside the upstream read's own callback (see `Stream.pipe`): the handler task sleeps until
    the stream ends. A client that cannot take more pauses the upstream reads until it drains.
    """

    def deliver(batch: list[bytes]) -> tuple[int, str] | None:
        out, done, error = step(batch)
        if error is not None:
            resp.write(out)
            return error
        if done:
            resp.defer(out)
            return None
        resp.write(out)
        if resp.paused:
            stream.pause()
            resp.on_drain(stream.resume)
        return None

    try:
        error = await stream.pipe(deliver)
    except STREAM_BREAKS as exc:
        return _failed(stream, (BROKEN, stream_broke(exc)))
    except asyncio.CancelledError:
        if not shutdown_cut(resp):
            raise
        return _failed(stream, (SHUTDOWN, SHUTDOWN_MESSAGE))
    return None if error is None else _failed(stream, error)


def _failed(stream: Stream, failure: tuple[int, str]) -> tuple[int, str]:
    """Note why a stream stopped early in its request's record (the client learns it in-stream)."""
    if stream.record is not None:
        stream.record.error = failure[1]
    return failure


def shutdown_cut(resp: Response) -> bool:
    """Call in `except CancelledError`: True (cancellation consumed) when the shutdown deadline cut `resp`,
    which then still gets its protocol's error event; False for any other cancellation (re-raise it)."""
    if not resp.cut or resp.disconnected:
        return False
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return True


# -- error tables: a failed upstream exchange → the client's error, per surface --------------------------------

# What the gateway raises when it gives up before the first byte; the driver answers them from the surface's table.
GATEWAY_ERRORS = (UpstreamError, ExhaustedError, NoAccountError, ProxyFailure)
# Row.status for "Google's own status (through the table's status_map)".
GOOGLE_STATUS = 0


@dataclass(frozen=True, slots=True)
class Row:
    """One outcome's answer. `message` may name {message} (Google's, or the exception's), {mapped}, {detail}."""

    status: int
    message: str = "{message}"
    error_type: str | None = None
    code: str | None = None


def _same(text: str) -> str:
    return text


def _no_rule(status: int, message: str) -> Row | None:
    return None


@dataclass(frozen=True, slots=True)
class ErrorTable:
    """How a surface words each way the gateway can fail (reference §6.6 for Anthropic)."""

    rejected: Row  # Google answered an error the retry policy does not retry (UpstreamError)
    not_found: Row  # every attempt answered 404: the model is there for nobody
    unreachable: Row  # the last attempt reached no Google endpoint
    exhausted: Row  # every attempt failed otherwise (rate limits, overload)
    no_account: Row  # no account can take the request now (NoAccountError)
    status_map: dict[int, int] = field(default_factory=dict)  # Google's status → the client's
    # Retry-After seconds for a NoAccountError that says how long to wait (None: no header).
    retry_after: Callable[[float], int] | None = round
    text: Callable[[str], str] = _same  # Google's message as the client reads it
    rule: Callable[[int, str], Row | None] = _no_rule  # a surface's special case for (status, text)

    def error(self, exc: Exception, mapped: str) -> HttpError:
        """The client-facing HttpError for a gateway failure (headers: X-Mapped-Model, X-Account-Email)."""
        if isinstance(exc, UpstreamError):
            message = self.text(exc.message)
            row = self.rule(exc.status, message) or self.rejected
            return self._answer(row, exc.status, message, mapped, str(exc), upstream_headers(exc.email, mapped))
        if isinstance(exc, ExhaustedError):
            row = self.not_found if exc.not_found else self.unreachable if exc.unreachable else self.exhausted
            head = upstream_headers(exc.email, mapped)
            return self._answer(
                row, exc.status, UNREACHABLE_MESSAGE if exc.unreachable else str(exc), mapped, str(exc), head
            )
        if isinstance(exc, NoAccountError):
            head = upstream_headers("", mapped)
            if exc.retry_after and self.retry_after is not None:
                head += b"retry-after: %d\r\n" % max(1, self.retry_after(exc.retry_after))
            return self._answer(self.no_account, 503, str(exc), mapped, str(exc), head)
        if isinstance(exc, ProxyFailure):
            # The proxy failed, not Google nor the account: named as such, whatever the surface.
            return HttpError(exc.status, exc.message, code=exc.code, headers=upstream_headers("", mapped))
        raise exc

    def _answer(self, row: Row, google: int, message: str, mapped: str, detail: str, head: bytes) -> HttpError:
        status = row.status or self.status_map.get(google, google)
        text = row.message.format(message=message, mapped=mapped, detail=detail)
        return HttpError(status, text, error_type=row.error_type, code=row.code, headers=head)
