"""Golden tables: the planner's output bytes for a fixed set of inputs must not drift.

Each case in ``tests/data/planner_golden.json`` is a chain of plans (inputs
stored in the file) and the sha256 of every table's canonical JSON, recorded
from the planner as it was before its speed work. Optimising the planner must
keep every digest: a change here is a change of semantics, not of speed.

The cases: the example configuration in many states (failures, shortfall,
evacuations now and ramped over several steps, restores, pins, min-serving
refusals, hysteresis noise, fail-open); random configurations drawn from the
Hypothesis strategies of ``tests/support/strategies.py``; and the benchmark's
synthetic topology (3 and 20 regions, shared and distinct fleets).

Below them, properties check the planner's fast paths against the plain
arithmetic they replace: ``apportion`` against the original dict-based
rounding (``_apportion_keyed``), and the planner's direct TargetState
construction against the dataclass constructor.

Regenerate (only when a semantic change is intended, and say so in the commit):

    .venv/bin/python -m tests.test_planner_golden --regenerate

(that redraws the random cases' inputs too). When only the table's ``topology`` fingerprint moved (a
config field added to it, issue 13), the example digests were replaced in place after checking that
every table equals the old one but for ``topology``; the frozen ``tests/data/golden_example.yaml``
keeps later example edits from moving them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import steering.refill
import steering.waterfill
import steering.weights
from steering.config import TOTAL_WEIGHT, Config, load_config, parse_config
from steering.fillrounds import rounds_py
from steering.model import Evacuation, Observed, Overrides, Pin, Restore, TargetHealth
from steering.planner import _state, plan
from steering.table import RoutingTable, TargetState
from steering.weights import _apportion_keyed, apportion, apportion_values
from tests.support import EXAMPLE_CONFIG, ROOT

FIXTURE = Path(__file__).parent / "data" / "planner_golden.json"
GOLDEN_EXAMPLE = Path(__file__).parent / "data" / "golden_example.yaml"  # the example as the digests saw it


# ---- (de)serialising the inputs ------------------------------------------------------------------


def _observed_to(o: Observed) -> dict[str, Any]:
    return {"health": {t: h.to_dict() for t, h in o.health.items()},
            "demand": None if o.demand is None else dict(o.demand)}


def _observed_from(d: dict[str, Any]) -> Observed:
    return Observed(health={t: TargetHealth.from_dict(h) for t, h in d["health"].items()}, demand=d["demand"])


def _overrides_to(o: Overrides) -> dict[str, Any]:
    return {"evacuations": [e.to_dict() for e in o.evacuations], "restores": [r.to_dict() for r in o.restores],
            "pins": [p.to_dict() for p in o.pins]}


def _overrides_from(d: dict[str, Any]) -> Overrides:
    return Overrides(evacuations=tuple(Evacuation.from_dict(e) for e in d["evacuations"]),
                     restores=tuple(Restore.from_dict(r) for r in d["restores"]),
                     pins=tuple(Pin.from_dict(p) for p in d["pins"]))


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("_bench_planner", ROOT / "bench" / "planner.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _config(ref: Any) -> tuple[Config, Observed | None]:
    """A case's config: the example, an inline dump, or the benchmark topology (with its observations)."""
    if ref == "example":
        return load_config(GOLDEN_EXAMPLE), None
    if isinstance(ref, dict) and "bench" in ref:
        data, observed = _bench_module().build(ref["bench"]["regions"], distinct=ref["bench"]["distinct"])
        return parse_config(data, "<bench>"), observed
    return parse_config(ref, "<golden>"), None


def _last_choice(table: RoutingTable) -> dict[str, Any]:
    """A previous table with every geo entirely on its last candidate (a far start for ramping)."""
    return {"version": 7, "services": {
        n: {"targets": s.targets, "geos": {g: {"weights": {t: (TOTAL_WEIGHT if i == len(r.weights) - 1 else 0)
                                                            for i, t in enumerate(r.weights)}}
                                            for g, r in s.geos.items()}}
        for n, s in table.services.items()}}


