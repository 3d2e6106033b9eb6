# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of `_sse_py.py`: same names, same bytes out for the same bytes in."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
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


# -- the collector step: a non-streaming answer's plain events folded into its message -----------------------
#
# The collector steps (`ChatFold`, `AnthropicFold`) read each event's bytes with the small scanner below instead
# of `orjson.loads`: it follows the JSON to the few fields a collector needs (candidates[0].content.parts[*].text/thought, finishReason,
# usageMetadata, error) and only checks the rest. It takes an event only when it reads it exactly as orjson
# would (valid UTF-8, no control characters in strings, no key it looks at escaped or repeated, no lone
# surrogate, numbers of ordinary size, nesting within _MAX_DEPTH); anything else stops the run and goes to the
# collector, parsed, as before. Text is decoded into one growing UTF-8 buffer per run.

cdef enum:
    _MAX_DEPTH = 32  # nesting the scanner follows; deeper events (orjson allows 1,024) go to the Python path
    _MAX_INT_DIGITS = 18  # an integer part orjson reads as an int64 for sure; longer ones go to the Python path
    _MAX_EXP_DIGITS = 2  # an exponent this short keeps any accepted number finite; longer ones, the Python path
    _MIN_TEXT_ROOM = 1024  # a run's first text buffer: a few events' text before it has to grow

ctypedef const unsigned char* cursor

cdef struct _Text:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int _reserve(_Text* buf, Py_ssize_t more) except -1:
    """Room for `more` bytes after the text (grown at least twofold: a run appends event after event)."""
    cdef Py_ssize_t need = buf.size + more
    cdef Py_ssize_t cap = buf.cap * 2
    cdef char* grown
    if need <= buf.cap:
        return 0
    if cap < need:
        cap = need
    if cap < _MIN_TEXT_ROOM:
        cap = _MIN_TEXT_ROOM
    grown = <char*>PyMem_Realloc(buf.data, cap)
    if grown == NULL:
        raise MemoryError()
    buf.data = grown
    buf.cap = cap
    return 0


cdef inline cursor _ws(cursor p, cursor end) noexcept:
    while p < end and (p[0] == 32 or p[0] == 10 or p[0] == 13 or p[0] == 9):
        p += 1
    return p


cdef inline int _hex4(cursor p) noexcept:
    """Four hex digits' value, -1 when they are not."""
    cdef int value = 0, digit, i
    cdef unsigned char c
    for i in range(4):
        c = p[i]
        if 48 <= c <= 57:
            digit = c - 48
        elif 97 <= c <= 102:
            digit = c - 87
        elif 65 <= c <= 70:
            digit = c - 55
        else:
            return -1
        value = value * 16 + digit
    return value


cdef inline Py_ssize_t _utf8_len(cursor p, cursor end) noexcept:
    """The length of the well-formed UTF-8 sequence (Unicode table 3-7) starting at p (a byte >= 0x80), else 0."""
    cdef unsigned char c = p[0], lo = 0x80, hi = 0xBF
    cdef Py_ssize_t n, i
    if c < 0xC2:
        return 0
    if c < 0xE0:
        n = 2
    elif c < 0xF0:
        n = 3
        if c == 0xE0:
            lo = 0xA0
        elif c == 0xED:
            hi = 0x9F
    elif c < 0xF5:
        n = 4
        if c == 0xF0:
            lo = 0x90
        elif c == 0xF4:
            hi = 0x8F
    else:
        return 0
    if end - p < n or p[1] < lo or p[1] > hi:
        return 0
    for i in range(2, n):
        if p[i] < 0x80 or p[i] > 0xBF:
            return 0
    return n


cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil

# Byte masks for eight bytes at a time (typed here: as literals Cython would compute them as Python ints).
cdef uint64_t _ONES = 0x0101010101010101
cdef uint64_t _HIGHS = _ONES * 0x80
cdef uint64_t _QUOTES = _ONES * 0x22
cdef uint64_t _SLASHES = _ONES * 0x5C
cdef uint64_t _SPACES = _ONES * 0x20
cdef uint64_t _ONE = 1
cdef bint _LITTLE_ENDIAN = (<unsigned char*>&_ONE)[0] == 1  # where a word's first byte is its lowest


