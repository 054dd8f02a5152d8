"""Merge per-replica health records into one state per site: pure.

Each replica writes ``health/<site>@<replica>`` for the agents connected to
it, bound to its own lease, so replicas never overwrite each other: an agent
that fails over from replica A to B leaves A's record to expire on A's
silence timeout (or with A's lease) while B's record is already there. The
newest record wins. A site with no record is silent, except during the
grace period after a leader starts, when it is unknown (agents are still
connecting; refusing everything at start-up would be an outage of our own).

An observer's records are ``health/<site>~<observer>@<replica>``: one slot
per reporter (``vantage.slot``), merged the same way (newest per slot). A
target with observers is then decided by the quorum of its reporters
(``vantage.decide``): the merged health carries every reporter's view and
the geos it is unreachable from (docs/health.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from itertools import compress, repeat
from operator import is_, is_not

from steering.controller.vantage import LOCAL, Vantage, Verdict, decide, split_slot
from steering.model import MAX_CHECKS, Check, ReporterView, TargetHealth

SEPARATOR = "@"


def record_key(site: str, replica: str) -> str:
    """``site`` may be a reporter's slot (``vantage.slot``): ``us-east-1~eu-probe@replica-a``."""
    return f"{site}{SEPARATOR}{replica}"


def split_key(key: str) -> tuple[str, str]:
    """(site, replica) of a record key; an observer's record names its site (see ``parse_key``)."""
    slot, _, replica = key.partition(SEPARATOR)
    return split_slot(slot)[0], replica


@functools.lru_cache(maxsize=1 << 16)  # bounded: sites x reporters x replicas; merged per plan, every record
def parse_key(key: str) -> tuple[str, str, str]:
    """(site, reporter, replica) of a record key; the reporter is ``local`` for the site's own agent."""
    slot, _, replica = key.partition(SEPARATOR)
    site, reporter = split_slot(slot)
    return site, reporter, replica


def newest(records: Mapping[str, TargetHealth]) -> dict[tuple[str, str], tuple[str, TargetHealth]]:
    """Per (site, reporter): (the replica that wrote it, the newest record)."""
    best: dict[tuple[str, str], tuple[str, TargetHealth]] = {}
    for key, health in records.items():
        site, reporter, replica = parse_key(key)
        cur = best.get((site, reporter))
        if cur is None or (health.updated_at, health.status) > (cur[1].updated_at, cur[1].status):
            best[(site, reporter)] = (replica, health)
    return best


def views(target: str, best: Mapping[tuple[str, str], tuple[str, TargetHealth]],
          vantage: Vantage) -> list[ReporterView]:
    """One view per configured reporter of ``target`` (silent when it has no record)."""
    out = []
    for reporter in vantage.reporters(target):
        found = best.get((target, reporter))
        if found is None:
            out.append(vantage.view(target, reporter, "silent"))
        else:
            replica, h = found
            status = h.status if h.status in ("healthy", "unhealthy") else "silent"
            out.append(vantage.view(target, reporter, status, h.updated_at, h.detail, replica))
    return out


def merge(records: Mapping[str, TargetHealth], known: Iterable[str], silent_after_grace: bool,
          previous: Mapping[str, str] | None = None, vantage: Vantage | None = None) -> dict[str, TargetHealth]:
    """``records`` keyed ``site@replica`` (or ``site~observer@replica``) -> one TargetHealth per known site.

    ``previous`` is each site's health in the last published table: during the
    grace period a site that table already had silent stays silent, so a
    leader change never sends traffic back to a site nobody hears from.
    ``vantage``: the config's reporters and quorum; without it (or for a target
    without observers) the local agent's newest record is the target's health.
    """
    best = newest(records)
    observed = vantage.observed if vantage is not None else {}
    out: dict[str, TargetHealth] = {}
    for site in known:
        if vantage is not None and site in observed:
            out[site] = _quorum(site, best, vantage, silent_after_grace, previous)
            continue
        found = best.get((site, LOCAL))
        if found is not None:
            out[site] = found[1]
        else:
            out[site] = _absent(site, silent_after_grace, previous)
    return out


def _absent(site: str, silent_after_grace: bool, previous: Mapping[str, str] | None) -> TargetHealth:
    if silent_after_grace or (previous or {}).get(site) == "silent":
        return TargetHealth(status="silent", detail="no agent has reported within the silence timeout")
    return TargetHealth(status="unknown", detail="waiting for a first report")


def _quorum(site: str, best: Mapping[tuple[str, str], tuple[str, TargetHealth]], vantage: Vantage,
            silent_after_grace: bool, previous: Mapping[str, str] | None) -> TargetHealth:
    seen = views(site, best, vantage)
    verdict = decide(seen, vantage.rule)
    if verdict.status == "silent":
        # No reporter left: the rule for a site without a record, with every reporter's view attached.
        base = _absent(site, silent_after_grace, previous)
        return TargetHealth(status=base.status, detail=base.detail, reporters=tuple(seen))
    local = best.get((site, LOCAL))
    record = local[1] if local is not None and local[1].status in ("healthy", "unhealthy") else None
    capacity = record.capacity if record is not None else None
    if verdict.status == "healthy" and record is not None and record.status == "unhealthy" and not capacity:
        capacity = None  # an outvoted agent's "no capacity" is its failure speaking: the config's stands
    return TargetHealth(
        status=verdict.status,
        capacity=capacity,
        load=record.load if record is not None else None,
        updated_at=max(v.updated_at for v in seen if v.counted),
        detail=_detail(verdict, seen)[:300],
        checks=_checks(verdict, site, best) if verdict.status == "unhealthy" else (),
        reporters=tuple(seen),
        unreachable_from=verdict.unreachable_from,
    )


