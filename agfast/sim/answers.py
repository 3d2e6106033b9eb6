"""Deterministic answers: what the simulated model "says" for a request, its token usage and stream chunks."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from .accounts import ModelSpec
from .pictures import image_b64
from .signatures import SignatureBook
from .validate import field as pfield
from .validate import thinking_config, thinking_enabled

__all__ = [
    "STALE_CLIENT_TEXT",
    "Answer",
    "CacheBook",
    "build_answer",
    "count_tokens",
    "render_chunks",
    "sample_instance",
]

IMAGE_TOKENS = 258  # what Gemini charges per input image
IMAGE_OUTPUT_TOKENS = 1290
STALE_CLIENT_TEXT = "This version of Antigravity is no longer supported. Please update to receive the latest features!"
# 1x1 transparent PNG
TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
_CALL_WORD = re.compile(r"\bcall\b", re.IGNORECASE)


def _ceil4(chars: int) -> int:
    return -(-chars // 4)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _part_chars(part: dict[str, Any]) -> tuple[int, int]:
    """(characters, media items) of one part."""
    text = part.get("text")
    if isinstance(text, str):
        return len(text), 0
    call = pfield(part, "functionCall")
    if isinstance(call, dict):
        return len(call.get("name") or "") + len(_dumps(call.get("args") or {})), 0
    resp = pfield(part, "functionResponse")
    if isinstance(resp, dict):
        return len(resp.get("name") or "") + len(_dumps(resp.get("response") or {})), 0
    if pfield(part, "inlineData") is not None or pfield(part, "fileData") is not None:
        return 0, 1
    code = pfield(part, "executableCode")
    if isinstance(code, dict):
        return len(code.get("code") or ""), 0
    result = pfield(part, "codeExecutionResult")
    if isinstance(result, dict):
        return len(result.get("output") or ""), 0
    return 0, 0


def _content_chars(content: Any) -> tuple[int, int]:
    chars = media = 0
    if isinstance(content, dict):
        for part in content.get("parts") or ():
            if isinstance(part, dict):
                c, m = _part_chars(part)
                chars += c
                media += m
    return chars, media


def _header_chars(req: dict[str, Any]) -> tuple[int, int]:
    chars, media = _content_chars(pfield(req, "systemInstruction"))
    tools = req.get("tools")
    if tools:
        chars += len(_dumps(tools))
    return chars, media


def count_tokens(req: dict[str, Any]) -> int:
    """ceil(characters / 4) over system instruction, contents and tool declarations, +258 per media part.

    generateContent's promptTokenCount and countTokens both use this, so they always agree.
    """
    chars, media = _header_chars(req)
    for content in req.get("contents") or ():
        c, m = _content_chars(content)
        chars += c
        media += m
    return _ceil4(chars) + media * IMAGE_TOKENS


class CacheBook:
    """Implicit prompt caching: a prompt prefix seen before (same account and model) counts as cached."""

    __slots__ = ("_limit", "_lock", "_seen", "min_tokens")

    def __init__(self, min_tokens: int = 1024, limit: int = 100_000) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()
        self.min_tokens = min_tokens

    def observe(self, key: str, req: dict[str, Any]) -> int:
        """Remember every prefix of this prompt; return the token count of the longest one already seen."""
        h = hashlib.sha256(key.encode())
        h.update(_dumps(pfield(req, "systemInstruction") or {}))
        h.update(_dumps(req.get("tools") or []))
        chars, media = _header_chars(req)
        prefixes: list[tuple[bytes, int]] = []
        for content in req.get("contents") or ():
            h.update(_dumps(content))
            c, m = _content_chars(content)
            chars += c
            media += m
            prefixes.append((h.copy().digest(), _ceil4(chars) + media * IMAGE_TOKENS))
        cached = 0
        with self._lock:
            for digest, tokens in prefixes:
                if digest in self._seen:
                    cached = max(cached, tokens)
                self._seen[digest] = tokens
                self._seen.move_to_end(digest)
            while len(self._seen) > self._limit:
                self._seen.popitem(last=False)
        return cached if cached >= self.min_tokens else 0


# --------------------------------------------------------------------------------------------------
# schema instances
# --------------------------------------------------------------------------------------------------
def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for piece in ref[2:].split("/"):
            node = node.get(piece, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}
    return schema


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def sample_instance(
    schema: Any, *, all_props: bool, root: dict[str, Any] | None = None, key: str = "", depth: int = 0
) -> Any:
    """A value valid for `schema` (Gemini Schema or JSON Schema), built from types, enums and bounds."""
    if not isinstance(schema, dict) or depth > 8:
        return f"sim-{key}" if key else "sim"
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    for key_name in ("const", "default"):
        if key_name in schema:
            return schema[key_name]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for alt in ("anyOf", "any_of", "oneOf", "allOf"):
        options = schema.get(alt)
        if isinstance(options, list) and options:
            usable = [o for o in options if isinstance(o, dict) and _schema_type(o) != "null"] or options
            return sample_instance(usable[0], all_props=all_props, root=root, key=key, depth=depth + 1)
    kind = _schema_type(schema)
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        names = list(props) if all_props else [n for n in required if n in props]
        return {n: sample_instance(props[n], all_props=all_props, root=root, key=n, depth=depth + 1) for n in names}
    if kind == "array":
        item = sample_instance(schema.get("items"), all_props=all_props, root=root, key=key, depth=depth + 1)
        count = max(1, int(pfield(schema, "minItems") or 1))
        return [item] * count
    if kind == "integer":
        low = schema.get("minimum")
        return int(low) if isinstance(low, (int, float)) and low > 1 else 1
    if kind == "number":
        low = schema.get("minimum")
        return float(low) if isinstance(low, (int, float)) and low > 1.5 else 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if schema.get("format") == "date-time":
        return "2025-01-01T00:00:00Z"
    text = f"sim-{key}" if key else "sim"
    min_len = pfield(schema, "minLength")
    if isinstance(min_len, int) and len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    return text


# --------------------------------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Answer:
    model: str
    family: str
    thought: str = ""
    show_thought: bool = False
    text: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    image: bool = False
    image_data: str = TINY_PNG  # base64 PNG the image model draws
    signature: str | None = None
    finish: str = "STOP"
    prompt_tokens: int = 0
    cached_tokens: int = 0
    candidate_tokens: int = 0
    thought_tokens: int = 0


def _last_user(contents: list[dict[str, Any]]) -> dict[str, Any]:
    for content in reversed(contents):
        if content.get("role") != "model":
            return content
    return {}


def _user_text(content: dict[str, Any]) -> str:
    texts = [
        p["text"]
        for p in content.get("parts") or ()
        if isinstance(p.get("text"), str) and p.get("thought") is not True and p["text"]
    ]
    return "\n".join(texts)


def _tool_mode(req: dict[str, Any]) -> tuple[str, list[str] | None]:
    cfg = pfield(req, "toolConfig") or {}
    fcc = pfield(cfg, "functionCallingConfig") or {}
    mode = str(fcc.get("mode") or "AUTO").upper()
    allowed = pfield(fcc, "allowedFunctionNames")
    return mode, allowed if isinstance(allowed, list) else None


def _declarations(req: dict[str, Any]) -> list[dict[str, Any]]:
    decls: list[dict[str, Any]] = []
    for tool in req.get("tools") or ():
        decls.extend(d for d in pfield(tool, "functionDeclarations") or () if isinstance(d, dict))
    return decls


def _pick_tools(decls: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Tools named in the prompt, in the order the prompt names them; else the first tool."""
    found: list[tuple[int, int, dict[str, Any]]] = []
    for order, decl in enumerate(decls):
        name = decl.get("name") or ""
        match = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text) if name else None
        if match:
            found.append((match.start(), order, decl))
    found.sort(key=lambda t: (t[0], t[1]))
    return [d for _, _, d in found] or decls[:1]


