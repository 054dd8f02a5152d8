"""Hypothesis properties of the planner (docs/architecture.md §5), over random but valid configurations.

Each property re-derives what it checks from the inputs (health, evacuations,
demand) instead of trusting the table's own bookkeeping, so a planner that
mislabels a region cannot pass by agreeing with itself.
"""

from __future__ import annotations

import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.config import TOTAL_WEIGHT, Config, parse_config
from steering.model import Evacuation, Observed, Overrides, Restore, TargetHealth, ramp_steps
from steering.planner import plan
from steering.table import RoutingTable
from tests.support.strategies import Scenario, configs, observations, scenarios

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- independent re-derivations -------------------------------------------------------------


def candidates(config: Config, svc_name: str, geo_id: str) -> list[str]:
    svc = config.service(svc_name)
    geo = config.geo(geo_id)
    regions = [r for r in geo.prefer if r in svc.answers]
    sites = [s for s in geo.prefer_sites if s in svc.answers] if svc.targets == "sites" else []
    return sites + regions


def blocked_regions(table: RoutingTable) -> set[str]:
    return {n.split()[2].rstrip(":") for n in table.notes if n.startswith("EVACUATION BLOCKED")}


def fully_evacuated(s: Scenario, table: RoutingTable) -> set[str]:
    blocked = blocked_regions(table)
    return {e.region for e in s.overrides.evacuations if e.remaining(s.now) <= 0 and e.region not in blocked}


def effective_capacity(s: Scenario, table: RoutingTable) -> dict[str, float]:
    """What each target can take: 0 when unhealthy, silent, reported at 0 or evacuated."""
    out = {}
    gone = fully_evacuated(s, table)
    for r in s.config.regions:
        h = s.observed.health.get(r.id, TargetHealth())
        cap = r.capacity if h.capacity is None else h.capacity
        out[r.id] = cap if h.status in ("healthy", "unknown") and r.id not in gone else 0.0
    for site in s.config.sites:
        h = s.observed.health.get(site.id, TargetHealth())
        cap = site.capacity if h.capacity is None else h.capacity
        out[site.id] = cap if h.status in ("healthy", "unknown") and site.region not in gone else 0.0
    return out


def demand(s: Scenario) -> dict[str, float]:
    if s.observed.demand is not None:
        return {g.id: max(0.0, s.observed.demand.get(g.id, 0.0)) for g in s.config.geos}
    total = sum(s.observed.health.get(r.id, TargetHealth()).load or 0.0 for r in s.config.regions)
    shares = sum(g.demand for g in s.config.geos)
    return {g.id: total * g.demand / shares for g in s.config.geos}


def planned_per_service(s: Scenario, table: RoutingTable) -> dict[str, dict[str, float]]:
    d = demand(s)
    out: dict[str, dict[str, float]] = {}
    for name, svc in table.services.items():
        load: dict[str, float] = {}
        for geo, route in svc.geos.items():
            for t, w in route.weights.items():
                load[t] = load.get(t, 0.0) + d[geo] * w / TOTAL_WEIGHT
        out[name] = load
    return out


def run(s: Scenario, previous: RoutingTable | None = None, now: float | None = None) -> RoutingTable:
    return plan(s.config, s.observed, s.overrides, previous, s.now if now is None else now)


# ---- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_weights_are_integers_summing_to_total_over_every_candidate(s: Scenario) -> None:
    table = run(s)
    assert set(table.services) == {svc.name for svc in s.config.services}
    for svc in s.config.services:
        route_set = table.services[svc.name].geos
        assert set(route_set) == {g.id for g in s.config.geos}
        for geo in s.config.geos:
            route = route_set[geo.id]
            assert list(route.weights) == candidates(s.config, svc.name, geo.id)
            assert all(type(w) is int and w >= 0 for w in route.weights.values()), route.weights
            assert sum(route.weights.values()) == TOTAL_WEIGHT, route.weights
            assert set(route.reasons) == set(route.weights)
    # The canonical JSON round-trips and passes the reader's own validation.
    assert RoutingTable.from_json(table.to_json()).to_json() == table.to_json()


