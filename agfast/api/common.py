"""What every surface shares: one parse and one clear 400 naming what is wrong; response headers; the pump
that streams converted upstream events to a client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from agfast.http.errors import HttpError
from agfast.http.protocol import Request
from agfast.http.response import Response
from agfast.upstream.gateway import DONE, STREAM_BREAKS, Stream, parse_event

# Status reported for an upstream that broke mid-stream (no Google status exists for it).
BROKEN = 0

_KINDS: dict[type, str] = {
    str: "a string",
    list: "an array",
    dict: "an object",
    int: "an integer",
    bool: "a boolean",
}


def json_object(req: Request) -> dict[str, Any]:
    """The body as a JSON object, parsed exactly once."""
    if not req.body:
        raise HttpError(400, "Request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HttpError(400, f"Request body must be a JSON object, not {_json_kind(body)}.")
    return body


def require(body: dict[str, Any], name: str, kind: type) -> Any:
    """`body[name]`, or a 400 that names the field and what it should be."""
    value = body.get(name)
    if value is None:
        raise HttpError(400, f"Missing required field '{name}'.", param=name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HttpError(400, f"Field '{name}' must be {_KINDS.get(kind, kind.__name__)}.", param=name)
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


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


async def pump(resp: Response, stream: Stream, feed: Callable[[dict[str, Any]], bytes]) -> tuple[int, str] | None:
    """Stream converted events to a client that asked to stream; the caller ends the response.

    Returns None when upstream finished, else (Google status, message) for an error event, or (BROKEN, …)
    when the upstream connection broke. Past the first byte nothing can be retried: the surface reports it
    in-stream. Once Google marks the answer finished, the rest is held for `end()` (one write less).
    """
    try:
        async for batch in stream.batches():
            out: list[bytes] = []
            done = False
            for data in batch:
                if data == DONE:
                    continue
                chunk, error = parse_event(data)
                if error is not None:
                    resp.write(b"".join(out))
                    return error
                if chunk is not None:
                    out.append(feed(chunk))
                    done = done or upstream_done(chunk)
            if done:
                resp.defer(b"".join(out))
                continue
            resp.write(b"".join(out))
            if resp.paused:
                await resp.drain()
    except STREAM_BREAKS as exc:
        return BROKEN, f"upstream stream interrupted ({type(exc).__name__})"
    return None
