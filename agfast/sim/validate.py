"""Request validation that mirrors what Google rejects, with Google's wording.

Two passes: a structural pass that collects every proto-JSON problem (unknown field names, wrong JSON
types, bad base64) into one INVALID_ARGUMENT like ESF does, then semantic checks that stop at the first
problem (roles, empty contents, function-call pairing, thought signatures, model limits).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson

from .accounts import ModelSpec
from .errors import SimError, bad_request, google_error
from .signatures import SKIP_SIGNATURE, SignatureBook, is_base64

__all__ = [
    "field",
    "thinking_enabled",
    "validate_count_request",
    "validate_envelope",
    "validate_generate_request",
]

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@functools.cache
def snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _names(*camel: str) -> frozenset[str]:
    return frozenset(camel) | frozenset(snake(c) for c in camel)


def field(obj: dict[str, Any], camel: str) -> Any:
    """Proto JSON accepts a field by its lowerCamel or its original snake_case name."""
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake(camel))
    return value


ENVELOPE_FIELDS = _names(
    "project", "requestId", "request", "model", "userAgent", "requestType", "enabledCreditTypes", "userPromptId"
)
REQUEST_FIELDS = _names(
    "contents",
    "systemInstruction",
    "cachedContent",
    "tools",
    "toolConfig",
    "labels",
    "safetySettings",
    "generationConfig",
    "sessionId",
)
COUNT_REQUEST_FIELDS = _names("model", "contents", "systemInstruction", "tools", "generationConfig")
CONTENT_FIELDS = _names("role", "parts")
DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
PART_FIELDS = _names(*DATA_FIELDS, "thought", "thoughtSignature", "videoMetadata")
BLOB_FIELDS = _names("mimeType", "data", "displayName")
FILE_FIELDS = _names("mimeType", "fileUri", "displayName")
CALL_FIELDS = _names("name", "args", "id")
RESPONSE_FIELDS = _names("name", "response", "id", "parts", "willContinue", "scheduling")
CODE_FIELDS = _names("language", "code")
CODE_RESULT_FIELDS = _names("outcome", "output")
VIDEO_FIELDS = _names("startOffset", "endOffset", "fps")
TOOL_FIELDS = _names(
    "functionDeclarations",
    "googleSearch",
    "googleSearchRetrieval",
    "codeExecution",
    "urlContext",
    "retrieval",
    "enterpriseWebSearch",
    "googleMaps",
    "computerUse",
)
SEARCH_TOOLS = _names("googleSearch", "googleSearchRetrieval", "enterpriseWebSearch", "retrieval", "urlContext")
DECL_FIELDS = _names(
    "name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior"
)
SCHEMA_FIELDS = _names(
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
)
SCHEMA_TYPES = frozenset({"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
TOOL_CONFIG_FIELDS = _names("functionCallingConfig", "retrievalConfig", "includeServerSideToolInvocations")
FCC_FIELDS = _names("mode", "allowedFunctionNames")
FCC_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
GEN_FIELDS = _names(
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "mediaResolution",
    "imageConfig",
    "audioTimestamp",
    "routingConfig",
    "modelSelectionConfig",
    "enableAffectiveDialog",
)
THINKING_FIELDS = _names("includeThoughts", "thinkingBudget", "thinkingLevel")
THINKING_LEVELS = frozenset({"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH"})
RESPONSE_MIME = frozenset({"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"})
SAFETY_FIELDS = _names("category", "threshold", "method")
HARM_CATEGORIES = frozenset(
    {
        "HARM_CATEGORY_UNSPECIFIED",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY",
        "HARM_CATEGORY_IMAGE_HATE",
        "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT",
        "HARM_CATEGORY_IMAGE_HARASSMENT",
        "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_JAILBREAK",
    }
)
HARM_THRESHOLDS = frozenset(
    {
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    }
)
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")

T = "type.googleapis.com/google.cloud.aiplatform.v1beta1."
STRUCT = "type.googleapis.com/google.protobuf.Struct"

FUNCTION_NAME_RULE = (
    "Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
    "underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64."
)
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work "
    "correctly, and missing thought_signature may lead to degraded model performance. Additional data, "
    "function call `default_api:{name}` , position {position}. Please refer to "
    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)
THINKING_FIRST = (
    "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. When "
    "`thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the "
    "lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
    "previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def _jtext(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


class Checker:
    """Collects structural (proto JSON) violations for one request."""

    __slots__ = ("violations",)

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []

    def add(self, path: str, description: str) -> None:
        self.violations.append((path, description))

    def unknown(self, obj: dict[str, Any], allowed: frozenset[str], path: str) -> None:
        for key in obj:
            if key not in allowed:
                at = f" at '{path}'" if path else ""
                self.add(path, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')

    def raise_if_any(self) -> None:
        if self.violations:
            message = "\n".join(d for _, d in self.violations)
            raise SimError(400, google_error(400, message, [bad_request(self.violations)]))

    # --- JSON type checks; each returns whether the value may be inspected further -------------------
    def message(self, value: Any, parent: str, name: str, type_name: str) -> bool:
        path = f"{parent}.{snake(name)}" if parent else snake(name)
        if isinstance(value, dict):
            return True
        if isinstance(value, list):
            at = f" at '{parent}'" if parent else ""
            self.add(
                path,
                f'Invalid JSON payload received. Unknown name "{name}"{at}: '
                "Proto field is not repeating, cannot start list.",
            )
        else:
            self.add(path, f"Invalid value at '{path}' ({type_name}), {_jtext(value)}")
        return False

    def repeated(self, value: Any, path: str, type_name: str) -> bool:
        if isinstance(value, list):
            return True
        self.add(path, f"Invalid value at '{path}' ({type_name}), {_jtext(value)}")
        return False

    def scalar(self, value: Any, path: str, kind: str) -> bool:
        ok = {
            "TYPE_STRING": isinstance(value, str),
            "TYPE_BOOL": isinstance(value, bool),
            "TYPE_INT32": (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, str) and value.lstrip("-").isdigit()),
            "TYPE_FLOAT": isinstance(value, (int, float)) and not isinstance(value, bool),
        }[kind]
        if not ok:
            self.add(path, f"Invalid value at '{path}' ({kind}), {_jtext(value)}")
        return ok

    def enum(self, value: Any, path: str, allowed: frozenset[str], type_name: str) -> None:
        if not isinstance(value, str) or value.upper() not in allowed:
            self.add(path, f"Invalid value at '{path}' ({type_name}), {_jtext(value)}")


def _invalid(message: str) -> SimError:
    return SimError(400, google_error(400, message))


def _anthropic(message: str) -> SimError:
    """Claude models behind v1internal surface Anthropic's own error JSON as the Google message."""
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return SimError(400, google_error(400, orjson.dumps(body).decode()))