@SETTINGS
@given(scenarios())
def test_nothing_goes_to_an_unusable_target_unless_failing_open(s: Scenario) -> None:
    table = run(s)
    cap = effective_capacity(s, table)
    for name, svc in table.services.items():
        for geo, route in svc.geos.items():
            usable = [t for t in route.weights if cap[t] > 0]
            if not usable:
                # Fail open: never "nowhere", flagged on the geo, the table and in a note.
                assert route.fail_open and table.fail_open, (name, geo)
                assert any(n.startswith(f"FAIL-OPEN {name} {geo}") for n in table.notes)
                assert sum(route.weights.values()) == TOTAL_WEIGHT
                continue
            assert not route.fail_open, (name, geo, route)
            for t, w in route.weights.items():
                if cap[t] <= 0:
                    assert w == 0, (name, geo, t, route.weights, route.reasons)


@SETTINGS
@given(scenarios(ramps=False, pins=False))
def test_no_target_above_watermark_while_an_alternative_has_room(s: Scenario) -> None:
    table = run(s)
    cap = effective_capacity(s, table)
    wm = s.config.policy.watermark
    d = demand(s)
    tol = sum(d.values()) / TOTAL_WEIGHT + 1e-6
    for name, load in planned_per_service(s, table).items():
        for geo, route in table.services[name].geos.items():
            if route.fail_open:
                continue
            for t, w in route.weights.items():
                if w == 0 or load.get(t, 0.0) <= wm * cap[t] + tol * (1 + wm * cap[t] / 1e4):
                    continue
                for u in route.weights:
                    if u != t and cap[u] > 0:
                        assert load.get(u, 0.0) >= wm * cap[u] - tol, (
                            f"{name} {geo}: {t} planned {load[t]:.3f} > {wm}×{cap[t]:.3f} while {u} has "
                            f"{load.get(u, 0.0):.3f} of {wm}×{cap[u]:.3f}\n{route}\n{s.describe()}")


@SETTINGS
@given(scenarios(ramps=False, pins=False))
def test_no_lower_preference_while_a_higher_one_has_room(s: Scenario) -> None:
    table = run(s)
    cap = effective_capacity(s, table)
    wm = s.config.policy.watermark
    d = demand(s)
    tol = sum(d.values()) / TOTAL_WEIGHT + 1e-6
    for name, load in planned_per_service(s, table).items():
        for geo, route in table.services[name].geos.items():
            if route.fail_open:
                continue
            order = list(route.weights)
            for j, t in enumerate(order):
                if route.weights[t] == 0:
                    continue
                for u in order[:j]:
                    if cap[u] > 0:
                        assert load.get(u, 0.0) >= wm * cap[u] - tol, (
                            f"{name} {geo}: uses {t} (weight {route.weights[t]}) while preferred {u} has "
                            f"{load.get(u, 0.0):.3f} of {wm}×{cap[u]:.3f}\n{route}\n{s.describe()}")


@SETTINGS
@given(scenarios(), st.data())
def test_same_inputs_give_identical_bytes(s: Scenario, data: st.DataObject) -> None:
    first = run(s)
    assert run(s).to_json() == first.to_json()
    # With a previous table too, and a planner that was handed equal but distinct objects.
    again = parse_config(s.config.model_dump(mode="json"))
    prev = RoutingTable.from_json(first.to_json())
    later = s.now + data.draw(st.sampled_from([1.0, 30.0]))
    a = plan(s.config, s.observed, s.overrides, first, later)
    b = plan(again, Observed(dict(s.observed.health), s.observed.demand), s.overrides, prev, later)
    assert a.to_json() == b.to_json()


@SETTINGS
@given(scenarios(forced=False))
def test_unforced_evacuations_never_break_min_serving_regions(s: Scenario) -> None:
    table = run(s)
    minimum = s.config.policy.min_serving_regions
    before = {r.id for r in s.config.regions if s.observed.health.get(r.id, TargetHealth()).can_serve}
    blocked = blocked_regions(table)
    out = {e.region for e in s.overrides.evacuations if e.region not in blocked}
    after = before - out
    assert len(after) >= min(minimum, len(before)), (before, out, blocked, table.notes)
    for region in blocked:
        # Each refusal was needed: applying it too would have broken the rule.
        assert region in before and len(after - {region}) < minimum, (region, before, out)
        assert table.regions[region].evacuation == "blocked"
    for region in out & before:
        assert table.regions[region].evacuation not in ("", "blocked")


