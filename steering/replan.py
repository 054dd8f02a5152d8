"""Incremental planning: ``Replanner().plan(...)`` returns what ``planner.plan(...)`` returns, byte for byte,
redoing only what changed since its last call.

Most plans follow one change: a site's health. A plan's parts depend on few
inputs each: a fleet's water-filling (``steering.refill``) on its targets'
capacities, a (service, geo) route on that geo's shares, its candidates'
capacity and health and its previous route, a target's planned load on the
routes of the geos that have it, a site's state on its health, capacity and
planned load. The replanner keeps each part with what it was made from and,
when the next call differs only in the health of some sites, redoes the parts
those sites reach (and the routes that were still moving toward their goal).

Ramps (an evacuation or a restore under way) are parts too: per fleet, one
water-filling per ramp without the ramp's region (and the older ramps'),
made by ``refill`` from the fleet's own, so a site's change refills each of
them; a ramp that starts, steps or ends with the same regions out re-blends
every geo's shares (``planner.blend``) and redoes the routes of the geos
whose shares or ramp reasons moved, and the state of the ramping regions'
sites. Anything else (another config object, other pins, a region evacuated
or blocked, a step limit that changed, a previous table it did not make or
plan from, a region's health, per-geo reachability in play, non-finite
demand) plans in full, then keeps the parts again for the next call.

Pure like the planner: no I/O, no clock. Not thread-safe: one per leader loop.
tests/test_replan.py checks, over random sequences of changes, that every
table it returns serializes to the same bytes as ``planner.plan``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_not

from steering.config import TOTAL_WEIGHT, Config, Site
from steering.model import Observed, Overrides, Pin, TargetHealth
from steering.overridecheck import usable
from steering.planner import (
    _NO_REPORT,
    _demand,
    _Fleets,
    _fleets,
    _Ideal,
    _Ramp,
    _reasons,
    _region_decisions,
    _Regions,
    _relabel,
    _route_geo,
    _state,
    blend,
    capacities,
    plan,
    without,
)
from steering.refill import Log, fill, refill
from steering.table import GeoRoute, RoutingTable, ServiceRoute, TargetState

_MISSING = object()


@dataclass(frozen=True)
class _Index:
    """What the replanner looks up per config object, besides the planner's own fleets."""

    by_target: tuple[dict[str, tuple[str, ...]], ...]  # per fleet: target -> the geos it is a candidate of
    fleets_of: dict[str, tuple[int, ...]]  # target -> the fleets it is in
    sites: dict[str, Site]
    regions: frozenset[str]
    geo_pos: dict[str, int]
    fleet_count: int
    cand_regions: tuple[dict[str, frozenset[str]], ...]  # per fleet: geo -> the regions of its candidates
    region_geos: tuple[dict[str, frozenset[str]], ...]  # per fleet: region -> the geos with a candidate in it
    # per fleet: geo -> region -> its candidates there (a site under its region, a region under itself), in order
    by_region: tuple[dict[str, dict[str, tuple[str, ...]]], ...]


