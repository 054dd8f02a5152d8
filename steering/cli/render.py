"""Human output for steerctl: aligned tables of a routing table (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from steering.table import RoutingTable
from steering.textsafe import printable


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _safe(value: Any) -> str:
    """Table text (reasons carry operators' words) with control characters escaped and no rich markup."""
    return escape(printable(value))


def print_table(table: RoutingTable, console: Console | None = None) -> None:
    """Per service and geo, the weights; per region and site, planned load against capacity."""
    out = console or Console(width=160)
    head = f"routing table v{table.version} (parent v{table.parent_version})"
    if table.fail_open:
        head += "  [bold red]FAIL-OPEN[/]"
    if table.converging:
        head += "  [yellow]converging[/]"
    out.print(head)
    for note in table.notes:
        out.print(f"[bold red]! {_safe(note)}[/]")
    for name, svc in table.services.items():
        t = Table(title=f"{_safe(name)} (targets: {_safe(svc.targets)})", title_justify="left")
        t.add_column("geo")
        t.add_column("weights (of 1000)")
        t.add_column("why")
        for geo, route in svc.geos.items():
            weights = _safe("  ".join(f"{target} {w}" for target, w in route.weights.items() if w) or "-")
            why = _safe("; ".join(f"{target}: {route.reasons.get(target, '')}"
                                  for target, w in route.weights.items() if w))
            if route.fail_open:
                weights += "  [red](fail-open)[/]"
            if route.pinned:
                weights += "  (pinned)"
            t.add_row(_safe(geo), weights, why)
        out.print(t)
    t = Table(title="targets", title_justify="left")
    for col in ("id", "kind", "region", "health", "serving", "capacity", "planned load", "utilization", "evacuation"):
        t.add_column(col, justify="right" if col in ("capacity", "planned load", "utilization") else "left")
    for tid, st in [*table.regions.items(), *table.sites.items()]:
        t.add_row(_safe(tid), _safe(st.kind), _safe(st.region), _safe(st.health), "yes" if st.serving else "[red]no[/]",
                  f"{st.capacity:g}", f"{st.planned_load:.0f}", _pct(st.utilization), _safe(st.evacuation or "-"))
    out.print(t)
