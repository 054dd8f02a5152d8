"""The planner: ``plan(config, observed, overrides, previous, now) -> RoutingTable``.

Pure and deterministic (docs/architecture.md §5): no I/O, no clock, no randomness. The
steps, per service:

1. Decide what each target can take: live capacity (or the config's), zero
   when unhealthy, silent or fully evacuated; a ramping evacuation or restore
   scales the target's share instead (step 3).
2. Water-fill every geo's demand into its candidates (``waterfill``).
3. Blend in ramps: each ramping region keeps ``remaining`` of its normal
   share, the rest goes where the plan without it would send it.
4. Round to integer weights, then limit the move from the previous table to
   ``max_shift`` per step, except that traffic on a target that cannot serve
   leaves at once (emergency), and moves below ``hysteresis`` are ignored.
5. Pins replace the result; a geo with no usable target fails open.

Per-geo reachability (``policy.health.per_geo_reachability``): a target the
observers of geo G cannot reach (``TargetHealth.unreachable_from``) is no
candidate of G's water-filling and gets weight 0 there ("unreachable from
G"), while it serves the other geos. Exclusions that would leave a geo no
usable target are not applied to that geo (it keeps them as candidates, and
a ``REACHABILITY FAIL-OPEN`` note says so): reachability never empties a geo.

Overrides it cannot plan with (out of bounds, unknown region, service or
geo) are left out first and named in the table's notes (``overridecheck``).

Time: a ramp's step continues from the previous table's (``ramps``), by the
seconds the caller measured since that table was planned (``elapsed``), so a
leader whose wall clock is off neither steps back nor finishes early; and
``generated_at`` is never older than the previous table's.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from operator import add, is_, sub, truth

from steering.config import TOTAL_WEIGHT, Config
from steering.model import Evacuation, Observed, Overrides, Pin, Restore, TargetHealth
from steering.overridecheck import usable
from steering.ramps import progress
from steering.table import GeoRoute, RampProgress, RoutingTable, ServiceRoute, TargetState
from steering.topology import candidate_lists, site_regions
from steering.waterfill import Fill, waterfill
from steering.weights import apportion, apportion_values, distance, move_toward, step_values

# "No report yet": shared, so looking up 10,000 sites does not build 10,000 defaults.
_NO_REPORT = TargetHealth()


@dataclass(frozen=True)
class _Fleets:
    """The config's candidate lists grouped into fleets, with what else the planner derives from the config
    alone; built once per Config object. Candidates and site -> region come from ``steering.topology``."""

    geo_ids: tuple[str, ...]
    site_region: Mapping[str, str]
    config_cap: Mapping[str, float]
    cands: tuple[dict[str, tuple[str, ...]], ...]  # per service (config order): geo -> candidates
    fleet: tuple[int, ...]  # per service: services with equal targets and candidates share a number
    targets: tuple[tuple[str, ...], ...]  # per service: every candidate once, in first-seen order
    region_sites: Mapping[str, tuple[str, ...]]  # region -> its sites: what a ramp's region takes away
    cand_regions: tuple[dict[str, frozenset[str]], ...]  # per service: geo -> the regions of its candidates


def _fleets(config: Config) -> _Fleets:
    cands = candidate_lists(config)
    fleets: dict[tuple[object, ...], int] = {}
    fleet = tuple(fleets.setdefault((svc.targets, tuple(c.items())), len(fleets))
                  for svc, c in zip(config.services, cands, strict=True))
    region_sites: dict[str, list[str]] = {r.id: [] for r in config.regions}
    for s in config.sites:
        region_sites[s.region].append(s.id)
    site_region = site_regions(config)
    cand_regions = tuple({g: frozenset(site_region.get(t, t) for t in order) for g, order in c.items()} for c in cands)
    return _Fleets(
        geo_ids=tuple(g.id for g in config.geos),
        site_region=site_region,
        config_cap={r.id: r.capacity for r in config.regions} | {s.id: s.capacity for s in config.sites},
        cands=cands,
        fleet=fleet,
        targets=tuple(tuple(dict.fromkeys(t for ts in c.values() for t in ts)) for c in cands),
        region_sites={r: tuple(ss) for r, ss in region_sites.items()},
        cand_regions=cand_regions,
    )


@dataclass(frozen=True)
class _Ramp:
    region: str
    remaining: float  # share of its normal traffic the region keeps, (0, 1)
    step: float
    label: str


@dataclass(frozen=True)
class _Regions:
    """The per-region decisions that do not depend on the service."""

    blocked: Mapping[str, str]  # region -> why its evacuation is not applied
    evacuated: Mapping[str, str]  # region -> label, fully out
    ramps: tuple[_Ramp, ...]  # partially out, oldest first
    labels: Mapping[str, str]  # region -> evacuation column for status
    progress: Mapping[str, RampProgress]  # region -> its ramp's progress, complete ones included


def capacities(config: Config, health: Mapping[str, TargetHealth], evacuated: Collection[str]
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Each region's and site's capacity to plan with: the reported one (else the configured), 0 when it
    cannot serve or its region is evacuated."""
    region_cap: dict[str, float] = {}
    for r in config.regions:
        h = health.get(r.id, _NO_REPORT)
        cap = r.capacity if h.capacity is None else h.capacity
        region_cap[r.id] = cap if h.can_serve and r.id not in evacuated else 0.0
    site_cap: dict[str, float] = {}
    for s in config.sites:
        h = health.get(s.id, _NO_REPORT)
        cap = s.capacity if h.capacity is None else h.capacity
        site_cap[s.id] = cap if h.can_serve and s.region not in evacuated else 0.0
    return region_cap, site_cap