def _index(config: Config) -> _Index:
    f = config.derived("planner.fleets", _fleets)
    count = max(f.fleet, default=-1) + 1
    by_target: list[dict[str, tuple[str, ...]]] = [{} for _ in range(count)]
    for key, cands in zip(f.fleet, f.cands, strict=True):
        if by_target[key]:
            continue
        acc: dict[str, list[str]] = {}
        for g in f.geo_ids:  # geo order: planned loads are summed in it
            for t in cands[g]:
                acc.setdefault(t, []).append(g)
        by_target[key] = {t: tuple(gs) for t, gs in acc.items()}
    cand_regions: list[dict[str, frozenset[str]]] = [{} for _ in range(count)]
    for key, regions in zip(f.fleet, f.cand_regions, strict=True):
        cand_regions[key] = regions
    region_geos: list[dict[str, frozenset[str]]] = []
    for regions_of in cand_regions:
        acc_r: dict[str, set[str]] = {}
        for g, rs in regions_of.items():
            for r in rs:
                acc_r.setdefault(r, set()).add(g)
        region_geos.append({r: frozenset(gs) for r, gs in acc_r.items()})
    by_region: list[dict[str, dict[str, tuple[str, ...]]]] = [{} for _ in range(count)]
    for key, cands in zip(f.fleet, f.cands, strict=True):
        if by_region[key]:
            continue
        for g, order in cands.items():
            acc_g: dict[str, list[str]] = {}
            for t in order:
                acc_g.setdefault(f.site_region.get(t, t), []).append(t)
            by_region[key][g] = {r: tuple(ts) for r, ts in acc_g.items()}
    fleets_of: dict[str, list[int]] = {}
    for key, ts in enumerate(by_target):
        for t in ts:
            fleets_of.setdefault(t, []).append(key)
    return _Index(by_target=tuple(by_target), fleets_of={t: tuple(k) for t, k in fleets_of.items()},
                  sites={s.id: s for s in config.sites}, regions=frozenset(r.id for r in config.regions),
                  geo_pos={g: i for i, g in enumerate(f.geo_ids)}, fleet_count=count,
                  cand_regions=tuple(cand_regions), region_geos=tuple(region_geos), by_region=tuple(by_region))


@dataclass
class _State:
    config: Config
    overrides: Overrides
    planned_from: RoutingTable | None  # the previous table of the last call
    last: RoutingTable  # what the last call returned
    health: dict[str, TargetHealth]
    demand: dict[str, float]
    regions: _Regions
    limit: int
    hysteresis: int
    site_cap: dict[str, float]
    region_cap: dict[str, float]
    logs: list[Log]  # per fleet
    ramp_logs: list[tuple[Log, ...]]  # per fleet, per ramp (oldest first): the filling without its regions
    # Per fleet, the geos a ramp may reach: a filling without it may differ from the fleet's, or a candidate is
    # in its region (a reason). No other geo's shares or reasons depend on the ramps: each is its own filling's.
    ramp_geos: list[set[str]]
    ideals: list[_Ideal]  # per fleet
    routes: list[dict[str, GeoRoute]]  # per service
    fails: list[dict[str, str]]  # per service: geo -> what it serves, failing open
    ramping: list[set[str]]  # per service: geos still moving max_shift per step
    unstable: list[set[str]]  # per service: geos whose route differs from planned_from's (``_moving``)
    planned: list[dict[str, float]]  # per service: target -> planned load
    peak: dict[str, float]


