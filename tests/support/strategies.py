"""Hypothesis strategies shared by the property tests: random but valid configurations, observations,
override sets and planner scenarios (moved from tests/test_planner_properties.py), live health as
agents report it (from tests/test_safety_properties.py), and geo maps with ECS options near their
networks (from tests/test_dns_fastpath.py)."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from steering.config import Config, Geo, parse_config
from steering.model import Evacuation, Observed, Overrides, Pin, Restore, TargetHealth
from steering.topology import GeoMap

STATUS = st.sampled_from(["healthy", "healthy", "healthy", "unknown", "unhealthy", "silent"])
CAPACITY = st.floats(1, 20000, allow_nan=False)
# Built once, not per draw: Hypothesis validates and analyses every new strategy object, and that was more
# than half of drawing a scenario (a planner property spends most of its time drawing).
_BOOL = st.booleans()
_UPTO = {n: st.integers(0, n) for n in range(0, 9)}
_FROM1 = {n: st.integers(1, n) for n in range(1, 9)}
_DEMAND0 = st.floats(0.01, 1)
_DEMAND = st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.5])
_KIND = st.sampled_from(["regions", "sites"])
_WATERMARK = st.sampled_from([0.5, 0.8, 1.0]) | st.floats(0.05, 1)
_SHIFT = st.sampled_from([0.1, 0.25, 0.5, 1.0]) | st.floats(0.02, 1)
_HYSTERESIS = st.sampled_from([0.0, 0.02, 0.05])
_OPT_CAPACITY = st.none() | st.just(0.0) | CAPACITY
_LOAD = st.none() | st.floats(0, 20000)
_GEO_DEMAND = st.sampled_from([0.0, 10.0]) | st.floats(0, 30000)
_LIVE_CAPACITY = st.none() | st.floats(1, 20000)
_NOW = st.sampled_from([0.0, 45.0, 100.0, 200.0])
_MODE = st.sampled_from(["now", "ramp"])
_EVAC_STEP = st.sampled_from([0.1, 0.25, 0.5])
_EVAC_START = st.sampled_from([0.0, 50.0, 90.0])
_RESTORE_STEP = st.sampled_from([0.25, 0.5])
_RESTORE_START = st.sampled_from([0.0, 60.0])


# The same for strategies over the ids of a drawn config: r0..rN and s0..sM, a few dozen lists in all.
@functools.cache
def _perm(items: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    return st.permutations(items)


@functools.cache
def _one(items: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(items)


@functools.cache
def _subset(items: tuple[str, ...]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(items))


@functools.cache
def _distinct(items: tuple[str, ...], most: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(items), unique=True, max_size=most)


@dataclass(frozen=True)
class Scenario:
    config: Config
    observed: Observed
    overrides: Overrides
    now: float

    def describe(self) -> str:
        return f"{self.config.model_dump(mode='json')}\n{self.observed}\n{self.overrides}\nnow={self.now}"


@st.composite
def configs(draw: st.DrawFn) -> Config:
    regions = [f"r{i}" for i in range(draw(_FROM1[6]))]
    sites = [f"s{i}" for i in range(draw(_UPTO[4]))]
    geos: list[dict[str, Any]] = []
    for i in range(draw(_FROM1[8])):
        prefer = draw(_perm(tuple(regions)))[: draw(_FROM1[len(regions)])]
        prefer_sites = draw(_perm(tuple(sites)))[: draw(_UPTO[len(sites)])] if sites else []
        demand = draw(_DEMAND0) if i == 0 else draw(_DEMAND)
        geos.append({"id": f"g{i}", "prefer": prefer, "prefer_sites": prefer_sites, "demand": demand,
                     "default": i == 0})
    services: list[dict[str, Any]] = []
    for i in range(draw(_FROM1[3])):
        kind = draw(_KIND) if sites else "regions"
        answered = set(draw(_subset(tuple(regions))))
        if kind == "sites":
            answered |= set(draw(_subset(tuple(sites))))
        for g in geos:  # every geo must reach at least one target (the config insists)
            reach = set(g["prefer"]) | (set(g["prefer_sites"]) if kind == "sites" else set())
            if not reach & answered:
                answered.add(g["prefer"][0])
        answers = {t: {"A": [f"192.0.2.{n + 1}"]} for n, t in enumerate(sorted(answered))}
        services.append({"name": f"svc{i}.example.test.", "targets": kind, "answers": answers})
    policy = {
        "watermark": draw(_WATERMARK),
        "min_serving_regions": draw(_FROM1[4]),
        "max_shift": draw(_SHIFT),
        "hysteresis": draw(_HYSTERESIS),
    }
    data = {
        "policy": policy,
        "regions": [{"id": r, "capacity": draw(CAPACITY)} for r in regions],
        "sites": [{"id": s, "region": draw(_one(tuple(regions))), "capacity": draw(CAPACITY)} for s in sites],
        "geos": geos,
        "services": services,
        "zones": [{"origin": "example.test."}],
    }
    return parse_config(data)


def _health(draw: st.DrawFn, ids: list[str]) -> dict[str, TargetHealth]:
    out = {}
    for t in ids:
        if draw(_BOOL):
            out[t] = TargetHealth(status=draw(STATUS),
                                  capacity=draw(_OPT_CAPACITY), load=draw(_LOAD))
    return out


@st.composite
def observations(draw: st.DrawFn, config: Config) -> Observed:
    health = _health(draw, [r.id for r in config.regions] + [s.id for s in config.sites])
    demand = None
    if draw(_BOOL):
        demand = {g.id: draw(_GEO_DEMAND) for g in config.geos}
    return Observed(health=health, demand=demand)


@st.composite
def override_sets(draw: st.DrawFn, config: Config, ramps: bool = True, pins: bool = True,
                  forced: bool = True) -> Overrides:
    regions = [r.id for r in config.regions]
    evacs = []
    # One evacuation per region at most: etcd holds them under overrides/evacuations/<region>.
    for region in draw(_distinct(tuple(regions), 3)):
        mode = draw(_MODE) if ramps else "now"
        evacs.append(Evacuation(region=region, mode=mode,
                                step=draw(_EVAC_STEP) if mode == "ramp" else 1.0,
                                interval=30.0, started_at=draw(_EVAC_START),
                                forced=draw(_BOOL) if forced else False))
    restores = []
    if ramps:
        for region in draw(_distinct(tuple(regions), 2)):
            restores.append(Restore(region=region, step=draw(_RESTORE_STEP), interval=30.0,
                                    started_at=draw(_RESTORE_START)))
    pin_list = []
    if pins:
        for _ in range(draw(_UPTO[2])):
            svc = draw(st.sampled_from(config.services))
            geo = draw(st.sampled_from(config.geos))
            targets = sorted(set(svc.answers) | {"nowhere"})
            chosen = draw(st.lists(st.sampled_from(targets), unique=True, min_size=1, max_size=3))
            weights = {t: draw(_UPTO[5]) for t in chosen}
            weights[chosen[0]] += 1
            pin_list.append(Pin(service=svc.name, geo=geo.id, weights=weights))
    return Overrides(evacuations=tuple(evacs), restores=tuple(restores), pins=tuple(pin_list))


@st.composite
def scenarios(draw: st.DrawFn, ramps: bool = True, pins: bool = True, forced: bool = True) -> Scenario:
    config = draw(configs())
    return Scenario(config=config, observed=draw(observations(config)),
                    overrides=draw(override_sets(config, ramps=ramps, pins=pins, forced=forced)),
                    now=draw(_NOW))


# Agents never report a healthy site with capacity 0 (the ingest reads that as "no figure"), so neither do we.
@st.composite
def live_health(draw: st.DrawFn, config: Config) -> dict[str, TargetHealth]:
    out = {}
    for t in [r.id for r in config.regions] + [s.id for s in config.sites]:
        if draw(_BOOL):
            status = draw(STATUS)
            cap = draw(_LIVE_CAPACITY)
            if status == "unhealthy" and draw(_BOOL):
                cap = 0.0
            out[t] = TargetHealth(status=status, capacity=cap, load=draw(_LOAD))
    return out


# ---- geo maps and ECS options


@st.composite
def v4_net(draw: st.DrawFn) -> str:
    plen = draw(st.sampled_from([8, 12, 15, 16, 17, 20, 23, 24, 25, 26, 30, 32]))
    base = draw(st.sampled_from([0x0A000000, 0xC6336400, 0x7F010000, 0xCB007100])) ^ draw(st.integers(0, 0xFFFF))
    return str(ipaddress.ip_network((base >> (32 - plen) << (32 - plen), plen)))


@st.composite
def v6_net(draw: st.DrawFn) -> str:
    plen = draw(st.sampled_from([24, 32, 40, 44, 48, 52, 56, 60, 64]))
    base = (0x20010DB8 << 96) ^ (draw(st.integers(0, 0xFFFF)) << 80) ^ (draw(st.integers(0, 3)) << 100)
    return str(ipaddress.ip_network((base >> (128 - plen) << (128 - plen), plen)))


class ConfiguredGeoMap(GeoMap):
    """A GeoMap that also keeps the networks it was configured with, per family as (prefix length, network
    int): what the properties below pick addresses near and brute-force the scope over."""

    def __init__(self, geos: list[Geo], default_id: str) -> None:
        super().__init__(geos, default_id)
        self.networks: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for g in geos:
            for net in g.networks():
                self.networks[net.version].append((net.prefixlen, int(net.network_address)))


@st.composite
def geomaps(draw: st.DrawFn) -> ConfiguredGeoMap:
    geos = []
    for i in range(draw(_FROM1[4])):
        nets = draw(st.lists(st.one_of(v4_net(), v6_net()), max_size=6))
        geos.append(Geo(id=f"g{i}", prefixes=tuple(dict.fromkeys(nets)), prefer=("r",)))
    geos.append(Geo(id="world", prefer=("r",), default=True))
    return ConfiguredGeoMap(geos, "world")


@st.composite
def ecs_options(draw: st.DrawFn, geomap: ConfiguredGeoMap) -> bytes:
    family = draw(st.sampled_from([1, 2]))
    width = 32 if family == 1 else 128
    src = draw(st.one_of(st.sampled_from([0, 8, 16, 20, 24, 25, 26, 32, 48, 56, 64]), st.integers(0, width)))
    src = min(src, width)
    # addresses near the configured networks, so the interesting blocks are hit
    nets = [n for _, n in geomap.networks[4 if family == 1 else 6]]
    base = draw(st.sampled_from(nets)) if nets and draw(st.booleans()) else draw(st.integers(0, (1 << width) - 1))
    addr = (base ^ draw(st.integers(0, 0xFFFF)) << draw(st.sampled_from([0, 4, 8, 16]))) & ((1 << width) - 1)
    addr = addr >> (width - src) << (width - src) if src else 0
    raw = addr.to_bytes(width // 8, "big")[:(src + 7) // 8]
    return bytes((0, family, src, 0)) + raw