def plan(
    config: Config,
    observed: Observed,
    overrides: Overrides,
    previous: RoutingTable | None,
    now: float,
    leader: str = "",
    elapsed: float | None = None,
) -> RoutingTable:
    """``elapsed``: seconds since ``previous`` was planned, on the caller's monotonic clock (the leader's);
    None trusts ``now`` for it (see ``steering.ramps``)."""
    policy = config.policy
    health = observed.health
    # A stored record it cannot plan with (NaN interval, unknown region...) is left out and noted, never fatal.
    overrides = usable(config, overrides)
    derived = config.derived("planner.fleets", _fleets)
    regions = _region_decisions(config, health, overrides, previous, now, elapsed)
    demand = _demand(config, observed)
    unreachable = _unreachable(health) if policy.health.per_geo_reachability else {}

    evacuated = regions.evacuated
    region_cap, site_cap = capacities(config, health, evacuated)

    pins = {(p.service, p.geo): p for p in overrides.pins}
    ramp_step = max((r.step for r in regions.ramps), default=0.0)
    # At least one unit, or a tiny max_shift would never move anything.
    limit = max(1, math.floor(max(policy.max_shift, ramp_step) * TOTAL_WEIGHT + 1e-9))
    hysteresis = math.floor(policy.hysteresis * TOTAL_WEIGHT + 1e-9)
    site_region = derived.site_region

    services: dict[str, ServiceRoute] = {}
    peak: dict[str, float] = {}
    notes: list[str] = []
    fail_open = False
    converging = bool(regions.ramps)
    config_cap = derived.config_cap
    # Services that answer for the same targets share their water-filling, and,
    # given equal previous routes and no pins, their whole result: configs with
    # many services over one fleet plan each distinct fleet once.
    fills: dict[int, _Ideal] = {}
    routed: dict[int, tuple[ServiceRoute | None, _Routed]] = {}
    for svc, cands, key, targets, cand_regions in zip(config.services, derived.cands, derived.fleet, derived.targets,
                                                      derived.cand_regions, strict=True):
        ideal = fills.get(key)
        if ideal is None:
            ideal = fills[key] = _ideal(cands, targets, demand, region_cap, site_cap, derived.region_sites, regions,
                                        policy.watermark, cand_regions, unreachable)
        prev_svc = previous.services.get(svc.name) if previous else None
        svc_pins = {g: p for (name, g), p in pins.items() if name == svc.name} if pins else {}
        done = routed.get(key)
        if done is not None and not svc_pins and done[0] == prev_svc:
            result = done[1]
        else:
            result = _route_service(derived.geo_ids, ideal, prev_svc, svc_pins, demand, config_cap, health,
                                    site_region, regions, limit, hysteresis)
            if not svc_pins:
                routed[key] = (prev_svc, result)
        for geo_id, why in result.fail_open:
            fail_open = True
            notes.append(f"FAIL-OPEN {svc.name} {geo_id}: no healthy, non-evacuated target; serving {why}")
        for geo_id in ideal.reach_open:
            notes.append(f"REACHABILITY FAIL-OPEN {svc.name} {geo_id}: every target it could use is unreachable "
                         "from its observers; they keep serving it")
        converging = converging or result.converging
        services[svc.name] = ServiceRoute(targets=svc.targets, geos=result.geos)
        # Capacity and demand are per service: a target's planned load is that
        # of its busiest service.
        for t, load in result.planned.items():
            peak[t] = max(peak.get(t, 0.0), load)

    for region, why in sorted(regions.blocked.items()):
        notes.append(f"EVACUATION BLOCKED {region}: {why}")
    notes.extend(dict.fromkeys(s.note() for s in overrides.skipped))
    labels = regions.labels
    region_states = {
        r.id: _state("region", r.id, health.get(r.id, _NO_REPORT), r.capacity, region_cap[r.id],
                     peak.get(r.id, 0.0), labels.get(r.id, ""))
        for r in config.regions
    }
    site_states = {
        s.id: _state("site", s.region, health.get(s.id, _NO_REPORT), s.capacity, site_cap[s.id],
                     peak.get(s.id, 0.0), labels.get(s.region, ""))
        for s in config.sites
    }
    version = previous.version + 1 if previous else 1
    return RoutingTable(
        version=version,
        parent_version=previous.version if previous else 0,
        # Never older than the table it follows, whatever this leader's clock says.
        generated_at=max(now, previous.generated_at) if previous else now,
        services=services,
        regions=region_states,
        sites=site_states,
        fail_open=fail_open,
        converging=converging,
        topology=config.fingerprint(),
        leader=leader,
        notes=tuple(notes),
        ramps=dict(sorted(regions.progress.items())),
    )


