"""OpenAI Responses API ↔ Gemini (reference §6.4): pure, no IO.

Up: `to_chat` turns `instructions` + `input` items (+ the stored conversation of `previous_response_id`) into
a chat completions body, so one converter (`openai_chat.to_gemini`) serves both surfaces. Down:
`ResponsesBuilder` folds the Gemini stream into output items (reasoning, message, function_call,
custom_tool_call) and, when streaming, emits the Responses event sequence, each event numbered. Codex
retries a stream that closes before a terminal event, so `finish()`/`fail()` always end with one.

Codex's remote compaction (its provider is OpenAI's, v0.169's only remote kind) is a Responses request whose
input ends with a `compaction_trigger` item and whose answer must be exactly one `compaction` output item, an
opaque `encrypted_content` Codex keeps in place of the history and sends back as an input item. Here the model
writes a summary (no tools offered) and the item carries it, marked as ours; on the way back it becomes a user
message with the summary. Another server's (truly encrypted) compaction items are skipped: unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from agfast import sse
from agfast.convert.ids import hex32
from agfast.convert.limits import MAX_ARGUMENTS_DEPTH, too_deep
from agfast.convert.openai_chat import InvalidRequest, Reader, ToolCall, content_text

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
# A free-form ("custom") tool is declared to Gemini as a function taking its text as `input`.
CUSTOM_TOOL_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The raw input for the tool."}},
    "required": ["input"],
}
# Gemini finish reasons that end a response early (status "incomplete") and how Responses names them.
INCOMPLETE_REASONS = {
    "MAX_TOKENS": "max_output_tokens",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}
# Request fields echoed on the response object as they came (absent → these defaults).
ECHOED: tuple[tuple[str, Any], ...] = (
    ("instructions", None),
    ("max_output_tokens", None),
    ("parallel_tool_calls", True),
    ("previous_response_id", None),
    ("temperature", None),
    ("top_p", None),
    ("tool_choice", "auto"),
    ("tools", []),
    ("store", True),
    ("metadata", {}),
)


# What the model is asked when Codex compacts: a summary another model can resume from. (No "call" wording: a
# tool name in the summary must not read as a request to use it.)
COMPACTION_PROMPT = (
    "Context checkpoint: the conversation above is about to be replaced by your summary. Write a concise handoff "
    "for the assistant who resumes this work: the user's goals and constraints, what has been done and found so "
    "far (files, commands and their results), decisions taken, and the next steps. Answer with the summary only."
)
# Marks a compaction item's `encrypted_content` as written here (its summary follows), so it can be read back.
COMPACTION_MARK = "agfast-summary:v1:"
# How a compaction item reads to the model when it comes back in a later request's input.
SUMMARY_INTRO = "Summary of the earlier conversation (it replaces that history):\n"


@dataclass(slots=True)
class ResponsesPlan:
    """The chat body to send, the conversation to store afterwards, which tools are free-form, and whether this
    is Codex compacting its history (answered with one `compaction` item)."""

    chat: dict[str, Any]
    conversation: list[dict[str, Any]]
    custom: frozenset[str] = field(default_factory=frozenset)
    compaction: bool = False


def new_id(prefix: str) -> str:
    """`prefix` + 32 random hex digits (response and output item ids)."""
    return prefix + hex32()


class _Input:
    """Input items → chat messages; one method per item type (see ITEM_METHODS)."""

    __slots__ = ("compaction", "messages", "reasoning")

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.reasoning: list[str] = []
        self.compaction = False

    def _assistant(self) -> dict[str, Any]:
        """The assistant message calls attach to: the last one if nothing came after it, else a new one."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            last = {"role": "assistant", "content": None}
            self.messages.append(last)
        else:
            # A copy: the message may belong to a stored conversation that must stay as it was.
            last = self.messages[-1] = dict(last)
        if self.reasoning:
            last["reasoning_content"] = (last.get("reasoning_content") or "") + "\n".join(self.reasoning)
            self.reasoning = []
        return last

    def message(self, item: dict[str, Any], param: str) -> None:
        role = item.get("role", "user")
        if role not in MESSAGE_ROLES:
            raise InvalidRequest(f"Invalid role {role!r}: use user, assistant, system or developer.", f"{param}.role")
        content = item.get("content")
        if role == "assistant":
            msg = self._assistant()
            if msg.get("tool_calls"):
                msg = {"role": "assistant", "content": None}
                self.messages.append(msg)
            previous = msg.get("content")
            msg["content"] = content if previous is None else [*_as_parts(previous), *_as_parts(content)]
        else:
            self.messages.append({"role": role, "content": content})

    def function_call(self, item: dict[str, Any], param: str) -> None:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("A function_call item needs a name.", f"{param}.name")
        args = item.get("arguments", "{}")
        if isinstance(args, str) and args.lstrip().startswith(("{", "[")):
            # Checked here too so the error names this item, not the chat message it becomes.
            try:
                parsed = orjson.loads(args)
            except orjson.JSONDecodeError:
                parsed = None
            if too_deep(parsed, MAX_ARGUMENTS_DEPTH) is not None:
                where = f"{param}.arguments"
                raise InvalidRequest(f"'{where}' is nested more than {MAX_ARGUMENTS_DEPTH} levels deep.", where)
        self._call(item, name, args if isinstance(args, str) else orjson.dumps(args).decode())

    def custom_tool_call(self, item: dict[str, Any], param: str) -> None:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("A custom_tool_call item needs a name.", f"{param}.name")
        self._call(item, name, orjson.dumps({"input": item.get("input", "")}).decode())

    def _call(self, item: dict[str, Any], name: str, arguments: str) -> None:
        call_id = item.get("call_id") or item.get("id") or new_id("call_")
        msg = self._assistant()
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        msg["tool_calls"] = [*msg.get("tool_calls", ()), call]

    def call_output(self, item: dict[str, Any], param: str) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest("A tool output item needs the call_id it answers.", f"{param}.call_id")
        output = item.get("output")
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content_text(output)})

    def reasoning_item(self, item: dict[str, Any], param: str) -> None:
        summary = item.get("summary")
        texts = [s.get("text") for s in summary if isinstance(s, dict)] if isinstance(summary, list) else []
        self.reasoning.extend(t for t in texts if isinstance(t, str) and t)

    def compaction_trigger(self, item: dict[str, Any], param: str) -> None:
        self.compaction = True

    def compaction_item(self, item: dict[str, Any], param: str) -> None:
        content = item.get("encrypted_content")
        if isinstance(content, str) and content.startswith(COMPACTION_MARK):
            self.messages.append({"role": "user", "content": SUMMARY_INTRO + content[len(COMPACTION_MARK) :]})


