"""Body checks for the OpenAI and Gemini surfaces, one function per body kind, run by their plans before any
upstream call; the small verbs (`require`, `optional`, `in_range`, `each`, `schema_object`) raise InvalidRequest.

Cheap by design: a few isinstance checks per field, message and part, tables instead of a schema library.
A wrong type at any level the converters walk (messages, contents, input, tools, system, sampling numbers)
becomes a 400 naming the field in the caller's shape, instead of a crash or a silent 200. The Anthropic
surface has its own in `convert.anthropic.check_body` (Anthropic's wording). Converters keep their own
semantic checks (roles, tool names, call ids); these are about shape and range.
"""

from __future__ import annotations

from typing import Any

from agfast.convert.limits import MAX_CANDIDATES, MAX_OUTPUT_TOKENS, MAX_SCHEMA_DEPTH, dotted, too_deep

# OpenAI sampling numbers and their documented ranges.
OPENAI_RANGES: tuple[tuple[str, float, float], ...] = (
    ("temperature", 0, 2),
    ("top_p", 0, 1),
    ("presence_penalty", -2, 2),
    ("frequency_penalty", -2, 2),
)
# Optional top-level fields of chat and legacy completions bodies, and their JSON types.
CHAT_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("stream", bool),
    ("stream_options", dict),
    ("parallel_tool_calls", bool),
    ("seed", int),
    ("stop", (str, list)),
    ("tool_choice", (str, dict)),
    ("response_format", dict),
    ("reasoning_effort", str),
    ("user", str),
)
# Optional top-level fields of a Responses body; several are echoed back on the response object.
RESPONSES_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("stream", bool),
    ("store", bool),
    ("parallel_tool_calls", bool),
    ("instructions", str),
    ("input", (str, list)),
    ("tools", list),
    ("tool_choice", (str, dict)),
    ("metadata", dict),
    ("reasoning", dict),
    ("text", dict),
    ("truncation", str),
    ("previous_response_id", str),
    ("prompt_cache_key", str),
)


