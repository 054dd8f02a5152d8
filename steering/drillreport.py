"""What a drill showed, from its stored record: the report of ``steerctl drill report``. Pure.

``report`` gives the data (the JSON of ``--json``); ``markdown`` and ``text`` word it. Times are seconds
from the drill's start; "drain" is from the evacuation's submission until the first table that gave the
region no weight anywhere (DNS servers answer from that table as soon as they follow it), "return" from
the restore's submission until the table gave the region its full share back.
"""

from __future__ import annotations

import time
from typing import Any

from steering.drill import DRAINING, RESTORING, Drill, ramp_text
from steering.textsafe import printable


def _first(d: Drill, phase: str) -> float | None:
    return next((float(t["at"]) for t in d.timeline if t.get("phase") == phase), None)


def report(d: Drill) -> dict[str, Any]:
    start = d.created_at
    drain_from, restore_from = _first(d, DRAINING), _first(d, RESTORING)
    guards: dict[str, list[tuple[float, float]]] = {}
    for s in d.samples:
        for g, v in dict(s.get("values", {})).items():
            guards.setdefault(g, []).append((round(float(s["at"]) - start, 3), float(v)))
    return {
        "id": d.id, "region": d.region, "reason": d.reason, "actor": d.actor, "phase": d.phase,
        "result": d.phase if d.finished else "in flight",
        "ramp": ramp_text(d.step, d.interval), "hold_seconds": d.hold,
        "restore_ramp": ramp_text(d.restore_step, d.restore_interval),
        "guards": [*d.guards, *(f"alert:{a}" for a in d.alerts), *(f"query:{q}" for q in d.queries)],
        "started_at": start,
        "timeline": [{"phase": t.get("phase"), "at": t.get("at"), "after_seconds": round(float(t["at"]) - start, 3),
                      "note": t.get("note", "")} for t in d.timeline],
        "drain_seconds": round(d.drained_at - drain_from, 3) if d.drained_at and drain_from else None,
        "return_seconds": round(d.returned_at - restore_from, 3) if d.returned_at and restore_from else None,
        "receivers": [{"region": r, "peak_utilization": u, "hard_limit": d.hard_limit,
                       "headroom": round(d.hard_limit - u, 6)} for r, u in sorted(d.peak.items())],
        "guard_values": {g: [{"after_seconds": t, "value": v} for t, v in pts] for g, pts in guards.items()},
        "abort": ({"cause": d.abort_cause, "detail": d.abort_detail} if d.abort_cause
                  else ({"cause": "requested", "detail": d.abort_requested} if d.abort_requested else None)),
        "weights_before": d.weights_before, "weights_after": d.weights_after, "leaders": list(d.leaders),
    }


def _secs(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}s"


def _clock(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))


def markdown(d: Drill) -> str:
    r = report(d)
    p = printable
    out = [f"# Drill {r['id']}: {p(r['region'])} ({r['result']})", "",
           f"- reason: {p(r['reason'])} (by {p(r['actor']) or 'anonymous'})",
           f"- ramp {r['ramp']}, hold {r['hold_seconds']:g}s, restore {r['restore_ramp']}",
           f"- guards: {', '.join(p(g) for g in r['guards']) or 'none'}",
           f"- time until the table held none of {p(r['region'])}: {_secs(r['drain_seconds'])}",
           f"- time until it had its traffic back: {_secs(r['return_seconds'])}",
           f"- abort: {p(r['abort']['cause']) + ': ' + p(r['abort']['detail']) if r['abort'] else 'none'}",
           f"- leaders: {', '.join(p(x) for x in r['leaders']) or '-'}", "",
           "## Timeline", "", "| after | phase | note |", "|---|---|---|"]
    out += [f"| {t['after_seconds']:.1f}s | {t['phase']} | {p(t['note'])} |" for t in r["timeline"]]
    out += ["", "## Receivers", "", "| region | peak planned utilization | hard limit |", "|---|---|---|"]
    out += [f"| {p(x['region'])} | {x['peak_utilization']:.1%} | {x['hard_limit']:.0%} |" for x in r["receivers"]]
    out += ["", "## Guards over time", ""]
    for g, pts in r["guard_values"].items():
        shown = ", ".join(f"{x['after_seconds']:.0f}s={x['value']:.3g}" for x in pts[-20:])
        out.append(f"- `{p(g)}`: {shown}")
    if not r["guard_values"]:
        out.append("none")
    out += ["", "## Weights", "", f"- before: {p(r['weights_before'])}", f"- after: {p(r['weights_after'])}", ""]
    return "\n".join(out)


def text(d: Drill) -> str:
    """The same as ``markdown`` without its markup: for a terminal."""
    lines = []
    for line in markdown(d).splitlines():
        if line.startswith("|---"):
            continue
        lines.append(line.lstrip("# ").replace("`", "") if line.startswith("#") or "`" in line else line)
    return "\n".join(lines)


def status_line(d: Drill) -> str:
    since = f" since {_clock(d.phase_since)}" if d.phase_since else ""
    extra = ""
    if d.abort_cause:
        extra = f"; aborted by {d.abort_cause}: {d.abort_detail}"
    elif d.abort_requested:
        extra = f"; abort requested: {d.abort_requested}"
    return printable(f"{d.id}  {d.region}  {d.phase}{since}{extra}", 2000)
