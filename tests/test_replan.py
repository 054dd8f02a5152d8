"""Incremental planning (steering.replan, steering.refill) against the planner it stands in for.

The property: over random sequences of changes (site and region health,
capacity, reachability, overrides, ramps, a new config, the previous table
published or not), every table the Replanner returns serializes to the same
bytes as ``planner.plan`` given the same inputs. The refill property checks
the water-filling alone, value for value.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.config import Config
from steering.model import Observed, Overrides, Status, TargetHealth
from steering.planner import plan
from steering.refill import fill, refill
from steering.replan import Replanner
from steering.table import RoutingTable
from steering.waterfill import waterfill
from tests.support.strategies import configs, live_health, observations, override_sets

STATUSES: list[Status] = ["healthy", "healthy", "unknown", "unhealthy", "silent"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _health_change(draw: st.DrawFn, config: Config, health: dict[str, TargetHealth]) -> dict[str, TargetHealth]:
    # Sites more often than regions: a site's change is the one planned incrementally.
    ids = [s.id for s in config.sites] * 4 + [r.id for r in config.regions]
    out = dict(health)
    for t in draw(st.lists(st.sampled_from(ids), min_size=1, max_size=2)):
        kind = draw(st.sampled_from(["status", "status", "capacity", "load", "gone", "unreachable"]))
        h = out.get(t, TargetHealth())
        if kind == "status":
            status: Status = draw(st.sampled_from(STATUSES))
            out[t] = TargetHealth(status=status, capacity=h.capacity, load=h.load)
        elif kind == "capacity":
            out[t] = TargetHealth(status=h.status, capacity=draw(st.none() | st.sampled_from([0.0, 50.0, 5000.0])),
                                  load=h.load)
        elif kind == "load":
            out[t] = TargetHealth(status=h.status, capacity=h.capacity, load=draw(st.floats(0, 20000)))
        elif kind == "gone":
            out.pop(t, None)
        else:
            geo = draw(st.sampled_from([g.id for g in config.geos]))
            out[t] = TargetHealth(status=h.status, capacity=h.capacity, load=h.load, unreachable_from=(geo,))
    return out


@st.composite
def sequences(draw: st.DrawFn) -> tuple[Config, list[tuple[Config, Observed, Overrides, str, float]]]:
    """A config and steps: (config, observed, overrides, which previous to plan from, now)."""
    config = draw(configs())
    first = config
    observed = draw(observations(config))
    health = dict(observed.health)
    overrides = Overrides()
    steps = []
    now = 0.0
    for _ in range(draw(st.integers(1, 8))):
        what = draw(st.sampled_from(["health"] * 6 + ["overrides", "ramps", "ramps", "config", "demand", "nothing"]))
        if what == "health":
            health = _health_change(draw, config, health)
        elif what == "overrides":
            overrides = draw(override_sets(config, ramps=False))
        elif what == "ramps":
            overrides = draw(override_sets(config, ramps=True))
        elif what == "config":
            config = draw(configs())
            health = draw(live_health(config))
            overrides = Overrides()
        elif what == "demand":
            observed = draw(observations(config))
            health = dict(observed.health)
        # 30 s: a ramp's step (interval 30 s); 15 s: half of one, the step stays while health changes.
        now += draw(st.sampled_from([0.0, 1.0, 15.0, 30.0]))
        previous = draw(st.sampled_from(["last", "last", "last", "same", "none"]))
        steps.append((config, Observed(health=health, demand=observed.demand if what != "config" else None),
                      overrides, previous, now))
    return first, steps


@SETTINGS
@given(sequences())
def test_incremental_plans_equal_full_plans_byte_for_byte(seq: tuple[Config, list[tuple[Config, Observed, Overrides,
                                                                                       str, float]]]) -> None:
    _, steps = seq
    replanner = Replanner()
    last: RoutingTable | None = None
    before: RoutingTable | None = None
    for config, observed, overrides, which, now in steps:
        previous = {"last": last, "same": before, "none": None}[which]
        got = replanner.plan(config, observed, overrides, previous, now, leader="a", elapsed=None)
        want = plan(config, observed, overrides, previous, now, leader="a", elapsed=None)
        assert got.to_json() == want.to_json()
        # The objects agree beyond the bytes: candidate order of weights (DNS ties) and flags.
        for name, svc in want.services.items():
            for geo, route in svc.geos.items():
                assert list(got.services[name].geos[geo].weights.items()) == list(route.weights.items())
        before, last = previous, got


@st.composite
def ramp_sequences(draw: st.DrawFn) -> tuple[Config, Observed, Overrides, list[tuple[dict[str, TargetHealth], float]]]:
    """Ramps held while health changes and their steps pass: the incremental planner's ramp paths."""
    config = draw(configs())
    observed = draw(observations(config))
    overrides = draw(override_sets(config, ramps=True, pins=False, forced=False))
    health = dict(observed.health)
    steps = []
    now = 0.0
    for _ in range(draw(st.integers(2, 8))):
        if draw(st.booleans()):
            health = _health_change(draw, config, health)
        now += draw(st.sampled_from([1.0, 15.0, 30.0]))
        steps.append((dict(health), now))
    return config, observed, overrides, steps