class Replanner:
    """``plan`` with the same arguments and result as ``steering.planner.plan``."""

    def __init__(self) -> None:
        self._state: _State | None = None
        self.last_incremental = False  # whether the last call reused its parts (for benches and tests)

    def plan(self, config: Config, observed: Observed, overrides: Overrides, previous: RoutingTable | None,
             now: float, leader: str = "", elapsed: float | None = None) -> RoutingTable:
        state, self._state = self._state, None
        ov = usable(config, overrides)
        table: RoutingTable | None = None
        self.last_incremental = False
        if state is not None:
            table = self._update(state, config, observed, ov, previous, now, leader, elapsed)
            self.last_incremental = table is not None
        if table is None:
            table = self._build(config, observed, ov, previous, now, leader, elapsed)
        if table is None:
            table = plan(config, observed, overrides, previous, now, leader=leader, elapsed=elapsed)
        return table

    # ------------------------------------------------------------------ in full, keeping the parts

    def _build(self, config: Config, observed: Observed, overrides: Overrides, previous: RoutingTable | None,
               now: float, leader: str, elapsed: float | None) -> RoutingTable | None:
        policy = config.policy
        health = observed.health
        regions = _region_decisions(config, health, overrides, previous, now, elapsed)
        demand = _demand(config, observed)
        if not all(math.isfinite(d) for d in demand.values()):
            return None
        if policy.health.per_geo_reachability and any(h.unreachable_from for h in health.values()):
            return None
        f = config.derived("planner.fleets", _fleets)
        index = config.derived("replan.index", _index)
        evacuated = regions.evacuated
        region_cap, site_cap = capacities(config, health, evacuated)
        logs: list[Log | None] = [None] * index.fleet_count
        ramp_logs: list[tuple[Log, ...]] = [()] * index.fleet_count
        ramp_geos: list[set[str]] = [set() for _ in range(index.fleet_count)]
        ideals: list[_Ideal | None] = [None] * index.fleet_count
        for key, cands, targets in zip(f.fleet, f.cands, f.targets, strict=True):
            if logs[key] is not None:
                continue
            capacity = {t: (site_cap[t] if t in site_cap else region_cap[t]) for t in targets}
            log = logs[key] = fill(cands, demand, capacity, policy.watermark)
            ramp_logs[key], ramp_geos[key] = _ramp_logs(log, regions.ramps, f, index.region_geos[key])
            ideals[key] = _ideal_of(log, ramp_logs[key], regions.ramps, index.cand_regions[key], None, None)[0]
        limit, hysteresis = _limits(config, regions)
        state = _State(config=config, overrides=overrides, planned_from=previous, last=_EMPTY, health=dict(health),
                       demand=demand, regions=regions, limit=limit, hysteresis=hysteresis, site_cap=site_cap,
                       region_cap=region_cap, logs=[x for x in logs if x is not None], ramp_logs=ramp_logs,
                       ramp_geos=ramp_geos, ideals=[x for x in ideals if x is not None], routes=[], fails=[],
                       ramping=[], unstable=[], planned=[], peak={})
        pins = _pins(overrides)
        for i, svc in enumerate(config.services):
            ideal = state.ideals[f.fleet[i]]
            prev_svc = previous.services.get(svc.name) if previous else None
            routes: dict[str, GeoRoute] = {}
            fails: dict[str, str] = {}
            ramping: set[str] = set()
            unstable: set[str] = set()
            svc_pins = pins.get(svc.name, {})
            for g in f.geo_ids:
                prev_route = prev_svc.geos.get(g) if prev_svc else None
                route, why, ramped = _route_geo(g, ideal, prev_route, svc_pins.get(g), f.config_cap, health,
                                                f.site_region, regions, limit, hysteresis)
                routes[g] = route
                if why is not None:
                    fails[g] = why
                if ramped:
                    ramping.add(g)
                if _moving(route, prev_route):
                    unstable.add(g)
            planned: dict[str, float] = {}
            for g in f.geo_ids:
                d = demand.get(g, 0.0)
                for t, w in routes[g].weights.items():
                    if w:
                        planned[t] = planned.get(t, 0.0) + d * w / TOTAL_WEIGHT
            state.routes.append(routes)
            state.fails.append(fails)
            state.ramping.append(ramping)
            state.unstable.append(unstable)
            state.planned.append(planned)
        for p in state.planned:
            for t, load in p.items():
                state.peak[t] = max(state.peak.get(t, 0.0), load)
        sites = {s.id: _state("site", s.region, health.get(s.id, _NO_REPORT), s.capacity, site_cap[s.id],
                              state.peak.get(s.id, 0.0), regions.labels.get(s.region, "")) for s in config.sites}
        services = {svc.name: ServiceRoute(targets=svc.targets, geos=state.routes[i])
                    for i, svc in enumerate(config.services)}
        table = _table(config, state, services, sites, health, overrides, previous, now, leader)
        state.last = table
        self._state = state
        return table

    # ------------------------------------------------------------------ only what changed

    def _update(self, s: _State, config: Config, observed: Observed, overrides: Overrides,
                previous: RoutingTable | None, now: float, leader: str, elapsed: float | None) -> RoutingTable | None:
        if config is not s.config or overrides.pins != s.overrides.pins:
            return None  # evacuations and restores reach the plan only through the region decisions, below
        after_last = previous is s.last
        if not after_last and previous is not s.planned_from:
            return None
        health = observed.health
        old = s.health
        index = config.derived("replan.index", _index)
        changed: list[str] = []
        # The records that are not the very objects of the last call (in C: tens of thousands of them).
        others = compress(health, map(is_not, health.values(), map(old.get, health, repeat(_MISSING))))
        for k in [*others, *(old.keys() - health.keys())]:
            h = health.get(k, _NO_REPORT)
            if h == old.get(k, _NO_REPORT):
                continue  # a new object, equal (the merge makes one per plan for a target without a record)
            if k not in index.sites:
                if k in index.regions:
                    return None  # a region's health reaches demand, evacuation decisions and its sites' reasons
                continue  # not a target of this config: the planner never reads it
            if h.unreachable_from:
                return None
            changed.append(k)
        regions = _region_decisions(config, health, overrides, previous, now, elapsed)
        if regions.blocked != s.regions.blocked or regions.evacuated != s.regions.evacuated:
            return None
        if _limits(config, regions) != (s.limit, s.hysteresis):
            return None  # a route still moving may move by another step: each would have to be redone
        demand = _demand(config, observed)
        if demand != s.demand:
            return None
        ramps_moved = regions.ramps != s.regions.ramps
        same_out = [r.region for r in regions.ramps] == [r.region for r in s.regions.ramps]
        f = config.derived("planner.fleets", _fleets)
        evacuated = regions.evacuated
        site_cap = dict(s.site_cap)
        cap_changed: set[str] = set()
        for t in changed:
            site = index.sites[t]
            h = health.get(t, _NO_REPORT)
            cap = site.capacity if h.capacity is None else h.capacity
            c = cap if h.can_serve and site.region not in evacuated else 0.0
            if c != site_cap[t]:
                site_cap[t] = c
                cap_changed.add(t)
        # Per fleet: the geos whose shares moved, and those a changed target is a candidate of.
        logs = list(s.logs)
        ramp_logs = list(s.ramp_logs)
        ramp_geos = list(s.ramp_geos)
        ideals = list(s.ideals)
        reached: list[set[str]] = [set() for _ in range(index.fleet_count)]
        relabel: list[set[str]] = [set() for _ in range(index.fleet_count)]  # only their ramp reasons moved
        for t in changed:
            for key in index.fleets_of.get(t, ()):
                reached[key].update(index.by_target[key][t])
        for key in range(index.fleet_count):
            mine = {t for t in cap_changed if t in index.by_target[key]}
            moved: set[str] = set()
            if mine:
                capacity = dict(s.ideals[key].capacity)
                for t in mine:
                    capacity[t] = site_cap[t]
                logs[key], moved = refill(s.logs[key], capacity, mine)
                if same_out and regions.ramps:
                    ramp_logs[key], more = _refill_ramps(s.ramp_logs[key], s.regions.ramps, mine, site_cap, index)
                    moved |= more
                    # A geo a filling without the ramp moved in may differ from the fleet's there now.
                    ramp_geos[key] = ramp_geos[key] | more
            if not same_out:
                ramp_logs[key], ramp_geos[key] = _ramp_logs(logs[key], regions.ramps, f, index.region_geos[key])
            if ramps_moved:
                # Only the geos a ramp reaches, before or now, can blend otherwise: the rest keep the
                # fleet's own shares and no ramp reason (and those whose filling moved, as always).
                geos = s.ramp_geos[key] | ramp_geos[key] | moved
                ideals[key], blended, relabel[key] = _ideal_of(logs[key], ramp_logs[key], regions.ramps,
                                                               index.cand_regions[key], ideals[key], geos)
                moved |= blended
            elif mine:  # the ideal carries the capacities, even where no share moved (all of ``moved`` is redone)
                ideals[key] = _ideal_of(logs[key], ramp_logs[key], regions.ramps, index.cand_regions[key],
                                        ideals[key], moved)[0]
            # Every geo whose filling moved, shares equal or not: its shortfall (a reason) may have.
            reached[key] |= moved
        pins = _pins(overrides)
        routes_all = list(s.routes)
        fails_all = list(s.fails)
        ramping_all = list(s.ramping)
        unstable_all = list(s.unstable)
        planned_all = list(s.planned)
        services = dict(s.last.services)
        touched_targets: set[str] = set()
        for i, svc in enumerate(config.services):
            key = f.fleet[i]
            redo = reached[key] | s.unstable[i] if after_last else reached[key]
            relabel_only = relabel[key] - redo
            if not redo and not relabel_only:
                if after_last:
                    unstable_all[i] = set()
                continue
            ideal = ideals[key]
            prev_svc = previous.services.get(svc.name) if previous else None
            routes = dict(s.routes[i])
            fails = dict(s.fails[i])
            ramping = set(s.ramping[i])
            unstable = set() if after_last else s.unstable[i] - redo
            svc_pins = pins.get(svc.name, {})
            moved_routes: list[str] = []
            reweighed: set[str] = set()
            for g in sorted(redo, key=index.geo_pos.__getitem__):
                prev_route = prev_svc.geos.get(g) if prev_svc else None
                route, why, ramped = _route_geo(g, ideal, prev_route, svc_pins.get(g), f.config_cap, health,
                                                f.site_region, regions, s.limit, s.hysteresis)
                if why is not None:
                    fails[g] = why
                else:
                    fails.pop(g, None)
                if ramped:
                    ramping.add(g)
                else:
                    ramping.discard(g)
                if _moving(route, prev_route):
                    unstable.add(g)
                was = routes[g]
                if route != was:
                    moved_routes.append(g)
                    routes[g] = route
                    # Only a target whose weight moved in some route has another planned load: the others
                    # sum the same terms in the same order.
                    ws = was.weights
                    reweighed.update(t for t, w in route.weights.items() if ws.get(t, 0) != w)
                    reweighed.update(t for t in ws if t not in route.weights)
                else:
                    # Equal: keep the object, so what did not move stays what it was.
                    pass
            rewritten = False
            for g in relabel_only:
                # Nothing but a ramp's label moved: the weights are where the last plan put them (the same
                # inputs, and a stable route is planned from itself), only the reasons are written again.
                was = routes[g]
                if was.fail_open or was.pinned:
                    continue  # their reasons name the pin or the fail-open, never a ramp
                reasons = _relabel(index.by_region[key][g], was, ideal.capacity, s.ideals[key].ramp_reason[g],
                                   ideal.ramp_reason[g], g in ideal.fill.overflow, g in ramping)
                if reasons is None:
                    reasons = _reasons(ideal.cands[g], was.weights, ideal.capacity, ideal.fill, g, health,
                                       f.site_region, regions, ideal.ramp_reason[g], g in ramping, None)
                if reasons != was.reasons:
                    routes[g] = GeoRoute(was.weights, reasons)
                    rewritten = True
            routes_all[i] = routes
            fails_all[i] = fails
            ramping_all[i] = ramping
            unstable_all[i] = unstable
            if not moved_routes:
                if rewritten:
                    services[svc.name] = ServiceRoute(targets=svc.targets, geos=routes)
                continue
            services[svc.name] = ServiceRoute(targets=svc.targets, geos=routes)
            planned = dict(s.planned[i])
            by_target = index.by_target[key]
            targets = reweighed
            for t in targets:
                total: float | None = None
                gs = by_target[t]
                per_geo = [routes[g].weights.get(t, 0) for g in gs]
                # Summed one by one in geo order, as the planner does (sum() rounds otherwise): the nonzero only.
                for g, w in compress(zip(gs, per_geo, strict=True), per_geo):
                    total = (0.0 if total is None else total) + demand.get(g, 0.0) * w / TOTAL_WEIGHT
                if total is None:
                    planned.pop(t, None)
                else:
                    planned[t] = total
            planned_all[i] = planned
            touched_targets |= targets
        peak = s.peak
        if touched_targets:
            peak = dict(peak)
            for t in touched_targets:
                top: float | None = None
                for p in planned_all:
                    load = p.get(t)
                    if load is not None:
                        top = max(0.0 if top is None else top, load)
                if top is None:
                    peak.pop(t, None)
                else:
                    peak[t] = top
        sites: dict[str, TargetState] = dict(s.last.sites)
        new_label = {t for r in set(regions.labels) | set(s.regions.labels)
                     if regions.labels.get(r) != s.regions.labels.get(r) for t in f.region_sites.get(r, ())}
        for t in set(changed) | cap_changed | new_label | {t for t in touched_targets if t in index.sites}:
            site = index.sites[t]
            sites[t] = _state("site", site.region, health.get(t, _NO_REPORT), site.capacity, site_cap[t],
                              peak.get(t, 0.0), regions.labels.get(site.region, ""))
        state = _State(config=config, overrides=overrides, planned_from=previous, last=s.last, health=dict(health),
                       demand=demand, regions=regions, limit=s.limit, hysteresis=s.hysteresis, site_cap=site_cap,
                       region_cap=s.region_cap, logs=logs, ramp_logs=ramp_logs, ramp_geos=ramp_geos, ideals=ideals,
                       routes=routes_all, fails=fails_all, ramping=ramping_all, unstable=unstable_all,
                       planned=planned_all, peak=peak)
        table = _table(config, state, services, sites, health, overrides, previous, now, leader)
        state.last = table
        self._state = state
        return table


