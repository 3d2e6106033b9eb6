"""Retry/rotation policy (reference §5.5) and rate-limit lockout math (§4.9), as data.

Two questions are answered here, both pure functions of an upstream error:

* ``decide``: should this request be tried again, after how long, and on another account?
  ``STATUS_POLICY`` is the whole answer for every status except 429, whose wait comes from the
  server's own hint when it gives one.
* ``lockout_seconds``: for how long should the account (or account+model) be kept out of selection?
  ``classify_limit`` names the reason, the body's hint wins, per-reason defaults fill in, and every
  lockout is capped at ``LOCKOUT_CAP_S``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from agfast.convert.models import normalize_to_standard_id

# ---------------------------------------------------------------------------------------------------------
# Retry policy (§5.5)

# Attempts per request (first try included). More would mostly burn quota on accounts that share a fate.
MAX_ATTEMPTS = 3


class Kind(StrEnum):
    FIXED = "fixed"
    LINEAR = "linear"  # base × (attempt + 1)
    EXPONENTIAL = "exponential"  # base × 2^attempt, capped
    NONE = "none"  # not retried: the error goes to the client


@dataclass(frozen=True, slots=True)
class Strategy:
    kind: Kind
    base_ms: int = 0
    cap_ms: int | None = None
    rotate: bool = False
    reason: str = "not_retryable"
    # Retry only when the lower-cased body contains one of these; empty = always.
    only_if_body_has: tuple[str, ...] = ()
    # 429: a delay the server states replaces the backoff below (see RETRY_DELAY_* constants).
    honours_retry_delay: bool = False
    # Never resent as is: only the surface's recovery rule may rebuild the request (same account, once, as one
    # extra attempt); without one, or once it was used, the error goes to the client.
    recover: bool = False
    # When every failed attempt of a request got this status, the model is there for nobody (no waiting helps).
    absent_if_all: bool = False

    def wait_ms(self, attempt: int) -> int:
        """Backoff before the next attempt; ``attempt`` counts from 0 (the request that just failed)."""
        if self.kind is Kind.LINEAR:
            ms = self.base_ms * (attempt + 1)
        elif self.kind is Kind.EXPONENTIAL:
            ms = self.base_ms * 2 ** min(attempt, 30)
        else:
            ms = self.base_ms
        return ms if self.cap_ms is None else min(ms, self.cap_ms)


# A 400 that is about thinking signatures is fixable by resending without thinking history (§6.6).
THINKING_SIGNATURE_MARKERS: tuple[str, ...] = (
    "invalid `signature`",
    "invalid signature",
    "invalid thought signature",
    "thinking.signature",
    "thinking.thinking",
    "corrupted thought signature",
    "thought_signature",
    "failed to deserialise",
    "thinking block",
    "found `text`",
    "must be `thinking`",
)

_AUTH = Strategy(Kind.FIXED, 200, rotate=True, reason="auth")
# Overload is the backend's, not the account's: rotating would not help.
_OVERLOADED = Strategy(Kind.EXPONENTIAL, 10_000, 60_000, reason="overloaded")

STATUS_POLICY: dict[int, Strategy] = {
    400: Strategy(
        Kind.FIXED, 200, reason="thinking_signature", only_if_body_has=THINKING_SIGNATURE_MARKERS, recover=True
    ),
    401: _AUTH,
    403: _AUTH,
    404: Strategy(Kind.FIXED, 300, rotate=True, reason="not_found", absent_if_all=True),
    429: Strategy(Kind.LINEAR, 5_000, rotate=True, reason="rate_limited", honours_retry_delay=True),
    500: Strategy(Kind.LINEAR, 3_000, rotate=True, reason="server_error"),
    503: _OVERLOADED,
    529: _OVERLOADED,
}
NO_RETRY = Strategy(Kind.NONE)
# Attempts that got no Google status (endpoint unreachable, stream broken or empty before its first event):
# nothing to lock out or wait for, so the next attempt goes at once to another account.
NO_ANSWER = ("unreachable", "stream_failed", "empty_stream")

# 429 with a stated delay. Google's reset point is fuzzy: its own client waits this much longer.
RETRY_DELAY_GRACE_MS = 1_500
# A wait this short (grace included) is cheaper on the same account than rotating ("grace retry").
GRACE_RETRY_MAX_MS = 2_000
GRACE_RETRY_PAD_MS = 100
RETRY_DELAY_PAD_MS = 200
# Longer stated waits are better spent on another account; clients time out past a few tens of seconds.
RETRY_DELAY_CAP_MS = 30_000


@dataclass(frozen=True, slots=True)
class RetryDecision:
    wait_s: float
    rotate: bool  # force_rotate into account selection (skips stickiness and the 60 s reuse window)
    same_account: bool  # grace retry: resend on the account that just failed
    reason: str


def attempts_for(pool_size: int, gemini: bool = False) -> int:
    """Attempts for a request: min(3, pool+1) ≥ 2; the Gemini-native path uses min(3, pool) ≥ 1."""
    if gemini:
        return max(1, min(MAX_ATTEMPTS, pool_size))
    return max(2, min(MAX_ATTEMPTS, pool_size + 1))


def policy(status: int) -> Strategy:
    return STATUS_POLICY.get(status, NO_RETRY)


def recovers(status: int) -> bool:
    """Whether this status is retried only through a surface's recovery rule (see Strategy.recover)."""
    return policy(status).recover


