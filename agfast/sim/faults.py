"""Scripted failures: which request they hit, how often, and the Google error each one produces."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from .errors import (
    DEFAULT_MESSAGES,
    error_info,
    go_duration,
    google_error,
    human_duration,
    retry_info,
    rfc3339,
)

__all__ = ["FAULT_KINDS", "Fault", "FaultBook", "fault_error_body", "oauth_fault_body"]

FAULT_KINDS = frozenset(
    {"status", "invalid_grant", "slow_first_byte", "disconnect", "hang", "stream_error", "empty_stream"}
)

QUOTA_REASONS = frozenset({"QUOTA_EXHAUSTED", "RATE_LIMIT_EXCEEDED", "MODEL_CAPACITY_EXHAUSTED"})
DEFAULT_VALIDATION_URL = "https://accounts.google.com/signin/continue?sarp=1&scc=1&plt=sim-validation"


@dataclass(slots=True)
class Fault:
    """A scripted failure. Filters left at None match anything; `times=None` never runs out.

    Kinds: "status" (HTTP error with a realistic Google body), "invalid_grant" (token refresh fails),
    "slow_first_byte" (sleep `delay` then answer normally), "disconnect" (stream `after_chunks` chunks then
    abort the TCP connection), "hang" (never answer; the client must give up), "stream_error" (200 stream
    that carries an in-band error after `after_chunks` chunks), "empty_stream" (200 stream with no data).
    """

    kind: str
    email: str | None = None
    model: str | None = None
    action: str | tuple[str, ...] | None = None
    prefix: str | None = None
    times: int | None = 1
    status: int | None = None
    retry_delay: float | None = None
    quota_reset_delay: float | str | None = None
    message: str | None = None
    delay: float | None = None
    after_chunks: int | None = None
    reason: str | None = None
    validation_url: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {sorted(FAULT_KINDS)}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 or None")
        if self.prefix is not None:
            self.prefix = normalize_prefix(self.prefix)
        if self.kind == "invalid_grant" and self.action is None:
            self.action = "token"

    def matches(self, email: str | None, model: str | None, action: str, prefix: str) -> bool:
        if self.email is not None and self.email != email:
            return False
        if self.model is not None and self.model != model:
            return False
        if self.action is not None:
            wanted = (self.action,) if isinstance(self.action, str) else self.action
            if action not in wanted:
                return False
        return self.prefix is None or self.prefix == prefix


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.rstrip("/")
    if prefix.endswith("/v1internal"):
        prefix = prefix[: -len("/v1internal")]
    return prefix


class FaultBook:
    """Thread-safe queue of faults; the first matching fault wins and uses up one of its `times`."""

    __slots__ = ("_faults", "_lock")

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def snapshot(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, email: str | None, model: str | None, action: str, prefix: str) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            for i, fault in enumerate(self._faults):
                if fault.matches(email, model, action, prefix):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            del self._faults[i]
                    return fault
        return None


def _seconds(value: float | str) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def fault_error_body(fault: Fault, model: str | None) -> dict[str, Any]:
    """The Google JSON error for a "status" or "stream_error" fault."""
    status = fault.status or (500 if fault.kind == "stream_error" else 429)
    message = fault.message
    details: list[dict[str, Any]] = []
    reason = fault.reason
    if status == 429:
        if reason is None and fault.quota_reset_delay is not None:
            reason = "QUOTA_EXHAUSTED"
        if reason is not None:
            metadata: dict[str, str] = {}
            if model:
                metadata["model"] = model
            if fault.quota_reset_delay is not None:
                delay = fault.quota_reset_delay
                secs = _seconds(delay)
                metadata["quotaResetDelay"] = go_duration(secs) if secs is not None else str(delay)
                if secs is not None:
                    metadata["quotaResetTimeStamp"] = rfc3339(time.time() + secs)
                    if message is None and reason == "QUOTA_EXHAUSTED":
                        message = (
                            "You have exhausted your capacity on this model. "
                            f"Your quota will reset after {human_duration(secs)}."
                        )
                metadata["uiMessage"] = "true"
            if message is None and reason == "MODEL_CAPACITY_EXHAUSTED":
                message = f"No capacity available for model {model or 'unknown'} on the server"
            details.append(error_info(reason, metadata))
    elif status == 403:
        reason = reason or "VALIDATION_REQUIRED"
        if reason == "VALIDATION_REQUIRED":
            url = fault.validation_url or DEFAULT_VALIDATION_URL
            message = message or f"Verify your account to continue. Visit {url} to verify."
            details.append(
                error_info(
                    reason, {"validation_url": url, "validation_error_message": "Verify your account to continue."}
                )
            )
        else:
            details.append(error_info(reason))
    elif reason is not None:
        details.append(error_info(reason))
    if fault.retry_delay is not None:
        details.append(retry_info(fault.retry_delay))
    return google_error(status, message if message is not None else DEFAULT_MESSAGES.get(status), details)


def oauth_fault_body(fault: Fault) -> tuple[int, dict[str, str]]:
    """OAuth endpoints answer errors in RFC 6749 shape, not google.rpc.Status."""
    status = fault.status or 500
    if status >= 500:
        return status, {"error": "internal_failure", "error_description": fault.message or "Backend Error"}
    if status == 429:
        return status, {"error": "rate_limit_exceeded", "error_description": fault.message or "Rate Limit Exceeded"}
    if status == 401:
        return status, {"error": "invalid_client", "error_description": fault.message or "Unauthorized"}
    return status, {"error": "invalid_request", "error_description": fault.message or "Bad Request"}
