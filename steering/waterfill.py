"""Water-filling: pour each geo's demand into its targets in preference order.

Pure arithmetic over floats (the rounds in ``steering.fillrounds``: C when
built). Rounds go by preference rank, so every geo gets
its first choice before any geo gets its second: in round k each geo with
demand left asks its k-th target, and a target asked by several geos splits
its remaining room in proportion to what they ask. What still does not fit
after the last round is the shortfall, spread over the geo's usable targets in
proportion to capacity instead of piled onto one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steering.fillrounds import rounds

EPSILON = 1e-9


@dataclass(frozen=True)
class Fill:
    alloc: dict[str, dict[str, float]]  # geo -> target -> requests/s
    overflow: dict[str, float]  # geo -> requests/s spread beyond the watermark


def waterfill(
    candidates: Mapping[str, Sequence[str]],
    demand: Mapping[str, float],
    capacity: Mapping[str, float],
    watermark: float,
) -> Fill:
    """Allocate ``demand`` (per geo) over ``capacity`` (per target; 0 = unusable).

    Geos with zero demand are routed as if they had a vanishing demand, so
    they still get a meaningful answer: their first target with room.
    """
    room = {t: watermark * c for t, c in capacity.items() if c > 0}
    # At least EPSILON: a geo whose demand is below the rounding floor would
    # otherwise never ask anyone and be left with no allocation at all.
    left = {g: float(max(d, EPSILON)) for g, d in demand.items() if g in candidates}
    alloc = rounds(tuple(left), candidates, left, room, EPSILON * 1e-3, None)
    _make_way(candidates, left, alloc, room)
    overflow: dict[str, float] = {}
    for g, rest in left.items():
        if rest <= EPSILON * 1e-3:
            continue
        usable = [t for t in candidates[g] if capacity.get(t, 0.0) > 0]
        total_cap = sum(capacity[t] for t in usable)
        if total_cap <= 0:
            continue  # nothing usable: the caller fails open
        overflow[g] = rest
        for t in usable:
            alloc[g][t] = alloc[g].get(t, 0.0) + rest * capacity[t] / total_cap
    return Fill(alloc=alloc, overflow=overflow)


def _make_way(candidates: Mapping[str, Sequence[str]], left: dict[str, float],
              alloc: dict[str, dict[str, float]], room: dict[str, float], owned: set[str] | None = None) -> None:
    """Let geos that still have demand take full targets from geos that can go elsewhere.

    The rounds alone can leave a geo with nowhere to go sharing a full target
    with a geo that still has a target with room further down its list; the
    first would then be spread beyond the watermark while the second sits on
    an overloaded target. Each move here shifts the second geo to its first
    target with room and hands the freed room to the first geo. Room only
    shrinks, so one pass finds every move.

    With ``owned``, ``alloc``'s inner dicts are shared with someone else: one is copied into ``alloc`` before
    its first change here, and its geo added to ``owned`` (few geos move; copying all of them cost more).
    """
    floor = EPSILON * 1e-3
    if all(rest <= floor for rest in left.values()):
        return  # everyone fitted: nobody needs to make way (the common case)
    cursor: dict[str, int] = {}  # per geo, where its first target with room might be
    # Geos none of whose targets has room: as room only shrinks they can never move
    # again, and skipping them is what keeps a shortfall over shared targets from
    # costing geos x geos calls that each find nothing. Those without room now are
    # found in one pass (in C), the rest as their last room goes.
    roomy = {t for t, r in room.items() if r > 0}
    stuck: set[str] = {h for h in alloc if roomy.isdisjoint(candidates[h])}
    # Who holds each target, the stuck left out: they are skipped wherever they stand in a list (a geo that
    # takes a target is appended to its list; a stuck one there is skipped alike), so leaving them out from
    # the start only saves looking at them, most of the geos in a shortfall.
    users: dict[str, list[str]] = {}
    for h, targets in alloc.items():
        if h in stuck:
            continue
        for t in targets:
            if t in users:
                users[t].append(h)
            else:
                users[t] = [h]

    def mine(h: str) -> dict[str, float]:
        a = alloc[h]
        if owned is not None and h not in owned:
            a = alloc[h] = dict(a)
            owned.add(h)
        return a

    def first_with_room(h: str, skip: str) -> str | None:
        cands = candidates[h]
        i = cursor.get(h, 0)
        while i < len(cands) and room.get(cands[i], 0.0) <= 0:
            i += 1
        cursor[h] = i
        if i == len(cands):
            stuck.add(h)
            return None
        for u in cands[i:]:
            if u != skip and room.get(u, 0.0) > 0:
                return u
        return None

    for g in list(left):
        for t in candidates[g]:
            if left[g] <= floor:
                break
            if t not in room:
                continue  # unusable target
            for h in users.get(t, ()):
                if h == g or h in stuck:
                    continue
                while left[g] > floor and alloc[h].get(t, 0.0) > 0:
                    u = first_with_room(h, t)
                    if u is None:
                        break
                    ah = mine(h)
                    move = min(ah[t], room[u], left[g])
                    ah[t] -= move
                    ah[u] = ah.get(u, 0.0) + move
                    if h not in users.setdefault(u, []):
                        users[u].append(h)
                    room[u] -= move
                    if room[u] < floor:
                        room[u] = 0.0
                    ag = mine(g)
                    ag[t] = ag.get(t, 0.0) + move
                    if g not in users[t]:
                        users[t].append(g)
                    left[g] -= move
                if left[g] <= floor:
                    break
