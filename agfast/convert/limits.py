"""Limits every surface shares: output size, candidates, and how deep a request may nest.

Nesting is the one input shape that breaks code far from where it arrives: orjson refuses to encode more
than 254 levels (the upstream envelope, an echoed Responses object), and Python recursion in the converters
and schema cleaner ends in RecursionError. Checking the parsed body once, before any upstream call, turns
both into a 400 that names the field.
"""

from __future__ import annotations

from typing import Any

import orjson

# orjson encodes at most 254 nested containers; the envelope nests a request one level deeper than the client
# sent it, and a Responses event echoes fields one level deeper too. A body within 252 levels encodes wherever
# it travels, and the converters' recursion (at most two frames a level) stays far from Python's 1000. Real
# requests stay under 20 levels.
ORJSON_MAX_DEPTH = 254
MAX_BODY_DEPTH = 252
# One tool (or response) schema. Every schema level is two JSON levels (`properties` → name → schema); 64
# allows 32 nested objects, beyond any real tool, and keeps the cleaned copy far from the body limit.
MAX_SCHEMA_DEPTH = 64
# Tool-call arguments arrive as JSON text, parsed outside the body's own check; like the schema that shapes
# them (one level per object where a schema spends two) they never need more.
MAX_ARGUMENTS_DEPTH = 64
# Largest output a request may ask for. No routed model writes more than its context window and the largest
# is 1M tokens: a bigger number is a client bug (or an int32 overflow upstream), not a wish. Smaller values
# above a model's own limit are lowered to it, as before.
MAX_OUTPUT_TOKENS = 1 << 20
# Gemini's candidateCount limit; OpenAI `n` becomes candidateCount.
MAX_CANDIDATES = 8
# Segments of a path quoted in an error; the rest of a deep path says nothing more.
MAX_PATH_SEGMENTS = 8

Path = list[str | int]


def body_too_deep(body: Any) -> Path | None:
    """The path to a container nested past MAX_BODY_DEPTH, or None.

    orjson's encoder is the check (one pass in C, several times faster than a walk in Python; the body is
    wrapped so the encoder's own limit falls exactly on ours); only a refused body is walked, to name the field.
    """
    wrapped = body
    for _ in range(ORJSON_MAX_DEPTH - MAX_BODY_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return too_deep(body, MAX_BODY_DEPTH)
    return None


def too_deep(value: Any, limit: int) -> Path | None:
    """The path to the first container more than `limit` levels deep (`value` itself is level 1), or None."""
    level: list[Any] = [value] if type(value) in (dict, list) else []
    depth = 1
    while level:
        if depth > limit:
            return _path_to_depth(value, limit + 1)
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
        depth += 1
    return None


def _path_to_depth(value: Any, depth: int) -> Path:
    """A path from `value` to some container `depth` levels down (one is known to exist)."""
    stack: list[tuple[Any, Path]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if len(path) + 1 >= depth:
            return path
        items = node.items() if type(node) is dict else enumerate(node)
        stack.extend((child, [*path, key]) for key, child in items if type(child) is dict or type(child) is list)
    return []


def dotted(path: Path, *, brackets: bool = True) -> str:
    """`tools[0].parameters` (OpenAI, Google) or `tools.0.parameters` (Anthropic), cut after a few segments."""
    out = ""
    for key in path[:MAX_PATH_SEGMENTS]:
        if isinstance(key, int) and brackets:
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out + ("…" if len(path) > MAX_PATH_SEGMENTS else "")
