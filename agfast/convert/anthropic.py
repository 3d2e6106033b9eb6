"""Anthropic Messages → v1internal GenerateContentRequest (reference §6.5): pure functions over dicts, no IO.

`plan` runs the §6.5 pre-processing in order — body check, thinking hints, `cache_control` removed,
`role: "system"` entries lifted, consecutive same-role messages merged, thinking blocks filtered by signature,
warmup and background-task detection — and `to_gemini` does the transformation; `outcome` says what the driver
does with it (the warmup answered here, z.ai's turn, countTokens, or Google with the recovery rule). Nothing
here mutates the client's parsed body: changed messages are copies, untouched ones are shared.

Thought signatures decide a lot. A Claude model behind v1internal wants its own signed thinking back first in
the final assistant turn of a tool loop; a Gemini model wants a signature on the first functionCall of every
model turn of the current tool loop. `SignatureCache` (signature → family, tool call id → signature, session →
signature) fills in what clients drop; when nothing fits, Gemini gets the documented skip sentinel and Claude
gets a request without thinking (a tool loop without a signed thinking block would be refused).

The response side (Gemini stream → Anthropic SSE / message) is `agfast.convert.anthropic_stream`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from agfast.convert.anthropic_stream import PING, MessageCollector, StreamConverter, warmup_events, warmup_message
from agfast.convert.checks import InvalidRequest
from agfast.convert.gemini import ANSWER_HEADROOM, IDENTITY, LEVEL_BUDGETS, SAFETY_OFF, request_id_for, session_hash
from agfast.convert.limits import MAX_OUTPUT_TOKENS, MAX_SCHEMA_DEPTH, dotted, too_deep
from agfast.convert.models import ModelSpec, model_spec
from agfast.convert.outcomes import (
    BROKEN,
    GOOGLE,
    JSON,
    SHUTDOWN,
    SSE,
    Answer,
    Collector,
    Converter,
    Count,
    Failure,
    Local,
    Outcome,
    Relay,
    Seat,
    Upstream,
    Wire,
    google_total,
)
from agfast.convert.schema import clean_schema
from agfast.convert.signatures import MIN_SIGNATURE_LEN, SKIP_VALIDATOR, SignatureCache, family_of

# Virtual model for titles/summaries/probes; routed like any name, so custom_mapping can override it.
BACKGROUND_MODEL = "internal-background-task"
# Web search is Gemini's googleSearch tool; requests for other models go here (reference §6.1).
SEARCH_MODEL = "gemini-2.5-flash"
# OpenCode-style hints (reference §6.5 step 2): thinkingLevel → budget.
# `output_config.effort` → Claude's thinkingLevel for adaptive thinking (reference: adaptive → level).
EFFORT_LEVELS = {"low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH", "max": "HIGH"}
DEFAULT_LEVEL = "HIGH"
# Adaptive thinking on a Gemini model gets this fixed budget (reference §6.5).
ADAPTIVE_GEMINI_BUDGET = 24576
# Anthropic refuses smaller thinking budgets, and lower top_p while thinking.
MIN_CLAUDE_BUDGET = 1024
CLAUDE_THINKING_MIN_TOP_P = 0.95
# Stops the reference always adds: chat-template leaks some models produce (not for Opus, which rejects them).
DEFAULT_STOPS = ("<|user|>", "<|end_of_turn|>", "\n\nHuman:")
# Gemini accepts at most this many stop sequences.
MAX_STOPS = 5
# Tool results beyond this are cut (reference: 200,000 characters); a runaway `cat` must not fill the window.
MAX_TOOL_RESULT_CHARS = 200_000
# Warmup probes are short; a longer message that merely starts with the word is a real prompt.
WARMUP_MAX_CHARS = 100
# Background-task prompts are short; long texts that quote the phrases are real work.
BACKGROUND_MAX_CHARS = 800
BACKGROUND_SYSTEM_MAX_CHARS = 2000
BACKGROUND_MARKERS = (
    "write a 5-10 word title",
    "summarize this coding conversation",
    "indicates a new conversation topic",
    "isnewtopic",
    "write the title in the language the user wrote in",  # Claude Code 2.1 session titles
    "sentence-case title",
)
SYSTEM_END = "--- [SYSTEM_PROMPT_END] ---"
# The Agent SDK's identity line is classified differently upstream; the CLI's is not (reference §6.5).
AGENT_SDK_IDENTITY = "You are a Claude agent, built on Anthropic's Claude Agent SDK."
CLAUDE_CODE_IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
WEB_SEARCH_NAMES = frozenset({"web_search", "google_search", "builtin_web_search", "google_search_retrieval"})
EMPTY_OK = "Command executed successfully."
EMPTY_ERROR = "Tool execution failed with no output."
INTERRUPTED = "Tool execution interrupted. No result provided."
RECOVERY_NOTE = (
    "[System Recovery] Earlier reasoning could not be verified by the model provider and is included above as "
    "plain text. Continue the task."
)
# Upstream 400s about thinking signatures: fixable once by resending the history without signed thinking.
SIGNATURE_ERRORS = (
    "invalid `signature`",
    "thinking.signature",
    "thinking.thinking",
    "corrupted thought signature",
    "failed to deserialise",
    "invalid signature",
    "thinking block",
    "found `text`",
    "must be `thinking`",
)
# Upstream 400s that mean the prompt is over the context window (reference §6.6).
TOO_LONG_MARKERS = ("too long", "exceeds", "limit")
IMAGE_TOKENS = 258  # Gemini's charge per image, for the local estimate
MIME_BY_SUFFIX = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".pdf": "application/pdf"}


class Problem(NamedTuple):
    """A request-body error: the JSON path of the field and an Anthropic-style message."""

    field: str
    message: str


class ConversionError(InvalidRequest):
    """A body that cannot be served (a 400 naming `field`), e.g. one that leaves nothing to send."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, param=field)
        self.field = field


