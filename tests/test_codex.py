"""The real Codex CLI (`npm install @openai/codex`) against agfast + the simulator, over the Responses API.

Codex is installed once into a cache directory (reruns are instant) and driven with `codex exec`. The prompt
names a declared tool and says "call", so the simulator answers with an `exec_command` function call; Codex
runs it, sends the `function_call_output` back, and the simulator's final answer quotes that result — a full
tool round trip through agfast, including the thought signature Gemini 3 requires on the second turn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from npm_tools import npm_binary
from stack import KEY, agfast_on, generations

from agfast.convert.openai_responses import COMPACTION_PROMPT, SUMMARY_INTRO
from agfast.sim import GoogleSimulator

# The version clients.md observed; override to try another. The cache survives between runs (and CI jobs).
CODEX_VERSION = os.environ.get("AGFAST_CODEX_VERSION", "0.169.0")
# A two-turn exec against the local simulator takes a few seconds; anything near this is a hang.
RUN_TIMEOUT_S = 120
MODEL = "gemini-3-flash"  # a Gemini 3 model: the second turn is refused without the cached signature
PROMPT = "call exec_command to run echo hi"


def codex_binary() -> Path:
    """The cached Codex CLI (installed on first use; the test skips, saying why, when that is impossible)."""
    return npm_binary("@openai/codex", CODEX_VERSION, "codex")


def run_codex(
    codex: Path,
    base_url: str,
    home: Path,
    work: Path,
    prompt: str,
    *,
    provider_name: str = "agfast",
    extra_config: str = "",
    keep_session: bool = False,
    resume: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`codex exec` (or `codex exec resume --last`: the session a `keep_session` run saved in `home`) against
    agfast. `provider_name` is what Codex decides remote compaction by; `extra_config` is top-level config.toml."""
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        'model_provider = "agfast"\n'
        f"{extra_config}"
        "[model_providers.agfast]\n"
        f'name = "{provider_name}"\n'
        f'base_url = "{base_url}/v1"\n'
        'env_key = "AGFAST_CODEX_TEST_KEY"\n'
        'wire_api = "responses"\n'
        # agfast already retries upstream; a Codex retry would hide a stream that ended badly.
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(CODEX_HOME=str(home), AGFAST_CODEX_TEST_KEY=KEY, NO_COLOR="1")
    args = [
        str(codex), "exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
        "-C", str(work),
    ]  # fmt: skip
    if resume:
        args += ["resume", "--last"]
    elif not keep_session:
        args.append("--ephemeral")
    args.append(prompt)
    # Its own process group, so a hang can be stopped together with the native binary npm's shim starts.
    proc = subprocess.Popen(
        args, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"codex exec did not finish in {RUN_TIMEOUT_S} s\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_codex_exec_completes_a_tool_round_trip(sim: GoogleSimulator, tmp_path: Path) -> None:
    codex = codex_binary()
    with agfast_on(sim, tmp_path / "data") as st:
        done = run_codex(codex, st.url, tmp_path / "codex-home", tmp_path / "work", PROMPT)
    report = f"exit {done.returncode}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
    assert done.returncode == 0, report
    events: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    items = [e["item"] for e in events if e.get("type") == "item.completed"]
    commands = [i for i in items if i.get("type") == "command_execution"]
    assert len(commands) == 1, report
    assert "sim-cmd" in commands[0]["command"]  # the simulator's sampled argument, run by Codex
    answer = [i["text"] for i in items if i.get("type") == "agent_message"]
    assert answer and answer[-1].startswith(f"[{MODEL}] tool exec_command returned:"), report
    assert "sim-cmd" in answer[-1]  # the command's output travelled back as function_call_output
    assert any(e.get("type") == "turn.completed" for e in events), report

    first, second = generations(sim)
    assert first.status == second.status == 200
    assert first.email == second.email  # prompt_cache_key / session-id keep the conversation on one account
    contents = second.json["request"]["contents"]
    call = next(p for c in contents if c["role"] == "model" for p in c["parts"] if "functionCall" in p)
    assert call["functionCall"]["name"] == "exec_command"
    assert sim.signatures.family_of(call["thoughtSignature"]) == "gemini"
    result = contents[-1]["parts"][0]["functionResponse"]
    assert result["name"] == "exec_command" and result["id"] == call["functionCall"]["id"]


def test_codex_remote_compaction_through_agfast(sim: GoogleSimulator, tmp_path: Path) -> None:
    """Codex 0.169 compacts remotely only for a provider named OpenAI (or Azure): a `/v1/responses` request
    ending in `compaction_trigger`, whose answer must be one `compaction` item. A session of one turn, resumed
    with a compaction limit below its usage: Codex compacts before the new turn, then sends the turn with the
    compaction item in place of the history, and finishes it."""
    codex = codex_binary()
    home, work = tmp_path / "codex-home", tmp_path / "work"
    with agfast_on(sim, tmp_path / "data") as st:
        first = run_codex(codex, st.url, home, work, "say hello", provider_name="OpenAI", keep_session=True)
        assert first.returncode == 0, first.stderr[-3000:]
        sim.clear_requests()
        done = run_codex(
            codex, st.url, home, work, "say hello again", provider_name="OpenAI",
            extra_config="model_auto_compact_token_limit = 1\n", resume=True,
        )  # fmt: skip
    report = f"exit {done.returncode}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
    assert done.returncode == 0, report
    assert "remote compact task" not in done.stdout + done.stderr, report  # Codex's error when compaction fails
    events: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert any(e.get("type") == "turn.completed" for e in events), report

    compaction, turn = generations(sim)
    summary_request = compaction.json["request"]
    assert "tools" not in summary_request
    assert summary_request["contents"][-1]["parts"][-1]["text"] == COMPACTION_PROMPT
    texts = [p.get("text", "") for c in turn.json["request"]["contents"] for p in c["parts"]]
    assert any(t.startswith(SUMMARY_INTRO) for t in texts)  # the history Codex kept: the summary
    assert any("say hello again" in t for t in texts)
