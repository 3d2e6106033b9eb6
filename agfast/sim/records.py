"""What the simulator saw, so tests can assert on exactly what agfast sent upstream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecordedRequest"]


@dataclass(slots=True, eq=False)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    time: float
    action: str  # "token", "userinfo", "loadCodeAssist", "streamGenerateContent", ... or "unknown"
    prefix: str = ""  # path before "/v1internal" (or before "/token", "/oauth2/..."), "" at the root
    json: Any = None
    form: dict[str, str] | None = None
    email: str | None = None
    model: str | None = None
    status: int | None = None  # HTTP status sent (None if the sim never sent headers)
    fault: str | None = None  # kind of the fault that hit this request
    finished: bool = False  # the sim sent the whole response
    client_disconnected: bool = False  # the client went away before the response finished
    aborted: bool = False  # the sim cut the connection on purpose (disconnect fault)
    chunks_sent: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
