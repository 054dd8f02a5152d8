"""Integer weights: apportion (largest remainder), distance, and the bounded step toward a goal."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from steering.weights import apportion, distance, move_toward

KEYS = [f"t{i}" for i in range(8)]


def test_apportion_examples() -> None:
    assert apportion({"a": 1, "b": 1, "c": 1}, 1000, ["a", "b", "c"]) == {"a": 334, "b": 333, "c": 333}
    assert apportion({"a": 0, "b": 0}, 1000, ["a", "b"]) == {"a": 1000, "b": 0}  # all zero: first key
    assert apportion({"b": 2.0, "x": 5.0}, 10, ["a", "b"]) == {"a": 0, "b": 10}  # keys outside order ignored
    assert apportion({"a": -3.0, "b": 1.0}, 10, ["a", "b"]) == {"a": 0, "b": 10}  # negatives count as 0


@settings(max_examples=400, deadline=None)
@given(st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=8), st.integers(0, 5000))
def test_apportion_sums_to_total_and_stays_within_one_of_exact(shares: list[float], total: int) -> None:
    order = KEYS[: len(shares)]
    out = apportion(dict(zip(order, shares, strict=True)), total, order)
    assert list(out) == order and sum(out.values()) == total and all(v >= 0 for v in out.values())
    s = sum(shares)
    if s > 0:
        for t, x in zip(order, shares, strict=True):
            assert abs(out[t] - x * total / s) < 1 + 1e-6


weight_vectors = st.lists(st.integers(0, 50), min_size=1, max_size=8).map(
    lambda xs: apportion({KEYS[i]: float(x) for i, x in enumerate(xs)}, 1000, KEYS[: len(xs)]))


@settings(max_examples=400, deadline=None)
@given(st.data(), st.integers(1, 1000))
def test_move_toward_moves_at_most_limit_and_only_toward_goal(data: st.DataObject, limit: int) -> None:
    n = data.draw(st.integers(1, 8))
    order = KEYS[:n]
    pick = st.lists(st.integers(0, 50), min_size=n, max_size=n)
    start = apportion({t: float(x) for t, x in zip(order, data.draw(pick), strict=True)}, 1000, order)
    goal = apportion({t: float(x) for t, x in zip(order, data.draw(pick), strict=True)}, 1000, order)
    out = move_toward(start, goal, limit, order)
    assert sum(out.values()) == 1000 and all(v >= 0 for v in out.values())
    assert distance(start, out) <= limit
    assert distance(out, goal) == max(0, distance(start, goal) - limit)
    for t in order:  # never overshoots: each weight lies between its start and its goal
        assert min(start[t], goal[t]) <= out[t] <= max(start[t], goal[t])
    if distance(start, goal) <= limit:
        assert out == goal


def test_distance_is_half_l1() -> None:
    assert distance({"a": 1000, "b": 0}, {"a": 750, "b": 250}) == 250
    assert distance({"a": 500}, {"b": 500}) == 500


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), st.integers(0, 1000)), st.dictionaries(st.sampled_from(KEYS),
                                                                                     st.integers(0, 1000)),
       st.booleans())
def test_distance_is_half_the_l1_distance_over_every_key(a: dict[str, int], b: dict[str, int], same: bool) -> None:
    if same:  # the planner's case: both over the same keys (in another order, too)
        b = {k: b.get(k, 0) for k in reversed(list(a))}
    keys = set(a) | set(b)
    assert distance(a, b) == sum(abs(a.get(k, 0) - b.get(k, 0)) for k in keys) // 2 == distance(b, a)