@dataclass(frozen=True)
class _Ideal:
    """One fleet's water-filling: per geo, the candidates, the shares to aim for and why."""

    cands: Mapping[str, Sequence[str]]
    capacity: Mapping[str, float]
    fill: Fill
    shares: Mapping[str, list[float]]  # per geo, aligned with its candidates
    # Per geo, the ramping regions its shares were blended for, with their labels: the reason
    # of every candidate in (or a site of) such a region.
    ramp_reason: Mapping[str, Mapping[str, str]]
    # Per geo, the candidates its observers cannot reach (per_geo_reachability), left out of its filling;
    # and the geos where leaving them out would have left nothing usable, so they stay (fail open).
    excluded: Mapping[str, frozenset[str]]
    reach_open: tuple[str, ...]


@dataclass(frozen=True)
class _Routed:
    geos: dict[str, GeoRoute]
    planned: dict[str, float]
    fail_open: tuple[tuple[str, str], ...]  # (geo, what it serves instead)
    converging: bool


def _unreachable(health: Mapping[str, TargetHealth]) -> dict[str, frozenset[str]]:
    """Geo -> the targets its observers cannot reach (from the merged health)."""
    out: dict[str, set[str]] = {}
    for t, h in health.items():
        for g in h.unreachable_from:
            out.setdefault(g, set()).add(t)
    return {g: frozenset(ts) for g, ts in out.items()}


