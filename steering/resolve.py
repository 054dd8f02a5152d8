"""Answering "where should this client go?" from a routing table: pure, shared by the API and the client.

``RoutingService.Resolve`` on a controller and ``steering.client`` in a
service's process give the same answer for the same table because both call
``rank`` here. ``Topology`` is the slice of the configuration that answering
needs (geo prefixes, services' answers); it travels to clients as JSON on
the first ``Watch`` response.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dnsserver.geo import GeoMap
from steering.config import Config, Geo
from steering.table import RoutingTable


class ResolveError(ValueError):
    """Bad input to ``rank``/``geo_for``: ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Target:
    target: str
    kind: str  # "region" | "site"
    region: str
    weight: int  # of 1000
    addresses: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "kind": self.kind, "region": self.region, "weight": self.weight,
                "addresses": list(self.addresses), "reason": self.reason}


@dataclass(frozen=True)
class ServiceInfo:
    ttl: int
    targets: str
    answers: Mapping[str, tuple[str, ...]]  # target -> addresses (or the CNAME)


class Topology:
    """Geos and services' answers: built from a Config (controller) or from JSON (client)."""

    def __init__(self, geos: list[dict[str, Any]], services: Mapping[str, ServiceInfo],
                 site_region: Mapping[str, str]) -> None:
        self.geos = geos
        self.services = dict(services)
        self.site_region = dict(site_region)
        self.geo_ids = [g["id"] for g in geos]
        default = next((g["id"] for g in geos if g.get("default")), self.geo_ids[0])
        models = [Geo(id=g["id"], prefixes=tuple(g.get("prefixes", ())), prefer=tuple(g.get("prefer") or ("x",)))
                  for g in geos]
        self._map = GeoMap(models, default)

    @classmethod
    def from_config(cls, config: Config) -> Topology:
        geos = [{"id": g.id, "prefixes": list(g.prefixes), "prefer": list(g.prefer), "default": g is config.default_geo}
                for g in config.geos]
        services = {}
        for s in config.services:
            answers = {t: tuple(a.addresses()) or ((a.CNAME,) if a.CNAME else ()) for t, a in s.answers.items()}
            services[s.name] = ServiceInfo(ttl=s.ttl, targets=s.targets, answers=answers)
        return cls(geos, services, {s.id: s.region for s in config.sites})

    def to_json(self) -> str:
        return json.dumps({
            "geos": self.geos,
            "services": {n: {"ttl": s.ttl, "targets": s.targets, "answers": {t: list(a) for t, a in s.answers.items()}}
                         for n, s in self.services.items()},
            "sites": self.site_region,
        }, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Topology:
        try:
            data = json.loads(text)
            services = {str(n): ServiceInfo(ttl=int(s["ttl"]), targets=str(s["targets"]),
                                            answers={str(t): tuple(map(str, a)) for t, a in s["answers"].items()})
                        for n, s in data["services"].items()}
            return cls(list(data["geos"]), services, {str(k): str(v) for k, v in data.get("sites", {}).items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed topology: {type(exc).__name__}: {exc}") from None

    def geo_for(self, client_address: str) -> str:
        """Longest-prefix match of an address over the geos' prefixes; the default geo if none matches."""
        try:
            ipaddress.ip_address(client_address.split("%", 1)[0])
        except ValueError:
            raise ResolveError("client_address", f"{client_address!r} is not an IPv4 or IPv6 address") from None
        return self.geo_ids[self._map.key_for_source(client_address).geo]

    def service_name(self, name: str) -> str:
        """The configured name for ``name`` (case-insensitive, trailing dot optional)."""
        wanted = name.strip().lower()
        if wanted and not wanted.endswith("."):
            wanted += "."
        if wanted not in self.services:
            raise ResolveError("service", f"unknown service {name!r} (known: {', '.join(sorted(self.services))})")
        return wanted


def rank(table: RoutingTable, topology: Topology, service: str, *, client_address: str = "", geo: str = "",
         max_targets: int = 0) -> tuple[str, str, list[Target]]:
    """(service name, geo, targets highest weight first; zero-weight candidates last, as fallbacks)."""
    name = topology.service_name(service)
    if geo:
        if geo not in topology.geo_ids:
            raise ResolveError("geo", f"unknown geo {geo!r}")
    elif client_address:
        geo = topology.geo_for(client_address)
    else:
        raise ResolveError("client", "give a client_address or a geo")
    route = table.route(name, geo)
    if route is None:
        raise ResolveError("service", f"{name} has no routing for geo {geo!r} in table v{table.version}")
    info = topology.services[name]
    order = list(route.weights)
    ranked = sorted(order, key=lambda t: (-route.weights[t], order.index(t)))
    out = []
    for t in ranked:
        site = t in topology.site_region
        out.append(Target(target=t, kind="site" if site else "region", region=topology.site_region.get(t, t),
                          weight=route.weights[t], addresses=info.answers.get(t, ()),
                          reason=route.reasons.get(t, "")))
    if max_targets:
        out = out[:max_targets]
    return name, geo, out


def choose(targets: list[Target], key: bytes | None = None, rand: float | None = None) -> Target | None:
    """One target drawn by weight: by ``rand`` in [0, 1), or stably by ``key`` (a client's address)."""
    live = [t for t in targets if t.weight > 0]
    if not live:
        return targets[0] if targets else None
    total = sum(t.weight for t in live)
    if rand is None:
        digest = hashlib.blake2b(key or b"", digest_size=8).digest()
        rand = int.from_bytes(digest, "big") / 2**64
    point = rand * total
    for t in live:
        point -= t.weight
        if point < 0:
            return t
    return live[-1]