def absent(statuses: set[int]) -> bool:
    """Every failed attempt answered a status that means the model is not there (see Strategy.absent_if_all)."""
    return bool(statuses) and all(policy(status).absent_if_all for status in statuses)


def decide(
    status: int,
    body: str | bytes,
    attempt: int,
    scale: float = 1.0,
    *,
    retry_after: str | None = None,
    allow_grace: bool = True,
) -> RetryDecision | None:
    """How to retry after an upstream error, or None to pass it to the client; waits × ``scale``.

    ``retry_after`` is the Retry-After header, if any. Pass ``allow_grace=False`` once an account has had
    its grace retry in this request, so a short 429 cannot pin a request to one account.
    """
    strategy = STATUS_POLICY.get(status, NO_RETRY)
    if strategy.kind is Kind.NONE:
        return None
    text = _text(body)
    if strategy.only_if_body_has:
        lower = text.lower()
        if not any(marker in lower for marker in strategy.only_if_body_has):
            return None
    if strategy.honours_retry_delay:
        stated = _header_ms(retry_after)
        if stated is None:
            stated = parse_retry_delay_ms(text)
        if stated is not None:
            delay = stated + RETRY_DELAY_GRACE_MS
            if allow_grace and delay <= GRACE_RETRY_MAX_MS:
                wait = delay + GRACE_RETRY_PAD_MS
                return RetryDecision(wait * scale / 1000, False, True, "rate_limited_grace")
            wait = min(delay + RETRY_DELAY_PAD_MS, RETRY_DELAY_CAP_MS)
            return RetryDecision(wait * scale / 1000, True, False, "rate_limited_delay")
    return RetryDecision(strategy.wait_ms(attempt) * scale / 1000, strategy.rotate, False, strategy.reason)


# ---------------------------------------------------------------------------------------------------------
# Durations: Google ("1h2m3.5s", "0.5s", "850ms", {"seconds": "3", "nanos": 5e8}) and prose ("2 minutes").

