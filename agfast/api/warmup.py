"""`POST /internal/warmup` (reference §1.1): a tiny request for one account and model, on demand.

Auth-exempt as in the reference, so only a caller on this machine (loopback) may use it: anyone else gets
403. Body `{email, model}` → `{success, message, error?}`."""

from __future__ import annotations

import ipaddress

import orjson

from agfast.api.common import json_object
from agfast.http.errors import HttpError
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.http.router import Handler
from agfast.upstream.warmup import Warmup

# Outcome → HTTP status of the answer (its body says the rest).
STATUS = {"sent": 200, "skipped": 409, "unknown": 404, "failed": 502}


def from_loopback(resp: Response) -> bool:
    transport = resp.proto.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not (isinstance(peer, tuple) and peer):
        return False
    try:
        return ipaddress.ip_address(str(peer[0]).partition("%")[0]).is_loopback
    except ValueError:
        return False


def handler(warmups: Warmup) -> Handler:
    async def warmup(req: Request, resp: Response) -> None:
        if not from_loopback(resp):
            raise HttpError(403, "/internal/warmup answers only callers on this machine.", code="forbidden")
        body = json_object(req)
        fields = {}
        for name in ("email", "model"):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                raise HttpError(400, f'Missing \'{name}\': send {{"email": …, "model": …}}.', param=name)
            fields[name] = value.strip()
        result = await warmups.warm(fields["email"], fields["model"])
        resp.send(STATUS[result.outcome], orjson.dumps(result.as_json()))

    return warmup
