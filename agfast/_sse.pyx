# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of `_sse_py.py`: same names, same bytes out for the same bytes in."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

import orjson

cdef object _loads = orjson.loads
cdef object _dumps = orjson.dumps
cdef object _JSONDecodeError = orjson.JSONDecodeError

cdef bytes _BOM = b"\xef\xbb\xbf"


cpdef bytes frame_event(bytes data, object event=None):
    """One SSE event; data with line breaks becomes several `data:` lines so no reader splits it wrong."""
    cdef bytes body
    cdef list lines
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join([b"data: " + line + b"\n" for line in lines])
    else:
        body = b"data: " + data + b"\n"
    if event is None:
        return body + b"\n"
    return b"event: " + <bytes>event + b"\n" + body + b"\n"


cpdef bytes unwrap_response(bytes data):
    """`{"response": X, "traceId": …}` (a v1internal event) → X as compact JSON; anything else unchanged."""
    cdef object doc, inner
    if not data.startswith(b'{"response"'):
        return data
    try:
        doc = _loads(data)
    except _JSONDecodeError:
        return data
    inner = doc.get("response") if isinstance(doc, dict) else None
    if inner is None:
        return data
    return _dumps(inner)


cdef class SSEDecoder:
    """Incremental SSE parser (WHATWG rules): any chunking of the same bytes yields the same events."""

    cdef bytes _buf
    cdef list _data
    cdef bytes _event
    cdef bint _pending_cr
    cdef bint _started

    def __init__(self):
        self._buf = b""
        self._data = []
        self._event = b""
        self._pending_cr = False
        self._started = False

    cpdef list feed(self, bytes chunk):
        cdef list out = []
        cdef bytes buf
        cdef const char* p
        cdef Py_ssize_t n, pos, i, end, nxt
        cdef char c
        if not chunk:
            return out
        if self._pending_cr:
            self._pending_cr = False
            if PyBytes_GET_SIZE(chunk) > 0 and PyBytes_AS_STRING(chunk)[0] == b'\n':
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if PyBytes_GET_SIZE(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return out
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        p = PyBytes_AS_STRING(buf)
        n = PyBytes_GET_SIZE(buf)
        pos = 0
        i = 0
        while i < n:
            c = p[i]
            if c == b'\n':
                end = i
                nxt = i + 1
            elif c == b'\r':
                end = i
                if i + 1 < n:
                    nxt = i + 2 if p[i + 1] == b'\n' else i + 1
                else:
                    nxt = i + 1
                    self._pending_cr = True
            else:
                i += 1
                continue
            self._line(buf[pos:end], out)
            pos = nxt
            i = nxt
        self._buf = buf[pos:]
        return out

    cpdef list close(self):
        """End of stream: a last event without its blank line is still delivered."""
        cdef list out = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        if self._data:
            out.append((self._event, b"\n".join(self._data)))
        self._data = []
        self._event = b""
        return out

    cdef void _line(self, bytes line, list out):
        cdef Py_ssize_t colon
        cdef bytes field, value
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
            value = line[colon + 2:] if line[colon + 1:colon + 2] == b" " else line[colon + 1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value
