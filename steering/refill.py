"""Water-filling again after a few capacities change, with the same result as from scratch.

``fill`` is ``steering.waterfill.waterfill`` keeping what a later ``refill``
needs: the demand each geo asks for, the rooms at the start and the
allocation the rounds made (before the make-way pass). ``refill`` runs the
rounds again (``steering.fillrounds``: in C when built, a water-filling of a
fleet's 250 geos over 19 regions in tens of microseconds) with the new rooms
and hands back, as the very same dict objects, the allocations that came out
equal: the geos a change moved are told apart by identity. Every value is
computed by the same float operations in the same order as ``waterfill``,
so the result is equal bit for bit (tests/test_replan.py checks it against
``waterfill`` and the whole plan). The make-way pass and the shortfall spread
run on the result as in ``waterfill`` (they are skipped, as there, when every
geo fitted).

Before the rounds were in C this replayed a log of each round, redoing only
what a change reached; the rounds in C from scratch cost less than that
replay did in Python for a region's removal, and about as much for one
site's change.

Pure: no I/O. A log is never mutated once built; a refill returns a new one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steering.fillrounds import rounds
from steering.waterfill import EPSILON, Fill, _make_way

_FLOOR = EPSILON * 1e-3


@dataclass(frozen=True)
class Log:
    """One water-filling with what a refill starts from; ``fill`` is what ``waterfill`` returns for the same
    inputs."""

    candidates: Mapping[str, Sequence[str]]
    capacity: Mapping[str, float]
    watermark: float
    order: tuple[str, ...]  # the geos with candidates, in demand order
    left0: dict[str, float]  # what each of them asks for at the start
    room0: dict[str, float]
    alloc: dict[str, dict[str, float]]  # before the make-way pass
    fill: Fill


def fill(candidates: Mapping[str, Sequence[str]], demand: Mapping[str, float], capacity: Mapping[str, float],
         watermark: float) -> Log:
    """``waterfill(candidates, demand, capacity, watermark)`` with what ``refill`` needs."""
    left0 = {g: float(max(d, EPSILON)) for g, d in demand.items() if g in candidates}
    room0 = {t: watermark * c for t, c in capacity.items() if c > 0}
    return _run(candidates, capacity, watermark, tuple(left0), left0, room0, None)


def refill(log: Log, capacity: Mapping[str, float], changed: set[str]) -> tuple[Log, set[str]]:
    """The log's water-filling with ``capacity`` instead, where only the targets in ``changed`` may differ
    from ``log.capacity``. Returns the new log and the geos whose allocation or shortfall may differ."""
    room0 = dict(log.room0)
    for t in changed:
        c = capacity.get(t, 0.0)
        if c > 0:
            room0[t] = log.watermark * c
        else:
            room0.pop(t, None)
    new = _run(log.candidates, capacity, log.watermark, log.order, log.left0, room0, log.alloc)
    old_fill, new_fill = log.fill, new.fill
    if not old_fill.overflow and not new_fill.overflow and old_fill.alloc is log.alloc and new_fill.alloc is new.alloc:
        # No make-way pass either time: the rounds handed back every allocation that came out equal.
        geos = {g for g in new.order if new.alloc[g] is not log.alloc[g]}
    else:
        geos = {g for g in new.order
                if new_fill.alloc[g] != old_fill.alloc[g] or old_fill.overflow.get(g) != new_fill.overflow.get(g)}
    return new, geos


def _run(cands: Mapping[str, Sequence[str]], capacity: Mapping[str, float], watermark: float, order: tuple[str, ...],
         left0: dict[str, float], room0: dict[str, float], old: dict[str, dict[str, float]] | None) -> Log:
    left = dict(left0)
    room = dict(room0)
    alloc = rounds(order, cands, left, room, _FLOOR, old)
    return Log(candidates=cands, capacity=capacity, watermark=watermark, order=order, left0=left0, room0=room0,
               alloc=alloc, fill=_finish(cands, capacity, left, room, alloc))


def _finish(cands: Mapping[str, Sequence[str]], capacity: Mapping[str, float], left: dict[str, float],
            room: dict[str, float], alloc: dict[str, dict[str, float]]) -> Fill:
    """waterfill's ending: the make-way pass and the shortfall spread, on copies (the log keeps its own)."""
    if all(rest <= _FLOOR for rest in left.values()):
        return Fill(alloc=alloc, overflow={})  # everyone fitted: neither step changes anything
    left = dict(left)
    room = dict(room)
    out = dict(alloc)  # the inner dicts are the log's: copied where changed (``owned``)
    owned: set[str] = set()
    _make_way(cands, left, out, room, owned)
    overflow: dict[str, float] = {}
    for g, rest in left.items():
        if rest <= _FLOOR:
            continue
        usable = [t for t in cands[g] if capacity.get(t, 0.0) > 0]
        total_cap = sum(capacity[t] for t in usable)
        if total_cap <= 0:
            continue
        overflow[g] = rest
        if g not in owned:
            out[g] = dict(out[g])
            owned.add(g)
        mine = out[g]
        for t in usable:
            mine[t] = mine.get(t, 0.0) + rest * capacity[t] / total_cap
    return Fill(alloc=out, overflow=overflow)
