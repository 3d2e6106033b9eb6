"""Which client addresses may use agfast: allow and deny lists of addresses and CIDRs, and the security events.

Rules (`security.ip_allow`, `security.ip_deny`): deny wins; an empty allow list lets everyone in. The client
address is the TCP peer, unless the peer is one of `security.trusted_proxies`: then `X-Forwarded-For` is read
from the right, skipping trusted hops, and the first untrusted address is the client (the left part of the
header is whatever the client wrote, so it is never believed). A refused client gets 403 in its route's
protocol shape, and the refusal is a security event: kept in a bounded ring, counted per address, for
`/api/security/*` (`events()`, `stats()`, `lists()`).

Compiled once at start into `NetworkTable`s (a dict per prefix length, so a hundred rules cost a few
lookups, not a hundred comparisons); with no rule configured `active` is False and the request path does not
call in at all. Decisions are remembered per peer, and per (trusted peer, X-Forwarded-For value), so a client
pays one dict lookup per request.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from agfast.http.errors import Family, error_body
from agfast.netaddr import Address, Network, parse_networks

if TYPE_CHECKING:
    from agfast.config import Config
    from agfast.http.request import Request

__all__ = ["IpRules", "parse_networks"]

# Recent refusals kept for `/api/security/events`; older ones survive only in the counters.
EVENTS_KEPT = 1000
# Distinct refused addresses counted one by one; past this they are summed under OTHER (a scan from many
# addresses must not grow memory without bound).
MAX_COUNTED_ADDRESSES = 10_000
OTHER = "other"
# Peer addresses whose decision is remembered; a LAN has a handful, the cap bounds a scan.
DECISION_CACHE_SIZE = 4096
# X-Forwarded-For hops read; a longer chain is a forged one.
MAX_FORWARDED_HOPS = 20
# How much of a client-written path an event keeps.
PATH_LIMIT = 200

DENIED = "denied"  # the address matches a deny rule
NOT_ALLOWED = "not_allowed"  # an allow list exists and the address is not on it


def parse_address(text: str) -> Address | None:
    """An address as a peer or a proxy's header gives it (`[v6]`, `v4:port`, `[v6]:port`, v4-mapped v6
    unwrapped); None when it is not one."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d
    return address


class NetworkTable:
    """Networks by (IP version, prefix length) → {network number >> host bits: (rule index, network)}.

    A match costs one shift and one dict lookup per distinct prefix length among the rules (a LAN rule set has
    a handful), where a scan costs one comparison per rule; of several matching rules the first listed wins,
    as a scan would find it."""

    __slots__ = ("_levels", "networks")

    def __init__(self, networks: list[Network]) -> None:
        self.networks = networks
        grouped: dict[tuple[int, int], dict[int, tuple[int, Network]]] = {}
        for index, network in enumerate(networks):
            shift = network.max_prefixlen - network.prefixlen
            level = grouped.setdefault((network.version, shift), {})
            level.setdefault(int(network.network_address) >> shift, (index, network))
        self._levels: dict[int, list[tuple[int, dict[int, tuple[int, Network]]]]] = {4: [], 6: []}
        for (version, shift), level in sorted(grouped.items()):
            self._levels[version].append((shift, level))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def match(self, address: Address) -> Network | None:
        """The first listed network holding `address`, or None."""
        number = int(address)
        found: tuple[int, Network] | None = None
        for shift, level in self._levels[address.version]:
            hit = level.get(number >> shift)
            if hit is not None and (found is None or hit[0] < found[0]):
                found = hit
        return found[1] if found is not None else None


