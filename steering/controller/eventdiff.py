"""Events from the difference between what the leader saw before and what it sees now. Pure.

The leader keeps one baseline per term, starting from the table in force, and
hands each new view here (docs/architecture.md §9, "Events"):

- ``health_events``: the merged health view of each plan against the last
  known status of every target: a flip names the failing checks and which
  replicas' records say what (the reporters). ``unknown`` (no report yet, a
  leader's start-up grace) is no transition: the baseline keeps the last
  status actually known, so a leader change does not replay every site.
- ``table_events``: two published tables: a target leaving or entering
  service (its weight becoming 0 or > 0 in some geos, or leaving the table),
  a geo spilling beyond its preferred target by more than the threshold
  (the planner's ``spillover`` reasons: capacity-driven, not failover), and a
  geo failing open or recovering.
- ``sink_events``: a sink's status (Route 53 sync) turning to an error, and back.
- ``leader_event``: elected, resigned, lost.

Nothing here reads a clock: ``now`` comes in. Rate limiting is ``eventlimit``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import compress
from operator import is_not

from steering import event as ev
from steering.config import TOTAL_WEIGHT, Config
from steering.controller.healthmerge import SEPARATOR, newest
from steering.controller.vantage import SLOT as SLOT_SEPARATOR
from steering.event import Event, subject
from steering.model import TargetHealth
from steering.ports import SinkStatus
from steering.table import RoutingTable

_SHOWN = 6  # names listed in one message before "and N more"


@dataclass(frozen=True)
class Target:
    kind: str  # region | site
    region: str


def targets_of(config: Config) -> dict[str, Target]:
    """Every region and site of the config, with its kind and region."""
    out = {r.id: Target("region", r.id) for r in config.regions}
    out.update({s.id: Target("site", s.region) for s in config.sites})
    return out


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _target_subject(target: str, known: Mapping[str, Target]) -> tuple[str, str]:
    """(``site/oc-nyc-1``, ``site``) for a target; a target no longer configured reads as a region."""
    kind = known[target].kind if target in known else "region"
    return subject(kind, target), kind


# ---------------------------------------------------------------- health


def baseline_of(table: RoutingTable | None) -> dict[str, str]:
    """Each target's last known status as a table holds it (``unknown`` is not known)."""
    if table is None:
        return {}
    return {t: st.health for t, st in [*table.regions.items(), *table.sites.items()] if st.health != "unknown"}


def reporters(health: TargetHealth, records: Mapping[str, TargetHealth],
              target: str, by_site: Mapping[str, list[tuple[str, str, TargetHealth]]] | None = None,
              ) -> tuple[dict[str, str], dict[str, str]]:
    """Who reported what on ``target`` (``local``: its own agent; an observer by its agent_id), and which
    replica heard each: the merge's views when the target has observers, else the newest record of each
    reporter among ``records``. ``by_site``: ``newest_by_site(records)``, when the caller asks for many
    targets (each call would otherwise go over every record)."""
    if health.reporters:
        return ({v.reporter: v.status for v in health.reporters},
                {v.reporter: v.heard_by for v in health.reporters if v.heard_by})
    said: dict[str, str] = {}
    heard: dict[str, str] = {}
    index = by_site if by_site is not None else newest_by_site(records)
    for reporter, replica, record in index.get(target, ()):
        said[reporter] = record.status
        heard[reporter] = replica
    return said, heard


def newest_by_site(records: Mapping[str, TargetHealth], sites: Iterable[str] | None = None,
                   ) -> dict[str, list[tuple[str, str, TargetHealth]]]:
    """Per site, (reporter, replica, newest record) of each of its reporters, by reporter. ``sites``: only
    these (a few targets changed among thousands: their records are found by key prefix, in one pass)."""
    if sites is not None:
        prefixes = tuple(p for site in sites for p in (f"{site}{SEPARATOR}", f"{site}{SLOT_SEPARATOR}"))
        records = {k: v for k, v in records.items() if k.startswith(prefixes)} if prefixes else {}
    out: dict[str, list[tuple[str, str, TargetHealth]]] = {}
    for (site, reporter), (replica, record) in sorted(newest(records).items()):
        out.setdefault(site, []).append((reporter, replica, record))
    return out


