"""Housekeeping routes: health, Claude Code's reachability probe, its telemetry sink."""

from __future__ import annotations

import orjson

from agfast import __version__
from agfast.http.request import Request
from agfast.http.response import CT_JSON, Response

HEALTH_BODY = orjson.dumps({"status": "ok", "version": __version__})


def health(req: Request, resp: Response) -> None:
    resp.send(200, HEALTH_BODY)


def hello(req: Request, resp: Response) -> None:
    """`HEAD /api/hello`: Claude Code checks the base URL answers before it sends its key."""
    resp.send(200, b"{}", CT_JSON)


def swallow(req: Request, resp: Response) -> None:
    """Claude Code telemetry (`/v1/api/event_logging`): accepted and dropped, no work."""
    resp.send(200, b"{}", CT_JSON)
