"""IP rules: allow and deny lists with CIDRs (deny wins), X-Forwarded-For believed only from trusted proxies,
403 in the route's protocol shape, and every refusal counted as a security event."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import ServerThread, make_config, request, run_agfast
from hypothesis import given
from hypothesis import strategies as st

from agfast.http.access import DENIED, NOT_ALLOWED, IpRules, NetworkTable, parse_address
from agfast.http.errors import Family
from agfast.http.request import Request
from agfast.netaddr import parse_networks

# (allow, deny, peer, X-Forwarded-For or None, trusted proxies) → refusal reason or None (served)
DECISIONS = [
    ([], [], "127.0.0.1", None, [], None),
    ([], ["127.0.0.0/8"], "127.0.0.1", None, [], DENIED),
    (["10.0.0.0/8"], [], "127.0.0.1", None, [], NOT_ALLOWED),
    (["127.0.0.1/32"], [], "127.0.0.1", None, [], None),
    (["127.0.0.0/8"], ["127.0.0.1"], "127.0.0.1", None, [], DENIED),  # deny wins
    (["192.168.1.0/24"], [], "::ffff:192.168.1.9", None, [], None),  # dual-stack peers match IPv4 rules
    (["fd00::/8"], [], "fd12::1", None, [], None),
    ([], ["fd00::/8"], "fd12::1", None, [], DENIED),
    ([], ["fd00::/8"], "10.1.2.3", None, [], None),
    # trusted proxy: the right-most untrusted hop is the client; hops left of it are the client's own words
    ([], ["203.0.113.0/24"], "127.0.0.1", "198.51.100.7, 203.0.113.9", ["127.0.0.1"], DENIED),
    ([], ["203.0.113.0/24"], "127.0.0.1", "203.0.113.9, 198.51.100.7", ["127.0.0.1"], None),
    ([], ["203.0.113.0/24"], "127.0.0.1", "203.0.113.9, 10.0.0.2", ["127.0.0.1", "10.0.0.0/8"], DENIED),
    (["198.51.100.0/24"], [], "127.0.0.1", "198.51.100.7", ["127.0.0.0/8"], None),
    (["198.51.100.0/24"], [], "127.0.0.1", None, ["127.0.0.0/8"], NOT_ALLOWED),
    (["198.51.100.0/24"], [], "127.0.0.1", "not-an-address", ["127.0.0.1"], NOT_ALLOWED),
    ([], ["203.0.113.0/24"], "127.0.0.1", "203.0.113.9:50123", ["127.0.0.1"], DENIED),  # proxies that add ports
    ([], ["2001:db8::/32"], "127.0.0.1", "[2001:db8::7]:443", ["127.0.0.1"], DENIED),
    ([], ["2001:db8::/32"], "127.0.0.1", "2001:db8::7", ["127.0.0.1"], DENIED),
    # untrusted peer: its X-Forwarded-For is ignored
    ([], ["203.0.113.0/24"], "127.0.0.1", "203.0.113.9", ["10.0.0.1"], None),
    (["127.0.0.1"], [], "127.0.0.1", "203.0.113.9", [], None),
]


@pytest.mark.parametrize(("allow", "deny", "peer", "forwarded", "trusted", "expected"), DECISIONS)
def test_decisions(
    allow: list[str], deny: list[str], peer: str, forwarded: str | None, trusted: list[str], expected: str | None
) -> None:
    rules = IpRules(allow, deny, trusted)
    headers = {b"x-forwarded-for": forwarded.encode()} if forwarded is not None else {}
    client = rules.client_address(peer, headers)

    verdict = rules.decide(parse_address(client))
    assert (verdict[0] if verdict else None) == expected


def test_no_rules_means_inactive() -> None:
    assert not IpRules([], [], ["127.0.0.1"]).active
    assert IpRules([], ["10.0.0.0/8"], []).active


@contextmanager
def serving(tmp_path: Path, **rules: list[str]) -> Iterator[ServerThread]:
    with ServerThread(make_config(tmp_path, auth_mode="off", **rules)) as st:
        yield st


def test_denied_clients_get_403_in_each_protocol_shape_and_are_counted(tmp_path: Path) -> None:
    with serving(tmp_path, ip_deny=["127.0.0.0/8"]) as st:
        openai_err = request(st.port, "GET", "/v1/models").json()["error"]
        anthropic_reply = request(st.port, "POST", "/v1/messages", b"{}", {"Content-Type": "application/json"})
        gemini_reply = request(st.port, "GET", "/v1beta/models")
        health = request(st.port, "GET", "/healthz")
        rules = st.server.state.ip_rules  # type: ignore[union-attr]
        stats, events, lists = rules.stats(), rules.events(), rules.lists()
    assert openai_err["code"] == "ip_blocked" and openai_err["type"] == "permission_error"
    assert "127.0.0.1" in openai_err["message"] and "127.0.0.0/8" in openai_err["message"]
    assert anthropic_reply.status == 403
    assert anthropic_reply.json()["type"] == "error"
    assert anthropic_reply.json()["error"]["type"] == "permission_error"
    assert gemini_reply.status == 403
    assert gemini_reply.json()["error"]["status"] == "PERMISSION_DENIED"
    assert health.status == 403
    assert stats["total_blocked"] == 4
    assert stats["top_ips"] == [{"ip": "127.0.0.1", "count": 4}]
    assert [e["path"] for e in events] == ["/healthz", "/v1beta/models", "/v1/messages", "/v1/models"]
    assert {e["reason"] for e in events} == {DENIED}
    assert lists == {"allow": [], "deny": ["127.0.0.0/8"], "trusted_proxies": []}


def test_allow_list_lets_listed_clients_in(tmp_path: Path) -> None:
    with serving(tmp_path, ip_allow=["10.0.0.0/8", "127.0.0.1/32"]) as st:
        assert request(st.port, "GET", "/healthz").status == 200
    with serving(tmp_path, ip_allow=["10.0.0.0/8"]) as st:
        reply = request(st.port, "GET", "/healthz")
        assert reply.status == 403
        assert "not on the allow list" in reply.json()["error"]["message"]


def test_deny_wins_over_allow(tmp_path: Path) -> None:
    with serving(tmp_path, ip_allow=["127.0.0.0/8"], ip_deny=["127.0.0.1"]) as st:
        assert request(st.port, "GET", "/healthz").status == 403


def test_trusted_forwarded_for_is_honoured_and_untrusted_ignored(tmp_path: Path) -> None:
    blocked = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    forged = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    with serving(tmp_path, ip_deny=["203.0.113.0/24"], trusted_proxies=["127.0.0.1"]) as st:
        assert request(st.port, "GET", "/healthz").status == 200
        reply = request(st.port, "GET", "/healthz", headers=blocked)
        assert reply.status == 403 and "203.0.113.9" in reply.json()["error"]["message"]
        assert request(st.port, "GET", "/healthz", headers=forged).status == 200
        events = st.server.state.ip_rules.events()  # type: ignore[union-attr]
        assert [(e["ip"], e["peer"]) for e in events] == [("203.0.113.9", "127.0.0.1")]
    with serving(tmp_path, ip_deny=["203.0.113.0/24"], trusted_proxies=["10.0.0.1"]) as st:
        assert request(st.port, "GET", "/healthz", headers=blocked).status == 200


def test_ipv6_peer(tmp_path: Path) -> None:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            pass
    except OSError:
        pytest.skip("no IPv6 loopback here")
    cfg = make_config(tmp_path, auth_mode="off", host="::1", ip_deny=["::1/128"])
    with ServerThread(cfg) as st:
        with socket.create_connection(("::1", st.port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
            head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 403")


def test_bad_rules_are_refused_at_start(tmp_path: Path) -> None:
    done = run_agfast("--data-dir", str(tmp_path), env={"AGFAST_SECURITY_IP_DENY": "10.0.0.0/8,not-a-net"})
    assert done.returncode == 2
    assert "security.ip_deny" in done.stderr and "not-a-net" in done.stderr


# A rule set of the benchmark's size and shapes (benchmarks/access_cost.py): v4 and v6, nested, overlapping.
MANY_RULES = (
    [f"10.{i}.0.0/16" for i in range(60)]
    + [f"fd00:{i:x}::/32" for i in range(38)]
    + ["10.3.0.0/24", "10.0.0.0/8", "192.168.7.0/24", "0.0.0.0/0", "::/0", "10.3.4.5", "fd00:1::9"]
)


def first_listed(address: str, rules: list[str]) -> str | None:
    """The rule a plain scan in list order finds: what the table must agree with."""
    parsed = parse_address(address)
    for rule in parse_networks(rules):
        if parsed is not None and parsed.version == rule.version and parsed in rule:
            return str(rule)
    return None


# Inside nested rules, inside one rule, inside only the catch-alls, v6, and a dual-stack peer.
PROBES = ["10.3.4.5", "10.3.9.9", "10.77.0.1", "192.168.7.42", "8.8.8.8", "fd00:1::9", "fd00:30::1", "2001:db8::1",
          "::ffff:10.3.4.5"]  # fmt: skip


@given(
    st.sampled_from(PROBES),
    st.integers(0, len(MANY_RULES)),
    st.randoms(use_true_random=False),
)
def test_a_hundred_rules_match_like_a_scan_in_list_order(address: str, cut: int, rng: random.Random) -> None:
    rules = MANY_RULES[:cut]
    rng.shuffle(rules)
    table = NetworkTable(parse_networks(rules))
    parsed = parse_address(address)
    assert parsed is not None
    found = table.match(parsed)
    assert (str(found) if found is not None else None) == first_listed(address, rules)


def test_forwarded_verdicts_are_remembered_and_each_refusal_still_counted() -> None:
    rules = IpRules([], ["203.0.113.0/24"], ["127.0.0.1"])
    refused = Request(b"POST", "/v1/chat/completions", b"", {b"x-forwarded-for": b"198.51.100.1, 203.0.113.9"})
    served = Request(b"POST", "/v1/chat/completions", b"", {b"x-forwarded-for": b"203.0.113.9, 198.51.100.1"})
    for _ in range(3):
        assert rules.screen(refused, Family.OPENAI, "127.0.0.1") is not None
        assert rules.screen(served, Family.OPENAI, "127.0.0.1") is None
    # the same header from a peer that is not a trusted proxy is not believed
    assert rules.screen(refused, Family.OPENAI, "10.0.0.1") is None
    assert rules.stats()["top_ips"] == [{"ip": "203.0.113.9", "count": 3}]
    assert [event["peer"] for event in rules.events()] == ["127.0.0.1"] * 3
