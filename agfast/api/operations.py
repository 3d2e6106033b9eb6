"""The operator's read side of the admin API: the Proxy Monitor's request log and token statistics, request
counts, IP-rule refusals and Prometheus metrics.

The routes are rows of `AdminApi.table`; the handlers live here so the admin module stays about the proxy,
accounts and config. SQLite is read on a worker thread (`asyncio.to_thread`): a slow disk never holds up the
event loop, and in WAL mode a read never waits for the monitor's writer. Reference: §1.2, §8.2.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import orjson

from agfast.http.access import IpRules
from agfast.http.errors import HttpError
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.metrics import Metrics
from agfast.monitor import MAX_PAGE, Monitor, NoDatabase


class OpsServices(Protocol):
    """What these routes use of the application (agfast.app.App), so `api/` imports nothing above it."""

    monitor: Monitor | None
    monitor_error: str
    metrics: Metrics

    @property
    def ip_rules(self) -> IpRules | None: ...


T = TypeVar("T")

# Rows per page when the caller does not say (the reference's UI asks for 100).
DEFAULT_LIMIT = 100
# Deepest offset taken: far past any real log (30 days at 100 req/s is 2.6e8 rows), and SQLite's int64 is safe.
MAX_OFFSET = 2**40
# A filter is a substring typed by a person; a longer one is a mistake and only costs LIKE time.
MAX_FILTER = 200
# Token statistics windows: 24 hours / 7 days by default; at most what the dashboard's charts show.
DEFAULT_HOURS, MAX_HOURS = 24, 24 * 31
DEFAULT_DAYS, MAX_DAYS = 7, 366
# Security events per page (the refusal log itself keeps access.EVENTS_KEPT).
DEFAULT_EVENTS = 100
MAX_EVENTS = 1000
# The query-string spellings of a boolean the reference's UI and curl users send.
BOOLEANS = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}


def query_of(req: Request) -> dict[str, str]:
    """The query string as a dict (the last value wins for a repeated name)."""
    if not req.query:
        return {}
    return dict(urllib.parse.parse_qsl(req.query.decode("latin-1"), keep_blank_values=True))


def int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; anything else is a 400 saying what is allowed."""
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise HttpError(400, f"{name} must be a whole number from {low} to {high}, not {text[:40]!r}.")
    return value


def bool_param(query: dict[str, str], name: str) -> bool:
    text = query.get(name, "")
    value = BOOLEANS.get(text.lower())
    if value is None:
        raise HttpError(400, f"{name} must be true or false, not {text[:40]!r}.")
    return value


def _send(resp: Response, body: Any) -> None:
    resp.send(200, orjson.dumps(body))


