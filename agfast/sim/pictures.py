"""Real PNG images for the simulated image model: a solid picture of the asked aspect ratio and size, built
with zlib (no imaging dependency), so tests can decode what came back and check its shape."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

# Pixels per ratio unit at 1K: 16:9 → 128x72. Small enough to travel fast, big enough to tell ratios apart.
UNIT_PIXELS = 8
# Gemini's `imageSize` → how many times the 1K picture's sides.
SIZE_SCALE = {"1K": 1, "2K": 2, "4K": 4}
DEFAULT_RATIO = (1, 1)
# The colour of every pixel (RGB): any will do, one is cheapest to compress.
COLOUR = b"\x3a\x7b\xd5"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG of one colour."""
    row = b"\x00" + COLOUR * width  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(row * height, 9)),
            _chunk(b"IEND", b""),
        )
    )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def dimensions(image_config: dict[str, Any] | None) -> tuple[int, int]:
    """The picture's pixels for a request's `generationConfig.imageConfig` (1:1 at 1K when absent)."""
    config = image_config or {}
    ratio = DEFAULT_RATIO
    named = config.get("aspectRatio")
    if isinstance(named, str) and ":" in named:
        w, _, h = named.partition(":")
        if w.isdigit() and h.isdigit() and int(w) and int(h):
            ratio = (int(w), int(h))
    scale = SIZE_SCALE.get(config.get("imageSize") or "1K", 1)
    return ratio[0] * UNIT_PIXELS * scale, ratio[1] * UNIT_PIXELS * scale


def image_b64(image_config: dict[str, Any] | None) -> str:
    return base64.b64encode(png(*dimensions(image_config))).decode()
