"""Hypothesis properties of answering "where should this client go?" (steering/resolve.py): pure.

The expected answers are re-derived by brute force (every prefix checked
with ``ipaddress``; weights sorted by hand), not with the code under test.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering import pick
from steering.model import Overrides
from steering.planner import plan
from steering.resolve import ServiceInfo, Topology, choose, rank
from tests.support.strategies import configs, observations

Case = tuple[Any, ...]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def planned(draw: st.DrawFn) -> tuple[Any, Topology, Any]:
    config = draw(configs())
    table = plan(config, draw(observations(config)), Overrides(), None, 0.0)
    return config, Topology.from_config(config), table


@SETTINGS
@given(planned(), st.data())
def test_ranked_targets_are_the_geos_weights_highest_first(case: Case, data: st.DataObject) -> None:
    config, topology, table = case
    svc = data.draw(st.sampled_from(config.services))
    geo = data.draw(st.sampled_from(config.geos))
    name, got_geo, targets = rank(table, topology, svc.name.rstrip(".").upper(), geo=geo.id)
    route = table.route(svc.name, geo.id)
    assert name == svc.name and got_geo == geo.id and route is not None
    nonzero = [t for t in targets if t.weight > 0]
    # Exactly the table's non-zero weights, highest first (ties in the table's order) ...
    expected = sorted(((t, w) for t, w in route.weights.items() if w > 0),
                      key=lambda tw: (-tw[1], list(route.weights).index(tw[0])))
    assert [(t.target, t.weight) for t in nonzero] == expected
    # ... then the zero-weight candidates as fallbacks, and nothing else.
    assert targets[: len(nonzero)] == nonzero and all(t.weight == 0 for t in targets[len(nonzero):])
    assert sorted(t.target for t in targets) == sorted(route.weights)
    for t in targets:
        assert t.addresses == topology.services[name].answers.get(t.target, ())
        assert t.region == {s.id: s.region for s in config.sites}.get(t.target, t.target)
    cut = data.draw(st.integers(1, 5))
    assert rank(table, topology, svc.name, geo=geo.id, max_targets=cut)[2] == targets[:cut]


@SETTINGS
@given(planned(), st.data())
def test_choose_is_the_dns_pick_over_the_serving_targets(case: Case, data: st.DataObject) -> None:
    config, topology, table = case
    svc = data.draw(st.sampled_from(config.services))
    v4 = data.draw(st.booleans())
    address = str(ipaddress.IPv4Address(data.draw(st.integers(0, 2**32 - 1))) if v4
                  else ipaddress.IPv6Address(data.draw(st.integers(0, 2**128 - 1))))
    got = choose(table, topology, svc.name, client_address=address)
    geo = topology.geo_for(address)
    route = table.route(svc.name, geo)
    assert got is not None and route is not None
    # The split the DNS server answers from, by hand: non-zero weights with answers, highest first.
    serving = sorted(((t, w) for t, w in route.weights.items() if w > 0 and t in svc.answers),
                     key=lambda tw: (-tw[1], list(route.weights).index(tw[0])))
    # The client key: the address cut to /24 (IPv4) or /56 (IPv6), or a longer configured prefix.
    bits = topology.geomap.key_bits[4 if v4 else 6]
    width = 32 if v4 else 128
    ip = int(ipaddress.ip_address(address))
    subnet = bytes((4 if v4 else 6, bits)) + (ip >> (width - bits) << (width - bits)).to_bytes(width // 8, "big")
    assert got.target == serving[pick.pick(pick.split(serving), subnet, pick.name_seed(svc.name))][0]
    assert got.weight > 0
    assert choose(table, topology, svc.name.upper(), client_address=address) == got


@st.composite
def prefixes(draw: st.DrawFn) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if draw(st.booleans()):
        bits = draw(st.integers(0, 32))
        addr = draw(st.integers(0, 2**32 - 1))
        return ipaddress.ip_network((addr >> (32 - bits) << (32 - bits), bits))
    bits = draw(st.integers(0, 128))
    addr = draw(st.integers(0, 2**128 - 1))
    return ipaddress.ip_network((addr >> (128 - bits) << (128 - bits), bits))


@st.composite
def geo_maps(draw: st.DrawFn) -> tuple[Topology, dict[Any, str], str]:
    nets = draw(st.lists(prefixes(), unique=True, max_size=12))
    n_geos = draw(st.integers(1, 4))
    owner = {net: f"g{draw(st.integers(0, n_geos - 1))}" for net in nets}
    default = f"g{draw(st.integers(0, n_geos - 1))}"
    geos = [{"id": f"g{i}", "prefixes": [str(n) for n, g in owner.items() if g == f"g{i}"], "prefer": ["r"],
             "default": f"g{i}" == default} for i in range(n_geos)]
    services = {"svc.example.test.": ServiceInfo(ttl=30, targets="regions", answers={"r": ("192.0.2.1",)})}
    return Topology(geos, services, {}), owner, default


@st.composite
def addresses(draw: st.DrawFn, owner: dict[Any, str]) -> str:
    """Mostly addresses inside one of the prefixes (at a random offset), sometimes anywhere."""
    if owner and draw(st.booleans()):
        net = draw(st.sampled_from(sorted(owner, key=str)))
        offset = draw(st.integers(0, net.num_addresses - 1))
        return str(net.network_address + offset)
    if draw(st.booleans()):
        return str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1))))
    return str(ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))))


@SETTINGS
@given(geo_maps(), st.data())
def test_the_geo_of_an_address_is_its_longest_matching_prefix_else_the_default(case: Case,
                                                                              data: st.DataObject) -> None:
    topology, owner, default = case
    for _ in range(5):
        address = data.draw(addresses(owner))
        ip = ipaddress.ip_address(address)
        matching = [n for n in owner if n.version == ip.version and ip in n]
        expected = owner[max(matching, key=lambda n: n.prefixlen)] if matching else default
        assert topology.geo_for(address) == expected, (address, matching)
    # The JSON form a client receives answers the same.
    again = Topology.from_json(topology.to_json())
    address = data.draw(addresses(owner))
    assert again.geo_for(address) == topology.geo_for(address)
