"""The application: upstream services wired together, and the route table in one screen."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from agfast.api import service
from agfast.api.anthropic import AnthropicApi
from agfast.api.gemini import GeminiApi
from agfast.api.openai import OpenAIApi
from agfast.config import Config
from agfast.convert.models import list_models, route_for_pool
from agfast.convert.signatures import SignatureCache
from agfast.http.errors import Family, HttpError
from agfast.http.protocol import Request
from agfast.http.response import Response
from agfast.http.router import GET, HEAD, POST, Router
from agfast.upstream.accounts import AccountStore
from agfast.upstream.client import UpstreamClient
from agfast.upstream.gateway import CLAUDE_BETA_GEMINI_PATH, Gateway
from agfast.upstream.pool import AccountPool

GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")
# Distinct client model names remembered; clients use a handful, this only bounds a hostile caller.
ROUTE_CACHE_SIZE = 4096
# The `created` stamp Antigravity Tools reports for every model.
MODEL_CREATED = 1706745600


class App:
    """Per-process services: account store, the one upstream session, the pool and the retrying gateway."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = AccountStore(config.data_dir)
        self.client = UpstreamClient(config)
        self.pool = AccountPool(config, self.store, self.client)
        self.gateway = Gateway(config, self.pool, self.client)
        self.gemini_gateway = Gateway(config, self.pool, self.client, CLAUDE_BETA_GEMINI_PATH)
        self.signatures = SignatureCache.create()
        self.gemini = GeminiApi(self)
        self.openai = OpenAIApi(self)
        self.anthropic = AnthropicApi(self)
        self._upkeep: asyncio.Task[None] | None = None
        self._routes: dict[str, str] = {}
        self._routes_version = -1

    def start(self) -> None:
        """Load accounts now; quota discovery and refresh run in the background (never on a request)."""
        self.pool.load()
        self._upkeep = asyncio.get_running_loop().create_task(self.pool.upkeep())

    async def close(self) -> None:
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
        await self.pool.close()
        await self.client.close()

    def route(self, model: str) -> str:
        """The upstream model for a client's model name, cached until the pool's models change."""
        pool = self.pool
        if self._routes_version != pool.version:
            self._routes = {}
            self._routes_version = pool.version
        mapped = self._routes.get(model)
        if mapped is None:
            if not model.isprintable():
                # It would end up in X-Mapped-Model and log lines; no real model name has control characters.
                raise HttpError(400, "Model name must not contain control characters.", param="model")
            mapped = route_for_pool(model, self.config.custom_mapping, pool.forwarding(), pool.available_models())
            if len(self._routes) < ROUTE_CACHE_SIZE:
                self._routes[model] = mapped
        return mapped

    def model_names(self) -> list[str]:
        return list_models(self.config.custom_mapping, self.pool.available_models())

    def models_v1(self, req: Request, resp: Response) -> None:
        """`GET /v1/models` is both OpenAI's list and google-genai 3.x's (API version v1): the client decides."""
        headers = req.headers
        if b"x-goog-api-client" in headers or b"x-goog-api-key" in headers:
            self.gemini.list_models(req, resp)
        else:
            self.openai_models(req, resp)

    def openai_models(self, req: Request, resp: Response) -> None:
        data = [
            {"id": n, "object": "model", "created": MODEL_CREATED, "owned_by": "antigravity"}
            for n in self.model_names()
        ]
        resp.send(200, orjson.dumps({"object": "list", "data": data}))


def build_router(app: App) -> Router:
    gemini, openai, anthropic = app.gemini, app.openai, app.anthropic
    r = Router()
    r.add((GET,), "/healthz", service.health, Family.OPENAI, health=True)
    r.add((GET,), "/health", service.health, Family.OPENAI, health=True)
    r.add((GET, HEAD), "/api/hello", service.hello, Family.ANTHROPIC, public=True)
    r.add((POST,), "/v1/api/event_logging", service.swallow, Family.ANTHROPIC)
    r.add((POST,), "/v1/api/event_logging/batch", service.swallow, Family.ANTHROPIC)

    r.add((GET,), "/v1/models", app.models_v1, Family.OPENAI)
    r.add((POST,), "/v1/chat/completions", openai.chat_completions, Family.OPENAI)
    r.add((POST,), "/v1/completions", openai.completions, Family.OPENAI)
    r.add((POST,), "/v1/responses", openai.responses, Family.OPENAI)
    r.add((POST,), "/responses", openai.responses, Family.OPENAI)

    r.add((POST,), "/v1/messages", anthropic.messages, Family.ANTHROPIC)
    r.add((POST,), "/v1/messages/count_tokens", anthropic.count_tokens, Family.ANTHROPIC)
    r.add((GET,), "/v1/models/claude", app.openai_models, Family.ANTHROPIC)

    r.add((GET,), "/v1beta/models", gemini.list_models, Family.GEMINI)
    for prefix in GEMINI_PREFIXES:
        r.add_model_action(prefix, "generateContent", (POST,), gemini.generate, Family.GEMINI)
        r.add_model_action(prefix, "streamGenerateContent", (POST,), gemini.generate, Family.GEMINI)
        r.add_model_action(prefix, "countTokens", (POST,), gemini.count_tokens, Family.GEMINI)
    r.add_model_action("/v1beta/models/", "", (GET,), gemini.get_model, Family.GEMINI)
    return r
