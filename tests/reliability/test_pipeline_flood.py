"""Clients that pipeline requests and never read the answers: memory stays bounded, others keep being served.

Campaign size: AGFAST_FLOOD_CONNECTIONS non-reading connections (4; 16 at full size), each flooding for
AGFAST_FLOOD_SECONDS (3; 30 at full size).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from campaign import knob
from helpers import AgfastProcess, Reader, ServerThread, connect, encode, make_config, request, seed_account

from agfast.http import protocol

CONNECTIONS = int(knob("AGFAST_FLOOD_CONNECTIONS", 4, 16))
SECONDS = knob("AGFAST_FLOOD_SECONDS", 3, 30)
KEY = "sk-flood-test-key-0001"
# What a held connection may cost the server: its parser's unread input (one socket read, 256 KiB in uvloop),
# unsent output up to the high-water mark plus one answer, and allocator slack. Before the fix a 3 s flood
# by 4 connections grew the server by hundreds of MiB.
ALLOWED_GROWTH_MIB = 24 + 2 * CONNECTIONS
# A fresh client must be served while the flood runs (generous: the test box's 2 cores are shared).
HEALTH_DEADLINE = 2.0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Flood:
    """N connections that send the same pipelined request as fast as the server takes it and read nothing."""

    def __init__(self, port: int, request_bytes: bytes, connections: int, seconds: float) -> None:
        self.blob = request_bytes * max(1, 65536 // len(request_bytes))
        self.sent = 0
        self.stop_at = time.monotonic() + seconds
        self.socks: list[socket.socket] = []
        for _ in range(connections):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A small receive window: the kernel holds little of our answers, the server must hold the rest.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.settimeout(0.2)
            self.socks.append(sock)
        self.threads = [threading.Thread(target=self._send, args=(s,), daemon=True) for s in self.socks]
        self.lock = threading.Lock()

    def _send(self, sock: socket.socket) -> None:
        while time.monotonic() < self.stop_at:
            try:
                n = sock.send(self.blob)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.sent += n

    def __enter__(self) -> Flood:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.threads:
            t.join(self.stop_at - time.monotonic() + 5)
        for sock in self.socks:
            sock.close()


def timed_health(port: int, headers: dict[str, str] | None = None) -> float:
    """Seconds for `/healthz` on a fresh connection; infinity when it did not answer within the deadline."""
    started = time.monotonic()
    try:
        with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=HEALTH_DEADLINE)) as sock:
            sock.sendall(encode("GET", "/healthz", headers=headers))
            assert Reader(sock).read().status == 200
    except TimeoutError:
        return float("inf")
    return time.monotonic() - started


FLOODS = [
    # (name, auth flags, what each pipelined request is)
    ("models", ("--auth-mode", "off"), encode("GET", "/v1/models")),
    ("health unauthenticated", ("--auth-mode", "all_except_health", "--api-key", KEY), encode("GET", "/healthz")),
    ("401 early answers", ("--auth-mode", "all_except_health", "--api-key", KEY), encode("GET", "/v1/models")),
    ("404 early answers", ("--auth-mode", "off"), encode("GET", "/nope")),
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    seed_account(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("name", "flags", "one"), FLOODS, ids=[f[0] for f in FLOODS])
def test_non_reading_pipeliners_keep_memory_bounded(
    data_dir: Path, name: str, flags: tuple[str, ...], one: bytes
) -> None:
    with AgfastProcess("--port", "0", "--data-dir", str(data_dir), *flags) as proc:
        pid, port = proc.proc.pid, proc.port
        headers = {"x-api-key": KEY}
        timed_health(port, headers)
        before = rss_mib(pid)
        peak, slowest = before, 0.0
        with Flood(port, one, CONNECTIONS, SECONDS) as flood:
            while time.monotonic() < flood.stop_at:
                slowest = max(slowest, timed_health(port, headers))
                peak = max(peak, rss_mib(pid))
                time.sleep(0.25)
        sent_mib = flood.sent / 2**20
        time.sleep(0.5)
        after_health = timed_health(port, headers)
        after = rss_mib(pid)
        print(
            f"\n{name}: {CONNECTIONS} conns x {SECONDS:.0f} s sent {sent_mib:.1f} MiB, {proc.access_lines} answered; "
            f"RSS {before:.1f} -> peak "
            f"{peak:.1f} -> after {after:.1f} MiB; slowest /healthz {slowest * 1000:.0f} ms, "
            f"after {after_health * 1000:.0f} ms"
        )
        assert peak - before < ALLOWED_GROWTH_MIB
        assert after - before < ALLOWED_GROWTH_MIB
        assert slowest < HEALTH_DEADLINE
        assert proc.stop() == 0
        assert proc.access_lines > 0  # the flood was served (and logged) while it lasted, not just parked


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(make_config(tmp_path, auth_mode="off")) as st:
        yield st


def buffered(server: ServerThread) -> list[tuple[int, int]]:
    """Per connection: (unsent output bytes, unparsed input bytes), read on the server's loop."""

    def read() -> list[tuple[int, int]]:
        return [
            (c.transport.get_write_buffer_size() if c.transport else 0, len(c.conn.trailing_data[0]))
            for c in server.server.state.connections  # type: ignore[union-attr]
        ]

    return server.call(read)  # type: ignore[no-any-return]


