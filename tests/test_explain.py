"""``steering.explain``: the explanation of one client's DNS answer, pure.

Properties against the DNS server's own two paths (the hot path and dnspython's slow path, driven with
query bytes, no sockets; tests/test_explain_dns.py asks over real sockets): for any table and any client,
the explanation names the records, TTL and ECS scope the server answers with. Then the parts one by one:
why a geo (configured prefix, GeoIP, default), the fail-open spread and its reasons, bad input naming its
field, and the table files the offline mode reads.
"""

from __future__ import annotations

import ipaddress
import json
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnsserver.persist import save_table
from dnsserver.server import DnsServer
from steering.cli.explain_cmd import read_table, render
from steering.config import Config, load_config
from steering.explain import Record, explain, records_of
from steering.geoip import Codes, codes_at, load
from steering.resolve import choose
from steering.table import GeoRoute, RoutingTable, ServiceRoute
from steering.topology import ResolveError, Topology, candidates
from tests.support.dns_server import write_config
from tests.support.explain_check import answered, ecs_query, mismatch, random_subnets
from tests.support.geoipdb import city, country, write_db

API = "api.example.test."
VIDEO = "video.example.test."


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return load_config(write_config(tmp_path_factory.mktemp("explain")))


def _table(config: Config, routes: dict[tuple[str, str], dict[str, int]], version: int = 7) -> RoutingTable:
    services: dict[str, ServiceRoute] = {}
    for svc in config.services:
        geos = {g: GeoRoute(weights=w, reasons={t: f"why {t}" for t in w}) for (s, g), w in routes.items()
                if s == svc.name}
        services[svc.name] = ServiceRoute(targets=svc.targets, geos=geos)
    return RoutingTable(version=version, parent_version=version - 1, generated_at=1_700_000_000.0,
                        services=services, regions={}, topology=config.fingerprint())


