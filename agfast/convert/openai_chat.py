"""OpenAI chat completions ↔ Gemini (reference §6.2, §6.3): pure functions and per-request converters, no IO.

Up: `to_gemini` turns a chat body into the GenerateContentRequest v1internal accepts (system/developer →
systemInstruction, roles → user/model, tool results paired with their calls by id, tool schemas cleaned,
thought signatures from earlier turns put back on the calls they belong to). Down: `Reader` parses each
streamed Gemini chunk once into reasoning / text / whole tool calls, caching the signatures it sees;
`ChatStream` turns that into `chat.completion.chunk` SSE bytes, `ChatCollector` into one `chat.completion`.
The Responses and legacy completions surfaces reuse both halves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from agfast import sse
from agfast.convert.checks import InvalidRequest
from agfast.convert.gemini import (
    LEVEL_BUDGETS,
    SAFETY_OFF,
    generation_config,
    session_id_from_contents,
    with_identity,
)
from agfast.convert.ids import hex24
from agfast.convert.limits import MAX_ARGUMENTS_DEPTH, too_deep
from agfast.convert.models import ModelSpec, is_thinking_model, model_spec
from agfast.convert.schema import clean_schema
from agfast.convert.signatures import SKIP_VALIDATOR, SignatureCache, family_of

# Google's rule for function names (a declaration that breaks it fails the whole request upstream).
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
# Tool types that mean "search the web": v1internal answers them with its own googleSearch tool.
SEARCH_TOOLS = frozenset(
    {"web_search", "web_search_preview", "web_search_2025_08_26", "google_search", "web_search_20250305",
     "google_search_retrieval", "builtin_web_search", "googleSearch"}
)  # fmt: skip
TOOL_CHOICE_MODES = {"none": "NONE", "auto": "AUTO", "required": "ANY", "any": "ANY"}
# Effort names OpenAI clients send → the thinking budgets of convert.gemini (xhigh is OpenAI's newest).
EFFORT_BUDGETS = {**LEVEL_BUDGETS, "xhigh": LEVEL_BUDGETS["high"]}
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
}
# (OpenAI field, generationConfig field, accepted JSON types)
GENERATION_FIELDS: tuple[tuple[str, str, tuple[type, ...]], ...] = (
    ("temperature", "temperature", (int, float)),
    ("top_p", "topP", (int, float)),
    ("presence_penalty", "presencePenalty", (int, float)),
    ("frequency_penalty", "frequencyPenalty", (int, float)),
    ("seed", "seed", (int,)),
)
# Every body field `_generation` reads: a body with none of them gets its model's default generationConfig.
GENERATION_KEYS = frozenset(
    {*(name for name, _, _ in GENERATION_FIELDS), "max_completion_tokens", "max_tokens", "n", "stop",
     "response_format", "reasoning_effort", "thinking"}
)  # fmt: skip
# Default generationConfigs remembered by (upstream model, its spec, thinking allowed): a handful of models in
# practice; bounded (cleared when full) because a spec comes from Google's model descriptions.
DEFAULT_GENERATION_MEMO = 256
_default_generations: dict[tuple[str, ModelSpec, bool], dict[str, Any]] = {}
# File extension → MIME type for http(s) media URLs (Google needs one; images are the common case).
URL_MIME = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
    "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf", "mp3": "audio/mp3", "wav": "audio/wav",
    "mp4": "video/mp4",
}  # fmt: skip
DEFAULT_URL_MIME = "image/jpeg"
AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg"}
MARKDOWN_DATA_IMAGE = re.compile(r"!\[[^\]]*\]\((data:[^;,()]+;base64,[A-Za-z0-9+/=_-]+)\)")
EMPTY_OBJECT_SCHEMA = {"type": "OBJECT", "properties": {}}


@dataclass(slots=True)
class ChatPlan:
    """What `to_gemini` produced: the upstream request and what the way back needs to know."""

    request: dict[str, Any]
    session: str | None
    schemas: dict[str, Any] = field(default_factory=dict)
    request_type: str = "agent"
    message_count: int = 0


# ---------------------------------------------------------------------------------------------------------
# Request: OpenAI chat → GenerateContentRequest


def data_url_part(url: str) -> dict[str, Any] | None:
    """`data:<mime>;base64,<data>` → an inlineData part (None when it is not a base64 data URL)."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        return None
    mime = head[5:-7] or "application/octet-stream"
    return {"inlineData": {"mimeType": mime, "data": data}}


