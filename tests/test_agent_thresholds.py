"""Rise/fall: the status flips only after a full streak of contrary results."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.thresholds import State, Thresholds, run


def test_fall_after_consecutive_failures() -> None:
    th = Thresholds(rise=2, fall=3)
    states = run([False, False, False], th, State(healthy=True))
    assert [s.healthy for s in states] == [True, True, False]


def test_rise_after_consecutive_successes() -> None:
    th = Thresholds(rise=2, fall=3)
    states = run([True, True], th, State(healthy=False))
    assert [s.healthy for s in states] == [False, True]


def test_flapping_never_changes_status() -> None:
    th = Thresholds(rise=2, fall=2)
    states = run([False, True] * 20, th, State(healthy=True))
    assert all(s.healthy for s in states)
    states = run([True, False] * 20, th, State(healthy=False))
    assert not any(s.healthy for s in states)


def test_a_contrary_result_resets_the_streak() -> None:
    th = Thresholds(rise=1, fall=3)
    states = run([False, False, True, False, False, False], th, State(healthy=True))
    assert [s.healthy for s in states] == [True, True, True, True, True, False]


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rise and fall"):
        Thresholds(rise=0, fall=1)


@given(
    results=st.lists(st.booleans(), max_size=200),
    rise=st.integers(1, 6),
    fall=st.integers(1, 6),
    initial=st.booleans(),
)
def test_status_changes_only_after_full_streak(results: list[bool], rise: int, fall: int, initial: bool) -> None:
    th = Thresholds(rise=rise, fall=fall)
    states = run(results, th, State(healthy=initial))
    previous = initial
    for i, state in enumerate(states):
        if state.healthy != previous:
            needed = rise if state.healthy else fall
            # The last `needed` results all agree with the new status ...
            window = results[max(0, i - needed + 1): i + 1]
            assert len(window) == needed and all(r == state.healthy for r in window)
            # ... and they were all counted against the old status: no earlier flip inside it.
            before = [initial, *[s.healthy for s in states]][i - needed + 1: i + 1]
            assert all(h == previous for h in before)
        previous = state.healthy


@given(results=st.lists(st.booleans(), max_size=200), rise=st.integers(1, 6), fall=st.integers(1, 6))
def test_a_full_streak_always_changes_status(results: list[bool], rise: int, fall: int) -> None:
    th = Thresholds(rise=rise, fall=fall)
    state = State(healthy=True)
    for ok in results:
        state = state.step(ok, th)
    # Whatever came before, `fall` failures make it unhealthy and `rise` successes healthy again.
    for _ in range(fall):
        state = state.step(False, th)
    assert not state.healthy
    for _ in range(rise):
        state = state.step(True, th)
    assert state.healthy
