"""OpenAI Images through the openai SDK → agfast → the simulator's image model (reference §6.4, §7)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import openai
import orjson
import pytest
from helpers import ServerThread, request
from stack import KEY, generations

from agfast.api.images import MAX_IMAGE_BYTES
from agfast.sim import GoogleSimulator
from agfast.sim.pictures import png, png_size

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


# The reference's listed variants of its image model (§7.4): size suffix × ratio suffix → (aspectRatio, imageSize).
RATIO_SUFFIXES = {
    "": "1:1",
    "-1x1": "1:1",
    "-4x3": "4:3",
    "-3x4": "3:4",
    "-16x9": "16:9",
    "-9x16": "9:16",
    "-21x9": "21:9",
}
SIZE_SUFFIXES = {"": None, "-2k": "2K", "-4k": "4K"}
VARIANTS = {
    f"gemini-3-pro-image{size}{ratio}": (aspect, image_size)
    for size, image_size in SIZE_SUFFIXES.items()
    for ratio, aspect in RATIO_SUFFIXES.items()
}


def test_every_listed_image_model_generates(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    """/v1/models lists exactly the reference's variants of the offered image model, and each is served: by
    images.generate and by chat, as the bare model with the variant's ratio and size, drawn at that ratio."""
    listed = sorted(m.id for m in client.models.list() if "image" in m.id)
    assert listed == sorted(VARIANTS)
    for model in listed:
        aspect, image_size = VARIANTS[model]
        expected = {"aspectRatio": aspect} | ({"imageSize": image_size} if image_size else {})
        w, h = (int(side) for side in aspect.split(":"))
        sim.clear_requests()
        result = client.images.generate(model=model, prompt="a red square")
        assert result.data is not None
        width, height = picture(result.data[0].b64_json or "")
        assert abs(width / height - w / h) < 0.01, model
        chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a red square"}])
        text = chat.choices[0].message.content or ""
        width, height = picture(text.partition("data:image/png;base64,")[2].partition(")")[0])
        assert abs(width / height - w / h) < 0.01, model
        sent = [orjson.loads(r.body) for r in generations(sim)]
        configs = [(e["model"], e["requestType"], e["request"]["generationConfig"]["imageConfig"]) for e in sent]
        assert configs == [("gemini-3-pro-image", "image_gen", expected)] * 2, model


# ---------------------------------------------------------------------------------------------------------
# edits: multipart


def test_edit_sends_the_image_then_the_prompt(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    source = png(32, 32)
    result = client.images.edit(image=("cat.png", source, "image/png"), prompt="give it a hat", size="1024x1536")
    assert result.data is not None
    width, height = picture(result.data[0].b64_json or "")
    assert abs(width / height - 2 / 3) < 0.01
    [sent] = generations(sim)
    parts = orjson.loads(sent.body)["request"]["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(source).decode()}}
    assert parts[-1]["text"] == "give it a hat"


def test_edit_with_mask_sends_both_and_says_which_is_the_mask(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    image, mask = png(16, 16), png(16, 17)
    result = client.images.edit(
        image=("a.png", image, "image/png"), mask=("m.png", mask, "image/png"), prompt="a window", n=2
    )
    assert result.data is not None and len(result.data) == 2
    sent = generations(sim)
    assert len(sent) == 2
    parts = orjson.loads(sent[0].body)["request"]["contents"][0]["parts"]
    assert [base64.b64decode(p["inlineData"]["data"]) for p in parts[:2]] == [image, mask]
    assert "mask" in parts[2]["text"] and parts[2]["text"].startswith("a window")


def test_edit_without_image_is_400(client: openai.OpenAI, sim: GoogleSimulator) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.images.edit(image=("a.png", b"", "image/png"), prompt="x")
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "image"
    assert generations(sim) == []


def raw_edit(stack: ServerThread, body: bytes, content_type: str) -> tuple[int, dict[str, object]]:
    reply = request(
        stack.port, "POST", "/v1/images/edits", body, {"Content-Type": content_type, "Authorization": f"Bearer {KEY}"}
    )
    return reply.status, reply.json()


FORM_HEAD = b'--b0\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhat\r\n'
IMAGE_HEAD = (
    b'--b0\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (FORM_HEAD + IMAGE_HEAD + png(4, 4), "multipart/form-data; boundary=b0"),  # no closing boundary
        (b"not a form at all", "multipart/form-data; boundary=b0"),
        (FORM_HEAD + b"--b0--\r\n", "multipart/form-data"),  # no boundary parameter
        (b'{"prompt": "hat"}', "application/json"),
        (b"--b0\r\nContent-Type: text/plain\r\n\r\nx\r\n--b0--\r\n", "multipart/form-data; boundary=b0"),  # no name
    ],
)
def test_broken_multipart_is_400_in_openai_shape(
    stack: ServerThread, sim: GoogleSimulator, body: bytes, content_type: str
) -> None:
    status, answer = raw_edit(stack, body, content_type)
    assert status == 400, answer
    error = answer["error"]
    assert isinstance(error, dict) and error["message"] and set(error) >= {"message", "type", "code", "param"}
    assert generations(sim) == []


def test_oversized_image_is_413_in_openai_shape(stack: ServerThread, sim: GoogleSimulator) -> None:
    big = b"\x89PNG" + b"\x00" * (MAX_IMAGE_BYTES + 1)
    status, answer = raw_edit(
        stack, FORM_HEAD + IMAGE_HEAD + big + b"\r\n--b0--\r\n", "multipart/form-data; boundary=b0"
    )
    assert status == 413
    error = answer["error"]
    assert isinstance(error, dict) and "larger than" in str(error["message"]) and error["param"] == "image"
    assert generations(sim) == []