@SETTINGS
@given(scenarios())
def test_forced_evacuations_are_always_applied(s: Scenario) -> None:
    table = run(s)
    blocked = blocked_regions(table)
    for e in s.overrides.evacuations:
        if e.forced:
            assert e.region not in blocked


def _serving(s: Scenario, table: RoutingTable) -> dict[str, bool]:
    cap = effective_capacity(s, table)
    return {t: c > 0 for t, c in cap.items()}


@SETTINGS
@given(scenarios(), st.data())
def test_one_step_moves_at_most_max_shift_except_emergencies(s: Scenario, data: st.DataObject) -> None:
    prev = run(s)
    # The next step: new health (loads, capacities, statuses) and demand, the same overrides, later.
    s2 = Scenario(s.config, data.draw(observations(s.config)), s.overrides, s.now + data.draw(st.sampled_from([5.0, 30.0])))
    table = run(s2, previous=prev)
    was, now = _serving(s, prev), _serving(s2, table)
    ramp_steps = [e.step for e in s.overrides.evacuations if e.mode == "ramp"] + [r.step for r in s.overrides.restores]
    limit = math.floor(max([s.config.policy.max_shift, *ramp_steps]) * TOTAL_WEIGHT + 1e-9)
    for name, svc in table.services.items():
        for geo, route in svc.geos.items():
            before = prev.services[name].geos[geo]
            if route.fail_open or route.pinned or before.fail_open or before.pinned:
                continue
            if any(was[t] and not now[t] for t in route.weights):
                continue  # an emergency: traffic leaves a target that lost health or was evacuated
            moved = sum(abs(route.weights[t] - before.weights.get(t, 0)) for t in route.weights) // 2
            assert moved <= max(limit, 1), (name, geo, before.weights, route.weights, limit)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(ramps=False, pins=False))
def test_constant_inputs_converge_to_the_fresh_plan(s: Scenario) -> None:
    """Starting from an all-on-the-last-choice table, repeated steps reach the fresh plan (within hysteresis)."""
    fresh = run(s)
    policy = s.config.policy
    start = {}
    for name, svc in fresh.services.items():
        start[name] = {geo: {t: (TOTAL_WEIGHT if i == len(r.weights) - 1 else 0) for i, t in enumerate(r.weights)}
                       for geo, r in svc.geos.items()}
    prev = RoutingTable.from_dict({
        "version": 7, "services": {n: {"targets": fresh.services[n].targets,
                                       "geos": {g: {"weights": w} for g, w in gs.items()}} for n, gs in start.items()},
    })
    limit = max(1, math.floor(policy.max_shift * TOTAL_WEIGHT + 1e-9))
    table = prev
    for _ in range(math.ceil(TOTAL_WEIGHT / limit) + 2):
        table = run(s, previous=table)
    assert not table.converging
    hyst = math.floor(policy.hysteresis * TOTAL_WEIGHT + 1e-9)
    for name, svc in table.services.items():
        for geo, route in svc.geos.items():
            if route.fail_open:
                continue  # failing open keeps the previous weights by design
            goal = fresh.services[name].geos[geo].weights
            moved = sum(abs(route.weights[t] - goal[t]) for t in goal) // 2
            assert moved <= hyst, (name, geo, route.weights, goal)


# ---- time: ramps under skewed clocks and leader changes --------------------------------------------

_EPOCH = 1_000_000.0  # real time 0 as a unix time, so every skewed clock stays positive
_OFFSET = st.floats(-60, 60)  # how far a leader's (or the record writer's) wall clock is off


def _shown(kind: str, label: str, describe: str) -> int | None:
    """The share (in %) a table's evacuation label shows: left for an evacuation, back for a restore;
    None when the region shows no such ramp."""
    if kind == "evacuation":
        if label == f"{describe} forced":
            return 0
        m = re.fullmatch(re.escape(describe) + r"(?: forced)? \((\d+)% left\)", label)
    else:
        if label == "":
            return 100
        m = re.fullmatch(r"restoring \((\d+)%\)", label)
    return int(m.group(1)) if m else None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.data())