def _as_parts(content: Any) -> list[Any]:
    if isinstance(content, list):
        return content
    if isinstance(content, str) and content:
        return [{"type": "output_text", "text": content}]
    return []


# Item type → method; unknown types (item_reference, web_search_call, …) are skipped, never refused.
ITEM_METHODS = {
    "message": _Input.message,
    "function_call": _Input.function_call,
    "custom_tool_call": _Input.custom_tool_call,
    "function_call_output": _Input.call_output,
    "custom_tool_call_output": _Input.call_output,
    "reasoning": _Input.reasoning_item,
    "compaction_trigger": _Input.compaction_trigger,
    "compaction": _Input.compaction_item,
}


def _tools(tools: Any) -> tuple[list[Any] | None, frozenset[str]]:
    """Responses tools → chat tools at the same indexes (so errors name the client's index).

    Functions pass as they are, free-form tools become functions; hosted types Gemini cannot run
    (namespace, file_search, …) pass too and the chat converter skips them.
    """
    if not isinstance(tools, list):
        if tools is not None:
            raise InvalidRequest("'tools' must be an array.", "tools")
        return None, frozenset()
    out: list[Any] = []
    custom: set[str] = set()
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "custom" and isinstance(tool.get("name"), str):
            custom.add(tool["name"])
            tool = {
                "type": "function",
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": CUSTOM_TOOL_PARAMETERS,
            }
        out.append(tool)
    return out, frozenset(custom)