cdef inline uint64_t _stops(uint64_t word) noexcept:
    """The high bit of each byte of `word` that is a quote, a backslash, a control or a non-ASCII byte (exact up to
    the first one: a borrow can only mark bytes after it)."""
    cdef uint64_t quote = word ^ _QUOTES, slash = word ^ _SLASHES
    return (((quote - _ONES) & ~quote) | ((slash - _ONES) & ~slash) | ((word - _SPACES) & ~word) | word) & _HIGHS


cdef cursor _string(cursor p, cursor end, bint* escaped) noexcept:
    """p just past a string's opening quote → just past its closing quote; NULL when it is not one."""
    cdef unsigned char c
    cdef int unit
    cdef Py_ssize_t n
    cdef uint64_t word, stops
    while True:
        if _LITTLE_ENDIAN:  # ordinary bytes eight at a time, to the first one that is not
            while end - p >= 8:
                memcpy(&word, p, 8)
                stops = _stops(word)
                if stops:
                    p += __builtin_ctzll(stops) >> 3
                    break
                p += 8
        if p >= end:
            return NULL
        c = p[0]
        if c == 34:  # "
            return p + 1
        if c == 92:  # backslash
            escaped[0] = True
            if end - p < 2:
                return NULL
            c = p[1]
            if c == 117:  # \uXXXX: a surrogate only as a pair
                if end - p < 6:
                    return NULL
                unit = _hex4(p + 2)
                if unit < 0 or 0xDC00 <= unit <= 0xDFFF:
                    return NULL
                if 0xD800 <= unit <= 0xDBFF:
                    if end - p < 12 or p[6] != 92 or p[7] != 117:
                        return NULL
                    unit = _hex4(p + 8)
                    if unit < 0xDC00 or unit > 0xDFFF:
                        return NULL
                    p += 12
                else:
                    p += 6
            elif c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110 or c == 114 or c == 116:
                p += 2
            else:
                return NULL
        elif c < 0x20:
            return NULL
        elif c < 0x80:
            p += 1
        else:
            n = _utf8_len(p, end)
            if n == 0:
                return NULL
            p += n


cdef cursor _key(cursor p, cursor end) noexcept:
    """p at a key's opening quote → just past its closing quote; NULL when it is not a key or is escaped."""
    cdef bint escaped = False
    if p >= end or p[0] != 34:
        return NULL
    p = _string(p + 1, end, &escaped)
    if escaped:
        return NULL
    return p


cdef inline cursor _colon(cursor p, cursor end) noexcept:
    """p just past a key → at its value (NULL at the end: callers read the value's first byte)."""
    if p == NULL:
        return NULL
    p = _ws(p, end)
    if p >= end or p[0] != 58:
        return NULL
    p = _ws(p + 1, end)
    if p >= end:
        return NULL
    return p


cdef inline int _next(cursor* at, cursor end, unsigned char close) noexcept:
    """After a member: 1 at the next one, 0 past the closing bracket, -1 when neither follows."""
    cdef cursor p = at[0]
    if p == NULL:
        return -1
    p = _ws(p, end)
    if p >= end:
        return -1
    if p[0] == close:
        at[0] = p + 1
        return 0
    if p[0] != 44:
        return -1
    at[0] = _ws(p + 1, end)
    return 1


cdef inline cursor _literal(cursor p, cursor end, const char* word, Py_ssize_t n) noexcept:
    if end - p < n or memcmp(p, word, n) != 0:
        return NULL
    return p + n


cdef cursor _number(cursor p, cursor end) noexcept:
    cdef cursor digits
    if p < end and p[0] == 45:
        p += 1
    digits = p
    if p < end and p[0] == 48:
        p += 1
    else:
        while p < end and 48 <= p[0] <= 57:
            p += 1
        if p == digits or p - digits > _MAX_INT_DIGITS:
            return NULL
    if p < end and p[0] == 46:
        p += 1
        digits = p
        while p < end and 48 <= p[0] <= 57:
            p += 1
        if p == digits:
            return NULL
    if p < end and (p[0] == 101 or p[0] == 69):
        p += 1
        if p < end and (p[0] == 43 or p[0] == 45):
            p += 1
        digits = p
        while p < end and 48 <= p[0] <= 57:
            p += 1
        if p == digits or p - digits > _MAX_EXP_DIGITS:
            return NULL
    return p