def _moving(route: GeoRoute, prev: GeoRoute | None) -> bool:
    """Whether planning ``route`` again, from itself as the previous route, could give another: a route is
    planned from its previous one's weights and flags only (``planner._route_geo``), so one that differs
    from its previous route in its reasons alone (a ramp's label, a health detail) is where it stays."""
    return prev is None or route.weights != prev.weights or route.fail_open != prev.fail_open \
        or route.pinned != prev.pinned


def _limits(config: Config, regions: _Regions) -> tuple[int, int]:
    """The step limit and hysteresis in weight units, as the planner works them out."""
    policy = config.policy
    ramp_step = max((r.step for r in regions.ramps), default=0.0)
    limit = max(1, math.floor(max(policy.max_shift, ramp_step) * TOTAL_WEIGHT + 1e-9))
    hysteresis = math.floor(policy.hysteresis * TOTAL_WEIGHT + 1e-9)
    return limit, hysteresis


def _ramp_logs(log: Log, ramps: tuple[_Ramp, ...], f: _Fleets, region_geos: Mapping[str, frozenset[str]]
               ) -> tuple[tuple[Log, ...], set[str]]:
    """Per ramp, oldest first, the fleet's filling without that ramp's region and the older ramps' (their sites
    too), refilled from the fleet's own ``log`` one region at a time; and the geos the ramps may reach: those
    any of these fillings may allocate otherwise than ``log``, and those with a candidate in a ramp's region."""
    out: list[Log] = []
    reach: set[str] = set()
    last = log
    for ramp in ramps:
        # Each from the one before: it leaves out one region more, so only that region's change spreads.
        capacity, zeroed = without(last.capacity, (ramp.region,), f.region_sites)
        if any(last.capacity[t] > 0 for t in zeroed):  # else the region is nothing to this fleet: the same
            last, moved = refill(last, capacity, zeroed)
            reach |= moved  # a geo that differs from the fleet's own moved in one of the steps
        out.append(last)
        reach |= region_geos.get(ramp.region, frozenset())
    return tuple(out), reach