def _tool_choice(choice: Any, tools: list[Any]) -> Any:
    """Only a choice naming a declared function (or custom) tool is forced; anything hosted becomes auto."""
    if not isinstance(choice, dict) or choice.get("type") == "allowed_tools":
        return choice
    names = {t.get("name") for t in tools if isinstance(t, dict) and t.get("type") == "function"}
    return choice if choice.get("name") in names else "auto"


def to_chat(body: dict[str, Any], history: list[dict[str, Any]] | None) -> ResponsesPlan:
    """A Responses body (and the stored conversation it continues) → the equivalent chat completions body."""
    conversation: list[dict[str, Any]] = list(history or ())
    items = _Input(conversation)
    raw = body.get("input")
    if isinstance(raw, str):
        conversation.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise InvalidRequest("Each input item must be an object.", f"input[{i}]")
            kind = item.get("type", "message" if "role" in item else None)
            method = ITEM_METHODS.get(kind)  # type: ignore[arg-type]
            if method is not None:
                method(items, item, f"input[{i}]")
    elif raw is not None or history is None:
        raise InvalidRequest("'input' must be a string or an array of input items.", "input")

    messages = list(conversation)
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    tools, custom = _tools(body.get("tools"))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if items.compaction:
        # The summary is the whole answer: no tools to reach for, and the request is not part of the conversation.
        messages.append({"role": "user", "content": COMPACTION_PROMPT})
        tools = None
    if tools:
        chat["tools"] = tools
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"], tools)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if isinstance(text, dict) and text.get("format") is not None:
        chat["response_format"] = text["format"]
    return ResponsesPlan(chat, conversation, custom, items.compaction)


def response_object(body: dict[str, Any], response_id: str, model: str, created: int) -> dict[str, Any]:
    """The `response` skeleton (status in_progress, no output yet) echoing the request's settings."""
    obj: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
    }
    for name, default in ECHOED:
        value = body.get(name)
        obj[name] = default if value is None else value
    reasoning = body.get("reasoning")
    obj["reasoning"] = reasoning if isinstance(reasoning, dict) else {"effort": None, "summary": None}
    text = body.get("text")
    obj["text"] = text if isinstance(text, dict) else {"format": {"type": "text"}}
    obj["truncation"] = body.get("truncation") or "disabled"
    obj["usage"] = None
    return obj


def responses_usage(meta: dict[str, Any] | None) -> dict[str, Any]:
    """usageMetadata → Responses usage, numbers as Google reports them."""
    meta = meta or {}
    prompt = meta.get("promptTokenCount", 0)
    output = meta.get("candidatesTokenCount", 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount", 0)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": meta.get("thoughtsTokenCount", 0)},
        "total_tokens": meta.get("totalTokenCount", prompt + output),
    }


