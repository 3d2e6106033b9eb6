"""Image generation settings from what a client names: the model's size/ratio suffixes, OpenAI's `size` and
`quality` (reference §6.1 `resolve_request_config`, §7.4 variants). Pure; no IO."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agfast.convert.checks import InvalidRequest

# The aspect ratios Gemini's image model draws, as (name, width / height).
ASPECT_RATIOS: tuple[tuple[str, float], ...] = tuple(
    (f"{w}:{h}", w / h) for w, h in ((21, 9), (16, 9), (4, 3), (3, 4), (9, 16), (3, 2), (2, 3), (5, 4), (4, 5), (1, 1))
)
_ASPECT_NAMES = frozenset(name for name, _ in ASPECT_RATIOS)
# A `WxH` size counts as a ratio when within this of it (the reference's tolerance: 1792x1024 → 16:9).
ASPECT_TOLERANCE = 0.05
DEFAULT_ASPECT = "1:1"
# Largest side a `WxH` size may name; beyond any image model, so a bigger number is a typo, not a wish.
MAX_SIDE = 16384
# OpenAI `quality` (and `image_size`) words → Gemini `imageSize`.
IMAGE_SIZES = {"hd": "4K", "4k": "4K", "medium": "2K", "2k": "2K", "standard": "1K", "1k": "1K"}
# Model-name suffixes → imageSize (`gemini-3-pro-image-4k-16x9`).
_SIZE_SUFFIXES = {"-4k": "4K", "-hd": "4K", "-2k": "2K"}
_RATIO_SUFFIX = re.compile(r"-(\d{1,2})[x-](\d{1,2})$")
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_SIZE_SUFFIX = re.compile(r"-(4k|hd|2k)$")


@dataclass(frozen=True, slots=True)
class ImageVariant:
    """What a model name asks for: the upstream model (suffixes stripped), ratio and size (None: not named)."""

    model: str
    aspect_ratio: str | None
    image_size: str | None


def is_image_model(*names: str) -> bool:
    """The reference's test: either the client's or the mapped name contains `-image`."""
    return any("-image" in name for name in names)


def parse_variant(model: str) -> ImageVariant:
    """Strip `-WxH` / `-W-H` and `-4k`/`-hd`/`-2k` suffixes (either order) into their settings."""
    base, ratio, size = model, None, None
    for _ in range(2):
        m = _RATIO_SUFFIX.search(base)
        if m is not None and ratio is None:
            name = f"{int(m.group(1))}:{int(m.group(2))}"
            if name in _ASPECT_NAMES:
                ratio, base = name, base[: m.start()]
                continue
        s = _SIZE_SUFFIX.search(base)
        if s is not None and size is None:
            size, base = _SIZE_SUFFIXES["-" + s.group(1)], base[: s.start()]
    return ImageVariant(base, ratio, size)


# The variants the reference lists for its image model (§7.4): size suffix × ratio suffix ("" = not named). Each
# parses back (parse_variant) into settings the model draws; /v1/models lists them for every offered image model.
VARIANT_SIZES = ("", "-2k", "-4k")
VARIANT_RATIOS = ("", "-1x1", "-4x3", "-3x4", "-16x9", "-9x16", "-21x9")


def image_variants(base: str) -> list[str]:
    """The listed names of an image model: itself and its size/ratio variants (`gemini-3-pro-image-4k-16x9`)."""
    return [base + size + ratio for size in VARIANT_SIZES for ratio in VARIANT_RATIOS]


def is_variant(model: str) -> bool:
    """An image model name carrying a size or ratio suffix."""
    return is_image_model(model) and parse_variant(model).model != model


def apply_variant(request: dict[str, Any], model: str) -> str:
    """An image model's request as the model takes it, whatever surface built it: the name's ratio/size
    suffixes become `generationConfig.imageConfig` (settings already there win) and the bare model is returned."""
    variant = parse_variant(model)
    gen = request.setdefault("generationConfig", {})
    config = gen.setdefault("imageConfig", {})
    config.setdefault("aspectRatio", variant.aspect_ratio or DEFAULT_ASPECT)
    if variant.image_size is not None:
        config.setdefault("imageSize", variant.image_size)
    return variant.model


def aspect_of_size(size: str) -> str:
    """OpenAI `size` (`1792x1024`, or a literal `16:9`) → a ratio the model draws; anything else is refused."""
    if size in _ASPECT_NAMES:
        return size
    m = _SIZE.match(size)
    if m is not None:
        w, h = int(m.group(1)), int(m.group(2))
        if 0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE:
            ratio = w / h
            for name, value in ASPECT_RATIOS:
                if abs(ratio - value) <= ASPECT_TOLERANCE:
                    return name
    choices = ", ".join(sorted(_ASPECT_NAMES))
    raise InvalidRequest(
        f"Invalid size {size!r}: give WIDTHxHEIGHT close to one of the ratios {choices} (e.g. 1024x1024, "
        "1792x1024), or the ratio itself.",
        "size",
    )


def image_config(
    model: str, size: str | None = None, quality: str | None = None, image_size: str | None = None
) -> tuple[str, dict[str, str]]:
    """(upstream model, Gemini `imageConfig`): `size` beats the name's ratio suffix, `image_size` beats
    `quality` beats the name's size suffix; ratio defaults to 1:1."""
    variant = parse_variant(model)
    config = {"aspectRatio": aspect_of_size(size) if size else variant.aspect_ratio or DEFAULT_ASPECT}
    named = image_size or quality
    resolved = IMAGE_SIZES.get(named.lower()) if named else None
    if named and resolved is None and image_size:
        raise InvalidRequest(f"Invalid image_size {image_size!r}: use 1K, 2K or 4K.", "image_size")
    resolved = resolved or variant.image_size
    if resolved:
        config["imageSize"] = resolved
    return variant.model, config