def _refill_ramps(logs: tuple[Log, ...], ramps: tuple[_Ramp, ...], sites: set[str], site_cap: Mapping[str, float],
                  index: _Index) -> tuple[tuple[Log, ...], set[str]]:
    """The ramps' fillings after the capacity of ``sites`` changed (a site whose region a filling leaves out
    stays at zero there); and the geos whose allocation in any of them may differ."""
    out: list[Log] = []
    moved: set[str] = set()
    gone: set[str] = set()
    for log, ramp in zip(logs, ramps, strict=True):
        gone.add(ramp.region)
        mine = {t for t in sites if index.sites[t].region not in gone}
        if not mine:
            out.append(log)
            continue
        capacity = dict(log.capacity)
        for t in mine:
            capacity[t] = site_cap[t]
        new, geos = refill(log, capacity, mine)
        out.append(new)
        moved |= geos
    return tuple(out), moved


def _pins(overrides: Overrides) -> dict[str, dict[str, Pin]]:
    out: dict[str, dict[str, Pin]] = {}
    for p in overrides.pins:
        out.setdefault(p.service, {})[p.geo] = p  # the last pin of a (service, geo) wins, as in the planner
    return out


def _ideal_of(log: Log, ramp_logs: tuple[Log, ...], ramps: tuple[_Ramp, ...],
              cand_regions: Mapping[str, frozenset[str]], old: _Ideal | None,
              geos: set[str] | None) -> tuple[_Ideal, set[str], set[str]]:
    """The planner's _Ideal for a fleet without reachability exclusions, from its filling and its ramps'; the
    shares and ramp reasons of ``geos`` (every geo when None) blended again, the others kept from ``old``.
    Also the geos whose shares differ from ``old``'s (every one blended, without ``old``), and those whose
    ramp reasons alone do."""
    alloc = log.fill.alloc
    alts = [r.fill.alloc for r in ramp_logs]
    cands = log.candidates
    shares = dict(old.shares) if old is not None else {}
    reasons = dict(old.ramp_reason) if old is not None else {}
    empty: dict[str, float] = {}
    moved: set[str] = set()
    relabeled: set[str] = set()
    for g in cands if geos is None else geos:
        new, why = blend(cands[g], alloc.get(g, empty), [a.get(g) for a in alts], ramps, cand_regions[g])
        if old is None or new != shares[g]:
            moved.add(g)
            shares[g] = new
            reasons[g] = why
        elif why != reasons[g]:
            relabeled.add(g)
            reasons[g] = why
    ideal = _Ideal(cands=cands, capacity=log.capacity, fill=log.fill, shares=shares, ramp_reason=reasons,
                   excluded={}, reach_open=())
    return ideal, moved, relabeled


