"""Integer weights: rounding shares to a fixed total, and limiting how far one step moves them.

Pure functions over ``dict[target, int]``; every result sums to the total it
was given, and ties are broken by the order of the keys, so the same input is
always the same output.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat

_Apportion = Callable[[list[float], int, Sequence[str]], "dict[str, int] | None"]
_c_apportion: _Apportion | None
try:
    from steering._fill import apportion as _c_apportion
except ImportError:  # built without a C compiler: apportion_values_py alone
    _c_apportion = None

TOTAL_WEIGHT = 1000
"""Weights of one (service, geo) sum to this (``steering.config`` re-exports it)."""


def apportion(shares: Mapping[str, float], total: int, order: Sequence[str]) -> dict[str, int]:
    """Round non-negative ``shares`` to integers summing to ``total`` (largest remainder).

    Every key of ``order`` appears in the result. Shares all zero put
    everything on the first key.
    """
    if len(order) == 1:
        return {order[0]: total}
    get = shares.get
    return apportion_values([get(t, 0.0) for t in order], total, order)


def apportion_values(values: list[float], total: int, order: Sequence[str]) -> dict[str, int]:
    """``apportion`` with the shares given as a list aligned with ``order`` (``values[i]`` is ``order[i]``'s).

    For callers that hold shares by position already; the result is the same as
    ``apportion(dict(zip(order, values)), total, order)``. In C where built (``steering/_fill.c``: a plan
    apportions each geo's weights, ~6,000 times at 10,000 sites), equal to ``apportion_values_py``.
    """
    n = len(order)
    if n == 0:
        return {}
    if n == 1:
        # Whatever the share, one key takes everything (the general path below agrees).
        return {order[0]: total}
    if _c_apportion is not None:
        done = _c_apportion(values, total, order)
        if done is not None:
            return done
    return apportion_values_py(values, total, order)


def apportion_values_py(values: list[float], total: int, order: Sequence[str]) -> dict[str, int]:
    """``apportion_values`` in Python: the reference the C function is held to, and what runs without it."""
    n = len(order)
    if n == 0:
        return {}
    if n == 1:
        return {order[0]: total}
    if len(set(order)) != n:
        return _apportion_keyed(dict(zip(order, values, strict=True)), total, order)
    vals = values
    if min(vals) < 0.0:
        vals = [max(0.0, v) for v in vals]
    if vals.count(0.0) == n - 1 and sum(vals) > 0:
        # One positive share takes everything: the sum is that share exactly, its
        # quotient rounds to total or just below it, and then it has the largest remainder.
        return {t: (total if v else 0) for t, v in zip(order, vals, strict=True)}
    s = sum(vals)
    if s <= 0:
        return {t: (total if i == 0 else 0) for i, t in enumerate(order)}
    exact = [v * total / s for v in vals]
    out = list(map(math.floor, exact))
    short = total - sum(out)
    if short:
        # Largest remainder first, ties by position: a stable sort on (floor - exact),
        # which is exactly -(exact - floor).
        neg = [o - e for o, e in zip(out, exact, strict=True)]
        for i in sorted(range(n), key=neg.__getitem__)[:short]:
            out[i] += 1
    return dict(zip(order, out, strict=True))


def _apportion_keyed(shares: Mapping[str, float], total: int, order: Sequence[str]) -> dict[str, int]:
    """``apportion`` for an ``order`` that repeats keys: each key counted once, as a dict sees it."""
    s = sum(max(shares.get(t, 0.0), 0.0) for t in order)
    if s <= 0:
        return {t: (total if i == 0 else 0) for i, t in enumerate(order)}
    exact = {t: max(shares.get(t, 0.0), 0.0) * total / s for t in order}
    out = {t: math.floor(v) for t, v in exact.items()}
    short = total - sum(out.values())
    rank = sorted(range(len(order)), key=lambda i: (-(exact[order[i]] - out[order[i]]), i))
    for i in rank[:short]:
        out[order[i]] += 1
    return out


def distance(a: Mapping[str, int], b: Mapping[str, int]) -> int:
    """Units of weight that move between ``a`` and ``b`` (half the L1 distance)."""
    if a.keys() == b.keys():
        # The planner's case (both over a geo's candidates): the same sum, in C.
        moved: int = sum(map(abs, map(operator.sub, a.values(), map(b.__getitem__, a))))
        return moved // 2
    keys = set(a) | set(b)
    return sum(abs(a.get(k, 0) - b.get(k, 0)) for k in keys) // 2


def move_toward(start: Mapping[str, int], goal: Mapping[str, int], limit: int, order: Sequence[str]) -> dict[str, int]:
    """Move at most ``limit`` units from ``start`` toward ``goal`` (both over ``order``, same total).

    Each target that loses gives in proportion to what it must lose; each that
    gains takes in proportion to what it must gain: the step is a scaled-down
    copy of the whole move, not a greedy one.
    """
    d = distance(start, goal)
    if d <= limit:
        return {t: goal.get(t, 0) for t in order}
    now = list(map(start.get, order, repeat(0)))
    moved = step_values(now, list(map(goal.get, order, repeat(0))), limit, order, d)
    return dict(zip(order, moved, strict=True))


def step_values(now: list[int], want: list[int], limit: int, order: Sequence[str], d: int) -> list[int]:
    """``move_toward`` over lists aligned with ``order``, given ``d = distance(now, want)``: the
    planner's per-geo step holds both as lists already, and knows the distance."""
    if d <= limit:
        return want
    # The losers and gainers in order, as apportion reads them.
    lose_t: list[str] = []
    lose_v: list[float] = []
    gain_t: list[str] = []
    gain_v: list[float] = []
    for t, a, b in zip(order, now, want, strict=True):
        if a > b:
            lose_t.append(t)
            lose_v.append(a - b)
        elif b > a:
            gain_t.append(t)
            gain_v.append(b - a)
    minus = apportion_values(lose_v, limit, lose_t)
    plus = apportion_values(gain_v, limit, gain_t)
    return [a - minus.get(t, 0) + plus.get(t, 0) for t, a in zip(order, now, strict=True)]
