"""A render that follows the previous one (``build_snapshot(..., previous=...)``, what the DNS server does on
every table) takes what did not change from it (``render.Reuse``). It must never serve what did change
from there: after any sequence of tables, configs and signing epochs, each reused render equals, entry for
entry and byte for byte, a render of the same inputs from nothing (``tests/test_render_memo.py``'s
comparison: counters by their labels, slot tables by their inputs, signed twins included)."""

from __future__ import annotations

import random
from typing import Any

import dns.rdataset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnsserver.dnssec import Signing
from dnsserver.fastpath import _Tables
from dnsserver.geo import GeoMap
from dnsserver.metrics import Stats
from dnsserver.render import RenderedAnswers, build_snapshot
from dnsserver.zones import LoadedZone, load_zones
from steering.config import Config
from steering.model import Observed, Overrides, TargetHealth
from steering.planner import plan
from steering.table import RoutingTable
from tests.test_render_memo import _cells, _plain, generated

Setup = tuple[Config, Config, Observed, list[LoadedZone]]


class _Unshuffled:
    @staticmethod
    def shuffle(items: list[Any]) -> None:
        pass


@pytest.fixture(autouse=True)
def unshuffled(monkeypatch: pytest.MonkeyPatch) -> None:
    """dnspython's render-time shuffle of an RRset's records off: a render from nothing shuffles anew, a reused
    variant keeps the order of the render that made it."""
    monkeypatch.setattr(dns.rdataset, "random", _Unshuffled)


