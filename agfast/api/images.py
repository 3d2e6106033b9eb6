"""OpenAI Images (`POST /v1/images/generations`) onto Gemini's image model (reference §6.4).

Each of the `n` images is one non-streaming generateContent call with `requestType: image_gen`; they run
concurrently, at most IMAGE_CONCURRENCY at once, each with the gateway's own retries and rotation."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import orjson

from agfast.api.common import json_object, upstream_headers
from agfast.api.driver import Services, opened
from agfast.api.openai import ERRORS
from agfast.convert import images as plans
from agfast.convert.models import resolve_model_route
from agfast.http.errors import Family, HttpError
from agfast.http.multipart import Part, parse_form
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.record import RequestRecord
from agfast.upstream.client import envelope, fnv1a64_signed
from agfast.upstream.gateway import count_tokens

# Image calls of one request in flight at once: n=10 must not take ten accounts' worth of a small pool at once.
IMAGE_CONCURRENCY = 4


class ImagesApi:
    __slots__ = ("app",)

    def __init__(self, app: Services) -> None:
        self.app = app

    async def generations(self, req: Request, resp: Response) -> None:
        await self.app.driver.handle(Family.OPENAI, ERRORS, self._generations, req, resp)

    async def edits(self, req: Request, resp: Response) -> None:
        await self.app.driver.handle(Family.OPENAI, ERRORS, self._edits, req, resp)

    async def _edits(self, req: Request, resp: Response, record: RequestRecord) -> None:
        """multipart `image` (or `image[]`), optional `mask`, `prompt` and the generation options."""
        body, parts = edit_request(req.headers.get(b"content-type", b""), req.body)
        req.body = b""
        await self.answer(req, resp, record, body, parts)

    async def _generations(self, req: Request, resp: Response, record: RequestRecord) -> None:
        body = json_object(req)
        await self.answer(req, resp, record, body, None)

    async def answer(
        self,
        req: Request,
        resp: Response,
        record: RequestRecord,
        body: dict[str, Any],
        parts: list[dict[str, Any]] | None,
    ) -> None:
        """Plan, call the image model `n` times, answer `{created, data}` (edits pass their image parts)."""
        app = self.app
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise HttpError(400, "'model' must be a string.", param="model")
        model = model or plans.DEFAULT_IMAGE_MODEL
        record.model = model
        app.permit(req, model)
        target = resolve_model_route(model, app.config.custom_mapping, app.pool.forwarding())
        plan = plans.generation_plan(body, target, parts)
        mapped = app.route(plan.model)
        gate = asyncio.Semaphore(IMAGE_CONCURRENCY)
        results = await asyncio.gather(*(self._one(record, plan, mapped, gate) for _ in range(plan.n)))
        opened(req, record)
        email = ""
        data: list[dict[str, str]] = []
        usage = {"promptTokenCount": 0, "candidatesTokenCount": 0}
        for (mime, b64), lease_email, used in results:
            email = lease_email
            for name in usage:
                usage[name] += int(used.get(name) or 0)
            data.append({"url": f"data:{mime};base64,{b64}"} if plan.response_format == "url" else {"b64_json": b64})
        count_tokens(record, usage)
        answer = {"created": int(time.time()), "data": data}
        resp.send(200, orjson.dumps(answer), b"application/json", upstream_headers(email, mapped))

    async def _one(
        self, record: RequestRecord, plan: plans.ImagePlan, mapped: str, gate: asyncio.Semaphore
    ) -> tuple[tuple[str, str], str, dict[str, Any]]:
        request = dict(plan.request)
        request_id = f"agent-{uuid.uuid4()}"

        def build(lease: Any) -> bytes:
            request["sessionId"] = fnv1a64_signed(lease.account_id)
            return envelope(
                request, model=mapped, project=lease.project_id, request_id=request_id, request_type="image_gen"
            )

        async with gate:
            raw, lease = await self.app.gateway.call(
                record, method="generateContent", model=mapped, session_id=None, build=build
            )
        answer = orjson.loads(raw)
        image = plans.first_image(answer) if isinstance(answer, dict) else None
        if image is None:
            message = f"The image model `{mapped}` answered without an image (it may have refused the prompt)."
            raise HttpError(502, message, error_type="upstream_error", code="no_image")
        inner = answer.get("response", answer)
        return image, lease.email, inner.get("usageMetadata") or {}


# One uploaded image or mask: Gemini takes at most 20 MB of inline data per request (the reference's limit for
# audio uploads is 15 MB); images beyond that could only fail upstream.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_FIELDS = ("image", "image[]")
# Form fields that are numbers in the JSON body the plan reads.
INT_FIELDS = frozenset({"n"})
TEXT_FIELDS = ("prompt", "model", "n", "size", "quality", "style", "response_format", "image_size")
MASK_HINT = "The last image is a mask: change only the areas where it is transparent and keep everything else as it is."


def _inline(part: Part) -> dict[str, Any]:
    mime = part.content_type if part.content_type.startswith("image/") else "image/png"
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(part.data).decode()}}


def edit_request(content_type: bytes, raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The form → (the JSON body generations reads, the image parts sent before the prompt)."""
    form = parse_form(content_type, raw, MAX_IMAGE_BYTES)
    images = [part for name in IMAGE_FIELDS for part in form.get(name, ()) if part.data]
    if not images:
        raise HttpError(400, "'image' is required: the picture to edit, as a file part.", param="image")
    body: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        found = form.get(name)
        if not found:
            continue
        text = bytes(found[0].data).decode("utf-8", "replace")
        if name in INT_FIELDS:
            if not text.strip().isdigit():
                raise HttpError(400, f"'{name}' must be an integer.", param=name)
            body[name] = int(text)
        else:
            body[name] = text
    parts = [_inline(image) for image in images]
    mask = next((part for part in form.get("mask", ()) if part.data), None)
    if mask is not None:
        parts.append(_inline(mask))
        body["prompt"] = f"{body.get('prompt', '')}\n{MASK_HINT}" if body.get("prompt") else body.get("prompt")
    return body, parts
