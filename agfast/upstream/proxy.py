"""Outbound proxies: which proxy a call to Google goes through, and what a failing proxy is called.

`upstream.proxy` (global) and an account's `proxy_url` (per account; it wins) name an http, https, socks4 or
socks5 proxy, credentials allowed in the URL. Each distinct proxy gets one connector (aiohttp-socks: SOCKS
natively, HTTP proxies through CONNECT tunnels), created on first use and reused, so a proxied call pools its
connections like a direct one. Hosts listed in `NO_PROXY` (names, `.suffix`es, addresses, CIDRs, `*`) go
direct, as with curl and requests.

A proxy that fails (refused, 407, SOCKS error, timeout) is a `ProxyFailure`: a 502 in the caller's shape that
names the proxy by scheme://host:port (never its credentials) and blames no account.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp_socks import ProxyConnectionError, ProxyConnector, ProxyError, ProxyTimeoutError, ProxyType

from agfast.netaddr import parse_proxy_url

# scheme → (python-socks proxy type, TLS to the proxy itself, remote DNS).
SCHEMES: dict[str, tuple[ProxyType, bool, bool]] = {
    "http": (ProxyType.HTTP, False, True),
    "https": (ProxyType.HTTP, True, True),
    "socks4": (ProxyType.SOCKS4, False, False),
    "socks4a": (ProxyType.SOCKS4, False, True),
    "socks5": (ProxyType.SOCKS5, False, False),
    "socks5h": (ProxyType.SOCKS5, False, True),
}
# What aiohttp-socks raises when the proxy itself fails (not the server behind it).
PROXY_ERRORS = (ProxyConnectionError, ProxyError, ProxyTimeoutError)
# How much of the proxy library's own reason a client is shown.
REASON_LIMIT = 200
# The error a client gets for a failing proxy (the gateway's error tables and the admin API answer with it).
PROXY_FAILURE_STATUS = 502
PROXY_FAILURE_CODE = "upstream_proxy_error"


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """One parsed proxy URL with how to reach it; `label` is what logs and answers may show."""

    url: str
    kind: ProxyType
    tls: bool
    rdns: bool
    host: str
    port: int
    username: str | None
    password: str | None
    label: str


def parse_proxy(url: str) -> ProxySpec:
    """A proxy URL as the reference accepts it (a bare host:port means http://); ProxyURLError if unusable."""
    parsed = parse_proxy_url(url)
    kind, tls, rdns = SCHEMES[parsed.scheme]
    return ProxySpec(
        url=parsed.url,
        kind=kind,
        tls=tls,
        rdns=rdns,
        host=parsed.host,
        port=parsed.port,
        username=parsed.username,
        password=parsed.password,
        label=parsed.label,
    )


class ProxyFailure(Exception):
    """The outbound proxy failed: a 502 that names the proxy, not the account behind the call (the caller's
    error table words it; `message` never holds the proxy's credentials)."""

    def __init__(self, label: str, reason: str) -> None:
        self.message = f"The outbound proxy {label} failed: {reason}. Check upstream.proxy or the account's proxy_url."
        super().__init__(self.message)
        self.label = label
        self.status = PROXY_FAILURE_STATUS
        self.code = PROXY_FAILURE_CODE


def _reason(spec: ProxySpec, exc: BaseException) -> str:
    """The library's reason with anything secret cut out (it may echo what we sent)."""
    if isinstance(exc, ProxyTimeoutError):
        return "timed out"
    if isinstance(exc, ProxyConnectionError):
        return "cannot connect to the proxy"
    text = str(exc) or type(exc).__name__
    for secret in (spec.password, spec.username):
        if secret:
            text = text.replace(secret, "***")
    code = getattr(exc, "error_code", None)
    if code == 407:
        return "proxy authentication failed (HTTP 407)"
    return text[:REASON_LIMIT]


class LabelledProxyConnector(ProxyConnector):
    """aiohttp-socks' connector, whose failures are `ProxyFailure`s naming the proxy."""

    def __init__(self, spec: ProxySpec, **kwargs: Any) -> None:
        super().__init__(
            host=spec.host,
            port=spec.port,
            proxy_type=spec.kind,
            username=spec.username,
            password=spec.password,
            rdns=spec.rdns,
            proxy_ssl=ssl.create_default_context() if spec.tls else None,
            **kwargs,
        )
        self._spec = spec

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._wrap_create_connection(*args, **kwargs)
        except PROXY_ERRORS as exc:
            raise ProxyFailure(self._spec.label, _reason(self._spec, exc)) from None


class NoProxy:
    """`NO_PROXY` as curl reads it: `*`, host names (and their subdomains), `.suffix`es, addresses, CIDRs."""

    __slots__ = ("_all", "_cache", "_networks", "_suffixes")

    # Hosts whose answer is remembered; agfast calls a handful (endpoints, token, userinfo).
    CACHE_SIZE = 256

    def __init__(self, entries: list[str]) -> None:
        self._all = False
        self._suffixes: list[str] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._cache: dict[str, bool] = {}
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self._all = True
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host = entry.lstrip("*").lstrip(".")
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            if host:
                self._suffixes.append(host)

    def bypass(self, host: str) -> bool:
        """Whether calls to `host` go direct."""
        found = self._cache.get(host)
        if found is None:
            found = self._match(host.lower().strip("[]").rstrip("."))
            if len(self._cache) < self.CACHE_SIZE:
                self._cache[host] = found
        return found

    def _match(self, host: str) -> bool:
        if self._all:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return any(host == s or host.endswith("." + s) for s in self._suffixes)
        return any(address in net for net in self._networks) or host in self._suffixes