def _detail(verdict: Verdict, seen: list[ReporterView]) -> str:
    why = "; ".join(f"{v.reporter}: {v.detail}" for v in seen if v.reporter in verdict.failing and v.detail)
    return "; ".join(x for x in (verdict.text, why) if x)


def _checks(verdict: Verdict, site: str, best: Mapping[tuple[str, str], tuple[str, TargetHealth]],
            ) -> tuple[Check, ...]:
    """The failing reporters' failing checks, an observer's named ``observer/check``."""
    out: list[Check] = []
    for reporter in verdict.failing:
        found = best.get((site, reporter))
        if found is None:
            continue
        for c in found[1].checks:
            name = c.name if reporter == LOCAL else f"{reporter}/{c.name}"
            out.append(Check(name=name, kind=c.kind, detail=c.detail))
    return tuple(out[:MAX_CHECKS])


_MISSING = object()


class Merger:
    """``merge`` with the same arguments and the same result, redoing only the sites whose records changed
    since its last call: a plan follows a few reports' changes among thousands of records, and merging them
    all was a few ms of the leader's loop per plan (issue 18). Records are told apart by identity (the
    health watch hands on the objects of records that did not change). It merges in full when anything
    else moved (the known sites, the reporters, the grace period, the last table's statuses during it), and
    where the winner of a site's records is a tie that ``newest`` settles by the records' order. A records
    map once given is never changed in place by the caller (each is a new one). Pure; not thread-safe (one
    per leader term)."""

    def __init__(self) -> None:
        self._records: Mapping[str, TargetHealth] | None = None
        self._args: tuple[object, ...] = ()
        self._best: dict[tuple[str, str], tuple[str, TargetHealth]] = {}
        self._keys: dict[tuple[str, str], list[str]] = {}  # (site, reporter) -> its record keys
        self._out: dict[str, TargetHealth] = {}
        # Whether some site's newest records tie: then the map's order decides, even between maps of the same
        # objects, and every merge is a full one until no tie is left.
        self._tied = False
        self.last_incremental = False  # for tests

    def merge(self, records: Mapping[str, TargetHealth], known: Iterable[str], silent_after_grace: bool,
              previous: Mapping[str, str] | None = None, vantage: Vantage | None = None) -> dict[str, TargetHealth]:
        args = (known, vantage, silent_after_grace, None if silent_after_grace else previous)
        old = self._records
        self.last_incremental = False
        if old is not None and len(args) == len(self._args) and all(map(is_, args, self._args)):
            out = self._update(old, records, silent_after_grace, previous, vantage)
            if out is not None:
                self._records = records
                self.last_incremental = True
                return out
        out = self._full(records, known, silent_after_grace, previous, vantage)
        self._records, self._args = records, args
        return out

    def _full(self, records: Mapping[str, TargetHealth], known: Iterable[str], silent_after_grace: bool,
              previous: Mapping[str, str] | None, vantage: Vantage | None) -> dict[str, TargetHealth]:
        keys: dict[tuple[str, str], list[str]] = {}
        for key in records:
            site, reporter, _ = parse_key(key)
            keys.setdefault((site, reporter), []).append(key)
        self._keys = keys
        self._best = best = newest(records)
        self._tied = any(len(ks) > 1 and sum(_rank(records[k]) == _rank(best[pair][1]) for k in ks) > 1
                         for pair, ks in keys.items())
        self._out = merge(records, known, silent_after_grace, previous, vantage)
        return dict(self._out)

    def _update(self, old: Mapping[str, TargetHealth], records: Mapping[str, TargetHealth], silent_after_grace: bool,
                previous: Mapping[str, str] | None, vantage: Vantage | None) -> dict[str, TargetHealth] | None:
        # The keys whose record is not the very object of the last call (in C), and those gone.
        changed = [*compress(records, map(is_not, records.values(), map(old.get, records, repeat(_MISSING)))),
                   *(old.keys() - records.keys())]
        if self._tied or len(changed) * 4 > len(records):
            return None  # a tie, or most of them changed: merging in full costs less
        pairs: set[tuple[str, str]] = set()
        for key in changed:
            site, reporter, _ = parse_key(key)
            pair = (site, reporter)
            pairs.add(pair)
            mine = self._keys.setdefault(pair, [])
            if key in records:
                if key not in mine:
                    mine.append(key)
            elif key in mine:
                mine.remove(key)
        best = self._best
        for pair in pairs:
            mine = self._keys[pair]
            top: tuple[str, TargetHealth] | None = None
            for key in mine:
                h = records[key]
                if top is not None:
                    rank, top_rank = _rank(h), _rank(top[1])
                    if rank < top_rank:
                        continue
                    if not rank > top_rank:
                        return None  # a tie (or NaN): ``newest`` keeps the first in the records' order
                top = (parse_key(key)[2], h)
            if top is None:
                best.pop(pair, None)
                del self._keys[pair]
            else:
                best[pair] = top
        out = self._out
        observed = vantage.observed if vantage is not None else {}
        for site in {site for site, _ in pairs}:
            if site not in out:
                continue  # not a known site: merge never reads its records
            if vantage is not None and site in observed:
                out[site] = _quorum(site, best, vantage, silent_after_grace, previous)
                continue
            found = best.get((site, LOCAL))
            out[site] = found[1] if found is not None else _absent(site, silent_after_grace, previous)
        return dict(out)


def _rank(h: TargetHealth) -> tuple[float, str]:
    return h.updated_at, h.status
