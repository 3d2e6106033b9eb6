# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of `_sse_py.py`: same names, same bytes out for the same bytes in."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcmp, memcpy

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
        cdef const char* hit
        cdef Py_ssize_t n, pos, lf, end, nxt
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
        # Lines are found with memchr (a word at a time), not byte by byte: events are hundreds of bytes long.
        while pos < n:
            hit = <const char*>memchr(p + pos, b'\n', n - pos)
            lf = hit - p if hit != NULL else -1
            hit = <const char*>memchr(p + pos, b'\r', (lf if lf >= 0 else n) - pos)
            if hit != NULL:
                end = hit - p
                if end + 1 < n:
                    nxt = end + 2 if p[end + 1] == b'\n' else end + 1
                else:
                    nxt = end + 1
                    self._pending_cr = True
            elif lf >= 0:
                end = lf
                nxt = lf + 1
            else:
                break
            self._line(buf, pos, end, out)
            pos = nxt
        self._buf = buf[pos:] if pos else buf
        return out

    cpdef list close(self):
        """End of stream: a last event without its blank line is still delivered."""
        cdef list out = []
        if self._buf:
            self._line(self._buf, 0, PyBytes_GET_SIZE(self._buf), out)
            self._buf = b""
        if self._data:
            out.append((self._event, b"\n".join(self._data)))
        self._data = []
        self._event = b""
        return out

    cdef void _line(self, bytes buf, Py_ssize_t start, Py_ssize_t end, list out):
        """The line buf[start:end], read in place: only a field's value is copied out."""
        cdef const char* p = PyBytes_AS_STRING(buf)
        cdef const char* hit
        cdef Py_ssize_t colon, field_len, value_at
        if start == end:
            if self._data:
                out.append((self._event, b"\n".join(self._data)))
                self._data = []
            self._event = b""
            return
        if p[start] == b':':
            return
        hit = <const char*>memchr(p + start, b':', end - start)
        if hit == NULL:
            field_len = end - start
            value_at = end
        else:
            colon = hit - p
            field_len = colon - start
            value_at = colon + 2 if colon + 1 < end and p[colon + 1] == b' ' else colon + 1
        if field_len == 4 and memcmp(p + start, b"data", 4) == 0:
            self._data.append(buf[value_at:end])
        elif field_len == 5 and memcmp(p + start, b"event", 5) == 0:
            self._event = buf[value_at:end]


# -- the per-event fast path: v1internal event bytes → client bytes ------------------------------------------

cdef bytes _DONE = b"[DONE]"
cdef int _THINKING_KIND = 1  # convert.anthropic_stream's THINKING block kind
cdef int _TEXT_KIND = 2  # and its TEXT
cdef bytes _DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
cdef bytes _TEXT_DELTA_MID = b',"delta":{"type":"text_delta","text":'
cdef bytes _THINKING_DELTA_MID = b',"delta":{"type":"thinking_delta","thinking":'
cdef bytes _DELTA_TAIL = b'}}\n\n'
cdef bytes _CHUNK_TAIL = b'},"finish_reason":null}]}\n\n'
cdef bytes _ROLE = b'"role":"assistant",'
cdef bytes _REASONING = b'"reasoning_content":'
cdef bytes _CONTENT = b'"content":'
cdef bytes _COMMA_CONTENT = b',"content":'
cdef bytes _EMPTY = b""
cdef list _NO_PARTS = []  # "the event has no parts", told apart from None ("not for the fast path")


cdef bytes _concat(bytes a, bytes b, bytes c, bytes d, bytes e):
    """a + b + c + d + e in one allocation (the per-event output is built from five pieces)."""
    cdef Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b), lc = PyBytes_GET_SIZE(c)
    cdef Py_ssize_t ld = PyBytes_GET_SIZE(d), le = PyBytes_GET_SIZE(e)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, la + lb + lc + ld + le)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(a), la)
    p += la
    memcpy(p, PyBytes_AS_STRING(b), lb)
    p += lb
    memcpy(p, PyBytes_AS_STRING(c), lc)
    p += lc
    memcpy(p, PyBytes_AS_STRING(d), ld)
    p += ld
    memcpy(p, PyBytes_AS_STRING(e), le)
    return out