def _exclusions(cands: Mapping[str, tuple[str, ...]], capacity: Mapping[str, float],
                unreachable: Mapping[str, frozenset[str]]) -> tuple[dict[str, frozenset[str]], tuple[str, ...]]:
    """Per geo, the candidates to leave out for reachability; and the geos where that would leave no usable
    candidate, which keep them all (fail open for that geo, noted), never losing their last target."""
    excluded: dict[str, frozenset[str]] = {}
    opened: list[str] = []
    for g, order in cands.items():
        out = unreachable.get(g)
        drop = frozenset(t for t in order if t in out) if out else frozenset()
        if not drop:
            continue
        if any(capacity[t] > 0 for t in order if t not in drop):
            excluded[g] = drop
        elif any(capacity[t] > 0 for t in drop):
            opened.append(g)
    return excluded, tuple(opened)


def _ideal(cands: Mapping[str, tuple[str, ...]], targets: Sequence[str], demand: Mapping[str, float],
           region_cap: Mapping[str, float], site_cap: Mapping[str, float],
           region_sites: Mapping[str, tuple[str, ...]], regions: _Regions, watermark: float,
           cand_regions: Mapping[str, frozenset[str]], unreachable: Mapping[str, frozenset[str]] | None = None
           ) -> _Ideal:
    capacity = {t: (site_cap[t] if t in site_cap else region_cap[t]) for t in targets}
    excluded, opened = _exclusions(cands, capacity, unreachable) if unreachable else ({}, ())
    # What each geo's demand may fill: its candidates without those its observers cannot reach.
    fill_cands = {g: tuple(t for t in order if t not in excluded[g]) if g in excluded else order
                  for g, order in cands.items()} if excluded else cands

    fill = waterfill(fill_cands, demand, capacity, watermark)
    withouts: list[dict[str, dict[str, float]]] = []
    gone: list[str] = []
    for ramp in regions.ramps:
        gone.append(ramp.region)
        cap, _ = without(capacity, gone, region_sites)
        withouts.append(waterfill(fill_cands, demand, cap, watermark).alloc)
    alloc = fill.alloc
    empty: dict[str, float] = {}
    ideal: dict[str, list[float]] = {}
    ramp_reason: dict[str, dict[str, str]] = {}
    for g, order in cands.items():
        ideal[g], ramp_reason[g] = blend(order, alloc.get(g, empty), [w.get(g) for w in withouts], regions.ramps,
                                         cand_regions[g])
    return _Ideal(cands=cands, capacity=capacity, fill=fill, shares=ideal, ramp_reason=ramp_reason,
                  excluded=excluded, reach_open=opened)


def without(capacity: Mapping[str, float], gone: Sequence[str], region_sites: Mapping[str, tuple[str, ...]]
            ) -> tuple[dict[str, float], set[str]]:
    """``capacity`` with the regions ``gone`` and their sites at zero (what a ramp's water-filling plans with),
    and the targets that were set to zero. A copy patched where they are (same keys, same order), cheaper than
    a pass over thousands of sites per ramp."""
    cap = dict(capacity)
    zeroed: set[str] = set()
    for r in gone:
        for t in (r, *region_sites.get(r, ())):
            if t in cap:
                cap[t] = 0.0
                zeroed.add(t)
    return cap, zeroed


def blend(order: Sequence[str], mine: Mapping[str, float], alts: Sequence[Mapping[str, float] | None],
          ramps: Sequence[_Ramp], regions_of_order: Collection[str]) -> tuple[list[float], dict[str, str]]:
    """One geo's shares (aligned with ``order``) and its ramp reasons: its water-filling ``mine``, blended with
    each ramp's (``alts``, aligned with ``ramps``: the filling without that ramp's region and the older ones)
    so the region keeps ``remaining`` of what it has. A geo nothing else can serve (an empty alternative)
    keeps its shares; an alternative equal to the shares so far moves nothing and leaves them as they are
    (bit for bit: the incremental planner tells which geos a ramp moves by comparing them). Reasons name
    the ramps of ``regions_of_order`` (its candidates' regions) only: no other is any candidate's reason."""
    shares = list(map(mine.get, order, repeat(0.0)))  # [mine.get(t, 0.0) for t in order], in C
    reason: dict[str, str] = {}
    blended = False
    for alt, ramp in zip(alts, ramps, strict=True):
        if not alt:
            continue  # nothing else can serve this geo: the ramp cannot take it away
        if ramp.region in regions_of_order:
            reason[ramp.region] = ramp.label
        if alt is mine and not blended:
            continue  # the incremental planner's refill kept the geo's allocation: equal, without a look
        other = list(map(alt.get, order, repeat(0.0)))
        if other == shares:
            continue
        f = ramp.remaining
        rest = 1 - f
        shares = [f * a + rest * b for a, b in zip(shares, other, strict=True)]
        blended = True
    return shares, reason