@st.composite
def tables(draw: st.DrawFn, config: Config) -> RoutingTable:
    """Weights over each (service, geo)'s candidates; some geos left out (the DNS server's fail-open spread),
    some weighted onto a target without answers (the same), some routes flagged fail-open or pinned."""
    routes: dict[tuple[str, str], dict[str, int]] = {}
    for svc in config.services:
        for geo in config.geos:
            shape = draw(st.sampled_from(["weights"] * 6 + ["missing", "unanswerable"]))
            if shape == "missing":
                continue
            if shape == "unanswerable":
                routes[(svc.name, geo.id)] = {"nowhere-1": 1000}
                continue
            cands = candidates(svc, geo)
            raw = draw(st.lists(st.integers(0, 50), min_size=len(cands), max_size=len(cands)))
            if not sum(raw):
                raw[0] = 1
            w = [x * 1000 // sum(raw) for x in raw]
            w[raw.index(max(raw))] += 1000 - sum(w)
            routes[(svc.name, geo.id)] = dict(zip(cands, w, strict=True))
    return _table(config, routes, draw(st.integers(1, 10_000)))


def _dns_replies(server: DnsServer, q: dns.message.Message, host: str) -> Iterator[dns.message.Message]:
    wire = q.to_wire()
    for reply in (server.fast.answer(wire, host, 0), server.slow.answer(server.snapshot, wire, host, 0)):
        if reply is not None:  # the hot path passes on what it does not take: the slow path answers those
            yield dns.message.from_wire(reply)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_explanation_matches_both_dns_paths_for_any_table_and_client(config: Config, data: st.DataObject) -> None:
    table = data.draw(tables(config))
    server = DnsServer(config, table)
    topology = Topology.from_config(config)
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for subnet in random_subnets(rng, 40):
        service = data.draw(st.sampled_from([API, VIDEO]))
        qtype = data.draw(st.sampled_from(["A", "AAAA"]))
        ecs = data.draw(st.booleans())
        host = str(ipaddress.ip_network(subnet).network_address) if not ecs else "127.0.0.1"
        said = explain(topology, table, service, host, subnet if ecs else "").to_dict()
        for reply in _dns_replies(server, ecs_query(service, qtype, subnet if ecs else None), host):
            assert not mismatch(said, qtype, answered(reply)), (subnet, ecs, service, qtype, said,
                                                                 mismatch(said, qtype, answered(reply)))


def test_the_pick_is_resolves_and_the_clients(config: Config) -> None:
    """Without ECS the explanation's target is ``choose``'s: the one pick Resolve and steering.client make."""
    table = _table(config, {(API, g.id): {"us-east-1": 400, "us-west-2": 350, "eu-west-1": 250}
                            for g in config.geos})
    topology = Topology.from_config(config)
    seen = set()
    for subnet in random_subnets(random.Random(5), 300):
        address = str(ipaddress.ip_network(subnet).network_address)
        e = explain(topology, table, API, address)
        chosen = choose(table, topology, API, client_address=address)
        assert chosen is not None and e.target == chosen.target and e.geo == topology.geo_for(address)
        seen.add(e.target)
    assert seen == {"us-east-1", "us-west-2", "eu-west-1"}


def test_what_it_says_about_one_client(config: Config) -> None:
    table = _table(config, {(API, "europe"): {"eu-west-1": 700, "us-east-1": 300, "us-west-2": 0}})
    e = explain(Topology.from_config(config), table, "API.example.test", "10.9.9.9", "198.51.100.130/32")
    d = e.to_dict()
    assert d["geo"] == "europe" and d["placed_by"] == {"source": "prefix", "prefix": "198.51.100.128/26",
                                                       "geoip": None}
    assert d["why"] == "198.51.100.128/26 is a configured prefix of europe"
    assert [(w["target"], w["weight"], w["reason"], w["in_split"]) for w in d["weights"]] == [
        ("eu-west-1", 700, "why eu-west-1", True), ("us-east-1", 300, "why us-east-1", True),
        ("us-west-2", 0, "why us-west-2", False)]
    assert d["split"] == [{"target": "eu-west-1", "weight": 700}, {"target": "us-east-1", "weight": 300}]
    # the example's longest IPv4 prefix is a /26: a /32 source is cut to it, and the scope says /26
    assert d["client_key"]["subnet"] == "198.51.100.128/26" and d["client_key"]["from"] == "ecs"
    assert 0 <= d["client_key"]["slot"] < 65536
    assert d["ecs_subnet"] == "198.51.100.130/32" and d["ecs_scope"] == 26 and d["ttl"] == 30
    assert d["table_version"] == 7 and d["fallback"] is None and d["service"] == API
    assert d["target"] in ("eu-west-1", "us-east-1")
    answers = {"eu-west-1": [("A", "192.0.2.30"), ("AAAA", "2001:db8::30")],
               "us-east-1": [("A", "192.0.2.10"), ("A", "192.0.2.11"), ("AAAA", "2001:db8::10")]}
    assert [(r["type"], r["value"]) for r in d["records"]] == answers[d["target"]]
    text = "\n".join(render(d))
    assert "europe: 198.51.100.128/26 is a configured prefix of europe" in text and "scope /26" in text
    json.dumps(d)  # the --json shape is plain JSON


def test_a_24_holding_a_longer_prefix_gets_its_scope(config: Config) -> None:
    """RFC 7871 §7.2.1, as GeoMap.scope says: a /24 holding configured /26s is answered with scope 26."""
    e = explain(Topology.from_config(config), None, API, "127.0.0.1", "198.51.100.0/24")
    assert e.ecs_scope == 26 and e.client_subnet == "198.51.100.0/24"
    e = explain(Topology.from_config(config), None, API, "127.0.0.1", "192.0.2.0/24")
    assert e.ecs_scope == 24 and e.geo == "world" and e.placed.source == "default"


def test_the_source_address_decides_without_ecs(config: Config) -> None:
    topology = Topology.from_config(config)
    e = explain(topology, None, VIDEO, "::ffff:127.3.0.9")  # an IPv4-mapped source counts as IPv4
    assert (e.geo, e.key_source, e.client_subnet, e.ecs_scope) == ("europe", "address", "127.3.0.0/26", None)
    e = explain(topology, None, VIDEO, "2001:db8:4::77")
    assert (e.geo, e.client_subnet, e.placed.prefix) == ("south-america", "2001:db8:4::/56", "2001:db8:4::/48")
    assert "none in the query" in "\n".join(render(e.to_dict()))


def test_the_fail_open_spread_and_why(config: Config) -> None:
    topology = Topology.from_config(config)
    no_table = explain(topology, None, API, "198.51.100.1")
    assert no_table.fallback == "no-table" and no_table.table_version == 0 and no_table.weights == ()
    assert no_table.split == (("us-east-1", 1), ("us-west-2", 1), ("eu-west-1", 1))  # the geo's prefer order
    table = _table(config, {(API, "na-east"): {"oc-nyc-1": 1000}, (VIDEO, "europe"): {"oc-lon-1": 1000}})
    e = explain(topology, table, API, "198.51.100.1")
    assert e.fallback == "no-answerable-target" and e.target in ("us-east-1", "us-west-2", "eu-west-1")
    assert [(w.target, w.in_split) for w in e.weights] == [("oc-nyc-1", False)]
    assert "not used (no-answerable-target)" in "\n".join(render(e.to_dict()))
    assert explain(topology, table, API, "198.51.100.200").fallback == "geo-not-in-table"
    other = _table(config, {(API, "na-east"): {"us-east-1": 1000}})
    assert explain(topology, other, VIDEO, "198.51.100.1").fallback == "geo-not-in-table"
    flagged = RoutingTable.from_dict({**table.to_dict(), "services": {VIDEO: {"targets": "sites", "geos": {
        "europe": {"weights": {"oc-lon-1": 1000}, "reasons": {}, "fail_open": True}}}}})
    e = explain(topology, flagged, VIDEO, "198.51.100.130")
    assert e.fail_open and e.target == "oc-lon-1" and e.records == (Record("A", "192.0.2.130"),)
    assert "weights FAIL-OPEN" in "\n".join(render(e.to_dict()))


@pytest.mark.parametrize(("service", "address", "ecs", "field"), [
    ("nope.example.test", "198.51.100.1", "", "service"),
    ("", "198.51.100.1", "", "service"),
    (API, "198.51.100.300", "", "client_address"),
    (API, "", "198.51.100.0/24", "client_address"),
    (API, "example.test", "", "client_address"),
    (API, "198.51.100.1", "198.51.100.0/33", "ecs_subnet"),
    (API, "198.51.100.1", "banana", "ecs_subnet"),
    (API, "198.51.100.1", "fe80::1%eth0/64", "ecs_subnet"),
])
def test_bad_input_names_its_field(config: Config, service: str, address: str, ecs: str, field: str) -> None:
    with pytest.raises(ResolveError) as info:
        explain(Topology.from_config(config), None, service, address, ecs)
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")


def test_records_are_typed() -> None:
    assert records_of(("192.0.2.1", "2001:db8::1", "edge.example.net.")) == (
        Record("A", "192.0.2.1"), Record("AAAA", "2001:db8::1"), Record("CNAME", "edge.example.net."))


def test_geoip_says_the_country_and_which_code_matched(config: Config, tmp_path: Path) -> None:
    db = write_db(tmp_path / "city.mmdb", [("81.2.69.0/24", city("EU", "GB", "ENG")),
                                          ("8.8.0.0/16", city("NA", "US", "CA")),
                                          ("203.0.113.0/24", country("EU", "FR")),
                                          ("1.0.16.0/20", country("AS", "JP"))])
    path = write_config(tmp_path / "cfg")
    raw = yaml.safe_load(path.read_text())
    raw["geoip"] = {"database": str(db)}
    raw["geos"][-1]["countries"] = ["JP"]  # and the default geo lists Japan
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    geoip = load(db, cfg.geos, cfg.default_geo.id)
    topology = Topology.from_config(cfg, geoip)

    def codes_of(address: str) -> Codes | None:
        return codes_at(db, address)

    e = explain(topology, None, API, "81.2.69.7", codes_of=codes_of)
    assert (e.geo, e.placed.source, e.placed.prefix) == ("europe", "geoip", "81.2.69.0/24")
    assert e.placed.geoip is not None and e.placed.geoip.matched == "continent EU"
    assert (e.placed.geoip.country, e.placed.geoip.subdivisions) == ("GB", ("GB-ENG",))
    assert "country GB" in e.placed.why and "europe lists continent EU" in e.placed.why
    e = explain(topology, None, API, "8.8.4.4", codes_of=codes_of)
    assert e.geo == "na-west" and e.placed.geoip is not None and e.placed.geoip.matched == "subdivision US-CA"
    e = explain(topology, None, API, "1.0.17.1", codes_of=codes_of)  # the database's, for the default geo
    assert e.geo == "world" and e.placed.geoip is not None and e.placed.geoip.matched == "country JP"
    assert "world lists country JP" in e.placed.why
    # a configured prefix wins over the database: 203.0.113.0/25 is south-america's though GeoIP says FR
    e = explain(topology, None, API, "203.0.113.5", codes_of=codes_of)
    assert (e.geo, e.placed.source, e.placed.prefix) == ("south-america", "prefix", "203.0.113.0/25")
    assert e.placed.geoip is not None and e.placed.geoip.country == "FR" and e.placed.geoip.matched == ""
    e = explain(topology, None, API, "192.0.2.1", codes_of=codes_of)  # not in the database
    assert e.placed.source == "default" and e.placed.geoip is not None and not e.placed.geoip.country
    db.unlink()  # gone since the map was compiled: said, not fatal
    e = explain(topology, None, API, "81.2.69.7", codes_of=codes_of)
    assert e.geo == "europe" and e.placed.geoip is not None and "cannot read" in e.placed.geoip.error
    assert "cannot be read now" in e.placed.why


def test_table_files_the_offline_mode_reads(config: Config, tmp_path: Path) -> None:
    table = _table(config, {(API, "europe"): {"eu-west-1": 1000}}, version=42)
    state = tmp_path / "dns-table.json"
    save_table(state, table)  # what the DNS server persists
    assert read_table(str(state)) == table
    packed = tmp_path / "table.zlib"
    packed.write_bytes(zlib.compress(table.to_json()))  # what etcd's chunks hold, put together
    assert read_table(str(packed)) == table
    for name, content in (("pointer.json", b'{"version": 3, "blob": "ab", "chunks": 1}'), ("empty.json", b""),
                          ("text.json", b"hello"), ("deep.json", b"[" * 100_000)):
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(SystemExit) as info:
            read_table(str(bad))
        assert info.value.code == 2
