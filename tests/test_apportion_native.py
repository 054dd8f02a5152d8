"""``weights.apportion_values`` in C (steering/_fill.c) against ``apportion_values_py``, its Python reference.

Over random shares (floats tiny and huge, ints, zeros of both signs, negatives, NaN and infinities), totals and
orders (repeated keys included): the same dict, keys in the same order, the same int values, or the same
exception type. Then the cases the C function hands back (None) so that the Python one decides.
"""

from __future__ import annotations

import math
import shutil
import sys
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from steering import weights
from steering.weights import apportion_values, apportion_values_py

pytestmark = pytest.mark.skipif(weights._c_apportion is None and shutil.which("cc") is None,
                                reason="no C compiler here: the planner apportions in Python")

shares = (st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-300, 5e-324, 1e300, -1.0, 3.0, 1 / 3])
          | st.floats(-10, 1e6, allow_nan=False, allow_infinity=False)
          | st.integers(-5, 2000)
          | st.sampled_from([math.nan, math.inf, -math.inf, 2**21, 2**21 + 1, -(2**40), 10**30]))


def _native() -> Any:
    if weights._c_apportion is None:
        pytest.fail("a C compiler is here but steering._fill was not built: pip install -e . builds it")
    return weights._c_apportion


def _outcome(fn: Any, values: list[Any], total: int, order: list[str]) -> tuple[str, Any]:
    try:
        out = fn(list(values), total, list(order))
    except Exception as exc:  # the same kind of error either way
        return "raised", type(exc)
    assert all(type(v) is int for v in out.values())
    return "value", list(out.items())


@settings(max_examples=1500, deadline=None)
@given(st.data())
@example(None)
def test_the_c_apportionment_equals_the_python_one(data: st.DataObject | None) -> None:
    _native()
    if data is None:  # the planner's everyday case: a geo's shares over its candidates, total 1000
        values, total, order = [120.5, 0.0, 79.5, 300.0], 1000, ["a", "b", "c", "d"]
    else:
        n = data.draw(st.integers(2, 12))
        values = data.draw(st.lists(shares, min_size=n, max_size=n))
        total = data.draw(st.sampled_from([0, 1, 7, 250, 1000, 2**31]) | st.integers(0, 5000))
        names = data.draw(st.lists(st.sampled_from("abcdefghijklmnop"), min_size=n, max_size=n))
        order = names if data.draw(st.booleans()) else [f"t{i}" for i in range(n)]  # repeats, or none
    assert _outcome(apportion_values, values, total, order) == _outcome(apportion_values_py, values, total, order)


def test_what_the_c_function_leaves_to_python() -> None:
    c = _native()
    if sys.version_info >= (3, 12):  # its sum() compensates: the C function takes nothing there
        assert c([1.0, 2.0], 10, ["a", "b"]) is None
        return
    assert c([1.0, 2.0], 10, ["a", "b"]) == {"a": 3, "b": 7}
    assert c([1.0, 2.0], 10, ["a", "a"]) is None  # a key twice: the Python function counts it once
    assert c([1.0, math.nan], 10, ["a", "b"]) is None
    assert c([1.0, 2**40], 10, ["a", "b"]) is None  # an int too big for value * total to stay exact
    assert c([1.0, 2.0], -1, ["a", "b"]) is None
    assert c([1.0, 2.0], 2**40, ["a", "b"]) is None
    assert c([1.0, 2.0, 3.0], 10, ["a", "b"]) is None  # lengths differ: the Python function says so
    assert c((1.0, 2.0), 10, ["a", "b"]) is None  # not a list
    assert c([1.0, "2"], 10, ["a", "b"]) is None
    with pytest.raises(TypeError):
        c([1.0, 2.0], 10, 5)
    with pytest.raises(TypeError):
        c([1.0, 2.0], 10, [[], []])  # unhashable keys, as Python's set() says
    with pytest.raises(ValueError):
        apportion_values([1.0, 2.0, 3.0], 10, ["a", "b"])
