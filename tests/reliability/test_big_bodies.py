"""Peak memory of one big request: agfast as a child process, its peak RSS (VmHWM) read from /proc.

A body travels as received bytes → parsed objects → the encoded upstream envelope → the socket. Only one of the
three copies may outlive the step that made the next, so the peak stays within 3× the body (#9.7); the parse
itself is the floor (orjson holds its own copy of the input while it builds the objects). 20 MB by default;
`AGFAST_BIG_BODY_MB=50` measures the size of the issue.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from campaign import knob
from helpers import AgfastProcess, Reader, connect, encode
from stack import KEY, google_env, onboard_all, stack_config

from agfast.sim import GoogleSimulator

MIB = 1024 * 1024
BODY_MB = int(knob("AGFAST_BIG_BODY_MB", 20, 50))
# Peak growth allowed per body byte; the slack absorbs allocator rounding and interpreter noise.
MAX_COPIES = 3
SLACK_MIB = 8
MODEL = "gemini-3-flash"


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def openai_body(text: str) -> tuple[str, bytes]:
    # The conversation ends with a short question: the simulator echoes the last user text, and the answer's
    # size is not what this measures.
    messages = [
        {"role": "user", "content": text},
        {"role": "assistant", "content": "Read it."},
        {"role": "user", "content": "Summarise it."},
    ]
    return "/v1/chat/completions", orjson.dumps({"model": MODEL, "messages": messages})


def gemini_body(text: str) -> tuple[str, bytes]:
    contents = [
        {"role": "user", "parts": [{"text": text}]},
        {"role": "model", "parts": [{"text": "Read it."}]},
        {"role": "user", "parts": [{"text": "Summarise it."}]},
    ]
    return f"/v1beta/models/{MODEL}:generateContent", orjson.dumps({"contents": contents})


@pytest.mark.parametrize("make", [openai_body, gemini_body], ids=["openai", "gemini"])
def test_peak_memory_of_a_big_body_stays_within_three_copies(
    sim: GoogleSimulator, tmp_path: Path, make: object
) -> None:
    cfg = stack_config(tmp_path, sim)
    onboard_all(cfg, sim)
    env = {
        "AGFAST_DATA_DIR": str(tmp_path),
        "AGFAST_PORT": "0",
        "AGFAST_AUTH_MODE": "off",
        "AGFAST_API_KEY": KEY,
        **google_env(sim),
    }
    path, body = make("x" * (BODY_MB * MIB))  # type: ignore[operator]
    with AgfastProcess(env=env) as proc, connect(proc.port, timeout=120) as sock:
        reader = Reader(sock)
        # A small request first: lazy imports, the upstream session and the pool exist before measuring.
        small = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "warm up"}]})
        sock.sendall(encode("POST", "/v1/chat/completions", small, {"content-type": "application/json"}))
        assert reader.read().status == 200
        time.sleep(0.2)
        before = memory(proc.proc.pid)["VmRSS"]
        sock.sendall(encode("POST", path, body, {"content-type": "application/json"}))
        reply = reader.read()
        peak = memory(proc.proc.pid)["VmHWM"]
    assert reply.status == 200, reply.body[:300]
    growth = peak - before
    print(
        f"\n{path}: body {len(body) / MIB:.1f} MiB, RSS before {before / MIB:.0f} MiB, "
        f"peak {peak / MIB:.0f} MiB, growth {growth / MIB:.0f} MiB = {growth / len(body):.2f}x the body"
    )
    assert growth <= MAX_COPIES * len(body) + SLACK_MIB * MIB