# ---------------------------------------------------------------------------------------------------------
# Body check (step 1)

_BLOCK_REQUIRED: dict[str, tuple[tuple[str, type], ...]] = {
    "text": (("text", str),),
    "image": (("source", dict),),
    "document": (("source", dict),),
    "tool_use": (("id", str), ("name", str)),
    "tool_result": (("tool_use_id", str),),
}
# Anthropic's documented sampling ranges: (field, low, high, integer only).
SAMPLING_RANGES = (("temperature", 0, 1, False), ("top_p", 0, 1, False), ("top_k", 0, 1 << 31, True))
_KIND = {str: "a string", list: "an array", dict: "an object", int: "an integer", bool: "a boolean"}


def _wrong(path: str, value: Any, kind: type) -> Problem | None:
    if value is None:
        return Problem(path, f"{path}: Field required")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        return Problem(path, f"{path}: Input should be {_KIND[kind]}")
    return None


def check_body(body: dict[str, Any], *, need_max_tokens: bool = True) -> Problem | None:
    """The first thing wrong with a Messages body, naming the field like Anthropic does; None when usable."""
    for name, kind in (("model", str), ("messages", list), *((("max_tokens", int),) if need_max_tokens else ())):
        value = body.get(name)
        # The top-level fields are worded like every surface's (agfast's own, not Anthropic's pydantic text).
        if value is None:
            return Problem(name, f"Missing required field '{name}'.")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return Problem(name, f"Field '{name}' must be {_KIND[kind]}.")
    if need_max_tokens and body["max_tokens"] < 1:
        return Problem("max_tokens", "max_tokens: Input should be greater than or equal to 1")
    if need_max_tokens and body["max_tokens"] > MAX_OUTPUT_TOKENS:
        return Problem("max_tokens", f"max_tokens: Input should be less than or equal to {MAX_OUTPUT_TOKENS}")
    for name, low, high, integer in SAMPLING_RANGES:
        problem = _number(name, body.get(name), low, high, integer)
        if problem is not None:
            return problem
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list):
            return Problem("stop_sequences", "stop_sequences: Input should be an array of strings")
        for j, stop in enumerate(stops):
            problem = _wrong(f"stop_sequences.{j}", stop, str)
            if problem is not None:
                return problem
    messages = body["messages"]
    if not messages:
        return Problem("messages", "messages: at least one message is required")
    for i, msg in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(msg, dict):
            return Problem(path, f"{path}: Input should be an object")
        if msg.get("role") not in ("user", "assistant", "system"):
            return Problem(f"{path}.role", f"{path}.role: Input should be 'user', 'assistant' or 'system'")
        content = msg.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return Problem(f"{path}.content", f"{path}.content: Input should be a string or an array of blocks")
        for j, block in enumerate(content):
            problem = _check_block(block, f"{path}.content.{j}")
            if problem is not None:
                return problem
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            return Problem("system", "system: Input should be a string or an array of text blocks")
        for j, block in enumerate(system):
            problem = _check_block(block, f"system.{j}")
            if problem is not None:
                return problem
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return Problem("tools", "tools: Input should be an array")
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict):
                return Problem(f"tools.{j}", f"tools.{j}: Input should be an object")
            problem = _wrong(f"tools.{j}.name", tool.get("name"), str) or _check_schema(tool, f"tools.{j}")
            if problem is not None:
                return problem
    for name, kind in (("thinking", dict), ("stream", bool), ("metadata", dict), ("tool_choice", dict)):
        if body.get(name) is not None:
            problem = _wrong(name, body[name], kind)
            if problem is not None:
                return problem
    return None


def _number(path: str, value: Any, low: float, high: float, integer: bool) -> Problem | None:
    if value is None:
        return None
    if not isinstance(value, int if integer else int | float) or isinstance(value, bool):
        return Problem(path, f"{path}: Input should be a valid {'integer' if integer else 'number'}")
    if not low <= value <= high:
        return Problem(path, f"{path}: Input should be between {low} and {high}")
    return None


def _check_schema(tool: dict[str, Any], path: str) -> Problem | None:
    """A tool's `input_schema`, when given, is an object of sane depth."""
    schema = tool.get("input_schema")
    if schema is None:
        return None  # hosted tools (bash_…, text_editor_…, web_search_…) bring none; others get an empty one
    where = f"{path}.input_schema"
    if not isinstance(schema, dict):
        return Problem(where, f"{where}: Input should be an object")
    deep = too_deep(schema, MAX_SCHEMA_DEPTH)
    if deep is not None:
        inner = dotted(deep, brackets=False)
        where = f"{where}.{inner}" if inner else where
        return Problem(where, f"{where}: Input should be nested at most {MAX_SCHEMA_DEPTH} levels deep")
    return None


def _check_block(block: Any, path: str) -> Problem | None:
    if not isinstance(block, dict):
        return Problem(path, f"{path}: Input should be an object")
    kind = block.get("type")
    if not isinstance(kind, str):
        return Problem(f"{path}.type", f"{path}.type: Field required")
    for name, expected in _BLOCK_REQUIRED.get(kind, ()):
        problem = _wrong(f"{path}.{name}", block.get(name), expected)
        if problem is not None:
            return problem
    return None


# ---------------------------------------------------------------------------------------------------------
# Thinking hints (step 2)