def test_ramps_never_step_back_nor_finish_early_whatever_the_leaders_clocks(config: Config,
                                                                             data: st.DataObject) -> None:
    """A chain of plans as leaders make them: each leader's wall clock ``now`` is up to ±60 s off (jumping
    between plans, and at each leader change), ``elapsed`` is what that leader's monotonic clock measured
    since the previous table was planned, or since it read the table when another leader wrote it. The
    shown share never goes back, ``generated_at`` never goes back, and n steps of ``interval`` take at
    least (n - 1) x interval of real time from the first table that shows the ramp; and it does finish."""
    region = data.draw(st.sampled_from([r.id for r in config.regions]))
    kind = data.draw(st.sampled_from(["evacuation", "restore"]))
    step = data.draw(st.sampled_from([0.1, 0.25, 0.3, 0.5, 1.0]))
    interval = data.draw(st.sampled_from([5.0, 30.0, 45.0]))
    observed = data.draw(observations(config))
    started_at = _EPOCH + data.draw(_OFFSET)  # written at real time 0 by a replica whose clock is off too
    if kind == "evacuation":
        evac = Evacuation(region=region, mode="ramp", step=step, interval=interval, started_at=started_at,
                          forced=True)
        overrides, describe = Overrides(evacuations=(evac,)), evac.describe()
    else:
        overrides, describe = Overrides(restores=(Restore(region, step, interval, started_at),)), ""
    n = ramp_steps(step)
    offset = data.draw(_OFFSET)
    real = 0.0
    previous = plan(config, observed, Overrides(), None, _EPOCH + offset, elapsed=0.0)
    planned_at = real  # when the current leader planned (or read) ``previous``, real time
    first: float | None = None  # real time of the first published table that shows the ramp

    def check(table: RoutingTable, before: RoutingTable) -> int:
        assert table.generated_at >= before.generated_at, (table.generated_at, before.generated_at)
        shown = _shown(kind, table.regions[region].evacuation, describe)
        assert shown is not None, table.regions[region].evacuation
        was = _shown(kind, before.regions[region].evacuation, describe)
        if was is not None and before.ramps and region in before.ramps:
            assert (shown <= was) if kind == "evacuation" else (shown >= was), f"stepped back: {was}% -> {shown}%"
        done = shown == (0 if kind == "evacuation" else 100)
        anchor = real if first is None else first
        # Never sooner than (n - 1) intervals of real time after the first table that showed the ramp.
        steps_taken = table.ramps[region].steps if table.ramps and region in table.ramps else None
        assert steps_taken is not None
        assert (steps_taken - 1) * interval <= real - anchor + 1e-6, (steps_taken, real - anchor, interval)
        if done:
            assert real - anchor >= (n - 1) * interval - 1e-6, f"finished after {real - anchor}s; {n} x {interval}s"
        return shown

    for _ in range(data.draw(st.integers(1, 25))):
        real += data.draw(st.sampled_from([0.0, 1.0, interval / 2, interval]) | st.floats(0, 1.5 * interval))
        if data.draw(st.integers(0, 4)) == 0:  # a new leader, with its own clock, read the table meanwhile
            offset = data.draw(_OFFSET)
            planned_at = data.draw(st.floats(planned_at, real))
        elif data.draw(st.integers(0, 4)) == 0:  # the same leader's clock was stepped
            offset = data.draw(_OFFSET)
        table = plan(config, observed, overrides, previous, _EPOCH + real + offset, elapsed=real - planned_at)
        check(table, previous)
        if data.draw(st.booleans()):  # published; otherwise the next plan starts from ``previous`` again
            if first is None:
                first = real
            previous, planned_at = table, real
    # And it does finish: one leader, planning and publishing every half interval.
    if first is None:
        first = real
    for _ in range(2 * n + 2):
        real += interval / 2
        table = plan(config, observed, overrides, previous, _EPOCH + real + offset, elapsed=real - planned_at)
        shown = check(table, previous)
        previous, planned_at = table, real
    assert shown == (0 if kind == "evacuation" else 100), f"not finished after {real - first}s"
