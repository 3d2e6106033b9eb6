"""Google-shaped error bodies (google.rpc.Status JSON) and the exception that carries them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AUTH_INVALID",
    "AUTH_MISSING",
    "DEFAULT_MESSAGES",
    "DOMAIN",
    "STATUS_NAMES",
    "SimError",
    "bad_request",
    "duration_proto",
    "error_info",
    "go_duration",
    "google_error",
    "human_duration",
    "invalid_argument",
    "retry_info",
    "rfc3339",
]

DOMAIN = "cloudcode-pa.googleapis.com"

STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

DEFAULT_MESSAGES: dict[int, str] = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "Internal error encountered.",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}

AUTH_MISSING = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
AUTH_INVALID = DEFAULT_MESSAGES[401]


class SimError(Exception):
    """An HTTP error answer; raised anywhere in request handling and rendered by the server."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def google_error(
    status: int, message: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {
        "code": status,
        "message": message if message is not None else DEFAULT_MESSAGES.get(status, "Unknown error."),
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        err["details"] = details
    return {"error": err}


def error_info(reason: str, metadata: dict[str, str] | None = None, domain: str = DOMAIN) -> dict[str, Any]:
    info: dict[str, Any] = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain}
    if metadata:
        info["metadata"] = metadata
    return info


def retry_info(seconds: float) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": duration_proto(seconds)}


def bad_request(violations: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": f, "description": d} for f, d in violations],
    }


def invalid_argument(message: str, violations: list[tuple[str, str]] | None = None) -> SimError:
    return SimError(400, google_error(400, message, [bad_request(violations)] if violations else None))


def duration_proto(seconds: float) -> str:
    """protobuf Duration JSON: seconds with up to 9 fractional digits, e.g. "1.5s", "12005.2s"."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def go_duration(seconds: float) -> str:
    """Go time.Duration.String(), the format of ErrorInfo.metadata.quotaResetDelay: "3h20m5.2s", "500ms"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:.6f}".rstrip("0").rstrip(".") + "ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{int(minutes)}m{sec_text}"
    return sec_text


def human_duration(seconds: float) -> str:
    """Whole-second Go duration, as Google puts in human-facing quota messages ("161h39m41s")."""
    return go_duration(float(int(seconds))) if seconds >= 1 else "1s"


def rfc3339(epoch: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