def _route_service(geo_ids: Sequence[str], ideal: _Ideal, prev_svc: ServiceRoute | None, pins: Mapping[str, Pin],
                   demand: Mapping[str, float], config_cap: Mapping[str, float],
                   health: Mapping[str, TargetHealth], site_region: Mapping[str, str], regions: _Regions,
                   limit: int, hysteresis: int) -> _Routed:
    prev_geos = prev_svc.geos if prev_svc else None
    geos: dict[str, GeoRoute] = {}
    planned: dict[str, float] = {}
    failed: list[tuple[str, str]] = []
    converging = False
    for geo_id in geo_ids:
        prev_route = prev_geos.get(geo_id) if prev_geos else None
        pin = pins.get(geo_id) if pins else None
        route, why, ramped = _route_geo(geo_id, ideal, prev_route, pin, config_cap, health, site_region, regions,
                                        limit, hysteresis)
        if why is not None:
            failed.append((geo_id, why))
        converging = converging or ramped
        geos[geo_id] = route
        d = demand.get(geo_id, 0.0)
        # A zero weight adds exactly 0.0 (finite demand): only the key would differ, and
        # planned loads are read with a default of 0.0.
        skip_zero = math.isfinite(d)
        for t, w in route.weights.items():
            if w or not skip_zero:
                planned[t] = planned.get(t, 0.0) + d * w / TOTAL_WEIGHT
    return _Routed(geos=geos, planned=planned, fail_open=tuple(failed), converging=converging)


def _route_geo(geo_id: str, ideal: _Ideal, prev_route: GeoRoute | None, pin: Pin | None,
               config_cap: Mapping[str, float], health: Mapping[str, TargetHealth], site_region: Mapping[str, str],
               regions: _Regions, limit: int, hysteresis: int) -> tuple[GeoRoute, str | None, bool]:
    """One (service, geo): its route, what it serves if it fails open (else None), and whether it still ramps.
    Depends on nothing but its arguments: ``steering.replan`` redoes it for the geos a change reaches."""
    order = ideal.cands[geo_id]
    capacity = ideal.capacity
    excluded = ideal.excluded.get(geo_id) if ideal.excluded else None
    # For this geo, a target its observers cannot reach can take nothing (its traffic leaves at once).
    cap = capacity if not excluded else {**capacity, **dict.fromkeys(excluded, 0.0)}
    route = _pinned(pin, order, cap) if pin else None
    why: str | None = None
    ramped = False
    if route is None and not any(cap[t] > 0 for t in order):
        route, why = _fail_open(order, config_cap, prev_route)
    if route is None:
        goal = apportion_values(ideal.shares[geo_id], TOTAL_WEIGHT, order)
        if prev_route is None:
            weights = goal  # _step's own first case, without the call
        else:
            weights, ramped = _step(goal, prev_route, order, cap, limit, hysteresis)
        reasons = _reasons(order, weights, cap, ideal.fill, geo_id, health, site_region, regions,
                           ideal.ramp_reason[geo_id], ramped, excluded)
        route = GeoRoute(weights, reasons)
    return route, why, ramped


def _demand(config: Config, observed: Observed) -> dict[str, float]:
    """Requests/s per geo: measured if given, else the configured shares of the total reported load."""
    if observed.demand is not None:
        return {g.id: max(0.0, float(observed.demand.get(g.id, 0.0))) for g in config.geos}
    total = sum((observed.health.get(r.id) or TargetHealth()).load or 0.0 for r in config.regions)
    shares = sum(g.demand for g in config.geos)
    return {g.id: total * g.demand / shares for g in config.geos}