def _call_id(seed: bytes, index: int) -> str:
    return "toolu_vrtx_01" + hashlib.sha256(seed + b"#" + str(index).encode()).hexdigest()[:22]


def _json_text(req: dict[str, Any], model: str, user_text: str) -> str | None:
    gen = pfield(req, "generationConfig") or {}
    mime = pfield(gen, "responseMimeType")
    schema = pfield(gen, "responseJsonSchema") or gen.get("_responseJsonSchema") or pfield(gen, "responseSchema")
    if mime == "application/json":
        if isinstance(schema, dict):
            return orjson.dumps(sample_instance(schema, all_props=True)).decode()
        return orjson.dumps({"model": model, "echo": user_text}).decode()
    if mime == "text/x.enum" and isinstance(schema, dict) and schema.get("enum"):
        return str(schema["enum"][0])
    return None


def build_answer(
    req: dict[str, Any],
    spec: ModelSpec,
    sigs: SignatureBook,
    *,
    prompt_tokens: int,
    cached_tokens: int = 0,
    stale_client: bool = False,
) -> Answer:
    model = spec.name
    ans = Answer(model=model, family=spec.family, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens)
    if stale_client:
        ans.text = STALE_CLIENT_TEXT
        ans.candidate_tokens = _ceil4(len(ans.text))
        return ans
    contents = req.get("contents") or []
    last = _last_user(contents)
    user_text = _user_text(last)
    responses = [pfield(p, "functionResponse") for p in last.get("parts") or () if pfield(p, "functionResponse")]
    decls = _declarations(req)
    mode, allowed = _tool_mode(req)
    if allowed is not None:
        decls = [d for d in decls if d.get("name") in allowed] or decls
    if responses:
        lines = [
            f"[{model}] tool {r.get('name')} returned: {orjson.dumps(r.get('response') or {}).decode()[:300]}"
            for r in responses
        ]
        ans.text = "\n".join(lines)
        thought = "Reviewing the result of " + ", ".join(str(r.get("name")) for r in responses) + "."
    elif decls and mode != "NONE" and (mode == "ANY" or _CALL_WORD.search(user_text)):
        seed = _dumps(contents)
        for i, decl in enumerate(_pick_tools(decls, user_text)):
            schema = decl.get("parameters") or pfield(decl, "parametersJsonSchema") or {}
            call: dict[str, Any] = {"name": decl.get("name"), "args": sample_instance(schema, all_props=False)}
            if spec.family == "claude":
                call["id"] = _call_id(seed, i)
            ans.calls.append(call)
        thought = "Deciding to call " + ", ".join(str(c["name"]) for c in ans.calls) + "."
    else:
        json_text = _json_text(req, model, user_text)
        ans.text = json_text if json_text is not None else f"[{model}] echo: {user_text}"
        ans.image = spec.image_output
        if ans.image:
            gen = req.get("generationConfig")
            asked = gen.get("imageConfig") if isinstance(gen, dict) else None
            if asked:  # without imageConfig: the 1x1 picture (1:1, as Gemini's default)
                ans.image_data = image_b64(asked)
        thought = f"Thinking about: {user_text[:200]}" if user_text else "Thinking about the request."

    if thinking_enabled(req, spec):
        ans.thought = thought
        ans.show_thought = spec.family == "claude" or pfield(thinking_config(req), "includeThoughts") is True
        ans.thought_tokens = _ceil4(len(thought))

    gen = pfield(req, "generationConfig") or {}
    limit = pfield(gen, "maxOutputTokens")
    budget = int(limit) if limit is not None else None
    if budget is not None and ans.thought_tokens > budget:
        ans.thought = ans.thought[: budget * 4]
        ans.thought_tokens = _ceil4(len(ans.thought))
        ans.text, ans.calls, ans.image, ans.finish = "", [], False, "MAX_TOKENS"
    remaining = None if budget is None else budget - ans.thought_tokens
    call_tokens = sum(_ceil4(len(_dumps(c))) for c in ans.calls)
    if remaining is not None and call_tokens > remaining:
        ans.calls, call_tokens, ans.finish = [], 0, "MAX_TOKENS"
    if remaining is not None and _ceil4(len(ans.text)) > remaining - call_tokens:
        ans.text = ans.text[: max(0, remaining - call_tokens) * 4]
        ans.finish = "MAX_TOKENS"
    ans.candidate_tokens = _ceil4(len(ans.text)) + call_tokens + (IMAGE_OUTPUT_TOKENS if ans.image else 0)

    if ans.thought:
        if spec.family == "claude":
            ans.signature = sigs.issue("claude")
        elif ans.calls or ans.text:
            ans.signature = sigs.issue("gemini")
    return ans


