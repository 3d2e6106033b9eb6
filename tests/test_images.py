"""OpenAI Images through the openai SDK → agfast → the simulator's image model (reference §6.4, §7)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import openai
import orjson
import pytest
from helpers import ServerThread
from stack import KEY, generations

from agfast.sim import GoogleSimulator
from agfast.sim.pictures import png_size

SHARED_STACK = True
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def client(stack: ServerThread) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    yield c
    c.close()


def picture(b64: str) -> tuple[int, int]:
    data = base64.b64decode(b64)
    assert data.startswith(PNG_MAGIC)
    return png_size(data)


def test_b64_image_of_the_asked_size(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    result = client.images.generate(prompt="a lighthouse at dusk", size="1792x1024", response_format="b64_json")
    assert result.data is not None and len(result.data) == 1
    width, height = picture(result.data[0].b64_json or "")
    assert abs(width / height - 16 / 9) < 0.01
    [sent] = generations(sim)
    envelope = orjson.loads(sent.body)
    assert envelope["requestType"] == "image_gen"
    assert envelope["model"] == "gemini-3-pro-image"
    assert envelope["request"]["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9"}
    assert envelope["request"]["contents"][0]["parts"][-1]["text"].startswith("a lighthouse at dusk")


def test_url_is_a_data_url_and_n_makes_n_calls(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    result = client.images.generate(prompt="three cats", n=3, size="1024x1024", response_format="url")
    assert result.data is not None and len(result.data) == 3
    for image in result.data:
        url = image.url or ""
        assert url.startswith("data:image/png;base64,")
        assert picture(url.partition(",")[2])[0] == picture(url.partition(",")[2])[1]
    assert len(generations(sim)) == 3


def test_model_variant_and_quality_choose_ratio_and_size(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    result = client.images.generate(model="gemini-3-pro-image-21x9", prompt="a panorama", quality="hd", style="vivid")
    assert result.data is not None
    width, height = picture(result.data[0].b64_json or "")
    assert abs(width / height - 21 / 9) < 0.01
    [sent] = generations(sim)
    request = orjson.loads(sent.body)["request"]
    assert request["generationConfig"]["imageConfig"] == {"aspectRatio": "21:9", "imageSize": "4K"}
    assert "vivid" in request["contents"][0]["parts"][-1]["text"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "1000x10"}, "size"),
        ({"size": "huge"}, "size"),
        ({"n": 0}, "n"),
        ({"n": 11}, "n"),
        ({"response_format": "png"}, "response_format"),
        ({"prompt": ""}, "prompt"),
    ],
)
def test_bad_input_is_400_in_openai_shape(
    client: openai.OpenAI, sim: GoogleSimulator, kwargs: dict[str, object], param: str
) -> None:
    args: dict[str, object] = {"prompt": "a cat", **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(**args)  # type: ignore[arg-type]
    body = err.value.body
    assert isinstance(body, dict)
    assert body["param"] == param and body["message"]
    assert generations(sim) == []


def test_every_listed_image_model_generates(client: openai.OpenAI) -> None:
    listed = [m.id for m in client.models.list() if "image" in m.id]
    assert listed
    for model in listed:
        result = client.images.generate(model=model, prompt="a red square")
        assert result.data is not None
        picture(result.data[0].b64_json or "")