cdef class _Deltas:
    """What both fast paths share: taking an event apart, and the run loop."""

    cdef public object usage  # the last usageMetadata taken here, until the converter takes it
    cdef object _meta  # the usageMetadata of the event `_plain` last read

    cdef object _plain(self, bytes data):
        """The parts of an event that only carries text or thought text for candidate 0 (_NO_PARTS when none),
        its usageMetadata in `_meta`; None when the event is not for the fast path."""
        cdef object doc, inner, meta, candidates, cand, index, content, parts, part
        try:
            doc = _loads(data)
        except _JSONDecodeError:
            return None
        if type(doc) is not dict:
            return None
        inner = (<dict>doc).get("response", doc)
        if type(inner) is not dict or (<dict>inner).get("error") is not None:
            return None
        meta = (<dict>inner).get("usageMetadata")
        if meta is not None and (type(meta) is not dict or not meta):
            return None
        self._meta = meta
        candidates = (<dict>inner).get("candidates")
        if not candidates:
            return _NO_PARTS
        if type(candidates) is not list or len(<list>candidates) != 1:
            return None
        cand = (<list>candidates)[0]
        if type(cand) is not dict or (<dict>cand).get("finishReason"):
            return None
        index = (<dict>cand).get("index", 0)
        if type(index) is not int or index != 0:
            return None
        content = (<dict>cand).get("content")
        if content is None:
            return _NO_PARTS
        if type(content) is not dict:
            return None
        parts = (<dict>content).get("parts")
        if not parts:
            return _NO_PARTS
        if type(parts) is not list:
            return None
        for part in <list>parts:
            if (
                type(part) is not dict
                or type((<dict>part).get("text")) is not str
                or (<dict>part).get("thoughtSignature")
                or (<dict>part).get("functionCall") is not None
            ):
                return None
        return parts

    cdef object _emit(self, list parts):
        """The client bytes for an event's parts, or None when the converter must take the event."""
        return _EMPTY

    cdef bint _open(self):
        return True

    cpdef tuple convert(self, list batch, Py_ssize_t start):
        """Events `batch[start:stop]` as client bytes, stopping before the first one the fast path does not take."""
        cdef list out = None
        cdef bytes first = _EMPTY
        cdef object usage = None, parts, emitted
        cdef Py_ssize_t k = start, n = len(batch)
        cdef bytes data
        while k < n and self._open():
            data = <bytes>batch[k]
            if data == _DONE:
                k += 1
                continue
            parts = self._plain(data)
            if parts is None:
                break
            if parts is not _NO_PARTS:
                emitted = self._emit(<list>parts)
                if emitted is None:
                    break
                if PyBytes_GET_SIZE(emitted):
                    if not PyBytes_GET_SIZE(first):
                        first = emitted
                    else:
                        if out is None:
                            out = [first]
                        out.append(emitted)
            if self._meta is not None:
                usage = self._meta
            k += 1
        if usage is not None:
            self.usage = usage
        return (first if out is None else _EMPTY.join(out)), k, usage


cdef class ChatDeltas(_Deltas):
    """The per-event fast path of `convert.openai_chat.ChatStream`: text and reasoning deltas of choice 0."""

    cdef bytes _head
    cdef public set started

    def __init__(self, bytes head, set started):
        self._head = b"data: " + head + b'{"index":0,"delta":{'
        self.started = started
        self.usage = None

    cdef object _emit(self, list parts):
        cdef object part
        cdef str reasoning = "", text = ""
        cdef list many_reasoning = None, many_text = None
        for part in parts:
            if (<dict>part).get("thought"):
                if not reasoning:
                    reasoning = <str>(<dict>part)["text"]
                else:
                    if many_reasoning is None:
                        many_reasoning = [reasoning]
                    many_reasoning.append((<dict>part)["text"])
            else:
                if not text:
                    text = <str>(<dict>part)["text"]
                else:
                    if many_text is None:
                        many_text = [text]
                    many_text.append((<dict>part)["text"])
        if many_reasoning is not None:
            reasoning = "".join(many_reasoning)
        if many_text is not None:
            text = "".join(many_text)
        if not reasoning and not text:
            return _EMPTY
        cdef bytes role = _EMPTY
        if 0 not in self.started:
            self.started.add(0)
            role = _ROLE
        if not reasoning:
            return _concat(self._head, role, _CONTENT, _dumps(text), _CHUNK_TAIL)
        if not text:
            return _concat(self._head, role, _REASONING, _dumps(reasoning), _CHUNK_TAIL)
        return _concat(self._head, role, _REASONING, _dumps(reasoning), _COMMA_CONTENT + _dumps(text) + _CHUNK_TAIL)


cdef class AnthropicDeltas(_Deltas):
    """The per-event fast path of `convert.anthropic_stream.StreamConverter`: deltas into the open block."""

    cdef public bint omit_thinking
    cdef public bint ready
    cdef public int kind
    cdef int _index
    cdef bytes _index_text

    def __init__(self, bint omit_thinking):
        self.omit_thinking = omit_thinking
        self.ready = False
        self.kind = 0
        self.index = -1
        self.usage = None

    @property
    def index(self):
        return self._index

    @index.setter
    def index(self, int value):
        if value != self._index or self._index_text is None:
            self._index = value
            self._index_text = str(value).encode()

    cdef bint _open(self):
        return self.ready

    cdef object _emit(self, list parts):
        cdef list out = None
        cdef bytes first = _EMPTY, event
        cdef object part
        cdef str text
        for part in parts:
            text = <str>(<dict>part)["text"]
            if (<dict>part).get("thought"):
                if self.kind != _THINKING_KIND:
                    return None
                if not text or self.omit_thinking:
                    continue
                event = _concat(_DELTA_HEAD, self._index_text, _THINKING_DELTA_MID, _dumps(text), _DELTA_TAIL)
            elif text:
                if self.kind != _TEXT_KIND:
                    return None
                event = _concat(_DELTA_HEAD, self._index_text, _TEXT_DELTA_MID, _dumps(text), _DELTA_TAIL)
            else:
                continue
            if not PyBytes_GET_SIZE(first):
                first = event
            else:
                if out is None:
                    out = [first]
                out.append(event)
        return first if out is None else _EMPTY.join(out)