# --------------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------------
def _check_schema(c: Checker, schema: Any, parent: str, name: str) -> None:
    if not c.message(schema, parent, name, T + "Schema"):
        return
    _check_schema_at(c, schema, f"{parent}.{snake(name)}")


def _check_schema_at(c: Checker, schema: dict[str, Any], path: str) -> None:
    c.unknown(schema, SCHEMA_FIELDS, path)
    kind = schema.get("type")
    if kind is not None:
        if isinstance(kind, list):
            c.add(
                f"{path}.type",
                f"Invalid JSON payload received. Unknown name \"type\" at '{path}': "
                "Proto field is not repeating, cannot start list.",
            )
        else:
            c.enum(kind, f"{path}.type", SCHEMA_TYPES, T + "Type")
    props = schema.get("properties")
    if props is not None and c.message(props, path, "properties", T + "Schema"):
        for idx, sub in enumerate(props.values()):
            sub_path = f"{path}.properties[{idx}].value"
            if c.message(sub, f"{path}.properties[{idx}]", "value", T + "Schema"):
                _check_schema_at(c, sub, sub_path)
    items = schema.get("items")
    if items is not None and c.message(items, path, "items", T + "Schema"):
        _check_schema_at(c, items, f"{path}.items")
    any_of = field(schema, "anyOf")
    if any_of is not None and c.repeated(any_of, f"{path}.any_of", T + "Schema"):
        for i, sub in enumerate(any_of):
            if isinstance(sub, dict):
                _check_schema_at(c, sub, f"{path}.any_of[{i}]")
            else:
                c.add(f"{path}.any_of[{i}]", f"Invalid value at '{path}.any_of[{i}]' ({T}Schema), {_jtext(sub)}")
    for key in ("enum", "required", "propertyOrdering"):
        values = field(schema, key)
        if values is not None and c.repeated(values, f"{path}.{snake(key)}", "TYPE_STRING"):
            for i, v in enumerate(values):
                c.scalar(v, f"{path}.{snake(key)}[{i}]", "TYPE_STRING")


