"""A bounded soak: every surface at once, with upstream faults mixed in; nothing hangs, leaks or breaks."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import orjson
from stack import Fault, agfast_on

from agfast.sim import GoogleSimulator

REQUESTS = 240
CONCURRENCY = 24
PROMPT = "Soak test prompt number"


def bodies(i: int) -> tuple[str, bytes]:
    text = f"{PROMPT} {i}"
    kind = i % 6
    if kind == 0:
        return "/v1/chat/completions", orjson.dumps(
            {"model": "gemini-3-flash", "stream": True, "messages": [{"role": "user", "content": text}]}
        )
    if kind == 1:
        return "/v1/chat/completions", orjson.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
        )
    if kind == 2:
        return "/v1/messages", orjson.dumps(
            {"model": "claude-sonnet-4-6", "max_tokens": 2048, "stream": True,
             "messages": [{"role": "user", "content": text}]}
        )  # fmt: skip
    if kind == 3:
        return "/v1/messages", orjson.dumps(
            {"model": "claude-opus-4-8", "max_tokens": 4096, "messages": [{"role": "user", "content": text}]}
        )
    if kind == 4:
        return "/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse", orjson.dumps(
            {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        )
    return "/v1/responses", orjson.dumps({"model": "gemini-3-flash", "input": text, "stream": True})


async def soak(port: int) -> list[int]:
    statuses: list[int] = []
    sem = asyncio.Semaphore(CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=timeout) as session:

        async def one(i: int) -> None:
            path, body = bodies(i)
            async with sem:
                if i % 17 == 0:
                    # A client that gives up mid-answer.
                    async with session.post(path, data=body, headers={"content-type": "application/json"}) as r:
                        await r.content.read(10)
                    statuses.append(-1)
                    return
                async with session.post(path, data=body, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    statuses.append(r.status)

        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    return statuses


def test_soak_every_surface_with_faults(sim: GoogleSimulator, tmp_path: Path) -> None:
    rng = random.Random(7)
    with agfast_on(sim, tmp_path) as st:
        for _ in range(30):
            kind = rng.choice(["status", "status", "disconnect", "empty_stream", "slow_first_byte"])
            if kind == "status":
                status = rng.choice([429, 500, 503, 404, 401])
                sim.script(Fault("status", status=status, action="streamGenerateContent", times=1))
            elif kind == "disconnect":
                sim.script(Fault("disconnect", after_chunks=1, action="streamGenerateContent", times=1))
            elif kind == "slow_first_byte":
                sim.script(Fault("slow_first_byte", delay=0.2, action="streamGenerateContent", times=1))
            else:
                sim.script(Fault("empty_stream", action="streamGenerateContent", times=1))
        started = time.monotonic()
        statuses = asyncio.run(soak(st.port))
        assert time.monotonic() - started < 60
        assert len(statuses) == REQUESTS
        answered = [s for s in statuses if s != -1]
        # Faults are absorbed by retries and rotation: nearly everything succeeds; what does not is a clean error.
        assert sum(s == 200 for s in answered) >= len(answered) * 0.9
        assert set(answered) <= {200, 404, 429, 502, 503}
        # The server is idle again: no connection or handler left behind.
        deadline = time.monotonic() + 5
        while st.server.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert st.server.in_flight == 0
        assert st.call(lambda: [c.task for c in st.server.state.connections if c.task is not None]) == []  # type: ignore[union-attr]
        sim.clear_faults()
        ok = asyncio.run(soak_one(st.port))
        assert ok == 200


async def soak_one(port: int) -> int:
    async with aiohttp.ClientSession() as session:
        body = orjson.dumps({"model": "gemini-3-flash", "messages": [{"role": "user", "content": "still fine?"}]})
        async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", data=body) as r:
            await r.read()
            return r.status