cdef cursor _skip(cursor p, cursor end, int depth) noexcept:
    """p at any value → just past it; NULL when it is not one the scanner reads."""
    cdef bint escaped = False
    cdef unsigned char c
    cdef int more
    if p >= end:
        return NULL
    c = p[0]
    if c == 34:
        return _string(p + 1, end, &escaped)
    if c == 123 or c == 91:  # { [
        if depth >= _MAX_DEPTH:
            return NULL
        p = _ws(p + 1, end)
        if p < end and p[0] == c + 2:  # } ]
            return p + 1
        more = 1
        while more == 1:
            if c == 123:
                p = _colon(_key(p, end), end)
                if p == NULL:
                    return NULL
            p = _skip(p, end, depth + 1)
            more = _next(&p, end, c + 2)
        return p if more == 0 else NULL
    if c == 116:
        return _literal(p, end, "true", 4)
    if c == 102:
        return _literal(p, end, "false", 5)
    if c == 110:
        return _literal(p, end, "null", 4)
    return _number(p, end)


cdef inline bint _named(cursor key, cursor after, const char* name, Py_ssize_t n) noexcept:
    """The key whose quotes span [key, after) is `name`."""
    return after - key == n + 2 and memcmp(key + 1, name, n) == 0


# What each one-letter escape stands for (\" \\ \/ stand for themselves); the scanner lets no other through.
cdef unsigned char _UNESCAPED[128]
cdef int _c
for _c in range(128):
    _UNESCAPED[_c] = _c
_UNESCAPED[98], _UNESCAPED[102], _UNESCAPED[110], _UNESCAPED[114], _UNESCAPED[116] = 8, 12, 10, 13, 9


cdef char* _unescape(cursor p, cursor end, char* out) noexcept:
    """A scanned string's body (between its quotes) → its UTF-8 at out; returns the end of what was written."""
    cdef unsigned char c
    cdef int code
    while p < end:
        c = p[0]
        if c != 92:
            out[0] = <char>c
            out += 1
            p += 1
            continue
        c = p[1]
        p += 2
        if c == 117:
            code = _hex4(p)
            p += 4
            if code >= 0xD800:
                if code <= 0xDBFF:
                    code = 0x10000 + ((code - 0xD800) << 10) + (_hex4(p + 2) - 0xDC00)
                    p += 6
            if code < 0x80:
                out[0] = <char>code
                out += 1
            elif code < 0x800:
                out[0] = <char>(0xC0 | (code >> 6))
                out[1] = <char>(0x80 | (code & 0x3F))
                out += 2
            elif code < 0x10000:
                out[0] = <char>(0xE0 | (code >> 12))
                out[1] = <char>(0x80 | ((code >> 6) & 0x3F))
                out[2] = <char>(0x80 | (code & 0x3F))
                out += 3
            else:
                out[0] = <char>(0xF0 | (code >> 18))
                out[1] = <char>(0x80 | ((code >> 12) & 0x3F))
                out[2] = <char>(0x80 | ((code >> 6) & 0x3F))
                out[3] = <char>(0x80 | (code & 0x3F))
                out += 4
        else:
            out[0] = <char>_UNESCAPED[c]
            out += 1
    return out


cdef int _THOUGHT_TEXT = 0  # where a part's text goes: the run's thought text,
cdef int _PLAIN_TEXT = 1  # its text,
cdef int _DROPPED = 2  # nowhere (omitted thinking),
cdef int _NOT_PLAIN = -1  # or the event is not for the step


