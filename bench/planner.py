"""Planner benchmark: 10,000 cache sites, 250 geos, 20 services, and 3, 10 or 20 regions.

    .venv/bin/python bench/planner.py [--regions 3,10,20] [--runs 7]

The configuration is built programmatically and goes through ``parse_config``
(the same validation a file gets). Per region count it prints the time to
validate the config, the median CPU time of a first plan (no previous table), of
a second plan that starts from the first and ramps an evacuation and a
restore, and the peak memory that tracemalloc saw during one plan. Goal:
under 100 ms per plan at 20 regions. The cyclic garbage collector runs as in
the controller daemon (``steering.controller.gcpolicy``: what start-up built
frozen, young collections every 50,000 allocations); ``--collector default``
keeps CPython's thresholds (a few ms more per plan here, within this
machine's noise: a full collection that walks the config lands in some).

``--distinct`` is the worst case: every service answers for a different target
set, so no two services share a water-filling. Each line also gives the
incremental re-plan (``steering.replan.Replanner``, what the leader runs):
the median CPU time of a plan after one site's health changed, the previous
table being the last plan (goal: under 10 ms), checked byte for byte
against ``planner.plan``. ``--profile`` adds a cProfile of
one plan; for a sampling profile without cProfile's overhead, run the bench
under ``.venv/bin/py-spy record -f raw -o out.txt -- .venv/bin/python bench/planner.py ...``.
Any change to the planner must keep tests/test_planner_golden.py passing: it
pins the output bytes.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from steering.config import Config, parse_config
from steering.controller import gcpolicy
from steering.model import Evacuation, Observed, Overrides, Restore, Status, TargetHealth
from steering.planner import plan
from steering.replan import Replanner
from steering.table import RoutingTable

SITES = 10_000
GEOS = 250
SERVICES = 20
SITES_PER_GEO = 8


def build(regions: int, seed: int = 1, distinct: bool = False) -> tuple[dict[str, Any], Observed]:
    rng = random.Random(seed)
    region_ids = [f"region-{i:02d}" for i in range(regions)]
    site_ids = [f"site-{i:05d}" for i in range(SITES)]
    site_region = {s: region_ids[i % regions] for i, s in enumerate(site_ids)}
    geos: list[dict[str, Any]] = []
    for g in range(GEOS):
        home = g % regions
        # Home first, then the others in a geo-specific order (as if by distance).
        rest = [r for i, r in enumerate(region_ids) if i != home]
        rng.shuffle(rest)
        prefer = [region_ids[home], *rest[: min(len(rest), 4)]]
        local = [s for s in site_ids[g::GEOS] if site_region[s] == region_ids[home]] or site_ids[g::GEOS]
        geos.append({"id": f"geo-{g:03d}", "demand": rng.uniform(0.5, 2.0), "prefer": prefer,
                     "prefer_sites": local[:SITES_PER_GEO], "default": g == 0,
                     "prefixes": [f"10.{g // 256}.{g % 256}.0/24"]})
    services = []
    for i in range(SERVICES):
        kind = "sites" if i % 2 else "regions"
        # --distinct: every service leaves out a different region (and site slice), so no
        # two services share a fleet and the planner cannot reuse one's result for another.
        skip = region_ids[i % regions] if distinct and regions > 1 else None
        answers: dict[str, Any] = {r: {"A": [f"192.0.2.{j + 1}"]} for j, r in enumerate(region_ids) if r != skip}
        if kind == "sites":
            answers.update({s: {"A": [f"198.18.{j // 250}.{j % 250 + 1}"]} for j, s in enumerate(site_ids)
                            if not (distinct and j % SERVICES == i)})
        services.append({"name": f"svc{i:02d}.example.test.", "targets": kind, "answers": answers})
    data = {
        "policy": {"watermark": 0.8, "min_serving_regions": min(2, regions), "max_shift": 0.25},
        "regions": [{"id": r, "capacity": 50_000} for r in region_ids],
        "sites": [{"id": s, "region": site_region[s], "capacity": 400} for s in site_ids],
        "geos": geos,
        "services": services,
        "zones": [{"origin": "example.test."}],
    }
    health: dict[str, TargetHealth] = {}
    for r in region_ids:
        health[r] = TargetHealth(status="healthy", capacity=50_000, load=rng.uniform(20_000, 40_000))
    for k, s in enumerate(site_ids):
        status: Status = "unhealthy" if k % 97 == 0 else "healthy"
        health[s] = TargetHealth(status=status, capacity=400, load=rng.uniform(0, 300))
    total = regions * 50_000 * 0.7  # busy enough that some geos spill
    demand = {g["id"]: total * g["demand"] / sum(x["demand"] for x in geos) for g in geos}
    return data, Observed(health=health, demand=demand)


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(runs):
        gc.collect()
        # CPU time of this (single-threaded) process: on a shared machine wall
        # time mostly measures the neighbours.
        t0 = time.process_time()
        result = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), result


def peak_bytes(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench(regions: int, runs: int, distinct: bool, collector: str = "controller") -> None:
    data, observed = build(regions, distinct=distinct)
    t0 = time.perf_counter()
    config: Config = parse_config(data, "<bench>")
    validate = time.perf_counter() - t0
    if collector == "controller":
        # as `steering controller` once started: what start-up built frozen, young collections every 50,000
        # allocations; with CPython's defaults a full collection walking the config lands inside some plans
        gcpolicy.settle_after_start()
    victim, back = config.regions[-1].id, config.regions[0].id
    ramps = Overrides(evacuations=(Evacuation(region=victim, mode="ramp", step=0.25, interval=30, started_at=0),),
                      restores=(Restore(region=back, step=0.25, interval=30, started_at=0),))

    first_t, first = timed(lambda: plan(config, observed, Overrides(), None, 0.0), runs)
    second_t, second = timed(lambda: plan(config, observed, ramps, first, 30.0), runs)
    json_t, blob = timed(second.to_json, runs)
    mem1 = peak_bytes(lambda: plan(config, observed, Overrides(), None, 0.0))
    mem2 = peak_bytes(lambda: plan(config, observed, ramps, first, 30.0))
    assert isinstance(second, RoutingTable) and second.parent_version == first.version
    replan_t = incremental(config, observed, runs)
    start_t, start_least, step_t, site_t = leader_ramps(config, observed, ramps, runs)
    print(f"{'distinct ' if distinct else ''}regions={regions:>2} sites={len(config.sites)} geos={len(config.geos)} services={len(config.services)}: "
          f"validate {validate * 1e3:7.0f} ms | plan {first_t * 1e3:6.1f} ms (peak {mem1 / 2**20:5.1f} MiB) | "
          f"plan+previous+ramps {second_t * 1e3:6.1f} ms (peak {mem2 / 2**20:5.1f} MiB) | "
          f"to_json {json_t * 1e3:5.1f} ms, {len(blob) / 2**20:.2f} MiB | "
          f"re-plan after one site's change {replan_t * 1e3:5.2f} ms | "
          f"leader's ramps: start {start_t * 1e3:5.1f} ms (least {start_least * 1e3:.1f}), "
          f"step {step_t * 1e3:5.1f} ms, "
          f"one site's change while ramping {site_t * 1e3:5.2f} ms", flush=True)


def leader_ramps(config: Config, observed: Observed, ramps: Overrides, runs: int
                 ) -> tuple[float, float, float, float]:
    """What the leader's ``Replanner`` spends on the same ramps (median CPU time of each, checked byte for byte
    against ``planner.plan`` in the first run; and the least of the starts, steadier than the median on a
    shared machine): the plan that starts them, following its own plan without
    them (the plan before it in the steady state: planned from a table of the same inputs); the plan of their
    next step (30 s on); and a plan after one site's health flipped between steps."""
    starts, steps, sites = [], [], []
    site = config.sites[len(config.sites) // 2].id
    for i in range(max(runs, 3)):
        replanner = Replanner()
        first = replanner.plan(config, observed, Overrides(), None, 0.0)
        # The leader's steady state: a table planned from one that had the same inputs (no route moving).
        first = replanner.plan(config, observed, Overrides(), first, 1.0)
        gc.collect()
        t0 = time.process_time()
        started = replanner.plan(config, observed, ramps, first, 30.0)
        starts.append(time.process_time() - t0)
        reused = replanner.last_incremental
        gc.collect()
        t0 = time.process_time()
        stepped = replanner.plan(config, observed, ramps, started, 60.0)
        steps.append(time.process_time() - t0)
        reused = reused and replanner.last_incremental
        health = dict(observed.health)
        h = health[site]
        health[site] = TargetHealth(status="unhealthy" if h.status == "healthy" else "healthy", capacity=h.capacity,
                                    load=h.load)
        flipped = Observed(health=health, demand=observed.demand)
        gc.collect()
        t0 = time.process_time()
        last = replanner.plan(config, flipped, ramps, stepped, 75.0)
        sites.append(time.process_time() - t0)
        if not (reused and replanner.last_incremental):
            raise SystemExit("the leader's ramp plans were not incremental")
        if i == 0:
            for table, want in ((started, plan(config, observed, ramps, first, 30.0)),
                                (stepped, plan(config, observed, ramps, started, 60.0)),
                                (last, plan(config, flipped, ramps, stepped, 75.0))):
                if table.to_json() != want.to_json():
                    raise SystemExit("the leader's ramp plan differs from a full plan")
    return statistics.median(starts), min(starts), statistics.median(steps), statistics.median(sites)


def incremental(config: Config, observed: Observed, runs: int) -> float:
    """Median CPU time of a Replanner's plan after one site's health flips (unhealthy <-> healthy), each
    planned from the last; the result is checked against a full plan (outside the timing)."""
    replanner = Replanner()
    health = dict(observed.health)
    previous = replanner.plan(config, Observed(health=dict(health), demand=observed.demand), Overrides(), None, 0.0)
    rng = random.Random(7)
    sites = [s.id for s in config.sites]
    times = []
    for i in range(max(runs, 5) * 3):
        site = rng.choice(sites)
        h = health[site]
        health[site] = TargetHealth(status="healthy" if h.status == "unhealthy" else "unhealthy",
                                    capacity=h.capacity, load=h.load)
        now_observed = Observed(health=dict(health), demand=observed.demand)
        gc.collect()
        t0 = time.process_time()
        table = replanner.plan(config, now_observed, Overrides(), previous, float(i + 1))
        times.append(time.process_time() - t0)
        if not replanner.last_incremental:
            raise SystemExit("the re-plan was not incremental")
        if i == 0 and table.to_json() != plan(config, now_observed, Overrides(), previous, float(i + 1)).to_json():
            raise SystemExit("the incremental plan differs from a full plan")
        previous = table
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", default="3,10,20", help="comma-separated region counts")
    parser.add_argument("--runs", type=int, default=7, help="plans per measurement; the median is printed")
    parser.add_argument("--distinct", action="store_true",
                        help="make every service answer for a different target set (the worst case)")
    parser.add_argument("--profile", action="store_true", help="cProfile one plan+previous at the last count")
    parser.add_argument("--collector", choices=("controller", "default"), default="controller",
                        help="the cyclic garbage collector as the controller daemon runs it (steering.controller."
                             "gcpolicy, the default) or with CPython's own thresholds")
    args = parser.parse_args()
    counts = [int(x) for x in args.regions.split(",")]
    print("collector: " + ("as `steering controller` runs it (start-up frozen, young collections every "
                           f"{gcpolicy.YOUNG_THRESHOLD:,} allocations)" if args.collector == "controller"
                           else "CPython's default thresholds"))
    for n in counts:
        bench(n, args.runs, args.distinct, args.collector)
    if args.profile:
        import cProfile
        import pstats

        data, observed = build(counts[-1], distinct=args.distinct)
        config = parse_config(data)
        first = plan(config, observed, Overrides(), None, 0.0)
        prof = cProfile.Profile()
        prof.enable()
        plan(config, observed, Overrides(evacuations=(Evacuation(region=config.regions[-1].id, mode="ramp",
                                                                  step=0.25),)), first, 30.0)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
