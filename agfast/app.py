"""The application: upstream services wired together, and the route table in one screen."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any, Protocol

import orjson

from agfast.api import detect, service, ui, user_tokens, warmup
from agfast.api.admin import AdminApi
from agfast.api.anthropic import AnthropicApi
from agfast.api.driver import Driver
from agfast.api.gemini import GeminiApi
from agfast.api.images import ImagesApi
from agfast.api.openai import OpenAIApi
from agfast.api.session import SessionApi
from agfast.api.signin import callback_handler
from agfast.api.zai import ZaiDispatcher
from agfast.config import Config, LiveConfig
from agfast.convert.models import ModelSpec, list_models, resolve_model_route, route_known
from agfast.convert.outcomes import GEMINI, GOOGLE
from agfast.convert.signatures import SignatureCache
from agfast.http.access import IpRules
from agfast.http.errors import Family, HttpError, error_body
from agfast.http.request import Request
from agfast.http.response import Response
from agfast.http.router import GET, HEAD, POST, Handler, Route, Router
from agfast.http.state import ServerState
from agfast.keys import KeyPolicy, KeyStore
from agfast.metrics import MULTIPROC_ENV, Metrics
from agfast.monitor import Monitor, MonitorUnavailable
from agfast.record import Observer
from agfast.upstream.accounts import AccountStore
from agfast.upstream.catalog import Catalog, catalog_of
from agfast.upstream.client import UpstreamClient
from agfast.upstream.gateway import CLAUDE_BETA_GEMINI_PATH, Gateway
from agfast.upstream.pool import AccountPool
from agfast.upstream.signin import SignIn
from agfast.upstream.state import state_for
from agfast.upstream.warmup import DEFAULT_WARMUP_MODELS, Warmup


class Serving(Protocol):
    """The listening server as the App sees it (agfast.server.Server; app does not import server)."""

    state: ServerState | None


GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")
# Distinct client model names remembered; clients use a handful, this only bounds a hostile caller.
ROUTE_CACHE_SIZE = 4096
# Cached answer for a name nothing knows (no model is called "").
_UNKNOWN = ""
# The `created` stamp Antigravity Tools reports for every model.
MODEL_CREATED = 1706745600
# Live settings the Proxy Monitor applies (on/off, retention, body cap).
MONITOR_ATTRS = frozenset({"monitor_enabled", "monitor_retention_days", "monitor_max_body_bytes"})
log = logging.getLogger("agfast.app")
STOPPED_MESSAGE = "The proxy service is stopped; an operator can start it again with POST /api/proxy/start."


class App:
    """Per-process services: account store, the one upstream session, the pool and the retrying gateway."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = AccountStore(config.data_dir)
        self.client = UpstreamClient(config)
        # Pool state shared with the other workers and hosts (Redis), or this process's own.
        self.state = state_for(config.state_redis_url, config.state_prefix, config.state_timeout)
        self.state.listeners.append(self.shared_event)
        # True while applying another process's event: it must not be published back.
        self._from_others = False
        self.pool = AccountPool(config, self.store, self.client, self.state)
        self.gateway = Gateway(config, self.pool, self.client)
        self.gemini_gateway = Gateway(config, self.pool, self.client, CLAUDE_BETA_GEMINI_PATH)
        self.signatures = SignatureCache.create()
        # z.ai's dispatch (the Anthropic plan asks it) and pass-through (the driver runs it).
        self.zai = ZaiDispatcher(self)
        # Runs every proxied request and tells observers (`app.observers`) about it.
        self.driver = Driver(self.permit, {GOOGLE: self.gateway, GEMINI: self.gemini_gateway}, self.zai.forward)
        self.gemini = GeminiApi(self)
        self.openai = OpenAIApi(self)
        self.anthropic = AnthropicApi(self, self.zai)
        self.images = ImagesApi(self)
        self.warmup = Warmup(self.pool)
        # "Sign in with Google" flows; an account signed in joins the pool at once (no restart, no reload wait).
        self.signin = SignIn(config, self.client, self.store, on_added=lambda _account: self.pool.load())
        # Named API keys with limits (user_tokens.json); the server's auth asks it, handlers ask `permit`.
        self.keys = KeyPolicy(KeyStore(config.data_dir))
        self._upkeep: asyncio.Task[None] | None = None
        self._keys_upkeep: asyncio.Task[None] | None = None
        self._warmup_schedule: asyncio.Task[None] | None = None
        self._state_start: asyncio.Task[None] | None = None
        self._routes: dict[str, str] = {}
        self._catalog = Catalog()
        self._catalog_version = -1
        self._names: list[str] | None = None
        # Settings that change while serving; the server polls the file, the admin API writes through it.
        self.live = LiveConfig(config)
        self.live.listeners.append(self.config_changed)
        # The proxy service switch (admin API): while off, proxy routes answer 503; admin and health go on.
        self.proxy_running = True
        self.proxy_routes: list[Route] = []
        self._serving_handlers: dict[int, tuple[Handler, bool]] = {}
        # The listening server (set by whoever starts it): its IP rules and open streams, for the admin API.
        self.server: Serving | None = None
        # Proxy Monitor: opened by start(); None while stopped or when its database is unusable (then
        # monitor_error says why, and the admin API's log and stats routes answer 503 with it).
        self.monitor: Monitor | None = None
        self.monitor_error = "the Proxy Monitor is not running"
        # `--workers N`: the supervisor's PROMETHEUS_MULTIPROC_DIR, where every worker's series are summed.
        self.metrics = Metrics(
            self.account_states, self.open_streams, self.monitor_status, os.environ.get(MULTIPROC_ENV) or None
        )
        self._metrics_sampler: asyncio.Task[None] | None = None
        self.observers.append(self.metrics.observe)
        self.observers.append(self.keys.observe)  # tokens per day of named keys

    def config_changed(self, names: frozenset[str]) -> None:
        """Live settings changed: drop what was derived from them."""
        if "custom_mapping" in names:
            self._routes = {}
            self._names = None
        if "log_level" in names:
            logging.getLogger("agfast").setLevel(self.config.log_level.upper())
        if names & MONITOR_ATTRS and self.monitor is not None:
            self.monitor.configure(self.config)
            self.record_bodies = self.monitor.enabled
        if self.state.shared and not self._from_others:
            for name in names:
                self.state.publish({"kind": "config", "values": {name: getattr(self.config, name)}}, "config:" + name)

    def shared_event(self, event: dict[str, Any]) -> None:
        """Another worker or host changed something every process must apply (admin API, live config)."""
        self._from_others = True
        try:
            kind = event.get("kind")
            if kind == "running":
                self.set_running(bool(event["running"]))
            elif kind == "config":
                self.live.apply(event["values"], "another agfast process")
            elif kind == "accounts":
                self.pool.load()
        finally:
            self._from_others = False

    def set_running(self, running: bool) -> None:
        """Switch the proxy routes between their handlers and a 503 in their protocol's shape. Swapping the
        handler costs the request path nothing; no flag is tested per request."""
        if running == self.proxy_running:
            return
        self.proxy_running = running
        if self.state.shared and not self._from_others:
            self.state.publish({"kind": "running", "running": running}, "running")
        for route in self.proxy_routes:
            if running:
                route.handler, route.is_async = self._serving_handlers[id(route)]
            else:
                self._serving_handlers[id(route)] = (route.handler, route.is_async)
                route.handler, route.is_async = _stopped(route.family), False
        logging.getLogger("agfast.server").warning("proxy service %s", "started" if running else "stopped")

    @property
    def observers(self) -> list[Observer]:
        """Told about every proxied request (its RequestRecord): the access log first; the monitor, metrics."""
        return self.driver.observers

    @property
    def record_bodies(self) -> bool:
        """Whether records keep request/response bodies (capped); the monitor turns it on."""
        return self.driver.record_bodies

    @record_bodies.setter
    def record_bodies(self, value: bool) -> None:
        self.driver.record_bodies = value

    def start(self) -> None:
        """Load accounts now; quota discovery and refresh run in the background (never on a request)."""
        self.pool.load()
        loop = asyncio.get_running_loop()
        self._upkeep = loop.create_task(self.pool.upkeep())
        self._state_start = loop.create_task(self.state.start())
        self._keys_upkeep = loop.create_task(self.keys.upkeep())
        if self.config.warmup_schedule_enabled:
            models = self.config.warmup_models or list(DEFAULT_WARMUP_MODELS)
            self._warmup_schedule = loop.create_task(self.warmup.schedule(models))
        self.open_monitor()
        if self.metrics.multiprocess_dir is not None:
            self._metrics_sampler = loop.create_task(self.metrics.sample_forever())

    def open_monitor(self) -> None:
        """The Proxy Monitor joins the observers; an unusable database is one clear error, never a failed start."""
        try:
            monitor = Monitor.from_config(self.config)
        except MonitorUnavailable as exc:
            self.monitor_error = f"the Proxy Monitor is unavailable: {exc}"
            log.error("%s; serving without it (no request log, no token statistics)", self.monitor_error)
            return
        self.monitor = monitor
        self.observers.append(monitor.observe)
        self.record_bodies = monitor.enabled

    async def close(self) -> None:
        for task in (self._upkeep, self._keys_upkeep, self._warmup_schedule, self._metrics_sampler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._metrics_sampler is not None:
            self.metrics.sample()  # a stopping worker's last counts reach the shared files
        self.keys.flush()
        await self.pool.close()
        await self.state.close()
        await self.client.close()
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            self.observers.remove(monitor.observe)
            self.record_bodies = False
            # Its writer commits what is queued: off the loop, so in-flight shutdown work is not held up.
            await asyncio.to_thread(monitor.close)

    # -- what the metrics read at scrape time ----------------------------------------------------------

    def account_states(self) -> dict[str, int]:
        """Accounts by state: in the pool and free, in the pool but locked out, kept out of the pool."""
        pool = self.pool
        now = time.time()
        limited = sum(1 for member in pool.members.values() if pool.state.locked_until(member.id) > now)
        return {"available": pool.size - limited, "limited": limited, "disabled": len(pool.skipped)}

    def open_streams(self) -> int:
        """Streamed answers in flight: a head started and not yet ended (a whole answer is sent in one go)."""
        state = self.server.state if self.server is not None else None
        if state is None:
            return 0
        return sum(1 for c in state.connections if (r := c.response) is not None and r.head_sent and not r.finished)

    def monitor_status(self) -> dict[str, Any]:
        monitor = self.monitor
        if monitor is None:
            return {"queued": 0, "dropped_bodies": 0, "dropped_rows": 0, "write_errors": 0}
        return monitor.status()

    @property
    def ip_rules(self) -> IpRules | None:
        """The running server's allow/deny rules and their refusal log (None before it listens)."""
        return self.server.state.ip_rules if self.server is not None and self.server.state else None

    @property
    def catalog(self) -> Catalog:
        """What the pool can call and what Google says each model can do, rebuilt when the pool changes."""
        pool = self.pool
        if self._catalog_version != pool.version:
            self._catalog = catalog_of(member.account for member in pool.members.values())
            self._routes = {}
            self._names = None
            self._catalog_version = pool.version
        return self._catalog

    def lookup(self, model: str) -> str | None:
        """The upstream model for a client's model name, or None when nothing knows the name (cached until the
        pool's models change)."""
        catalog = self.catalog
        mapped = self._routes.get(model)
        if mapped is None:
            if not model.isprintable():
                # It would end up in X-Mapped-Model and log lines; no real model name has control characters.
                raise HttpError(400, "Model name must not contain control characters.", param="model")
            found = route_known(
                model, self.config.custom_mapping, self.pool.forwarding(), catalog.offered, catalog.complete
            )
            mapped = _UNKNOWN if found is None else found
            if len(self._routes) < ROUTE_CACHE_SIZE:
                self._routes[model] = mapped
        return mapped or None

    def route(self, model: str) -> str:
        """Like lookup, but a name nothing knows is a 404 `model_not_found` (in the caller's shape), before any
        upstream call."""
        mapped = self.lookup(model)
        if mapped is None:
            raise self.unknown_model(model)
        return mapped

    def permit(self, req: Request, model: str) -> None:
        """A named key may use only its models: outside its patterns → 403 in the caller's shape, before any
        upstream call (each surface asks once the client's model name is read, before planning)."""
        key = req.api_key
        if key is not None and not self.keys.allows_model(key, model):  # type: ignore[arg-type]
            message = f"This API key may not use the model `{model}`; ask the operator for one that may."
            raise HttpError(403, message, code="model_not_allowed", param="model")

    def unknown_model(self, model: str) -> HttpError:
        target = resolve_model_route(model, self.config.custom_mapping, self.pool.forwarding())
        via = f" (mapped to `{target}`)" if target != model else ""
        message = (
            f"The model `{model}`{via} does not exist or no account offers it; GET /v1/models lists the models "
            "you can use."
        )
        return HttpError(404, message, code="model_not_found", param="model")

    def model_spec(self, mapped: str) -> ModelSpec:
        """What an upstream model can do: Google's description first, the static table for the rest."""
        return self.catalog.spec(mapped)

    def model_names(self) -> list[str]:
        """The ids the model lists show (computed once per pool change)."""
        catalog = self.catalog
        if self._names is None:
            self._names = list_models(
                self.config.custom_mapping, self.pool.forwarding(), catalog.offered, catalog.complete
            )
        return self._names

    def models_v1(self, req: Request, resp: Response) -> None:
        """`GET /v1/models` is both OpenAI's list and google-genai 3.x's (API version v1): the client decides."""
        if _from_google_sdk(req):
            self.gemini.list_models(req, resp)
        else:
            self.openai_models(req, resp)

    def model_v1(self, req: Request, resp: Response) -> None:
        """`GET /v1/models/{m}`: OpenAI's `models.retrieve` or google-genai 3.x's `models.get`, each in its shape."""
        if _from_google_sdk(req):
            try:
                self.gemini.get_model(req, resp)
            except HttpError as exc:
                resp.send_error(Family.GEMINI, exc)
            return
        self.route(req.name)
        resp.send(200, orjson.dumps(_openai_model(req.name)))

    def openai_models(self, req: Request, resp: Response) -> None:
        data = [_openai_model(n) for n in self.model_names()]
        resp.send(200, orjson.dumps({"object": "list", "data": data}))


def _stopped(family: Family) -> Handler:
    body = error_body(family, 503, STOPPED_MESSAGE, code="proxy_stopped")

    def stopped(req: Request, resp: Response) -> None:
        resp.send(503, body)

    return stopped


def _from_google_sdk(req: Request) -> bool:
    headers = req.headers
    return b"x-goog-api-client" in headers or b"x-goog-api-key" in headers


def _openai_model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": MODEL_CREATED, "owned_by": "antigravity"}


def build_router(app: App) -> Router:
    gemini, openai, anthropic = app.gemini, app.openai, app.anthropic
    r = Router()
    r.add((GET,), "/healthz", service.health, Family.OPENAI, health=True)
    r.add((GET,), "/health", service.health, Family.OPENAI, health=True)
    r.add((GET, HEAD), "/api/hello", service.hello, Family.ANTHROPIC, public=True)
    r.add((GET,), "/auth/callback", callback_handler(app.signin), Family.OPENAI, public=True)
    r.add((POST,), "/v1/api/event_logging", service.swallow, Family.ANTHROPIC)
    r.add((POST,), "/v1/api/event_logging/batch", service.swallow, Family.ANTHROPIC)

    r.add((GET,), "/v1/models", app.models_v1, Family.OPENAI)
    r.add((POST,), "/v1/models/detect", detect.handler(app), Family.OPENAI)
    r.add((POST,), "/v1/images/generations", app.images.generations, Family.OPENAI)
    r.add((POST,), "/v1/images/edits", app.images.edits, Family.OPENAI)
    # Auth-exempt as in the reference; the handler answers loopback callers only.
    r.add((POST,), "/internal/warmup", warmup.handler(app.warmup), Family.OPENAI, public=True)
    r.add((POST,), "/v1/chat/completions", openai.chat_completions, Family.OPENAI)
    r.add((POST,), "/v1/completions", openai.completions, Family.OPENAI)
    r.add((POST,), "/v1/responses", openai.responses, Family.OPENAI)
    r.add((POST,), "/responses", openai.responses, Family.OPENAI)
    # Codex's history compaction: the reference serves it as a Responses request (its `output` replaces history).
    r.add((POST,), "/responses/compact", openai.responses, Family.OPENAI)
    r.add((POST,), "/v1/responses/compact", openai.responses, Family.OPENAI)

    r.add((POST,), "/v1/messages", anthropic.messages, Family.ANTHROPIC)
    r.add((POST,), "/v1/messages/count_tokens", anthropic.count_tokens, Family.ANTHROPIC)
    r.add((GET,), "/v1/models/claude", app.openai_models, Family.ANTHROPIC)

    r.add((GET,), "/v1beta/models", gemini.list_models, Family.GEMINI)
    for prefix in GEMINI_PREFIXES:
        r.add_model_action(prefix, "generateContent", (POST,), gemini.generate, Family.GEMINI)
        r.add_model_action(prefix, "streamGenerateContent", (POST,), gemini.generate, Family.GEMINI)
        r.add_model_action(prefix, "countTokens", (POST,), gemini.count_tokens, Family.GEMINI)
    r.add_model_action("/v1beta/models/", "", (GET,), gemini.get_model, Family.GEMINI)
    r.add_model_action("/v1/models/", "", (GET,), app.model_v1, Family.OPENAI)

    # Before the admin API joins: every route so far but health and probes is a proxy route (stop/start).
    app.proxy_routes = [route for route in r.routes() if not (route.health or route.public)]
    admin = AdminApi(app)
    admin.register(r)
    SessionApi(app.config, r.sessions).register(r)
    ui.register(r)  # the dashboard: public static files, everything it shows is from the admin API
    # Prometheus scrapes it: admin auth, unless the operator opened it for a scraper on a trusted network.
    public = app.config.metrics_public
    r.add((GET,), "/metrics", admin.ops.metrics, Family.ADMIN, admin=not public, public=public)
    user_tokens.register(r, app.keys)
    return r