def health_events(baseline: Mapping[str, str], health: Mapping[str, TargetHealth],
                  records: Mapping[str, TargetHealth], known: Mapping[str, Target],
                  now: float, last: Mapping[str, TargetHealth] | None = None) -> tuple[list[Event], dict[str, str]]:
    """Transitions of the merged ``health`` against ``baseline`` (last known status per target); the
    events and the new baseline. ``records``: the ``site@replica`` records the view was merged from.
    ``last``: the merged health ``baseline`` came from (the previous call's): a target whose health is the
    very object it was there is passed over (its status is the baseline's already, or unknown again)."""
    out: list[Event] = []
    new = dict(baseline)
    changed: list[str] = []
    items = health.items() if last is None else \
        compress(health.items(), map(is_not, health.values(), map(last.get, health)))  # in C
    for target, h in items:
        status = h.status
        if status == "unknown":
            continue
        before = baseline.get(target)
        new[target] = status
        if before is not None and before != status:  # not a first sighting in this term's baseline
            changed.append(target)
    changed.sort()
    # Who reported what, for the changed targets without observers' views only: built once, by key prefix.
    by_site = newest_by_site(records, [t for t in changed if not health[t].reporters])
    for target in changed:
        h = health[target]
        before = baseline[target]
        subj, kind = _target_subject(target, known)
        checks = [c.to_dict() for c in h.checks]
        who, heard = reporters(h, records, target, by_site)
        why = "; ".join(f"{c.name}" + (f" ({c.kind})" if c.kind else "") + (f": {c.detail}" if c.detail else "")
                        for c in h.checks) or h.detail
        by = " (" + "; ".join(f"{r}: {st}" + (f" via {heard[r]}" if r in heard else "")
                              for r, st in who.items()) + ")" if who else ""
        message = f"{kind} {target} {before} -> {h.status}" + (f": {why}" if why and h.status != "healthy" else "")
        severity: ev.Severity = "info" if h.status == "healthy" else "warning"
        details: dict[str, object] = {"from": before, "to": h.status, "checks": checks, "detail": h.detail,
                                      "reporters": who, "heard_by": heard}
        if h.unreachable_from:
            details["unreachable_from"] = list(h.unreachable_from)
        if target in known and known[target].kind == "site":
            details["region"] = known[target].region
        out.append(Event(time=now, kind=ev.HEALTH_CHANGED, severity=severity, subject=subj, message=message + by,
                         details=details))
    return out, new


# ---------------------------------------------------------------- tables


# The last two tables' _serving: each table is diffed as ``after`` and then, at the next plan, as ``before``.
_SERVING: list[tuple[RoutingTable, dict[str, set[tuple[str, str]]]]] = []


def _serving(table: RoutingTable) -> dict[str, set[tuple[str, str]]]:
    """target -> the (service, geo) routes giving it a non-zero weight (callers do not change it)."""
    for known, serving in _SERVING:
        if known is table:
            return serving
    out = _serving_of(table)
    _SERVING[:] = [*_SERVING[-1:], (table, out)]
    return out


def _serving_of(table: RoutingTable) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for name, svc in table.services.items():
        for geo, route in svc.geos.items():
            for t, w in route.weights.items():
                if w > 0:
                    out.setdefault(t, set()).add((name, geo))
    return out


