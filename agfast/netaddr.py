"""Addresses and proxy URLs as settings name them: parsed once, checked at config load, used by `http/access`
(client IP rules) and `upstream/proxy` (outbound proxies) alike. Pure: no IO, no imports from agfast."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Proxy schemes agfast speaks → the default port curl uses for each.
PROXY_DEFAULT_PORTS: dict[str, int] = {
    "http": 1080,
    "https": 443,
    "socks4": 1080,
    "socks4a": 1080,
    "socks5": 1080,
    "socks5h": 1080,
}


def parse_networks(entries: list[str]) -> list[Network]:
    """Addresses and CIDRs (v4 and v6) as networks; ValueError names the entry that is neither."""
    networks: list[Network] = []
    for entry in entries:
        text = entry.strip()
        try:
            networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR (like 192.168.1.0/24 or fd00::/8)") from None
    return networks


class ProxyURLError(ValueError):
    """A proxy URL agfast cannot use; the message never repeats the URL (it may hold a password)."""


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """One parsed proxy URL; `label` (scheme://host:port) is what logs and answers may show."""

    url: str
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    label: str


def parse_proxy_url(url: str) -> ProxyURL:
    """A proxy URL as the reference accepts it (a bare host:port means http://)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ProxyURLError("not a valid proxy URL (scheme://[user:password@]host:port)") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_DEFAULT_PORTS:
        raise ProxyURLError(f"proxy scheme must be one of {', '.join(PROXY_DEFAULT_PORTS)} (got {scheme!r})")
    if not parts.hostname:
        raise ProxyURLError("proxy URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyURLError("a proxy URL is scheme://[user:password@]host:port, with no path")
    host = parts.hostname
    port = port or PROXY_DEFAULT_PORTS[scheme]
    shown = f"[{host}]" if ":" in host else host
    return ProxyURL(
        url=text,
        scheme=scheme,
        host=host,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        label=f"{scheme}://{shown}:{port}",
    )