def _region_decisions(config: Config, health: Mapping[str, TargetHealth], overrides: Overrides,
                      previous: RoutingTable | None, now: float, elapsed: float | None) -> _Regions:
    """Apply evacuations oldest first, refusing any (unforced) that would leave too few regions serving."""
    known = {r.id for r in config.regions}
    serving = {r.id for r in config.regions if health.get(r.id, TargetHealth()).can_serve}
    blocked: dict[str, str] = {}
    evacuated: dict[str, str] = {}
    ramps: list[_Ramp] = []
    labels: dict[str, str] = {}
    ramped: dict[str, RampProgress] = {}
    restores: dict[str, Restore] = {r.region: r for r in overrides.restores if r.region in known}
    evacs: list[Evacuation] = sorted((e for e in overrides.evacuations if e.region in known),
                                     key=lambda e: (e.started_at, e.region))
    minimum = config.policy.min_serving_regions
    for e in evacs:
        if e.region in evacuated or any(r.region == e.region for r in ramps):
            continue
        left = serving - {e.region}
        if not e.forced and e.region in serving and len(left) < minimum:
            blocked[e.region] = (f"min_serving_regions={minimum}: evacuating it would leave "
                                 f"{len(left)} serving ({', '.join(sorted(left)) or 'none'})")
            labels[e.region] = "blocked"
            continue
        serving = left
        if e.mode == "now":
            remaining = 0.0
        else:
            at = ramped[e.region] = progress("evacuation", e.region, e.started_at, e.step, e.interval, previous,
                                             now, elapsed)
            remaining = e.left(at.steps)
        if remaining <= 0:
            evacuated[e.region] = f"evacuated ({e.describe()})"
            labels[e.region] = e.describe() + (" forced" if e.forced else "")
        else:
            label = f"evacuating: {e.describe()}, {remaining:.0%} left"
            ramps.append(_Ramp(e.region, remaining, e.step, label))
            labels[e.region] = f"{e.describe()} ({remaining:.0%} left)"
    for region, r in sorted(restores.items()):
        if region in evacuated or region in labels:
            continue  # an evacuation issued after the restore wins
        at = ramped[region] = progress("restore", region, r.started_at, r.step, r.interval, previous, now, elapsed)
        done = r.back(at.steps)
        if done < 1.0:
            ramps.append(_Ramp(region, done, r.step, f"restoring: {done:.0%} back"))
            labels[region] = f"restoring ({done:.0%})"
    return _Regions(blocked=blocked, evacuated=evacuated, ramps=tuple(ramps), labels=labels, progress=ramped)


def _step(goal: dict[str, int], prev: GeoRoute | None, order: Sequence[str], capacity: Mapping[str, float],
          limit: int, hysteresis: int) -> tuple[dict[str, int], bool]:
    """Limit the move from the previous weights; returns (weights, still ramping)."""
    if prev is None or prev.fail_open or prev.pinned or prev.weights == goal:
        return goal, False  # the last case is the steady state, and the common one
    if len(goal) != len(order):
        return _step_keyed(goal, prev, order, capacity, limit, hysteresis)
    # Lists aligned with ``order`` (its keys distinct here): a geo's few candidates, walked in C where it can.
    want = list(map(goal.__getitem__, order))
    was = prev.weights.get
    # Traffic on a target that cannot serve (or is no longer a candidate) leaves at
    # once: it goes where the goal sends it, in the goal's proportions.
    kept = [was(t, 0) if capacity[t] > 0 else 0 for t in order]
    held = sum(kept)
    if held == 0:
        return goal, False
    stranded = TOTAL_WEIGHT - held
    start = kept
    if stranded:
        extra = apportion_values(list(map(float, want)), stranded, order)
        start = list(map(add, kept, map(extra.__getitem__, order)))
    d = sum(map(abs, map(sub, start, want))) // 2
    if d <= hysteresis and all(map(is_, map(truth, start), map(truth, want))):  # and the same targets > 0
        return dict(zip(order, start, strict=True)), False
    moved = step_values(start, want, limit, order, d)
    if moved is want:
        return goal, False
    return dict(zip(order, moved, strict=True)), moved != want