@dataclass(slots=True, frozen=True)
class Thinking:
    """What the client asked for: mode "enabled" / "adaptive" / "disabled" / "" (nothing said)."""

    mode: str = ""
    budget: int | None = None
    effort: str | None = None
    omit: bool = False

    @property
    def wanted(self) -> bool:
        return self.mode in ("enabled", "adaptive")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def thinking_request(body: dict[str, Any]) -> Thinking:
    """`thinking` plus the hints other clients send (budgetTokens, thinkingConfig, thinkingLevel, effort)."""
    raw = body.get("thinking")
    thinking = raw if isinstance(raw, dict) else {}
    budget = None
    for key in ("budget_tokens", "budgetTokens", "budget"):
        budget = _int(thinking.get(key))
        if budget is not None:
            break
    config = body.get("thinkingConfig")
    if budget is None and isinstance(config, dict):
        budget = _int(config.get("thinkingBudget"))
    level = thinking.get("thinkingLevel", body.get("thinkingLevel"))
    if budget is None and isinstance(level, str):
        budget = LEVEL_BUDGETS.get(level.lower())
    output = body.get("output_config")
    effort = output.get("effort") if isinstance(output, dict) else None
    kind = thinking.get("type")
    mode = str(kind) if kind in ("enabled", "adaptive", "disabled") else ("enabled" if budget else "")
    if budget == 0:
        mode = "disabled"
    return Thinking(mode, budget, effort if isinstance(effort, str) else None, thinking.get("display") == "omitted")


# ---------------------------------------------------------------------------------------------------------
# Clean-up (steps 5–7)


def strip_cache_control(value: Any) -> Any:
    """A copy without any `cache_control` key, at any depth (Gemini rejects unknown fields)."""
    if isinstance(value, dict):
        return {k: strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_cache_control(v) for v in value]
    return value


def blocks_of(content: Any) -> list[dict[str, Any]]:
    """A message's content as a block list (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b["text"] for b in blocks_of(content) if b.get("type") == "text" and isinstance(b.get("text"), str)]


def lift_system(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """`role: "system"` entries inside `messages` (Claude Code sends them) become system text."""
    if not any(m.get("role") == "system" for m in messages):
        return messages, []
    kept: list[dict[str, Any]] = []
    lifted: list[str] = []
    for msg in messages:
        if msg.get("role") == "system":
            lifted.extend(t for t in _texts(msg.get("content")) if t.strip())
        else:
            kept.append(msg)
    return kept, lifted


def merge_consecutive(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent messages of one role become one (strings joined by a blank line, else blocks concatenated)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        prev = out[-1] if out else None
        if prev is None or prev.get("role") != msg.get("role"):
            out.append(msg)
            continue
        a, b = prev.get("content"), msg.get("content")
        merged: Any = f"{a}\n\n{b}" if isinstance(a, str) and isinstance(b, str) else [*blocks_of(a), *blocks_of(b)]
        out[-1] = {**prev, "content": merged}
    return out


def filter_thinking(messages: list[dict[str, Any]], model: str, signatures: SignatureCache) -> list[dict[str, Any]]:
    """Drop thinking blocks whose signature is a placeholder (< 50 chars) or belongs to the other model family.

    Unsigned blocks pass (the transformation turns them into text); so do signatures of unknown origin, which
    upstream judges (and the signature-error recovery handles).
    """
    target = family_of(model)
    out = messages
    for i, msg in enumerate(messages):
        content = msg.get("content")
        if msg.get("role") != "assistant" or not isinstance(content, list):
            continue
        kept = [b for b in content if not _unusable_thinking(b, target, signatures)]
        if len(kept) != len(content):
            if out is messages:
                out = list(messages)
            out[i] = {**msg, "content": kept}
    return out


def _unusable_thinking(block: Any, target: str, signatures: SignatureCache) -> bool:
    if not isinstance(block, dict) or block.get("type") != "thinking":
        return False
    sig = block.get("signature")
    if not sig or not isinstance(sig, str):
        return False
    if len(sig) < MIN_SIGNATURE_LEN:
        return True
    known = signatures.family(sig)
    return known is not None and known != target


def purge_thinking(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages without thinking / redacted_thinking blocks (background tasks run without thinking)."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list) and any(_is_thinking(b) for b in content):
            msg = {**msg, "content": [b for b in content if not _is_thinking(b)]}
        out.append(msg)
    return out


def _is_thinking(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking")


# ---------------------------------------------------------------------------------------------------------
# Warmup and background tasks (steps 10–11)


def is_warmup(messages: list[dict[str, Any]]) -> bool:
    """Claude Code's warmup probe: the last message is (or ends in) the word "Warmup"."""
    if not messages or messages[-1].get("role") != "user":
        return False
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content.startswith("Warmup") and len(content) < WARMUP_MAX_CHARS
    for block in blocks_of(content):
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str) and (text == "Warmup" or text.startswith("Warmup\n")):
                return True
        elif kind == "tool_result" and block.get("is_error"):
            texts = _texts(block.get("content"))
            if texts and texts[0].startswith("Warmup"):
                return True
    return False


def is_background_task(messages: list[dict[str, Any]], system_texts: list[str]) -> bool:
    """Title/summary/topic requests: short prompts with the phrases Claude Code uses for them."""
    candidates = []
    if messages and messages[-1].get("role") == "user":
        text = "\n".join(_texts(messages[-1].get("content")))
        if len(text) <= BACKGROUND_MAX_CHARS:
            candidates.append(text)
    system = "\n".join(system_texts)
    if system and len(system) <= BACKGROUND_SYSTEM_MAX_CHARS:
        candidates.append(system)
    return any(marker in text.lower() for text in candidates for marker in BACKGROUND_MARKERS)


