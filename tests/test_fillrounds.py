"""The water-filling's rounds in C (steering/_fill.c) against the Python rounds they mirror, bit for bit.

Over random geos, candidate lists (repeats included), demands and rooms (tiny, huge, subnormal, equal):
the same allocation (values as their exact bits, targets in the same order), the same ``left`` and ``room``
written back, and an ``old`` allocation handed back as the very object wherever the new one equals it.
Then what each does with input it cannot use: an error that names it, nothing written.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from steering import fillrounds
from steering.fillrounds import rounds_py

pytestmark = pytest.mark.skipif(not fillrounds.NATIVE and shutil.which("cc") is None,
                                reason="no C compiler here: the planner runs the Python rounds")

FLOOR = 1e-12

amounts = (st.sampled_from([0.0, 1e-9, 1e-13, 5e-324, 1.0, 10.0, 100.0, 1e300])
           | st.floats(0, 1e6, allow_nan=False, allow_infinity=False))


@st.composite
def inputs(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]], dict[str, float], dict[str, float]]:
    targets = [f"t{i}" for i in range(draw(st.integers(1, 8)))]
    geos = [f"g{i}" for i in range(draw(st.integers(0, 8)))]
    cands = {g: draw(st.lists(st.sampled_from(targets), max_size=6)) for g in geos}
    left = {g: max(draw(amounts), 1e-9) for g in geos}
    room = {t: draw(amounts) for t in targets if draw(st.booleans())}
    room = {t: r for t, r in room.items() if r > 0}  # as the planner builds it: the usable targets only
    order = list(draw(st.permutations(geos)))
    return order, cands, left, room


def _bits(alloc: dict[str, dict[str, float]]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(g, [(t, v.hex()) for t, v in mine.items()]) for g, mine in alloc.items()]


def _flat(d: dict[str, float]) -> list[tuple[str, str]]:
    return [(k, float(v).hex()) for k, v in d.items()]


def _native() -> Any:
    if not fillrounds.NATIVE:
        pytest.fail("a C compiler is here but steering._fill was not built: pip install -e . builds it")
    return fillrounds.rounds


@settings(max_examples=500, deadline=None)
@given(inputs())
@example((["g0", "g1"], {"g0": ["t0", "t1"], "g1": ["t0"]}, {"g0": 150.0, "g1": 100.0}, {"t0": 100.0, "t1": 100.0}))
@example((["g0"], {"g0": ["t0", "t0", "t1"]}, {"g0": 30.0}, {"t0": 10.0, "t1": 100.0}))
@example((["g0", "g1"], {"g0": ["t0"], "g1": ["t0"]}, {"g0": FLOOR, "g1": 2.0}, {"t0": 1.0}))  # at the floor: out
def test_rounds_in_c_equal_the_python_rounds(case: tuple[list[str], dict[str, list[str]], dict[str, float],
                                                         dict[str, float]]) -> None:
    rounds = _native()
    order, cands, left, room = case
    left_py, room_py = dict(left), dict(room)
    want = rounds_py(order, cands, left_py, room_py, FLOOR)
    left_c, room_c = dict(left), dict(room)
    got = rounds(order, cands, left_c, room_c, FLOOR)
    assert _bits(got) == _bits(want)
    assert list(got) == order
    assert _flat(left_c) == _flat(left_py) and _flat(room_c) == _flat(room_py)
    # Handed an allocation equal to its own, each gives back those very dicts; one that differs, a new one.
    old = {g: dict(mine) for g, mine in want.items()}
    if order:
        old[order[0]] = {"elsewhere": 1.0}
    for fn in (rounds, rounds_py):
        again = fn(order, cands, dict(left), dict(room), FLOOR, old)
        assert _bits(again) == _bits(want)
        assert [again[g] is old[g] for g in order] == [g != order[0] for g in order]


def test_rounds_pour_first_choices_before_second_ones() -> None:
    rounds = _native()
    left = {"g0": 150.0, "g1": 100.0}
    room = {"a": 100.0, "b": 100.0}
    alloc = rounds(["g0", "g1"], {"g0": ("a", "b"), "g1": ("a",)}, left, room, FLOOR)
    # Round 0: both ask a (room 100) for 250, shared 3:2; round 1: g0 asks b for what it still needs.
    assert alloc == {"g0": {"a": 60.0, "b": 90.0}, "g1": {"a": 40.0}}
    assert left == {"g0": 0.0, "g1": 60.0} and room == {"a": 0.0, "b": 10.0}


@pytest.mark.parametrize(("args", "error", "text"), [
    ((["g"], {}, {"g": 1.0}, {}, FLOOR), KeyError, "g"),
    ((["g"], {"g": ["a"]}, {}, {}, FLOOR), KeyError, "g"),
    ((["g"], {"g": 5}, {"g": 1.0}, {}, FLOOR), TypeError, "candidates must be a sequence"),
    ((["g"], {"g": ["a"]}, {"g": "x"}, {"a": 1.0}, FLOOR), TypeError, "must be real number"),
    ((["g"], {"g": ["a"]}, {"g": 1.0}, {"a": None}, FLOOR), TypeError, "must be real number"),
    ((["g"], {"g": ["a"]}, [1.0], {}, FLOOR), TypeError, "dict"),
    ((5, {}, {}, {}, FLOOR), TypeError, "order must be a sequence"),
    ((["g"], {"g": ["a"]}, {"g": 1.0}, {"a": 1.0}, float("nan")), ValueError, "floor must be finite"),
    ((["g"], {"g": ["a"]}, {"g": 1.0}, {"a": 1.0}, FLOOR, []), TypeError, "old must be a dict"),
])
def test_rounds_refuse_what_they_cannot_use(args: tuple[Any, ...], error: type[Exception], text: str) -> None:
    rounds = _native()
    before = [dict(a) if isinstance(a, dict) else a for a in args]
    with pytest.raises(error, match=text):
        rounds(*args)
    assert [dict(a) if isinstance(a, dict) else a for a in args] == before  # nothing written on the way out
