"""The planner's fast paths against the general code they stand in for.

``planner._relabel`` (the incremental planner's rewrite of a route whose ramp labels alone moved) against
``planner._reasons`` (what a full plan writes): over random candidates, weights, capacities, health, an
evacuated region, a shortfall, a route still ramping and the labels before and after. ``planner._step`` (a
geo's step toward its goal, over lists) against ``planner._step_keyed`` (the same over dicts, which it was)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from steering.model import Status, TargetHealth
from steering.planner import _reasons, _Regions, _relabel, _step, _step_keyed
from steering.table import GeoRoute
from steering.waterfill import Fill
from steering.weights import TOTAL_WEIGHT, apportion

REGIONS = ["r0", "r1", "r2", "r3"]
SITE_REGION = {"s0": "r0", "s1": "r0", "s2": "r1", "s3": "r2", "s4": "r3", "s5": "r1"}
TARGETS = REGIONS + list(SITE_REGION)
LABELS = ["evacuating: ramp 25%/30s, 75% left", "evacuating: ramp 25%/30s, 50% left", "restoring: 25% back"]
STATUSES: list[Status] = ["healthy", "unknown", "unhealthy", "silent"]

labels = st.dictionaries(st.sampled_from(REGIONS), st.sampled_from(LABELS), max_size=4)


@st.composite
def routes(draw: st.DrawFn) -> tuple[list[str], dict[str, int], dict[str, float], dict[str, TargetHealth], _Regions]:
    order = draw(st.lists(st.sampled_from(TARGETS), min_size=1, max_size=8, unique=True))
    weights = {t: draw(st.sampled_from([0, 0, 1, 250, 999])) for t in order}
    capacity = {t: draw(st.sampled_from([0.0, 1.0, 400.0])) for t in order}
    health = {t: TargetHealth(status=draw(st.sampled_from(STATUSES)), detail=draw(st.sampled_from(["", "http 503"])))
              for t in draw(st.lists(st.sampled_from(TARGETS), unique=True))}
    out = draw(st.sampled_from([None, *REGIONS]))
    regions = _Regions(blocked={}, evacuated={out: f"evacuated (now {out})"} if out else {}, ramps=(),
                       labels={}, progress={})
    return order, weights, capacity, health, regions


@settings(max_examples=600, deadline=None)
@given(routes(), labels, labels, st.booleans(), st.booleans())
def test_relabel_writes_what_a_full_plan_writes(route: tuple[list[str], dict[str, int], dict[str, float],
                                                             dict[str, TargetHealth], _Regions],
                                                was: dict[str, str], now: dict[str, str], short: bool,
                                                ramped: bool) -> None:
    order, weights, capacity, health, regions = route
    fill = Fill(alloc={}, overflow={"g": 1.0} if short else {})

    def reasons(rr: dict[str, str]) -> dict[str, str]:
        return _reasons(order, weights, capacity, fill, "g", health, SITE_REGION, regions, rr, ramped, None)

    before = GeoRoute(weights, reasons(was))
    by_region: dict[str, list[str]] = {}
    for t in order:
        by_region.setdefault(SITE_REGION.get(t, t), []).append(t)
    out = _relabel(by_region, before, capacity, was, now, short, ramped)
    gone = any(was.get(SITE_REGION.get(t, t)) is not None and now.get(SITE_REGION.get(t, t)) is None
               for t in order)
    assert (out is None) == gone  # it gives up only where a label went away
    if out is not None:
        assert dict(out) == reasons(now)
        assert list(out) == list(order)


@st.composite
def steps(draw: st.DrawFn) -> tuple[dict[str, int], GeoRoute, list[str], dict[str, float], int, int]:
    order = draw(st.lists(st.sampled_from(TARGETS), min_size=1, max_size=7, unique=True))
    shares = st.lists(st.sampled_from([0, 0, 1, 3, 50]), min_size=len(order), max_size=len(order))
    goal = apportion({t: float(x) for t, x in zip(order, draw(shares), strict=True)}, TOTAL_WEIGHT, order)
    # The previous route may hold targets that are no longer candidates, and weights that do not sum up.
    held = draw(st.lists(st.sampled_from(TARGETS), min_size=1, max_size=7, unique=True))
    prev = apportion({t: float(draw(st.sampled_from([0, 1, 5, 50]))) for t in held}, TOTAL_WEIGHT, held)
    if draw(st.booleans()):
        prev = {t: w for t, w in prev.items() if t in order}
    capacity = {t: draw(st.sampled_from([0.0, 0.0, 1.0, 400.0])) for t in order}
    limit = draw(st.sampled_from([1, 10, 250, 500, 1000]))
    hysteresis = draw(st.sampled_from([0, 5, 20, 300]))
    return goal, GeoRoute(prev, {}), order, capacity, limit, hysteresis


@settings(max_examples=800, deadline=None)
@given(steps())
def test_step_over_lists_equals_step_over_dicts(args: tuple[dict[str, int], GeoRoute, list[str], dict[str, float],
                                                            int, int]) -> None:
    goal, prev, order, capacity, limit, hysteresis = args
    weights, ramping = _step(goal, prev, order, capacity, limit, hysteresis)
    want, want_ramping = _step_keyed(goal, prev, order, capacity, limit, hysteresis)
    assert weights == want and list(weights) == list(want) and ramping == want_ramping
