"""z.ai dispatch for the Anthropic endpoint (reference §9): which requests go there, and the pass-through.

z.ai speaks Anthropic Messages itself, so a dispatched request is the client's (cleaned) body with the model
name mapped, sent with the z.ai key; status, content type and body come back unchanged, streamed as they
arrive. No retries and no rotation: z.ai is one upstream, not a pool.

    off        never
    exclusive  always
    pooled     one extra slot in a round robin over (Google accounts + 1); slot 0 is z.ai
    fallback   when no Google account can take the request (none configured, all locked out or exhausted)
"""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import orjson

from agfast.api.driver import Services
from agfast.config import ZaiConfig
from agfast.http.errors import HttpError
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.upstream.client import TransportError
from agfast.upstream.proxy import ProxyFailure

# Client headers that mean something to an Anthropic-compatible server; the rest (our key, hop-by-hop,
# Claude Code's telemetry ids) stays here. accept-encoding is left to aiohttp, which decodes what it asks for.
FORWARDED_HEADERS = (b"content-type", b"accept", b"anthropic-version", b"user-agent", b"cache-control")
ZAI_PREFIX = "zai:"


def zai_model(model: str, config: ZaiConfig) -> str:
    """z.ai model for a client model: explicit mapping, then glm-*/non-Claude names as they are, else by family."""
    mapping = config.model_mapping
    found = mapping.get(model) or mapping.get(model.lower())
    if found:
        return found
    if model.startswith(ZAI_PREFIX):
        return model[len(ZAI_PREFIX) :]
    lower = model.lower()
    if lower.startswith("glm-") or not lower.startswith("claude-"):
        return model
    models = config.models
    for family in ("opus", "haiku"):
        if family in lower:
            return models.get(family) or models.get("sonnet") or model
    return models.get("sonnet") or model


class ZaiDispatcher:
    __slots__ = ("_turns", "app")

    def __init__(self, app: Services) -> None:
        self.app = app
        self._turns = itertools.count()

    @property
    def mode(self) -> str:
        config = self.app.config.zai
        return config.dispatch_mode if config.enabled else "off"

    def take_turn(self) -> bool:
        """Whether z.ai serves this request before Google is tried (exclusive, a pooled turn, an empty pool)."""
        mode = self.mode
        if mode == "exclusive":
            return True
        size = self.app.pool.size
        if mode == "pooled":
            return next(self._turns) % (size + 1) == 0
        return mode == "fallback" and size == 0

    @property
    def falls_back(self) -> bool:
        return self.mode == "fallback"

    async def forward(self, req: Request, resp: Response, body: dict[str, Any], path: str) -> None:
        """POST `body` (model mapped) to z.ai's `path` and stream the answer back unchanged."""
        config = self.app.config.zai
        if not config.enabled:
            raise HttpError(400, "z.ai is disabled")
        if not config.api_key:
            raise HttpError(400, "z.ai api_key is not set")
        model = zai_model(str(body.get("model", "")), config)
        payload = orjson.dumps({**body, "model": model})
        sent = req.headers
        headers = {name.decode(): sent[name].decode("latin-1") for name in FORWARDED_HEADERS if name in sent}
        headers.setdefault("content-type", "application/json")
        if b"x-api-key" in req.headers or b"authorization" not in req.headers:
            headers["x-api-key"] = config.api_key
        if b"authorization" in req.headers:
            headers["authorization"] = "Bearer " + config.api_key
        url = config.base_url.rstrip("/") + path
        tag = b"x-mapped-model: " + model.encode() + b"\r\nx-account-email: z.ai\r\n"
        try:
            answer = await self.app.client.relay(url, payload, headers)
        except ProxyFailure as exc:
            raise HttpError(exc.status, exc.message, headers=tag) from None
        except TransportError as exc:
            raise HttpError(502, f"z.ai request failed: {exc}", headers=tag) from None
        try:
            async with answer.response as got:
                content_type = got.headers.get("Content-Type", "application/json").encode("latin-1")
                resp.start(got.status, content_type, tag)
                async for chunk in got.content.iter_any():
                    resp.write(chunk)
                    if resp.paused:
                        await resp.drain()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if not resp.head_sent:
                raise HttpError(502, f"z.ai request failed: {type(exc).__name__}", headers=tag) from None
        resp.end()
