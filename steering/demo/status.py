"""The demo's status: pure rendering of a routing table, and what changed between two tables in words
(the live view on a terminal; the lines ``events`` and ``route_changes`` give, one per change, elsewhere)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from steering.table import GeoRoute, RoutingTable
from steering.textsafe import printable


def events(before: RoutingTable | None, after: RoutingTable) -> list[str]:
    """What changed between two tables, in words an operator would say."""
    if before is None:
        # Say whether it is still ramping: a demo that starts watching late (a loaded machine) may see the
        # ramp already done, and its log must not then wait for a "converged" line that never comes.
        state = "ramping" if after.converging else "converged"
        serving = ", ".join(r for r, s in after.regions.items() if s.serving)
        return [f"v{after.version}: first table, serving {serving}; {state}"]
    out = []
    for kind, old_map, new_map in (("region", before.regions, after.regions), ("site", before.sites, after.sites)):
        for t, st in new_map.items():
            old = old_map.get(t)
            if old is None:
                continue
            if old.health != st.health:
                out.append(f"v{after.version}: {kind} {t} {old.health} -> {st.health}")
            if old.serving != st.serving:
                out.append(f"v{after.version}: {kind} {t} {'back in service' if st.serving else 'out of service'}")
            if old.evacuation != st.evacuation and st.evacuation:
                out.append(f"v{after.version}: {kind} {t} evacuation {st.evacuation}")
            elif old.evacuation and not st.evacuation:
                out.append(f"v{after.version}: {kind} {t} evacuation ended")
    out += _reach(before, after)
    if after.fail_open and not before.fail_open:
        out.append(f"v{after.version}: FAIL-OPEN: " + "; ".join(after.notes))
    if after.converging and not before.converging:
        out.append(f"v{after.version}: ramping (one step per policy.step_seconds)")
    if before.converging and not after.converging:
        out.append(f"v{after.version}: converged")
    return out


def split(route: GeoRoute) -> str:
    """Where a route sends its traffic: ``us-east-1 70%  us-west-2 30%`` (and its flags)."""
    where = "  ".join(f"{t} {w / 10:.0f}%" if w >= 10 else f"{t} {w / 10:.1f}%" for t, w in route.serving())
    where = where or "nowhere"
    return where + ("  (fail-open)" if route.fail_open else "")


def route_changes(before: RoutingTable | None, after: RoutingTable) -> list[str]:
    """One line per service and geo whose traffic goes elsewhere than in ``before`` (each of them for the
    first table): ``v7: api.example.test. europe -> eu-west-1 60%  us-east-1 40%``."""
    out = []
    for name, svc in after.services.items():
        old_svc = before.services.get(name) if before is not None else None
        for geo, route in svc.geos.items():
            old = old_svc.geos.get(geo) if old_svc is not None else None
            if old is None or split(old) != split(route):
                out.append(f"v{after.version}: {name} {geo} -> {printable(split(route))}")
    return out


def _unreachable(table: RoutingTable) -> set[tuple[str, str]]:
    """(target, geo) pairs the table leaves out for reachability (the planner's "unreachable from" reason)."""
    return {(t, geo) for svc in table.services.values() for geo, route in svc.geos.items()
            for t, why in route.reasons.items() if why.startswith("unreachable from")}


def _reach(before: RoutingTable, after: RoutingTable) -> list[str]:
    old, new = _unreachable(before), _unreachable(after)
    lines = [f"v{after.version}: {t} unreachable from {g}: {g} leaves it, other geos keep it" for t, g in sorted(new - old)]
    lines += [f"v{after.version}: {t} reachable from {g} again" for t, g in sorted(old - new)]
    return lines


def render(table: RoutingTable | None, recent: list[str], hint: str) -> Table:
    """The live view: the table's targets, where each geo's traffic goes, recent events, and ``hint``."""
    grid = Table.grid(padding=(0, 2))
    if table is None:
        grid.add_row("waiting for the first routing table ...")
        return grid
    head = f"routing table v{table.version}  leader {escape(printable(table.leader or '?'))}"
    if table.fail_open:
        head += "  [bold red]FAIL-OPEN[/]"
    if table.converging:
        head += "  [yellow]ramping[/]"
    grid.add_row(head)
    regions = Table(box=None, show_edge=False, pad_edge=False)
    for col in ("target", "health", "serving", "capacity", "load", "planned", "util", "evacuation"):
        regions.add_column(col, justify="right" if col in ("capacity", "load", "planned", "util") else "left")
    for t, st in [*table.regions.items(), *table.sites.items()]:
        colour = "green" if st.health == "healthy" else ("yellow" if st.health == "unknown" else "red")
        util = "-" if st.utilization is None else f"{st.utilization:.0%}"
        regions.add_row(t, f"[{colour}]{st.health}[/]", "yes" if st.serving else "[red]no[/]", f"{st.capacity:.0f}",
                        f"{st.load:.0f}", f"{st.planned_load:.0f}", util, st.evacuation or "")
    grid.add_row(regions)
    for name, svc in table.services.items():
        geos = Table(box=None, show_edge=False, pad_edge=False, title=name, title_justify="left")
        geos.add_column("geo")
        geos.add_column("traffic goes to")
        for geo, route in svc.geos.items():
            where = "  ".join(f"{t} {w / 10:.0f}%" for t, w in route.serving())
            cut = [t for t, why in route.reasons.items() if why.startswith("unreachable from")]
            geos.add_row(geo, where + ("  [red](fail-open)[/]" if route.fail_open else "")
                         + (f"  [yellow](unreachable: {', '.join(cut)})[/]" if cut else ""))
        grid.add_row(geos)
    if recent:
        grid.add_row("recent events:")
        for e in recent[-8:]:
            grid.add_row(f"  {escape(printable(e))}")  # notes can quote stored text
    grid.add_row(escape(hint))
    return grid