_UNIT_MS: dict[str, float] = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
_UNIT_ALIASES: dict[str, str] = {
    "milliseconds": "ms",
    "millisecond": "ms",
    "msecs": "ms",
    "msec": "ms",
    "ms": "ms",
    "hours": "h",
    "hour": "h",
    "hrs": "h",
    "hr": "h",
    "h": "h",
    "minutes": "m",
    "minute": "m",
    "mins": "m",
    "min": "m",
    "m": "m",
    "seconds": "s",
    "second": "s",
    "secs": "s",
    "sec": "s",
    "s": "s",
}
# Longest alias first so "ms" is not read as "m" + "s".
_UNITS = "|".join(sorted(_UNIT_ALIASES, key=len, reverse=True))
_PART = rf"(\d+(?:\.\d+)?)\s*({_UNITS})(?![a-z])"
_PART_RE = re.compile(_PART, re.IGNORECASE)
_DURATION_RE = re.compile(rf"\s*(?:{_PART}\s*)+", re.IGNORECASE)
_BARE_NUMBER_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")
# A duration inside prose: unit parts, or a bare number (seconds) not followed by a word.
_DURATION_IN_TEXT = rf"((?:\d+(?:\.\d+)?\s*(?:{_UNITS})(?![a-z])\s*)+|\d+(?:\.\d+)?(?!\s*[a-z\d.]))"


def parse_duration_ms(text: str, bare_seconds: bool = True) -> int | None:
    """Milliseconds in a duration string; a bare number means seconds unless ``bare_seconds`` is off."""
    if _DURATION_RE.fullmatch(text):
        total = sum(float(n) * _UNIT_MS[_UNIT_ALIASES[u.lower()]] for n, u in _PART_RE.findall(text))
        return round(total)
    bare = _BARE_NUMBER_RE.fullmatch(text)
    if bare and bare_seconds:
        return round(float(bare.group(1)) * 1000)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # protobuf JSON writes int64 seconds as strings
        except ValueError:
            return None
    return None


def _duration_object_ms(obj: dict[str, Any]) -> int | None:
    if not obj or not set(obj) <= {"seconds", "nanos"}:
        return None
    seconds = _number(obj.get("seconds", 0))
    nanos = _number(obj.get("nanos", 0))
    if seconds is None or nanos is None:
        return None
    return round(seconds * 1000 + nanos / 1_000_000)


def _value_ms(value: Any) -> int | None:
    if isinstance(value, str):
        return parse_duration_ms(value)
    if isinstance(value, dict):
        return _duration_object_ms(value)
    number = _number(value)
    return None if number is None else round(number * 1000)


# Keys (lower-cased, without "_"/"-") whose value is a delay.
RETRY_HINT_KEYS = frozenset({"retrydelay", "quotaresetdelay", "retryafter", "backofflimit"})
# Error bodies are shallow; a deeper walk only costs time on hostile input.
_MAX_JSON_DEPTH = 8


def _json_delay_ms(value: Any, depth: int = 0) -> int | None:
    if depth > _MAX_JSON_DEPTH:
        return None
    if isinstance(value, dict):
        found = _duration_object_ms(value)
        if found is not None:
            return found
        for key, child in value.items():
            if key.lower().replace("_", "").replace("-", "") in RETRY_HINT_KEYS:
                found = _value_ms(child)
                if found is not None:
                    return found
            found = _json_delay_ms(child, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for child in value:
            found = _json_delay_ms(child, depth + 1)
            if found is not None:
                return found
    return None


# Prose forms of a retry delay, tried after the structured search.
RETRY_DELAY_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(rf"{lead}\s*{_DURATION_IN_TEXT}", re.IGNORECASE)
    for lead in (r"quota will reset after", r"retry after", r"quotaResetDelay[\"'=:\s]+")
)


def _text(body: str | bytes) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


def _json(text: str) -> Any:
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None


def _search(patterns: Sequence[re.Pattern[str]], text: str) -> int | None:
    for pattern in patterns:
        m = pattern.search(text)
        if m is not None:
            found = parse_duration_ms(m.group(1))
            if found is not None:
                return found
    return None


def parse_retry_delay_ms(body: str | bytes) -> int | None:
    """The delay an error body asks for, in ms (no grace added); structured fields win over prose."""
    text = _text(body)
    found = _json_delay_ms(_json(text))
    return found if found is not None else _search(RETRY_DELAY_PATTERNS, text)


def _header_ms(value: str | None) -> int | None:
    # Delta-seconds (or a Google-style duration); HTTP-date values are ignored as they need a clock.
    return None if not value else parse_duration_ms(value)