class InvalidRequest(ValueError):
    """A client request refused before it goes upstream (a 400); `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


# JSON numbers (booleans are never numbers here, though Python says they are).
NUMBER = (int, float)
_KINDS: dict[type, str] = {
    str: "a string",
    list: "an array",
    dict: "an object",
    int: "an integer",
    bool: "a boolean",
    float: "a number",
}


def require(body: dict[str, Any], name: str, kind: type) -> Any:
    """`body[name]`, or a 400 that names the field and what it should be."""
    value = body.get(name)
    if value is None:
        raise InvalidRequest(f"Missing required field '{name}'.", param=name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequest(f"Field '{name}' must be {_KINDS.get(kind, kind.__name__)}.", param=name)
    return value


def optional(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    """`obj[name]` when present and not null, else None; a wrong type is a 400 naming `where.name`."""
    value = obj.get(name)
    if value is not None and not _is(value, kind):
        path = f"{where}.{name}" if where else name
        raise InvalidRequest(
            f"Invalid type for '{path}': expected {_kind_text(kind)}, got {json_kind(value)}.", param=path
        )
    return value


def in_range(obj: dict[str, Any], name: str, low: float, high: float, where: str = "", *, integer: bool = False) -> Any:
    """`obj[name]` when present: a number (an integer if asked) within [low, high], else a 400 naming it."""
    value = optional(obj, name, int if integer else NUMBER, where)
    if value is not None and not low <= value <= high:
        path = f"{where}.{name}" if where else name
        raise InvalidRequest(
            f"Invalid value for '{path}': expected a value from {low} to {high}, got {value}.", param=path
        )
    return value


def each(items: list[Any], kind: type | tuple[type, ...], where: str) -> None:
    """Every entry of `items` is of `kind`, else a 400 naming the first that is not (`where[i]`)."""
    for i, item in enumerate(items):
        if not _is(item, kind):
            path = f"{where}[{i}]"
            raise InvalidRequest(
                f"Invalid type for '{path}': expected {_kind_text(kind)}, got {json_kind(item)}.", param=path
            )


def schema_object(schema: Any, where: str) -> None:
    """A tool or response schema: a JSON object no deeper than MAX_SCHEMA_DEPTH, else a 400 naming it."""
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"Invalid type for '{where}': expected a JSON Schema object, got {json_kind(schema)}.", param=where
        )
    deep = too_deep(schema, MAX_SCHEMA_DEPTH)
    if deep is not None:
        name = dotted(deep)
        name = f"{where}.{name}" if name else where
        raise InvalidRequest(f"'{name}' is nested more than {MAX_SCHEMA_DEPTH} levels deep.", param=name)


def _is(value: object, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return kind is bool or (isinstance(kind, tuple) and bool in kind)
    return isinstance(value, kind)


def _kind_text(kind: type | tuple[type, ...]) -> str:
    if kind == NUMBER:
        return "a number"
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_KINDS.get(k, k.__name__) for k in kinds)


def json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


# -- OpenAI ------------------------------------------------------------------------------------------------


class Fields:
    """A body's optional top-level fields and their rules, walked only over the keys a body has: a request
    sending three fields costs one set intersection and three checks, not a lookup per field we know. Fields
    are checked in table order, so the field a 400 names is the same whichever keys came first."""

    __slots__ = ("names", "order", "rules")

    def __init__(self, rules: tuple[tuple[str, type | tuple[type, ...], float | None, float | None], ...]) -> None:
        # name → (JSON type, low, high); a range (low and high) also makes a number of `int` an integer check.
        self.rules = {name: (kind, low, high) for name, kind, low, high in rules}
        self.order = {name: i for i, (name, *_) in enumerate(rules)}
        self.names = frozenset(self.rules)

    def check(self, body: dict[str, Any]) -> None:
        present = self.names.intersection(body)
        if not present:
            return
        for name in sorted(present, key=self.order.__getitem__) if len(present) > 1 else present:
            kind, low, high = self.rules[name]
            if low is None or high is None:
                optional(body, name, kind)
            else:
                in_range(body, name, low, high, integer=kind is int)


def _typed(types: tuple[tuple[str, type | tuple[type, ...]], ...]) -> tuple[tuple[str, Any, None, None], ...]:
    return tuple((name, kind, None, None) for name, kind in types)


_OPENAI_RANGES = tuple((name, NUMBER, low, high) for name, low, high in OPENAI_RANGES)
CHAT_FIELDS = Fields(
    (
        *_typed(CHAT_TYPES),
        *_OPENAI_RANGES,
        ("max_tokens", int, 1, MAX_OUTPUT_TOKENS),
        ("max_completion_tokens", int, 1, MAX_OUTPUT_TOKENS),
        ("n", int, 1, MAX_CANDIDATES),
    )
)
COMPLETIONS_FIELDS = Fields(
    (*_typed(CHAT_TYPES), *_OPENAI_RANGES, ("max_tokens", int, 1, MAX_OUTPUT_TOKENS), ("n", int, 1, MAX_CANDIDATES))
)
RESPONSES_FIELDS = Fields((*_typed(RESPONSES_TYPES), *_OPENAI_RANGES, ("max_output_tokens", int, 1, MAX_OUTPUT_TOKENS)))


def check_chat(body: dict[str, Any]) -> None:
    """/v1/chat/completions: messages, tools and sampling fields have the shape OpenAI documents."""
    messages = require(body, "messages", list)
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected at least one message.", param="messages", code="empty_array"
        )
    CHAT_FIELDS.check(body)
    each(messages, dict, "messages")
    for i, message in enumerate(messages):
        role, content, calls = message.get("role"), message.get("content"), message.get("tool_calls")
        # The usual message (a string role and content) costs no error path name: built only when one is wrong.
        if not (role is None or isinstance(role, str)) or not (content is None or isinstance(content, str)):
            where = f"messages[{i}]"
            optional(message, "role", str, where)
            optional(message, "content", (str, list), where)
            if isinstance(content, list):
                _content_parts(content, f"{where}.content")
        if calls is not None:
            where = f"messages[{i}]"
            optional(message, "tool_calls", list, where)
            each(calls, dict, f"{where}.tool_calls")
            for j, call in enumerate(calls):
                optional(call, "function", dict, f"{where}.tool_calls[{j}]")
    tools = optional(body, "tools", list)
    if tools:
        _tools(tools, flat=False)
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        _response_schema(fmt, "response_format")


def check_completions(body: dict[str, Any]) -> None:
    """/v1/completions: the fields a prompt shares with chat."""
    COMPLETIONS_FIELDS.check(body)


def check_responses(body: dict[str, Any]) -> None:
    """/v1/responses: input, tools, echoed settings and sampling fields have the documented shape."""
    RESPONSES_FIELDS.check(body)
    items = body.get("input")
    if isinstance(items, list):
        each(items, dict, "input")
        for i, item in enumerate(items):
            for name in ("type", "role"):
                optional(item, name, str, f"input[{i}]")
            content = optional(item, "content", (str, list), f"input[{i}]")
            if isinstance(content, list):
                _content_parts(content, f"input[{i}].content")
    tools = body.get("tools")
    if tools:
        _tools(tools, flat=True)
    text = body.get("text")
    fmt = optional(text, "format", dict, "text") if isinstance(text, dict) else None
    if fmt is not None:
        _response_schema(fmt, "text.format")


def _response_schema(fmt: dict[str, Any], where: str) -> None:
    """A json_schema response format's schema (chat nests it under `json_schema`, Responses does not)."""
    inner = optional(fmt, "json_schema", dict, where)
    spec, at = (inner, f"{where}.json_schema") if inner is not None else (fmt, where)
    if spec.get("schema") is not None:
        schema_object(spec["schema"], f"{at}.schema")