def system_texts(system: Any) -> list[str]:
    """The top-level `system` (string or text blocks) as a list of texts."""
    if isinstance(system, str):
        return [system] if system.strip() else []
    return [t for t in _texts(system) if t.strip()]


# ---------------------------------------------------------------------------------------------------------
# Session key (reference §4.8, with Claude Code's own session id first)


def session_key(body: dict[str, Any], header: str | None) -> str:
    """Stickiness key: X-Claude-Code-Session-Id, then metadata.user_id (its session_id when it is JSON),
    then a hash of the first real user text, else of the last message."""
    if header:
        return header
    meta = body.get("metadata")
    user_id = meta.get("user_id") if isinstance(meta, dict) else None
    if isinstance(user_id, str) and user_id:
        if user_id.startswith("{"):
            try:
                doc = orjson.loads(user_id)
            except orjson.JSONDecodeError:
                doc = None
            found = doc.get("session_id") if isinstance(doc, dict) else None
            if isinstance(found, str) and found:
                return found
        elif "session-" not in user_id:
            return user_id
    messages = body.get("messages") or []
    for msg in messages:
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        for text in _texts(msg.get("content")):
            stripped = text.strip()
            if len(stripped) >= 3 and "<system-reminder>" not in stripped and "[System" not in stripped:
                return session_hash(stripped)
    last = messages[-1] if messages else {}
    return "sid-" + hashlib.sha256(orjson.dumps(last)).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# Transformation


@dataclass(slots=True)
class Conversion:
    """The GenerateContentRequest (sessionId filled in per account) and what was decided on the way."""

    request: dict[str, Any]
    thinking: bool
    tools: bool


def is_signature_error(body: bytes | str) -> bool:
    text = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).lower()
    return any(marker in text for marker in SIGNATURE_ERRORS)


def is_too_long(message: str) -> bool:
    lower = message.lower()
    return any(marker in lower for marker in TOO_LONG_MARKERS)


def thinking_on(thinking: Thinking, model: str, spec: ModelSpec | None = None) -> bool:
    """Whether this request shows thinking: asked for, and the model can; unasked, only `-thinking` models do
    (Gemini still thinks by default, but a client that did not ask gets no thinking blocks)."""
    if not (spec or model_spec(model)).can_think:
        return False
    if not thinking.mode:
        return "thinking" in model.lower()
    return thinking.wanted


def to_gemini(
    body: dict[str, Any],
    messages: list[dict[str, Any]],
    lifted: list[str],
    *,
    model: str,
    thinking: Thinking,
    signatures: SignatureCache,
    session: str,
    tools: bool = True,
    thinking_as_text: bool = False,
    spec: ModelSpec | None = None,
) -> Conversion:
    """The v1internal request for `model`; `thinking_as_text` is the signature-error recovery form; `spec` is
    what `model` can do (Google's description), the static table when not given."""
    claude = family_of(model) == "claude"
    spec = spec or model_spec(model)
    think = thinking_on(thinking, model, spec) and not thinking_as_text
    declarations, search = _tools(body.get("tools")) if tools else ([], False)
    if think and claude and _forced_tool(body.get("tool_choice")):
        think = False  # Claude refuses thinking together with a forced tool choice
    if think and claude and _open_loop_without_thinking(messages, model, signatures):
        # A Claude tool loop must restart from a signed thinking block; without one, this turn goes without
        # thinking (the loop continues normally) instead of being refused upstream.
        think = False
    contents = _contents(messages, model, claude, think, thinking_as_text, signatures, session)
    if thinking_as_text and contents and contents[-1]["role"] == "user":
        contents[-1]["parts"].append({"text": RECOVERY_NOTE})
    if not contents:
        raise ConversionError("messages", "messages: no content left to send (all messages are empty)")
    request: dict[str, Any] = {"systemInstruction": _system(body.get("system"), lifted)}
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
        request["toolConfig"] = {"functionCallingConfig": _calling_config(body.get("tool_choice"))}
    elif search:
        request["tools"] = [{"googleSearch": {}}]
    request["generationConfig"] = _generation_config(body, model, thinking, think, spec)
    request["safetySettings"] = SAFETY_OFF
    request["sessionId"] = ""
    request["contents"] = contents
    return Conversion(request, think, bool(declarations))


def count_request(conversion: Conversion, model: str) -> dict[str, Any]:
    """`countTokens` takes the countable fields of the same request, so its number matches the usage."""
    req = conversion.request
    out: dict[str, Any] = {"model": model, "contents": req["contents"], "systemInstruction": req["systemInstruction"]}
    if "tools" in req:
        out["tools"] = req["tools"]
    return out


