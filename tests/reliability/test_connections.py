"""Many connections and slow ones: every client is answered or timed out, healthz stays prompt, memory flat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from campaign import report, rss_kib, size
from helpers import AgfastProcess, seed_account

CONNECTIONS = size(2000, 2000)
SLOW_CLIENTS = size(200, 1000)
HEADER_TIMEOUT = 2.0
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture
def agfast(tmp_path: Path) -> Iterator[AgfastProcess]:
    (tmp_path / "config.toml").write_text(f'api_key = "sk-campaign-key-0001"\nheader_timeout = {HEADER_TIMEOUT}\n')
    seed_account(tmp_path)
    with AgfastProcess("--port", "0", "--data-dir", str(tmp_path)) as proc:
        yield proc
        assert proc.stop() == 0


async def _healthz_seconds(port: int) -> float:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEALTHZ)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    return time.monotonic() - started


async def _many(port: int, pid: int) -> dict[str, object]:
    before = rss_kib(pid)
    conns = []
    for _ in range(CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEALTHZ)  # at once: a connection that stays silent past header_timeout is closed
        conns.append((reader, writer))
    answered = 0
    for reader, _ in conns:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        answered += head.startswith(b"HTTP/1.1 200")
    # All connections open and idle (keep-alive): the server holds them at a small cost each.
    held = rss_kib(pid)
    prompt = await _healthz_seconds(port)
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(0.5)
    return {"answered": answered, "rss_before_kib": before, "rss_held_kib": held, "healthz_s": round(prompt, 3)}


def test_two_thousand_connections_at_once(agfast: AgfastProcess) -> None:
    figures = asyncio.run(_many(agfast.port, agfast.proc.pid))
    report("connections at once", connections=CONNECTIONS, **figures)
    assert figures["answered"] == CONNECTIONS
    assert figures["healthz_s"] < 1.0  # type: ignore[operator]
    # Bounded per connection: well under 32 KiB each on top of the idle process.
    assert figures["rss_held_kib"] - figures["rss_before_kib"] < CONNECTIONS * 32  # type: ignore[operator]


async def _slowloris(port: int) -> dict[str, object]:
    async def slow() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        try:
            # One byte every half second, forever: only the server's total head deadline ends this.
            for _ in range(int(HEADER_TIMEOUT * 2 * 4)):
                try:
                    return await asyncio.wait_for(reader.read(4096), 0.5)
                except TimeoutError:
                    writer.write(b"a")
            return b""
        except ConnectionError:
            return b""
        finally:
            writer.close()

    started = time.monotonic()
    slow_tasks = [asyncio.create_task(slow()) for _ in range(SLOW_CLIENTS)]
    await asyncio.sleep(HEADER_TIMEOUT / 2)
    worst = max([await _healthz_seconds(port) for _ in range(5)])
    answers = await asyncio.gather(*slow_tasks)
    return {
        "timed_out_408": sum(a.startswith(b"HTTP/1.1 408") for a in answers),
        "healthz_worst_s": round(worst, 3),
        "seconds": round(time.monotonic() - started, 1),
    }


def test_slowloris_heads_time_out_and_healthz_stays_prompt(agfast: AgfastProcess) -> None:
    figures = asyncio.run(_slowloris(agfast.port))
    report("slowloris", clients=SLOW_CLIENTS, header_timeout_s=HEADER_TIMEOUT, **figures)
    assert figures["timed_out_408"] == SLOW_CLIENTS
    assert figures["healthz_worst_s"] < 1.0  # type: ignore[operator]
    # The head deadline is total (not per byte): every slow client was cut near header_timeout + one tick.
    assert figures["seconds"] < HEADER_TIMEOUT * 4  # type: ignore[operator]
