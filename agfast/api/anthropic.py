"""Anthropic-compatible surface. Requests are validated now; conversion lands with the Anthropic issue."""

from __future__ import annotations

from agfast.api.common import json_object, not_yet, require
from agfast.http.protocol import Request
from agfast.http.response import Response


def messages(req: Request, resp: Response) -> None:
    body = json_object(req)
    require(body, "model", str)
    require(body, "messages", list)
    require(body, "max_tokens", int)
    raise not_yet("/v1/messages")


def count_tokens(req: Request, resp: Response) -> None:
    body = json_object(req)
    require(body, "model", str)
    require(body, "messages", list)
    raise not_yet("/v1/messages/count_tokens")