def _by_service(routes: set[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for service, geo in sorted(routes):
        out.setdefault(service, []).append(geo)
    return out


def _in_table(table: RoutingTable, target: str) -> bool:
    return target in table.regions or target in table.sites


def _service_events(before: RoutingTable, after: RoutingTable, known: Mapping[str, Target],
                    now: float) -> list[Event]:
    old, new = _serving(before), _serving(after)
    out: list[Event] = []
    # Only a target whose routes changed, or that left the table, has anything to say: not every site
    # (5,000 and more) at every table.
    changed = {t for t in old.keys() | new.keys() if old.get(t) != new.get(t)}
    if before.regions.keys() != after.regions.keys() or before.sites.keys() != after.sites.keys():
        changed |= (before.regions.keys() | before.sites.keys()) - after.regions.keys() - after.sites.keys()
    for target in sorted(changed):
        was, now_in = old.get(target, set()), new.get(target, set())
        removed = _in_table(before, target) and not _in_table(after, target)
        lost, gained = was - now_in, now_in - was
        subj, kind = _target_subject(target, known)
        if lost or removed:
            geos = sorted({g for _, g in lost})
            why = ""
            for service, geo in sorted(lost):
                route = after.services.get(service)
                reason = route.geos[geo].reasons.get(target, "") if route and geo in route.geos else ""
                if reason:
                    why = reason
                    break
            if removed:
                why = "removed from the table (no longer configured)"
            left = (f"{kind} {target} left service in {_names(geos)}" if geos
                    else f"{kind} {target} left the table")
            rest = "now serves no geo" if not now_in else f"still serves {len({g for _, g in now_in})} geo(s)"
            severity: ev.Severity = "warning" if not now_in else "info"
            out.append(Event(time=now, kind=ev.LEFT_SERVICE, severity=severity, subject=subj,
                             message=f"{left}; {rest}" + (f" ({why})" if why else ""),
                             details={"geos": _by_service(lost), "serving_geos": len({g for _, g in now_in}),
                                      "reason": why, "removed": removed}))
        if gained:
            geos = sorted({g for _, g in gained})
            reasons = {f"{s}/{g}": after.services[s].geos[g].reasons.get(target, "") for s, g in sorted(gained)}
            first = next((r for r in reasons.values() if r), "")
            out.append(Event(time=now, kind=ev.ENTERED_SERVICE, severity="info", subject=subj,
                             message=f"{kind} {target} entered service in {_names(geos)}"
                                     + (f" ({first})" if first else ""),
                             details={"geos": _by_service(gained), "serving_geos": len({g for _, g in now_in}),
                                      "reasons": reasons}))
    return out


def spill_shares(table: RoutingTable, threshold: float) -> dict[str, dict[str, float]]:
    """geo -> {service: share of its traffic the planner spilled (``spillover`` reasons)} above ``threshold``."""
    out: dict[str, dict[str, float]] = {}
    for name, svc in table.services.items():
        for geo, route in svc.geos.items():
            if route.fail_open:
                continue
            spilled = sum(w for t, w in route.weights.items() if route.reasons.get(t, "").startswith("spillover"))
            share = spilled / TOTAL_WEIGHT
            if share > threshold:
                out.setdefault(geo, {})[name] = round(share, 4)
    return out


def _full_targets(table: RoutingTable, geo: str, services: Mapping[str, float]) -> list[str]:
    """The targets the geo spilled from ("spillover from X")."""
    full: set[str] = set()
    for name in services:
        route = table.services[name].geos[geo]
        for t, w in route.weights.items():
            reason = route.reasons.get(t, "")
            if w > 0 and reason.startswith("spillover from "):
                full.add(reason.removeprefix("spillover from ").split(";", 1)[0].strip())
    return sorted(full)


def _spill_events(before: RoutingTable, after: RoutingTable, threshold: float, now: float) -> list[Event]:
    old, new = spill_shares(before, threshold), spill_shares(after, threshold)
    out: list[Event] = []
    for geo in sorted(set(old) | set(new)):
        if geo in new and geo not in old:
            services = new[geo]
            full = _full_targets(after, geo, services)
            worst = max(services.values())
            out.append(Event(time=now, kind=ev.SPILL_STARTED, severity="warning", subject=subject("geo", geo),
                             message=f"geo {geo} spills {worst:.0%} of its traffic beyond "
                                     f"{_names(full) or 'its preferred target'} (capacity), over the "
                                     f"{threshold:.0%} threshold, for {_names(sorted(services))}",
                             details={"services": services, "threshold": threshold, "full": full}))
        elif geo in old and geo not in new:
            out.append(Event(time=now, kind=ev.SPILL_ENDED, severity="info", subject=subject("geo", geo),
                             message=f"geo {geo} spills at most {threshold:.0%} again",
                             details={"threshold": threshold, "before": old[geo]}))
    return out


def fail_open_geos(table: RoutingTable) -> dict[str, list[str]]:
    """geo -> the services whose route for it fails open."""
    out: dict[str, list[str]] = {}
    for name, svc in sorted(table.services.items()):
        for geo, route in svc.geos.items():
            if route.fail_open:
                out.setdefault(geo, []).append(name)
    return out


def _fail_open_events(before: RoutingTable, after: RoutingTable, now: float) -> list[Event]:
    old, new = fail_open_geos(before), fail_open_geos(after)
    out: list[Event] = []
    for geo in sorted(set(old) | set(new)):
        if geo in new and geo not in old:
            services = new[geo]
            route = after.services[services[0]].geos[geo]
            why = next(iter(route.reasons.values()), "")
            notes = [n for n in after.notes if geo in n]
            out.append(Event(time=now, kind=ev.FAIL_OPEN_STARTED, severity="critical", subject=subject("geo", geo),
                             message=f"geo {geo} FAILS OPEN for {_names(services)}" + (f": {why}" if why else ""),
                             details={"services": services, "reason": why, "notes": notes,
                                      "table_version": after.version}))
        elif geo in old and geo not in new:
            out.append(Event(time=now, kind=ev.FAIL_OPEN_ENDED, severity="info", subject=subject("geo", geo),
                             message=f"geo {geo} no longer fails open: a target can serve it again",
                             details={"services": old[geo], "table_version": after.version}))
    return out


def table_events(before: RoutingTable | None, after: RoutingTable, known: Mapping[str, Target],
                 spill_threshold: float, now: float) -> list[Event]:
    """What changed from ``before`` to ``after`` (nothing when there is no ``before``: a first table is no
    change). Service changes per target, then spills and fail-open per geo."""
    if before is None:
        return []
    return [*_service_events(before, after, known, now), *_spill_events(before, after, spill_threshold, now),
            *_fail_open_events(before, after, now)]


# ---------------------------------------------------------------- sinks and leadership


def sink_events(before: SinkStatus | None, after: SinkStatus, now: float) -> list[Event]:
    """A sink's sync turning to an error (``<sink>_error``), and back (``<sink>_recovered``). A run of errors
    is one event: the first; the recovery says how long it lasted."""
    failing_before = before is not None and not before.ok
    if not after.ok and not failing_before:
        return [Event(time=now, kind=f"{after.sink}_error", severity="warning", subject=subject("sink", after.sink),
                      message=f"{after.sink} sync failed: {after.error}",
                      details={"error": after.error, "table_version": after.table_version})]
    if after.ok and failing_before and before is not None:
        return [Event(time=now, kind=f"{after.sink}_recovered", severity="info", subject=subject("sink", after.sink),
                      message=f"{after.sink} sync succeeded again (table v{after.table_version}, "
                              f"{after.change_count} changes); last error: {before.error}",
                      details={"last_error": before.error, "table_version": after.table_version,
                               "failing_since": before.started_at})]
    return []


def leader_event(kind: str, replica: str, now: float, *, previous: str = "", reason: str = "",
                 resumed: bool = False) -> Event:
    """``leader_elected`` (``previous``: the leader of the table in force; ``resumed``: the replica leads again
    under the term it gave up, which etcd kept), ``leader_resigned``, ``leader_lost``."""
    if kind == ev.LEADER_ELECTED:
        if resumed:
            return Event(time=now, kind=kind, severity="info", subject=subject("replica", replica),
                         message=f"{replica} leads again under the term it gave up: etcd kept its lease and no "
                                 f"other replica led meanwhile", details={"previous": previous, "resumed": True},
                         replica=replica)
        after = f" (the table in force was planned by {previous})" if previous and previous != replica else ""
        return Event(time=now, kind=kind, severity="info", subject=subject("replica", replica),
                     message=f"{replica} became the leader{after}", details={"previous": previous}, replica=replica)
    if kind == ev.LEADER_RESIGNED:
        return Event(time=now, kind=kind, severity="info", subject=subject("replica", replica),
                     message=f"{replica} resigned the leadership" + (f": {reason}" if reason else ""),
                     details={"reason": reason}, replica=replica)
    if kind == ev.LEADER_LOST:
        return Event(time=now, kind=kind, severity="warning", subject=subject("replica", replica),
                     message=f"{replica} lost the leadership" + (f": {reason}" if reason else ""),
                     details={"reason": reason}, replica=replica)
    raise ValueError(f"kind: {kind!r} is not a leadership event")
