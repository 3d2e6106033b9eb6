"""What every connection of one server shares: config, routes, auth, the clock and the live connections."""

from __future__ import annotations

import asyncio
import os
import time
from email.utils import formatdate
from itertools import count
from typing import Any

from agfast.config import AUTH_ATTRS, Config
from agfast.http.access import IpRules
from agfast.http.auth import Authenticator
from agfast.http.origin import BrowserPolicy
from agfast.http.router import Router


class ServerState:
    """What every connection shares: config, routes, auth, the clock and the live connections."""

    __slots__ = (
        "_ids",
        "_prefix",
        "auth",
        "browsers",
        "config",
        "connections",
        "date_header",
        "ip_rules",
        "loop",
        "now",
        "router",
        "shutting_down",
    )

    def __init__(self, config: Config, router: Router, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.router = router
        self.loop = loop
        self.auth = Authenticator(config.effective_auth_mode, config.api_key, config.admin_password, router.sessions)
        for route in router.routes():
            route.guarded = self.auth.guards(route)
        self.browsers = BrowserPolicy(config, self.auth)
        self.ip_rules = IpRules.from_config(config)
        # The live HttpProtocol instances (typed loosely: the protocol module imports this one).
        self.connections: set[Any] = set()
        self.shutting_down = False
        self.now = time.monotonic()
        self.date_header = b""
        # Request ids: a per-process random prefix and a counter; unique without a uuid4 per request.
        self._prefix = b"req_" + os.urandom(6).hex().encode() + b"_"
        self._ids = count(1)
        self.refresh_clock()

    def config_changed(self, names: frozenset[str]) -> None:
        """A live config change: auth mode and keys take effect from the next request."""
        if names & AUTH_ATTRS:
            config = self.config
            self.auth.configure(config.effective_auth_mode, config.api_key, config.admin_password)
            for route in self.router.routes():
                route.guarded = self.auth.guards(route)

    def refresh_clock(self) -> None:
        self.now = time.monotonic()
        self.date_header = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"

    def next_request_id(self) -> bytes:
        return self._prefix + b"%x" % next(self._ids)
