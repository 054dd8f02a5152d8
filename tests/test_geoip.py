"""GeoIP compile: record layouts, precedence, explicit prefixes first, IPv4 and IPv6, the block majority,
the loader's refusals; Hypothesis properties against a brute-force placement (docs/geoip.md).

Databases are written here with mmdb-writer (tests/support/geoipdb.py); nothing is downloaded.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.clientkeys import ClientKeys
from steering.config import Geo
from steering.geoip import Codes, GeoIpError, GeoIpMap, compile_networks, load, record_codes
from steering.geoipwatch import GeoIpState
from steering.topology import GeoMap, Topology
from tests.support.geoipdb import city, country, ipinfo_country, ipinfo_lite, write_db

GEOS = (
    Geo(id="west", prefer=("r",), subdivisions=("US-CA", "US-WA")),
    Geo(id="us", prefer=("r",), countries=("US",)),
    Geo(id="na", prefer=("r",), continents=("NA",)),
    Geo(id="eu", prefer=("r",), continents=("EU",), countries=("TR",)),
    Geo(id="lab", prefer=("r",), prefixes=("81.0.0.0/24", "81.1.0.0/16", "2001:db8:ff::/48")),
    Geo(id="world", prefer=("r",), default=True),
)


def place(gm: GeoMap, address: str) -> str:
    return gm.ids[gm.key_for_source(address).geo]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> GeoIpMap:
    path = tmp_path_factory.mktemp("geoip") / "city.mmdb"
    write_db(path, [
        ("20.0.0.0/8", city("NA", "US", "TX")),
        ("20.1.0.0/16", city("NA", "US", "CA")),
        ("20.2.0.0/24", city("NA", "US", "WA", "KING")),  # most specific subdivision last
        ("20.3.0.0/16", city("NA", "CA", "QC")),
        ("30.0.0.0/8", city("EU", "DE", "BY")),
        ("30.5.0.0/16", city("AS", "TR")),
        ("80.0.0.0/8", city("EU", "FR")),  # holds the lab's prefixes: those win
        ("81.1.2.0/24", city("NA", "US", "CA")),  # inside the lab's /16: the lab's
        ("40.0.0.0/8", city("AS", "JP")),  # a continent nobody names: the default geo
        ("2600::/12", city("NA", "US", "NY")),
        ("2600:1::/32", city("NA", "US", "CA")),
        ("2a00::/12", city("EU", "NL")),
        ("2001:db8::/32", city("EU", "FR")),  # holds the lab's /48
    ])
    return load(path, GEOS, "world")


@pytest.mark.parametrize("address,geo", [
    ("20.9.9.9", "us"),  # US, a state nobody lists: the country
    ("20.1.2.3", "west"),  # US-CA: the subdivision beats the country
    ("20.2.0.9", "west"),  # US-WA with a finer subdivision after it
    ("20.3.0.1", "na"),  # Canada: the continent
    ("30.1.1.1", "eu"),  # DE in Europe
    ("30.5.1.1", "eu"),  # TR: a country of geo eu (Asia in the database)
    ("40.1.1.1", "world"),  # Asia: no geo has it
    ("80.1.1.1", "eu"),  # FR
    ("81.0.0.7", "lab"), ("81.1.2.3", "lab"), ("81.1.200.1", "lab"),  # the lab's prefixes win over GeoIP
    ("50.0.0.1", "world"),  # not in the database
    ("2600:5::1", "us"), ("2600:1:ab::1", "west"), ("2a00:1::1", "eu"),
    ("2001:db8:ff::1", "lab"), ("2001:db8:fe::1", "eu"), ("3000::1", "world"),
])
def test_precedence_subdivision_country_continent_and_explicit_prefixes_first(db: GeoIpMap, address: str,
                                                                              geo: str) -> None:
    gm = GeoMap(GEOS, "world", db)
    assert place(gm, address) == geo
    # the scope of a full-length key stays the key length: GeoIP prefixes are never longer than /24, /56
    assert gm.key_for_source(address).scope == (24 if ":" not in address else 56)


def test_database_info_and_the_state_for_status(db: GeoIpMap) -> None:
    assert db.info.database_type == "GeoLite2-City" and db.info.subdivisions and db.info.networks > 13
    assert db.count() == sum(len(p) for p in db.prefixes.values()) > 0
    state = GeoIpState(db).to_dict()
    assert state["database_type"] == "GeoLite2-City" and state["prefixes"] == db.count()


def test_record_layouts() -> None:
    assert record_codes(city("NA", "US", "CA", "LA")) == Codes("NA", "US", ("US-CA", "US-LA"))
    assert record_codes(country("EU", "DE")) == Codes("EU", "DE", ())
    assert record_codes(ipinfo_lite("JP", "AS")) == Codes("AS", "JP", ())
    assert record_codes(ipinfo_country("BR", "SA")) == Codes("SA", "BR", ())
    # a country alone gets its continent; codes that are no country (legacy EU, A1) are none
    assert record_codes({"country_code": "AU"}) == Codes("OC", "AU", ())
    assert record_codes({"continent": {"code": "EU"}, "country": {"iso_code": "EU"}}) == Codes("EU", "", ())
    assert record_codes({"country": {"iso_code": "A1"}}) == Codes("", "", ())
    assert record_codes("junk") == Codes() and record_codes({"country": 7}) == Codes()


def test_a_block_split_between_geos_goes_to_the_geo_holding_most_of_it(tmp_path: Path) -> None:
    write_db(tmp_path / "db.mmdb", [
        ("60.0.0.0/25", city("NA", "US", "CA")), ("60.0.0.128/26", city("NA", "CA")),
        ("60.0.1.0/26", city("NA", "US", "CA")),  # a quarter of its /24, the rest unknown: the default
        ("60.0.2.0/25", city("EU", "FR")), ("60.0.2.128/25", city("NA", "MX")),  # a tie: the lower index
        ("2a01::/57", city("EU", "NL")), ("2a01:0:0:80::/57", city("NA", "US")),  # a /56 split in two
    ], ip_version=6)
    gm = GeoMap(GEOS, "world", load(tmp_path / "db.mmdb", GEOS, "world"))
    assert place(gm, "60.0.0.200") == "west"  # 128 west, 64 na, 64 unknown
    assert place(gm, "60.0.1.1") == "world"
    assert place(gm, "60.0.2.200") == "na"  # na (index 2) before eu (index 3)
    assert place(gm, "2a01::1") == "us"  # us (index 1) before eu (index 3)


def test_an_ipv4_only_database(tmp_path: Path) -> None:
    write_db(tmp_path / "v4.mmdb", [("20.0.0.0/8", country("NA", "US"))], ip_version=4,
             database_type="GeoLite2-Country")
    m = load(tmp_path / "v4.mmdb", [g for g in GEOS if not g.subdivisions], "world")
    assert not m.prefixes[6] and m.info.database_type == "GeoLite2-Country"
    assert place(GeoMap([g for g in GEOS if not g.subdivisions], "world", m), "20.1.2.3") == "us"


def test_the_loader_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(GeoIpError, match=r"^geoip.database: .*missing.mmdb does not exist$"):
        load(tmp_path / "missing.mmdb", GEOS, "world")
    (tmp_path / "junk.mmdb").write_bytes(b"not a database" * 100)
    with pytest.raises(GeoIpError, match=r"^geoip.database: .*junk.mmdb: not a MaxMind DB file"):
        load(tmp_path / "junk.mmdb", GEOS, "world")
    good = write_db(tmp_path / "good.mmdb", [("20.0.0.0/8", city("NA", "US", "CA"))])
    data = good.read_bytes()
    (tmp_path / "cut.mmdb").write_bytes(data[:40] + data[-2000:])  # the tree cut short, the metadata kept
    with pytest.raises(GeoIpError, match=r"^geoip.database: .*cut.mmdb: "):
        load(tmp_path / "cut.mmdb", GEOS, "world")
    write_db(tmp_path / "country.mmdb", [("20.0.0.0/8", country("NA", "US"))], database_type="GeoLite2-Country")
    with pytest.raises(GeoIpError, match=r"GeoLite2-Country names no subdivisions, so geos\[0\].subdivisions"):
        load(tmp_path / "country.mmdb", GEOS, "world")
    (tmp_path / "dir.mmdb").mkdir()
    with pytest.raises(GeoIpError, match=r"^geoip.database: "):
        load(tmp_path / "dir.mmdb", GEOS, "world")


def test_a_geoip_map_for_other_geos_is_refused(db: GeoIpMap) -> None:
    with pytest.raises(ValueError, match="other geos"):
        GeoMap(GEOS[1:], "world", db)


def test_topology_json_carries_the_codes_and_a_client_topology_places_with_its_own_map(db: GeoIpMap) -> None:
    topology = Topology.from_json(Topology(
        [{"id": g.id, "prefixes": list(g.prefixes), "prefer": ["r"], "default": g.default,
          **({"subdivisions": list(g.subdivisions)} if g.subdivisions else {}),
          **({"countries": list(g.countries)} if g.countries else {}),
          **({"continents": list(g.continents)} if g.continents else {})} for g in GEOS], {}, {}).to_json())
    assert topology.uses_geoip() and topology.geo_for("20.1.2.3") == "world"  # no database: the default
    placed = topology.with_geoip(load(Path(db.info.path), topology.geo_models(), topology.default_id))
    assert placed.geo_for("20.1.2.3") == "west" and placed.geo_for("81.1.2.3") == "lab"


# ---------------------------------------------------------------- properties

CODES = [Codes("NA", "US", ("US-CA",)), Codes("NA", "US", ("US-TX",)), Codes("NA", "CA", ()), Codes("EU", "DE", ()),
         Codes("AS", "TR", ()), Codes("AS", "JP", ()), Codes()]


@st.composite
def databases(draw: st.DrawFn) -> tuple[list[tuple[int, int, int, Codes]], list[str]]:
    """Disjoint networks no longer than the client key (IPv4 /24, IPv6 /56: no block majority to decide),
    with codes, in address order; and explicit prefixes of any length for geo 'lab'."""
    nets: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for _ in range(draw(st.integers(1, 40))):
        fam = draw(st.sampled_from([4, 6]))
        width, key = (32, 24) if fam == 4 else (128, 56)
        plen = draw(st.integers(8 if fam == 4 else 16, key))
        base = (0x14 << 24) if fam == 4 else (0x2600 << 112)
        start = (base ^ (draw(st.integers(0, (1 << 20) - 1)) << (width - 28 if fam == 4 else width - 60)))
        start = start >> (width - plen) << (width - plen)
        if all(s + (1 << (width - p)) <= start or start + (1 << (width - plen)) <= s for p, s in nets[fam]):
            nets[fam].append((plen, start))
    entries = [(fam, start, plen, draw(st.sampled_from(CODES))) for fam in (4, 6)
               for plen, start in sorted(nets[fam], key=lambda n: n[1])]
    explicit = []
    for fam, start, plen, _ in draw(st.lists(st.sampled_from(entries), max_size=3)) if entries else []:
        width = 32 if fam == 4 else 128
        el = draw(st.integers(max(plen - 6, 1), min(plen + 6, width)))
        explicit.append(str(ipaddress.ip_network((start >> (width - el) << (width - el), el))))
    return entries, sorted(set(explicit))


def brute(entries: list[tuple[int, int, int, Codes]], geos: list[Geo], address: int, fam: int) -> str:
    width = 32 if fam == 4 else 128
    hits = [(n.prefixlen, g.id) for g in geos for n in g.networks()
            if n.version == fam and int(n.network_address) <= address < int(n.network_address) + n.num_addresses]
    if hits:
        return max(hits)[1]
    for f, start, plen, codes in entries:
        if f == fam and start <= address < start + (1 << (width - plen)):
            for g in geos:  # subdivision, then country, then continent
                if set(codes.subdivisions) & set(g.subdivisions):
                    return g.id
            for g in geos:
                if codes.country and codes.country in g.all_countries():
                    return g.id
            for g in geos:
                if codes.continent and codes.continent in g.all_continents():
                    return g.id
    return "world"


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_compiled_map_places_every_address_as_the_rules_say(data: st.DataObject) -> None:
    entries, explicit = data.draw(databases())
    geos = [Geo(id="lab", prefer=("r",), prefixes=tuple(explicit)), *GEOS[:4], Geo(id="world", prefer=("r",),
                                                                                    default=True)]
    prefixes = compile_networks(entries, geos, "world")
    from steering.geoip import DatabaseInfo

    m = GeoIpMap(tuple(g.id for g in geos), prefixes, DatabaseInfo("x", "t", 0, len(entries), True, (0, 0, 0)), 0.0)
    gm = GeoMap(geos, "world", m)
    keys = ClientKeys(gm)
    probes = [(f, s + data.draw(st.integers(0, (1 << ((32 if f == 4 else 128) - p)) - 1))) for f, s, p, _ in entries]
    probes += [(4, data.draw(st.integers(0, (1 << 32) - 1))), (6, data.draw(st.integers(0, (1 << 128) - 1)))]
    for fam, address in probes:
        width, key = (32, gm.key_bits[4]) if fam == 4 else (128, gm.key_bits[6])
        block = address >> (width - key) << (width - key)
        want = brute(entries, geos, block, fam)
        got = gm.key(fam, address.to_bytes(width // 8, "big"), width)
        assert gm.ids[got.geo] == want, (ipaddress.ip_address(address), explicit)
        # the DNS server's block index agrees with the reference for the ECS form of the same client
        nb = (key + 7) // 8
        opt = bytes((0, 1 if fam == 4 else 2, key, 0)) + block.to_bytes(width // 8, "big")[:nb]
        assert keys.ecs(opt) == (got.geo, got.subnet, got.scope)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 32), st.integers(0, (1 << 32) - 1), st.integers(0, 3)), max_size=30),
       st.lists(st.integers(0, (1 << 32) - 1), min_size=1, max_size=20))
def test_full_length_match_is_the_longest_prefix(nets: list[tuple[int, int, int]], addresses: list[int]) -> None:
    geos = [Geo(id=f"g{i}", prefer=("r",), prefixes=tuple(sorted({str(ipaddress.ip_network((a >> (32 - p) << (32 - p), p)))
                                                                  for p, a, g in nets if g == i})))
            for i in range(4)]
    owned: dict[str, int] = {}
    for i, g in enumerate(geos):
        for p in g.prefixes:
            owned.setdefault(p, i)
    geos = [Geo(id=g.id, prefer=("r",), prefixes=tuple(p for p in g.prefixes if owned[p] == i))
            for i, g in enumerate(geos)] + [Geo(id="world", prefer=("r",), default=True)]
    gm = GeoMap(geos, "world")
    for address in addresses:
        hits = [(n.prefixlen, i) for i, g in enumerate(geos) for n in g.networks() if
                int(n.network_address) <= address < int(n.network_address) + n.num_addresses]
        want = max(hits)[1] if hits else gm.default
        assert gm.match(4, address, 32) == want