@SETTINGS
@given(ramp_sequences())
def test_plans_while_ramping_equal_full_plans(seq: tuple[Config, Observed, Overrides,
                                                         list[tuple[dict[str, TargetHealth], float]]]) -> None:
    config, observed, overrides, steps = seq
    replanner = Replanner()
    last = replanner.plan(config, observed, Overrides(), None, 0.0)
    last = replanner.plan(config, observed, Overrides(), last, 0.0)
    for health, now in steps:
        seen = Observed(health=health, demand=observed.demand)
        want = plan(config, seen, overrides, last, now)
        last = replanner.plan(config, seen, overrides, last, now)
        assert last.to_json() == want.to_json()


def test_a_ramp_reaches_a_geo_without_a_candidate_in_its_region() -> None:
    """Evacuating r1 sends gA to r0, which pushes gB (no candidate in r1) on to r2: gB's shares blend too."""
    from steering.config import parse_config
    from steering.model import Evacuation

    data = {
        "policy": {"watermark": 0.8, "min_serving_regions": 1, "max_shift": 0.25},
        "regions": [{"id": "r0", "capacity": 100}, {"id": "r1", "capacity": 1000}, {"id": "r2", "capacity": 1000}],
        "sites": [],
        "geos": [{"id": "gA", "demand": 1.0, "prefer": ["r1", "r0"], "default": True},
                 {"id": "gB", "demand": 1.0, "prefer": ["r0", "r2"]}],
        "services": [{"name": "www.example.test.", "targets": "regions",
                      "answers": {r: {"A": ["192.0.2.1"]} for r in ("r0", "r1", "r2")}}],
        "zones": [{"origin": "example.test."}],
    }
    config = parse_config(data)
    observed = Observed(health={r: TargetHealth(status="healthy") for r in ("r0", "r1", "r2")},
                        demand={"gA": 70.0, "gB": 60.0})
    replanner = Replanner()
    table = replanner.plan(config, observed, Overrides(), None, 0.0)
    table = replanner.plan(config, observed, Overrides(), table, 1.0)
    assert table.route("www.example.test.", "gB").weights == {"r0": 1000, "r2": 0}  # type: ignore[union-attr]
    ramp = Overrides(evacuations=(Evacuation(region="r1", mode="ramp", step=0.25, interval=30.0, started_at=10.0),))
    for now in (10.0, 40.0):
        want = plan(config, observed, ramp, table, now)
        table = replanner.plan(config, observed, ramp, table, now)
        assert replanner.last_incremental
        assert table.to_json() == want.to_json()
    route = table.route("www.example.test.", "gB")
    assert route is not None and route.weights["r2"] > 0