def estimate_tokens(request: dict[str, Any]) -> int:
    """A local count for when countTokens fails: ~4 characters a token, Gemini's flat charge per image."""
    chars = 0
    media = 0
    for content in (request.get("systemInstruction"), *request.get("contents", ())):
        for part in (content or {}).get("parts", ()):
            if "inlineData" in part or "fileData" in part:
                media += 1
            elif isinstance(part.get("text"), str):
                chars += len(part["text"])
            else:
                chars += len(orjson.dumps(part))
    if request.get("tools"):
        chars += len(orjson.dumps(request["tools"]))
    return max(1, -(-chars // 4) + media * IMAGE_TOKENS)


def _system(system: Any, lifted: list[str]) -> dict[str, Any]:
    texts = [*system_texts(system), *lifted]
    parts: list[dict[str, Any]] = []
    if not any("You are Antigravity" in t for t in texts):
        parts.append({"text": IDENTITY})
    for text in texts:
        if AGENT_SDK_IDENTITY in text:
            text = text.replace(AGENT_SDK_IDENTITY, CLAUDE_CODE_IDENTITY)
        parts.append({"text": text})
    parts.append({"text": SYSTEM_END})
    return {"role": "user", "parts": parts}


def _tools(tools: Any) -> tuple[list[dict[str, Any]], bool]:
    if not isinstance(tools, list):
        return [], False
    declarations: list[dict[str, Any]] = []
    seen: set[str] = set()
    search = False
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        name = tool.get("name")
        kind = tool.get("type")
        if name in WEB_SEARCH_NAMES or (isinstance(kind, str) and kind.startswith("web_search")):
            search = True
            continue
        if not isinstance(name, str) or name in seen or (isinstance(kind, str) and kind not in ("custom", "function")):
            # Anthropic-hosted tool types (bash_2025…, text_editor_…) have no schema to declare.
            continue
        seen.add(name)
        decl: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str) and tool["description"]:
            decl["description"] = tool["description"]
        schema = tool.get("input_schema")
        decl["parameters"] = (
            clean_schema(schema, root_object=True) if isinstance(schema, dict) else {"type": "object", "properties": {}}
        )
        declarations.append(decl)
    return declarations, search


def web_search_only(tools: Any) -> bool:
    """The request offers web search and no function tools: only Gemini can serve it (googleSearch)."""
    declarations, search = _tools(tools)
    return search and not declarations


def _forced_tool(choice: Any) -> bool:
    return isinstance(choice, dict) and choice.get("type") in ("any", "tool")


def _calling_config(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "any":
        return {"mode": "ANY"}
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"mode": "ANY", "allowedFunctionNames": [choice["name"]]}
    if kind == "none":
        return {"mode": "NONE"}
    return {"mode": "VALIDATED"}


def _generation_config(
    body: dict[str, Any], model: str, thinking: Thinking, think: bool, spec: ModelSpec
) -> dict[str, Any]:
    claude = family_of(model) == "claude"
    gen: dict[str, Any] = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK")):
        value = body.get(src)
        if isinstance(value, int | float) and not isinstance(value, bool):
            gen[dst] = value
    if claude and think:
        # Claude thinks only at its own sampling settings (temperature 1, no top_k, top_p ≥ 0.95); thinking
        # may be on by default here, so the client's settings give way rather than fail the request.
        gen.pop("temperature", None)
        gen.pop("topK", None)
        if gen.get("topP", 1.0) < CLAUDE_THINKING_MIN_TOP_P:
            del gen["topP"]
    if not claude:
        # Gemini defaults the reference sends; Claude gets only what the client chose (its thinking mode
        # refuses top_k changes).
        gen.setdefault("topP", 1.0)
        gen.setdefault("topK", 40)
        schema = _output_schema(body.get("output_config"))
        if schema is not None:
            # Structured output (Claude Code asks for its session titles this way).
            gen["responseMimeType"] = "application/json"
            gen["responseSchema"] = clean_schema(schema)
    max_out = min(_int(body.get("max_tokens")) or spec.max_output_tokens, spec.max_output_tokens)
    if think:
        config: dict[str, Any] = {"includeThoughts": True}
        if claude and thinking.mode == "adaptive" and thinking.budget is None:
            config["thinkingLevel"] = EFFORT_LEVELS.get((thinking.effort or "").lower(), DEFAULT_LEVEL)
        else:
            if thinking.mode == "adaptive" and not claude:
                budget = ADAPTIVE_GEMINI_BUDGET
            else:
                budget = thinking.budget or spec.thinking_budget
            if not claude and spec.thinking_budget:
                budget = min(budget, spec.thinking_budget)
            if claude:
                budget = max(budget, MIN_CLAUDE_BUDGET)
            if max_out <= budget:
                max_out = min(budget + ANSWER_HEADROOM, spec.max_output_tokens)
            if budget >= max_out:
                budget = max(max_out - ANSWER_HEADROOM, MIN_CLAUDE_BUDGET if claude else 0)
            config["thinkingBudget"] = budget
        gen["thinkingConfig"] = config
    gen["maxOutputTokens"] = max_out
    stops = [s for s in body.get("stop_sequences") or () if isinstance(s, str) and s]
    if "opus" not in model:
        stops.extend(s for s in DEFAULT_STOPS if s not in stops)
    if stops:
        gen["stopSequences"] = stops[:MAX_STOPS]
    return gen


def _output_schema(config: Any) -> dict[str, Any] | None:
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    return None


def _usable_signature(sig: Any, model: str, signatures: SignatureCache) -> str | None:
    return sig if isinstance(sig, str) and signatures.usable_for(sig, model) else None


def _open_loop_without_thinking(messages: list[dict[str, Any]], model: str, signatures: SignatureCache) -> bool:
    """The conversation is inside a tool loop whose assistant turn has no signed thinking block."""
    if len(messages) < 2 or messages[-1].get("role") != "user":
        return False
    if not any(b.get("type") == "tool_result" for b in blocks_of(messages[-1].get("content"))):
        return False
    prev = messages[-2]
    if prev.get("role") != "assistant":
        return False
    for block in blocks_of(prev.get("content")):
        if block.get("type") == "thinking" and _usable_signature(block.get("signature"), model, signatures):
            return False
    return True


_ORDER = {"thinking": 0, "redacted_thinking": 0, "text": 1, "tool_use": 3}


def _sorted_assistant(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Thinking first, then text, other blocks, tool calls last (the order Claude's validator expects)."""
    return sorted(blocks, key=lambda b: _ORDER.get(b.get("type", ""), 2))


def _contents(
    messages: list[dict[str, Any]],
    model: str,
    claude: bool,
    think: bool,
    thinking_as_text: bool,
    signatures: SignatureCache,
    session: str,
) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    for msg in messages:
        if msg.get("role") == "assistant":
            for block in blocks_of(msg.get("content")):
                if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                    names[block["id"]] = str(block.get("name") or "")
    contents: list[dict[str, Any]] = []
    pending: list[str] = []  # tool_use ids of the previous assistant turn still waiting for a result
    for msg in messages:
        blocks = blocks_of(msg.get("content"))
        if msg.get("role") == "assistant":
            if pending:
                contents.append({"role": "user", "parts": [_interrupted(i, names) for i in pending]})
            parts, pending = _model_parts(
                _sorted_assistant(blocks), model, claude, think, thinking_as_text, signatures, session
            )
            role = "model"
        else:
            parts = _user_parts(blocks, names, pending)
            pending = []
            role = "user"
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if pending:
        contents.append({"role": "user", "parts": [_interrupted(i, names) for i in pending]})
    return contents


def _response(call_id: str, names: dict[str, str], result: str) -> dict[str, Any]:
    return {"functionResponse": {"name": names.get(call_id) or "tool", "response": {"result": result}, "id": call_id}}


def _interrupted(call_id: str, names: dict[str, str]) -> dict[str, Any]:
    return _response(call_id, names, INTERRUPTED)


def _model_parts(
    blocks: list[dict[str, Any]],
    model: str,
    claude: bool,
    think: bool,
    thinking_as_text: bool,
    signatures: SignatureCache,
    session: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    parts: list[dict[str, Any]] = []
    calls: list[str] = []
    message_sig: str | None = None
    first_call = True
    for block in blocks:
        kind = block.get("type")
        if kind == "thinking":
            raw = block.get("thinking")
            text = raw if isinstance(raw, str) else ""
            sig = _usable_signature(block.get("signature"), model, signatures)
            if sig is not None:
                message_sig = sig
            if claude and think and sig is not None and all(p.get("thought") for p in parts):
                parts.append({"text": text, "thought": True, "thoughtSignature": sig})
            elif claude and (thinking_as_text or sig is None) and text.strip():
                # Unverifiable reasoning stays readable as plain text (reference §6.5); Gemini, which
                # cannot use Claude's thinking and keeps its own reasoning internal, gets none of it.
                parts.append({"text": text})
        elif kind == "redacted_thinking":
            continue
        elif kind == "text":
            said = block.get("text")
            if isinstance(said, str) and said.strip() and said != "(no content)":
                parts.append({"text": said})
        elif kind == "tool_use":
            call_id = block.get("id")
            call: dict[str, Any] = {"name": block.get("name"), "args": block.get("input") or {}}
            if isinstance(call_id, str) and call_id:
                call["id"] = call_id
                calls.append(call_id)
            part: dict[str, Any] = {"functionCall": call}
            if first_call:
                sig = _call_signature(call_id, message_sig, model, claude, think, thinking_as_text, signatures, session)
                if sig:
                    part["thoughtSignature"] = sig
                first_call = False
            parts.append(part)
        elif kind in ("image", "document"):
            media = _media_part(block)
            if media is not None:
                parts.append(media)
    return parts, calls


def _call_signature(
    call_id: Any,
    message_sig: str | None,
    model: str,
    claude: bool,
    think: bool,
    thinking_as_text: bool,
    signatures: SignatureCache,
    session: str,
) -> str | None:
    if claude:
        # Claude reads its signature from the thinking part; the call carries it too, as the reference does.
        return message_sig if think else None
    if thinking_as_text:
        return SKIP_VALIDATOR
    found = signatures.for_tool_call(call_id) if isinstance(call_id, str) else None
    for sig in (found, message_sig, signatures.for_session(session)):
        if sig is not None and signatures.usable_for(sig, model):
            return sig
    return SKIP_VALIDATOR


def _user_parts(blocks: list[dict[str, Any]], names: dict[str, str], pending: list[str]) -> list[dict[str, Any]]:
    responses: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    answered: set[str] = set()
    for block in blocks:
        kind = block.get("type")
        if kind == "tool_result":
            call_id = block.get("tool_use_id")
            text, images = _tool_result(block)
            if call_id in pending and call_id not in answered:
                answered.add(call_id)
                responses.append(_response(call_id, names, text))
                extra.extend(images)
            else:
                # A result whose call is not in the turn just before (history was cut): keep it as text.
                others.append({"text": f"[Tool result {call_id}]\n{text}"})
                others.extend(images)
        elif kind == "text":
            said = block.get("text")
            if isinstance(said, str) and said.strip():
                others.append({"text": said})
        elif kind in ("image", "document"):
            media = _media_part(block)
            if media is not None:
                others.append(media)
    missing = [_interrupted(i, names) for i in pending if i not in answered]
    return [*responses, *missing, *extra, *others]


def _tool_result(block: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        text = content
    else:
        texts = []
        for item in blocks_of(content):
            if item.get("type") == "text" and isinstance(item.get("text"), str):
                texts.append(item["text"])
            elif item.get("type") in ("image", "document"):
                media = _media_part(item)
                if media is not None:
                    images.append(media)
        text = "\n".join(texts)
    if len(text) > MAX_TOOL_RESULT_CHARS:
        text = text[:MAX_TOOL_RESULT_CHARS] + f"\n...[truncated {len(text) - MAX_TOOL_RESULT_CHARS} characters]"
    if not text.strip():
        text = EMPTY_ERROR if block.get("is_error") else EMPTY_OK
    return text, images


def _media_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        mime = source.get("media_type") or ("application/pdf" if block.get("type") == "document" else "image/png")
        return {"inlineData": {"mimeType": mime, "data": source["data"]}}
    if kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
        suffix = url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
        mime = MIME_BY_SUFFIX.get("." + suffix, "image/jpeg")
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    if kind == "text" and isinstance(source.get("data"), str):
        return {"text": source["data"]} if source["data"].strip() else None
    if kind == "content":
        texts = _texts(source.get("content"))
        joined = "\n".join(texts)
        return {"text": joined} if joined.strip() else None
    return None


# ---------------------------------------------------------------------------------------------------------
# The plan: §6.5's pre-processing in order, pure (the driver sends it)

SESSION_HEADER = b"x-claude-code-session-id"
WARMUP_HEADERS = b"x-warmup-intercepted: true\r\n"
# A silent upstream (long thinking) gets a ping this often, well inside common 30–60 s proxy idle limits.
PING_EVERY = 15.0
# z.ai dispatch modes (api.zai): never, always, a pooled turn, when no Google account can take the request.
ZAI_OFF, ZAI_EXCLUSIVE, ZAI_FALLBACK = "off", "exclusive", "fallback"
MESSAGES_PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"
STREAM_ERROR_TYPES = {
    400: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _zai_off() -> str:
    return ZAI_OFF


def _no_turn() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Context:
    """What planning may ask of the running gateway: plain callables and values, no services."""

    lookup: Callable[[str], str | None]  # a client model name → the upstream model, None when nothing knows it
    available: Callable[[], Collection[str]]  # the upstream models the pool can call now
    spec: Callable[[str], ModelSpec]  # what an upstream model can do
    signatures: SignatureCache
    wire: Wire
    unknown: Callable[[str], Exception]  # the 404 for a name nothing knows
    zai_mode: Callable[[], str] = _zai_off  # z.ai's dispatch mode now (ZAI_OFF when disabled)
    zai_turn: Callable[[], bool] = _no_turn  # whether z.ai serves this request before Google is tried


class Plan:
    """One Messages request after pre-processing: where it goes, what to send, how to recover and convert."""

    __slots__ = (
        "background",
        "body",
        "ctx",
        "lifted",
        "mapped",
        "messages",
        "model",
        "request",
        "request_id",
        "sent",
        "session",
        "stream",
        "thinking",
        "tools",
        "warmup",
    )

    def __init__(self, body: dict[str, Any], ctx: Context) -> None:
        self.body = body
        self.ctx = ctx
        self.model: str = body["model"]
        self.stream = body.get("stream") is True
        self.thinking = thinking_request(body)
        self.messages: list[dict[str, Any]] = []  # the conversation as the client meant it (z.ai gets this)
        self.sent: list[dict[str, Any]] = []  # the conversation sent to Google
        self.lifted: list[str] = []
        self.mapped = ""  # "" when no account or table knows the client's name
        self.session = ""
        self.warmup = False
        self.background = False
        self.tools = True
        self.request: dict[str, Any] | None = None
        self.request_id = request_id_for(None, 0)

    def conversion(self, *, thinking_as_text: bool = False) -> Conversion:
        """The GenerateContentRequest (ConversionError when nothing is left to send); `thinking_as_text` is the
        signature-error recovery form."""
        ctx = self.ctx
        conversion = to_gemini(
            self.body,
            self.sent,
            self.lifted,
            model=self.mapped,
            thinking=self.thinking,
            spec=ctx.spec(self.mapped),
            signatures=ctx.signatures,
            session=self.session,
            tools=self.tools,
            thinking_as_text=thinking_as_text,
        )
        self.request = conversion.request
        return conversion

    def recover(self, status: int, raw: bytes) -> bool:
        """§6.6: a 400 about thinking signatures is fixed by resending the history without signed thinking
        (the gateway asks once; the reference's "only once" flag was never set, so it looped)."""
        if status != 400 or not is_signature_error(raw):
            return False
        self.conversion(thinking_as_text=True)
        return True

    def converter(self) -> StreamConverter:
        ctx = self.ctx
        return StreamConverter(self.model, self.mapped, ctx.signatures, self.session, omit_thinking=self.thinking.omit)

    def collector(self) -> MessageCollector:
        ctx = self.ctx
        return MessageCollector(self.model, self.mapped, ctx.signatures, self.session, omit_thinking=self.thinking.omit)

    def build(self, seat: Seat) -> bytes:
        """The v1internal body for one attempt's account (after a recovery, the recovered request)."""
        request, wire = self.request, self.ctx.wire
        assert request is not None
        request["sessionId"] = wire.account_session(seat.account_id)
        return wire.envelope(request, model=self.mapped, project=seat.project_id, request_id=self.request_id)

    def answer(self) -> Answer:
        """Anthropic SSE while streaming (pings every PING_EVERY), else the collected message."""
        return Answer(self._stream, self._collect, _collect_failed, PING_EVERY, PING)

    def _stream(self) -> Converter:
        conv = self.converter()
        return Converter(_no_head, conv.feed, conv.finish, lambda m, k: conv.error(*_stream_failure(m, k)))

    def _collect(self) -> Collector:
        made = self.collector()
        return Collector(made.add, lambda: orjson.dumps(made.result()))

    def warmup_answer(self) -> Local:
        """Claude Code's warmup probe, answered here in the shape it asked for (no account spent on it)."""
        if self.stream:
            return Local(200, warmup_events(self.model), SSE, self.mapped, WARMUP_HEADERS, stream=True)
        return Local(200, orjson.dumps(warmup_message(self.model)), JSON, self.mapped, WARMUP_HEADERS)

    def zai_body(self) -> dict[str, Any]:
        """The client's body for z.ai (it speaks Messages itself): system lifted back, our own fields out."""
        body = {k: v for k, v in self.body.items() if k != "output_config"}
        body["messages"] = self.messages
        if self.lifted:
            system = self.body.get("system")
            blocks: list[Any] = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or ())
            blocks.extend({"type": "text", "text": text} for text in self.lifted)
            body["system"] = blocks
        return body


def plan(
    body: dict[str, Any], headers: Mapping[bytes, bytes], ctx: Context, *, count: bool = False, cached: bool = True
) -> Plan:
    """§6.5 steps in order: body check, thinking hints, system lifting, merging, routing, thinking filter,
    session, warmup, background routing. `count` plans /v1/messages/count_tokens (no max_tokens needed);
    `cached` False says the body holds no `cache_control` (the caller sniffed the raw bytes: no copy then).
    A body that cannot be served raises ConversionError (a 400 naming the field)."""
    problem = check_body(body, need_max_tokens=not count)
    if problem is not None:
        raise ConversionError(problem.field, problem.message)
    if cached:
        body = strip_cache_control(body)
    out = Plan(body, ctx)
    messages, out.lifted = lift_system(body["messages"])
    messages = merge_consecutive(messages)
    out.mapped = _route(body, out.thinking, ctx)
    if out.mapped:
        messages = filter_thinking(messages, out.mapped, ctx.signatures)
    out.messages = out.sent = messages
    header = headers.get(SESSION_HEADER)
    out.session = session_key(body, header.decode("latin-1") if header else None)
    out.request_id = request_id_for(out.session, len(body["messages"]))
    out.warmup = is_warmup(messages)
    if out.mapped and is_background_task(messages, [*system_texts(body.get("system")), *out.lifted]):
        out.background = True
        out.mapped = ctx.lookup(BACKGROUND_MODEL) or out.mapped
        out.sent = purge_thinking(messages)
        out.thinking = Thinking("disabled")
        out.tools = False
    return out


def outcome(
    body: dict[str, Any], headers: Mapping[bytes, bytes], ctx: Context, *, count: bool = False, cached: bool = True
) -> Outcome:
    """/v1/messages (`count`: /v1/messages/count_tokens) as the driver runs it: the warmup probe answered here;
    z.ai when it takes this turn or alone may know the model; else Google (z.ai the fallback in that mode)."""
    planned = plan(body, headers, ctx, count=count, cached=cached)
    mode = ctx.zai_mode()
    if count:
        if mode == ZAI_EXCLUSIVE:
            return Relay(COUNT_PATH, planned.zai_body())
    elif planned.warmup:
        return planned.warmup_answer()
    elif ctx.zai_turn():
        return Relay(MESSAGES_PATH, planned.zai_body(), planned.stream)
    path = COUNT_PATH if count else MESSAGES_PATH
    if not planned.mapped:  # a name Google's side does not know: z.ai (when configured) may serve it
        if mode == ZAI_OFF:
            raise ctx.unknown(planned.model)
        return Relay(path, planned.zai_body(), planned.stream and not count)
    conversion = planned.conversion()
    if count:
        payload = orjson.dumps({"request": count_request(conversion, planned.mapped)})
        return Count(GOOGLE, planned.mapped, planned.session, payload, _count_answer, lambda: _estimate(conversion))
    fallback = Relay(path, planned.zai_body(), planned.stream) if mode == ZAI_FALLBACK else None
    return Upstream(
        GOOGLE,
        planned.mapped,
        planned.session,
        planned.build,
        planned.answer(),
        planned.stream,
        recover=planned.recover,
        fallback=fallback,
    )


def _count_answer(doc: Any) -> bytes | None:
    total = google_total(doc)
    return orjson.dumps({"input_tokens": total}) if isinstance(total, int) and total > 0 else None


def _estimate(conversion: Conversion) -> bytes:
    return orjson.dumps({"input_tokens": estimate_tokens(conversion.request)})


def upstream_text(message: str) -> str:
    """Claude models behind v1internal put Anthropic's own error JSON in Google's message: unwrap it."""
    if message.startswith("{"):
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError:
            return message
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    return message


def _no_head() -> bytes:
    return b""


def _stream_failure(message: str, kind: int) -> tuple[str, str]:
    """Why a stream stopped early, as the in-stream error's (message, type)."""
    if kind == BROKEN:
        return message, "api_error"
    if kind == SHUTDOWN:
        return message, "overloaded_error"
    return _stream_error(kind, message)


def _collect_failed(status: int, message: str) -> Failure:
    text, error_type = _stream_error(status, message)
    return 502, text, error_type


def _stream_error(code: int, message: str) -> tuple[str, str]:
    return upstream_text(message), STREAM_ERROR_TYPES.get(code, "api_error")


def _route(body: dict[str, Any], thinking: Thinking, ctx: Context) -> str:
    """The upstream model, or "" when no account or table knows the client's name."""
    mapped = ctx.lookup(body["model"])
    if mapped is None:
        return ""
    if not mapped.startswith("gemini") and web_search_only(body.get("tools")):
        return ctx.lookup(SEARCH_MODEL) or mapped
    if thinking.wanted and "claude" in mapped and "thinking" not in mapped:
        # A Claude model asked to think goes to its thinking variant when the pool has one.
        variant = mapped + "-thinking"
        if variant in ctx.available():
            return variant
    return mapped
