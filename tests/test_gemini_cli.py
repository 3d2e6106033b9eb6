"""The real Gemini CLI (from npm) against agfast + the simulator: the truest test of the Gemini surface."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
from npm_tools import npm_binary
from stack import agfast_on, generations, start_sim

GEMINI_CLI = ("@google/gemini-cli", "0.61.0", "gemini")


def run_gemini(exe: Path, port: int, home: Path, prompt: str) -> subprocess.CompletedProcess[str]:
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    (home / ".gemini" / "settings.json").write_bytes(orjson.dumps(settings))
    work = home / "work"
    work.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "GEMINI_API_KEY": "sk-gemini-cli-test",
        "GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{port}",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "NO_COLOR": "1",
    }
    return subprocess.run([str(exe), "-p", prompt], capture_output=True, text=True, env=env, cwd=work, timeout=120)


def test_gemini_cli_prompt_answered(tmp_path: Path) -> None:
    exe = npm_binary(*GEMINI_CLI)
    with start_sim() as sim, agfast_on(sim, tmp_path / "data") as st:
        done = run_gemini(exe, st.port, tmp_path / "home", "Hello from the Gemini CLI test")
        assert done.returncode == 0, done.stderr[-2000:]
        assert "echo:" in done.stdout and "Hello from the Gemini CLI test" in done.stdout
        sent = generations(sim)
        assert sent and all(r.status == 200 for r in sent)
        # The CLI names models newer than any table (gemini-3.5-flash-lite …): each was routed to one the pool has.
        offered = set(sim.accounts["demo1@sim.local"].models)
        assert {r.model for r in sent} <= offered
        # Its thinkingLevel became a numeric budget: v1internal refuses both at once.
        for r in sent:
            thinking = (r.json or {}).get("request", {}).get("generationConfig", {}).get("thinkingConfig", {})
            assert "thinkingLevel" not in thinking