class OperationsApi:
    """Handlers over the App's monitor, metrics and IP rules."""

    __slots__ = ("app",)

    def __init__(self, app: OpsServices) -> None:
        self.app = app

    def _monitor(self) -> Monitor:
        monitor = self.app.monitor
        if monitor is None:
            raise HttpError(503, self.app.monitor_error)
        return monitor

    async def _read(self, query: Callable[..., T], *args: Any) -> T:
        """A monitor query on a worker thread; a database that cannot be read is a 503 saying so."""
        try:
            return await asyncio.to_thread(query, *args)
        except (NoDatabase, sqlite3.Error) as exc:
            raise HttpError(503, f"the Proxy Monitor's database cannot be read: {exc}") from None

    # -- request log -------------------------------------------------------------------------------------

    @staticmethod
    def _filters(req: Request) -> tuple[dict[str, str], str, bool]:
        query = query_of(req)
        text = query.get("filter", "")
        if len(text) > MAX_FILTER:
            raise HttpError(400, f"filter must be at most {MAX_FILTER} characters.")
        return query, text, bool_param(query, "errorsOnly")

    async def logs(self, req: Request, resp: Response) -> None:
        """`GET /api/logs?filter=&errorsOnly=&limit=&offset=`: newest first, without bodies."""
        monitor = self._monitor()
        query, text, errors_only = self._filters(req)
        limit = int_param(query, "limit", DEFAULT_LIMIT, 0, MAX_PAGE)
        offset = int_param(query, "offset", 0, 0, MAX_OFFSET)
        rows = await self._read(monitor.logs, text, errors_only, limit, offset)
        _send(resp, {"logs": rows, "limit": limit, "offset": offset, "enabled": monitor.enabled})

    async def logs_count(self, req: Request, resp: Response) -> None:
        monitor = self._monitor()
        _, text, errors_only = self._filters(req)
        _send(resp, {"count": await self._read(monitor.count, text, errors_only)})

    async def log(self, req: Request, resp: Response, log_id: str) -> None:
        """`GET /api/logs/{id}`: one row with its bodies (a streamed answer reconstructed)."""
        monitor = self._monitor()
        if not log_id.isascii() or not log_id.isdigit() or len(log_id) > 18:
            raise HttpError(400, f"A log id is a number (GET /api/logs lists them), not {log_id[:40]!r}.")
        row = await self._read(monitor.log, int(log_id))
        if row is None:
            raise HttpError(404, f"No log with id {log_id} (cleared, or older than the retention period).")
        _send(resp, row)

    async def clear_logs(self, req: Request, resp: Response) -> None:
        """`POST /api/logs/clear`: every request row goes; token statistics stay."""
        _send(resp, {"cleared": await self._read(self._monitor().clear)})

    # -- statistics --------------------------------------------------------------------------------------

    async def proxy_stats(self, req: Request, resp: Response) -> None:
        """`GET /api/proxy/stats` (§8.2): request counts, and token totals (kept even with the monitor off)."""
        totals = await self._read(self._monitor().stats_summary)
        _send(
            resp,
            {
                "total_requests": totals["requests"],
                "success_count": totals["success"],
                "error_count": totals["errors"],
                "input_tokens": totals["input_tokens"],
                "output_tokens": totals["output_tokens"],
                "cached_tokens": totals["cached_tokens"],
                "total_tokens": totals["total_tokens"],
            },
        )

    async def stats_summary(self, req: Request, resp: Response) -> None:
        _send(resp, await self._read(self._monitor().stats_summary))

    async def stats_hourly(self, req: Request, resp: Response) -> None:
        hours = int_param(query_of(req), "hours", DEFAULT_HOURS, 1, MAX_HOURS)
        _send(resp, {"hours": await self._read(self._monitor().stats_hourly, hours)})

    async def stats_daily(self, req: Request, resp: Response) -> None:
        days = int_param(query_of(req), "days", DEFAULT_DAYS, 1, MAX_DAYS)
        _send(resp, {"days": await self._read(self._monitor().stats_daily, days)})

    async def stats_accounts(self, req: Request, resp: Response) -> None:
        _send(resp, {"accounts": await self._read(self._monitor().stats_accounts)})

    async def stats_models(self, req: Request, resp: Response) -> None:
        _send(resp, {"models": await self._read(self._monitor().stats_models)})

    async def stats_keys(self, req: Request, resp: Response) -> None:
        """Requests and tokens per named API key ("" = the main key), from the request log."""
        _send(resp, {"keys": await self._read(self._monitor().stats_keys)})

    # -- IP rules ----------------------------------------------------------------------------------------

    def _rules(self) -> IpRules:
        rules = self.app.ip_rules
        if rules is None:
            raise HttpError(503, "the server is not listening yet")
        return rules

    def security_events(self, req: Request, resp: Response) -> None:
        """`GET /api/security/events?limit=`: the most recent refused clients, newest first."""
        limit = int_param(query_of(req), "limit", DEFAULT_EVENTS, 0, MAX_EVENTS)
        _send(resp, {"events": self._rules().events(limit)})

    def security_stats(self, req: Request, resp: Response) -> None:
        _send(resp, self._rules().stats())

    def security_lists(self, req: Request, resp: Response) -> None:
        _send(resp, self._rules().lists())

    # -- metrics -----------------------------------------------------------------------------------------

    def metrics(self, req: Request, resp: Response) -> None:
        """`GET /metrics`: Prometheus text exposition."""
        body, content_type = self.app.metrics.render()
        resp.send(200, body, content_type)
