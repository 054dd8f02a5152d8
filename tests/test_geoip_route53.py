"""The Route 53 sink publishes GeoIP geos as geolocations (US states, countries, continents, ``*``), through
moto over HTTP; where the two differ (docs/geoip.md, "Route 53") is said in the plan's notes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from steering.config import Config, load_yaml
from steering.geoip import Codes, DatabaseInfo, GeoIpMap, compile_networks
from steering.model import Observed, Overrides
from steering.planner import plan as plan_table
from steering.route53.records import RecordKey, desired_records, locations
from steering.topology import GeoMap
from tests.support import EXAMPLE_CONFIG
from tests.support.route53 import MotoRoute53, Route53Env

PREFER = ["us-east-1", "us-west-2", "eu-west-1"]


@pytest.fixture
def env(moto: MotoRoute53) -> Iterator[Route53Env]:
    e = Route53Env(moto)
    try:
        yield e
    finally:
        e.close()


def geoip_geos_config(env: Route53Env) -> Config:
    data: dict[str, Any] = load_yaml(EXAMPLE_CONFIG)
    data["sites"] = []
    data["geos"] = [
        {"id": "west", "subdivisions": ["US-CA", "US-WA"], "demand": 0.2, "prefer": PREFER[1:] + PREFER[:1]},
        {"id": "east", "continents": ["NA"], "countries": ["PR"], "demand": 0.3, "prefer": PREFER},
        {"id": "europe", "continents": ["EU"], "countries": ["TR"], "subdivisions": ["DE-BY"], "demand": 0.3,
         "prefer": PREFER[2:] + PREFER[:2]},
        {"id": "lab", "prefixes": ["198.51.100.0/24"], "demand": 0.1, "prefer": PREFER},  # prefixes only: no location
        {"id": "world", "default": True, "demand": 0.1, "prefer": PREFER},
    ]
    data["services"] = data["services"][:1]
    return env.config(data)


async def test_geoip_geos_become_geolocation_records(env: Route53Env) -> None:
    config = geoip_geos_config(env)
    table = plan_table(config, Observed(), Overrides(), None, 0.0)
    desired = desired_records(config, table, env.zone_id)
    assert any("subdivision DE-BY not published (Route 53 takes US states only)" in n for n in desired.notes)
    r = await env.sink(config).sync(table)
    assert r.ok, r.error
    have = env.records()
    want = {
        "subdivision-US-CA": ({"CountryCode": "US", "SubdivisionCode": "CA"}, "west"),
        "subdivision-US-WA": ({"CountryCode": "US", "SubdivisionCode": "WA"}, "west"),
        "country-PR": ({"CountryCode": "PR"}, "east"),
        "continent-NA": ({"ContinentCode": "NA"}, "east"),
        "country-TR": ({"CountryCode": "TR"}, "europe"),
        "continent-EU": ({"ContinentCode": "EU"}, "europe"),
        "default": ({"CountryCode": "*"}, "world"),
    }
    geo_records = {k.set_id: r for k, r in have.items() if k.name == "api.example.test." and k.type == "A"}
    assert set(geo_records) == set(want)
    for set_id, (location, geo) in want.items():
        rec = geo_records[set_id]
        assert rec.raw is not None and rec.raw["GeoLocation"] == location
        assert rec.alias is not None and rec.alias[1] == f"{geo}.api.example.test."
    # read back, the records equal what the sink wants: the next sync has nothing to do
    again = await env.sink(config).sync(table)
    assert again.ok and again.change_count == 0


def test_route53_and_the_geoip_map_send_each_published_location_to_the_same_geo(env: Route53Env) -> None:
    config = geoip_geos_config(env)
    chosen, _ = locations(config)
    for (kind, code), geo in chosen.items():
        if code == "*":
            continue
        country = code.split("-")[0] if kind != "continent" else ""
        codes = Codes(continent={"US": "NA", "PR": "NA", "TR": "AS"}.get(country, code if kind == "continent" else ""),
                      country=country, subdivisions=(code,) if kind == "subdivision" else ())
        prefixes = compile_networks([(4, 20 << 24, 8, codes)], config.geos, config.default_geo.id)
        m = GeoIpMap(tuple(g.id for g in config.geos), prefixes, DatabaseInfo("x", "t", 0, 1, True, (0, 0, 0)), 0.0)
        gm = GeoMap(config.geos, config.default_geo.id, m)
        assert gm.ids[gm.key_for_source("20.1.2.3").geo] == geo, (kind, code)


def test_a_record_key_for_a_subdivision_names_it() -> None:
    assert str(RecordKey("api.example.test.", "A", "subdivision-US-CA")) == "api.example.test. A [subdivision-US-CA]"
