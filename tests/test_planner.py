"""The planner on the example configuration: failures, evacuations, restores, hysteresis, pins, min-serving."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from typing import Any

import pytest

from steering.config import TOTAL_WEIGHT, Config, load_config, parse_config
from steering.model import Evacuation, Observed, Overrides, Pin, Restore, TargetHealth
from steering.planner import plan
from steering.table import RoutingTable
from tests.support import EXAMPLE_CONFIG

API = "api.example.test."
VIDEO = "video.example.test."
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
# Requests/s per geo, as in deploy/examples/state.yaml: ~18.7k in all against 26k of region capacity.
DEMAND = {"na-east": 6000.0, "na-west": 3500.0, "europe": 5200.0, "south-america": 1500.0,
          "asia-pacific": 1800.0, "world": 700.0}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLE_CONFIG)


def observed(down: tuple[str, ...] = (), demand: dict[str, float] | None = None, status: str = "unhealthy",
             **capacity: float) -> Observed:
    health = {}
    for t in (*REGIONS, "oc-nyc-1", "oc-lon-1"):
        cap = capacity.get(t.replace("-", "_"))
        health[t] = TargetHealth(status=status if t in down else "healthy", capacity=cap, detail="probe failed")
    return Observed(health=health, demand=dict(DEMAND if demand is None else demand))


def weights(table: RoutingTable, geo: str, service: str = API) -> dict[str, int]:
    route = table.route(service, geo)
    assert route is not None
    return dict(route.weights)


def region_total(table: RoutingTable, region: str, service: str = API) -> int:
    return sum(r.weights.get(region, 0) for r in table.services[service].geos.values())


def check_table(table: RoutingTable) -> None:
    for svc in table.services.values():
        for route in svc.geos.values():
            assert sum(route.weights.values()) == TOTAL_WEIGHT
            assert all(isinstance(w, int) and w >= 0 for w in route.weights.values())


def test_healthy_example_serves_each_geo_from_home(config: Config) -> None:
    table = plan(config, observed(), Overrides(), None, 0.0)
    check_table(table)
    assert not table.fail_open and not table.notes and not table.converging
    assert weights(table, "europe") == {"eu-west-1": 1000, "us-east-1": 0, "us-west-2": 0}
    assert weights(table, "na-west")["us-west-2"] == 1000
    # na-east + south-america + world = 8200 > 0.8 × 10000: us-east-1 fills to its watermark, the rest spills.
    assert table.regions["us-east-1"].planned_load == pytest.approx(8000, abs=10)
    assert 0 < weights(table, "na-east")["us-west-2"] < 100
    assert "spillover from us-east-1" in table.route(API, "na-east").reasons["us-west-2"]
    assert table.route(API, "europe").reasons["eu-west-1"] == "home"


def test_one_region_down_moves_its_geos_to_their_next_choice(config: Config) -> None:
    table = plan(config, observed(down=("eu-west-1",)), Overrides(), None, 0.0)
    check_table(table)
    assert region_total(table, "eu-west-1") == 0
    assert weights(table, "europe")["eu-west-1"] == 0
    assert weights(table, "europe")["us-east-1"] > 0
    assert table.route(API, "europe").reasons["eu-west-1"].startswith("unhealthy")
    assert "failover: eu-west-1 unavailable" in table.route(API, "europe").reasons["us-east-1"]
    assert not table.regions["eu-west-1"].serving and not table.fail_open


def test_two_of_three_down_sends_everything_to_the_survivor(config: Config) -> None:
    table = plan(config, observed(down=("eu-west-1", "us-east-1")), Overrides(), None, 0.0)
    check_table(table)
    for geo in DEMAND:
        assert weights(table, geo)["us-west-2"] == 1000, geo
    # 18.7k on 8k of capacity: overloaded, but there is nowhere else to go.
    assert table.regions["us-west-2"].utilization > 2
    assert not table.fail_open


def test_all_down_fails_open_loudly_and_keeps_previous_weights(config: Config) -> None:
    before = plan(config, observed(), Overrides(), None, 0.0)
    everything = ("eu-west-1", "us-east-1", "us-west-2", "oc-nyc-1", "oc-lon-1")
    fresh = plan(config, observed(down=everything), Overrides(), None, 0.0)
    assert fresh.fail_open
    assert any(n.startswith(f"FAIL-OPEN {API} europe") for n in fresh.notes)
    # Without a previous table: every target, by configured capacity (10k/8k/8k).
    assert weights(fresh, "europe") == {"eu-west-1": 308, "us-east-1": 384, "us-west-2": 308}
    assert fresh.route(API, "europe").fail_open
    # With one: the previous weights stand, unchanged.
    kept = plan(config, observed(down=everything), Overrides(), before, 5.0)
    assert kept.fail_open and kept.parent_version == before.version
    for svc in (API, VIDEO):
        for geo in DEMAND:
            assert weights(kept, geo, svc) == weights(before, geo, svc)
            assert kept.route(svc, geo).fail_open
            assert "fail-open" in kept.route(svc, geo).reasons[next(iter(weights(kept, geo, svc)))]
    # When health returns, traffic goes back at once (leaving fail-open is not rate limited).
    back = plan(config, observed(), Overrides(), kept, 10.0)
    assert not back.fail_open
    assert weights(back, "europe") == weights(before, "europe")


def test_capacity_shortfall_is_spread_by_capacity(config: Config) -> None:
    demand = {g: 0.0 for g in DEMAND} | {"world": 40_000.0}  # world prefers us-east-1, eu-west-1, us-west-2
    table = plan(config, observed(demand=demand), Overrides(), None, 0.0)
    w = weights(table, "world")
    # 26k of capacity, 20.8k below the watermarks; the 19.2k excess goes 10:8:8 on top of the full regions.
    assert w["us-east-1"] > w["eu-west-1"] > 0 and w["us-west-2"] > 0
    for region in REGIONS:
        assert table.regions[region].utilization == pytest.approx(40_000 / 26_000, rel=0.01)
    assert "capacity short" in table.route(API, "world").reasons["us-west-2"]


def test_evacuation_now_empties_the_region_in_one_step(config: Config) -> None:
    before = plan(config, observed(), Overrides(), None, 0.0)
    evac = Overrides(evacuations=(Evacuation(region="eu-west-1", mode="now", started_at=10.0, reason="maint"),))
    after = plan(config, observed(), evac, before, 10.0)
    assert region_total(after, "eu-west-1") == 0
    assert region_total(after, "oc-lon-1", VIDEO) == 0  # its cache site goes with it
    assert weights(after, "europe")["us-east-1"] > 0
    assert after.route(API, "europe").reasons["eu-west-1"].startswith("evacuated")
    assert not after.regions["eu-west-1"].serving and after.regions["eu-west-1"].evacuation == "now"


def test_ramped_evacuation_drains_monotonically_over_steps(config: Config) -> None:
    evac = Overrides(evacuations=(Evacuation(region="eu-west-1", mode="ramp", step=0.25, interval=30.0,
                                             started_at=0.0),))
    table = plan(config, observed(), Overrides(), None, -1.0)
    shares = [weights(table, "europe")["eu-west-1"]]
    assert shares[0] == 1000
    for now in (0.0, 30.0, 60.0, 90.0, 120.0):
        table = plan(config, observed(), evac, table, now)
        check_table(table)
        shares.append(weights(table, "europe")["eu-west-1"])
    # 1000 → 750 → 500 → 250 → 0: a quarter per interval, 0 after 1/step intervals, never back up.
    assert shares == [1000, 750, 500, 250, 0, 0]
    assert all(a >= b for a, b in itertools.pairwise(shares))
    assert not table.converging and table.regions["eu-west-1"].evacuation.startswith("ramp")


def test_restore_ramps_back_over_steps(config: Config) -> None:
    evac = Overrides(evacuations=(Evacuation(region="eu-west-1", mode="now"),))
    table = plan(config, observed(), evac, None, 0.0)
    assert weights(table, "europe")["eu-west-1"] == 0
    restore = Overrides(restores=(Restore(region="eu-west-1", step=0.25, interval=30.0, started_at=100.0),))
    shares = []
    for now in (100.0, 130.0, 160.0, 190.0, 220.0):
        table = plan(config, observed(), restore, table, now)
        check_table(table)
        shares.append(weights(table, "europe")["eu-west-1"])
    assert shares == [250, 500, 750, 1000, 1000]
    assert "restoring" in plan(config, observed(), restore, None, 100.0).regions["eu-west-1"].evacuation


def test_health_recovery_ramps_back_at_max_shift(config: Config) -> None:
    table = plan(config, observed(down=("eu-west-1",)), Overrides(), None, 0.0)
    assert weights(table, "europe")["eu-west-1"] == 0
    shares = []
    for step in range(6):
        table = plan(config, observed(), Overrides(), table, 5.0 * (step + 1))
        shares.append(weights(table, "europe")["eu-west-1"])
    assert shares == [250, 500, 750, 1000, 1000, 1000]  # max_shift 0.25 per step
    assert not table.converging


def test_losing_health_is_immediate_despite_max_shift(config: Config) -> None:
    before = plan(config, observed(), Overrides(), None, 0.0)
    after = plan(config, observed(down=("eu-west-1",)), Overrides(), before, 5.0)
    assert weights(after, "europe")["eu-west-1"] == 0
    assert weights(after, "europe")["us-east-1"] + weights(after, "europe")["us-west-2"] == 1000


def test_hysteresis_ignores_noise_but_not_real_change(config: Config) -> None:
    base = plan(config, observed(), Overrides(), None, 0.0)
    noisy = {g: d * 1.01 for g, d in DEMAND.items()}  # 1 % more demand moves na-east's spill by a few units
    fresh = plan(config, observed(demand=noisy), Overrides(), None, 0.0)
    assert weights(fresh, "na-east") != weights(base, "na-east")  # the noise is visible without a previous table
    same = plan(config, observed(demand=noisy), Overrides(), base, 5.0)
    assert not same.converging
    for geo in DEMAND:
        assert weights(same, geo) == weights(base, geo)
    busy = {g: d * 1.5 for g, d in DEMAND.items()}
    moved = plan(config, observed(demand=busy), Overrides(), base, 5.0)
    assert weights(moved, "na-east")["us-west-2"] > weights(base, "na-east")["us-west-2"] + 20


def test_min_serving_blocks_an_unforced_evacuation_and_applies_a_forced_one(config: Config) -> None:
    down = observed(down=("us-west-2",))
    evac = Evacuation(region="eu-west-1", mode="now", reason="maint")
    table = plan(config, down, Overrides(evacuations=(evac,)), None, 0.0)
    assert any(n.startswith("EVACUATION BLOCKED eu-west-1: min_serving_regions=2") for n in table.notes)
    assert table.regions["eu-west-1"].evacuation == "blocked" and table.regions["eu-west-1"].serving
    assert weights(table, "europe")["eu-west-1"] > 0
    forced = Evacuation(region="eu-west-1", mode="now", reason="maint", forced=True)
    table = plan(config, down, Overrides(evacuations=(forced,)), None, 0.0)
    assert not any("BLOCKED" in n for n in table.notes)
    assert region_total(table, "eu-west-1") == 0 and table.regions["eu-west-1"].evacuation == "now forced"
    # With all three healthy, one evacuation leaves two: allowed; the second is refused.
    second = Evacuation(region="us-west-2", mode="now", started_at=1.0)
    table = plan(config, observed(), Overrides(evacuations=(evac, second)), None, 2.0)
    assert region_total(table, "eu-west-1") == 0
    assert any(n.startswith("EVACUATION BLOCKED us-west-2") for n in table.notes)


def test_site_service_falls_back_to_region_answers(config: Config) -> None:
    table = plan(config, observed(), Overrides(), None, 0.0)
    # Europe's 5.2k fills its cache site to the watermark (2.4k) and spills to its own region.
    assert weights(table, "europe", VIDEO)["oc-lon-1"] == 462
    assert table.route(VIDEO, "europe").reasons["eu-west-1"] == "spillover from oc-lon-1"
    table = plan(config, observed(down=("oc-lon-1", "oc-nyc-1")), Overrides(), None, 0.0)
    w = weights(table, "europe", VIDEO)
    assert w["oc-lon-1"] == 0 and w["eu-west-1"] == 1000
    assert weights(table, "na-east", VIDEO)["us-east-1"] > 0 and weights(table, "na-east", VIDEO)["oc-nyc-1"] == 0
    assert not table.fail_open
    # Asia-pacific has no preferred site: region answers only.
    assert set(weights(table, "asia-pacific", VIDEO)) == set(REGIONS)


def test_pins_are_honoured_and_dropped_for_targets_that_cannot_serve(config: Config) -> None:
    pin = Pin(service=API, geo="europe", weights={"us-east-1": 3, "eu-west-1": 1}, reason="testing")
    table = plan(config, observed(), Overrides(pins=(pin,)), None, 0.0)
    route = table.route(API, "europe")
    assert route.pinned and dict(route.weights) == {"eu-west-1": 250, "us-east-1": 750, "us-west-2": 0}
    assert route.reasons["us-east-1"] == "pinned: testing"
    table = plan(config, observed(down=("us-east-1",)), Overrides(pins=(pin,)), None, 0.0)
    route = table.route(API, "europe")
    assert route.pinned and route.weights["eu-west-1"] == 1000 and route.weights["us-east-1"] == 0
    assert route.reasons["us-east-1"] == "pinned, but cannot serve"
    # A pin on targets that all cannot serve is ignored: the planner's own answer stands.
    only = Pin(service=API, geo="europe", weights={"us-east-1": 1})
    table = plan(config, observed(down=("us-east-1",)), Overrides(pins=(only,)), None, 0.0)
    assert not table.route(API, "europe").pinned
    assert table.route(API, "europe").weights["eu-west-1"] == 1000


def test_tiny_max_shift_still_moves(config: Config) -> None:
    data = config.model_dump(mode="json") | {"policy": config.policy.model_dump() | {"max_shift": 0.0004}}
    slow = parse_config(data, base_dir=config.base_dir)
    table = plan(slow, observed(down=("eu-west-1",)), Overrides(), None, 0.0)
    table = plan(slow, observed(), Overrides(), table, 5.0)
    assert weights(table, "europe")["eu-west-1"] == 1 and table.converging


def test_identical_bytes_across_processes_with_different_hash_seeds() -> None:
    code = (
        "import sys\n"
        "from steering.config import load_config\n"
        "from steering.model import Evacuation, Observed, Overrides, TargetHealth\n"
        "from steering.planner import plan\n"
        f"c = load_config({str(EXAMPLE_CONFIG)!r})\n"
        "o = Observed(health={'eu-west-1': TargetHealth('unhealthy'), 'us-east-1': TargetHealth('healthy', load=9e3)})\n"
        "ev = Overrides(evacuations=(Evacuation('us-west-2', mode='ramp', step=0.25),))\n"
        "t = plan(c, o, Overrides(), None, 0.0)\n"
        "sys.stdout.buffer.write(plan(c, o, ev, t, 31.0).to_json())\n"
    )
    outs = set()
    for seed in ("1", "2", "3"):
        env = os.environ | {"PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60, check=True)
        outs.add(proc.stdout)
    assert len(outs) == 1


def test_large_demand_keeps_weights_valid(config: Config) -> None:
    demand: dict[str, Any] = {g: 1e12 for g in DEMAND}
    table = plan(config, observed(demand=demand), Overrides(), None, 0.0)
    check_table(table)
