"""OpenAI-compatible surface. Requests are validated now; conversion lands with the OpenAI issue."""

from __future__ import annotations

from agfast.api.common import json_object, not_yet, require
from agfast.http.protocol import Request
from agfast.http.response import Response


def chat_completions(req: Request, resp: Response) -> None:
    body = json_object(req)
    require(body, "model", str)
    require(body, "messages", list)
    raise not_yet("/v1/chat/completions")


def completions(req: Request, resp: Response) -> None:
    body = json_object(req)
    require(body, "model", str)
    if "prompt" not in body and "input" not in body:
        require(body, "prompt", str)
    raise not_yet("/v1/completions")


def responses(req: Request, resp: Response) -> None:
    body = json_object(req)
    require(body, "model", str)
    raise not_yet("/v1/responses")