def _check_part(c: Checker, part: Any, path: str) -> None:
    if not isinstance(part, dict):
        c.add(path, f"Invalid value at '{path}' ({T}Part), {_jtext(part)}")
        return
    c.unknown(part, PART_FIELDS, path)
    present = [k for k in DATA_FIELDS if field(part, k) is not None]
    if len(present) > 1:
        c.add(
            path,
            f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set '{present[1]}'",
        )
    text = part.get("text")
    if text is not None:
        c.scalar(text, f"{path}.text", "TYPE_STRING")
    thought = part.get("thought")
    if thought is not None:
        c.scalar(thought, f"{path}.thought", "TYPE_BOOL")
    sig = field(part, "thoughtSignature")
    if sig is not None and c.scalar(sig, f"{path}.thought_signature", "TYPE_STRING") and not is_base64(sig):
        c.add(
            f"{path}.thought_signature",
            f"Invalid value at '{path}.thought_signature' (TYPE_BYTES), Base64 decoding failed for \"{sig}\"",
        )
    blob = field(part, "inlineData")
    if blob is not None and c.message(blob, path, "inlineData", T + "Blob"):
        c.unknown(blob, BLOB_FIELDS, f"{path}.inline_data")
        data = blob.get("data")
        if data is not None and c.scalar(data, f"{path}.inline_data.data", "TYPE_STRING") and not is_base64(data):
            c.add(
                f"{path}.inline_data.data",
                f"Invalid value at '{path}.inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"{data[:40]}\"",
            )
    fdata = field(part, "fileData")
    if fdata is not None and c.message(fdata, path, "fileData", T + "FileData"):
        c.unknown(fdata, FILE_FIELDS, f"{path}.file_data")
    call = field(part, "functionCall")
    if call is not None and c.message(call, path, "functionCall", T + "FunctionCall"):
        cpath = f"{path}.function_call"
        c.unknown(call, CALL_FIELDS, cpath)
        if call.get("name") is not None:
            c.scalar(call["name"], f"{cpath}.name", "TYPE_STRING")
        if call.get("id") is not None:
            c.scalar(call["id"], f"{cpath}.id", "TYPE_STRING")
        if call.get("args") is not None:
            c.message(call["args"], cpath, "args", STRUCT)
    resp = field(part, "functionResponse")
    if resp is not None and c.message(resp, path, "functionResponse", T + "FunctionResponse"):
        rpath = f"{path}.function_response"
        c.unknown(resp, RESPONSE_FIELDS, rpath)
        if resp.get("name") is not None:
            c.scalar(resp["name"], f"{rpath}.name", "TYPE_STRING")
        if resp.get("id") is not None:
            c.scalar(resp["id"], f"{rpath}.id", "TYPE_STRING")
        if resp.get("response") is not None:
            c.message(resp["response"], rpath, "response", STRUCT)
    code = field(part, "executableCode")
    if code is not None and c.message(code, path, "executableCode", T + "ExecutableCode"):
        c.unknown(code, CODE_FIELDS, f"{path}.executable_code")
    result = field(part, "codeExecutionResult")
    if result is not None and c.message(result, path, "codeExecutionResult", T + "CodeExecutionResult"):
        c.unknown(result, CODE_RESULT_FIELDS, f"{path}.code_execution_result")
    video = field(part, "videoMetadata")
    if video is not None and c.message(video, path, "videoMetadata", T + "VideoMetadata"):
        c.unknown(video, VIDEO_FIELDS, f"{path}.video_metadata")


