"""eventdiff's service events walk only the targets whose routes changed or that left the table: the same
events as walking every target of both tables (the reference below, the code before that change)."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from steering.controller import eventdiff
from steering.controller.eventdiff import Target, _by_service, _in_table, _names, _target_subject
from steering.event import Event
from steering.table import GeoRoute, RoutingTable, ServiceRoute, TargetState

TARGETS = ["r1", "r2", "s1", "s2", "s3"]
KNOWN: dict[str, Target] = {"r1": Target("region", "r1"), "s1": Target("site", "r1"), "s2": Target("site", "r2")}
STATE = TargetState(kind="site", region="r1", health="healthy", serving=True, capacity=1.0, load=0.0,
                    planned_load=0.0, utilization=0.0)


@st.composite
def tables(draw: st.DrawFn, version: int) -> RoutingTable:
    services: dict[str, ServiceRoute] = {}
    for name in draw(st.lists(st.sampled_from(["api", "video"]), unique=True, max_size=2)):
        geos: dict[str, GeoRoute] = {}
        for geo in draw(st.lists(st.sampled_from(["g1", "g2", "g3"]), unique=True, max_size=3)):
            weights = draw(st.dictionaries(st.sampled_from(TARGETS), st.sampled_from([0, 1, 500]), max_size=4))
            reasons = {t: draw(st.sampled_from(["", "home", "spillover from r1"])) for t in weights}
            geos[geo] = GeoRoute(weights=weights, reasons=reasons)
        services[name] = ServiceRoute(targets="sites", geos=geos)
    regions = {t: STATE for t in draw(st.lists(st.sampled_from(["r1", "r2"]), unique=True))}
    sites = {t: STATE for t in draw(st.lists(st.sampled_from(["s1", "s2", "s3"]), unique=True))}
    return RoutingTable(version=version, parent_version=version - 1, generated_at=0.0, services=services,
                        regions=regions, sites=sites)


def reference(before: RoutingTable, after: RoutingTable, known: Mapping[str, Target], now: float) -> list[Event]:
    old, new = eventdiff._serving_of(before), eventdiff._serving_of(after)
    out: list[Event] = []
    for target in sorted(set(old) | set(new) | set(before.regions) | set(before.sites)):
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
            out.append(Event(time=now, kind="left_service", severity="warning" if not now_in else "info",
                             subject=subj, message=f"{left}; {rest}" + (f" ({why})" if why else ""),
                             details={"geos": _by_service(lost), "serving_geos": len({g for _, g in now_in}),
                                      "reason": why, "removed": removed}))
        if gained:
            geos = sorted({g for _, g in gained})
            reasons = {f"{s}/{g}": after.services[s].geos[g].reasons.get(target, "") for s, g in sorted(gained)}
            first = next((r for r in reasons.values() if r), "")
            out.append(Event(time=now, kind="entered_service", severity="info", subject=subj,
                             message=f"{kind} {target} entered service in {_names(geos)}"
                                     + (f" ({first})" if first else ""),
                             details={"geos": _by_service(gained), "serving_geos": len({g for _, g in now_in}),
                                      "reasons": reasons}))
    return out


@settings(max_examples=300, deadline=None)
@given(tables(1), tables(2), tables(3))
def test_service_events_equal_walking_every_target(a: RoutingTable, b: RoutingTable, c: RoutingTable) -> None:
    # Three tables in a row, as the leader diffs them (each ``after`` is the next ``before``: _serving's memo).
    assert eventdiff._service_events(a, b, KNOWN, 5.0) == reference(a, b, KNOWN, 5.0)
    assert eventdiff._service_events(b, c, KNOWN, 6.0) == reference(b, c, KNOWN, 6.0)
    assert eventdiff._service_events(a, c, KNOWN, 7.0) == reference(a, c, KNOWN, 7.0)