def test_a_site_change_during_a_ramp_can_bring_a_geo_into_it() -> None:
    """gB has no candidate in r1 and the ramp leaves it alone, until sB shrinks: then evacuating r1 (sA) sends
    gA to sB, which pushes gB on to r2. gB blends from then on, at every later step too."""
    from steering.config import parse_config
    from steering.model import Evacuation

    data = {
        "policy": {"watermark": 0.8, "min_serving_regions": 1, "max_shift": 0.25},
        "regions": [{"id": r, "capacity": 1000} for r in ("r1", "r2")],
        "sites": [{"id": "sA", "region": "r1", "capacity": 100}, {"id": "sB", "region": "r2", "capacity": 1000}],
        "geos": [{"id": "gA", "demand": 1.0, "prefer": ["r1"], "prefer_sites": ["sA", "sB"], "default": True},
                 {"id": "gB", "demand": 1.0, "prefer": ["r2"], "prefer_sites": ["sB"]}],
        "services": [{"name": "www.example.test.", "targets": "sites",
                      "answers": {t: {"A": ["192.0.2.1"]} for t in ("sA", "sB", "r2")}}],
        "zones": [{"origin": "example.test."}],
    }
    config = parse_config(data)
    health = {t: TargetHealth(status="healthy") for t in ("r1", "r2", "sA", "sB")}
    demand = {"gA": 70.0, "gB": 60.0}
    replanner = Replanner()
    table = replanner.plan(config, Observed(health=dict(health), demand=demand), Overrides(), None, 0.0)
    table = replanner.plan(config, Observed(health=dict(health), demand=demand), Overrides(), table, 1.0)
    ramp = Overrides(evacuations=(Evacuation(region="r1", mode="ramp", step=0.25, interval=30.0, started_at=10.0),))
    for now, sb in ((10.0, None), (20.0, 100.0), (40.0, None), (70.0, None)):
        if sb is not None:
            health["sB"] = TargetHealth(status="healthy", capacity=sb)
        observed = Observed(health=dict(health), demand=demand)
        want = plan(config, observed, ramp, table, now)
        table = replanner.plan(config, observed, ramp, table, now)
        assert replanner.last_incremental
        assert table.to_json() == want.to_json(), now
    route = table.route("www.example.test.", "gB")
    assert route is not None and route.weights["r2"] > 0


def test_one_site_change_is_planned_incrementally() -> None:
    """The common case reuses its parts: one site's health, the previous table the last result."""
    from steering.config import parse_config

    data = {
        "policy": {"watermark": 0.8, "min_serving_regions": 1, "max_shift": 0.25},
        "regions": [{"id": "r0", "capacity": 1000}, {"id": "r1", "capacity": 1000}],
        "sites": [{"id": f"s{i}", "region": f"r{i % 2}", "capacity": 100} for i in range(8)],
        "geos": [{"id": f"g{i}", "demand": 1.0, "prefer": ["r0", "r1"] if i % 2 == 0 else ["r1", "r0"],
                  "prefer_sites": [f"s{2 * i}", f"s{2 * i + 1}"], "default": i == 0} for i in range(4)],
        "services": [{"name": "www.example.test.", "targets": "sites",
                      "answers": {t: {"A": ["192.0.2.1"]} for t in ["r0", "r1", *[f"s{i}" for i in range(8)]]}}],
        "zones": [{"origin": "example.test."}],
    }
    config = parse_config(data)
    health = {t: TargetHealth(status="healthy", load=50.0) for t in ["r0", "r1", *[f"s{i}" for i in range(8)]]}
    replanner = Replanner()
    first = replanner.plan(config, Observed(health=dict(health)), Overrides(), None, 1.0)
    health["s3"] = TargetHealth(status="unhealthy", detail="http 503")
    observed = Observed(health=dict(health))
    second = replanner.plan(config, observed, Overrides(), first, 2.0)
    assert replanner.last_incremental
    assert second.to_json() == plan(config, observed, Overrides(), first, 2.0).to_json()
    route = second.route("www.example.test.", "g1")
    assert route is not None and route.weights["s3"] == 0 and route.reasons["s3"] == "unhealthy: http 503"