cdef class _Fold:
    """What both collector steps share: the scanner, the run's text, usage and finish reason, the run loop."""

    cdef public object usage  # the last usageMetadata taken here, until the collector takes it
    cdef _Text _reasoning  # the run's decoded thought text
    cdef _Text _text  # and its text
    # The run's last usageMetadata and finish reason: the event holding them and their span in it.
    cdef bytes _usage_in
    cdef Py_ssize_t _usage_at, _usage_end
    cdef bytes _finish_in
    cdef Py_ssize_t _finish_at, _finish_end
    # What the event being scanned holds, kept only when the whole event is read.
    cdef cursor _ev_usage
    cdef cursor _ev_usage_end
    cdef cursor _ev_finish
    cdef cursor _ev_finish_end

    def __dealloc__(self):
        PyMem_Free(self._reasoning.data)
        PyMem_Free(self._text.data)

    cpdef tuple fold(self, list batch, Py_ssize_t start):
        """Events `batch[start:stop]` folded, stopping before the first one the collector must take: (stop, the
        last usageMetadata among them or None)."""
        cdef Py_ssize_t k = start, n = len(batch)
        cdef bytes data
        self._reasoning.size = 0
        self._text.size = 0
        self._usage_in = None
        self._finish_in = None
        while k < n and self._open():
            data = <bytes>batch[k]
            if PyBytes_GET_SIZE(data) == 6 and memcmp(PyBytes_AS_STRING(data), b"[DONE]", 6) == 0:
                k += 1
                continue
            if not self._event(data):
                break
            k += 1
        return k, self._keep()

    cdef bint _open(self):
        return True

    cdef bint _takes_finish(self):
        return True

    cdef int _place(self, bint thought, bint empty):
        """Where a part's text goes (_THOUGHT_TEXT, _PLAIN_TEXT, _DROPPED), or _NOT_PLAIN."""
        return _THOUGHT_TEXT if thought else _PLAIN_TEXT

    cdef object _keep(self):
        """The run's text handed over (`_keep_text`), its finish reason and usage kept; returns the usage."""
        cdef object usage = None
        if self._reasoning.size or self._text.size:
            self._keep_text(
                PyUnicode_DecodeUTF8(self._reasoning.data, self._reasoning.size, NULL) if self._reasoning.size else None,
                PyUnicode_DecodeUTF8(self._text.data, self._text.size, NULL) if self._text.size else None,
            )
        if self._finish_in is not None:
            self._keep_finish(_loads(self._finish_in[self._finish_at : self._finish_end]))
            self._finish_in = None
        if self._usage_in is not None:
            usage = self.usage = _loads(self._usage_in[self._usage_at : self._usage_end])
            self._usage_in = None
        return usage

    cdef object _keep_text(self, object reasoning, object text):
        pass

    cdef object _keep_finish(self, object reason):
        pass

    cdef bint _event(self, bytes data) except -1:
        """One event folded in when it is plain (True); else nothing of it is kept."""
        cdef cursor base = <cursor>PyBytes_AS_STRING(data)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t reasoning_size = self._reasoning.size, text_size = self._text.size
        # An event's text decodes to at most its own length: room made once, none while scanning.
        _reserve(&self._reasoning, size)
        _reserve(&self._text, size)
        self._ev_usage = NULL
        self._ev_finish = NULL
        if not self._top(base, base + size) or (self._ev_finish != NULL and not self._takes_finish()):
            self._reasoning.size = reasoning_size
            self._text.size = text_size
            return False
        if self._ev_usage != NULL:
            self._usage_in = data
            self._usage_at = self._ev_usage - base
            self._usage_end = self._ev_usage_end - base
        if self._ev_finish != NULL:
            self._finish_in = data
            self._finish_at = self._ev_finish - base
            self._finish_end = self._ev_finish_end - base
        return True

    cdef bint _top(self, cursor p, cursor end) noexcept:
        """`{"response": {…}, …}`: one response object, nothing after the document but white space."""
        cdef cursor key, after
        cdef bint seen = False
        cdef int more = 1
        p = _ws(p, end)
        if p >= end or p[0] != 123:
            return False
        p = _ws(p + 1, end)
        while more == 1:
            key = p
            after = _key(p, end)
            p = _colon(after, end)
            if p == NULL:
                return False
            if _named(key, after, "response", 8):
                if seen or p[0] != 123:
                    return False
                seen = True
                p = self._response(p, end)
            else:
                p = _skip(p, end, 1)
            more = _next(&p, end, 125)
        return more == 0 and seen and _ws(p, end) == end

    cdef cursor _response(self, cursor p, cursor end) noexcept:
        """The response object: its candidates and usageMetadata; an error is not plain."""
        cdef cursor key, after, value
        cdef bint candidates = False, usage = False
        cdef int more = 1
        p = _ws(p + 1, end)
        if p < end and p[0] == 125:
            return p + 1
        while more == 1:
            key = p
            after = _key(p, end)
            p = _colon(after, end)
            if p == NULL:
                return NULL
            if _named(key, after, "candidates", 10):
                if candidates:
                    return NULL
                candidates = True
                if p[0] == 91:
                    p = self._candidates(p, end)
                else:
                    p = _literal(p, end, "null", 4)
            elif _named(key, after, "usageMetadata", 13):
                if usage:
                    return NULL
                usage = True
                if p[0] == 123:
                    value = p
                    if _ws(p + 1, end) < end and _ws(p + 1, end)[0] == 125:  # {} is left to the collector
                        return NULL
                    p = _skip(p, end, 2)
                    self._ev_usage = value
                    self._ev_usage_end = p
                else:
                    p = _literal(p, end, "null", 4)
                    self._ev_usage = NULL
            elif _named(key, after, "error", 5):
                return NULL
            else:
                p = _skip(p, end, 2)
            more = _next(&p, end, 125)
        return p if more == 0 else NULL

    cdef cursor _candidates(self, cursor p, cursor end) noexcept:
        """`[]` or `[candidate]`: several candidates are not plain."""
        p = _ws(p + 1, end)
        if p < end and p[0] == 93:
            return p + 1
        if p >= end or p[0] != 123:
            return NULL
        p = self._candidate(p, end)
        if p == NULL:
            return NULL
        p = _ws(p, end)
        return p + 1 if p < end and p[0] == 93 else NULL

    cdef cursor _candidate(self, cursor p, cursor end) noexcept:
        """Candidate 0 (no index, or index 0): its finishReason and its content's parts."""
        cdef cursor key, after, value
        cdef bint index = False, finish = False, content = False, escaped = False
        cdef int more = 1
        p = _ws(p + 1, end)
        if p < end and p[0] == 125:
            return p + 1
        while more == 1:
            key = p
            after = _key(p, end)
            p = _colon(after, end)
            if p == NULL:
                return NULL
            if _named(key, after, "index", 5):
                if index or p[0] != 48:  # only a plain 0
                    return NULL
                index = True
                p += 1
            elif _named(key, after, "finishReason", 12):
                if finish:
                    return NULL
                finish = True
                if p[0] == 34:
                    value = p
                    p = _string(p + 1, end, &escaped)
                    if p != NULL and p - value > 2:  # "" is no reason
                        self._ev_finish = value
                        self._ev_finish_end = p
                else:
                    p = _literal(p, end, "null", 4)
            elif _named(key, after, "content", 7):
                if content:
                    return NULL
                content = True
                p = self._content(p, end) if p[0] == 123 else _literal(p, end, "null", 4)
            else:
                p = _skip(p, end, 4)
            more = _next(&p, end, 125)
        return p if more == 0 else NULL

    cdef cursor _content(self, cursor p, cursor end) noexcept:
        """The content object: its parts, `[part, …]` or null."""
        cdef cursor key, after
        cdef bint parts = False
        cdef int more = 1
        p = _ws(p + 1, end)
        if p < end and p[0] == 125:
            return p + 1
        while more == 1:
            key = p
            after = _key(p, end)
            p = _colon(after, end)
            if p == NULL:
                return NULL
            if _named(key, after, "parts", 5):
                if parts:
                    return NULL
                parts = True
                if p[0] == 91:
                    p = _ws(p + 1, end)
                    if p < end and p[0] == 93:
                        p += 1
                    else:
                        while True:
                            if p >= end or p[0] != 123:
                                return NULL
                            p = self._part(p, end)
                            more = _next(&p, end, 93)
                            if more != 1:
                                break
                        if more != 0:
                            return NULL
                else:
                    p = _literal(p, end, "null", 4)
            else:
                p = _skip(p, end, 5)
            more = _next(&p, end, 125)
        return p if more == 0 else NULL

    cdef cursor _part(self, cursor p, cursor end) noexcept:
        """A part with a text string and nothing more than a thought flag, an empty signature or a null call; its
        text appended to the run's text or thought text."""
        cdef cursor key, after, text = NULL, text_end = NULL
        cdef bint thought = False, seen_thought = False, seen_sig = False, seen_call = False, escaped = False
        cdef _Text* buf
        cdef int more = 1, place
        p = _ws(p + 1, end)
        if p < end and p[0] == 125:
            return NULL  # no text
        while more == 1:
            key = p
            after = _key(p, end)
            p = _colon(after, end)
            if p == NULL:
                return NULL
            if _named(key, after, "text", 4):
                if text != NULL or p[0] != 34:
                    return NULL
                text = p + 1
                p = _string(p + 1, end, &escaped)
                text_end = p - 1
            elif _named(key, after, "thought", 7):
                if seen_thought:
                    return NULL
                seen_thought = True
                if p[0] == 116:
                    thought = True
                    p = _literal(p, end, "true", 4)
                elif p[0] == 102:
                    p = _literal(p, end, "false", 5)
                else:
                    p = _literal(p, end, "null", 4)
            elif _named(key, after, "thoughtSignature", 16):
                if seen_sig:
                    return NULL
                seen_sig = True
                p = _literal(p, end, '""', 2) if p[0] == 34 else _literal(p, end, "null", 4)
            elif _named(key, after, "functionCall", 12):
                if seen_call:
                    return NULL
                seen_call = True
                p = _literal(p, end, "null", 4)
            else:
                p = _skip(p, end, 8)
            more = _next(&p, end, 125)
        if more != 0 or text == NULL:
            return NULL
        place = self._place(thought, text_end == text)
        if place == _NOT_PLAIN:
            return NULL
        if text_end > text and place != _DROPPED:
            buf = &self._reasoning if place == _THOUGHT_TEXT else &self._text
            if escaped:
                buf.size = _unescape(text, text_end, buf.data + buf.size) - buf.data
            else:
                memcpy(buf.data + buf.size, text, text_end - text)
                buf.size += text_end - text
        return p