class IpRules:
    """The allow/deny engine and its event log; one per server."""

    __slots__ = (
        "_allow",
        "_decisions",
        "_deny",
        "_forwarded",
        "_trusted",
        "active",
        "counts",
        "event_log",
        "total",
        "trust",
    )

    def __init__(self, allow: list[str], deny: list[str], trusted: list[str]) -> None:
        self._allow = NetworkTable(parse_networks(allow))
        self._deny = NetworkTable(parse_networks(deny))
        self._trusted = NetworkTable(parse_networks(trusted))
        self.active = bool(self._allow or self._deny)
        self.trust = bool(self._trusted)
        # peer address → (refusal reason, matching rule) or None; only for peers whose headers are not read.
        self._decisions: dict[str, tuple[str, str] | None] = {}
        # (peer, X-Forwarded-For value) → (client address, verdict): a proxy forwards the same few clients.
        self._forwarded: dict[tuple[str, bytes], tuple[str, tuple[str, str] | None]] = {}
        self.event_log: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.counts: dict[str, int] = {}
        self.total = 0

    @classmethod
    def from_config(cls, config: Config) -> IpRules:
        return cls(config.ip_allow, config.ip_deny, config.trusted_proxies)

    # -- decisions ---------------------------------------------------------------------------------------

    def decide(self, address: Address | None) -> tuple[str, str] | None:
        """None when the address may pass, else (reason, rule)."""
        if address is None:  # not an IP at all (a Unix socket, a forged header): only a deny-nothing list passes
            return (NOT_ALLOWED, "") if self._allow else None
        hit = self._deny.match(address)
        if hit is not None:
            return DENIED, str(hit)
        if self._allow and self._allow.match(address) is None:
            return NOT_ALLOWED, ""
        return None

    def client_address(self, peer: str, headers: dict[bytes, bytes]) -> str:
        """The peer, or — when the peer is a trusted proxy — the right-most untrusted X-Forwarded-For hop."""
        if not self.trust:
            return peer
        address = parse_address(peer)
        if address is None or self._trusted.match(address) is None:
            return peer
        forwarded = headers.get(b"x-forwarded-for")
        if not forwarded:
            return peer
        hops = forwarded.decode("latin-1").split(",")[-MAX_FORWARDED_HOPS:]
        client = peer
        for hop in reversed(hops):
            hop = hop.strip()
            hop_address = parse_address(hop)
            if hop_address is None:
                return hop  # garbage where an address belongs: it is the client's, and matches no allow rule
            client = str(hop_address)
            if self._trusted.match(hop_address) is None:
                return client
        return client  # every hop trusted: the left-most is the furthest we can see

    def screen(self, req: Request, family: Family, peer: str) -> bytes | None:
        """The 403 body for a refused client (and the event recorded), or None to serve it; `peer` is the TCP
        peer's address, read once per connection."""
        forwarded = req.headers.get(b"x-forwarded-for") if self.trust else None
        if forwarded is not None:
            seen = self._forwarded.get((peer, forwarded))
            if seen is None:
                client = self.client_address(peer, req.headers)
                seen = client, self.decide(parse_address(client))
                if len(self._forwarded) >= DECISION_CACHE_SIZE:
                    self._forwarded.clear()
                self._forwarded[(peer, forwarded)] = seen
            client, verdict = seen
        else:
            client = peer
            cached = self._decisions.get(peer, False)
            if cached is False:
                verdict = self.decide(parse_address(peer))
                if len(self._decisions) >= DECISION_CACHE_SIZE:
                    self._decisions.clear()
                self._decisions[peer] = verdict
            else:
                verdict = cached  # type: ignore[assignment]
        if verdict is None:
            return None
        reason, rule = verdict
        self._record(client, peer, req, reason, rule)
        why = f"it matches the deny rule {rule}" if reason == DENIED else "it is not on the allow list"
        message = f"Access denied: client address {client or 'unknown'} may not use this server ({why})."
        return error_body(family, 403, message, code="ip_blocked")

    # -- security events (`/api/security/*`) -----------------------------------------------------------

    def _record(self, client: str, peer: str, req: Request, reason: str, rule: str) -> None:
        self.total += 1
        key = client if client in self.counts or len(self.counts) < MAX_COUNTED_ADDRESSES else OTHER
        self.counts[key] = self.counts.get(key, 0) + 1
        self.event_log.append(
            {
                "timestamp": time.time(),
                "ip": client,
                "peer": peer,
                "method": req.method.decode("latin-1"),
                "path": req.path[:PATH_LIMIT],
                "reason": reason,
                "rule": rule,
            }
        )

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent refusals, newest first."""
        if limit <= 0:
            return []
        recent = list(self.event_log)[-limit:]
        recent.reverse()
        return recent

    def stats(self, top: int = 20) -> dict[str, Any]:
        """How many refusals in all, and the addresses refused most."""
        ranked = sorted(self.counts.items(), key=lambda item: item[1], reverse=True)[:top]
        return {
            "total_blocked": self.total,
            "unique_ips": len(self.counts),
            "top_ips": [{"ip": ip, "count": count} for ip, count in ranked],
        }

    def lists(self) -> dict[str, list[str]]:
        """The rules in force, as compiled (normalised CIDRs)."""
        return {
            "allow": [str(n) for n in self._allow.networks],
            "deny": [str(n) for n in self._deny.networks],
            "trusted_proxies": [str(n) for n in self._trusted.networks],
        }