def _step_keyed(goal: dict[str, int], prev: GeoRoute, order: Sequence[str], capacity: Mapping[str, float],
                limit: int, hysteresis: int) -> tuple[dict[str, int], bool]:
    """``_step`` for an ``order`` that repeats a target: each counted once, as a dict sees it."""
    if prev.fail_open or prev.pinned or prev.weights == goal:
        return goal, False
    kept = {t: prev.weights.get(t, 0) for t in order if capacity[t] > 0}
    stranded = TOTAL_WEIGHT - sum(kept.values())
    if sum(kept.values()) == 0:
        return goal, False
    start = kept
    if stranded:
        extra = apportion({t: float(goal[t]) for t in order}, stranded, order)
        start = {t: kept.get(t, 0) + extra[t] for t in order}
    d = distance(start, goal)
    same_support = {t for t, w in start.items() if w} == {t for t, w in goal.items() if w}
    if d <= hysteresis and same_support:
        return {t: start.get(t, 0) for t in order}, False
    moved = move_toward(start, goal, limit, order)
    return moved, moved != goal


def _pinned(pin: Pin, order: Sequence[str], capacity: Mapping[str, float]) -> GeoRoute | None:
    """Pinned weights over the targets that can serve; None when none of them can."""
    live = {t: float(w) for t, w in pin.weights.items() if t in order and capacity.get(t, 0.0) > 0 and w > 0}
    if not live:
        return None
    weights = apportion(live, TOTAL_WEIGHT, order)
    why = f"pinned: {pin.reason}" if pin.reason else "pinned"
    reasons = {t: (why if weights[t] else ("pinned to 0" if t in pin.weights else "not pinned")) for t in order}
    for t in order:
        if t in pin.weights and pin.weights[t] and capacity.get(t, 0.0) <= 0:
            reasons[t] = "pinned, but cannot serve"
    return GeoRoute(weights=weights, reasons=reasons, pinned=True)


def _fail_open(order: Sequence[str], config_cap: Mapping[str, float],
               prev: GeoRoute | None) -> tuple[GeoRoute, str]:
    """Nothing can serve this geo: keep the last decision, or spread over every target by capacity."""
    if prev is not None and not prev.pinned and set(prev.weights) <= set(order) and sum(prev.weights.values()) != 0:
        weights = {t: prev.weights.get(t, 0) for t in order}
        what = "the previous weights"
    else:
        weights = apportion({t: config_cap[t] for t in order}, TOTAL_WEIGHT, order)
        what = "every target by capacity"
    why = f"fail-open: no healthy target, serving {what}"
    return GeoRoute(weights=weights, reasons={t: why for t in order}, fail_open=True), what


def _reasons(order: Sequence[str], weights: Mapping[str, int], capacity: Mapping[str, float], fill: Fill,
             geo: str, health: Mapping[str, TargetHealth], site_region: Mapping[str, str], regions: _Regions,
             ramp_reason: Mapping[str, str], ramped: bool, unreachable: frozenset[str] | None = None,
             ) -> dict[str, str]:
    """Why each candidate has its weight; ``ramp_reason`` maps ramping regions to their labels;
    ``unreachable``: the candidates this geo's observers cannot reach."""
    reasons: dict[str, str] = {}
    down: list[str] = []
    last_full: str | None = None
    spill = ""  # f"spillover from {last_full}", made once per last_full rather than once per target
    short = geo in fill.overflow
    for t in order:
        w = weights.get(t, 0)
        if capacity[t] <= 0:
            region = site_region.get(t, t)
            h = health.get(t, _NO_REPORT)
            if region in regions.evacuated:
                reasons[t] = regions.evacuated[region]
            elif not h.can_serve:
                reasons[t] = h.status + (f": {h.detail}" if h.detail else "")
            elif unreachable and t in unreachable:
                by = [v.reporter for v in h.reporters if v.status == "unhealthy" and geo in v.geos]
                reasons[t] = f"unreachable from {geo}" + (f": {', '.join(by)}" if by else "")
            elif t in site_region and not health.get(region, _NO_REPORT).can_serve:
                reasons[t] = f"region {region} {health[region].status}"
            else:
                reasons[t] = "no capacity"
            down.append(t)
            continue
        ramp_label = ramp_reason.get(site_region.get(t, t)) if ramp_reason else None
        if ramp_label is not None:
            why = ramp_label
        elif last_full is None:
            why = "home" if not down else f"failover: {', '.join(down)} unavailable"
        else:
            why = spill
        if w:
            if short:
                why += _SHORT
            last_full = t
            spill = f"spillover from {t}"
        elif ramp_label is None and (last_full is None or not short):
            why = "standby"
        if ramped:
            why += _RAMPING
        reasons[t] = why
    return reasons


