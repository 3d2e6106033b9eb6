"""OpenAI-compatible surface: /v1/chat/completions, /v1/completions, /v1/responses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agfast.api.common import json_object, not_yet, require
from agfast.http.protocol import Request
from agfast.http.response import Response

if TYPE_CHECKING:
    from agfast.app import App


class OpenAIApi:
    __slots__ = ("app",)

    def __init__(self, app: App) -> None:
        self.app = app

    async def chat_completions(self, req: Request, resp: Response) -> None:
        body = json_object(req)
        require(body, "model", str)
        require(body, "messages", list)
        raise not_yet("/v1/chat/completions")

    async def completions(self, req: Request, resp: Response) -> None:
        body = json_object(req)
        require(body, "model", str)
        if "prompt" not in body and "input" not in body:
            require(body, "prompt", str)
        raise not_yet("/v1/completions")

    async def responses(self, req: Request, resp: Response) -> None:
        body = json_object(req)
        require(body, "model", str)
        raise not_yet("/v1/responses")
