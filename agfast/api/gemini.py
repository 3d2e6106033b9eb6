"""Gemini-native surface (`/v1beta/models/…`, and `/v1/models/{m}:{action}` for google-genai 3.x).

The request is a GenerateContentRequest already: it is adapted for v1internal, wrapped in the envelope and
always streamed upstream; streaming clients get each event unwrapped (`{"response": x}` → `x`), others get
the collected response. Errors use Google's shape.
"""

from __future__ import annotations

from typing import Any

import orjson

from agfast.api.common import GOOGLE_STATUS, ErrorTable, Row
from agfast.api.driver import WIRE, Services, Surface, path_model
from agfast.convert import gemini as convert
from agfast.convert.outcomes import Outcome
from agfast.http.errors import Family
from agfast.http.request import Request
from agfast.http.response import Response

# Model lists report this context window for a model Google did not describe (no account listed it yet).
DEFAULT_INPUT_TOKEN_LIMIT = 128000
GENERATION_METHODS = ("generateContent", "streamGenerateContent", "countTokens")
# A Cherry Studio artefact the plan removes, when the raw body holds it.
UNDEFINED_MARKER = b'"' + convert.UNDEFINED.encode() + b'"'


# A failed upstream exchange, in Google's words (no Retry-After: the reference sends none here).
ERRORS = ErrorTable(
    rejected=Row(GOOGLE_STATUS, error_type="UPSTREAM_ERROR"),
    not_found=Row(404, "Model {mapped} is not available to any account. {detail}"),
    unreachable=Row(502),
    exhausted=Row(429, "All accounts exhausted. {detail}"),
    no_account=Row(503),
    retry_after=None,
)


class GeminiApi:
    __slots__ = ("app", "count", "ctx", "driver", "generation")

    def __init__(self, app: Services) -> None:
        self.app = app
        self.driver = app.driver
        # What planning may ask of the app, bound once.
        ctx = self.ctx = convert.Context(app.route, app.model_spec, WIRE)

        def generate(body: dict[str, Any], req: Request, undefined: bool) -> Outcome:
            alt_sse = b"alt=sse" in req.query
            return convert.outcome(
                body, req.headers, ctx, model=req.name, action=req.action, alt_sse=alt_sse, undefined=undefined
            )

        def count(body: dict[str, Any], req: Request, undefined: bool) -> Outcome:
            return convert.outcome(body, req.headers, ctx, model=req.name, action="countTokens")

        self.generation = Surface(Family.GEMINI, ERRORS, generate, path_model, UNDEFINED_MARKER)
        self.count = Surface(Family.GEMINI, ERRORS, count, path_model)

    async def generate(self, req: Request, resp: Response) -> None:
        await self.driver.run(self.generation, req, resp)

    async def count_tokens(self, req: Request, resp: Response) -> None:
        await self.driver.run(self.count, req, resp)

    def _model_doc(self, name: str, mapped: str) -> dict[str, Any]:
        """A Gemini `Model` for a callable name, its limits as Google described the model it routes to."""
        app = self.app
        spec = app.model_spec(mapped)
        record = app.catalog.records.get(mapped)
        return {
            "name": f"models/{name}",
            "version": "001",
            "displayName": (record.display_name if record else None) or name,
            "description": "" if mapped == name else f"Served by {mapped}.",
            "inputTokenLimit": (record.max_tokens if record else None) or DEFAULT_INPUT_TOKEN_LIMIT,
            "outputTokenLimit": spec.max_output_tokens,
            "supportedGenerationMethods": GENERATION_METHODS,
            "temperature": 1.0,
            "topP": 0.95,
            "topK": 64,
            "thinking": spec.can_think,
        }

    def list_models(self, req: Request, resp: Response) -> None:
        lookup = self.app.lookup
        models = []
        for name in self.app.model_names():
            mapped = lookup(name)
            if mapped is not None:
                models.append(self._model_doc(name, mapped))
        resp.send(200, orjson.dumps({"models": models}))

    def get_model(self, req: Request, resp: Response) -> None:
        name = req.name
        resp.send(200, orjson.dumps(self._model_doc(name, self.app.route(name))))