def test_held_connections_buffer_little_and_release_it_when_they_leave(server: ServerThread) -> None:
    with Flood(server.port, encode("GET", "/v1/models"), 2, 1.5) as flood:
        time.sleep(1.0)
        held = buffered(server)
        assert len(held) == 2
        for unsent, unparsed in held:
            assert unsent < 256 * 1024
            assert unparsed < 512 * 1024
        assert flood.sent > 0
    # Closed by the client with our answers unread: the server drops them with the connection.
    deadline = time.monotonic() + 5
    while buffered(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert buffered(server) == []
    assert request(server.port, "GET", "/healthz").status == 200


def request_number(reply_id: str) -> int:
    return int(reply_id.rsplit("_", 1)[1], 16)


def test_slow_steady_reader_gets_every_pipelined_answer_in_order(tmp_path: Path) -> None:
    """Backpressure only delays: a client that pipelines far more than the buffers hold and reads slowly, pausing
    for well under the deadline (2 s here) each time, gets every answer, in order."""
    cfg = make_config(tmp_path, auth_mode="off", header_timeout=2.0, keepalive_timeout=2.0)
    count = 4000  # 26 MB of answers: more than the kernel buffers take
    with ServerThread(cfg) as st, contextlib.closing(connect(st.port, timeout=10)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sender = threading.Thread(target=sock.sendall, args=(encode("GET", "/v1/models") * count,), daemon=True)
        sender.start()
        held = time.monotonic() + 5
        while not any(unsent for unsent, _ in buffered(st)) and time.monotonic() < held:
            time.sleep(0.02)
        assert buffered(st)[0][0] > 0  # answers wait in the server's own buffer: it is holding this connection
        reader = Reader(sock)
        numbers = []
        for i in range(count):
            numbers.append(request_number(reader.read().headers["x-request-id"]))
            if i % 1000 == 999:
                time.sleep(0.2)
        sender.join(10)
    assert numbers == sorted(numbers) and len(set(numbers)) == count


MODELS_BATCH = encode("GET", "/v1/models") * 2000  # 80 KB asking for 13 MB: read whole before the server holds


@pytest.mark.parametrize("sender", ["flood", "one batch"])
def test_non_reader_that_stays_connected_is_cut_after_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sender: str
) -> None:
    """Closed at its phase deadline (0.5 s here); aborted once it took nothing for CLOSE_LINGER (1 s here)."""
    monkeypatch.setattr(protocol, "CLOSE_LINGER", 1.0)
    cfg = make_config(tmp_path, auth_mode="off", header_timeout=0.5, keepalive_timeout=0.5)
    with ServerThread(cfg) as st, Flood(st.port, encode("GET", "/v1/models"), 1, 0.5) as flood:
        if sender == "one batch":
            flood.stop_at = 0.0
            flood.socks[0].sendall(MODELS_BATCH)
        time.sleep(0.6)  # the sending is over; the socket stays open, nothing read
        assert len(buffered(st)) == 1
        deadline = time.monotonic() + 6
        while buffered(st) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert buffered(st) == []


def test_held_connection_closed_at_its_deadline_still_delivers_what_it_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its requests all read, a held connection past its deadline is closed, not cut: a client that then reads
    (slowly, never stopping for CLOSE_LINGER) gets every answer already made, whole, then the end."""
    monkeypatch.setattr(protocol, "CLOSE_LINGER", 2.0)
    cfg = make_config(tmp_path, auth_mode="off", header_timeout=0.5, keepalive_timeout=0.5)
    with ServerThread(cfg) as st, contextlib.closing(connect(st.port, timeout=10)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(MODELS_BATCH)
        closed = time.monotonic() + 5  # the deadline (0.5 s) is seen by the 1 s tick
        while st.call(lambda: [c.closed for c in st.server.state.connections]) != [True]:
            assert time.monotonic() < closed
            time.sleep(0.05)
        reader = Reader(sock)
        numbers = []
        with contextlib.suppress(EOFError):
            while True:
                numbers.append(request_number(reader.read().headers["x-request-id"]))
                if len(numbers) % 200 == 0:
                    time.sleep(0.3)
        print(f"\n{len(numbers)} answers delivered after the close")
        assert 0 < len(numbers) < 2000
        assert numbers == sorted(numbers)
        assert reader.buf == b""  # ended after a whole answer, by FIN, not by a reset
        assert reader.closed()


def test_pipelined_requests_before_a_half_close_are_all_answered(server: ServerThread) -> None:
    """Served a turn at a time, the requests sent before EOF still all get answers, then the server hangs up."""
    count = 200
    with contextlib.closing(connect(server.port)) as sock:
        sock.sendall(encode("GET", "/healthz") * count)
        sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        assert [reader.read().status for _ in range(count)] == [200] * count
        assert reader.closed()
