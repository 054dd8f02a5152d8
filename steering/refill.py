"""Water-filling again after a few capacities change, redoing only what the change reaches.

``steering.waterfill`` pours every geo's demand into its candidates round by
round (rank k = every geo's k-th choice). ``fill`` does the same arithmetic
and keeps a log of each round: who wanted which target, what each geo got,
what was left of each target's room. ``refill`` takes that log and the new
capacities and replays it: a round's work for a target is redone only when
the target's room, or the demand left of a geo asking it, differs from the
logged run ("dirty"); everything else is copied from the log. Geos and targets
become dirty as the difference spreads and stay so, which can only redo more
than needed, never less. Every value is computed by the same float operations
in the same order as ``waterfill``, so the result is equal bit for bit
(tests/test_replan.py checks it against ``waterfill`` and the whole plan).
The make-way pass and the shortfall spread run on the result as in
``waterfill`` (they are skipped, as there, when every geo fitted).

Pure: no I/O. A log is never mutated once built; a refill returns a new one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steering.waterfill import EPSILON, Fill, _make_way

_FLOOR = EPSILON * 1e-3


@dataclass(frozen=True)
class _Round:
    want: dict[str, list[str]]  # target -> the geos still asking whose k-th candidate it is, in demand order
    share: dict[str, tuple[str, float]]  # geo -> (target, requests/s it got this round)
    left: dict[str, float]  # geo -> demand left after this round, for the geos that got a share
    room: dict[str, float]  # target -> room left after this round, for the targets that gave


_NO_ROUND = _Round({}, {}, {}, {})


@dataclass(frozen=True)
class Log:
    """One water-filling with how it got there; ``fill`` is what ``waterfill`` returns for the same inputs."""

    candidates: Mapping[str, Sequence[str]]
    capacity: Mapping[str, float]
    watermark: float
    order: tuple[str, ...]  # the geos with candidates, in demand order
    pos: dict[str, int]  # geo -> its place in ``order``
    left0: dict[str, float]  # what each of them asks for at the start
    room0: dict[str, float]
    rounds: tuple[_Round, ...]
    alloc: dict[str, dict[str, float]]  # before the make-way pass
    fill: Fill


def fill(candidates: Mapping[str, Sequence[str]], demand: Mapping[str, float], capacity: Mapping[str, float],
         watermark: float) -> Log:
    """``waterfill(candidates, demand, capacity, watermark)`` with its log."""
    left0 = {g: max(d, EPSILON) for g, d in demand.items() if g in candidates}
    room0 = {t: watermark * c for t, c in capacity.items() if c > 0}
    order = tuple(left0)
    left = dict(left0)
    room = dict(room0)
    ranks = max((len(c) for c in candidates.values()), default=0)
    active = [(g, candidates[g], len(candidates[g])) for g in order]
    rounds: list[_Round] = []
    for k in range(ranks):
        # waterfill's round, recording as it goes (every geo's want, even of a target without room).
        still = []
        want: dict[str, list[str]] = {}
        for item in active:
            g, cands, n = item
            if k < n and left[g] > _FLOOR:
                still.append(item)
                t = cands[k]
                if t in want:
                    want[t].append(g)
                else:
                    want[t] = [g]
        active = still
        share: dict[str, tuple[str, float]] = {}
        got_left: dict[str, float] = {}
        got_room: dict[str, float] = {}
        for t, geos in want.items():
            r = room.get(t, 0.0)
            if r <= 0:
                continue
            if len(geos) == 1:
                g = geos[0]
                w = left[g]
                give = w if w < r else r
                v = give * w / w
                share[g] = (t, v)
                left[g] = got_left[g] = w - v
            else:
                wanted = sum(left[g] for g in geos)
                give = wanted if wanted < r else r
                for g in geos:
                    v = give * left[g] / wanted
                    share[g] = (t, v)
                    left[g] = got_left[g] = left[g] - v
            r -= give
            room[t] = got_room[t] = 0.0 if r < _FLOOR else r
        rounds.append(_Round(want, share, got_left, got_room))
    alloc: dict[str, dict[str, float]] = {g: {} for g in order}
    for rd in rounds:
        for g, (t, v) in rd.share.items():
            mine = alloc[g]
            mine[t] = mine.get(t, 0.0) + v
    return Log(candidates=candidates, capacity=capacity, watermark=watermark, order=order,
               pos={g: i for i, g in enumerate(order)}, left0=left0, room0=room0, rounds=tuple(rounds), alloc=alloc,
               fill=_finish(candidates, capacity, left, room, alloc))


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
    dirty_t = {t for t in changed if room0.get(t) != log.room0.get(t)}
    new = _run(log.candidates, log.left0, capacity, room0, log.watermark, log, set(), dirty_t)
    old_fill, new_fill = log.fill, new.fill
    if not old_fill.overflow and not new_fill.overflow and old_fill.alloc is log.alloc and new_fill.alloc is new.alloc:
        # No make-way pass either time: only a geo whose rounds differed can differ.
        geos = {g for g in new.order if new.alloc[g] is not log.alloc[g] and new.alloc[g] != log.alloc[g]}
    else:
        geos = {g for g in new.order
                if new_fill.alloc[g] != old_fill.alloc[g] or old_fill.overflow.get(g) != new_fill.overflow.get(g)}
    return new, geos


def _run(cands: Mapping[str, Sequence[str]], left0: dict[str, float], capacity: Mapping[str, float],
         room0: dict[str, float], watermark: float, old: Log | None, dirty_g: set[str], dirty_t: set[str]) -> Log:
    order = old.order if old is not None else tuple(left0)
    pos = old.pos if old is not None else {g: i for i, g in enumerate(order)}
    left = dict(left0)
    room = dict(room0)
    ranks = len(old.rounds) if old is not None else max((len(c) for c in cands.values()), default=0)
    rounds: list[_Round] = []
    ever: set[str] = set(dirty_g)  # geos whose shares must be re-read from the new rounds
    dirty_order = sorted(dirty_g, key=pos.__getitem__)
    for k in range(ranks):
        o = old.rounds[k] if old is not None else _NO_ROUND
        # The dirty geos still asking, by target; every geo asks its own k-th candidate, dirty or not.
        mine: dict[str, list[str]] = {}
        touched: set[str] = set()
        for g in dirty_order:
            c = cands[g]
            if k < len(c):
                t = c[k]
                touched.add(t)
                if left[g] > _FLOOR:
                    if t in mine:
                        mine[t].append(g)
                    else:
                        mine[t] = [g]
        if dirty_t:
            touched |= o.want.keys() & dirty_t  # in C: a round asks few of the dirty targets
        if not touched:
            rounds.append(o)
            left.update(o.left)
            room.update(o.room)
            continue
        want = dict(o.want)
        share = dict(o.share)
        got_left = dict(o.left)
        got_room = dict(o.room)
        # What this round starts from, for everything it redoes.
        before_left: dict[str, float] = {g: left[g] for g in dirty_order}
        before_room: dict[str, float | None] = {}
        new_share: dict[str, tuple[str, float]] = {}
        new_left: dict[str, float] = {}
        new_room: dict[str, float] = {}
        for t in touched:
            before_room[t] = room.get(t)
            members = [g for g in o.want.get(t, ()) if g not in dirty_g]
            for g in o.want.get(t, ()):
                before_left[g] = left[g]
            add = mine.get(t)
            if add:
                members = sorted(members + add, key=pos.__getitem__) if members else add
            if members:
                want[t] = members
            else:
                want.pop(t, None)
            for g in o.want.get(t, ()):
                share.pop(g, None)
                got_left.pop(g, None)
            got_room.pop(t, None)
            r = room.get(t, 0.0)
            if not members or r <= 0:
                continue
            # The arithmetic of waterfill's round, operation for operation.
            if len(members) == 1:
                g = members[0]
                w = left[g]
                give = w if w < r else r
                s = give * w / w
                new_share[g] = (t, s)
                new_left[g] = w - s
            else:
                wanted = sum(left[g] for g in members)
                give = wanted if wanted < r else r
                for g in members:
                    s = give * left[g] / wanted
                    new_share[g] = (t, s)
                    new_left[g] = left[g] - s
            r -= give
            new_room[t] = 0.0 if r < _FLOOR else r
        for g in dirty_order:
            share.pop(g, None)
            got_left.pop(g, None)
        left.update(o.left)
        room.update(o.room)
        for g, v in before_left.items():
            left[g] = v
        for t, rv in before_room.items():
            if rv is None:
                room.pop(t, None)
            else:
                room[t] = rv
        grew = False
        for g, gs in new_share.items():
            share[g] = gs
            left[g] = got_left[g] = new_left[g]
            if g not in dirty_g and (o.share.get(g) != gs or o.left.get(g) != new_left[g]):
                dirty_g.add(g)
                grew = True
        for g in before_left:
            if g not in new_share and g not in dirty_g and g in o.share:
                dirty_g.add(g)  # it got something in the logged run and nothing now
                grew = True
        for t, rv2 in new_room.items():
            room[t] = got_room[t] = rv2
            if t not in dirty_t and o.room.get(t) != rv2:
                dirty_t.add(t)
        for t in touched:
            if t not in new_room and t not in dirty_t and t in o.room:
                dirty_t.add(t)
        if grew:
            ever |= dirty_g
            dirty_order = sorted(dirty_g, key=pos.__getitem__)
        rounds.append(_Round(want, share, got_left, got_room))
    ever |= dirty_g
    alloc: dict[str, dict[str, float]] = {}
    for g in order:
        if old is not None and g not in ever:
            alloc[g] = old.alloc[g]
            continue
        mine_alloc: dict[str, float] = {}
        for rd in rounds:
            e = rd.share.get(g)
            if e is not None:
                t, s = e
                mine_alloc[t] = mine_alloc.get(t, 0.0) + s
        alloc[g] = mine_alloc
    log = Log(candidates=cands, capacity=capacity, watermark=watermark, order=order, pos=pos, left0=left0, room0=room0,
              rounds=tuple(rounds), alloc=alloc, fill=_finish(cands, capacity, left, room, alloc))
    return log


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
