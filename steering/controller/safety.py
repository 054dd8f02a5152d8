"""Previews and the safety rules of docs/architecture.md §6: pure functions over the live state.

A preview compares two *settled* plans from the same live health: the one
the current overrides lead to and the one the requested change leads to
(ramps counted as finished). So it shows this action's effect alone, not a
ramp or recovery that happens to be in flight.

Rules (each refusal names the rule and the numbers):
- ``min_serving_regions``: the evacuation would leave fewer regions serving;
- ``hard_limit``: a region that receives traffic would be planned beyond
  ``policy.hard_limit`` × its capacity;
- ``conflicting_evacuation``: the region already has an evacuation or a
  restore in flight, or another region is still ramping out.

Pins (``PinWeights``) can send a geo's traffic anywhere among its
candidates, so they get the same thinking:
- ``no_answers`` / ``not_a_candidate``: a pinned target the service has no
  answers for, or that the geo does not prefer; the planner would ignore
  the weight, so ``force`` cannot override these;
- ``cannot_serve``: a target with a non-zero pinned weight is unhealthy,
  silent, reports no capacity, or is (being) evacuated;
- ``hard_limit``: as for evacuations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from steering.config import TOTAL_WEIGHT, Config
from steering.model import Evacuation, Observed, Overrides, Restore, Status, TargetHealth
from steering.planner import plan
from steering.table import RampProgress, RoutingTable
from steering.topology import candidates, region_of

EPS = 1e-6


@dataclass(frozen=True)
class Refusal:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


@dataclass(frozen=True)
class GeoChange:
    service: str
    geo: str
    before: dict[str, int]
    after: dict[str, int]


@dataclass(frozen=True)
class RegionProjection:
    region: str
    capacity: float
    planned_load_before: float
    planned_load_after: float
    utilization_before: float
    utilization_after: float
    hard_limit: float


@dataclass(frozen=True)
class Preview:
    changes: tuple[GeoChange, ...]
    regions: tuple[RegionProjection, ...]
    fail_open_after: bool
    before: RoutingTable
    after: RoutingTable


_STATUSES: dict[str, Status] = {"healthy": "healthy", "unhealthy": "unhealthy", "silent": "silent", "unknown": "unknown"}


def live_health(table: RoutingTable | None) -> dict[str, TargetHealth]:
    """The health the current table was planned with (any replica has it, leader or not)."""
    if table is None:
        return {}
    out: dict[str, TargetHealth] = {}
    for tid, st in [*table.regions.items(), *table.sites.items()]:
        status = _STATUSES.get(st.health, "unknown")  # a table's health as a Status; anything else is unknown
        out[tid] = TargetHealth(status=status, capacity=st.capacity, load=st.load, detail=st.reason)
    return out


def settled(overrides: Overrides) -> Overrides:
    """The overrides as they end: every evacuation complete, every restore done."""
    return Overrides(evacuations=tuple(replace(e, mode="now") for e in overrides.evacuations), restores=(),
                     pins=overrides.pins)


def settled_plan(config: Config, health: dict[str, TargetHealth], overrides: Overrides, now: float) -> RoutingTable:
    return plan(config, Observed(health=health), settled(overrides), None, now)


def preview(config: Config, health: dict[str, TargetHealth], before: Overrides, after: Overrides,
            now: float) -> Preview:
    t0 = settled_plan(config, health, before, now)
    t1 = settled_plan(config, health, after, now)
    changes = []
    for name, svc in t1.services.items():
        old_svc = t0.services.get(name)
        for geo, route in svc.geos.items():
            old = old_svc.geos.get(geo) if old_svc else None
            b = dict(old.weights) if old else {}
            if b != dict(route.weights):
                changes.append(GeoChange(name, geo, b, dict(route.weights)))
    regions = []
    limit = config.policy.hard_limit
    for rid, st in t1.regions.items():
        old_st = t0.regions.get(rid)
        pb_ = old_st.planned_load if old_st else 0.0
        cap = st.capacity
        regions.append(RegionProjection(
            region=rid, capacity=cap, planned_load_before=pb_, planned_load_after=st.planned_load,
            utilization_before=pb_ / cap if cap > 0 else 0.0,
            utilization_after=st.planned_load / cap if cap > 0 else 0.0, hard_limit=limit))
    return Preview(tuple(changes), tuple(regions), t1.fail_open, t0, t1)


def serving_regions(config: Config, health: dict[str, TargetHealth], overrides: Overrides) -> list[str]:
    """Regions that are healthy (or not yet reported), not reporting capacity 0, and not evacuated.

    A region reporting capacity 0 takes no traffic (the table marks it not serving), so it must not count
    towards ``min_serving_regions`` either.
    """
    out = set(r.id for r in config.regions
              if (h := health.get(r.id, TargetHealth())).can_serve and (h.capacity is None or h.capacity > 0))
    return sorted(out - {e.region for e in overrides.evacuations})


def check_min_serving(config: Config, health: dict[str, TargetHealth], overrides: Overrides,
                      region: str) -> Refusal | None:
    serving = serving_regions(config, health, overrides)
    if region not in serving:
        return None  # it does not serve now: taking it out changes nothing
    left = [r for r in serving if r != region]
    minimum = config.policy.min_serving_regions
    if len(left) >= minimum:
        return None
    return Refusal("min_serving_regions",
                   f"evacuating {region} would leave {len(left)} region(s) serving "
                   f"({', '.join(left) or 'none'}); the policy requires at least {minimum}")


def check_hard_limit(p: Preview) -> Refusal | None:
    over = [r for r in p.regions
            if r.capacity > 0 and r.planned_load_after > r.hard_limit * r.capacity + EPS
            and r.planned_load_after > r.planned_load_before + EPS]
    if not over:
        return None
    parts = [f"{r.region} would be planned at {r.planned_load_after:.0f} req/s, {r.utilization_after:.0%} of its "
             f"capacity {r.capacity:g} (was {r.utilization_before:.0%})" for r in over]
    return Refusal("hard_limit", "; ".join(parts) + f"; hard limit {over[0].hard_limit:.0%}")


def check_conflicts(overrides: Overrides, region: str, now: float, action: str = "evacuate",
                    ramps: Mapping[str, RampProgress] | None = None) -> Refusal | None:
    """``conflicting_evacuation`` while another ramp is under way. ``ramps``: the progress the table in force
    shows; a ramp it shows is judged by the steps it took, not by this replica's clock against the record's
    ``started_at`` (a replica minutes off would otherwise refuse or allow an action for that long)."""
    def progress(kind: str, r: str, started_at: float) -> int | None:
        p = (ramps or {}).get(r)
        return p.steps if p is not None and p.kind == kind and p.started_at == started_at else None

    def remaining(e: Evacuation) -> float:
        steps = progress("evacuation", e.region, e.started_at)
        return e.remaining(now) if steps is None else e.left(steps)

    def restored(r: Restore) -> float:
        steps = progress("restore", r.region, r.started_at)
        return r.restored(now) if steps is None else r.back(steps)

    for e in overrides.evacuations:
        if e.region == region and action == "evacuate":
            state = "being evacuated" if remaining(e) > 0 else "already evacuated"
            who = f" by {e.actor}" if e.actor else ""
            return Refusal("conflicting_evacuation",
                           f"{region} is {state} ({e.describe()}{who}, reason: {e.reason or '-'}); restore it first")
    for r in overrides.restores:
        back = restored(r)
        if r.region == region and back < 1.0:
            return Refusal("conflicting_evacuation",
                           f"{region} is being restored ({back:.0%} back); wait for it to finish")
    for e in overrides.evacuations:
        left = remaining(e)
        if e.region != region and left > 0:
            return Refusal("conflicting_evacuation",
                           f"{e.region} is still ramping out ({e.describe()}, {left:.0%} left); "
                           "one evacuation at a time")
    return None


def evacuation_refusals(config: Config, health: dict[str, TargetHealth], overrides: Overrides, evac: Evacuation,
                        p: Preview, now: float, ramps: Mapping[str, RampProgress] | None = None) -> list[Refusal]:
    found = [check_conflicts(overrides, evac.region, now, ramps=ramps),
             check_min_serving(config, health, overrides, evac.region),
             check_hard_limit(p)]
    return [r for r in found if r is not None]


def with_evacuation(overrides: Overrides, evac: Evacuation) -> Overrides:
    return replace(overrides, evacuations=(*(e for e in overrides.evacuations if e.region != evac.region), evac),
                   restores=tuple(r for r in overrides.restores if r.region != evac.region))


def without_evacuation(overrides: Overrides, region: str) -> Overrides:
    return replace(overrides, evacuations=tuple(e for e in overrides.evacuations if e.region != region),
                   restores=tuple(r for r in overrides.restores if r.region != region))


def pin_candidates(config: Config, service: str, geo: str) -> list[str]:
    """The targets the planner can weigh for (service, geo), in its preference order (``topology.candidates``)."""
    return list(candidates(config.service(service), config.geo(geo)))


def check_pin_targets(config: Config, service: str, geo: str, weights: Mapping[str, int]) -> Refusal | None:
    """Targets the planner would ignore: no answers for the service, or not among the geo's candidates."""
    svc = config.service(service)
    cands = pin_candidates(config, service, geo)
    no_answers = [t for t in weights if t not in svc.answers]
    if no_answers:
        return Refusal("no_answers",
                       f"{svc.name} has no answers for {', '.join(no_answers)} "
                       f"(it answers for {len(svc.answers)}: {', '.join(sorted(svc.answers))}); "
                       "--force cannot override this")
    outside = [t for t in weights if t not in cands]
    if outside:
        return Refusal("not_a_candidate",
                       f"geo {geo} does not send {svc.name} traffic to {', '.join(outside)} "
                       f"(its {len(cands)} candidate(s): {', '.join(cands)}); --force cannot override this")
    return None