def _check_content(c: Checker, content: Any, path: str) -> None:
    if not isinstance(content, dict):
        c.add(path, f"Invalid value at '{path}' ({T}Content), {_jtext(content)}")
        return
    c.unknown(content, CONTENT_FIELDS, path)
    role = content.get("role")
    if role is not None:
        c.scalar(role, f"{path}.role", "TYPE_STRING")
    parts = content.get("parts")
    if parts is not None and c.repeated(parts, f"{path}.parts", T + "Part"):
        for j, part in enumerate(parts):
            _check_part(c, part, f"{path}.parts[{j}]")


def _check_tools(c: Checker, tools: Any, root: str) -> None:
    path = f"{root}.tools"
    if not c.repeated(tools, path, T + "Tool"):
        return
    for i, tool in enumerate(tools):
        tpath = f"{path}[{i}]"
        if not isinstance(tool, dict):
            c.add(tpath, f"Invalid value at '{tpath}' ({T}Tool), {_jtext(tool)}")
            continue
        c.unknown(tool, TOOL_FIELDS, tpath)
        decls = field(tool, "functionDeclarations")
        if decls is None or not c.repeated(decls, f"{tpath}.function_declarations", T + "FunctionDeclaration"):
            continue
        for j, decl in enumerate(decls):
            dpath = f"{tpath}.function_declarations[{j}]"
            if not isinstance(decl, dict):
                c.add(dpath, f"Invalid value at '{dpath}' ({T}FunctionDeclaration), {_jtext(decl)}")
                continue
            c.unknown(decl, DECL_FIELDS, dpath)
            if decl.get("name") is not None:
                c.scalar(decl["name"], f"{dpath}.name", "TYPE_STRING")
            if decl.get("description") is not None:
                c.scalar(decl["description"], f"{dpath}.description", "TYPE_STRING")
            for key in ("parameters", "response"):
                if decl.get(key) is not None:
                    _check_schema(c, decl[key], dpath, key)
            for key in ("parametersJsonSchema", "responseJsonSchema"):
                value = field(decl, key)
                if value is not None and not isinstance(value, (dict, bool)):
                    c.add(f"{dpath}.{snake(key)}", f"Invalid value at '{dpath}.{snake(key)}' ({STRUCT}), {value}")


def _check_generation_config(c: Checker, gen: Any, root: str) -> None:
    if not c.message(gen, root, "generationConfig", T + "GenerationConfig"):
        return
    path = f"{root}.generation_config"
    c.unknown(gen, GEN_FIELDS, path)
    for key, kind in (
        ("maxOutputTokens", "TYPE_INT32"),
        ("candidateCount", "TYPE_INT32"),
        ("topK", "TYPE_FLOAT"),
        ("topP", "TYPE_FLOAT"),
        ("temperature", "TYPE_FLOAT"),
        ("seed", "TYPE_INT32"),
        ("presencePenalty", "TYPE_FLOAT"),
        ("frequencyPenalty", "TYPE_FLOAT"),
        ("responseMimeType", "TYPE_STRING"),
    ):
        value = field(gen, key)
        if value is not None:
            c.scalar(value, f"{path}.{snake(key)}", kind)
    stops = field(gen, "stopSequences")
    if stops is not None and c.repeated(stops, f"{path}.stop_sequences", "TYPE_STRING"):
        for i, s in enumerate(stops):
            c.scalar(s, f"{path}.stop_sequences[{i}]", "TYPE_STRING")
    schema = field(gen, "responseSchema")
    if schema is not None:
        _check_schema(c, schema, path, "responseSchema")
    thinking = field(gen, "thinkingConfig")
    if thinking is not None and c.message(thinking, path, "thinkingConfig", T + "GenerationConfig.ThinkingConfig"):
        tpath = f"{path}.thinking_config"
        c.unknown(thinking, THINKING_FIELDS, tpath)
        if field(thinking, "includeThoughts") is not None:
            c.scalar(field(thinking, "includeThoughts"), f"{tpath}.include_thoughts", "TYPE_BOOL")
        if field(thinking, "thinkingBudget") is not None:
            c.scalar(field(thinking, "thinkingBudget"), f"{tpath}.thinking_budget", "TYPE_INT32")
        level = field(thinking, "thinkingLevel")
        if level is not None:
            c.enum(
                level,
                f"{tpath}.thinking_level",
                THINKING_LEVELS,
                T + "GenerationConfig.ThinkingConfig.ThinkingLevel",
            )