@pytest.fixture(scope="module", params=[False, True], ids=["unsigned", "signed"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """Two configs of one topology whose answers differ (``shift``), served with the first's zones."""
    signed = request.param
    cfg, observed = generated(tmp_path_factory.mktemp("a"), signed)
    other, _ = generated(tmp_path_factory.mktemp("b"), signed, shift=7)
    return cfg, other, observed, load_zones(cfg)


def _same(got: RenderedAnswers, got_stats: Stats, want: RenderedAnswers, want_stats: Stats) -> None:
    assert list(got.entries) == list(want.entries)
    got_cells, want_cells = _cells(got_stats), _cells(want_stats)
    for key, entry in want.entries.items():
        assert _plain(got.entries[key], got_cells) == _plain(entry, want_cells), key


def _flip(health: dict[str, TargetHealth], target: str) -> None:
    h = health[target]
    health[target] = TargetHealth(status="healthy" if h.status == "unhealthy" else "unhealthy", capacity=h.capacity,
                                  load=h.load)


STEPS = st.lists(st.tuples(st.sampled_from(["sites", "sites", "sites", "region", "demand", "same", "no-table",
                                            "config", "epoch", "other-render"]),
                           st.integers(0, 2**32 - 1)), min_size=1, max_size=6)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_a_reused_render_equals_a_render_from_nothing(setup: Setup, steps: list[tuple[str, int]]) -> None:
    cfg_a, cfg_b, observed, zones = setup
    keys = [z.keys for z in zones if z.keys is not None]
    signing = Signing.create(keys) if keys else None
    geomap = GeoMap(cfg_a.geos, cfg_a.default_geo.id)
    health = dict(observed.health)
    demand = dict(observed.demand or {})
    stats = Stats()  # one for the chain, as the server has
    cfg = cfg_a
    table: RoutingTable | None = plan(cfg, observed, Overrides(), previous=None, now=1000.0)
    previous = build_snapshot(cfg, zones, geomap, table, stats, signing)
    tables = _Tables(previous.entries)  # the fast path's, installed along the chain as the server does
    for n, (what, seed) in enumerate(steps):
        rng = random.Random(seed)
        if what == "sites":  # what most tables are: a few sites' health moved
            for site in rng.sample([s.id for s in cfg.sites], rng.randint(1, 4)):
                _flip(health, site)
        elif what == "region":
            _flip(health, rng.choice([r.id for r in cfg.regions]))
        elif what == "demand":
            geo = rng.choice(sorted(demand))
            demand[geo] *= rng.choice([0.2, 3.0])
        elif what == "config":  # a reload whose answers changed: the same target names, other records
            cfg = cfg_b if cfg is cfg_a else cfg_a
        elif what == "epoch" and signing is not None:  # re-signing: every signature made again
            signing = Signing.create(keys)
        elif what == "other-render":  # another server in the process renders another config in between
            build_snapshot(cfg_b if cfg is cfg_a else cfg_a, zones, geomap, table, Stats(), signing)
        if what == "no-table":
            table = None
        elif what != "same":
            table = plan(cfg, Observed(health=dict(health), demand=dict(demand)), Overrides(), previous=table,
                         now=1001.0 + n)
        got = build_snapshot(cfg, zones, geomap, table, stats, signing, previous=previous)
        want_stats = Stats()
        want = build_snapshot(cfg, zones, geomap, table, want_stats, signing)
        _same(got, stats, want, want_stats)
        if what in ("sites", "region", "demand", "same", "no-table"):  # not vacuous: it did take from the previous
            assert _variant_ids(got) & _variant_ids(previous)
        # the fast path's install converts only what is new (_Tables' memo), and gives what a fresh one does
        installed = _Tables(got.entries, tables)
        assert installed.entries == _Tables(got.entries).entries
        if what in ("sites", "same"):
            assert any(hit[1] is old[k][1] for mine, old in zip(installed.memo, tables.memo, strict=True)
                       for k, hit in mine.items() if k in old)
        if what == "same":  # and a steered name none of whose geos changed is taken over whole, not walked
            assert any(installed.entries[k] is tables.entries.get(k) for k, (seed, _) in got.entries.items()
                       if seed is not None)
        tables = installed
        previous = got


def _variant_ids(snap: RenderedAnswers) -> set[int]:
    return {id(v) for seed, data in snap.entries.values() if seed is not None for split in data for v in split[1]}


def test_a_changed_site_is_rendered_anew(setup: Setup) -> None:
    """The plain case: one site leaves every split, then comes back with other weights; the geos it moved are
    the ones whose rows are new, and their answers are the site's."""
    cfg, _, observed, zones = setup
    keys = [z.keys for z in zones if z.keys is not None]
    signing = Signing.create(keys) if keys else None
    geomap = GeoMap(cfg.geos, cfg.default_geo.id)
    stats = Stats()
    first = plan(cfg, observed, Overrides(), previous=None, now=1000.0)
    served = next(t for route in first.services["svc1.example.test."].geos.values() for t, w in route.serving()
                  if t.startswith("s") and w > 0)
    health = dict(observed.health)
    _flip(health, served)
    assert health[served].status == "unhealthy"
    snaps = [build_snapshot(cfg, zones, geomap, first, stats, signing)]
    tables = [first]
    for now in (1001.0, 1002.0):
        tables.append(plan(cfg, Observed(health=dict(health), demand=observed.demand), Overrides(),
                           previous=tables[-1], now=now))
        snaps.append(build_snapshot(cfg, zones, geomap, tables[-1], stats, signing, previous=snaps[-1]))
        _flip(health, served)
    for snap, table in zip(snaps[1:], tables[1:], strict=True):
        want_stats = Stats()
        _same(snap, stats, build_snapshot(cfg, zones, geomap, table, want_stats, signing), want_stats)
    # the site was left out, then served again: its rows were made anew both times
    without = [split[0].targets for seed, splits in snaps[1].entries.values() if seed is not None for split in splits]
    assert not any(served in targets for targets in without)
    back = [split[0].targets for seed, splits in snaps[2].entries.values() if seed is not None for split in splits]
    assert any(served in targets for targets in back)
    # the fast path's install after each render: the rows of geos the site did not move are the very ones the
    # previous install made (taken by place), the moved ones new, and the whole equal to an install from nothing
    installed = _Tables(snaps[0].entries)
    for snap in snaps[1:]:
        nxt = _Tables(snap.entries, installed)
        assert nxt.entries == _Tables(snap.entries).entries
        kept = moved = 0
        for k, (seed, rows) in nxt.entries.items():
            if seed is None or k not in installed.entries or nxt.entries[k] is installed.entries[k]:
                continue
            for row, was in zip(rows, installed.entries[k][1], strict=True):
                kept += row is was
                moved += row is not was
        assert kept and moved, (kept, moved)
        installed = nxt
