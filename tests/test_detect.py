"""`POST /v1/models/detect` through the openai SDK: what agfast would do with a model name (reference §1.1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from helpers import ServerThread
from stack import KEY

from agfast.api.detect import detect

SHARED_STACK = True
STACK_CONFIG = {"custom_mapping": {"my-painter": "gemini-3-pro-image-4k-16x9"}}


@pytest.fixture
def client(stack: ServerThread) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    yield c
    c.close()


def post(client: openai.OpenAI, body: dict[str, Any]) -> Any:
    return client.post("/models/detect", body=body, cast_to=object)


def test_chat_model_is_agent_with_its_route(client: openai.OpenAI) -> None:
    assert post(client, {"model": "gpt-4o"}) == {
        "model": "gpt-4o",
        "mapped_model": "gemini-2.5-flash",
        "type": "agent",
        "features": {"has_web_search": False, "is_image_gen": False},
    }


def test_image_variant_carries_its_image_config(client: openai.OpenAI) -> None:
    answer = post(client, {"model": "gemini-3-pro-image-2k-21x9"})
    assert answer["type"] == "image_gen"
    assert answer["features"] == {"has_web_search": False, "is_image_gen": True}
    assert answer["config"] == {"aspectRatio": "21:9", "imageSize": "2K"}


def test_custom_mapping_to_an_image_model_is_image_gen(client: openai.OpenAI) -> None:
    answer = post(client, {"model": "my-painter"})
    assert answer["mapped_model"] == "gemini-3-pro-image-4k-16x9"
    assert answer["config"] == {"aspectRatio": "16:9", "imageSize": "4K"}


def test_online_suffix_means_web_search(client: openai.OpenAI) -> None:
    answer = post(client, {"model": "gemini-2.5-flash-online"})
    assert answer["type"] == "web_search"
    assert answer["features"] == {"has_web_search": True, "is_image_gen": False}


@pytest.mark.parametrize("body", [{}, {"model": ""}, {"model": 7}, {"prompt": "hi"}])
def test_missing_model_is_400_in_openai_shape(client: openai.OpenAI, body: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        post(client, body)
    assert err.value.status_code == 400
    error = err.value.body
    assert isinstance(error, dict)
    assert "model" in error["message"] and error["param"] == "model"
    assert set(error) >= {"message", "type", "code", "param"}


@pytest.mark.parametrize(
    ("model", "config"),
    [
        ("gemini-3-pro-image", {"aspectRatio": "1:1"}),
        ("gemini-3-pro-image-16x9-4k", {"aspectRatio": "16:9", "imageSize": "4K"}),
        ("gemini-3-pro-image-9-16", {"aspectRatio": "9:16"}),
        ("gemini-3-pro-image-hd", {"aspectRatio": "1:1", "imageSize": "4K"}),
    ],
)
def test_image_suffixes(model: str, config: dict[str, str]) -> None:
    assert detect(model, model)["config"] == config