def _table(config: Config, s: _State, services: dict[str, ServiceRoute], sites: dict[str, TargetState],
           health: Mapping[str, TargetHealth], overrides: Overrides, previous: RoutingTable | None, now: float,
           leader: str) -> RoutingTable:
    """The table around the parts, as planner.plan assembles it."""
    notes: list[str] = []
    index = config.derived("replan.index", _index)
    for svc, fails in zip(config.services, s.fails, strict=True):
        for g in sorted(fails, key=index.geo_pos.__getitem__):
            notes.append(f"FAIL-OPEN {svc.name} {g}: no healthy, non-evacuated target; serving {fails[g]}")
    regions = s.regions
    for region, why in sorted(regions.blocked.items()):
        notes.append(f"EVACUATION BLOCKED {region}: {why}")
    notes.extend(dict.fromkeys(x.note() for x in overrides.skipped))
    region_cap = s.region_cap
    region_states = {
        r.id: _state("region", r.id, health.get(r.id, _NO_REPORT), r.capacity, region_cap[r.id],
                     s.peak.get(r.id, 0.0), regions.labels.get(r.id, ""))
        for r in config.regions
    }
    version = previous.version + 1 if previous else 1
    return RoutingTable(
        version=version,
        parent_version=previous.version if previous else 0,
        generated_at=max(now, previous.generated_at) if previous else now,
        services=services,
        regions=region_states,
        sites=sites,
        fail_open=any(s.fails),
        converging=bool(regions.ramps) or any(s.ramping),
        topology=config.fingerprint(),
        leader=leader,
        notes=tuple(notes),
        ramps=dict(sorted(regions.progress.items())),
    )


_EMPTY = RoutingTable(version=0, parent_version=0, generated_at=0.0, services={}, regions={}, sites={},
                      fail_open=False, converging=False, topology="", leader="", notes=(), ramps={})
