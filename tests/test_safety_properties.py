"""Hypothesis properties of the operator's safety rules and previews (steering/controller/safety.py): pure.

What an accepted action may do is re-derived from the previewed tables,
not from the rules' own bookkeeping.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from steering.config import Config
from steering.controller import safety
from steering.model import Evacuation, Overrides, Pin, TargetHealth
from tests.support.strategies import configs, live_health, override_sets

Case = tuple[Any, ...]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RULES = {"min_serving_regions", "hard_limit", "conflicting_evacuation", "cannot_serve", "no_answers",
         "not_a_candidate"}


@st.composite
def evacuation_cases(draw: st.DrawFn) -> tuple[Config, dict[str, TargetHealth], Overrides, Evacuation, float]:
    config = draw(configs())
    health = draw(live_health(config))
    overrides = draw(override_sets(config))
    now = draw(st.sampled_from([0.0, 45.0, 100.0, 200.0]))
    region = draw(st.sampled_from([r.id for r in config.regions]))
    evac = Evacuation(region=region, mode=draw(st.sampled_from(["now", "ramp"])), step=0.25, interval=30.0,
                      started_at=now + 1, reason="test")
    return config, health, overrides, evac, now


def _preview(config: Config, health: dict[str, TargetHealth], overrides: Overrides, evac: Evacuation,
             now: float) -> safety.Preview:
    # As the operator previews it: forced, so the planner's own min_serving guard does not hide the effect.
    return safety.preview(config, health, overrides,
                          safety.with_evacuation(overrides, dataclasses.replace(evac, forced=True)), now)


def _serving(table: object) -> set[str]:
    return {r for r, st_ in table.regions.items() if st_.serving}  # type: ignore[attr-defined]


@SETTINGS
@given(evacuation_cases())
def test_an_accepted_evacuation_never_leaves_fewer_than_the_minimum_serving(case: Case) -> None:
    config, health, overrides, evac, now = case
    p = _preview(config, health, overrides, evac, now)
    refusals = safety.evacuation_refusals(config, health, overrides, evac, p, now)
    assume(not refusals)
    before, after = _serving(p.before), _serving(p.after)
    minimum = config.policy.min_serving_regions
    # Either enough regions still serve, or the action took nothing away (the region was not serving).
    assert len(after) >= minimum or after >= before, (before, after, minimum)
    if evac.region in before:
        assert len(after) >= minimum


@SETTINGS
@given(evacuation_cases())
def test_the_preview_takes_the_region_out_and_every_refusal_names_a_rule(case: Case) -> None:
    config, health, overrides, evac, now = case
    p = _preview(config, health, overrides, evac, now)
    out = {evac.region} | {s.id for s in config.sites if s.region == evac.region}
    for name, svc in p.after.services.items():
        for geo, route in svc.geos.items():
            if not route.fail_open:
                assert all(route.weights.get(t, 0) == 0 for t in out), (name, geo, route.weights)
    for r in safety.evacuation_refusals(config, health, overrides, evac, p, now):
        assert r.rule in RULES and str(r).startswith(f"{r.rule}: ") and r.message
    # The min_serving rule refuses exactly when the region serves and too few would remain.
    serving = safety.serving_regions(config, health, overrides)
    refused = safety.check_min_serving(config, health, overrides, evac.region) is not None
    assert refused == (evac.region in serving and len(serving) - 1 < config.policy.min_serving_regions)


@SETTINGS
@given(evacuation_cases())
def test_previews_are_deterministic(case: Case) -> None:
    config, health, overrides, evac, now = case
    a, b = _preview(config, health, overrides, evac, now), _preview(config, health, overrides, evac, now)
    assert a.changes == b.changes and a.regions == b.regions and a.fail_open_after == b.fail_open_after
    assert a.before.to_json() == b.before.to_json() and a.after.to_json() == b.after.to_json()
    # A no-op previews as no change at all.
    same = safety.preview(config, health, overrides, overrides, now)
    assert same.changes == () and all(r.planned_load_before == r.planned_load_after for r in same.regions)


@st.composite
def pin_cases(draw: st.DrawFn) -> tuple[Config, dict[str, TargetHealth], Overrides, Pin]:
    config = draw(configs())
    health = draw(live_health(config))
    overrides = draw(override_sets(config, ramps=False, pins=False))
    svc = draw(st.sampled_from(config.services))
    geo = draw(st.sampled_from(config.geos))
    targets = sorted({r.id for r in config.regions} | {s.id for s in config.sites})
    chosen = draw(st.lists(st.sampled_from(targets), unique=True, min_size=1, max_size=3))
    weights = {t: draw(st.integers(0, 1000)) for t in chosen}
    weights[chosen[0]] += 1
    return config, health, overrides, Pin(service=svc.name, geo=geo.id, weights=weights, reason="test")


@SETTINGS
@given(pin_cases())
def test_an_accepted_pin_sends_traffic_only_to_pinned_targets_that_can_serve(case: Case) -> None:
    config, health, overrides, pin = case
    ignored = safety.check_pin_targets(config, pin.service, pin.geo, pin.weights)
    cands = safety.pin_candidates(config, pin.service, pin.geo)
    assert (ignored is None) == all(t in cands for t in pin.weights)
    if ignored is not None:
        assert ignored.rule in ("no_answers", "not_a_candidate") and "--force cannot override" in ignored.message
        return
    after = dataclasses.replace(overrides, pins=(pin,))
    p = safety.preview(config, health, overrides, after, 0.0)
    refusals = safety.pin_refusals(config, health, overrides, pin.service, pin.geo, pin.weights, p)
    for r in refusals:
        assert r.rule in RULES and str(r).startswith(f"{r.rule}: ")
    dead = {t for t, w in pin.weights.items() if w > 0 and safety.cannot_serve(config, health, overrides, t)}
    assert any(r.rule == "cannot_serve" for r in refusals) == bool(dead)
    assume(not refusals)
    route = p.after.route(pin.service, pin.geo)
    assert route is not None and route.pinned
    assert {t for t, w in route.weights.items() if w} <= {t for t, w in pin.weights.items() if w}
    # And nothing that receives more traffic is planned beyond the hard limit.
    for r in p.regions:
        if r.planned_load_after > r.planned_load_before + safety.EPS and r.capacity > 0:
            assert r.planned_load_after <= r.hard_limit * r.capacity + safety.EPS