def _content_parts(parts: list[Any], where: str) -> None:
    each(parts, (dict, str), where)
    for j, part in enumerate(parts):
        if isinstance(part, dict):
            optional(part, "type", str, f"{where}[{j}]")
            optional(part, "text", str, f"{where}[{j}]")


def _tools(tools: list[Any], *, flat: bool) -> None:
    """Function tools name themselves and take an object schema; chat nests them under `function`."""
    each(tools, dict, "tools")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        kind = optional(tool, "type", str, where)
        if kind not in (None, "function"):
            continue  # hosted and custom tools: the converters decide what they become
        fn = optional(tool, "function", dict, where)
        if fn is not None:
            where = f"{where}.function"
        elif flat or "name" in tool:
            fn = tool  # Responses tools are flat; some chat clients send them flat too
        else:
            raise InvalidRequest(f"Missing required parameter: '{where}.function'.", param=f"{where}.function")
        if fn.get("name") is None:
            raise InvalidRequest(f"Missing required parameter: '{where}.name'.", param=f"{where}.name")
        optional(fn, "name", str, where)
        optional(fn, "description", str, where)
        if fn.get("parameters") is not None:
            schema_object(fn["parameters"], f"{where}.parameters")


# -- Gemini --------------------------------------------------------------------------------------------------

# generationConfig numbers: (camelCase, snake_case, low, high, integer). Google accepts either spelling.
GENERATION_RANGES: tuple[tuple[str, str, float, float, bool], ...] = (
    ("maxOutputTokens", "max_output_tokens", 1, MAX_OUTPUT_TOKENS, True),
    ("candidateCount", "candidate_count", 1, MAX_CANDIDATES, True),
    ("temperature", "temperature", 0, 2, False),
    ("topP", "top_p", 0, 1, False),
    ("topK", "top_k", 0, 1 << 31, False),
    ("presencePenalty", "presence_penalty", -2, 2, False),
    ("frequencyPenalty", "frequency_penalty", -2, 2, False),
)
# Other typed fields of a GenerateContentRequest (camelCase, snake_case, JSON type).
GEMINI_TYPES: tuple[tuple[str, str, type | tuple[type, ...]], ...] = (
    ("systemInstruction", "system_instruction", (dict, str)),
    ("tools", "tools", list),
    ("toolConfig", "tool_config", dict),
    ("generationConfig", "generation_config", dict),
    ("safetySettings", "safety_settings", list),
    ("cachedContent", "cached_content", str),
)
GENERATION_TYPES: tuple[tuple[str, str, type | tuple[type, ...]], ...] = (
    ("stopSequences", "stop_sequences", list),
    ("thinkingConfig", "thinking_config", dict),
    ("responseMimeType", "response_mime_type", str),
    ("seed", "seed", int),
)
# Part fields that hold objects (text is the one string).
PART_OBJECTS = (
    ("inlineData", "inline_data"),
    ("fileData", "file_data"),
    ("functionCall", "function_call"),
    ("functionResponse", "function_response"),
)
# Schemas inside a function declaration and a generationConfig.
DECLARATION_SCHEMAS = (("parameters", "parameters"), ("parametersJsonSchema", "parameters_json_schema"))
RESPONSE_SCHEMAS = (("responseSchema", "response_schema"), ("responseJsonSchema", "response_json_schema"))


