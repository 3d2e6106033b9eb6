"""Small outbound proxies for the tests: HTTP CONNECT and SOCKS5, each on its own loop in a thread.

Each records the targets it was asked to reach, so a test can tell that a call went through it (and which
credentials it was given); either can demand a user and password (407 / SOCKS auth failure otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import struct
import threading
from dataclasses import dataclass, field

# A CONNECT head longer than this is no client of ours.
MAX_HEAD = 16 * 1024


@dataclass
class ProxyLog:
    targets: list[tuple[str, int]] = field(default_factory=list)
    refused: int = 0  # attempts whose credentials were missing or wrong
    sent: bytearray = field(default_factory=bytearray)  # what clients sent through the tunnels (plain HTTP here)


class _ProxyThread:
    url_scheme = ""

    def __init__(self, credentials: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: the proxy itself speaks TLS (an `https://` proxy)."""
        self.credentials = credentials
        self.tls = tls
        if tls is not None:
            self.url_scheme = "https"
        self.log = ProxyLog()
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    def __enter__(self) -> _ProxyThread:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            # let every connection finish closing (a TLS close takes a few turns) before the loop stops
            waits = [w.wait_closed() for w in list(self._writers)]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 5)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer: asyncio.StreamWriter | None = None
        self._writers.add(writer)
        try:
            target = await self._negotiate(reader, writer)
            if target is None:
                return
            self.log.targets.append(target)
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
            self._writers.add(upstream_writer)
            await self._accepted(writer)
            await asyncio.gather(_pipe(reader, upstream_writer, self.log.sent), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            for opened in (writer, upstream_writer):
                if opened is not None:
                    opened.close()
                    with contextlib.suppress(Exception):
                        await opened.wait_closed()
                    self._writers.discard(opened)

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        raise NotImplementedError

    async def _accepted(self, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: bytearray | None = None) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            if seen is not None:
                seen += data
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


class HttpConnectProxy(_ProxyThread):
    """`CONNECT host:port`, with Basic Proxy-Authorization when credentials are set."""

    url_scheme = "http"

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            return None
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if self.credentials is not None:
            wanted = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if headers.get("proxy-authorization") != wanted:
                self.log.refused += 1
                writer.write(
                    b'HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm="t"\r\n'
                    b"content-length: 0\r\n\r\n"
                )
                await writer.drain()
                return None
        host, _, port = target.rpartition(":")
        return host.strip("[]"), int(port)

    async def _accepted(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()


class Socks5Proxy(_ProxyThread):
    """RFC 1928 CONNECT, with RFC 1929 user/password when credentials are set."""

    url_scheme = "socks5"

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5:
            return None
        wanted = 2 if self.credentials is not None else 0
        if wanted not in methods:
            writer.write(b"\x05\xff")
            self.log.refused += 1
            return None
        writer.write(bytes((5, wanted)))
        if wanted == 2:
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            if (user, password) != self.credentials:
                writer.write(b"\x01\x01")
                self.log.refused += 1
                return None
            writer.write(b"\x01\x00")
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = ".".join(str(b) for b in await reader.readexactly(4))
        elif kind == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        else:
            host = ":".join(f"{a:02x}{b:02x}" for a, b in zip(*[iter(await reader.readexactly(16))] * 2))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != 1:
            writer.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return None
        return host, port

    async def _accepted(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x00")
        await writer.drain()


def proxy_url(proxy: _ProxyThread, credentials: tuple[str, str] | None = None) -> str:
    auth = f"{credentials[0]}:{credentials[1]}@" if credentials else ""
    return f"{proxy.url_scheme}://{auth}127.0.0.1:{proxy.port}"
