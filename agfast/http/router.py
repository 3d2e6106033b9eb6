"""(method, path) → handler, built once at start-up.

Exact paths are one dict lookup. The parameterised shapes are Gemini's `…/models/{model}:{action}`
(plus `…/models/{model}/countTokens` and `GET …/models/{model}`), matched under a few fixed prefixes, and the
admin API's `{prefix}{id}{suffix}` (`/api/accounts/{id}/quota`), tried only when nothing else matched.
Query strings never take part (Claude Code posts to `/v1/messages?beta=true`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agfast.http.errors import Family
from agfast.http.sessions import SessionStore

# handler(request: http.request.Request, response: http.response.Response); typed loosely so the route table
# imports neither (they import it).
Handler = Callable[[Any, Any], Any]
AsyncHandler = Callable[[Any, Any], Awaitable[None]]

VERSION_SEGMENTS = ("v1", "v1beta", "v1alpha")

GET = b"GET"
HEAD = b"HEAD"
POST = b"POST"
DELETE = b"DELETE"
PATCH = b"PATCH"
PUT = b"PUT"
ADMIN_PREFIX = "/api/"


@dataclass(slots=True)
class Route:
    handler: Handler
    is_async: bool
    family: Family
    # Health routes skip auth in all_except_health; public routes (Claude Code's probe) skip it always.
    health: bool = False
    public: bool = False
    # Admin routes always need the admin secret (admin_password, else the api key), whatever the auth mode.
    admin: bool = False
    # Filled in by the server from the auth mode, so the request path reads one bool.
    guarded: bool = True


@dataclass(slots=True)
class Match:
    route: Route | None
    allowed: tuple[bytes, ...] = ()
    name: str = ""  # the {name} of `…/models/{name}:{action}`
    action: str = ""


def family_for_path(path: str) -> Family:
    """The protocol a client hitting `path` speaks, so even a 404 comes in a shape its SDK can read."""
    if path.startswith(ADMIN_PREFIX):
        return Family.ADMIN
    if "/messages" in path:
        return Family.ANTHROPIC
    if "v1beta" in path or ":" in path.rsplit("/", 1)[-1] or path.endswith("/countTokens"):
        return Family.GEMINI
    return Family.OPENAI


class Router:
    __slots__ = ("_actions", "_exact", "_model_prefixes", "_patterns", "sessions")

    def __init__(self) -> None:
        # The dashboard's sign-in sessions: the session routes create them, the server's auth check reads them.
        self.sessions = SessionStore()
        self._exact: dict[str, dict[bytes, Route]] = {}
        # (prefix, action) → method → route; action "" is `GET prefix{model}`.
        self._actions: dict[tuple[str, str], dict[bytes, Route]] = {}
        self._model_prefixes: list[str] = []
        # (prefix, suffix) → method → route, for `{prefix}{one path segment}{suffix}`.
        self._patterns: dict[tuple[str, str], dict[bytes, Route]] = {}

    def add(self, methods: tuple[bytes, ...], path: str, handler: Handler, family: Family, **flags: bool) -> None:
        route = _route(handler, family, **flags)
        by_method = self._exact.setdefault(path, {})
        for method in methods:
            by_method[method] = route
        if GET in methods and HEAD not in by_method:
            by_method[HEAD] = route

    def add_model_action(
        self, prefix: str, action: str, methods: tuple[bytes, ...], handler: Handler, family: Family
    ) -> None:
        """Route `{prefix}{model}:{action}` (action "" routes `{prefix}{model}` itself)."""
        if not prefix.endswith("/"):
            raise ValueError("prefix must end with '/'")
        if prefix not in self._model_prefixes:
            self._model_prefixes.append(prefix)
            self._model_prefixes.sort(key=len, reverse=True)
        route = _route(handler, family)
        by_method = self._actions.setdefault((prefix, action), {})
        for method in methods:
            by_method[method] = route
        if GET in methods and HEAD not in by_method:
            by_method[HEAD] = route

    def add_pattern(
        self, methods: tuple[bytes, ...], prefix: str, suffix: str, handler: Handler, family: Family, **flags: bool
    ) -> None:
        """Route `{prefix}{segment}{suffix}`, the segment being one non-empty path segment (an id)."""
        route = _route(handler, family, **flags)
        by_method = self._patterns.setdefault((prefix, suffix), {})
        for method in methods:
            by_method[method] = route

    def routes(self) -> list[Route]:
        found = {id(r): r for d in self._exact.values() for r in d.values()}
        found.update({id(r): r for d in self._actions.values() for r in d.values()})
        found.update({id(r): r for d in self._patterns.values() for r in d.values()})
        return list(found.values())

    def paths(self) -> list[str]:
        return list(self._exact)

    def match(self, method: bytes, path: str) -> Match | None:
        """None: no such path; Match.route None: the path exists but not for this method (405)."""
        by_method = self._exact.get(path)
        model = action = ""
        if by_method is None:
            for prefix in self._model_prefixes:
                if path.startswith(prefix) and len(path) > len(prefix):
                    rest = path[len(prefix) :]
                    if "/" in rest:
                        model, _, action = rest.partition("/")
                        if "/" in action:
                            continue
                    elif ":" in rest:
                        model, _, action = rest.rpartition(":")
                    else:
                        model = rest
                    by_method = self._actions.get((prefix, action))
                    if by_method is None and action:
                        # A known model path with an action we do not serve: Gemini says 400, not 404.
                        return Match(None, (), model, action)
                    break
            if by_method is None and self._patterns:
                by_method = self._pattern(path)
            if by_method is None:
                return None
        route = by_method.get(method)
        if route is None:
            return Match(None, tuple(sorted(by_method)), model, action)
        return Match(route, (), model, action)

    def _pattern(self, path: str) -> dict[bytes, Route] | None:
        for (prefix, suffix), by_method in self._patterns.items():
            if path.startswith(prefix) and path.endswith(suffix):
                segment = path[len(prefix) : len(path) - len(suffix)]
                if segment and "/" not in segment:
                    return by_method
        return None

    def suggest(self, path: str) -> str | None:
        """The path the client probably meant when its base URL repeats a prefix (`/v1/v1/…`)."""
        segments = path.split("/")
        # /v1/v1/messages, /v1/v1beta/models/x:generateContent: the version segment came twice.
        if len(segments) > 3 and segments[1] in VERSION_SEGMENTS and segments[2] in VERSION_SEGMENTS:
            candidate = "/" + "/".join(segments[2:])
            if self._known(candidate):
                return candidate
        # /v1/chat/completions/responses: the base URL already held a full endpoint path.
        for known in sorted(self._exact, key=len, reverse=True):
            if path.startswith(known + "/"):
                rest = path[len(known) :]
                for candidate in ("/v1" + rest, rest):
                    if self._known(candidate):
                        return candidate
        return None

    def _known(self, path: str) -> bool:
        return path in self._exact or any(path.startswith(p) and len(path) > len(p) for p in self._model_prefixes)


def _route(handler: Handler, family: Family, **flags: bool) -> Route:
    return Route(handler, inspect.iscoroutinefunction(handler), family, **flags)
