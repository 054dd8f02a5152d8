"""Water-filling: preference order, watermark, spillover, shortfall by capacity, making way."""

from __future__ import annotations

import pytest

from steering.waterfill import waterfill


def test_fills_in_preference_order_up_to_the_watermark() -> None:
    fill = waterfill({"g": ["a", "b", "c"]}, {"g": 120.0}, {"a": 100.0, "b": 100.0, "c": 100.0}, 0.8)
    assert fill.alloc["g"] == pytest.approx({"a": 80.0, "b": 40.0})
    assert fill.overflow == {}


def test_unusable_targets_are_skipped() -> None:
    fill = waterfill({"g": ["a", "b"]}, {"g": 50.0}, {"a": 0.0, "b": 100.0}, 0.8)
    assert fill.alloc["g"] == pytest.approx({"b": 50.0})


def test_shortfall_is_spread_by_capacity_not_piled_on_one() -> None:
    fill = waterfill({"g": ["a", "b"]}, {"g": 300.0}, {"a": 100.0, "b": 200.0}, 0.5)
    # 150 fits below the watermarks (50 + 100); the other 150 goes 1:2.
    assert fill.alloc["g"] == pytest.approx({"a": 100.0, "b": 200.0})
    assert fill.overflow == pytest.approx({"g": 150.0})


def test_first_choices_before_second_choices() -> None:
    # g1 prefers a then b, g2 prefers b: g1 must not take b's room before g2 gets its first choice.
    fill = waterfill({"g1": ["a", "b"], "g2": ["b"]}, {"g1": 150.0, "g2": 100.0}, {"a": 100.0, "b": 100.0}, 1.0)
    assert fill.alloc["g2"] == pytest.approx({"b": 100.0})
    assert fill.overflow == pytest.approx({"g1": 50.0})
    # g1's excess then goes over both of its targets by capacity.
    assert fill.alloc["g1"] == pytest.approx({"a": 125.0, "b": 25.0})


def test_a_geo_with_nowhere_else_takes_the_room_of_one_that_can_move() -> None:
    # Both ask a first; only g2 can go to b. Found by test_no_target_above_watermark_while_an_alternative_has_room.
    fill = waterfill({"g1": ["a"], "g2": ["a", "b"]}, {"g1": 100.0, "g2": 50.0}, {"a": 100.0, "b": 100.0}, 1.0)
    assert fill.alloc["g1"] == pytest.approx({"a": 100.0})
    assert fill.alloc["g2"].get("a", 0.0) == pytest.approx(0.0)
    assert fill.alloc["g2"]["b"] == pytest.approx(50.0)
    assert fill.overflow == {}


def test_zero_and_vanishing_demand_still_get_an_answer() -> None:
    fill = waterfill({"g0": ["a", "b"], "g1": ["a", "b"]}, {"g0": 0.0, "g1": 1e-80},
                     {"a": 0.0, "b": 10.0}, 0.8)
    assert set(fill.alloc["g0"]) == {"b"} and set(fill.alloc["g1"]) == {"b"}


def test_nothing_usable_leaves_the_geo_empty_for_the_caller_to_fail_open() -> None:
    fill = waterfill({"g": ["a"]}, {"g": 10.0}, {"a": 0.0}, 0.8)
    assert fill.alloc["g"] == {} and fill.overflow == {}
