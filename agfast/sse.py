"""The SSE/JSON hot path, compiled when possible.

Theory of operation: every byte agfast streams passes through these functions (framing events for clients,
decoding Google's `data:` lines). `_sse.pyx` is the Cython build, `_sse_py.py` the readable reference with
identical behaviour; tests run both. The choice is made once, here, at import: `AGFAST_NO_EXTENSIONS=1` (or a
missing/failed build) selects the pure-Python twin. `IMPLEMENTATION` says which one is live.

The per-event fast path lives here too: `ChatDeltas` and `AnthropicDeltas` take a run of upstream events that
carry only text or thought text (nearly every event of an answer) from their bytes straight to the client's
bytes, with one `orjson.loads` each and the output built from pre-encoded templates, only the text escaped
(`orjson.dumps`). Anything else (the first and last events, tool calls, signatures, errors) stops the run and
goes to the converter in `convert/`, which keeps the fast path's state (started choices, open block, usage)
in step; both paths write the same bytes (tests/test_event_fast_path.py).

A non-streaming answer's collector has its step here as well: `ChatFold` folds a run of plain events into the
OpenAI chat answer's first choice (text, thought text, usage, finish reason), `AnthropicFold` into the Anthropic
message's open block. The compiled steps scan each event's bytes without building its objects (only the run's
usage object is parsed, once) and leave any event whose JSON they do not read exactly as orjson would to the
collector; the answer is the same either way (tests/test_collector_fast_path.py).
"""

from __future__ import annotations

import os
from types import ModuleType

from agfast import _sse_py


def _select() -> tuple[ModuleType, str]:
    if os.environ.get("AGFAST_NO_EXTENSIONS", "").strip().lower() not in ("", "0", "false", "no"):
        return _sse_py, "py"
    try:
        from agfast import _sse  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return _sse_py, "py"
    return _sse, "c"


_impl, IMPLEMENTATION = _select()

frame_event = _impl.frame_event
SSEDecoder = _impl.SSEDecoder
unwrap_response = _impl.unwrap_response
ChatDeltas = _impl.ChatDeltas
ChatFold = _impl.ChatFold
AnthropicFold = _impl.AnthropicFold
AnthropicDeltas = _impl.AnthropicDeltas

__all__ = [
    "IMPLEMENTATION",
    "AnthropicDeltas",
    "AnthropicFold",
    "ChatDeltas",
    "ChatFold",
    "SSEDecoder",
    "frame_event",
    "unwrap_response",
]