def run_case(case: dict[str, Any]) -> list[str]:
    """Plan a case's steps in order; returns the sha256 of each table's canonical JSON."""
    config, bench_observed = _config(case["config"])
    tables: list[RoutingTable] = []
    for step in case["steps"]:
        observed = bench_observed if step["observed"] == "bench" else _observed_from(step["observed"])
        assert observed is not None
        prev_ref = step.get("previous")
        previous: RoutingTable | None
        if prev_ref is None:
            previous = None
        elif isinstance(prev_ref, int):
            previous = tables[prev_ref]  # in memory, as a running controller hands it over
        elif prev_ref[0] == "json":
            previous = RoutingTable.from_json(tables[prev_ref[1]].to_json())
        else:  # ["last_choice", i]
            previous = RoutingTable.from_dict(_last_choice(tables[prev_ref[1]]))
        tables.append(plan(config, observed, _overrides_from(step["overrides"]), previous, step["now"],
                           leader=step.get("leader", "")))
    return [hashlib.sha256(t.to_json()).hexdigest() for t in tables]


# ---- the test -------------------------------------------------------------------------------------


def _cases() -> list[dict[str, Any]]:
    if not FIXTURE.exists() and __name__ == "__main__":
        return []  # being regenerated
    return json.loads(FIXTURE.read_text())["cases"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_planner_output_bytes_match_the_golden_digests(case: dict[str, Any]) -> None:
    assert run_case(case) == case["digests"], f"{case['name']}: planner output drifted from the golden tables"


@pytest.mark.parametrize("case", [c for c in _cases() if not c["name"].startswith("bench-")
                                  or c["name"] == "bench-20-distinct"], ids=lambda c: c["name"])
def test_the_python_rounds_plan_the_same_bytes(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Built without a C compiler, the planner runs the water-filling's rounds and the apportionment of weights
    in Python: the same digests."""
    monkeypatch.setattr(steering.waterfill, "rounds", rounds_py)
    monkeypatch.setattr(steering.refill, "rounds", rounds_py)
    monkeypatch.setattr(steering.weights, "_c_apportion", None)
    assert run_case(case) == case["digests"], f"{case['name']}: the Python rounds planned otherwise"


def test_a_copied_config_does_not_reuse_the_planners_derived_topology() -> None:
    config = load_config(EXAMPLE_CONFIG)
    observed = _example_observed()
    plan(config, observed, Overrides(), None, 0.0)  # fills the per-config cache
    swapped = config.model_copy(update={"services": tuple(reversed(config.services))})
    fresh = parse_config({**swapped.model_dump(mode="json"), "zones": [{"origin": "example.test."}]})
    assert (plan(swapped, observed, Overrides(), None, 0.0).to_dict()["services"]
            == plan(fresh, observed, Overrides(), None, 0.0).to_dict()["services"])


# ---- the fast paths against the plain arithmetic they replace --------------------------------------

_NAMES = st.sampled_from(list("abcdefgh"))
_SHARES = st.one_of(st.floats(-5, 1e6, allow_nan=False), st.integers(-3, 50),
                    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1.0, 3.0]))


@settings(max_examples=500, deadline=None)
@given(st.lists(_NAMES, max_size=8), st.dictionaries(_NAMES, _SHARES), st.integers(0, 2000))
def test_apportion_fast_paths_match_the_keyed_reference(order: list[str], shares: dict[str, float],
                                                        total: int) -> None:
    # _apportion_keyed is the original, dict-based largest-remainder rounding.
    got = apportion(shares, total, order)
    assert list(got.items()) == list(_apportion_keyed(shares, total, order).items())
    assert list(apportion_values([shares.get(t, 0.0) for t in order], total, order).items()) == list(got.items())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["region", "site"]), st.sampled_from(["healthy", "unknown", "unhealthy", "silent"]),
       st.none() | st.floats(0, 1e5), st.none() | st.floats(0, 1e5), st.floats(1, 1e5), st.floats(0, 1e5),
       st.floats(0, 1e5) | st.just(0.0), st.sampled_from(["", "now"]))
def test_fast_target_state_equals_the_dataclass_one(kind: str, status: str, capacity: float | None,
                                                    load: float | None, config_capacity: float, usable: float,
                                                    planned: float, evacuation: str) -> None:
    h = TargetHealth(status=status, capacity=capacity, load=load, detail="probe failed")  # type: ignore[arg-type]
    got = _state(kind, "r1", h, config_capacity, usable, planned, evacuation)
    cap = config_capacity if capacity is None else capacity
    want = TargetState(kind=kind, region="r1", health=status, serving=usable > 0, capacity=cap, load=load or 0.0,
                       planned_load=round(planned, 3), utilization=None if cap <= 0 else round(planned / cap, 4),
                       evacuation=evacuation, reason="probe failed" if status in ("unhealthy", "silent") else "")
    assert got == want and hash(got) == hash(want) and got.to_dict() == want.to_dict()
    assert json.dumps(got.to_dict()) == json.dumps(want.to_dict())


# ---- generating the fixture -----------------------------------------------------------------------

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
SITES = ("oc-nyc-1", "oc-lon-1")
DEMAND = {"na-east": 6000.0, "na-west": 3500.0, "europe": 5200.0, "south-america": 1500.0,
          "asia-pacific": 1800.0, "world": 700.0}


def _example_observed(down: tuple[str, ...] = (), status: str = "unhealthy", demand: dict[str, float] | None = None,
                      scale: float = 1.0, **capacity: float) -> Observed:
    health = {}
    for t in (*REGIONS, *SITES):
        cap = capacity.get(t.replace("-", "_"))
        health[t] = TargetHealth(status=status if t in down else "healthy", capacity=cap, detail="probe failed",
                                 load=1000.0 * scale)
    d = None if demand == {} else {g: v * scale for g, v in (DEMAND if demand is None else demand).items()}
    return Observed(health=health, demand=d)


_NO_OVERRIDES = Overrides()


def _step(observed: Observed | str, overrides: Overrides = _NO_OVERRIDES, now: float = 0.0,
          previous: Any = None) -> dict[str, Any]:
    return {"observed": observed if isinstance(observed, str) else _observed_to(observed),
            "overrides": _overrides_to(overrides), "now": now, "previous": previous}


def _example_cases() -> list[dict[str, Any]]:
    ok = _example_observed()
    ramp_eu = Overrides(evacuations=(Evacuation(region="eu-west-1", mode="ramp", step=0.25, interval=30,
                                                started_at=0.0, reason="maintenance"),))
    now_eu = Overrides(evacuations=(Evacuation(region="eu-west-1", mode="now", reason="drill"),))
    restore_eu = Overrides(restores=(Restore(region="eu-west-1", step=0.25, interval=30, started_at=200.0),))
    two = Overrides(evacuations=(Evacuation(region="eu-west-1", started_at=1.0),
                                 Evacuation(region="us-west-2", started_at=2.0)))
    forced = Overrides(evacuations=(Evacuation(region="eu-west-1", started_at=1.0),
                                    Evacuation(region="us-west-2", started_at=2.0, forced=True)))
    pins = Overrides(pins=(Pin(service="api.example.test.", geo="europe", weights={"us-east-1": 3, "eu-west-1": 1},
                               reason="test"),
                           Pin(service="video.example.test.", geo="na-east", weights={"oc-nyc-1": 1, "nowhere": 2}),
                           Pin(service="api.example.test.", geo="na-west", weights={"eu-west-1": 1})))
    cases: list[dict[str, Any]] = []

    def case(name: str, *steps: dict[str, Any]) -> None:
        cases.append({"name": f"example-{name}", "config": "example", "steps": list(steps)})

    case("healthy", _step(ok), _step(ok, now=5.0, previous=0), _step(ok, now=10.0, previous=["json", 1]))
    case("shares-demand", _step(_example_observed(demand={})))
    case("one-down", _step(ok), _step(_example_observed(down=("eu-west-1",)), now=5.0, previous=0),
         _step(_example_observed(down=("eu-west-1",), status="silent"), now=10.0, previous=1))
    case("two-down", _step(_example_observed(down=("eu-west-1", "us-west-2"))))
    case("sites-down", _step(_example_observed(down=("oc-nyc-1", "us-east-1"))),
         _step(_example_observed(down=("oc-lon-1",)), now=5.0, previous=0))
    case("all-down", _step(_example_observed(down=(*REGIONS, *SITES))),
         _step(ok, now=5.0, previous=0),
         _step(_example_observed(down=(*REGIONS, *SITES)), now=10.0, previous=1))
    case("shortfall", _step(_example_observed(us_east_1=3000.0, us_west_2=2000.0, eu_west_1=1500.0, oc_nyc_1=0.0)),
         _step(_example_observed(scale=2.0), now=5.0, previous=0))
    case("zero-demand", _step(_example_observed(demand={g: 0.0 for g in DEMAND})))
    case("evacuate-now", _step(ok), _step(ok, now_eu, 5.0, previous=0), _step(ok, now_eu, 10.0, previous=1))
    case("evacuate-ramp", _step(ok), *[_step(ok, ramp_eu, 30.0 * i, previous=i) for i in range(5)])
    case("restore-ramp", _step(ok, now_eu), *[_step(ok, restore_eu, 200.0 + 30.0 * i, previous=i) for i in range(6)])
    case("min-serving", _step(ok, two), _step(ok, forced, 5.0, previous=0),
         _step(_example_observed(down=("us-east-1",)), two, 10.0, previous=1))
    case("pins", _step(ok, pins), _step(_example_observed(down=("us-east-1", "oc-nyc-1")), pins, 5.0, previous=0),
         _step(ok, now=10.0, previous=1))
    case("hysteresis", _step(ok), _step(_example_observed(scale=1.01), now=5.0, previous=0),
         _step(_example_observed(scale=1.3), now=10.0, previous=1),
         _step(_example_observed(scale=0.7), now=15.0, previous=2))
    case("converge", _step(ok), *[_step(ok, now=5.0 * (i + 1), previous=["last_choice", 0] if i == 0 else i)
                                  for i in range(6)])
    case("ramp-and-down", _step(ok, ramp_eu), _step(_example_observed(down=("us-west-2",)), ramp_eu, 30.0, previous=0),
         _step(_example_observed(down=("us-west-2",)), ramp_eu, 60.0, previous=1))
    return cases


def _hypothesis_cases(count: int) -> list[dict[str, Any]]:
    from hypothesis import HealthCheck, Phase

    from tests.support.strategies import Scenario, observations, scenarios

    drawn: list[tuple[Scenario, Observed, float]] = []

    # Hypothesis mutates one example into the next; draw many and keep those with distinct configs.
    @settings(max_examples=count * 10, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(scenarios(), st.data())
    def collect(s: Scenario, data: st.DataObject) -> None:
        drawn.append((s, data.draw(observations(s.config)), data.draw(st.sampled_from([5.0, 30.0]))))

    collect()
    seen: set[str] = set()
    distinct = []
    for s, later, dt in drawn:
        key = json.dumps(s.config.model_dump(mode="json"), sort_keys=True)
        if key not in seen:
            seen.add(key)
            distinct.append((s, later, dt))
    cases = []
    for i, (s, later, dt) in enumerate(distinct[:count]):
        first = _step(s.observed, s.overrides, s.now)
        cases.append({"name": f"random-{i:02d}", "config": s.config.model_dump(mode="json"), "steps": [
            first,
            _step(later, s.overrides, s.now + dt, previous=0),
            _step(later, s.overrides, s.now + 2 * dt, previous=1),
            _step(s.observed, s.overrides, s.now, previous=["last_choice", 0]),
        ]})
    return cases


def _bench_cases() -> list[dict[str, Any]]:
    cases = []
    for regions, distinct in ((3, False), (3, True), (20, True)):
        ramps = Overrides(evacuations=(Evacuation(region=f"region-{regions - 1:02d}", mode="ramp", step=0.25,
                                                  interval=30, started_at=0),),
                          restores=(Restore(region="region-00", step=0.25, interval=30, started_at=0),))
        cases.append({"name": f"bench-{regions}{'-distinct' if distinct else ''}",
                      "config": {"bench": {"regions": regions, "distinct": distinct}},
                      "steps": [_step("bench"), _step("bench", ramps, 30.0, previous=0)]})
    return cases


def regenerate() -> None:
    cases = _example_cases() + _hypothesis_cases(40) + _bench_cases()
    for c in cases:
        c["digests"] = run_case(c)
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps({"cases": cases}, sort_keys=True, indent=1) + "\n")
    print(f"wrote {len(cases)} cases, {sum(len(c['digests']) for c in cases)} tables to {FIXTURE}")


if __name__ == "__main__" and "--regenerate" in sys.argv:
    regenerate()
