"""The rounds of a water-filling: every geo's demand poured into its candidates, rank by rank.

``rounds`` is the C function of ``steering/_fill.c`` when the extension is built
(an optional one: without a C compiler the install goes on) and ``rounds_py``
otherwise; both do the same float operations in the same order, so their
results are equal bit for bit (tests/test_fillrounds.py). ``steering.waterfill``
and ``steering.refill`` run them and do what follows (the make-way pass, the
shortfall spread) in Python: that part runs only when some geo did not fit.

In round k every geo still asking (demand left above ``floor``, a k-th
candidate) asks its k-th target; a target with room splits it among the geos
asking it in proportion to what they ask, in demand order. ``left`` and
``room`` are updated in place. With ``old``, a geo whose allocation comes out
equal to its ``old`` one gets that very dict back: callers tell the geos a
change moved by identity, without comparing.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

Alloc = dict[str, dict[str, float]]


def rounds_py(order: Sequence[str], cands: Mapping[str, Sequence[str]], left: dict[str, float],
              room: dict[str, float], floor: float, old: Mapping[str, dict[str, float]] | None = None) -> Alloc:
    """The rounds in Python (what the C function does, operation for operation)."""
    alloc: Alloc = {g: {} for g in order}
    active = [(g, cands[g], len(cands[g])) for g in order]
    k = 0
    while active:
        still = []
        asks: dict[str, list[str]] = {}
        for item in active:
            g, mine_c, n = item
            if k < n and left[g] > floor:
                still.append(item)
                t = mine_c[k]
                if t in asks:
                    asks[t].append(g)
                else:
                    asks[t] = [g]
        active = still
        # Each geo asks one target per round and each target's room is its own, so
        # the targets of one round can be served in any order with the same result.
        for target, geos in asks.items():
            r = room.get(target, 0.0)
            if not r > 0:
                continue
            if len(geos) == 1:
                g = geos[0]
                want = left[g]
                give = want if want < r else r
                share = give * want / want  # the general case's arithmetic, for identical rounding
                mine = alloc[g]
                mine[target] = mine.get(target, 0.0) + share
                left[g] = want - share
            else:
                wanted = 0.0  # a plain left-to-right sum (sum() compensates from Python 3.12 on)
                for g in geos:
                    wanted += left[g]
                give = wanted if wanted < r else r
                for g in geos:
                    share = give * left[g] / wanted
                    mine = alloc[g]
                    mine[target] = mine.get(target, 0.0) + share
                    left[g] = left[g] - share
            r = r - give
            room[target] = 0.0 if r < floor else r
        k += 1
    if old is not None:
        for g, mine in alloc.items():
            was = old.get(g)
            if was is not None and type(was) is dict and was == mine \
                    and all(type(v) is float for v in was.values()):
                alloc[g] = was
    return alloc


Rounds = Callable[[Sequence[str], Mapping[str, Sequence[str]], dict[str, float], dict[str, float], float,
                   Mapping[str, dict[str, float]] | None], Alloc]

try:
    from steering._fill import rounds as _c_rounds
except ImportError:  # built without a C compiler: the same rounds, slower
    rounds: Rounds = rounds_py
    NATIVE = False
else:
    rounds = _c_rounds
    NATIVE = True