def _check_tool_config(c: Checker, cfg: Any, root: str, name: str) -> None:
    if not c.message(cfg, root, name, T + "ToolConfig"):
        return
    path = f"{root}.tool_config"
    c.unknown(cfg, TOOL_CONFIG_FIELDS, path)
    fcc = field(cfg, "functionCallingConfig")
    if fcc is not None and c.message(fcc, path, "functionCallingConfig", T + "FunctionCallingConfig"):
        fpath = f"{path}.function_calling_config"
        c.unknown(fcc, FCC_FIELDS, fpath)
        if fcc.get("mode") is not None:
            c.enum(fcc["mode"], f"{fpath}.mode", FCC_MODES, T + "FunctionCallingConfig.Mode")


def _check_request_structure(c: Checker, req: dict[str, Any], root: str, allowed: frozenset[str]) -> None:
    c.unknown(req, allowed, root)
    contents = req.get("contents")
    if contents is not None and c.repeated(contents, f"{root}.contents", T + "Content"):
        for i, content in enumerate(contents):
            _check_content(c, content, f"{root}.contents[{i}]")
    system = field(req, "systemInstruction")
    if system is not None and c.message(system, root, "systemInstruction", T + "Content"):
        _check_content(c, system, f"{root}.system_instruction")
    if req.get("tools") is not None:
        _check_tools(c, req["tools"], root)
    for key in ("toolConfig", "tool_config"):
        if req.get(key) is not None:
            _check_tool_config(c, req[key], root, key)
    gen = field(req, "generationConfig")
    if gen is not None:
        _check_generation_config(c, gen, root)
    safety = field(req, "safetySettings")
    if safety is not None and c.repeated(safety, f"{root}.safety_settings", T + "SafetySetting"):
        for i, s in enumerate(safety):
            spath = f"{root}.safety_settings[{i}]"
            if not isinstance(s, dict):
                c.add(spath, f"Invalid value at '{spath}' ({T}SafetySetting), {_jtext(s)}")
                continue
            c.unknown(s, SAFETY_FIELDS, spath)
            if s.get("category") is not None:
                c.enum(s["category"], f"{spath}.category", HARM_CATEGORIES, T + "HarmCategory")
            if s.get("threshold") is not None:
                c.enum(s["threshold"], f"{spath}.threshold", HARM_THRESHOLDS, T + "SafetySetting.HarmBlockThreshold")
    session = field(req, "sessionId")
    if session is not None:
        c.scalar(session, f"{root}.session_id", "TYPE_STRING")
    labels = req.get("labels")
    if labels is not None and c.message(labels, root, "labels", "TYPE_MESSAGE"):
        for k, v in labels.items():
            c.scalar(v, f"{root}.labels[{k}].value", "TYPE_STRING")


# --------------------------------------------------------------------------------------------------
# semantics
# --------------------------------------------------------------------------------------------------
def _star(path: str) -> str:
    return "* GenerateContentRequest." + path


