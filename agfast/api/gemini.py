"""Gemini-native surface (`/v1beta/models/…`, and `/v1/models/{m}:{action}` for google-genai 3.x).

Requests are validated now; the v1internal passthrough lands with the upstream issue.
"""

from __future__ import annotations

from agfast.api.common import json_object, not_yet, require
from agfast.http.protocol import Request
from agfast.http.response import Response


def generate(req: Request, resp: Response) -> None:
    body = json_object(req)
    require(body, "contents", list)
    raise not_yet(f"models/{req.model}:{req.action}")


def count_tokens(req: Request, resp: Response) -> None:
    body = json_object(req)
    if "generateContentRequest" not in body:
        require(body, "contents", list)
    raise not_yet(f"models/{req.model}:countTokens")


def list_models(req: Request, resp: Response) -> None:
    raise not_yet("/v1beta/models")


def get_model(req: Request, resp: Response) -> None:
    raise not_yet(f"/v1beta/models/{req.model}")
