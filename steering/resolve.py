"""Answering "where should this client go?" from a routing table: pure, shared by the API and the client.

``RoutingService.Resolve`` on a controller and ``steering.client`` in a
service's process give the same answer for the same table because both call
``rank`` (every target, ranked) and ``choose`` (the one target a client
gets) here. ``choose`` is the DNS server's pick (``steering.pick``): the
same split, client key and seed, so a client is sent where the DNS server
answers its subnet. The ``Topology`` they answer with lives in
``steering.topology`` and travels to clients as JSON on the first ``Watch``
response.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from steering import pick
from steering.table import RoutingTable
from steering.topology import ResolveError, ServiceInfo, Topology

__all__ = ["ResolveError", "ServiceInfo", "Target", "Topology", "choose", "choose_ranked", "rank"]


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


def rank(table: RoutingTable, topology: Topology, service: str, *, client_address: str = "", geo: str = "",
         max_targets: int = 0) -> tuple[str, str, list[Target]]:
    """(service name, geo, targets highest weight first; zero-weight candidates last, as fallbacks)."""
    name = topology.service_name(service)
    if geo:
        if geo not in topology.geo_ids:
            raise ResolveError("geo", f"unknown geo {geo!r} (known: {', '.join(topology.geo_ids)})")
    elif client_address:
        geo = topology.geo_for(client_address)
    else:
        raise ResolveError("client", "give a client_address or a geo")
    route = table.route(name, geo)
    if route is None:
        raise ResolveError("service", f"{name} has no routing for geo {geo!r} in table v{table.version}")
    order = list(route.weights)
    ranked = sorted(order, key=lambda t: (-route.weights[t], order.index(t)))
    out = [_target(topology, name, t, route.weights[t], route.reasons.get(t, "")) for t in ranked]
    if max_targets:
        out = out[:max_targets]
    return name, geo, out


def choose(table: RoutingTable, topology: Topology, service: str, *, client_address: str = "",
           geo: str = "") -> Target | None:
    """The one target this client gets: the DNS server's pick for its subnet (see the module doc).

    With a ``geo`` and no address there is no client to key on: the geo's id is the key, so the pick is
    stable per geo. Raises ``ResolveError`` as ``rank`` does."""
    name, geo, targets = rank(table, topology, service, client_address=client_address, geo=geo)
    return choose_ranked(table, topology, name, geo, targets, client_address)


def choose_ranked(table: RoutingTable, topology: Topology, name: str, geo: str, targets: list[Target],
                  client_address: str = "") -> Target | None:
    """``choose`` for a (name, geo, targets) that ``rank`` returned (``targets`` may be cut short)."""
    info = topology.services[name]
    split, why = pick.table_split(table, name, geo, info.answers)
    if split is None:  # the route has no target with answers: the DNS server's spread
        split = pick.spread(topology.fail_open_targets(name, geo), why)
        if not split.targets:
            return None
    key = topology.client_key(client_address).subnet if client_address else geo.encode()
    chosen = split.targets[pick.pick(split, key, _seed(name))]
    found = next((t for t in targets if t.target == chosen), None)
    if found is not None:
        return found
    route = table.route(name, geo)
    if route is not None and chosen in route.weights:
        return _target(topology, name, chosen, route.weights[chosen], route.reasons.get(chosen, ""))
    return _target(topology, name, chosen, 0, f"fail-open: {why}")


@lru_cache(maxsize=4096)
def _seed(name: str) -> int:
    return pick.name_seed(name)  # parsing the name costs microseconds; a client asks per request


def _target(topology: Topology, name: str, t: str, weight: int, reason: str) -> Target:
    site = t in topology.site_region
    return Target(target=t, kind="site" if site else "region", region=topology.site_region.get(t, t),
                  weight=weight, addresses=topology.services[name].answers.get(t, ()), reason=reason)
