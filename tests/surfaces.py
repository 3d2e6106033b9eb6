"""One valid body per surface and route, and how each surface's errors look: the seeds the body fuzzers mutate."""

from __future__ import annotations

from typing import Any

MODEL = "gemini-3-flash"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["a", "b"]},
        "days": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["city"],
}

# route → a valid body touching most of what the converters read.
BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "call get_weather"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}],
        "tool_choice": "auto",
        "max_tokens": 64,
        "temperature": 0.5,
        "stop": ["END"],
        "response_format": {"type": "text"},
        "stream": False,
    },
    "/v1/responses": {
        "model": MODEL,
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "call get_weather"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}]},
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": SCHEMA}],
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "text"}},
        "max_output_tokens": 64,
        "metadata": {"k": "v"},
        "store": False,
    },
    "/v1/completions": {"model": MODEL, "prompt": "Say hi", "max_tokens": 16, "stop": "\n", "temperature": 1},
    "/v1/messages": {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "call get_weather"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "a"}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
        ],
        "tools": [{"name": "get_weather", "input_schema": SCHEMA}],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u"},
    },
    "/v1/messages/count_tokens": {
        "model": "claude-sonnet-4-6",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "count me"}],
        "tools": [{"name": "get_weather", "input_schema": SCHEMA}],
    },
    f"/v1beta/models/{MODEL}:generateContent": {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "call get_weather"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "a"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": "sunny"}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": SCHEMA}]}],
        "generationConfig": {"maxOutputTokens": 64, "thinkingConfig": {"thinkingBudget": 1024}, "stopSequences": ["X"]},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
    },
    f"/v1beta/models/{MODEL}:countTokens": {
        "contents": [{"role": "user", "parts": [{"text": "count me"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
    },
}
# Streaming variants take other converters: (route, the body it starts from, fields set on top).
CASES: list[tuple[str, str, dict[str, Any]]] = [
    *((route, route, {}) for route in BASES),
    (f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", f"/v1beta/models/{MODEL}:generateContent", {}),
    ("/v1/chat/completions", "/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}),
    ("/v1/responses", "/v1/responses", {"stream": True}),
    ("/v1/messages", "/v1/messages", {"stream": True}),
]


def family(route: str) -> str:
    return "anthropic" if "/messages" in route else "gemini" if "models/" in route else "openai"


def in_shape(route: str, doc: Any) -> bool:
    kind = family(route)
    if kind == "anthropic":
        return doc.get("type") == "error" and {"type", "message"} <= set(doc["error"])
    if kind == "gemini":
        return {"code", "message", "status"} <= set(doc["error"])
    return {"message", "type", "code", "param"} <= set(doc["error"])