def _split(text: str, n: int) -> list[str]:
    if not text:
        return []
    size = -(-len(text) // max(1, n))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _fragments(ans: Answer, n: int) -> list[dict[str, Any]]:
    frags: list[dict[str, Any]] = []
    if ans.thought and ans.show_thought:
        pieces = _split(ans.thought, n)
        for piece in pieces:
            frags.append({"text": piece, "thought": True})
        if ans.family == "claude" and ans.signature and frags:
            frags[-1]["thoughtSignature"] = ans.signature
    elif ans.thought and ans.family == "claude" and ans.signature:
        frags.append({"text": "", "thought": True, "thoughtSignature": ans.signature})
    texts = [{"text": piece} for piece in _split(ans.text, n)]
    calls: list[dict[str, Any]] = [{"functionCall": call} for call in ans.calls]
    if ans.family != "claude" and ans.signature:
        if calls:
            calls[0]["thoughtSignature"] = ans.signature
        elif texts:
            texts[-1]["thoughtSignature"] = ans.signature
    frags.extend(texts)
    frags.extend(calls)
    if ans.image:
        frags.append({"inlineData": {"mimeType": "image/png", "data": ans.image_data}})
    return frags


def _usage(ans: Answer, share: float) -> dict[str, int]:
    candidates = int(ans.candidate_tokens * share)
    thoughts = int(ans.thought_tokens * share)
    usage = {"promptTokenCount": ans.prompt_tokens}
    if candidates:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = ans.prompt_tokens + candidates + thoughts
    if ans.cached_tokens:
        usage["cachedContentTokenCount"] = ans.cached_tokens
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def render_chunks(ans: Answer, n: int, response_id: str, create_time: str) -> list[dict[str, Any]]:
    """GenerateContentResponse objects for a stream of (at most) `n` chunks; n=1 gives the merged answer.

    usageMetadata is on every chunk and cumulative (the last one is the total), as Google sends it.
    """
    frags = _fragments(ans, n)
    count = max(1, min(n, len(frags)))
    out: list[dict[str, Any]] = []
    for k in range(count):
        lo, hi = (len(frags) * k) // count, (len(frags) * (k + 1)) // count
        content: dict[str, Any] = {"role": "model"}
        if hi > lo:
            content["parts"] = frags[lo:hi]
        candidate: dict[str, Any] = {"content": content}
        final = k == count - 1
        if final:
            candidate["finishReason"] = ans.finish
        out.append(
            {
                "candidates": [candidate],
                "usageMetadata": _usage(ans, 1.0 if final else (k + 1) / count),
                "modelVersion": ans.model,
                "createTime": create_time,
                "responseId": response_id,
            }
        )
    return out
