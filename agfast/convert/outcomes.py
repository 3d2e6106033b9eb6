"""What a plan tells the driver to do, as data: the kinds of outcome, and the answer's parts.

A surface's plan function (`convert.<surface>.outcome`) returns one of

    Local     answered here, nothing sent anywhere (Anthropic's warmup probe)
    Relay     passed through to z.ai unchanged (it speaks Anthropic Messages itself)
    Count     one countTokens call to Google, with a local estimate when the surface has one
    Upstream  one streamGenerateContent to Google, answered as its `Answer` says

and `api.driver.Driver.run` runs it. Everything here is pure: an outcome holds values and constructors (the
answer's converter and collector factories, the per-account body builder), never an open connection. What a
builder needs of the upstream layer (the v1internal envelope) comes in through `Wire`, handed down by `api/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# In-stream failure kinds besides Google's own status: the upstream broke mid-stream; agfast's shutdown cut it.
BROKEN = 0
SHUTDOWN = -1
# The content types an answer can have (the HTTP shell's own constants live in http/, which convert/ is below).
JSON = b"application/json"
SSE = b"text/event-stream"
# The gateways a plan may name (the driver maps each key to its Gateway): the Antigravity path, and the
# Gemini-native path with its own Claude beta header.
GOOGLE = "google"
GEMINI = "gemini"


class Seat(Protocol):
    """What a body builder reads of the account an attempt runs on (upstream.pool.Lease)."""

    @property
    def account_id(self) -> str: ...

    @property
    def project_id(self) -> str: ...

    @property
    def email(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Wire:
    """The upstream layer's pure encoders a builder uses (upstream.client's, bound by api/ once)."""

    envelope: Callable[..., bytes]  # a GenerateContentRequest wrapped for v1internal, encoded
    account_session: Callable[[str], str]  # `request.sessionId` for an account id
    request_id: Callable[[], str]  # a fresh Gemini-path requestId


class Converter:
    """One streaming answer's converter, uniform for every surface: `start()` head bytes (may be b""),
    `feed(chunk)` per upstream event, `finish()` the tail, `fail(message, kind)` the in-stream error for a stream
    that stopped early (kind: Google's status, or BROKEN / SHUTDOWN). Bound methods, captured once per request:
    the per-event path stays one call."""

    __slots__ = ("fail", "feed", "finish", "start")

    def __init__(
        self,
        start: Callable[[], bytes],
        feed: Callable[[Any], bytes],
        finish: Callable[[], bytes],
        fail: Callable[[str, int], bytes],
    ) -> None:
        self.start, self.feed, self.finish, self.fail = start, feed, finish, fail


class Collector:
    """One non-streaming answer's collector: `feed(chunk)` per upstream event, `result()` the JSON body."""

    __slots__ = ("feed", "result")

    def __init__(self, feed: Callable[[dict[str, Any]], object], result: Callable[[], bytes]) -> None:
        self.feed, self.result = feed, result


# The outcome classes below are built per request, so they are not frozen: a frozen dataclass sets each field
# through object.__setattr__, ~7 µs for an Upstream and its Answer (~3% of a request). Nothing changes them.

# An error event while collecting, as the client's error: (HTTP status, message, error type or None).
Failure = tuple[int, str, str | None]


@dataclass(slots=True)
class Answer:
    """How a surface answers an open upstream stream."""

    converter: Callable[[], Converter]  # a fresh streaming converter
    collector: Callable[[], Collector]  # a fresh collector (made again when a mid-stream break re-runs)
    collect_failed: Callable[[int, str], Failure]  # an error event while collecting → the client's error
    keepalive: float  # seconds of upstream silence before a ping (0: none)
    ping: bytes  # the keep-alive comment or event
    content_type: bytes = SSE  # of a streaming answer
    collected_type: bytes = JSON  # of a collected answer
    raw: bool = False  # the converter's feed takes each event's raw bytes (see api.common.pump_raw)


@dataclass(slots=True)
class Local:
    """Answered here (`headers` then X-Mapped-Model); a streamed body is sent as one stream."""

    status: int
    body: bytes
    content_type: bytes
    mapped: str
    headers: bytes = b""
    stream: bool = False


@dataclass(slots=True)
class Relay:
    """POST `body` to z.ai's `path` and pass its answer through (api.zai)."""

    path: str
    body: dict[str, Any]
    stream: bool = False


@dataclass(slots=True)
class Count:
    """countTokens on Google (same retry policy, no stream). `answer` turns Google's JSON into the client's body
    (None: no usable count); `estimate` is the body when Google's count fails (None: the failure is the answer)."""

    gateway: str
    model: str
    session: str | None
    payload: bytes
    answer: Callable[[Any], bytes | None]
    estimate: Callable[[], bytes] | None = None
    stream: bool = False


@dataclass(slots=True)
class Upstream:
    """streamGenerateContent on Google through `gateway`: `build(seat)` is the body for each attempt's account,
    `recover(status, body)` the surface's fix for a recoverable refusal (True: build again, same account),
    `fallback` where to go when no Google account can take it, `after` what follows a completed answer, `trace`
    whether Google's trace id travels as a header."""

    gateway: str
    model: str  # the upstream model (X-Mapped-Model)
    session: str | None
    build: Callable[[Seat], bytes]
    answer: Answer
    stream: bool
    recover: Callable[[int, bytes], bool] | None = None
    fallback: Relay | None = None
    after: Callable[[], object] | None = None
    trace: bool = False


Outcome = Local | Relay | Count | Upstream


def google_total(doc: Any) -> Any:
    """`totalTokens` of a countTokens answer (`{"response": {...}}` or bare), None when absent."""
    inner = doc.get("response", doc) if isinstance(doc, dict) else None
    return inner.get("totalTokens") if isinstance(inner, dict) else None