# ---------------------------------------------------------------------------------------------------------
# Rate-limit lockouts (§4.9)


class LimitReason(StrEnum):
    QUOTA_EXHAUSTED = "QUOTA_EXHAUSTED"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    MODEL_CAPACITY_EXHAUSTED = "MODEL_CAPACITY_EXHAUSTED"
    SERVER_ERROR = "SERVER_ERROR"
    UNKNOWN = "UNKNOWN"


# google.rpc.ErrorInfo reasons (error.details[].reason) that name a limit outright.
DETAIL_REASONS: dict[str, LimitReason] = {
    "QUOTA_EXHAUSTED": LimitReason.QUOTA_EXHAUSTED,
    "RATE_LIMIT_EXCEEDED": LimitReason.RATE_LIMIT_EXCEEDED,
    "MODEL_CAPACITY_EXHAUSTED": LimitReason.MODEL_CAPACITY_EXHAUSTED,
}

# Words that make a 429 a real quota problem rather than a per-minute limit.
EXPLICIT_QUOTA_WORDS: tuple[str, ...] = (
    "quota_exhausted",
    "quotaresetdelay",
    "quota reset",
    "quota limit",
    "per day",
    "daily quota",
)

# (reason, any of these in the lower-cased body, none of these), first matching row wins. Per-minute words
# come before quota words: "Quota limit 'Tokens per minute' exceeded" is a rate limit.
TEXT_LIMIT_RULES: tuple[tuple[LimitReason, tuple[str, ...], tuple[str, ...]], ...] = (
    (LimitReason.MODEL_CAPACITY_EXHAUSTED, ("model_capacity", "model capacity"), ()),
    (LimitReason.RATE_LIMIT_EXCEEDED, ("per minute", "rate limit", "too many requests"), ()),
    (
        LimitReason.RATE_LIMIT_EXCEEDED,
        ("resource_exhausted", "resource has been exhausted", "resource exhausted"),
        EXPLICIT_QUOTA_WORDS,
    ),
    (LimitReason.QUOTA_EXHAUSTED, (*EXPLICIT_QUOTA_WORDS, "exhausted", "quota"), ()),
)

# Statuses whose lockout is a short server-error back-off rather than a quota question.
SERVER_ERROR_STATUSES = frozenset({404, 500, 503, 529})


def _detail_reason(doc: Any) -> LimitReason | None:
    error = doc.get("error") if isinstance(doc, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict):
            reason = DETAIL_REASONS.get(str(detail.get("reason", "")))
            if reason is not None:
                return reason
    return None


def classify_limit(body: str | bytes, status: int = 429) -> LimitReason:
    """Why an account was limited; an ErrorInfo reason in the JSON beats the text heuristics."""
    if status in SERVER_ERROR_STATUSES:
        return LimitReason.SERVER_ERROR
    text = _text(body)
    found = _detail_reason(_json(text))
    if found is not None:
        return found
    lower = text.lower()
    for reason, any_of, none_of in TEXT_LIMIT_RULES:
        if any(w in lower for w in any_of) and not any(w in lower for w in none_of):
            return reason
    return LimitReason.UNKNOWN


# Every lockout ends within 5 minutes: a wrongly long lock idles a good account, a short one costs one retry.
LOCKOUT_CAP_S = 300.0
# A stated wait shorter than this would just make us hammer the account.
LOCKOUT_MIN_S = 2.0
DEFAULT_BACKOFF_STEPS: tuple[int, ...] = (60, 300, 1800, 7200)
MODEL_CAPACITY_STEPS: tuple[int, ...] = (5, 10, 15)
RATE_LIMIT_S = 5.0
RATE_LIMIT_RESOURCE_EXHAUSTED_S = 30.0
SERVER_ERROR_S: dict[int, float] = {404: 5.0}
SERVER_ERROR_DEFAULT_S = 8.0
UNKNOWN_S = 60.0