# --------------------------------------------------------------------------------------------------------
# OpenAI Images → the image model (reference §6.4 `handle_images_generations`)

# The image model a request goes to when its `model` is not one (`dall-e-3`, `gpt-image-1`, none): the one the
# built-in table and the §7.4 variants name.
DEFAULT_IMAGE_MODEL = "gemini-3-pro-image"
# OpenAI's own bound on `n`; each image is one upstream call, so this also bounds one request's fan-out.
MAX_IMAGES = 10
# A prompt longer than this is a client bug (OpenAI allows 32,000 characters for its largest model).
MAX_PROMPT_CHARS = 32000
RESPONSE_FORMATS = frozenset({"b64_json", "url"})
# `style` and `quality: hd` become words in the prompt, as the reference does: the model has no such knobs.
STYLE_HINTS = {
    "vivid": "Style: vivid, hyper-real and dramatic.",
    "natural": "Style: natural, realistic and understated.",
}
HD_HINT = "Render in high definition with fine detail."


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """One Images request, checked: what each of its `n` upstream calls sends, and how to answer."""

    model: str  # upstream image model, suffixes stripped
    n: int
    response_format: str
    request: dict[str, Any]  # the GenerateContentRequest (sessionId added per account)


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string.", name)
    return value


def generation_plan(body: dict[str, Any], target: str, parts: list[dict[str, Any]] | None = None) -> ImagePlan:
    """Check an Images body and build its upstream request. `target` is the routed model name (custom mapping
    applied); a name that is no image model means the default one. `parts` are extra input parts (edits)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("'prompt' is required: a non-empty string describing the image.", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters.", "prompt")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_IMAGES:
        raise InvalidRequest(f"'n' must be an integer from 1 to {MAX_IMAGES}.", "n")
    response_format = _optional_str(body, "response_format") or "b64_json"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest("'response_format' must be 'b64_json' or 'url'.", "response_format")
    size, quality, style = (_optional_str(body, k) for k in ("size", "quality", "style"))
    image_size = _optional_str(body, "image_size") or _optional_str(body, "imageSize")
    if style is not None and style not in STYLE_HINTS:
        raise InvalidRequest("'style' must be 'vivid' or 'natural'.", "style")
    if size == "auto":
        size = None
    if quality in ("auto", "high", "low"):  # gpt-image-1's words: no Gemini size they would choose
        quality = None
    model, config = image_config(target if is_image_model(target) else DEFAULT_IMAGE_MODEL, size, quality, image_size)
    text = prompt
    if style is not None:
        text += "\n" + STYLE_HINTS[style]
    if quality == "hd":
        text += "\n" + HD_HINT
    request = {
        "contents": [{"role": "user", "parts": [*(parts or ()), {"text": text}]}],
        "generationConfig": {"candidateCount": 1, "imageConfig": config},
    }
    return ImagePlan(model, n, response_format, request)


def first_image(answer: dict[str, Any]) -> tuple[str, str] | None:
    """(mime type, base64 data) of the first image in a generateContent answer (enveloped or not)."""
    inner = answer.get("response", answer)
    for candidate in inner.get("candidates") or ():
        for part in (candidate.get("content") or {}).get("parts") or ():
            data = part.get("inlineData") or part.get("inline_data")
            if isinstance(data, dict) and isinstance(data.get("data"), str):
                return str(data.get("mimeType") or "image/png"), data["data"]
    return None