class ResponsesBuilder:
    """Gemini chunks → output items, and (when `stream`) the Responses SSE events, numbered from 0."""

    __slots__ = ("_chunks", "_item", "_kind", "compaction", "custom", "reader", "response", "seq", "stream")

    def __init__(
        self,
        reader: Reader,
        response: dict[str, Any],
        *,
        custom: frozenset[str],
        stream: bool,
        compaction: bool = False,
    ) -> None:
        self.reader = reader
        self.response = response
        self.custom = custom
        self.stream = stream
        self.compaction = compaction
        self.seq = 0
        self._kind = ""  # "reasoning" | "message" while a text item is open
        self._item: dict[str, Any] = {}
        self._chunks: list[str] = []

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        fields["sequence_number"] = self.seq
        self.seq += 1
        return sse.frame_event(orjson.dumps(fields), kind.encode())

    def start(self) -> bytes:
        """`response.created` and `response.in_progress`."""
        if not self.stream:
            return b""
        snapshot = self.response
        return self._event("response.created", {"type": "response.created", "response": snapshot}) + self._event(
            "response.in_progress", {"type": "response.in_progress", "response": snapshot}
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self.compaction:  # the summary's text is gathered; its item is emitted whole at the end
            self._chunks.extend(piece.text for piece in self.reader.read(chunk) if not piece.index and piece.text)
            return b""
        out: list[bytes] = []
        for piece in self.reader.read(chunk):
            if piece.index:
                continue  # a response has one output sequence; extra candidates are not representable
            if piece.reasoning:
                out.append(self._text("reasoning", piece.reasoning))
            if piece.text:
                out.append(self._text("message", piece.text))
            for call in piece.calls:
                out.append(self._close())
                out.append(self._call(call))
        return b"".join(out)

    # -- text items (reasoning summary, assistant message) -------------------------------------------------
    def _text(self, kind: str, delta: str) -> bytes:
        out = b""
        if self._kind != kind:
            out = self._close() + self._open(kind)
        self._chunks.append(delta)
        if not self.stream:
            return out
        item_id = self._item["id"]
        index = len(self.response["output"]) - 1
        if kind == "message":
            fields = {"type": "response.output_text.delta", "item_id": item_id, "output_index": index,
                      "content_index": 0, "delta": delta, "logprobs": []}  # fmt: skip
        else:
            fields = {"type": "response.reasoning_summary_text.delta", "item_id": item_id, "output_index": index,
                      "summary_index": 0, "delta": delta}  # fmt: skip
        return out + self._event(fields["type"], fields)

    def _open(self, kind: str) -> bytes:
        if kind == "message":
            item: dict[str, Any] = {"id": new_id("msg_"), "type": "message", "status": "in_progress",
                                    "role": "assistant", "content": []}  # fmt: skip
        else:
            item = {"id": new_id("rs_"), "type": "reasoning", "summary": []}
        self._kind = kind
        self._item = item
        self._chunks = []
        output = self.response["output"]
        output.append(item)
        if not self.stream:
            return b""
        index = len(output) - 1
        added = self._event(
            "response.output_item.added", {"type": "response.output_item.added", "output_index": index, "item": item}
        )
        if kind == "message":
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            part = {"type": "response.content_part.added", "item_id": item["id"], "output_index": index,
                    "content_index": 0, "part": empty}  # fmt: skip
        else:
            part = {"type": "response.reasoning_summary_part.added", "item_id": item["id"], "output_index": index,
                    "summary_index": 0, "part": {"type": "summary_text", "text": ""}}  # fmt: skip
        return added + self._event(part["type"], part)

    def _close(self) -> bytes:
        kind = self._kind
        if not kind:
            return b""
        self._kind = ""
        item = self._item
        text = "".join(self._chunks)
        output = self.response["output"]
        index = len(output) - 1
        if kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item = output[index] = {**item, "status": "completed", "content": [part]}
        else:
            part = {"type": "summary_text", "text": text}
            item = output[index] = {**item, "summary": [part]}
        if not self.stream:
            return b""
        item_id = item["id"]
        if kind == "message":
            events = [
                {"type": "response.output_text.done", "item_id": item_id, "output_index": index, "content_index": 0,
                 "text": text, "logprobs": []},
                {"type": "response.content_part.done", "item_id": item_id, "output_index": index, "content_index": 0,
                 "part": part},
            ]  # fmt: skip
        else:
            events = [
                {"type": "response.reasoning_summary_text.done", "item_id": item_id, "output_index": index,
                 "summary_index": 0, "text": text},
                {"type": "response.reasoning_summary_part.done", "item_id": item_id, "output_index": index,
                 "summary_index": 0, "part": part},
            ]  # fmt: skip
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        return b"".join(self._event(e["type"], e) for e in events)

    # -- tool calls arrive whole --------------------------------------------------------------------------
    def _call(self, call: ToolCall) -> bytes:
        output = self.response["output"]
        index = len(output)
        if call.name in self.custom:
            try:
                args = orjson.loads(call.arguments)
            except orjson.JSONDecodeError:
                args = {}
            value = args.get("input", "") if isinstance(args, dict) else ""
            value = value if isinstance(value, str) else orjson.dumps(value).decode()
            item = {"id": new_id("ctc_"), "type": "custom_tool_call", "status": "completed", "call_id": call.id,
                    "name": call.name, "input": value}  # fmt: skip
            delta_type, done_type, key = (
                "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done", "input"
            )  # fmt: skip
        else:
            value = call.arguments
            item = {"id": new_id("fc_"), "type": "function_call", "status": "completed", "call_id": call.id,
                    "name": call.name, "arguments": value}  # fmt: skip
            delta_type, done_type, key = (
                "response.function_call_arguments.delta", "response.function_call_arguments.done", "arguments"
            )  # fmt: skip
        output.append(item)
        if not self.stream:
            return b""
        added = {**item, "status": "in_progress", key: ""}
        events: list[dict[str, Any]] = [
            {"type": "response.output_item.added", "output_index": index, "item": added},
            {"type": delta_type, "item_id": item["id"], "output_index": index, "delta": value},
            {"type": done_type, "item_id": item["id"], "output_index": index, key: value, "name": call.name},
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]
        return b"".join(self._event(e["type"], e) for e in events)

    # -- the end ---------------------------------------------------------------------------------------------
    def _compaction(self) -> bytes:
        """The one `compaction` output item Codex expects, carrying the summary."""
        output = self.response["output"]
        item = {
            "id": new_id("cmp_"),
            "type": "compaction",
            "encrypted_content": COMPACTION_MARK + "".join(self._chunks),
        }
        output.append(item)
        if not self.stream:
            return b""
        index = len(output) - 1
        kinds = ("response.output_item.added", "response.output_item.done")
        return b"".join(self._event(kind, {"type": kind, "output_index": index, "item": item}) for kind in kinds)

    def finish(self) -> bytes:
        """Close what is open and settle the response: completed, or incomplete with the reason (a compaction
        always completes: a cut summary still replaces the history better than none)."""
        out = self._compaction() if self.compaction else self._close()
        reader = self.reader
        response = self.response
        reason = None if self.compaction else INCOMPLETE_REASONS.get(reader.finish.get(0, "STOP"))
        has_calls = any(item["type"] in ("function_call", "custom_tool_call") for item in response["output"])
        if reason is not None and not has_calls:
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": reason}
        else:
            response["status"] = "completed"
        response["usage"] = responses_usage(reader.usage)
        if not self.stream:
            return b""
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, {"type": kind, "response": response})

    def fail(self, message: str, code: str = "server_error") -> bytes:
        """Close what is open and end with `response.failed` (after the first byte nothing can be retried)."""
        out = self._close()
        response = self.response
        response["status"] = "failed"
        response["error"] = {"code": code, "message": message}
        response["usage"] = responses_usage(self.reader.usage)
        if not self.stream:
            return b""
        return out + self._event("response.failed", {"type": "response.failed", "response": response})

    def assistant_message(self) -> dict[str, Any]:
        """The output as one chat assistant message, for the conversation store."""
        reasoning: list[str] = []
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for item in self.response["output"]:
            kind = item["type"]
            if kind == "reasoning":
                reasoning.extend(s["text"] for s in item["summary"])
            elif kind == "message":
                texts.extend(p["text"] for p in item["content"])
            elif kind == "compaction":
                texts.append(item["encrypted_content"].removeprefix(COMPACTION_MARK))
            else:
                arguments = item["arguments"] if kind == "function_call" else orjson.dumps({"input": item["input"]})
                if isinstance(arguments, bytes):
                    arguments = arguments.decode()
                calls.append(
                    {
                        "id": item["call_id"],
                        "type": "function",
                        "function": {"name": item["name"], "arguments": arguments},
                    }
                )
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if reasoning:
            msg["reasoning_content"] = "".join(reasoning)
        if calls:
            msg["tool_calls"] = calls
        return msg

    def output_text(self) -> str:
        return "".join(
            p["text"] for item in self.response["output"] if item["type"] == "message" for p in item["content"]
        )