def _three_regions(max_shift: float) -> tuple[Config, dict[str, TargetHealth]]:
    """3 regions, 12 sites, 6 geos, a sites service and a regions service; every target healthy."""
    from steering.config import parse_config

    data = {
        "policy": {"watermark": 0.8, "min_serving_regions": 1, "max_shift": max_shift},
        "regions": [{"id": f"r{i}", "capacity": 1000} for i in range(3)],
        "sites": [{"id": f"s{i}", "region": f"r{i % 3}", "capacity": 100} for i in range(12)],
        "geos": [{"id": f"g{i}", "demand": 1.0 + i, "prefer": [f"r{i % 3}", f"r{(i + 1) % 3}"],
                  "prefer_sites": [f"s{i}", f"s{(i + 3) % 12}"], "default": i == 0} for i in range(6)],
        "services": [{"name": f"{kind}.example.test.", "targets": kind,
                      "answers": {t: {"A": ["192.0.2.1"]} for t in [f"r{i}" for i in range(3)]
                                  + ([f"s{i}" for i in range(12)] if kind == "sites" else [])}}
                     for kind in ("sites", "regions")],
        "zones": [{"origin": "example.test."}],
    }
    health = {t: TargetHealth(status="healthy", load=300.0) for t in [*[f"r{i}" for i in range(3)],
                                                                      *[f"s{i}" for i in range(12)]]}
    return parse_config(data), health


def test_a_ramp_is_planned_incrementally_from_start_to_end() -> None:
    """An evacuation ramp's start, its steps and the health changes meanwhile reuse the parts (the fillings are
    refilled, not redone), every table equal to a full plan; the ramp's end (the region out) plans in full."""
    from steering.model import Evacuation

    config, health = _three_regions(max_shift=0.25)
    replanner = Replanner()
    table = replanner.plan(config, Observed(health=dict(health)), Overrides(), None, 0.0)
    ramp = Overrides(evacuations=(Evacuation(region="r1", mode="ramp", step=0.25, interval=30.0, started_at=10.0),))
    steps = [(10.0, None), (20.0, ("s4", "unhealthy")), (40.0, None), (45.0, ("s4", "healthy")),
             (50.0, ("s1", "unhealthy")), (70.0, None), (100.0, None)]
    seen = []
    for now, change in steps:
        if change is not None:
            health[change[0]] = TargetHealth(status=change[1], load=300.0)  # type: ignore[arg-type]
        observed = Observed(health=dict(health))
        want = plan(config, observed, ramp, table, now)
        table = replanner.plan(config, observed, ramp, table, now)
        assert table.to_json() == want.to_json()
        seen.append((replanner.last_incremental, table.converging, table.regions["r1"].evacuation))
    # Steps 1-4 at 10, 40, 70 s (25 % each); the fourth takes the region out: a full plan.
    assert [incremental for incremental, _, _ in seen] == [True] * 6 + [False]
    assert seen[0][2] == "ramp 25%/30s (75% left)" and seen[2][2] == "ramp 25%/30s (50% left)"
    assert seen[-1][2].startswith("ramp 25%/30s") and "left" not in seen[-1][2]
    route = table.route("regions.example.test.", "g1")
    assert route is not None and route.weights["r1"] == 0


def test_ramps_that_end_join_or_go_are_replanned_incrementally() -> None:
    """A restore that completes, a second evacuation joining the first, one of them taken back: each plan
    reuses the parts and re-blends the geos the old and the new ramps reach, equal to a full plan (max_shift
    0.5: no ramp's step is larger, so the step limit stays and nothing forces a full plan)."""
    from steering.model import Evacuation, Restore

    config, health = _three_regions(max_shift=0.5)
    back = Restore(region="r2", step=0.5, interval=30.0, started_at=10.0)
    out1 = Evacuation(region="r1", mode="ramp", step=0.25, interval=30.0, started_at=50.0)
    out0 = Evacuation(region="r0", mode="ramp", step=0.25, interval=30.0, started_at=60.0)
    steps: list[tuple[float, Overrides, tuple[str, str] | None]] = [
        (1.0, Overrides(), None),
        (10.0, Overrides(restores=(back,)), None),  # r2 50 % back
        (25.0, Overrides(restores=(back,)), ("s2", "unhealthy")),
        (40.0, Overrides(restores=(back,)), None),  # r2 all back: the ramp is over
        (50.0, Overrides(evacuations=(out1,)), ("s2", "healthy")),
        (60.0, Overrides(evacuations=(out1, out0)), None),  # a second ramp joins
        (70.0, Overrides(evacuations=(out0,)), ("s4", "unhealthy")),  # the first taken back
        (75.0, Overrides(evacuations=(out0,)), None),
    ]
    replanner = Replanner()
    table = replanner.plan(config, Observed(health=dict(health)), Overrides(), None, 0.0)
    reused = []
    for now, overrides, change in steps:
        if change is not None:
            health[change[0]] = TargetHealth(status=change[1], load=300.0)  # type: ignore[arg-type]
        observed = Observed(health=dict(health))
        want = plan(config, observed, overrides, table, now)
        table = replanner.plan(config, observed, overrides, table, now)
        assert table.to_json() == want.to_json(), now
        reused.append(replanner.last_incremental)
    assert reused == [True] * len(steps)
    assert table.regions["r2"].evacuation == "" and "left" in table.regions["r0"].evacuation