cdef class ChatFold(_Fold):
    """The collector step of `convert.openai_chat.ChatCollector`: runs of plain events folded into choice 0."""

    cdef dict _messages
    cdef object _new_message
    cdef dict _finish

    def __init__(self, dict messages, object new_message, dict finish):
        self._messages = messages
        self._new_message = new_message
        self._finish = finish
        self.usage = None

    cdef object _keep_text(self, object reasoning, object text):
        cdef object msg = self._messages.get(0)
        if msg is None:
            msg = self._messages[0] = self._new_message()
        if reasoning is not None:
            msg.reasoning.append(reasoning)
        if text is not None:
            msg.text.append(text)

    cdef object _keep_finish(self, object reason):
        self._finish[0] = reason


cdef class AnthropicFold(_Fold):
    """The collector step of `convert.anthropic_stream.MessageCollector`: runs of deltas into the open block."""

    cdef public bint omit_thinking
    cdef public bint ready
    cdef public int kind
    cdef public object block  # the open text or thinking block (a dict), None when neither is open

    def __init__(self, bint omit_thinking):
        self.omit_thinking = omit_thinking
        self.ready = False
        self.kind = 0
        self.block = None
        self.usage = None

    cdef bint _open(self):
        return self.ready

    cdef bint _takes_finish(self):
        return False  # a finish closes the message: the collector's

    cdef int _place(self, bint thought, bint empty):
        if thought:
            if self.kind != _THINKING_KIND:
                return _NOT_PLAIN
            return _DROPPED if self.omit_thinking else _THOUGHT_TEXT
        if empty:
            return _DROPPED
        return _PLAIN_TEXT if self.kind == _TEXT_KIND else _NOT_PLAIN

    cdef object _keep_text(self, object reasoning, object text):
        if reasoning is not None:
            self.block["thinking"] += reasoning
        if text is not None:
            self.block["text"] += text
