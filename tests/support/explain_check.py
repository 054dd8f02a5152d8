"""Comparing ``steering.explain`` with what a DNS server answered: client subnets to ask for, ECS queries,
and a reply read back as (records, TTL, ECS scope). Used by tests/test_explain*.py."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.message
import dns.rdatatype

# Where the example config's geos are (tests/support/paths.EXAMPLE_CONFIG), and elsewhere (the default geo).
V4_BASES = ("198.51.100.0", "203.0.113.0", "127.1.0.0", "127.2.0.0", "127.3.0.0", "127.4.0.0", "127.5.0.0")
V6_BASES = ("2001:db8:1::", "2001:db8:2::", "2001:db8:3::", "2001:db8:4::", "2001:db8:5::")
V4_PREFIXES = (32, 28, 26, 25, 24, 24, 24, 20, 16)
V6_PREFIXES = (128, 64, 56, 56, 48, 40)


def random_subnets(rng: random.Random, count: int, v6_share: float = 0.25) -> list[str]:
    """``count`` client subnets: mostly IPv4, about ``v6_share`` IPv6; most inside a geo's prefixes (near
    their edges too), the rest anywhere (the default geo), with ECS source prefixes around the key's."""
    out = []
    for _ in range(count):
        if rng.random() < v6_share:
            width, plen = 128, rng.choice(V6_PREFIXES)
            if rng.random() < 0.7:
                addr = int(ipaddress.IPv6Address(rng.choice(V6_BASES))) | rng.getrandbits(80)
            else:
                addr = (0x2001 << 112) | rng.getrandbits(112)
        else:
            width, plen = 32, rng.choice(V4_PREFIXES)
            if rng.random() < 0.7:
                base = int(ipaddress.IPv4Address(rng.choice(V4_BASES)))
                addr = base | rng.getrandbits(8 if base >> 24 != 127 else 16)
            else:
                addr = rng.getrandbits(32)
        net = addr >> (width - plen) << (width - plen)
        out.append(str(ipaddress.ip_network((net, plen)) if width == 32 else ipaddress.IPv6Network((net, plen))))
    return out


def ecs_query(service: str, qtype: str, subnet: str | None) -> dns.message.Message:
    """A query for ``service`` with an ECS option for ``subnet`` (none: no EDNS at all)."""
    if subnet is None:
        return dns.message.make_query(service, qtype)
    net = ipaddress.ip_network(subnet)
    return dns.message.make_query(service, qtype, use_edns=0,
                                  options=[dns.edns.ECSOption(str(net.network_address), net.prefixlen)])


@dataclass(frozen=True)
class Answered:
    """What a reply said: the answer's (type, value) pairs, their TTLs, the ECS scope it echoed (None: none)."""

    records: frozenset[tuple[str, str]]
    ttls: frozenset[int]
    scope: int | None


def answered(reply: dns.message.Message) -> Answered:
    records = set()
    ttls = set()
    for rrset in reply.answer:
        ttls.add(rrset.ttl)
        for rd in rrset:
            records.add((dns.rdatatype.to_text(rrset.rdtype), rd.to_text()))
    scope = next((o.scopelen for o in reply.options if isinstance(o, dns.edns.ECSOption)), None)
    return Answered(frozenset(records), frozenset(ttls), scope)


def expected(explanation: dict[str, Any], qtype: str) -> frozenset[tuple[str, str]]:
    """The records of ``qtype`` an explanation (its ``--json`` shape) says the reply carries."""
    return frozenset((r["type"], r["value"]) for r in explanation["records"] if r["type"] == qtype)


def mismatch(explanation: dict[str, Any], qtype: str, got: Answered) -> str:
    """"" when the reply agrees with the explanation (records, TTL, ECS scope), else what differs."""
    want = expected(explanation, qtype)
    problems = []
    if got.records != want:
        problems.append(f"records {sorted(got.records)} != {sorted(want)}")
    if want and got.ttls != {explanation["ttl"]}:
        problems.append(f"ttl {sorted(got.ttls)} != {explanation['ttl']}")
    if got.scope != explanation["ecs_scope"]:
        problems.append(f"scope {got.scope} != {explanation['ecs_scope']}")
    return "; ".join(problems)