def url_part(url: str) -> dict[str, Any]:
    """An image/file reference: data URLs inline, http(s) URLs as fileData (Google fetches them)."""
    found = data_url_part(url)
    if found is not None:
        return found
    ext = url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    return {"fileData": {"mimeType": URL_MIME.get(ext, DEFAULT_URL_MIME), "fileUri": url}}


def text_parts(text: str) -> list[dict[str, Any]]:
    """Text, with markdown data-URL images (`![x](data:…)`) lifted into inlineData parts (reference §6.1)."""
    if "](data:" not in text:
        return [{"text": text}] if text else []
    parts: list[dict[str, Any]] = []
    pos = 0
    for m in MARKDOWN_DATA_IMAGE.finditer(text):
        if m.start() > pos:
            parts.append({"text": text[pos : m.start()]})
        image = data_url_part(m.group(1))
        parts.append(image if image is not None else {"text": m.group(0)})
        pos = m.end()
    if pos < len(text):
        parts.append({"text": text[pos:]})
    return parts


def _image(part: dict[str, Any]) -> list[dict[str, Any]]:
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    return [url_part(url)] if isinstance(url, str) and url else []


def _audio(part: dict[str, Any]) -> list[dict[str, Any]]:
    audio = part.get("input_audio")
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
        return []
    mime = AUDIO_MIME.get(str(audio.get("format", "wav")), "audio/wav")
    return [{"inlineData": {"mimeType": mime, "data": audio["data"]}}]


def _file(part: dict[str, Any]) -> list[dict[str, Any]]:
    nested = part.get("file")
    ref: dict[str, Any] = nested if isinstance(nested, dict) else part
    for key in ("file_data", "file_url"):
        value = ref.get(key)
        if isinstance(value, str) and value:
            return [url_part(value)]
    return []


def _text(part: dict[str, Any]) -> list[dict[str, Any]]:
    text = part.get("text")
    return text_parts(text) if isinstance(text, str) else []


def _refusal(part: dict[str, Any]) -> list[dict[str, Any]]:
    text = part.get("refusal")
    return [{"text": text}] if isinstance(text, str) and text else []


# Content part type → Gemini parts; chat and Responses part names side by side. Unknown types are skipped.
PART_CONVERTERS = {
    "text": _text,
    "input_text": _text,
    "output_text": _text,
    "image_url": _image,
    "input_image": _image,
    "input_audio": _audio,
    "file": _file,
    "input_file": _file,
    "refusal": _refusal,
}


def content_parts(content: Any, param: str) -> list[dict[str, Any]]:
    """A message's `content` (string or list of typed parts) as Gemini parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return text_parts(content)
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of content parts.", param)
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.extend(text_parts(part))
        elif isinstance(part, dict):
            convert = PART_CONVERTERS.get(str(part.get("type", "text")))
            if convert is not None:
                parts.extend(convert(part))
    return parts


def content_text(content: Any) -> str:
    """Plain text of a content value (tool results, system prompts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p if isinstance(p, str) else p.get("text") for p in content if isinstance(p, str | dict)]
        return "\n".join(t for t in texts if isinstance(t, str))
    if content is None:
        return ""
    return orjson.dumps(content).decode()


