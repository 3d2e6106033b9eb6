"""Image generation settings from what a client names: the model's size/ratio suffixes, OpenAI's `size` and
`quality` (reference §6.1 `resolve_request_config`, §7.4 variants). Pure; no IO."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
