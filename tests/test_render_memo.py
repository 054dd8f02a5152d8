"""The memoized table render (``dnsserver.render.build_snapshot``) gives the very entries of rendering every
target of every (name, type) apart, as the render did before it shared variants: the reference below is that
render, kept here so the comparison stays real after the change is committed. Compared byte for byte (every
variant's counts, body and flags, signed twins included), with the counters and slot tables each entry
points at, for the example config and a generated topology, unsigned and signed.

dnspython shuffles the records of an RRset as it renders one (``Rdataset.to_wire``'s ``want_shuffle``), so
two renders of one table differ in record order, before the memo as after it; the comparison turns that
shuffle off, leaving the order the records have."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import dns.name
import dns.rdataclass
import dns.rdataset
import pytest

from dnsserver.answers import Catalog, build_steering, resolve
from dnsserver.dnssec import Signing, write_key
from dnsserver.geo import GeoMap
from dnsserver.metrics import Stats
from dnsserver.render import (
    PRERENDER_TYPES,
    RenderedAnswers,
    Variant,
    _always,
    _name_wire,
    _probe,
    _variant,
    build_snapshot,
)
from dnsserver.zones import LoadedZone, load_zones
from steering.config import Config, load_config, parse_config
from steering.model import Observed, Overrides, TargetHealth
from steering.pick import SlotTable, slot_table
from steering.planner import plan
from steering.table import RoutingTable
from tests.support.dns_server import SPLIT, table_with, write_config
from tests.support.dnssec import signed_config


def reference_snapshot(cfg: Config, zones: list[LoadedZone], geomap: GeoMap, table: RoutingTable | None,
                       stats: Stats, signing: Signing | None = None) -> dict[bytes, tuple[Any, Any]]:
    """The render before memoization: every target of every (name, type) resolved and rendered on its own."""
    steered, _ = build_steering(cfg, table, geomap)
    catalog = Catalog(zones, steered)
    entries: dict[bytes, tuple[Any, Any]] = {}
    for qname in catalog.names():
        key_name = _name_wire(qname.canonicalize())
        for qtype in PRERENDER_TYPES:
            key = key_name + struct.pack("!HH", qtype, dns.rdataclass.IN)
            dep, res = _probe(catalog, qname, qtype)
            if res is None:
                continue
            if dep is None:
                entries[key] = (None, _variant(qname, qtype, res, stats, catalog, signing))
                continue
            by_target: dict[str, Variant] = {}
            splits = []
            for gi, split in enumerate(dep.splits):
                variants = []
                cells = []
                for target in split.targets:
                    if target not in by_target:
                        r = resolve(catalog, qname, qtype, _always(target))
                        by_target[target] = _variant(qname, qtype, r, stats, catalog, signing)
                    variants.append(by_target[target])
                    cells.append(stats.answer_cell(dep.service, geomap.ids[gi], target))
                fb = stats.fallback_cell(dep.service, geomap.ids[gi], split.fallback) if split.fallback else None
                splits.append((slot_table(split, dep.seed), tuple(variants), tuple(cells), fb))
            entries[key] = (dep.seed, tuple(splits))
    return entries


def _cells(stats: Stats) -> dict[int, tuple[str, ...]]:
    """Each counter cell of ``stats`` by identity -> the family and labels it counts."""
    out: dict[int, tuple[str, ...]] = {}
    for family, cells in (("queries", stats.queries), ("answers", stats.answers), ("fallbacks", stats.fallbacks)):
        for labels, cell in cells.items():
            out[id(cell)] = (family, *labels)
    return out


def _plain(value: Any, cells: dict[int, tuple[str, ...]]) -> Any:
    """An entry with its counters named (a cell not of this Stats fails) and slot tables by their inputs."""
    if isinstance(value, tuple):
        return tuple(_plain(v, cells) for v in value)
    if isinstance(value, list):
        assert id(value) in cells, f"a counter cell not in the render's Stats: {value}"
        return cells[id(value)]
    if isinstance(value, SlotTable):
        return ("slots", value.seed, value.targets, value.weights)
    assert value is None or isinstance(value, (bytes, int)), f"unexpected {type(value)} in an entry"
    return value


def assert_same_render(cfg: Config, zones: list[LoadedZone], table: RoutingTable | None,
                       signing: Signing | None) -> RenderedAnswers:
    geomap = GeoMap(cfg.geos, cfg.default_geo.id)
    old_stats, new_stats = Stats(), Stats()
    old = reference_snapshot(cfg, zones, geomap, table, old_stats, signing)
    new = build_snapshot(cfg, zones, geomap, table, new_stats, signing)
    assert list(new.entries) == list(old)
    old_cells, new_cells = _cells(old_stats), _cells(new_stats)
    for key, entry in old.items():
        assert _plain(new.entries[key], new_cells) == _plain(entry, old_cells), key
    # the counters exist alike (exported in the same order), all at zero
    assert list(new_stats.queries) == list(old_stats.queries)
    assert list(new_stats.answers) == list(old_stats.answers)
    assert list(new_stats.fallbacks) == list(old_stats.fallbacks)
    return new


@pytest.fixture(autouse=True)
def unshuffled(monkeypatch: pytest.MonkeyPatch) -> None:
    """dnspython's render-time shuffle of an RRset's records off (dnspython's ``random`` only: not the
    topology generator's nor anyone else's)."""

    class Unshuffled:
        @staticmethod
        def shuffle(items: list[Any]) -> None:
            pass

    monkeypatch.setattr(dns.rdataset, "random", Unshuffled)


def _signing(zones: list[LoadedZone], signed: bool) -> Signing | None:
    keys = [z.keys for z in zones if z.keys is not None]
    assert not signed or keys, "the signed config has no keys"
    return Signing.create(keys) if signed else None


@pytest.mark.parametrize("signed", [False, True])
def test_example_config_renders_byte_identical(tmp_path: Path, signed: bool) -> None:
    path = signed_config(tmp_path)[0] if signed else write_config(tmp_path)
    cfg = load_config(path)
    zones = load_zones(cfg)
    signing = _signing(zones, signed)
    for table in (None, table_with(cfg, 1, {}), table_with(cfg, 2, SPLIT)):
        snap = assert_same_render(cfg, zones, table, signing)
        assert any(seed is not None for seed, _ in snap.entries.values())  # steered entries were compared


def generated(directory: Path, signed: bool, seed: int = 7, shift: int = 0) -> tuple[Config, Observed]:
    """A topology with many targets per geo, and targets of every kind a service may answer with: A only,
    A and AAAA, a CNAME into the zone or out of it, and targets answering alike. (Not a CNAME to another
steered name from some targets only: the render's probe, before the memo as after, looks at one target.)
    ``shift``: another address for the targets answering with one A record (a config whose answers changed)."""
    rng = random.Random(seed)
    regions = [f"r{i}" for i in range(6)]
    sites = [f"s{i:03d}" for i in range(80)]
    site_region = {s: regions[i % len(regions)] for i, s in enumerate(sites)}
    geos: list[dict[str, Any]] = [{"id": f"g{g:02d}", "demand": rng.uniform(0.5, 2.0), "default": g == 0,
             "prefer": [regions[g % len(regions)], *rng.sample([r for r in regions if r != regions[g % len(regions)]], 3)],
             "prefer_sites": [s for s in sites[g::20] if site_region[s] == regions[g % len(regions)]][:4],
             "prefixes": [f"10.{g}.0.0/16"]} for g in range(20)]

    def answer(j: int) -> dict[str, Any]:
        kind = j % 5
        if kind == 0:
            return {"A": [f"198.18.{j // 200}.{j % 200 + 1 + shift}"]}
        if kind == 1:
            return {"A": [f"198.19.0.{j % 7 + 1}", "198.19.1.1"], "AAAA": [f"2001:db8::{j % 7 + 1:x}"]}
        if kind == 2:
            return {"CNAME": "static.example.test." if j % 2 else "mail.example.test."}
        if kind == 3:
            return {"CNAME": f"edge{j % 3}.cdn.example.net."}
        return {"A": ["203.0.113.9"]}  # the same records under many targets

    services = []
    for i in range(6):
        kind = "sites" if i % 2 else "regions"
        answers = {r: {"A": [f"192.0.2.{j + 1}"], "AAAA": [f"2001:db8:{i:x}::{j + 1:x}"]} if i != 2 else answer(j)
                   for j, r in enumerate(regions)}
        if kind == "sites":
            answers.update({s: answer(j + i) for j, s in enumerate(sites)})
        services.append({"name": f"svc{i}.example.test.", "targets": kind, "answers": answers})
    zone: dict[str, Any] = {"origin": "example.test.", "file": str(directory / "example.test.zone")}
    (directory / "example.test.zone").write_text(
        "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"
        "static IN A 192.0.2.99\nstatic IN TXT \"static\"\nmail IN MX 10 static\n")
    if signed:
        key = write_key(directory / "keys", dns.name.from_text("example.test."), "ED25519", "csk")[0]
        zone["dnssec"] = {"algorithm": "ED25519", "keys": [str(key)]}
    data = {"policy": {"watermark": 0.8, "min_serving_regions": 2, "max_shift": 0.25},
            "regions": [{"id": r, "capacity": 10_000} for r in regions],
            "sites": [{"id": s, "region": site_region[s], "capacity": 300} for s in sites],
            "geos": geos, "services": services, "zones": [zone]}
    health = {r: TargetHealth(status="healthy", capacity=10_000, load=rng.uniform(2_000, 6_000)) for r in regions}
    health.update({s: TargetHealth(status="unhealthy" if k % 13 == 0 else "healthy", capacity=300,
                                   load=rng.uniform(0, 250)) for k, s in enumerate(sites)})
    total = len(regions) * 10_000 * 0.7
    demand = {g["id"]: total * g["demand"] / sum(x["demand"] for x in geos) for g in geos}
    return parse_config(data, "<generated>"), Observed(health=health, demand=demand)


@pytest.mark.parametrize("signed", [False, True])
def test_generated_topology_renders_byte_identical(tmp_path: Path, signed: bool) -> None:
    cfg, observed = generated(tmp_path, signed)
    zones = load_zones(cfg)
    signing = _signing(zones, signed)
    first = plan(cfg, observed, Overrides(), previous=None, now=1000.0)
    second = plan(cfg, observed, Overrides(), previous=first, now=1005.0)
    for table in (None, first, second):
        snap = assert_same_render(cfg, zones, table, signing)
        # targets rendered alike share one variant (what the memo saves), and splits have several targets
        steered = [splits for seed, splits in snap.entries.values() if seed is not None]
        targets = sum(len({t for split in splits for t in split[0].targets}) for splits in steered)
        variants = sum(len({id(v) for split in splits for v in split[1]}) for splits in steered)
        assert variants < targets
        assert max(len(split[1]) for splits in steered for split in splits) > 1
