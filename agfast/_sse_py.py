"""Pure-Python reference of the SSE hot path; `_sse.pyx` is its compiled twin and must match it byte for byte."""

from __future__ import annotations

import orjson

_BOM = b"\xef\xbb\xbf"


def frame_event(data: bytes, event: bytes | None = None) -> bytes:
    """One SSE event; data with line breaks becomes several `data:` lines so no reader splits it wrong."""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join([b"data: " + line + b"\n" for line in lines])
    else:
        body = b"data: " + data + b"\n"
    if event is None:
        return body + b"\n"
    return b"event: " + event + b"\n" + body + b"\n"


def unwrap_response(data: bytes) -> bytes:
    """`{"response": X, "traceId": …}` (a v1internal event) → X as compact JSON; anything else unchanged."""
    if not data.startswith(b'{"response"'):
        return data
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    inner = doc.get("response") if isinstance(doc, dict) else None
    if inner is None:
        return data
    return orjson.dumps(inner)


class SSEDecoder:
    """Incremental SSE parser (WHATWG rules): any chunking of the same bytes yields the same events.

    `feed` returns `(event, data)` pairs; `event` is b"" when the stream named none. Comments, `id` and
    `retry` fields are dropped: nothing downstream of agfast's upstream reader uses them.
    """

    __slots__ = ("_buf", "_data", "_event", "_pending_cr", "_started")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event = b""
        self._pending_cr = False
        self._started = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if not chunk:
            return out
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return out
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        pos = 0
        n = len(buf)
        while pos < n:
            lf = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, lf if lf >= 0 else n)
            if cr >= 0:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == 10 else cr + 1
                else:
                    nxt = cr + 1
                    self._pending_cr = True
            elif lf >= 0:
                end = lf
                nxt = lf + 1
            else:
                break
            self._line(buf[pos:end], out)
            pos = nxt
        self._buf = buf[pos:]
        return out

    def close(self) -> list[tuple[bytes, bytes]]:
        """End of stream: a last event without its blank line is still delivered (lenient, like browsers' data)."""
        out: list[tuple[bytes, bytes]] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        if self._data:
            out.append((self._event, b"\n".join(self._data)))
        self._data = []
        self._event = b""
        return out

    def _line(self, line: bytes, out: list[tuple[bytes, bytes]]) -> None:
        if not line:
            if self._data:
                out.append((self._event, b"\n".join(self._data)))
                self._data = []
            self._event = b""
            return
        colon = line.find(b":")
        if colon == 0:
            return
        if colon < 0:
            field = line
            value = b""
        else:
            field = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value