_SHORT = "; capacity short, excess spread by capacity"
_RAMPING = "; ramping (max_shift per step)"


def _relabel(by_region: Mapping[str, Sequence[str]], route: GeoRoute, capacity: Mapping[str, float],
             was: Mapping[str, str], now: Mapping[str, str], short: bool, ramped: bool) -> Mapping[str, str] | None:
    """``_reasons`` again for a route whose inputs are the same but its ramp labels (``was`` -> ``now``, region
    -> label); ``by_region``: the route's candidates by region (a site under its region, a region under
    itself). A target's reason reads no other target's label, so only the candidates of a region whose label
    changed are written again, each to what ``_reasons`` gives a labelled target. None when a label went
    away from a candidate's region (that reason depends on the other candidates': the caller runs
    ``_reasons``)."""
    reasons: dict[str, str] | None = None
    weights = route.weights
    for region in was.keys() | now.keys():  # a ramp or two
        label = now.get(region)
        if label == was.get(region):
            continue
        targets = by_region.get(region)
        if not targets:
            continue
        if label is None:
            return None
        for t in targets:
            if capacity[t] <= 0:
                continue  # a target that cannot serve gives why, never a label
            why = label
            if short and weights.get(t, 0):
                why += _SHORT
            if ramped:
                why += _RAMPING
            if reasons is None:
                reasons = dict(route.reasons)
            reasons[t] = why
    return route.reasons if reasons is None else reasons


# A table holds one TargetState per site, 10,000 and more, built on every plan; the
# frozen dataclass __init__ (one object.__setattr__ per field) is most of that cost.
# _state fills the instance dict directly instead: an equal object in a third of the time.
_STATE_FIELDS = ("kind", "region", "health", "serving", "capacity", "load", "planned_load", "utilization",
                 "evacuation", "reason")
if tuple(f.name for f in fields(TargetState)) != _STATE_FIELDS:
    raise RuntimeError("steering.table.TargetState changed its fields: update planner._state")
_new = object.__new__


def _state(kind: str, region: str, h: TargetHealth, config_capacity: float, usable: float, planned: float,
           evacuation: str) -> TargetState:
    capacity = config_capacity if h.capacity is None else h.capacity
    status = h.status
    reason = h.detail if status in ("unhealthy", "silent") else ""
    if planned == 0.0:
        # Most sites of a large fleet carry nothing; round() is the costly part for them.
        util = None if capacity <= 0 else 0.0
        rounded = 0.0
    else:
        util = None if capacity <= 0 else round(planned / capacity, 4)
        rounded = round(planned, 3)
    state = _new(TargetState)
    d = state.__dict__  # reading it bypasses the frozen __setattr__; item stores are the cheapest writes
    d["kind"] = kind
    d["region"] = region
    d["health"] = status
    d["serving"] = usable > 0
    d["capacity"] = capacity
    d["load"] = h.load or 0.0
    d["planned_load"] = rounded
    d["utilization"] = util
    d["evacuation"] = evacuation
    d["reason"] = reason
    return state