def cannot_serve(config: Config, health: Mapping[str, TargetHealth], overrides: Overrides,
                 target: str) -> str | None:
    """Why ``target`` (a region or cache site) cannot take traffic now, as the planner sees it; None if it can."""
    region = region_of(config, target)
    h = health.get(target, TargetHealth())
    if not h.can_serve:
        return h.status + (f" ({h.detail})" if h.detail else "")
    if h.capacity is not None and h.capacity <= 0:
        return "reporting capacity 0"
    for e in overrides.evacuations:
        if e.region == region:
            where = "evacuated" if region == target else f"in region {region}, which is evacuated"
            return f"{where} ({e.describe()}{', reason: ' + e.reason if e.reason else ''})"
    return None


def check_pin_serving(config: Config, health: Mapping[str, TargetHealth], overrides: Overrides, service: str,
                      geo: str, weights: Mapping[str, int]) -> Refusal | None:
    total = sum(weights.values()) or 1
    dead = [(t, why) for t, w in weights.items() if w > 0
            for why in [cannot_serve(config, health, overrides, t)] if why is not None]
    if not dead:
        return None
    parts = [f"{t} is {why} but would get {round(weights[t] * TOTAL_WEIGHT / total)} of {TOTAL_WEIGHT}"
             for t, why in dead]
    tail = ("; none of the pinned targets can serve: the pin would do nothing until one can"
            if len(dead) == sum(1 for w in weights.values() if w > 0) else "")
    return Refusal("cannot_serve", f"{service} {geo}: " + "; ".join(parts) + tail)


def pin_refusals(config: Config, health: Mapping[str, TargetHealth], overrides: Overrides, service: str, geo: str,
                 weights: Mapping[str, int], p: Preview) -> list[Refusal]:
    """The rules ``force`` may override, for a pin whose targets passed ``check_pin_targets``."""
    found = [check_pin_serving(config, health, overrides, service, geo, weights), check_hard_limit(p)]
    return [r for r in found if r is not None]