def _name(obj: dict[str, Any], camel: str, snake: str) -> str:
    return snake if camel not in obj and snake in obj else camel


def _field(
    obj: dict[str, Any], camel: str, snake: str, kind: type | tuple[type, ...], where: str = ""
) -> tuple[Any, str]:
    """The field under either spelling, type-checked, and its path for errors."""
    name = _name(obj, camel, snake)
    value = optional(obj, name, kind, where)
    return value, f"{where}.{name}" if where else name


def check_gemini(body: dict[str, Any], *, count: bool = False) -> None:
    """A GenerateContentRequest (or a countTokens body) has the shape Google documents, down to each part."""
    if count:
        inner = optional(body, "generateContentRequest", dict)
        if inner is not None:
            check_gemini(inner)
            return
    contents = require(body, "contents", list)
    if not contents and not count:
        raise InvalidRequest("contents must not be empty.", param="contents")
    for camel, snake, kind in GEMINI_TYPES:
        _field(body, camel, snake, kind)
    _contents(contents)
    system, where = _field(body, "systemInstruction", "system_instruction", (dict, str))
    if isinstance(system, dict):
        _parts(system, where)
    tools, _ = _field(body, "tools", "tools", list)
    if tools:
        _gemini_tools(tools)
    gen, where = _field(body, "generationConfig", "generation_config", dict)
    if gen is not None:
        _generation(gen, where)
    safety, where = _field(body, "safetySettings", "safety_settings", list)
    if safety:
        each(safety, dict, where)


def _contents(contents: list[Any]) -> None:
    each(contents, dict, "contents")
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        optional(content, "role", str, where)
        _parts(content, where)


def _parts(content: dict[str, Any], where: str) -> None:
    parts = optional(content, "parts", list, where)
    if not parts:
        return
    each(parts, dict, f"{where}.parts")
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        optional(part, "text", str, at)
        for camel, snake in PART_OBJECTS:
            value, path = _field(part, camel, snake, dict, at)
            if value is not None and camel in ("functionCall", "functionResponse"):
                optional(value, "name", str, path)


def _gemini_tools(tools: list[Any]) -> None:
    each(tools, dict, "tools")
    for i, tool in enumerate(tools):
        decls, where = _field(tool, "functionDeclarations", "function_declarations", list, f"tools[{i}]")
        if not decls:
            continue
        each(decls, dict, where)
        for j, decl in enumerate(decls):
            at = f"{where}[{j}]"
            if decl.get("name") is None:
                raise InvalidRequest(f"Missing required field '{at}.name'.", param=f"{at}.name")
            optional(decl, "name", str, at)
            optional(decl, "description", str, at)
            for camel, snake in DECLARATION_SCHEMAS:
                name = _name(decl, camel, snake)
                if decl.get(name) is not None:
                    schema_object(decl[name], f"{at}.{name}")


def _generation(gen: dict[str, Any], where: str) -> None:
    for camel, snake, low, high, integer in GENERATION_RANGES:
        in_range(gen, _name(gen, camel, snake), low, high, where, integer=integer)
    for camel, snake, kind in GENERATION_TYPES:
        _field(gen, camel, snake, kind, where)
    stops, path = _field(gen, "stopSequences", "stop_sequences", list, where)
    if stops:
        each(stops, str, path)
    thinking, path = _field(gen, "thinkingConfig", "thinking_config", dict, where)
    if thinking is not None:
        _field(thinking, "thinkingBudget", "thinking_budget", int, path)
        _field(thinking, "includeThoughts", "include_thoughts", bool, path)
        _field(thinking, "thinkingLevel", "thinking_level", str, path)
    for camel, snake in RESPONSE_SCHEMAS:
        name = _name(gen, camel, snake)
        if gen.get(name) is not None:
            schema_object(gen[name], f"{where}.{name}")
