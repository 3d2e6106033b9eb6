"""Codex's `POST /responses/compact` (and `/v1/responses/compact`): served as a Responses request, as the
reference does (§1.1); Codex replaces its history with the answer's `output` items."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from helpers import ServerThread
from stack import KEY, generations

from agfast.sim import GoogleSimulator

SHARED_STACK = True
MODEL = "gemini-3-flash"
# The shape Codex 0.169 sends when it compacts (codex-rs `CompactionInput`: model, input, instructions, tools,
# parallel_tool_calls, reasoning, text), reconstructed from its source with a short history: a user turn, a
# tool call and its output, and the assistant's answer. Not streamed.
CODEX_COMPACT = {
    "model": MODEL,
    "instructions": "You are Codex, a coding agent. Summarize the conversation so it can continue.",
    "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files"}]},
        {
            "type": "function_call",
            "name": "exec_command",
            "arguments": '{"cmd":"ls"}',
            "call_id": "call_1",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "README.md\nsrc\n"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "There are two entries: README.md and src."}],
        },
    ],
    "tools": [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Run a shell command",
            "strict": False,
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        }
    ],
    "parallel_tool_calls": False,
    "reasoning": None,
    "text": None,
}


@pytest.fixture
def root_client(stack: ServerThread) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url, api_key=KEY, max_retries=0, timeout=30)
    yield c
    c.close()


@pytest.mark.parametrize("path", ["/responses/compact", "/v1/responses/compact"])
def test_compact_answers_output_items_codex_can_keep(
    root_client: openai.OpenAI, sim: GoogleSimulator, path: str
) -> None:
    answer: Any = root_client.post(path, body=CODEX_COMPACT, cast_to=object)
    assert answer["object"] == "response" and answer["status"] == "completed"
    messages = [item for item in answer["output"] if item["type"] == "message"]
    assert messages and messages[-1]["role"] == "assistant"
    assert messages[-1]["content"][0]["type"] == "output_text" and messages[-1]["content"][0]["text"]
    [sent] = generations(sim)
    request = orjson.loads(sent.body)["request"]
    assert "Summarize the conversation" in orjson.dumps(request["systemInstruction"]).decode()
    roles = [content["role"] for content in request["contents"]]
    assert roles[0] == "user" and "model" in roles  # the whole history went upstream


def test_compact_bad_body_is_400_in_openai_shape(root_client: openai.OpenAI, sim: GoogleSimulator) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        root_client.post("/responses/compact", body={"input": []}, cast_to=object)
    assert isinstance(err.value.body, dict) and err.value.body["message"]
    assert generations(sim) == []
