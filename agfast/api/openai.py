"""OpenAI-compatible surface: /v1/chat/completions, /v1/completions, /v1/responses (and /responses).

Each route is a plan function (`convert.openai.outcome`, its context bound once) and OpenAI's error table; the
driver runs it. Every request becomes one Gemini request, always streamed upstream; streaming clients get
converted SSE as upstream events arrive (with `: ping` comments while upstream is silent), others get the
collected answer. The conversation store behind `previous_response_id` lives here (the plan reads and fills
it through its context).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from agfast.api.common import GOOGLE_STATUS, ErrorTable, Row
from agfast.api.driver import WIRE, Services, Surface
from agfast.convert import openai as plans
from agfast.convert.gemini import UNDEFINED
from agfast.convert.outcomes import Outcome
from agfast.http.errors import Family
from agfast.http.request import Request
from agfast.http.response import Response

# Conversations kept for `previous_response_id`; a handful per active client, bounded against growth.
MAX_STORED_RESPONSES = 512
# A Cherry Studio artefact the plan removes, when the raw body holds it.
UNDEFINED_MARKER = b'"' + UNDEFINED.encode() + b'"'


# A failed upstream exchange, in OpenAI's words.
ERRORS = ErrorTable(
    rejected=Row(GOOGLE_STATUS, error_type="upstream_error"),
    not_found=Row(404, "The model `{mapped}` is not available to any account. {detail}", code="model_not_found"),
    unreachable=Row(502, error_type="api_error", code="upstream_unreachable"),
    exhausted=Row(429, "All accounts exhausted. {detail}", code="rate_limit_exceeded"),
    no_account=Row(503),
)


def _named_model(body: dict[str, Any], req: Request) -> str | None:
    """The body's `model`; a Cherry Studio "[undefined]" is no name (the plan drops it)."""
    model = body.get("model")
    return model if isinstance(model, str) and model != UNDEFINED else None


class Conversations:
    """`previous_response_id` → the conversation so far (chat messages), least recently used dropped first."""

    __slots__ = ("_data", "limit")

    def __init__(self, limit: int = MAX_STORED_RESPONSES) -> None:
        self._data: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.limit = limit

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        found = self._data.get(response_id)
        if found is not None:
            self._data.move_to_end(response_id)
        return found

    def put(self, response_id: str, messages: list[dict[str, Any]]) -> None:
        self._data[response_id] = messages
        while len(self._data) > self.limit:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class OpenAIApi:
    __slots__ = ("chat", "completion", "conversations", "ctx", "driver", "response")

    def __init__(self, app: Services) -> None:
        self.driver = app.driver
        self.conversations = conversations = Conversations()
        # What planning may ask of the app, bound once.
        ctx = self.ctx = plans.Context(
            app.route, app.model_spec, app.signatures, conversations.get, conversations.limit, conversations.put, WIRE
        )

        def surface(kind: str) -> Surface:
            def plan(body: dict[str, Any], req: Request, undefined: bool) -> Outcome:
                return plans.outcome(body, req.headers, ctx, kind=kind, undefined=undefined)

            return Surface(Family.OPENAI, ERRORS, plan, _named_model, UNDEFINED_MARKER)

        self.chat = surface(plans.CHAT)
        self.completion = surface(plans.COMPLETIONS)
        self.response = surface(plans.RESPONSES)

    async def chat_completions(self, req: Request, resp: Response) -> None:
        await self.driver.run(self.chat, req, resp)

    async def completions(self, req: Request, resp: Response) -> None:
        await self.driver.run(self.completion, req, resp)

    async def responses(self, req: Request, resp: Response) -> None:
        await self.driver.run(self.response, req, resp)
