"""Codex's history compaction through agfast.

`POST /responses/compact` (and `/v1/responses/compact`), the dedicated route of Codex's first remote compaction,
is served as a Responses request, as the reference does (§1.1); Codex replaced its history with the answer's
`output` items. Codex 0.169 no longer has that route: its remote compaction is a streamed `/v1/responses` request
whose input ends with a `compaction_trigger` item, answered with exactly one `compaction` item. Those tests replay
the requests recorded from the real CLI (tests/fixtures, see its `how`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from helpers import ServerThread, request, strict_sse
from stack import KEY, generations

from agfast.convert.openai_responses import COMPACTION_MARK, COMPACTION_PROMPT, SUMMARY_INTRO
from agfast.sim import GoogleSimulator

SHARED_STACK = True
MODEL = "gemini-3-flash"
# The shape of Codex's `/responses/compact` body before 0.169 (codex-rs `CompactionInput`: model, input,
# instructions, tools, parallel_tool_calls, reasoning, text), from its source, with a short history: a user turn,
# a tool call and its output, and the assistant's answer. Not streamed.
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


# -- Codex 0.169's remote compaction, replayed as recorded ------------------------------------------------------

RECORDED = orjson.loads((Path(__file__).parent / "fixtures" / "codex-0.169.0-remote-compaction.json").read_bytes())


def replay(stack: ServerThread, recorded: dict[str, Any], body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Send a recorded Codex request as it came (its headers, this stack's key) → its SSE events, checked."""
    headers = {name: value for name, value in recorded["headers"] if name.lower() != "authorization"}
    headers["Authorization"] = f"Bearer {KEY}"
    payload = orjson.dumps(body if body is not None else recorded["body"])
    reply = request(stack.port, recorded["method"], recorded["path"], payload, headers)
    assert reply.status == 200, reply.body[:500]
    return [orjson.loads(data) for _, data in strict_sse(reply.body, comments=True)]


def test_recorded_codex_compaction_answers_one_compaction_item(stack: ServerThread, sim: GoogleSimulator) -> None:
    """Codex 0.169 compacting mid-turn (after a tool call): the whole history goes upstream with the summary
    request and no tools; the answer's only output item is the `compaction` Codex requires (it fails the turn
    on any other count), and it completes."""
    events = replay(stack, RECORDED["compaction"])
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [item["type"] for item in done] == ["compaction"]
    assert done[0]["encrypted_content"].startswith(COMPACTION_MARK)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"] == done
    assert [e["sequence_number"] for e in events] == list(range(len(events)))

    [sent] = generations(sim)
    request_sent = orjson.loads(sent.body)["request"]
    assert "tools" not in request_sent
    parts = [p for c in request_sent["contents"] for p in c["parts"]]
    assert any("functionCall" in p for p in parts) and any("functionResponse" in p for p in parts)
    assert request_sent["contents"][-1]["parts"][-1]["text"] == COMPACTION_PROMPT


def test_recorded_turn_after_compaction_reads_the_summary(stack: ServerThread, sim: GoogleSimulator) -> None:
    """The turn after a compaction carries the `compaction` item in place of the history: the model reads its
    summary as a user message. Replayed with the item agfast just answered for the recorded compaction."""
    [item] = [e["item"] for e in replay(stack, RECORDED["compaction"]) if e["type"] == "response.output_item.done"]
    summary = item["encrypted_content"].removeprefix(COMPACTION_MARK)
    assert summary  # the model's answer to the summary request
    sim.clear_requests()
    after = RECORDED["after_compaction"]
    body = orjson.loads(orjson.dumps(after["body"]))
    [slot] = [i for i in body["input"] if i["type"] == "compaction"]
    slot["encrypted_content"] = item["encrypted_content"]
    events = replay(stack, after, body)
    assert events[-1]["type"] == "response.completed"
    [sent] = generations(sim)
    texts = [p.get("text", "") for c in orjson.loads(sent.body)["request"]["contents"] for p in c["parts"]]
    assert SUMMARY_INTRO + summary in texts
    assert "tools" in orjson.loads(sent.body)["request"]  # an ordinary turn again


def test_foreign_compaction_items_are_skipped(stack: ServerThread, sim: GoogleSimulator) -> None:
    """A compaction item another server encrypted cannot be read here: it is left out, never sent as text."""
    after = RECORDED["after_compaction"]
    body = orjson.loads(orjson.dumps(after["body"]))
    [slot] = [i for i in body["input"] if i["type"] == "compaction"]
    slot["encrypted_content"] = "gAAAAABopaque-ciphertext"
    assert replay(stack, after, body)[-1]["type"] == "response.completed"
    [sent] = generations(sim)
    assert b"opaque-ciphertext" not in sent.body
