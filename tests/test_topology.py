"""steering/topology.py: one home for candidates, site -> region and the geo map, used by every consumer."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dnsserver.geo
from steering import topology
from steering.controller import safety
from steering.model import Overrides
from steering.planner import plan
from tests.support.strategies import configs, observations

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.data())
def test_every_consumer_uses_the_same_candidates(data: st.DataObject) -> None:
    config = data.draw(configs())
    table = plan(config, data.draw(observations(config)), Overrides(), None, 0.0)
    site_region = {s.id: s.region for s in config.sites}
    for svc in config.services:
        for geo in config.geos:
            cands = topology.candidates(svc, geo)
            # what the planner weighs, in its order: sites first for a sites service, each by preference
            route = table.route(svc.name, geo.id)
            assert route is not None and tuple(route.weights) == cands
            assert safety.pin_candidates(config, svc.name, geo.id) == list(cands)
            sites = [t for t in cands if t in site_region]
            regions = [t for t in cands if t not in site_region]
            assert cands == (*sites, *regions) if svc.targets == "sites" else not sites
            assert regions == [r for r in geo.prefer if r in svc.answers]
            # the DNS server's fail-open spread: the same targets, regions first (its answers depend on it)
            assert topology.fail_open_targets(config, svc, geo.id) == (*regions, *sites)
    for s in config.sites:
        assert topology.region_of(config, s.id) == s.region
    for r in config.regions:
        assert topology.region_of(config, r.id) == r.id


def test_a_topology_from_json_spreads_like_its_config() -> None:
    from steering.config import load_config
    from tests.support import EXAMPLE_CONFIG

    config = load_config(EXAMPLE_CONFIG)
    again = topology.Topology.from_json(topology.Topology.from_config(config).to_json())
    for svc in config.services:
        for geo in config.geos:
            assert again.fail_open_targets(svc.name, geo.id) == topology.fail_open_targets(config, svc, geo.id)
    # a topology from an older controller (no prefer_sites) still answers: regions only
    old: list[dict[str, Any]] = [{k: v for k, v in g.items() if k != "prefer_sites"} for g in again.geos]
    older = topology.Topology(old, again.services, again.site_region)
    assert older.fail_open_targets("video.example.test.", "europe") == ("eu-west-1", "us-east-1", "us-west-2")


def test_the_dns_server_uses_the_one_geo_map_and_steering_does_not_import_dnsserver() -> None:
    assert dnsserver.geo.GeoMap is topology.GeoMap and dnsserver.geo.ClientKey is topology.ClientKey
    code = ("import sys, steering.client, steering.resolve, steering.pick, steering.topology, steering.planner, "
            "steering.controller.routing_api, steering.controller.safety; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dnsserver'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
