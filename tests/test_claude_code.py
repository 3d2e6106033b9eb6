"""Claude Code against agfast + the simulator: the real CLI (`npm install @anthropic-ai/claude-code`), and a
recorded Claude Code session replayed turn by turn.

The CLI runs `claude -p` with `ANTHROPIC_BASE_URL` at agfast, a throw-away HOME and `--allowedTools Bash` (no
interactive permission prompt; no `--dangerously-skip-permissions`, which Claude Code refuses as root). The
tool-loop prompt says "call Bash", so the simulator answers with a Bash call whose command is its sample
value `sim-command`; a `sim-command` script on PATH prints a marker, and the final answer must quote it —
proof that Claude Code really ran the tool and sent the result back through agfast.

The replay (`data/claude_code_session.json`) is the last request of a 10-prompt Claude Code 2.1.197 session:
its user turns, tool results and `role: "system"` entries are sent as recorded, while every assistant turn
is the live answer agfast gives (signed thinking included), as Claude Code itself would do.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
from helpers import ServerThread, request
from npm_tools import npm_binary
from stack import KEY, generations

from agfast.sim import GoogleSimulator

# The version this test was written against; override to try another (the npm cache keeps each one).
CLAUDE_CODE_VERSION = os.environ.get("AGFAST_CLAUDE_CODE_VERSION", "2.1.197")
# A `claude -p` against the local simulator takes about a second; anything near this is a hang.
RUN_TIMEOUT_S = 120
MARKER = "agfast-tool-ran-4711"
FIXTURE = Path(__file__).parent / "data" / "claude_code_session.json"


# -- the real CLI --------------------------------------------------------------------------------------------------


def claude(st: ServerThread, tmp_path: Path, prompt: str, *args: str) -> dict[str, Any]:
    """`claude -p PROMPT --output-format json` against agfast; the parsed result."""
    exe = npm_binary("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION, "claude")
    home, work, bin_dir = tmp_path / "home", tmp_path / "work", tmp_path / "bin"
    for d in (home, work, bin_dir):
        d.mkdir(exist_ok=True)
    tool = bin_dir / "sim-command"
    tool.write_text(f"#!/bin/sh\necho {MARKER}\n")
    tool.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": st.url,
        "ANTHROPIC_API_KEY": KEY,
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    done = subprocess.run(
        [str(exe), "-p", prompt, "--output-format", "json", *args],
        cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, f"claude exited {done.returncode}: {done.stderr[-2000:]} {done.stdout[-2000:]}"
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_cli_plain_answer(stack: ServerThread, sim: GoogleSimulator, tmp_path: Path) -> None:
    result = claude(stack, tmp_path, "Say hello to the simulator")
    assert not result["is_error"] and result["num_turns"] == 1
    assert "] echo: " in result["result"] and result["result"].endswith("Say hello to the simulator")
    main = [g for g in generations(sim) if g.json["request"].get("tools")]
    assert len(main) == 1 and main[0].status == 200
    # Claude Code's own session id made the conversation sticky; its tools reached Google as declarations.
    assert main[0].json["requestId"].startswith("agent/antigravity/")
    names = {d["name"] for d in main[0].json["request"]["tools"][0]["functionDeclarations"]}
    assert {"Bash", "Read", "Edit"} <= names
    assert result["usage"]["input_tokens"] + result["usage"]["cache_read_input_tokens"] > 0


def test_cli_tool_loop_runs_bash(stack: ServerThread, sim: GoogleSimulator, tmp_path: Path) -> None:
    result = claude(stack, tmp_path, "Please call Bash to list the files", "--allowedTools", "Bash")
    assert not result["is_error"] and result["num_turns"] == 2, result
    assert "tool Bash returned" in result["result"] and MARKER in result["result"]
    main = [g for g in generations(sim) if g.json["request"].get("tools")]
    first, second = main
    call = second.json["request"]["contents"][-2]["parts"]
    assert call[0]["thought"] is True and call[1]["functionCall"]["name"] == "Bash"
    response = second.json["request"]["contents"][-1]["parts"][0]["functionResponse"]
    assert response["name"] == "Bash" and MARKER in response["response"]["result"]
    assert first.email == second.email


# -- the recorded session ------------------------------------------------------------------------------------------


def fold(data: bytes) -> dict[str, Any]:
    """A Messages SSE stream folded into the message, as an SDK would; fails on an `error` event."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for frame in data.decode().split("\n\n"):
        lines = frame.split("\n")
        if len(lines) < 2 or not lines[0].startswith("event: "):
            continue
        event = json.loads(lines[1][len("data: ") :])
        kind = event["type"]
        assert kind != "error", event
        if kind == "message_start":
            message = event["message"]
        elif kind == "content_block_start":
            message["content"].append(event["content_block"])
        elif kind == "content_block_delta":
            block, delta = message["content"][event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop" and event["index"] in partial:
            message["content"][event["index"]]["input"] = json.loads(partial.pop(event["index"]))
        elif kind == "message_delta":
            message.update(event["delta"])
            message["usage"] = event["usage"]
        elif kind == "message_stop":
            message["complete"] = True
    return message


def remap(message: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """A recorded user turn, its tool results pointing at the live calls instead of the recorded ones."""
    content = message["content"]
    if isinstance(content, list):
        content = [{**b, "tool_use_id": ids[b["tool_use_id"]]} if b["type"] == "tool_result" else b for b in content]
    return {**message, "content": content}


def test_recorded_session_replays_on_one_account(stack: ServerThread, sim: GoogleSimulator) -> None:
    recorded = orjson.loads(FIXTURE.read_bytes())
    body, headers, path = recorded["body"], recorded["headers"], recorded["path"]
    conversation: list[dict[str, Any]] = body["messages"]
    assert len(conversation) >= 20
    pool = stack.app.pool
    session = headers["x-claude-code-session-id"]
    history: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    emails: list[str] = []
    for recorded_turn in [*conversation, None]:
        if recorded_turn is not None and recorded_turn["role"] != "assistant":
            history.append(remap(recorded_turn, ids))
            continue
        if emails:
            # Make "the account used last" another one: only the session binding can keep the account now.
            other = next(m.id for m in pool.members.values() if m.email != emails[0])
            stack.call(pool.state.set_last_used, other, time.time())
        payload = orjson.dumps({**body, "messages": history})
        reply = request(stack.port, "POST", path, payload, headers)
        assert reply.status == 200, reply.body[:500]
        live = fold(reply.body)
        assert live.get("complete") and live["content"], live
        emails.append(reply.headers["x-account-email"])
        if recorded_turn is None:
            assert live["stop_reason"] == "end_turn"
            break
        wanted = [b["name"] for b in recorded_turn["content"] if b["type"] == "tool_use"]
        calls = [b for b in live["content"] if b["type"] == "tool_use"]
        assert [b["name"] for b in calls] == wanted
        assert live["stop_reason"] == ("tool_use" if wanted else "end_turn")
        ids.update(
            zip([b["id"] for b in recorded_turn["content"] if b["type"] == "tool_use"], [b["id"] for b in calls])
        )
        history.append({"role": "assistant", "content": live["content"]})
    assert len(emails) >= 17 and set(emails) == {emails[0]}
    bound = stack.call(pool.state.binding, session)
    assert pool.members[bound].email == emails[0]
    upstream = generations(sim)
    assert len(upstream) == len(emails) and all(g.status == 200 for g in upstream)
    # Thinking stayed on for every turn: each signed thinking block went back and was accepted.
    assert all("thinkingConfig" in g.json["request"]["generationConfig"] for g in upstream)
    last = upstream[-1].json["request"]["contents"]
    assert all(c["parts"][0].get("thought") for c in last if c["role"] == "model")
