"""Anthropic-compatible surface: /v1/messages and /v1/messages/count_tokens (reference §6.5–6.8, §9).

Each route is a plan function (`convert.anthropic.outcome`: §6.5's pre-processing in order, then the warmup
probe answered locally, z.ai's dispatch, or Google) and Anthropic's error table; the driver runs it. Errors
before the first byte are Anthropic error bodies with the right status and type; after it, an in-stream
`error` event.
"""

from __future__ import annotations

from typing import Any

from agfast.api.common import GOOGLE_STATUS, ErrorTable, Row
from agfast.api.driver import WIRE, Services, Surface
from agfast.api.zai import ZaiDispatcher
from agfast.convert import anthropic as convert
from agfast.convert.outcomes import Outcome
from agfast.http.errors import Family
from agfast.http.request import Request
from agfast.http.response import Response

# Google refusing *our* account is not the client's auth problem: 401/403 would make Claude Code report a bad
# key or log the user out, 503 makes it retry (the reference rewrites 403; 401 the same way here).
ACCOUNT_FAULT_STATUS = {401: 503, 403: 503}
# Told to the plan: the raw body mentions cache_control (else the plan skips the deep removal pass).
CACHE_MARKER = b"cache_control"

# Claude Code compacts the conversation when it sees Anthropic's "prompt is too long".
PROMPT_TOO_LONG = Row(400, "prompt is too long: {message}", "invalid_request_error")


def _too_long(status: int, message: str) -> Row | None:
    return PROMPT_TOO_LONG if status == 400 and convert.is_too_long(message) else None


def _whole_seconds(seconds: float) -> int:
    return int(seconds + 0.999)


# A failed upstream exchange, in Anthropic's words (reference §6.6); Google's status passes through, except
# that Google refusing our account is no auth error of the client's (ACCOUNT_FAULT_STATUS).
ERRORS = ErrorTable(
    rejected=Row(GOOGLE_STATUS),
    not_found=Row(GOOGLE_STATUS, "{detail}"),
    unreachable=Row(502, error_type="api_error"),
    exhausted=Row(GOOGLE_STATUS, "{detail}"),
    no_account=Row(503, error_type="overloaded_error"),
    status_map=ACCOUNT_FAULT_STATUS,
    retry_after=_whole_seconds,
    text=convert.upstream_text,
    rule=_too_long,
)


class AnthropicApi:
    __slots__ = ("count", "ctx", "driver", "message")

    def __init__(self, app: Services, zai: ZaiDispatcher) -> None:
        self.driver = app.driver
        # What planning may ask of the app, bound once.
        ctx = self.ctx = convert.Context(
            app.lookup,
            app.pool.available_models,
            app.model_spec,
            app.signatures,
            WIRE,
            app.unknown_model,
            lambda: zai.mode,
            zai.take_turn,
        )

        def surface(count: bool) -> Surface:
            def plan(body: dict[str, Any], req: Request, cached: bool) -> Outcome:
                return convert.outcome(body, req.headers, ctx, count=count, cached=cached)

            return Surface(Family.ANTHROPIC, ERRORS, plan, marker=CACHE_MARKER)

        self.message, self.count = surface(False), surface(True)

    async def messages(self, req: Request, resp: Response) -> None:
        await self.driver.run(self.message, req, resp)

    async def count_tokens(self, req: Request, resp: Response) -> None:
        await self.driver.run(self.count, req, resp)