def _arguments(raw: Any, param: str) -> dict[str, Any]:
    """Tool-call arguments as a Struct: JSON text parsed; anything not an object wrapped so Google takes it."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"arguments": raw}
        if too_deep(raw, MAX_ARGUMENTS_DEPTH) is not None:
            raise InvalidRequest(f"'{param}' is nested more than {MAX_ARGUMENTS_DEPTH} levels deep.", param)
        if isinstance(raw, dict):
            return raw
    return {"value": raw}


class _History:
    """Builds `contents` from chat messages; one method per role (see ROLE_METHODS)."""

    __slots__ = ("call_names", "contents", "system")

    def __init__(self) -> None:
        self.contents: list[dict[str, Any]] = []
        self.system: list[dict[str, Any]] = []
        self.call_names: dict[str, str] = {}

    def add(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        contents = self.contents
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    # Each role method gets the message's index: its error path (`messages[i]…`) is only written for a 400.

    def system_message(self, msg: dict[str, Any], i: int) -> None:
        text = content_text(msg.get("content"))
        if text:
            self.system.append({"text": text})

    def user(self, msg: dict[str, Any], i: int) -> None:
        content = msg.get("content")
        self.add("user", text_parts(content) if type(content) is str else content_parts(content, _content_param(i)))

    def assistant(self, msg: dict[str, Any], i: int) -> None:
        parts: list[dict[str, Any]] = []
        reasoning = msg.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append({"text": reasoning, "thought": True})
        content = msg.get("content")
        parts.extend(text_parts(content) if type(content) is str else content_parts(content, _content_param(i)))
        calls = msg.get("tool_calls")
        if calls is None and "function_call" not in msg:  # the usual assistant turn: text only
            self.add("model", parts)
            return
        param = f"messages[{i}]"
        if calls is not None and not isinstance(calls, list):
            raise InvalidRequest(f"'{param}.tool_calls' must be an array.", f"{param}.tool_calls")
        for j, call in enumerate(calls or ()):
            fn = call.get("function") if isinstance(call, dict) else None
            name = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(fn, dict) or not isinstance(name, str) or not name:
                raise InvalidRequest("Each tool call needs a function name.", f"{param}.tool_calls[{j}].function.name")
            call_id = call.get("id")
            call_id = call_id if isinstance(call_id, str) and call_id else f"call_{name}_{j}"
            self.call_names[call_id] = name
            args = _arguments(fn.get("arguments"), f"{param}.tool_calls[{j}].function.arguments")
            parts.append({"functionCall": {"name": name, "args": args, "id": call_id}})
        legacy = msg.get("function_call")
        if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
            args = _arguments(legacy.get("arguments"), f"{param}.function_call.arguments")
            parts.append({"functionCall": {"name": legacy["name"], "args": args}})
        self.add("model", parts)

    def tool(self, msg: dict[str, Any], i: int) -> None:
        call_id = msg.get("tool_call_id")
        name = self.call_names.get(call_id) if isinstance(call_id, str) else None
        if name is None:
            name = msg.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"Tool message answers an unknown tool call id {call_id!r}; it must follow an assistant "
                "message whose tool_calls contain that id.",
                f"messages[{i}].tool_call_id",
            )
        response: dict[str, Any] = {"name": name, "response": {"result": content_text(msg.get("content"))}}
        if isinstance(call_id, str):
            response["id"] = call_id
        self.add("user", [{"functionResponse": response}])


def _content_param(i: int) -> str:
    return f"messages[{i}].content"


ROLE_METHODS = {
    "system": _History.system_message,
    "developer": _History.system_message,
    "user": _History.user,
    "assistant": _History.assistant,
    "tool": _History.tool,
    "function": _History.tool,
}


# Tool traffic older than the last RECENT_TURNS turns is cut to CLIP_AT characters (reference §6.2): long agent
# sessions would otherwise resend every old file dump and command output on each turn, at full token price.
RECENT_TURNS = 24
CLIP_AT = 1000


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > CLIP_AT:
        return f"{value[:CLIP_AT]}… [{len(value) - CLIP_AT} characters cut from an older turn]"
    return value


def _clip_old_tool_traffic(contents: list[dict[str, Any]]) -> None:
    """In turns older than the last RECENT_TURNS: long string tool arguments and tool results are clipped."""
    for content in contents[:-RECENT_TURNS]:
        for part in content["parts"]:
            call = part.get("functionCall")
            if call is not None and isinstance(call.get("args"), dict):
                call["args"] = {key: _clip(value) for key, value in call["args"].items()}
            answer = part.get("functionResponse")
            if answer is not None and isinstance(answer.get("response"), dict):
                answer["response"] = {key: _clip(value) for key, value in answer["response"].items()}


def _sign_calls(contents: list[dict[str, Any]], mapped: str, signatures: SignatureCache, session: str | None) -> bool:
    """Put cached thought signatures back where Google wants them; False when a Claude tool turn has none.

    Gemini: on the first functionCall part of each model turn (cached by call id, else the session's latest,
    else the documented skip sentinel for thinking models). Claude: on a leading thought part; unsigned
    thought parts are dropped because Anthropic rejects them.
    """
    complete = True
    claude = thinking = False
    asked = False  # the model's family and thinking asked only once a model turn needs them
    for content in contents:
        if content["role"] != "model":
            continue
        if not asked:
            claude, thinking, asked = family_of(mapped) == "claude", is_thinking_model(mapped), True
        parts = content["parts"]
        first = next((p for p in parts if "functionCall" in p), None)
        sig: str | None = None
        if first is not None:
            call_id = first["functionCall"].get("id")
            sig = signatures.for_tool_call(call_id) if call_id else None
            if sig is None and session and not claude:
                sig = signatures.for_session(session)
            if not signatures.usable_for(sig, mapped):
                sig = None
        if claude:
            parts[:] = [p for p in parts if not p.get("thought")] if sig is None else parts
            if sig is not None:
                if parts[0].get("thought"):
                    parts[0]["thoughtSignature"] = sig
                else:
                    parts.insert(0, {"text": "", "thought": True, "thoughtSignature": sig})
            elif first is not None:
                complete = False
        elif first is not None and "thoughtSignature" not in first:
            if sig is not None:
                first["thoughtSignature"] = sig
            elif thinking:
                first["thoughtSignature"] = SKIP_VALIDATOR
    return complete


def _tools(tools: Any) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    """OpenAI tools → (function declarations sorted by name, client schemas by name, wants web search)."""
    if tools is None:
        return [], {}, False
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", "tools")
    decls: list[dict[str, Any]] = []
    schemas: dict[str, Any] = {}
    search = False
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest("Each tool must be an object.", f"tools[{i}]")
        kind = tool.get("type", "function")
        if kind in SEARCH_TOOLS or "googleSearch" in tool:
            search = True
            continue
        if kind != "function":
            continue  # custom, namespace, mcp, …: nothing Gemini can declare
        inner = tool.get("function")
        nested = isinstance(inner, dict)
        fn: dict[str, Any] = inner if isinstance(inner, dict) else tool
        where = f"tools[{i}].function" if nested else f"tools[{i}]"
        name = fn.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            raise InvalidRequest(
                f"Invalid tool name {name!r}: it must start with a letter or underscore and contain only letters, "
                "digits, '_', '.', ':' or '-' (at most 64 characters).",
                f"{where}.name",
            )
        if name in schemas:
            raise InvalidRequest(f"Duplicate tool name {name!r}.", f"{where}.name")
        params = fn.get("parameters")
        if params is not None:
            kind_of = params.get("type", "object") if isinstance(params, dict) else None
            props = params.get("properties", {}) if isinstance(params, dict) else None
            if kind_of != "object" or not isinstance(props, dict):
                raise InvalidRequest(
                    f"Invalid schema for tool {name!r}: parameters must be a JSON Schema object with type 'object'.",
                    f"{where}.parameters",
                )
        schemas[name] = params
        decl: dict[str, Any] = {"name": name}
        if isinstance(fn.get("description"), str) and fn["description"]:
            decl["description"] = fn["description"]
        decl["parameters"] = (
            clean_schema(params, upper_types=True, root_object=True) if params is not None else EMPTY_OBJECT_SCHEMA
        )
        decls.append(decl)
    decls.sort(key=lambda d: d["name"])
    return decls, schemas, search


def _tool_config(choice: Any, names: dict[str, Any]) -> dict[str, Any]:
    """`tool_choice` → functionCallingConfig; absent means VALIDATED (what Antigravity sends)."""
    if choice is None:
        return {"functionCallingConfig": {"mode": "VALIDATED"}}
    if isinstance(choice, str):
        mode = TOOL_CHOICE_MODES.get(choice)
        if mode is None:
            raise InvalidRequest(f"Invalid tool_choice {choice!r}: use none, auto or required.", "tool_choice")
        return {"functionCallingConfig": {"mode": mode}}
    if isinstance(choice, dict):
        inner = choice.get("function")
        name = (inner if isinstance(inner, dict) else choice).get("name")
        if isinstance(name, str) and name:
            if name not in names:
                raise InvalidRequest(f"tool_choice names an undeclared tool {name!r}.", "tool_choice")
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
        mode = TOOL_CHOICE_MODES.get(str(choice.get("mode", "")), "ANY")
        return {"functionCallingConfig": {"mode": mode}}
    raise InvalidRequest("'tool_choice' must be a string or an object.", "tool_choice")


def _response_format(fmt: Any, gen: dict[str, Any], param: str) -> None:
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param)
    kind = fmt.get("type")
    if kind == "json_object":
        gen["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        inner = fmt.get("json_schema")
        spec: dict[str, Any] = inner if isinstance(inner, dict) else fmt
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("json_schema response format needs a 'schema' object.", f"{param}.json_schema.schema")
        gen["responseMimeType"] = "application/json"
        gen["responseSchema"] = clean_schema(schema, upper_types=True)
    elif kind not in (None, "text"):
        raise InvalidRequest(f"Unsupported response format type {kind!r}.", f"{param}.type")


def _thinking(body: dict[str, Any], mapped: str, spec: ModelSpec) -> dict[str, Any] | None:
    """thinkingConfig per §6.2: on for thinking models or when the client asks and the model can think; budget
    from the client."""
    effort = body.get("reasoning_effort")
    raw = body.get("thinking")
    hint: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if effort == "none" or hint.get("type") == "disabled":
        return None
    budget = hint.get("budget_tokens")
    asked = hint.get("type") == "enabled" or effort in EFFORT_BUDGETS
    if not spec.can_think or (not asked and not is_thinking_model(mapped)):
        return None
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        budget = EFFORT_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        budget = spec.thinking_budget
    return {"includeThoughts": True, "thinkingBudget": budget}


def _generation(body: dict[str, Any], mapped: str, allow_thinking: bool, spec: ModelSpec) -> dict[str, Any]:
    if GENERATION_KEYS.isdisjoint(body):
        return _default_generation(mapped, allow_thinking, spec)
    return _client_generation(body, mapped, allow_thinking, spec)


def _default_generation(mapped: str, allow_thinking: bool, spec: ModelSpec) -> dict[str, Any]:
    """The generationConfig of a body that sets none of GENERATION_KEYS: it depends only on the model and what it
    can do, so it is built once per (model, spec, thinking allowed) and copied (a request may add imageConfig)."""
    key = (mapped, spec, allow_thinking)
    made = _default_generations.get(key)
    if made is None:
        made = _client_generation({}, mapped, allow_thinking, spec)
        if len(_default_generations) >= DEFAULT_GENERATION_MEMO:
            _default_generations.clear()
        _default_generations[key] = made
    gen = made.copy()
    thinking = gen.get("thinkingConfig")
    if thinking is not None:
        gen["thinkingConfig"] = thinking.copy()
    return gen


def _client_generation(body: dict[str, Any], mapped: str, allow_thinking: bool, spec: ModelSpec) -> dict[str, Any]:
    gen: dict[str, Any] = {}
    for name, target, kinds in GENERATION_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise InvalidRequest(f"'{name}' must be a number.", name)
        gen[target] = value
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidRequest("'max_tokens' must be a positive integer.", "max_tokens")
        gen["maxOutputTokens"] = limit
    n = body.get("n")
    if n is not None and n != 1:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidRequest("'n' must be a positive integer.", "n")
        gen["candidateCount"] = n
    stop = body.get("stop")
    if isinstance(stop, str):
        gen["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        gen["stopSequences"] = [s for s in stop if isinstance(s, str)]
    _response_format(body.get("response_format"), gen, "response_format")
    if allow_thinking:
        config = _thinking(body, mapped, spec)
        if config is not None:
            gen["thinkingConfig"] = config
    return generation_config(gen, mapped, spec)


def to_gemini(
    body: dict[str, Any],
    mapped: str,
    signatures: SignatureCache,
    *,
    session: str | None = None,
    spec: ModelSpec | None = None,
) -> ChatPlan:
    """A chat completions body → the GenerateContentRequest for `mapped` (sessionId set per account later);
    `spec` is what `mapped` can do (Google's description), the static table when not given."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array.", "messages")
    history = _History()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidRequest("Each message must be an object.", f"messages[{i}]")
        method = ROLE_METHODS.get(msg.get("role"))  # type: ignore[arg-type]
        if method is None:
            raise InvalidRequest(
                f"Invalid role {msg.get('role')!r}: use system, developer, user, assistant or tool.",
                f"messages[{i}].role",
            )
        method(history, msg, i)
    contents = history.contents
    _clip_old_tool_traffic(contents)
    if session is None:
        session = session_id_from_contents(contents)
    complete = _sign_calls(contents, mapped, signatures, session)
    contents = [c for c in contents if c["parts"]]
    # Google wants a user turn first (a tool call must follow one); an empty chat still needs a turn.
    if not contents or contents[0]["role"] != "user":
        contents.insert(0, {"role": "user", "parts": [{"text": " "}]})

    decls, schemas, search = _tools(body.get("tools"))
    request: dict[str, Any] = {"systemInstruction": with_identity(history.system)}
    request_type = "agent"
    if decls:
        request["tools"] = [{"functionDeclarations": decls}]
        request["toolConfig"] = _tool_config(body.get("tool_choice"), schemas)
    elif search:
        request["tools"] = [{"googleSearch": {}}]
        request_type = "web_search"
    # A Claude thinking request whose tool history lost its signatures must go without thinking (§6.2).
    request["generationConfig"] = _generation(body, mapped, complete, spec or model_spec(mapped))
    request["safetySettings"] = SAFETY_OFF
    request["sessionId"] = ""
    request["contents"] = contents
    return ChatPlan(request, session, schemas, request_type, len(messages))


# ---------------------------------------------------------------------------------------------------------
# Tool-call arguments back to the client's schema types (Gemini sometimes answers "3" for an integer).


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    name = ref.rsplit("/", 1)[-1]
    for key in ("$defs", "definitions"):
        defs = root.get(key)
        if isinstance(defs, dict) and isinstance(defs.get(name), dict):
            return {**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _schema_kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if isinstance(kind, str):
        return kind
    if isinstance(schema.get("properties"), dict):
        return "object"
    if "items" in schema:
        return "array"
    return ""


def _to_int(value: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if number.is_integer() else number
    return value


def _to_number(value: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in value else number
    return value


def _to_bool(value: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _to_string(value: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _parse_json(value: Any, kind: type) -> Any:
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        return parsed if isinstance(parsed, kind) else value
    return value


def _to_array(value: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    value = _parse_json(value, list)
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, dict):
        return [coerce(v, items, root, depth + 1) for v in value]
    return value


def _to_object(value: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    value = _parse_json(value, dict)
    props = schema.get("properties")
    if isinstance(value, dict) and isinstance(props, dict):
        return {
            k: coerce(v, props[k], root, depth + 1) if isinstance(props.get(k), dict) else v for k, v in value.items()
        }
    return value


COERCERS = {
    "integer": _to_int,
    "number": _to_number,
    "boolean": _to_bool,
    "string": _to_string,
    "array": _to_array,
    "object": _to_object,
}
# Schemas nest this deep at most in practice; deeper values are left as they are.
MAX_COERCE_DEPTH = 16


def coerce(value: Any, schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """`value` with scalar types fixed to what `schema` (the client's JSON Schema) declares."""
    if not isinstance(schema, dict) or depth > MAX_COERCE_DEPTH or value is None:
        return value
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    variants = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(variants, list) and "type" not in schema:
        usable = [_resolve(v, root) for v in variants if isinstance(v, dict) and v.get("type") != "null"]
        if len(usable) == 1:
            schema = usable[0]
    convert = COERCERS.get(_schema_kind(schema))
    return convert(value, schema, root, depth) if convert is not None else value


# ---------------------------------------------------------------------------------------------------------
# Response: Gemini stream chunks → reasoning / text / tool calls


def new_call_id() -> str:
    """A fresh tool call id in OpenAI's `call_…` form."""
    return "call_" + hex24()


def completion_id(prefix: str) -> str:
    """`prefix` + 24 random hex digits (`chatcmpl-…`, `cmpl-…`)."""
    return prefix + hex24()


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI clients expect


@dataclass(slots=True)
class Piece:
    """What one chunk said for one candidate."""

    index: int
    reasoning: str
    text: str
    calls: list[ToolCall]


def candidate_index(cand: dict[str, Any]) -> int:
    """A candidate's index: Google's own is 0 or a positive int; anything else (null, a string) is candidate 0."""
    index = cand.get("index", 0)
    return index if type(index) is int else 0


class Reader:
    """Parses Gemini chunks for every OpenAI-shaped output, and remembers the thought signatures it sees."""

    __slots__ = ("finish", "mapped", "schemas", "session", "signature", "signatures", "usage")

    def __init__(
        self, signatures: SignatureCache, mapped: str, session: str | None, schemas: dict[str, Any] | None = None
    ) -> None:
        self.signatures = signatures
        self.mapped = mapped
        self.session = session
        self.schemas = schemas or {}
        self.usage: dict[str, Any] | None = None
        self.finish: dict[int, str] = {}
        self.signature: str | None = None  # the latest one, for calls that arrive without their own

    def read(self, chunk: dict[str, Any]) -> list[Piece]:
        usage = chunk.get("usageMetadata")
        if usage:
            self.usage = usage
        out: list[Piece] = []
        for cand in chunk.get("candidates") or ():
            index = candidate_index(cand)
            reason = cand.get("finishReason")
            if reason:
                self.finish[index] = reason
            content = cand.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            if parts:
                piece = self._parts(index, parts)
                if piece.reasoning or piece.text or piece.calls:
                    out.append(piece)
        return out

    def _parts(self, index: int, parts: list[dict[str, Any]]) -> Piece:
        reasoning: list[str] = []
        text: list[str] = []
        calls: list[ToolCall] = []
        for part in parts:
            sig = part.get("thoughtSignature")
            if sig:
                self.signature = sig
                if self.session:
                    self.signatures.remember(sig, self.mapped, session=self.session)
            call = part.get("functionCall")
            if call is not None:
                calls.append(self._call(call, sig))
            elif part.get("thought"):
                value = part.get("text")
                if value:
                    reasoning.append(value)
            elif "text" in part:
                if part["text"]:
                    text.append(part["text"])
            elif "inlineData" in part:
                blob = part["inlineData"]
                text.append(f"![image](data:{blob.get('mimeType', 'image/png')};base64,{blob.get('data', '')})")
        return Piece(index, "".join(reasoning), "".join(text), calls)

    def _call(self, call: dict[str, Any], sig: str | None) -> ToolCall:
        name = call.get("name") or ""
        args = call.get("args") or {}
        schema = self.schemas.get(name)
        if schema is not None:
            args = coerce(args, schema)
        call_id = new_call_id()
        sig = sig or self.signature
        if sig:
            self.signatures.remember(sig, self.mapped, session=self.session, tool_call_id=call_id)
        return ToolCall(call_id, name, orjson.dumps(args).decode())

    def finish_reason(self, index: int, tool_calls: bool) -> str:
        if tool_calls:
            return "tool_calls"
        return FINISH_REASONS.get(self.finish.get(index, "STOP"), "stop")


def chat_usage(meta: dict[str, Any] | None) -> dict[str, Any]:
    """usageMetadata → OpenAI usage, numbers taken as Google reports them."""
    meta = meta or {}
    prompt = meta.get("promptTokenCount", 0)
    completion = meta.get("candidatesTokenCount", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount", prompt + completion),
        "prompt_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount", 0)},
        "completion_tokens_details": {"reasoning_tokens": meta.get("thoughtsTokenCount", 0)},
    }


DONE = b"data: [DONE]\n\n"


def stream_error(message: str, error_type: str = "upstream_error") -> bytes:
    """The in-stream error chunk (then [DONE]) for failures after the first byte."""
    body = orjson.dumps({"error": {"message": message, "type": error_type, "code": "stream_error", "param": None}})
    return sse.frame_event(body) + DONE


class ChatStream:
    """Gemini chunks → `chat.completion.chunk` SSE bytes; `finish()` adds finish_reason, usage and [DONE]."""

    __slots__ = ("_head", "_tools", "fast", "include_usage", "reader", "started")

    def __init__(self, reader: Reader, *, model: str, created: int, include_usage: bool, response_id: str) -> None:
        self.reader = reader
        self.include_usage = include_usage
        # Every chunk shares this prefix; only the choice is serialised per chunk.
        self._head = b'{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,"choices":[' % (
            response_id.encode(),
            created,
            orjson.dumps(model),
        )
        self.started: set[int] = set()
        self._tools: dict[int, int] = {}
        # The per-event fast path (api.common.pump uses it): plain text/reasoning events straight to bytes.
        # A head with a line break would be framed as several data lines, which only `feed` does.
        single_line = b"\n" not in self._head and b"\r" not in self._head
        self.fast = sse.ChatDeltas(self._head, self.started) if single_line else None

    def _take_fast_usage(self) -> None:
        """Usage the fast path saw is newer than the reader's: events reach the two paths in order."""
        fast = self.fast
        if fast is not None and fast.usage is not None:
            self.reader.usage, fast.usage = fast.usage, None

    def _delta(self, index: int) -> dict[str, Any]:
        if index in self.started:
            return {}
        self.started.add(index)
        return {"role": "assistant"}

    def feed(self, chunk: dict[str, Any]) -> bytes:
        self._take_fast_usage()
        out = []
        for piece in self.reader.read(chunk):
            delta = self._delta(piece.index)
            if piece.reasoning:
                delta["reasoning_content"] = piece.reasoning
            if piece.text:
                delta["content"] = piece.text
            if piece.calls:
                first = self._tools.get(piece.index, 0)
                self._tools[piece.index] = first + len(piece.calls)
                delta["tool_calls"] = [
                    {
                        "index": first + k,
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for k, c in enumerate(piece.calls)
                ]
            choice = orjson.dumps({"index": piece.index, "delta": delta, "finish_reason": None})
            out.append(sse.frame_event(self._head + choice + b"]}"))
        return b"".join(out)

    def finish(self) -> bytes:
        self._take_fast_usage()
        reader = self.reader
        indexes = sorted(self.started | set(reader.finish)) or [0]
        out = []
        usage = orjson.dumps(chat_usage(reader.usage))
        for k, index in enumerate(indexes):
            delta = self._delta(index)
            if delta:
                delta["content"] = ""
            reason = reader.finish_reason(index, bool(self._tools.get(index)))
            choice = orjson.dumps({"index": index, "delta": delta, "finish_reason": reason})
            # Without include_usage the last chunk still carries usage (the reference's habit; harmless).
            tail = b"]}" if self.include_usage or k < len(indexes) - 1 else b'],"usage":' + usage + b"}"
            out.append(sse.frame_event(self._head + choice + tail))
        if self.include_usage:
            out.append(sse.frame_event(self._head + b'],"usage":' + usage + b"}"))
        out.append(DONE)
        return b"".join(out)


@dataclass(slots=True)
class _Message:
    reasoning: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)


class ChatCollector:
    """Gemini chunks → one `chat.completion` object, for clients that did not ask to stream."""

    __slots__ = ("fast", "messages", "reader")

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.messages: dict[int, _Message] = {}
        # The collector step (upstream.gateway.collect uses it): runs of plain text events folded into choice 0
        # from their bytes; `feed` gets the rest.
        self.fast = sse.ChatFold(self.messages, _Message, reader.finish)

    def _take_fast_usage(self) -> None:
        """Usage the collector step saw is newer than the reader's: events reach the two in order."""
        fast = self.fast
        if fast.usage is not None:
            self.reader.usage, fast.usage = fast.usage, None

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """`Reader.read`, inlined: a text or thought part's string is appended to its message as it is (one join
        at the end), without building a Piece per event; a part with anything more goes through `Reader._parts`."""
        reader = self.reader
        self._take_fast_usage()
        usage = chunk.get("usageMetadata")
        if usage:
            reader.usage = usage
        for cand in chunk.get("candidates") or ():
            index = candidate_index(cand)
            reason = cand.get("finishReason")
            if reason:
                reader.finish[index] = reason
            content = cand.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            if parts:
                self._take(index, parts)
        return b""

    def _take(self, index: int, parts: list[dict[str, Any]]) -> None:
        """One candidate's parts: plain text and thought text appended; from the first other part on, Reader's way."""
        msg = None
        for k, part in enumerate(parts):
            text = part.get("text")
            if text.__class__ is not str or part.get("thoughtSignature") or part.get("functionCall") is not None:
                self._add(index, self.reader._parts(index, parts[k:]))
                return
            if text:
                if msg is None:
                    msg = self.messages.get(index)
                    if msg is None:
                        msg = self.messages[index] = _Message()
                (msg.reasoning if part.get("thought") else msg.text).append(text)

    def _add(self, index: int, piece: Piece) -> None:
        """A piece Reader made, appended to its message (made only when the piece says something)."""
        if not (piece.reasoning or piece.text or piece.calls):
            return
        msg = self.messages.get(index)
        if msg is None:
            msg = self.messages[index] = _Message()
        if piece.reasoning:
            msg.reasoning.append(piece.reasoning)
        if piece.text:
            msg.text.append(piece.text)
        msg.calls.extend(piece.calls)

    def message(self, index: int = 0) -> dict[str, Any]:
        """The assistant message for choice `index`, in the shape a chat request takes it back."""
        msg = self.messages.get(index) or _Message()
        out: dict[str, Any] = {"role": "assistant", "content": "".join(msg.text) if msg.text or not msg.calls else None}
        if msg.reasoning:
            out["reasoning_content"] = "".join(msg.reasoning)
        if msg.calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in msg.calls
            ]
        return out

    def result(self, *, model: str, created: int, response_id: str) -> dict[str, Any]:
        reader = self.reader
        self._take_fast_usage()
        indexes = sorted(set(self.messages) | set(reader.finish)) or [0]
        choices = []
        for index in indexes:
            msg = self.messages.get(index)
            choices.append(
                {
                    "index": index,
                    "message": self.message(index),
                    "logprobs": None,
                    "finish_reason": reader.finish_reason(index, bool(msg and msg.calls)),
                }
            )
        return {
            "id": response_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": chat_usage(reader.usage),
        }
