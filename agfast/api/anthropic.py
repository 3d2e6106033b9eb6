"""Anthropic-compatible surface: /v1/messages and /v1/messages/count_tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agfast.api.common import json_object, not_yet, require
from agfast.http.protocol import Request
from agfast.http.response import Response

if TYPE_CHECKING:
    from agfast.app import App


class AnthropicApi:
    __slots__ = ("app",)

    def __init__(self, app: App) -> None:
        self.app = app

    async def messages(self, req: Request, resp: Response) -> None:
        body = json_object(req)
        require(body, "model", str)
        require(body, "messages", list)
        require(body, "max_tokens", int)
        raise not_yet("/v1/messages")

    async def count_tokens(self, req: Request, resp: Response) -> None:
        body = json_object(req)
        require(body, "model", str)
        require(body, "messages", list)
        raise not_yet("/v1/messages/count_tokens")
