"""One HTTP request as the handlers see it: HTTP fields only (the shell knows nothing of LLMs)."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agfast.http.router import Route


class Request:
    """One parsed request; handlers read it. `waited` is time spent on backends, left out of the overhead header."""

    __slots__ = (
        "action",
        "api_key",
        "body",
        "cors",
        "head_only",
        "headers",
        "http10",
        "keep_alive",
        "method",
        "name",
        "observed",
        "path",
        "query",
        "request_id",
        "route",
        "started",
        "waited",
    )

    def __init__(self, method: bytes, path: str, query: bytes, headers: dict[bytes, bytes]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = b""
        self.started = perf_counter()
        self.waited = 0.0
        self.request_id = b""
        self.keep_alive = True
        self.http10 = False
        self.head_only = method == b"HEAD"
        self.cors = b""  # the Origin to echo in CORS headers, once the browser policy allowed it
        self.route: Route | None = None
        # Path parameters of `…/models/{name}:{action}` routes ("" elsewhere).
        self.name = ""
        self.action = ""
        # The named API key the auth step admitted (agfast.keys' identity); None: the main key or no auth.
        self.api_key: object = None
        # True once a handler reports this request to observers itself (the shell then logs nothing for it).
        self.observed = False
