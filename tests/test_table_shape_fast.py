"""A decoded table's per-state and per-route shape checks (``table._state_problem``, ``table._service_problem``),
written in line for speed, against the field-by-field form they replace (kept here as the reference): over
random states and routes, valid and not, the same verdict and the same message, so a bad table is refused with
the words it was refused with before."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from steering.table import (
    _STATE_NUMBERS,
    _STATE_TEXTS,
    RoutingTable,
    _is_int,
    _is_number,
    _optional,
    _service_problem,
    _short,
    _state_problem,
)

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


def _reference_state_problem(state: Any, where: str) -> str:
    if not isinstance(state, dict):
        return f"{where[:-1]}: not an object"
    for key in (*_STATE_TEXTS, "serving", *_STATE_NUMBERS):
        if key not in state:
            return f"{where}{key}: missing"
    for key in _STATE_TEXTS:
        if problem := _optional(state, key, lambda v: isinstance(v, str), "a string", where):
            return problem
    if problem := _optional(state, "serving", lambda v: isinstance(v, bool), "true or false", where):
        return problem
    for key in _STATE_NUMBERS:
        if problem := _optional(state, key, _is_number, "a number", where):
            return problem
    if problem := _optional(state, "utilization", lambda v: v is None or _is_number(v), "a number or null", where):
        return problem
    for key in ("evacuation", "reason"):
        if problem := _optional(state, key, lambda v: isinstance(v, str), "a string", where):
            return problem
    return ""


def _reference_route_problem(route: Any, at: str) -> str:
    if not isinstance(route, dict):
        return f"{at[:-1]}: not an object"
    weights = route.get("weights")
    if not isinstance(weights, dict):
        return f"{at}weights: missing or not an object"
    for target, w in weights.items():
        if not _is_int(w):
            return f"{at}weights.{target}: {_short(w)} is not an integer"
    reasons = route.get("reasons", {})
    if not isinstance(reasons, dict) or not all(isinstance(r, str) for r in reasons.values()):
        return f"{at}reasons: not an object of strings"
    for key in ("fail_open", "pinned"):
        if problem := _optional(route, key, lambda v: isinstance(v, bool), "true or false", at):
            return problem
    return ""


@settings(max_examples=2000, deadline=None)
@given(states())
@example(_GOOD_STATE)
@example({**_GOOD_STATE, "serving": 1})
def test_a_state_is_judged_and_named_as_before(state: Any) -> None:
    problem = _state_problem(state)
    assert (f"sites.x{problem}" if problem else "") == _reference_state_problem(state, "sites.x.")


@settings(max_examples=2000, deadline=None)
@given(routes())
@example({"weights": {"a": 1000}, "reasons": {"a": "home"}, "fail_open": False})
@example({"weights": {"a": True}})
def test_a_route_is_judged_and_named_as_before(route: Any) -> None:
    got = _service_problem({"geos": {"g": route}}, "services.s.")
    assert got == _reference_route_problem(route, "services.s.geos.g.")


def test_the_random_shapes_reach_both_verdicts() -> None:
    # else the properties above could pass by seeing only broken (or only good) input
    assert _state_problem(_GOOD_STATE) == ""
    assert _service_problem({"geos": {"g": {"weights": {"a": 600, "b": 400}, "reasons": {"a": "home"}}}}, "s.") == ""
    assert _state_problem({**_GOOD_STATE, "capacity": "100"}) == ".capacity: '100' is not a number"
    assert _service_problem({"geos": {"g": {"weights": {"a": 1000.0}}}}, "s.") == "s.geos.g.weights.a: 1000.0 is not an integer"


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
