"""`POST /v1/models/detect`: what agfast would do with a model name, without calling upstream (reference §1.1).

Answers `{model, mapped_model, type, features{has_web_search, is_image_gen}, config?}`; `type` is the
envelope's `requestType` family (`agent`, `web_search` or `image_gen`) and `config` the image settings."""

from __future__ import annotations

from typing import Any

import orjson

from agfast.api.common import json_object
from agfast.api.driver import Services
from agfast.convert.images import image_config, is_image_model
from agfast.convert.models import resolve_model_route
from agfast.http.errors import HttpError
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.http.router import Handler

# The reference's web-search switch on a bare model name (tools cannot be named here).
ONLINE_SUFFIX = "-online"


def detect(model: str, mapped: str) -> dict[str, Any]:
    """The answer for one name: pure, so tables of names can test it."""
    image = is_image_model(model, mapped)
    search = not image and model.endswith(ONLINE_SUFFIX)
    kind = "image_gen" if image else "web_search" if search else "agent"
    answer: dict[str, Any] = {
        "model": model,
        "mapped_model": mapped,
        "type": kind,
        "features": {"has_web_search": search, "is_image_gen": image},
    }
    if image:
        answer["config"] = image_config(mapped)[1]
    return answer


def handler(app: Services) -> Handler:
    def detect_model(req: Request, resp: Response) -> None:
        model = json_object(req).get("model")
        if not isinstance(model, str) or not model:
            raise HttpError(400, 'Missing \'model\' field: send {"model": "<name>"}.', param="model")
        if not model.isprintable():
            raise HttpError(400, "Model name must not contain control characters.", param="model")
        mapped = resolve_model_route(model, app.config.custom_mapping, app.pool.forwarding())
        resp.send(200, orjson.dumps(detect(model, mapped)))

    return detect_model
