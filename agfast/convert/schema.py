"""JSON Schema (what clients write for tools) → Gemini's Schema subset (what v1internal accepts).

Gemini rejects the whole request on one unknown keyword (`additionalProperties`, `$ref`, `const`, …), so
every tool schema passes through `clean_schema`: references are inlined, combinators folded, unsupported
keywords dropped (their meaning moved into `description` where it matters), type unions made `nullable` or
`anyOf`. Pure function over dicts; the input is never modified.
"""

from __future__ import annotations

from typing import Any

# Gemini Schema fields (the OpenAPI 3.0 subset); anything else is dropped.
ALLOWED = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
        "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
        "propertyOrdering", "default", "items", "minimum", "maximum",
    }
)  # fmt: skip
TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
# Formats Gemini understands; others ("uri", "email", …) are hints it refuses, kept in the description.
FORMATS = {"string": {"date-time", "enum"}, "integer": {"int32", "int64"}, "number": {"float", "double"}}
# Deep enough for real tool schemas; deeper (or cyclic) references collapse to a plain object.
MAX_DEPTH = 24
# References resolved per schema. A recursive schema expands exponentially with its branching (three
# self-references 24 levels deep is 3^12 copies: seconds of CPU on the event loop and a huge request);
# real schemas resolve a few dozen. Past the budget, references collapse to a plain object like deep ones.
MAX_REF_EXPANSIONS = 256


class _Defs(dict[str, Any]):
    """The schema's `$defs`, and how many more references may be expanded from them."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        super().__init__()
        self.left = MAX_REF_EXPANSIONS


def clean_schema(schema: Any, *, upper_types: bool = False, root_object: bool = False) -> dict[str, Any]:
    """A Gemini-valid copy of `schema`; `upper_types` writes OBJECT/STRING (the OpenAI path's habit)."""
    if not isinstance(schema, dict):
        return {"type": "OBJECT" if upper_types else "object"}
    defs = _Defs()
    for key in ("$defs", "definitions"):
        found = schema.get(key)
        if isinstance(found, dict):
            defs.update(found)
    out = _clean(schema, defs, 0, upper_types)
    if root_object and _type_of(out) != "object":
        out = {"type": "OBJECT" if upper_types else "object", "properties": {}}
    return out


def _type_of(schema: dict[str, Any]) -> str:
    value = schema.get("type")
    return value.lower() if isinstance(value, str) else ""


def _resolve(ref: str, defs: _Defs) -> Any:
    """The definition `ref` names, or None (unknown, or the expansion budget is spent)."""
    if defs.left <= 0:
        return None
    defs.left -= 1
    name = ref.rsplit("/", 1)[-1]
    return defs.get(name)


def _clean(schema: Any, defs: _Defs, depth: int, upper: bool) -> dict[str, Any]:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return {"type": "OBJECT" if upper else "object"}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if defs.left <= 0:
            return {"type": "OBJECT" if upper else "object"}
        target = _resolve(ref, defs)
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}} if isinstance(target, dict) else {}
        return _clean(merged, defs, depth + 1, upper)
    schema = _fold_all_of(schema, defs, depth)
    out: dict[str, Any] = {}
    notes: list[str] = []

    raw_type = schema.get("type")
    nullable = bool(schema.get("nullable"))
    kinds: list[str] = []
    if isinstance(raw_type, list):
        kinds = [t for t in raw_type if isinstance(t, str) and t in TYPES]
    elif isinstance(raw_type, str) and raw_type.lower() in TYPES:
        kinds = [raw_type.lower()]
    if "null" in kinds:
        nullable = True
        kinds = [k for k in kinds if k != "null"]

    variants = schema.get("anyOf") if isinstance(schema.get("anyOf"), list) else schema.get("oneOf")
    if isinstance(variants, list):
        cleaned = []
        for variant in variants:
            if isinstance(variant, dict) and variant.get("type") == "null":
                nullable = True
                continue
            cleaned.append(_clean(variant, defs, depth + 1, upper))
        if len(cleaned) == 1 and not kinds:
            inner = cleaned[0]
            for key, value in inner.items():
                out.setdefault(key, value)
        elif cleaned:
            out["anyOf"] = cleaned

    if len(kinds) > 1:
        out["anyOf"] = [{"type": k.upper() if upper else k} for k in kinds]
    elif kinds:
        out["type"] = kinds[0]
    elif "type" not in out and "anyOf" not in out:
        if isinstance(schema.get("properties"), dict):
            out["type"] = "object"
        elif "items" in schema:
            out["type"] = "array"
        elif "enum" in schema or "const" in schema:
            out["type"] = "string"
    kind = out.get("type", "")
    if isinstance(kind, str):
        kind = kind.lower()

    for key in ("title", "description", "pattern", "minLength", "maxLength", "minItems", "maxItems",
                "minProperties", "maxProperties", "minimum", "maximum", "default", "example"):  # fmt: skip
        if key in schema and key in ALLOWED:
            out[key] = schema[key]
    if "example" not in out and isinstance(schema.get("examples"), list) and schema["examples"]:
        out["example"] = schema["examples"][0]
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and bound not in out:
            out[bound] = value

    fmt = schema.get("format")
    if isinstance(fmt, str):
        if fmt in FORMATS.get(kind, ()):
            out["format"] = fmt
        else:
            notes.append(f"format: {fmt}")

    values = schema.get("enum")
    if "const" in schema and not isinstance(values, list):
        values = [schema["const"]]
    if isinstance(values, list) and values:
        if kind in ("", "string") and all(isinstance(v, str) for v in values):
            out["enum"] = list(values)
            out["type"] = "string"
        else:
            # Gemini allows enum on strings only; the allowed values still reach the model as text.
            notes.append("one of: " + ", ".join(str(v) for v in values))

    if kind == "object" or isinstance(schema.get("properties"), dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            out["properties"] = {str(k): _clean(v, defs, depth + 1, upper) for k, v in props.items()}
            required = schema.get("required")
            if isinstance(required, list):
                kept = [r for r in required if isinstance(r, str) and r in out["properties"]]
                if kept:
                    out["required"] = kept
            if out.get("type") is None and "anyOf" not in out:
                out["type"] = "object"
    if kind == "array" or "items" in schema:
        items = schema.get("items")
        if isinstance(items, list):
            items = items[0] if items else {}
        if items is not None or kind == "array":
            out["items"] = _clean(items if isinstance(items, dict) else {"type": "string"}, defs, depth + 1, upper)

    if nullable:
        out["nullable"] = True
    if notes:
        desc = out.get("description")
        extra = "(" + "; ".join(notes) + ")"
        out["description"] = f"{desc} {extra}" if isinstance(desc, str) and desc else extra
    if upper and isinstance(out.get("type"), str):
        out["type"] = out["type"].upper()
    return out


def _fold_all_of(schema: dict[str, Any], defs: _Defs, depth: int) -> dict[str, Any]:
    parts = schema.get("allOf")
    if not isinstance(parts, list) or not parts:
        return schema
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    props: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[str] = list(merged.get("required") or [])
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("$ref"), str) and depth < MAX_DEPTH:
            part = _resolve(part["$ref"], defs) or {}
        if not isinstance(part, dict):
            continue
        part = _fold_all_of(part, defs, depth + 1)
        props.update(part.get("properties") or {})
        required.extend(r for r in part.get("required") or [] if r not in required)
        for key, value in part.items():
            if key not in ("properties", "required"):
                merged.setdefault(key, value)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged
