"""Why a client gets the answer it gets: one pure function shared by ``RoutingService.Explain`` and
``steerctl explain --config --table`` (docs/operator-guide.md, "explain"; docs/architecture.md §9).

``explain(topology, table, service, client_address, ecs_subnet)`` walks the
DNS server's own steps for one query of a steered name, with the DNS
server's own functions, and records each:

1. **The client key** (``GeoMap.key``, as ``dnsserver.slowpath`` calls it):
   the ECS subnet when the query carries one, else the source address
   (``GeoMap.key_for_source``: an IPv4-mapped address counts as IPv4), cut
   to /24 or /56 (or the longest configured prefix), with its geo and ECS
   scope.
2. **Why that geo**: the prefix that placed the key (``GeoMap.matched``),
   a geo's configured prefix or one compiled from the GeoIP database; with
   a database, what it says of the address (``codes_of``, injected: the
   only I/O, done by the caller), and which of the geo's codes that
   matches.
3. **The split** (``steering.pick.table_split``): the table's serving
   targets with answers, or, when the table cannot be used, the equal
   ``spread`` over the topology's fail-open targets and the reason (the
   reasons the DNS server counts in ``steering_dns_fallback_total``).
4. **The pick** (``steering.pick.pick``, seeded with ``name_seed``) and the
   key's slot, then the target's records, the service's TTL and the ECS
   scope the reply echoes (only to a query that sent ECS).

Nothing here is a second definition: a change to the pick, the key or the
scope changes the explanation with it, and ``tests/test_explain_dns.py``
compares it with a real DNS server's answers for 1,000 clients.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steering import pick
from steering.geoip import Codes, GeoIpError
from steering.table import RoutingTable
from steering.topology import ClientKey, ResolveError, Topology

__all__ = ["Explanation", "GeoIpSays", "Placed", "Record", "Weight", "explain", "parse_ecs"]

CodesOf = Callable[[str], Codes | None]  # an address -> what the GeoIP database says of it (None: no record)


@dataclass(frozen=True)
class GeoIpSays:
    """What the GeoIP database says of the placed address, and which of the geo's codes that matches."""

    country: str = ""
    continent: str = ""
    subdivisions: tuple[str, ...] = ()
    matched: str = ""  # "subdivision US-CA", "country DE", "continent EU"; "" when none of the geo's codes
    error: str = ""  # the database could not be read (the rest is then empty)

    def to_dict(self) -> dict[str, Any]:
        return {"country": self.country or None, "continent": self.continent or None,
                "subdivisions": list(self.subdivisions), "matched": self.matched or None,
                "error": self.error or None}


@dataclass(frozen=True)
class Placed:
    """The geo of the client key and why: ``source`` is ``prefix`` (a geo's configured prefix), ``geoip`` (a
    prefix compiled from the GeoIP database) or ``default`` (no prefix holds the key)."""

    geo: str
    source: str
    prefix: str  # the prefix that placed the key, "" for the default geo
    geoip: GeoIpSays | None  # set when a GeoIP database is in use
    why: str  # one sentence


@dataclass(frozen=True)
class Weight:
    """One target of the geo's route in the table: its weight of 1000, the planner's reason."""

    target: str
    kind: str  # region | site
    region: str
    weight: int
    reason: str
    in_split: bool  # the pick raced it (a non-zero weight and answers for the service)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "kind": self.kind, "region": self.region, "weight": self.weight,
                "reason": self.reason, "in_split": self.in_split}


@dataclass(frozen=True)
class Record:
    type: str  # A | AAAA | CNAME
    value: str


@dataclass(frozen=True)
class Explanation:
    service: str
    client_address: str
    ecs_subnet: str  # as the DNS server reads it (bits past the source prefix cleared); "" without ECS
    placed: Placed
    weights: tuple[Weight, ...]  # the route's targets, highest weight first; () without a route
    fail_open: bool  # the planner failed the route open
    pinned: bool
    fallback: str  # why the DNS server does not use the table (its fail-open spread); "" when it does
    split: tuple[tuple[str, int], ...]  # what the pick raced: (target, weight)
    client_subnet: str  # the client key as a network: what the pick hashes
    key_source: str  # ecs | address
    slot: int  # the key's slot of steering.pick.SLOTS for this service
    target: str  # "" when nothing can answer
    records: tuple[Record, ...]
    ttl: int
    ecs_scope: int | None  # the scope the reply's ECS option carries; None: the query sent no ECS
    table_version: int  # 0 without a table
    table_generated_at: float

    @property
    def geo(self) -> str:
        return self.placed.geo

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape (docs/operator-guide.md, "explain")."""
        p = self.placed
        return {
            "service": self.service, "client_address": self.client_address, "ecs_subnet": self.ecs_subnet or None,
            "geo": p.geo,
            "placed_by": {"source": p.source, "prefix": p.prefix or None,
                          "geoip": p.geoip.to_dict() if p.geoip is not None else None},
            "why": p.why,
            "weights": [w.to_dict() for w in self.weights],
            "fail_open": self.fail_open, "pinned": self.pinned, "fallback": self.fallback or None,
            "split": [{"target": t, "weight": w} for t, w in self.split],
            "client_key": {"subnet": self.client_subnet, "from": self.key_source, "slot": self.slot},
            "target": self.target or None,
            "records": [{"type": r.type, "value": r.value} for r in self.records],
            "ttl": self.ttl, "ecs_scope": self.ecs_scope,
            "table_version": self.table_version, "table_generated_at": self.table_generated_at,
        }


def parse_ecs(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An ECS subnet ``ADDRESS/PREFIX`` (a bare address: its full length); bits past the prefix are cleared,
    as the DNS server keys on the prefix only. ResolveError naming ``ecs_subnet`` when malformed."""
    raw = text.strip()
    try:
        if "%" in raw:
            raise ValueError("an ECS option carries no zone")
        return ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise ResolveError("ecs_subnet", f"{text[:80]!r} is not an IPv4 or IPv6 subnet (ADDRESS/PREFIX)") from None


def explain(topology: Topology, table: RoutingTable | None, service: str, client_address: str,
            ecs_subnet: str = "", codes_of: CodesOf | None = None) -> Explanation:
    """The DNS server's answer to ``service`` for this client, step by step (see the module doc).

    ``client_address`` is the query's source (the client, or its resolver); ``ecs_subnet`` an ECS option's
    subnet, which decides when given. ``codes_of`` reads the GeoIP database (asked only when the topology
    places clients with one). Raises ``ResolveError`` naming ``service``, ``client_address`` or
    ``ecs_subnet``."""
    name = topology.service_name(service)
    if not client_address.strip():
        raise ResolveError("client_address", "give the client's (or its resolver's) IPv4 or IPv6 address")
    source_key = topology.client_key(client_address.strip())  # validates it even when ECS decides
    geomap = topology.geomap
    if ecs_subnet.strip():
        net = parse_ecs(ecs_subnet)
        key = geomap.key(net.version, net.network_address.packed, net.prefixlen)
        ecs_text, key_source, placed_address = str(net), "ecs", str(net.network_address)
    else:
        key, ecs_text, key_source = source_key, "", "address"
        placed_address = _address_of(key)
    geo = topology.geo_ids[key.geo]
    placed = _placed(topology, key, geo, placed_address, codes_of)

    info = topology.services[name]
    split, why = pick.table_split(table, name, geo, info.answers)
    if split is None:  # what the DNS server answers without a usable route (answers.build_steering)
        split = pick.spread(topology.fail_open_targets(name, geo), why)
    seed = pick.name_seed(name)
    target = ""
    if any(w > 0 for w in split.weights):
        target = split.targets[pick.pick(split, key.subnet, seed)]
    raced = tuple((t, w) for t, w in zip(split.targets, split.weights, strict=True))
    route = table.route(name, geo) if table is not None else None
    weights: tuple[Weight, ...] = ()
    if route is not None:
        order = list(route.weights)
        in_split = {t for t, w in raced if w > 0}
        weights = tuple(
            Weight(target=t, kind="site" if t in topology.site_region else "region",
                   region=topology.site_region.get(t, t), weight=route.weights[t],
                   reason=route.reasons.get(t, ""), in_split=t in in_split and not split.fallback)
            for t in sorted(order, key=lambda t: (-route.weights[t], order.index(t))))
    return Explanation(
        service=name, client_address=client_address.strip(), ecs_subnet=ecs_text, placed=placed,
        weights=weights, fail_open=bool(route and route.fail_open), pinned=bool(route and route.pinned),
        fallback=split.fallback, split=raced, client_subnet=_subnet_text(key), key_source=key_source,
        slot=pick.slot(key.subnet, seed), target=target,
        records=records_of(info.answers.get(target, ())) if target else (), ttl=info.ttl,
        ecs_scope=key.scope if key_source == "ecs" else None,
        table_version=table.version if table is not None else 0,
        table_generated_at=table.generated_at if table is not None else 0.0)


