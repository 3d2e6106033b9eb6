"""The naive reference point: h11 on uvloop answering a fixed JSON, written the obvious way.

Every agfast number is reported next to this one. It uses h11 for both directions (so it pays for h11's
response serialisation on every request, which agfast avoids) and does no routing, auth or timeouts.
"""

from __future__ import annotations

import asyncio
import sys

import h11
import uvloop

BODY = b'{"status":"ok","version":"0.1.0"}'


class Naive(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.conn = h11.Connection(h11.SERVER)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return
            if isinstance(event, h11.EndOfMessage):
                headers = [("content-type", "application/json"), ("content-length", str(len(BODY)))]
                out = self.conn.send(h11.Response(status_code=200, headers=headers))
                out += self.conn.send(h11.Data(data=BODY))  # type: ignore[operator]
                out += self.conn.send(h11.EndOfMessage())  # type: ignore[operator]
                self.transport.write(out)  # type: ignore[arg-type]
                self.conn.start_next_cycle()


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Naive, "127.0.0.1", port)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
