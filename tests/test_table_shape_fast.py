"""The one-pass shape checks a decoded table's states and routes go through first (``table._state_fine``,
``table._route_fine``) accept nothing that the named checks behind them (``_state_problem``,
``_service_problem``) would refuse: where a fast check says fine, the named one finds no problem, so a table's
verdict and its error message are what they were. Over random states and routes, valid and not."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from steering.table import RoutingTable, _route_fine, _service_problem, _state_fine, _state_problem

_VALUES = st.one_of(st.text(max_size=3), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.none(), st.sampled_from([math.nan, math.inf, [], {}, [1], {"a": 1}, 2**70]))
_STATE_KEYS = ("kind", "region", "health", "serving", "capacity", "load", "planned_load", "utilization",
               "evacuation", "reason", "extra")
_GOOD_STATE: dict[str, Any] = {"kind": "site", "region": "eu", "health": "healthy", "serving": True,
                               "capacity": 100.0, "load": 5, "planned_load": math.inf, "utilization": None,
                               "evacuation": "", "reason": "home"}


@st.composite
def states(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(_VALUES)
    out = dict(_GOOD_STATE) if draw(st.booleans()) else {}
    for key in draw(st.lists(st.sampled_from(_STATE_KEYS), max_size=6)):
        if draw(st.integers(0, 4)) == 0:
            out.pop(key, None)
        else:
            out[key] = draw(_VALUES)
    return out


@st.composite
def routes(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(_VALUES)
    route: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        route["weights"] = draw(st.dictionaries(st.text(max_size=2), st.integers(0, 1000) | _VALUES, max_size=3))
    if draw(st.booleans()):
        route["reasons"] = draw(st.dictionaries(st.text(max_size=2), st.text(max_size=2) | _VALUES, max_size=3))
    for key in ("fail_open", "pinned"):
        if draw(st.booleans()):
            route[key] = draw(st.booleans() | _VALUES)
    return route


@settings(max_examples=2000, deadline=None)
@given(states())
@example(_GOOD_STATE)
def test_a_state_the_fast_check_accepts_has_no_problem(state: Any) -> None:
    if _state_fine(state):
        assert _state_problem(state, "sites.x.") == ""


@settings(max_examples=2000, deadline=None)
@given(routes())
@example({"weights": {"a": 1000}, "reasons": {"a": "home"}, "fail_open": False})
def test_a_route_the_fast_check_accepts_has_no_problem(route: Any) -> None:
    if _route_fine(route):
        assert _service_problem({"geos": {"g": route}}, "services.s.") == ""


def test_the_everyday_shapes_take_the_fast_path() -> None:
    # else the fast checks would be right only by refusing everything
    assert _state_fine(_GOOD_STATE)
    assert _route_fine({"weights": {"a": 600, "b": 400}, "reasons": {"a": "home", "b": "spillover"}})
    assert not _state_fine({**_GOOD_STATE, "capacity": "100"})
    assert not _route_fine({"weights": {"a": 1000.0}})


def test_a_bad_table_is_named_as_before() -> None:
    good = {"version": 3, "services": {"s": {"geos": {"g": {"weights": {"a": 1000}}}}},
            "sites": {"x": dict(_GOOD_STATE)}}
    assert RoutingTable.from_json(json.dumps(good)).version == 3
    bad_state = {**good, "sites": {"x": {**_GOOD_STATE, "serving": "yes"}}}
    bad_route = {**good, "services": {"s": {"geos": {"g": {"weights": {"a": "1000"}}}}}}
    for doc, says in ((bad_state, "sites.x.serving: 'yes' is not true or false"),
                      (bad_route, "services.s.geos.g.weights.a: '1000' is not an integer")):
        try:
            RoutingTable.from_json(json.dumps(doc))
        except ValueError as exc:
            assert says in str(exc)
        else:
            raise AssertionError("a malformed table was accepted")