# Prose forms of a lockout hint ("try again in 2m 30s", "(wait 5s)", "quota will reset in 30 seconds").
LOCKOUT_TEXT_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(rf"{lead}\s*{_DURATION_IN_TEXT}", re.IGNORECASE)
    for lead in (
        r"try again in",
        r"backoff for",
        r"quota will reset (?:in|after)",
        r"retry after",
        r"\bwait",
        r"quotaResetDelay[\"'=:\s]+",
    )
)


def explicit_lockout_s(retry_after_header: str | None, body: str | bytes) -> float | None:
    """The wait the server states (Retry-After, JSON delay fields, prose), in seconds, or None."""
    ms = _header_ms(retry_after_header)
    if ms is None:
        text = _text(body)
        ms = _json_delay_ms(_json(text))
        if ms is None:
            ms = _search(LOCKOUT_TEXT_PATTERNS, text)
    return None if ms is None else ms / 1000


def _step(steps: Sequence[int], failures: int) -> float:
    return float(steps[min(max(failures, 1), len(steps)) - 1]) if steps else UNKNOWN_S


def default_lockout_s(
    reason: LimitReason,
    status: int,
    body: str | bytes,
    consecutive_failures: int,
    backoff_steps: Sequence[int] = DEFAULT_BACKOFF_STEPS,
) -> float:
    """Uncapped lockout when the server states no wait; ``consecutive_failures`` includes this one."""
    if reason is LimitReason.QUOTA_EXHAUSTED:
        return _step(backoff_steps, consecutive_failures)
    if reason is LimitReason.MODEL_CAPACITY_EXHAUSTED:
        return _step(MODEL_CAPACITY_STEPS, consecutive_failures)
    if reason is LimitReason.RATE_LIMIT_EXCEEDED:
        lower = _text(body).lower()
        exhausted = "resource exhausted" in lower or "resource_exhausted" in lower
        return RATE_LIMIT_RESOURCE_EXHAUSTED_S if exhausted else RATE_LIMIT_S
    if reason is LimitReason.SERVER_ERROR:
        return SERVER_ERROR_S.get(status, SERVER_ERROR_DEFAULT_S)
    return UNKNOWN_S


def cap_lockout(seconds: float) -> float:
    """Apply the 300 s cap; use it for lockouts computed elsewhere too (e.g. from a quota reset_time)."""
    return min(seconds, LOCKOUT_CAP_S)


def lockout_seconds(
    status: int,
    body: str | bytes,
    retry_after_header: str | None,
    reason: LimitReason,
    consecutive_failures: int,
    backoff_steps: Sequence[int] = DEFAULT_BACKOFF_STEPS,
) -> float:
    """How long to keep the account (or account+model, see lock_scope) out of selection; ≤ 300 s."""
    stated = explicit_lockout_s(retry_after_header, body)
    if stated is not None:
        return cap_lockout(max(LOCKOUT_MIN_S, stated))
    return cap_lockout(default_lockout_s(reason, status, body, consecutive_failures, backoff_steps))


def seconds_until(reset_time: str, now: float) -> float | None:
    """Seconds from ``now`` (unix s) to an RFC 3339 quota reset_time; None if unparsable or past."""
    try:
        at = datetime.fromisoformat(reset_time.strip())
    except (ValueError, AttributeError):
        return None
    if at.tzinfo is None:
        return None
    left = at.timestamp() - now
    return left if left > 0 and math.isfinite(left) else None


def lock_scope(reason: LimitReason, model: str | None) -> str:
    """Model-level only when just the model's quota is gone (QuotaExhausted with a model)."""
    return "model" if reason is LimitReason.QUOTA_EXHAUSTED and model else "account"


def lock_key(account_id: str, reason: LimitReason, model: str | None) -> str:
    """Rate-limit key: ``account_id`` or ``account_id:<normalised model>`` (§4.9)."""
    if model and lock_scope(reason, model) == "model":
        return f"{account_id}:{normalize_to_standard_id(model) or model}"
    return account_id