def records_of(answers: Sequence[str]) -> tuple[Record, ...]:
    """A target's answers (``ServiceInfo.answers``: addresses, or one CNAME) as typed records."""
    out = []
    for value in answers:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            out.append(Record("CNAME", value))
            continue
        out.append(Record("A" if ip.version == 4 else "AAAA", str(ip)))
    return tuple(out)


def _subnet_text(key: ClientKey) -> str:
    """The client key's subnet bytes (family, bits, address: ``GeoMap.key``) as ``network/bits``."""
    family, bits, raw = key.subnet[0], key.subnet[1], key.subnet[2:]
    return _network(family, int.from_bytes(raw, "big"), bits)


def _network(family: int, net: int, bits: int) -> str:
    return str(ipaddress.IPv4Network((net, bits)) if family == 4 else ipaddress.IPv6Network((net, bits)))


def _address_of(key: ClientKey) -> str:
    family, raw = key.subnet[0], key.subnet[2:]
    value = int.from_bytes(raw, "big")
    return str(ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value))


def _configured(topology: Topology) -> set[tuple[int, int, int]]:
    """(family, length, network int) of every geo's configured prefix."""
    out: set[tuple[int, int, int]] = set()
    for g in topology.geos:
        for p in g.get("prefixes") or ():
            net = ipaddress.ip_network(p)
            out.add((net.version, net.prefixlen, int(net.network_address)))
    return out


def _placed(topology: Topology, key: ClientKey, geo: str, address: str, codes_of: CodesOf | None) -> Placed:
    family, bits = key.subnet[0], key.subnet[1]
    addr = int.from_bytes(key.subnet[2:], "big")
    hit = topology.geomap.matched(family, addr, bits)
    says: GeoIpSays | None = None
    if topology.geomap.geoip is not None:
        says = _geoip_says(topology.geos, geo, address, codes_of)
    if hit is None:
        why = f"no prefix holds {_subnet_text(key)}: {geo} is the default geo"
        if says is not None and says.matched:  # the database's codes are the default geo's own
            why += f"; GeoIP says {_codes_text(says)}, {geo} lists {says.matched}"
        elif says is not None and not says.error and (says.country or says.continent):
            why += f" (GeoIP says {_codes_text(says)})"
        return Placed(geo, "default", "", says, why)
    plen, net, _ = hit
    prefix = _network(family, net, plen)
    if (family, plen, net) in _configured(topology):
        return Placed(geo, "prefix", prefix, says, f"{prefix} is a configured prefix of {geo}")
    why = f"{prefix} is {geo}'s in the GeoIP database"
    if says is not None and says.error:
        why += f" (the database cannot be read now: {says.error})"
    elif says is not None and says.matched:
        why += f": {_codes_text(says)}, {geo} lists {says.matched}"
    elif says is not None:
        why += f" ({_codes_text(says)}: most of the block is {geo}'s)"
    return Placed(geo, "geoip", prefix, says, why)


def _codes_text(says: GeoIpSays) -> str:
    parts = [f"country {says.country}" if says.country else "", f"continent {says.continent}" if says.continent
             else "", f"subdivision {says.subdivisions[-1]}" if says.subdivisions else ""]
    return ", ".join(p for p in parts if p) or "no country or continent"


def _geoip_says(geos: Sequence[Mapping[str, Any]], geo: str, address: str, codes_of: CodesOf | None) -> GeoIpSays:
    if codes_of is None:
        return GeoIpSays()
    try:
        codes = codes_of(address)
    except GeoIpError as exc:
        return GeoIpSays(error=str(exc))
    if codes is None:
        return GeoIpSays()
    g = next((g for g in geos if g["id"] == geo), {})
    matched = next((f"subdivision {s}" for s in reversed(codes.subdivisions) if s in (g.get("subdivisions") or ())),
                   "")
    if not matched and codes.country and codes.country in (g.get("countries") or ()):
        matched = f"country {codes.country}"
    if not matched and codes.continent and codes.continent in (g.get("continents") or ()):
        matched = f"continent {codes.continent}"
    return GeoIpSays(country=codes.country, continent=codes.continent, subdivisions=codes.subdivisions,
                     matched=matched)
