"""The plan: desired records vs what Route 53 holds -> ordered, validated change batches (pure).

Like ExternalDNS's ``plan``: no I/O, deterministic. ``compute_plan`` runs
named steps, one function each: read the zone (``_read_zone``), keep what we
may write (``_writable``), diff (``_diff``), validate (``_validated``), update
the markers (``_marker_updates``), order per service (``_ordered``), then
``pack`` into batches. Rules:

* Ownership: a name is ours when its marker ``_steering.<name>`` TXT names our
  owner id; the marker lists the types we own there. Everything else is
  foreign and is never changed or deleted. A (name, type) that holds any
  foreign record, a name claimed by another owner, or a marker name holding a
  TXT record that is not a marker, is a *conflict*: we leave it alone and say
  so, rather than fight another writer (external-dns #1698).
* Diff: a missing record is created, a different one upserted, an extra owned
  one deleted. Route 53 cannot change a record's routing policy in place
  (external-dns #4345), so that becomes a DELETE and a CREATE in one batch.
* Order inside a service: weighted sets are created before the aliases that
  point at them, and aliases deleted before their targets; the marker grows
  before records appear and shrinks after they are gone, so a crash between
  two batches never leaves a record we wrote without our marker.
* Batches: a service's changes go in one batch when they fit, so a service
  flips atomically; a larger service is split in order. Route 53 limits a
  batch to 1,000 ResourceRecord elements and 32,000 characters of values, and
  an UPSERT counts twice (external-dns #2537, #3203).
* Validation: every record we send is checked first (moto accepts what AWS
  rejects); an invalid change is dropped and reported, the rest goes on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from steering.route53.records import (
    STEERED_TYPES,
    Desired,
    MarkerClaim,
    Record,
    RecordKey,
    marker_base,
    marker_name,
    marker_record,
    parse_marker,
    validate,
)

ACTIONS = ("CREATE", "UPSERT", "DELETE")


@dataclass(frozen=True)
class Limits:
    records: int = 1000
    chars: int = 32000


@dataclass(frozen=True)
class Change:
    action: str  # CREATE | UPSERT | DELETE
    record: Record
    reason: str = ""  # "missing", "differs: weight 12 -> 0", "not desired", "owner marker", ...

    def to_api(self) -> dict[str, Any]:
        return {"Action": self.action, "ResourceRecordSet": self.record.to_api()}

    def cost(self) -> tuple[int, int]:
        """(ResourceRecord elements, value characters) as Route 53 counts them against a batch."""
        times = 2 if self.action == "UPSERT" else 1
        return max(1, len(self.record.values)) * times, self.record.value_chars() * times


Unit = tuple[Change, ...]  # changes that must travel in one batch


@dataclass(frozen=True)
class ChangePlan:
    batches: tuple[tuple[Change, ...], ...]
    conflicts: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    current_records: int = 0
    owned_records: int = 0
    desired_records: int = 0

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(c for b in self.batches for c in b)

    @property
    def empty(self) -> bool:
        return not self.batches

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ACTIONS, 0)
        for c in self.changes:
            out[c.action] += 1
        return out


@dataclass
class _Ownership:
    owner: str
    claims: dict[str, MarkerClaim] = field(default_factory=dict)

    def ours(self, name: str) -> frozenset[str]:
        claim = self.claims.get(name)
        return claim.types if claim is not None and claim.owner == self.owner else frozenset()

    def owns(self, record: Record) -> bool:
        base = marker_base(record.name)
        if base is not None and record.type == "TXT":
            claim = self.claims.get(base)
            return claim is not None and claim.owner == self.owner
        return record.type in self.ours(record.name)

    def blocked(self, name: str) -> str | None:
        claim = self.claims.get(name)
        if claim is None or claim.owner == self.owner:
            return None
        if claim.owner is None:
            return f"{marker_name(name)} holds a TXT record that is not a steering marker"
        return f"claimed by owner {claim.owner!r}"


def ownership(current: Iterable[Record], owner: str) -> _Ownership:
    own = _Ownership(owner)
    markers: dict[str, list[Record]] = defaultdict(list)
    for r in current:
        base = marker_base(r.name)
        if base is not None and r.type == "TXT":
            markers[base].append(r)
    for base, recs in markers.items():
        own.claims[base] = parse_marker(recs[0]) if len(recs) == 1 else MarkerClaim(None, frozenset())
    return own


def compute_plan(desired: Desired, current: Sequence[Record], owner: str, zone_name: str | None = None,
                 limits: Limits = Limits()) -> ChangePlan:
    """The plan in named steps (like ExternalDNS's ``plan.Calculate``), each a function below."""
    zone = _read_zone(current, owner)
    want, conflicts = _writable(desired, zone)
    group_of = _grouping(desired)
    diff = _diff(want, zone, group_of)
    units, invalid = _validated(diff.units, zone_name, limits)
    markers = _marker_updates(zone, diff, group_of)
    return ChangePlan(
        batches=tuple(tuple(b) for b in pack(_ordered(units, markers, zone, owner, limits), limits)),
        conflicts=tuple(conflicts),
        invalid=tuple(invalid),
        notes=tuple(desired.notes),
        current_records=len(zone.records),
        owned_records=sum(1 for r in zone.records.values() if zone.own.owns(r)),
        desired_records=len(want),
    )


NameType = tuple[str, str]
Phased = tuple[int, Unit]  # a unit and its order inside its service (``_phase``)
MarkerUpdate = tuple[str, frozenset[str], frozenset[str]]  # (name, types claimed now, types to claim)


@dataclass(frozen=True)
class _Zone:
    """What the zone holds, as the plan reads it."""

    records: dict[RecordKey, Record]  # one per key: a broken paginator may repeat records; the first stands
    own: _Ownership
    by_nt: dict[NameType, list[Record]]


def _read_zone(current: Sequence[Record], owner: str) -> _Zone:
    """Step 0: index the current records and read the ownership markers."""
    cur: dict[RecordKey, Record] = {}
    for r in current:
        cur.setdefault(r.key, r)
    by_nt: dict[NameType, list[Record]] = defaultdict(list)
    for r in cur.values():
        by_nt[(r.name, r.type)].append(r)
    return _Zone(cur, ownership(cur.values(), owner), by_nt)


def _writable(desired: Desired, zone: _Zone) -> tuple[dict[RecordKey, Record], list[str]]:
    """Step 1: the desired records we may write, and a conflict line for each (name, type) we may not."""
    own = zone.own
    conflicts: list[str] = []
    want_nt: dict[NameType, list[Record]] = defaultdict(list)
    for rec in desired.records.values():
        want_nt[(rec.name, rec.type)].append(rec)
    kept: set[NameType] = set()
    for (name, rtype) in sorted(want_nt):
        why = own.blocked(name)
        if why is None:
            there = zone.by_nt.get((name, rtype), []) + zone.by_nt.get((name, "CNAME"), [])
            foreign = [r for r in there if not own.owns(r)]
            if foreign:
                why = f"{len(foreign)} foreign record(s) there, e.g. {foreign[0].key}"
        if why:
            conflicts.append(f"{name} {rtype}: left alone, {why}")
        else:
            kept.add((name, rtype))
    # an alias whose target set we may not write would point at someone else's records
    for (name, rtype) in sorted(kept):
        for rec in want_nt[(name, rtype)]:
            if rec.alias is not None and (rec.alias[1], rtype) not in kept:
                conflicts.append(f"{rec.key}: not published, its target {rec.alias[1]} {rtype} is not ours")
    want: dict[RecordKey, Record] = {
        r.key: r for nt in kept for r in want_nt[nt]
        if not (r.alias is not None and (r.alias[1], nt[1]) not in kept)
    }
    return want, conflicts


def _grouping(desired: Desired) -> Callable[[str], str]:
    """Which service a name belongs to (the longest service name it is or ends in; "" for none): the
    changes of one service travel together."""
    services = sorted(set(desired.service_of.values()), key=lambda s: (-len(s), s))

    def group_of(name: str) -> str:
        for s in services:
            if name == s or name.endswith("." + s):
                return s
        return ""

    return group_of


@dataclass(frozen=True)
class _Diff:
    units: dict[str, list[Phased]]  # per service: the changes, with their phase
    owned_nt: set[NameType]  # (name, type)s we own now (markers aside)
    new_types: dict[str, set[str]]  # name -> the types we will own there


def _diff(want: Mapping[RecordKey, Record], zone: _Zone, group_of: Callable[[str], str]) -> _Diff:
    """Step 2: diff every (name, type) we own now or will own: create, upsert, delete (a policy change is a
    DELETE and a CREATE in one unit)."""
    own = zone.own
    units: dict[str, list[Phased]] = defaultdict(list)
    owned_nt = {(r.name, r.type) for r in zone.records.values()
                if own.owns(r) and not (r.type == "TXT" and marker_base(r.name) is not None)}
    new_types: dict[str, set[str]] = defaultdict(set)
    for key in want:
        new_types[key.name].add(key.type)
    for nt in sorted(owned_nt | {(k.name, k.type) for k in want}):
        have = {r.key: r for r in zone.by_nt.get(nt, ()) if own.owns(r)}
        wanted = {k: r for k, r in want.items() if (k.name, k.type) == nt}
        for key in sorted(wanted):
            new = wanted[key]
            old = have.get(key)
            if old is None:
                units[group_of(key.name)].append((_phase(new, "CREATE"), (Change("CREATE", new, "missing"),)))
            elif old != new:
                diff = _describe_diff(old, new)
                if old.policy == new.policy:
                    units[group_of(key.name)].append((_phase(new, "UPSERT"), (Change("UPSERT", new, diff),)))
                else:
                    pair = (Change("DELETE", old, f"routing policy {old.policy} -> {new.policy}"),
                            Change("CREATE", new, diff))
                    units[group_of(key.name)].append((_phase(new, "CREATE"), pair))
        for key in sorted(set(have) - set(wanted)):
            old = have[key]
            units[group_of(key.name)].append((_phase(old, "DELETE"), (Change("DELETE", old, "not desired"),)))
    return _Diff(units, owned_nt, new_types)


def _validated(units: Mapping[str, list[Phased]], zone_name: str | None,
               limits: Limits) -> tuple[dict[str, list[Phased]], list[str]]:
    """Step 3: validate before anything is sent; an invalid unit is dropped and reported."""
    invalid: list[str] = []
    out: dict[str, list[Phased]] = {}
    for group, phased in units.items():
        good = []
        for phase, unit in phased:
            problems = [f"{c.action} {c.record.key}: {p}" for c in unit if c.action != "DELETE"
                        for p in validate(c.record, zone_name)]
            r_cost = sum(c.cost()[0] for c in unit)
            c_cost = sum(c.cost()[1] for c in unit)
            if r_cost > limits.records - 4 or c_cost > limits.chars - 2000:
                problems.append(f"{unit[0].action} {unit[0].record.key}: too large for one change batch")
            if problems:
                # The marker keeps claiming the (name, type): a claim without a record is harmless,
                # while dropping it could orphan records we still own there.
                invalid.extend(problems)
            else:
                good.append((phase, unit))
        out[group] = good
    return out, invalid


def _marker_updates(zone: _Zone, diff: _Diff, group_of: Callable[[str], str]) -> dict[str, list[MarkerUpdate]]:
    """Step 4: per service, each marker's claimed types now and after the plan."""
    own = zone.own
    names = sorted({n for n in diff.new_types} | {n for (n, _t) in diff.owned_nt}
                   | {n for n in own.claims if own.ours(n)})
    updates: dict[str, list[MarkerUpdate]] = defaultdict(list)
    for name in names:
        if own.blocked(name):
            continue
        claimed = own.ours(name) if name in own.claims else None
        wanted_types = frozenset(diff.new_types.get(name, ()))
        if claimed is None and not wanted_types:
            continue
        updates[group_of(name)].append((name, claimed if claimed is not None else frozenset(), wanted_types))
    return updates


def _ordered(units: Mapping[str, list[Phased]], markers: Mapping[str, list[MarkerUpdate]], zone: _Zone,
             owner: str, limits: Limits) -> list[list[Unit]]:
    """Step 5: per service (named ones first), markers that grow, the changes by phase, markers that shrink.
    A service that fits one batch changes each marker once; a larger one grows it to the union first and
    shrinks it last, so a crash between its batches never leaves a record of ours unclaimed."""
    own = zone.own
    batches_in: list[list[Unit]] = []
    for group in sorted(set(units) | set(markers), key=lambda g: (g == "", g)):
        body = [u for _p, u in sorted(units.get(group, []), key=lambda pu: pu[0])]
        size_r = sum(c.cost()[0] for u in body for c in u)
        size_c = sum(c.cost()[1] for u in body for c in u)
        head: list[Unit] = []
        tail: list[Unit] = []
        with_old = [(name, old_set, new_set,
                     zone.records.get(RecordKey(marker_name(name), "TXT")) if name in own.claims else None)
                    for name, old_set, new_set in markers.get(group, [])]
        singles = [(old_set, new_set, _marker_change(name, owner, old_rec, new_set))
                   for name, old_set, new_set, old_rec in with_old]
        size_r += sum(ch.cost()[0] for _o, _n, ch in singles if ch is not None)
        size_c += sum(ch.cost()[1] for _o, _n, ch in singles if ch is not None)
        if size_r <= limits.records and size_c <= limits.chars:
            for old_set, new_set, ch in singles:
                if ch is not None:
                    (head if new_set >= old_set else tail).append((ch,))
        else:
            for name, old_set, new_set, old_rec in with_old:
                union = old_set | new_set
                first = _marker_change(name, owner, old_rec, union)
                if first is not None:
                    head.append((first,))
                if new_set != union:
                    last = _marker_change(name, owner, marker_record(name, owner, union), new_set)
                    if last is not None:
                        tail.append((last,))
        group_units = head + body + tail
        if group_units:
            batches_in.append(group_units)
    return batches_in


def _marker_change(name: str, owner: str, old: Record | None, new_types: frozenset[str]) -> Change | None:
    if not new_types:
        return Change("DELETE", old, "owner marker: nothing owned here any more") if old is not None else None
    new = marker_record(name, owner, new_types)
    if old is None:
        return Change("CREATE", new, "owner marker")
    if old == new:
        return None
    return Change("UPSERT", new, "owner marker")


def _phase(record: Record, action: str) -> int:
    """Order inside a service: targets before aliases on the way in, aliases first on the way out."""
    alias = record.alias is not None
    if action in ("CREATE", "UPSERT"):
        return 2 if alias else 1
    return 3 if alias else 4


def _describe_diff(old: Record, new: Record) -> str:
    parts = []
    for attr in ("ttl", "values", "weight", "geo", "alias", "extra"):
        a, b = getattr(old, attr), getattr(new, attr)
        if a != b:
            parts.append(f"{attr} {_short(a)} -> {_short(b)}")
    return "differs: " + "; ".join(parts)


def _short(value: object) -> str:
    if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return "-" if value in (None, "", ()) else str(value)


def pack(groups: Sequence[Sequence[Unit]], limits: Limits = Limits()) -> list[list[Change]]:
    """Fill batches in order; a group that fits one batch is never split; no unit is ever split."""
    batches: list[list[Change]] = []
    cur: list[Change] = []
    used_r = used_c = 0

    def flush() -> None:
        nonlocal cur, used_r, used_c
        if cur:
            batches.append(cur)
        cur, used_r, used_c = [], 0, 0

    for group in groups:
        costs = [(sum(c.cost()[0] for c in u), sum(c.cost()[1] for c in u)) for u in group]
        gr, gc = sum(r for r, _ in costs), sum(c for _, c in costs)
        if gr <= limits.records and gc <= limits.chars:
            if used_r + gr > limits.records or used_c + gc > limits.chars:
                flush()
            for u in group:
                cur.extend(u)
            used_r += gr
            used_c += gc
            continue
        flush()
        for u, (ur, uc) in zip(group, costs, strict=True):
            if ur > limits.records or uc > limits.chars:
                raise ValueError(f"{u[0].record.key}: a single change exceeds the batch limits")
            if used_r + ur > limits.records or used_c + uc > limits.chars:
                flush()
            cur.extend(u)
            used_r += ur
            used_c += uc
        flush()
    flush()
    return batches


__all__ = ["ACTIONS", "STEERED_TYPES", "Change", "ChangePlan", "Limits", "compute_plan", "ownership", "pack"]
