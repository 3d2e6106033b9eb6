"""One proxied request as observers see it: the access log, the Proxy Monitor, metrics and token stats.

The request driver fills one `RequestRecord` while it serves a request and hands it, finished, to every
observer (`observe(record)`); observers must not block (the monitor queues it for a background writer).
The record holds no secrets: the account is its e-mail, never a token, and bodies are what the client sent
and received (capped), never the upstream envelope with its bearer token.
"""

from __future__ import annotations

from collections.abc import Callable

# Bytes of request and response body a record keeps; the rest is cut (the monitor shows that it was cut).
BODY_CAP = 64 * 1024


class RequestRecord:
    """Per-request facts, filled in as the request goes (timings in seconds, from perf_counter)."""

    __slots__ = (
        "account_email",
        "attempts",
        "cached_tokens",
        "client_ip",
        "duration",
        "error",
        "first_byte",
        "input_tokens",
        "key_name",
        "mapped_model",
        "method",
        "model",
        "output_tokens",
        "path",
        "protocol",
        "request_body",
        "request_id",
        "response_body",
        "retries",
        "started_at",
        "status",
        "stream",
        "upstream_seconds",
    )

    def __init__(self, request_id: str, method: str, path: str, protocol: str, client_ip: str, started_at: float):
        self.request_id = request_id
        self.method = method
        self.path = path  # path and query as the client sent them
        self.protocol = protocol  # "openai" | "anthropic" | "gemini" (reference §8.2)
        self.client_ip = client_ip
        self.started_at = started_at  # wall clock (time.time()) when the request head arrived
        self.status = 0  # HTTP status sent; 0 = the client went away before an answer
        self.duration = 0.0  # head arrived → last byte written
        self.first_byte = 0.0  # head arrived → first upstream event (0 when none came)
        self.upstream_seconds = 0.0  # time spent waiting on Google, all attempts
        self.model = ""  # the client's model name
        self.mapped_model = ""  # the model sent to Google
        self.account_email = ""  # the last account tried
        self.attempts = 0  # upstream calls made
        self.retries: list[str] = []  # retry.Strategy.reason of each failed attempt that was retried
        self.error = ""  # client-facing error message, "" on success
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.key_name = ""  # the named API key that made the request; "" for the main key or none
        self.stream = False  # the client asked to stream
        self.request_body = b""  # capped at BODY_CAP
        self.response_body = b""  # capped at BODY_CAP; for streams the bytes written (SSE), reconstructed later

    @property
    def overhead(self) -> float:
        """agfast's own time: the whole duration less the time Google took."""
        return max(0.0, self.duration - self.upstream_seconds)


Observer = Callable[[RequestRecord], None]
