"""Error bodies in the caller's own protocol, so every SDK can surface our message instead of a parse error."""

from __future__ import annotations

from enum import IntEnum

import orjson


class Family(IntEnum):
    """Which client protocol a path belongs to; decides the error shape."""

    OPENAI = 0
    ANTHROPIC = 1
    GEMINI = 2
    # The admin API under /api: `{"error": "..."}` (Antigravity Tools' admin shape).
    ADMIN = 3


# status -> (OpenAI error type, Anthropic error type, Google status). Unlisted statuses fall back by class.
STATUS_TYPES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    401: ("invalid_request_error", "authentication_error", "UNAUTHENTICATED"),
    403: ("permission_error", "permission_error", "PERMISSION_DENIED"),
    404: ("invalid_request_error", "not_found_error", "NOT_FOUND"),
    405: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    408: ("timeout_error", "timeout_error", "DEADLINE_EXCEEDED"),
    413: ("invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    429: ("rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    500: ("server_error", "api_error", "INTERNAL"),
    501: ("server_error", "api_error", "UNIMPLEMENTED"),
    502: ("server_error", "api_error", "UNAVAILABLE"),
    503: ("server_error", "overloaded_error", "UNAVAILABLE"),
    504: ("server_error", "api_error", "DEADLINE_EXCEEDED"),
    529: ("server_error", "overloaded_error", "UNAVAILABLE"),
}

# OpenAI bodies carry a machine-readable `code`; these are the defaults when the caller gives none.
OPENAI_CODES: dict[int, str] = {
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    501: "not_implemented",
    503: "service_unavailable",
}


def _types_for(status: int) -> tuple[str, str, str]:
    found = STATUS_TYPES.get(status)
    if found is not None:
        return found
    return STATUS_TYPES[500] if status >= 500 else STATUS_TYPES[400]


def error_body(
    family: Family,
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """The JSON error body a client of `family` expects for `status`."""
    if family is Family.ADMIN:
        return orjson.dumps({"error": message})
    openai_type, anthropic_type, google_status = _types_for(status)
    if family is Family.ANTHROPIC:
        return orjson.dumps({"type": "error", "error": {"type": error_type or anthropic_type, "message": message}})
    if family is Family.GEMINI:
        return orjson.dumps({"error": {"code": status, "message": message, "status": error_type or google_status}})
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": error_type or openai_type,
                "code": code if code is not None else OPENAI_CODES.get(status),
                "param": param,
            }
        }
    )


class HttpError(Exception):
    """Raised by handlers to answer with an error in the caller's shape; the server keeps serving."""

    __slots__ = ("code", "error_type", "headers", "message", "param", "status")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
        headers: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.error_type = error_type
        self.code = code
        self.headers = headers

    def body(self, family: Family) -> bytes:
        return error_body(
            family, self.status, self.message, error_type=self.error_type, code=self.code, param=self.param
        )
