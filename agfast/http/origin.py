"""Which browsers may use agfast: the `Host` check (DNS rebinding) and the `Origin` check (cross-site pages).

A loopback agfast with auth off would otherwise serve any web page the user opens: the page can POST prompts
to 127.0.0.1, and a DNS-rebinding page (its own domain re-pointed at 127.0.0.1) can read the answers too.
Two checks close that, before auth:

- `Host` must name this machine: the loopback names always (any port); the bind address; when reachable from
  the LAN, the machine's hostname and, on a wildcard bind, the local address the client connected to; plus
  `allowed_hosts` (`*` = any). A rebinding page's requests carry the attacker's domain, so they fail here.
- `Origin` (browsers send it on cross-origin requests and on every POST) must be our own origin, one listed in
  `cors.allowed_origins` (`*` = any), or — on routes that require the API key — come with the valid key.
  Only then do CORS headers go out, echoing that origin (so `X-Account-Email` is exposed to nobody else).
  A preflight cannot carry the key: on key-guarded routes it is allowed, and the real request is checked.

SDKs and CLIs send no `Origin` and the `Host` of their base URL: they pay one set lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import TYPE_CHECKING

from agfast.http import auth
from agfast.http.errors import Family, error_body

if TYPE_CHECKING:
    from agfast.config import Config
    from agfast.http.request import Request

LOOPBACK_NAMES = (b"localhost", b"127.0.0.1", b"[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
# Host values found valid at run time (other ports, LAN addresses) are remembered so their next request is one
# lookup too. Each must name this machine, so a real deployment has a handful; the cap bounds a caller that
# cycles through ports.
MAX_LEARNED_HOSTS = 64
# How much of a refused Host/Origin value the 403 quotes (the value is the caller's own, JSON-escaped).
QUOTE_LIMIT = 200
ANY = b"*"
# What a header value we echo into our own response head may contain: visible ASCII, single inner blanks. h11
# accepts any byte but NUL and blanks, and a control character echoed back makes our answer malformed.
ECHOABLE = re.compile(rb"[!-~]+(?:[ \t]+[!-~]+)*")


def echoable(value: bytes) -> bool:
    """Whether a request header value may be copied into a response header as it is."""
    return ECHOABLE.fullmatch(value) is not None


def host_form(host: str) -> bytes:
    """`host` as it appears in a Host header: lower case, IPv6 in brackets."""
    host = host.strip().lower()
    if host.count(":") > 1 and not host.startswith("["):
        host = f"[{host}]"
    return host.encode("idna") if not host.isascii() else host.encode()


def host_name(host: bytes) -> bytes | None:
    """The Host header without its port (`b"[::1]:8045"` → `b"[::1]"`); None when it is malformed."""
    if host.startswith(b"["):
        end = host.find(b"]") + 1
        if end == 0:
            return None
        name, rest = host[:end], host[end:]
    else:
        name, sep, port = host.partition(b":")
        rest = sep + port
    if rest and not (rest[:1] == b":" and rest[1:].isdigit()):
        return None
    return name


def _same_address(name: bytes, sockname: object) -> bool:
    """Whether a Host name is the IP literal of the local end of the connection."""
    if not isinstance(sockname, tuple) or not sockname:
        return False
    try:
        wanted = ipaddress.ip_address(name.strip(b"[]").decode("ascii"))
        local = ipaddress.ip_address(str(sockname[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped is not None:
        local = local.ipv4_mapped
    return wanted == local


class BrowserPolicy:
    """The allowed Host names and origins, resolved once from the config; `screen()` runs per request."""

    __slots__ = ("_auth", "_learned", "any_host", "any_origin", "hosts", "names", "origins", "wildcard")

    def __init__(self, config: Config, authenticator: auth.Authenticator) -> None:
        self._auth = authenticator
        names = set(LOOPBACK_NAMES)
        bind = config.bind_host
        if bind not in WILDCARD_BINDS:
            names.add(host_form(bind))
        if config.lan_exposed:
            names.add(host_form(socket.gethostname()))
        configured = {host_form(h) for h in config.allowed_hosts}
        self.any_host = ANY in configured
        names |= configured - {ANY}
        self.names = frozenset(names)
        # Exact Host values known good: the bare names, then whatever `_host_ok` confirms (bounded).
        self.hosts = set(self.names)
        self._learned = 0
        # On a wildcard bind a LAN client's Host is whichever of our addresses it reached.
        self.wildcard = config.lan_exposed and bind in WILDCARD_BINDS
        self.origins = frozenset(o.encode() for o in config.cors_allowed_origins)
        self.any_origin = ANY in self.origins

    def screen(
        self, req: Request, family: Family, guarded: bool, transport: asyncio.BaseTransport | None
    ) -> bytes | None:
        """None when the request may go on (with `req.cors` set to the origin to echo, if any); else a 403 body."""
        headers = req.headers
        host = headers.get(b"host")
        if host is not None and host not in self.hosts and not self.any_host and not self._host_ok(host, transport):
            return self._refuse_host(family, host)
        origin = headers.get(b"origin")
        if origin is None:
            return None
        if origin in self.origins:
            req.cors = origin
            return None
        if not echoable(origin):
            return self._refuse_origin(family, origin)
        if self.any_origin:
            req.cors = origin
            return None
        if host is not None and origin.partition(b"://")[2] == host and origin.startswith((b"http://", b"https://")):
            return None  # our own origin (a page agfast served): not cross-origin at all
        if guarded and (
            req.method == b"OPTIONS" or self._auth.check(headers, family is Family.ADMIN, charge=False) == auth.OK
        ):
            req.cors = origin
            return None
        return self._refuse_origin(family, origin)

    def _host_ok(self, host: bytes, transport: asyncio.BaseTransport | None) -> bool:
        name = host_name(host.lower())
        if name is None:
            return False
        ok = name in self.names or (
            self.wildcard and transport is not None and _same_address(name, transport.get_extra_info("sockname"))
        )
        if ok and self._learned < MAX_LEARNED_HOSTS:
            self._learned += 1
            self.hosts.add(host)
        return ok

    @staticmethod
    def _refuse_host(family: Family, host: bytes) -> bytes:
        shown = host[:QUOTE_LIMIT].decode("latin-1")
        message = (
            f"Host '{shown}' is not allowed: agfast answers only requests addressed to this machine (localhost, "
            "127.0.0.1, [::1]; its address or hostname when serving the LAN). To reach it under another name, "
            "add the name to allowed_hosts in the config."
        )
        return error_body(family, 403, message, code="host_not_allowed")

    @staticmethod
    def _refuse_origin(family: Family, origin: bytes) -> bytes:
        shown = origin[:QUOTE_LIMIT].decode("latin-1")
        message = (
            f"Cross-origin request from '{shown}' refused: agfast answers web pages only from its own origin, "
            "from origins listed in cors.allowed_origins in the config, or with the API key when auth is "
            "required."
        )
        return error_body(family, 403, message, code="origin_not_allowed")
