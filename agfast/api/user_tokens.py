"""Admin routes for named API keys, `/api/user-tokens` (reference §1.2): list, summary, create (the key is in
that one answer and nowhere else, ever), update, revoke (DELETE) and renew (extends the expiry; the key stays).
`{id}` is the key's id or its name."""

from __future__ import annotations

from typing import Any

import orjson

from agfast.api.admin import AdminApi, _json_body
from agfast.http.errors import HttpError
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.http.router import DELETE, GET, PATCH, POST, PUT, Router
from agfast.keys import KeyDefinitionError, KeyPolicy, views

# Fields a create or update may set; anything else is a 400 naming it.
FIELDS = frozenset({"name", "expires", "models", "rpm", "tpd"})


class UserTokensApi:
    __slots__ = ("keys", "store")

    def __init__(self, keys: KeyPolicy) -> None:
        self.keys = keys
        self.store = keys.store

    def register(self, router: Router) -> None:
        for method, path, handler in (
            (GET, "/api/user-tokens", self.list),
            (POST, "/api/user-tokens", self.create),
            (GET, "/api/user-tokens/summary", self.summary),
            (PATCH, "/api/user-tokens/{id}", self.update),
            (PUT, "/api/user-tokens/{id}", self.update),
            (DELETE, "/api/user-tokens/{id}", self.revoke),
            (POST, "/api/user-tokens/{id}/renew", self.renew),
        ):
            AdminApi.add(router, method, path, handler)

    def _fields(self, req: Request) -> dict[str, Any]:
        body = _json_body(req)
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise HttpError(400, f"Unknown field(s) {', '.join(unknown)}; a key has {', '.join(sorted(FIELDS))}.")
        return body

    def list(self, req: Request, resp: Response) -> None:
        resp.send(200, orjson.dumps({"tokens": views(self.store.keys.values(), self.keys.clock())}))

    def summary(self, req: Request, resp: Response) -> None:
        shown = views(self.store.keys.values(), self.keys.clock())
        resp.send(
            200,
            orjson.dumps(
                {
                    "total": len(shown),
                    "active": sum(1 for k in shown if k["status"] == "active"),
                    "requests": sum(k["requests"] for k in shown),
                    "tokens": sum(k["tokens"] for k in shown),
                }
            ),
        )

    def create(self, req: Request, resp: Response) -> None:
        now = self.keys.clock()
        try:
            key, secret = self.store.add(self._fields(req), now)
        except KeyDefinitionError as exc:
            raise HttpError(400, str(exc)) from None
        resp.send(201, orjson.dumps({**key.view(now), "key": secret}))

    def update(self, req: Request, resp: Response, ref: str) -> None:
        fields = self._fields(req)
        self._answer(resp, lambda: self.store.change(ref, fields))

    def revoke(self, req: Request, resp: Response, ref: str) -> None:
        self._answer(resp, lambda: self.store.revoke(ref))

    def renew(self, req: Request, resp: Response, ref: str) -> None:
        body = _json_body(req)
        days = body.get("days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or days <= 0):
            raise HttpError(400, "days must be a positive number")
        self._answer(resp, lambda: self.store.renew(ref, self.keys.clock(), days, body.get("expires")))

    def _answer(self, resp: Response, change: Any) -> None:
        try:
            key = change()
        except KeyDefinitionError as exc:
            status = 404 if str(exc).startswith("no API key") else 400
            raise HttpError(status, str(exc)) from None
        resp.send(200, orjson.dumps(key.view(self.keys.clock())))


def register(router: Router, keys: KeyPolicy) -> None:
    UserTokensApi(keys).register(router)