@st.composite
def fills(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, float], dict[str, float], float,
                                    list[dict[str, float]]]:
    targets = [f"t{i}" for i in range(draw(st.integers(1, 7)))]
    cands = {f"g{i}": draw(st.lists(st.sampled_from(targets), unique=True, min_size=1, max_size=5))
             for i in range(draw(st.integers(1, 6)))}
    demand = {g: draw(st.sampled_from([0.0, 10.0, 100.0]) | st.floats(0, 1000)) for g in cands}
    cap = st.sampled_from([0.0, 10.0, 50.0, 1000.0]) | st.floats(0, 500)
    capacity = {t: draw(cap) for t in targets}
    steps = []
    current = dict(capacity)
    for _ in range(draw(st.integers(1, 6))):
        current = dict(current)
        for t in draw(st.lists(st.sampled_from(targets), min_size=1, max_size=3)):
            current[t] = draw(cap)
        steps.append(current)
    return cands, demand, capacity, draw(st.sampled_from([0.5, 0.8, 1.0])), steps


def _same(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(fills())
def test_refill_equals_waterfill(case: tuple[dict[str, list[str]], dict[str, float], dict[str, float], float,
                                             list[dict[str, float]]]) -> None:
    cands, demand, capacity, watermark, steps = case
    log = fill(cands, demand, capacity, watermark)
    want = waterfill(cands, demand, capacity, watermark)
    assert _same(log.fill.alloc, want.alloc) and _same(log.fill.overflow, want.overflow)
    previous = capacity
    for step in steps:
        changed = {t for t in step if step[t] != previous[t]}
        before = log.fill
        log, geos = refill(log, step, changed)
        want = waterfill(cands, demand, step, watermark)
        assert _same(log.fill.alloc, want.alloc) and _same(log.fill.overflow, want.overflow)
        # Every geo whose allocation changed is among those it names.
        for g in cands:
            if not _same(before.alloc.get(g), want.alloc.get(g)) or before.overflow.get(g) != want.overflow.get(g):
                assert g in geos
        previous = step


def test_an_equal_new_record_of_a_region_does_not_force_a_full_plan() -> None:
    """The leader's merge makes a new TargetHealth per plan for a target without a record: equal is unchanged."""
    from steering.config import parse_config

    data = {
        "policy": {"watermark": 0.8, "min_serving_regions": 1},
        "regions": [{"id": "r0", "capacity": 1000}, {"id": "r1", "capacity": 1000}],
        "sites": [{"id": "s0", "region": "r0", "capacity": 100}],
        "geos": [{"id": "g0", "demand": 1.0, "prefer": ["r0", "r1"], "prefer_sites": ["s0"], "default": True}],
        "services": [{"name": "www.example.test.", "targets": "sites",
                      "answers": {t: {"A": ["192.0.2.1"]} for t in ["r0", "r1", "s0"]}}],
        "zones": [{"origin": "example.test."}],
    }
    config = parse_config(data)
    replanner = Replanner()
    first = replanner.plan(config, Observed(health={"r0": TargetHealth(status="silent", detail="x")}), Overrides(),
                           None, 1.0)
    observed = Observed(health={"r0": TargetHealth(status="silent", detail="x"),
                                "s0": TargetHealth(status="unhealthy")})
    second = replanner.plan(config, observed, Overrides(), first, 2.0)
    assert replanner.last_incremental
    assert second.to_json() == plan(config, observed, Overrides(), first, 2.0).to_json()