def _function_calls(content: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for j, part in enumerate(content.get("parts") or ()):
        call = field(part, "functionCall")
        if isinstance(call, dict):
            out.append((j, part))
    return out


def _function_responses(content: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for j, part in enumerate(content.get("parts") or ()):
        resp = field(part, "functionResponse")
        if isinstance(resp, dict):
            out.append((j, resp))
    return out


def _check_contents_semantics(contents: list[dict[str, Any]], label: str) -> None:
    if not contents:
        raise _invalid(_star(f"{label}: contents is not specified\n"))
    for i, content in enumerate(contents):
        role = content.get("role")
        if role not in (None, "", "user", "model"):
            raise _invalid("Please use a valid role: user, model.")
        parts = content.get("parts")
        if not parts:
            raise _invalid(_star(f"{label}[{i}].parts: contents.parts must not be empty.\n"))
        _check_parts_semantics(parts, f"{label}[{i}]")


def _check_parts_semantics(parts: list[dict[str, Any]], label: str) -> None:
    for j, part in enumerate(parts):
        data = [k for k in DATA_FIELDS if field(part, k) is not None]
        has_sig = bool(field(part, "thoughtSignature"))
        if not data or (data == ["text"] and part["text"] == "" and not has_sig):
            raise _invalid(
                _star(f"{label}.parts[{j}].data: required oneof field 'data' must have one initialized field\n")
            )
        call = field(part, "functionCall")
        if isinstance(call, dict) and not call.get("name"):
            raise _invalid(_star(f"{label}.parts[{j}].function_call.name: Name cannot be empty.\n"))
        resp = field(part, "functionResponse")
        if isinstance(resp, dict) and not resp.get("name"):
            raise _invalid(_star(f"{label}.parts[{j}].function_response.name: Name cannot be empty.\n"))


def _declarations(req: dict[str, Any]) -> list[dict[str, Any]]:
    decls: list[dict[str, Any]] = []
    for tool in req.get("tools") or ():
        decls.extend(field(tool, "functionDeclarations") or ())
    return decls


def _check_tools_semantics(req: dict[str, Any], spec: ModelSpec | None) -> None:
    tools = req.get("tools") or []
    has_functions = any(field(t, "functionDeclarations") for t in tools)
    has_search = any(k in SEARCH_TOOLS for t in tools for k in t)
    if has_functions and has_search:
        raise _invalid("Multiple tools are supported only when they are all search tools.")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        for j, decl in enumerate(field(tool, "functionDeclarations") or ()):
            dpath = f"tools[{i}].function_declarations[{j}]"
            name = decl.get("name") or ""
            if not FUNCTION_NAME.match(name):
                raise _invalid(_star(f"{dpath}.name: {FUNCTION_NAME_RULE}\n"))
            if name in seen:
                if spec is not None and spec.family == "claude":
                    raise _anthropic("tools: Tool names must be unique.")
                raise _invalid(f"Duplicate function declaration found: {name}")
            seen.add(name)
            params = decl.get("parameters")
            if isinstance(params, dict):
                _check_schema_semantics(params, f"{dpath}.parameters")


def _check_schema_semantics(schema: dict[str, Any], path: str) -> None:
    kind = schema.get("type")
    if schema.get("enum") is not None and isinstance(kind, str) and kind.upper() != "STRING":
        raise _invalid(_star(f"{path}.enum: only allowed for STRING type\n"))
    props = schema.get("properties") or {}
    for i, name in enumerate(schema.get("required") or ()):
        if name not in props:
            raise _invalid(_star(f"{path}.required[{i}]: property is not defined\n"))
    for name, sub in props.items():
        if isinstance(sub, dict):
            _check_schema_semantics(sub, f"{path}.properties[{name}]")
    if isinstance(schema.get("items"), dict):
        _check_schema_semantics(schema["items"], f"{path}.items")


def thinking_config(req: dict[str, Any]) -> dict[str, Any]:
    gen = field(req, "generationConfig") or {}
    return field(gen, "thinkingConfig") or {}


def thinking_enabled(req: dict[str, Any], spec: ModelSpec) -> bool:
    """Whether the model thinks for this request (Gemini thinks by default; Claude only when asked)."""
    if not spec.supports_thinking:
        return False
    cfg = thinking_config(req)
    budget = field(cfg, "thinkingBudget")
    if budget is not None and int(budget) == 0:
        return False
    if spec.family == "gemini":
        return True
    return bool(field(cfg, "includeThoughts")) or bool(budget) or bool(field(cfg, "thinkingLevel"))


def _check_generation_semantics(req: dict[str, Any], spec: ModelSpec) -> None:
    gen = field(req, "generationConfig") or {}
    mime = field(gen, "responseMimeType")
    if mime is not None and mime not in RESPONSE_MIME:
        raise _invalid(
            _star(
                "generation_config.response_mime_type: allowed mimetypes are `text/plain`, `application/json`, "
                "`application/xml`, `application/yaml` and `text/x.enum`.\n"
            )
        )
    max_out = field(gen, "maxOutputTokens")
    if max_out is not None:
        value = int(max_out)
        if value < 1 or value > spec.max_output_tokens:
            raise _invalid(
                f"Unable to submit request because it has a maxOutputTokens value of {value} but the supported "
                f"range is from 1 (inclusive) to {spec.max_output_tokens + 1} (exclusive). "
                "Update the value and try again."
            )
    cfg = field(gen, "thinkingConfig") or {}
    budget = field(cfg, "thinkingBudget")
    if budget is not None and field(cfg, "thinkingLevel") is not None:
        raise _invalid("You can only set only one of thinking budget and thinking level.")
    if spec.family == "claude" and thinking_enabled(req, spec) and budget is not None:
        value = int(budget)
        if 0 < value < 1024:
            raise _anthropic("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if max_out is not None and value >= int(max_out):
            raise _anthropic(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
                "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
            )


def _check_gemini_history(contents: list[dict[str, Any]], spec: ModelSpec, sigs: SignatureBook) -> None:
    for i, content in enumerate(contents):
        calls = _function_calls(content) if content.get("role") == "model" else []
        responses = _function_responses(content) if content.get("role") != "model" else []
        if calls:
            prev = contents[i - 1] if i > 0 else None
            if prev is None or prev.get("role") == "model":
                raise _invalid(
                    "Please ensure that function call turn comes immediately after a user turn or after a "
                    "function response turn."
                )
        if responses:
            prev = contents[i - 1] if i > 0 else None
            prev_calls = _function_calls(prev) if prev is not None and prev.get("role") == "model" else []
            if not prev_calls:
                raise _invalid(
                    "Please ensure that function response turn comes immediately after a function call turn."
                )
            if len(prev_calls) != len(responses):
                raise _invalid(
                    "Please ensure that the number of function response parts is equal to the number of function "
                    "call parts of the function call turn."
                )
        if content.get("role") == "model" and spec.supports_thinking:
            for part in content.get("parts") or ():
                sig = field(part, "thoughtSignature")
                if sig and sig != SKIP_SIGNATURE and sigs.family_of(sig) != "gemini":
                    raise _invalid("Corrupted thought signature.")
    if not spec.strict_signatures:
        return
    start = -1
    for i in range(len(contents) - 1, -1, -1):
        content = contents[i]
        if content.get("role") != "model" and any(
            field(p, "functionResponse") is None for p in content.get("parts") or ()
        ):
            start = i
            break
    for i in range(start + 1, len(contents)):
        content = contents[i]
        if content.get("role") != "model":
            continue
        calls = _function_calls(content)
        if calls and not field(calls[0][1], "thoughtSignature"):
            name = field(calls[0][1], "functionCall").get("name", "")
            raise _invalid(MISSING_SIGNATURE.format(name=name, position=i + 1))


def _check_claude_history(
    contents: list[dict[str, Any]], req: dict[str, Any], spec: ModelSpec, sigs: SignatureBook
) -> None:
    for i, content in enumerate(contents):
        if content.get("role") != "model":
            continue
        for j, part in enumerate(content.get("parts") or ()):
            if part.get("thought") is True:
                sig = field(part, "thoughtSignature")
                if not sig:
                    raise _anthropic(f"messages.{i}.content.{j}.thinking.signature: Field required")
                if sigs.family_of(sig) != "claude":
                    raise _anthropic(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
    for i, content in enumerate(contents):
        if content.get("role") == "model":
            calls = _function_calls(content)
            ids = []
            for j, part in calls:
                call_id = field(part, "functionCall").get("id")
                if not call_id:
                    raise _anthropic(f"messages.{i}.content.{j}.tool_use.id: Field required")
                ids.append(call_id)
            if ids:
                nxt = contents[i + 1] if i + 1 < len(contents) else None
                answered = (
                    {r.get("id") for _, r in _function_responses(nxt)}
                    if nxt is not None and nxt.get("role") != "model"
                    else set()
                )
                missing = [x for x in ids if x not in answered]
                if missing:
                    raise _anthropic(
                        f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                        f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                        "in the next message."
                    )
        else:
            responses = _function_responses(content)
            if not responses:
                continue
            prev = contents[i - 1] if i > 0 else None
            known = (
                {field(p, "functionCall").get("id") for _, p in _function_calls(prev)}
                if prev is not None and prev.get("role") == "model"
                else set()
            )
            for j, resp in responses:
                if resp.get("id") not in known:
                    raise _anthropic(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{resp.get('id')}. Each `tool_result` block must have a corresponding `tool_use` block in "
                        "the previous message."
                    )
    if thinking_enabled(req, spec) and len(contents) >= 2:
        last, prev = contents[-1], contents[-2]
        if last.get("role") != "model" and _function_responses(last) and prev.get("role") == "model":
            first = (prev.get("parts") or [{}])[0]
            if first.get("thought") is not True:
                found = "tool_use" if field(first, "functionCall") is not None else "text"
                raise _anthropic(THINKING_FIRST.format(index=len(contents) - 2, found=found))


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------
def validate_envelope(body: Any) -> dict[str, Any]:
    """Structural check of the v1internal envelope and its inner request; returns the inner request."""
    c = Checker()
    if not isinstance(body, dict):
        raise _invalid(f"Invalid JSON payload received. Expected an object, got {_jtext(body)[:40]}.")
    c.unknown(body, ENVELOPE_FIELDS, "")
    for key in ("project", "model", "requestId", "userAgent", "requestType"):
        value = field(body, key)
        if value is not None:
            c.scalar(value, snake(key), "TYPE_STRING")
    req = body.get("request")
    if req is not None and c.message(req, "", "request", T + "GenerateContentRequest"):
        _check_request_structure(c, req, "request", REQUEST_FIELDS)
    c.raise_if_any()
    return req if isinstance(req, dict) else {}


def validate_generate_request(req: dict[str, Any], spec: ModelSpec, sigs: SignatureBook) -> None:
    contents = req.get("contents") or []
    _check_contents_semantics(contents, "contents")
    system = field(req, "systemInstruction")
    if isinstance(system, dict) and system.get("parts"):
        _check_parts_semantics(system["parts"], "system_instruction")
    _check_tools_semantics(req, spec)
    _check_generation_semantics(req, spec)
    if spec.family == "claude":
        _check_claude_history(contents, req, spec, sigs)
    else:
        _check_gemini_history(contents, spec, sigs)


def validate_count_request(body: Any) -> dict[str, Any]:
    c = Checker()
    if not isinstance(body, dict):
        raise _invalid(f"Invalid JSON payload received. Expected an object, got {_jtext(body)[:40]}.")
    c.unknown(body, frozenset({"request"}), "")
    req = body.get("request")
    if req is None:
        c.raise_if_any()
        raise _invalid(_star("contents: contents is not specified\n"))
    if c.message(req, "", "request", T + "CountTokensRequest"):
        _check_request_structure(c, req, "request", COUNT_REQUEST_FIELDS)
    c.raise_if_any()
    assert isinstance(req, dict)
    _check_contents_semantics(req.get("contents") or [], "contents")
    _check_tools_semantics(req, None)
    return req
