"""One step of a drill's state machine: the drill and the live state in, the next drill and an effect out. Pure.

preflight -> draining -> holding -> restoring -> done, or (from any of them) aborted. The leader's runner
(``drillrunner.py``) calls ``advance`` every tick, carries out the effect through the operator service
(an evacuation, a ramped restore, or a restore at once), then writes the drill back: a new leader reads the
last written drill and goes on. Effects carry request ids derived from the drill id, so one carried out twice
(the old leader died between the effect and the write) is applied once.

Guards are checked at every tick in every phase but ``done``/``aborted``: in preflight a tripped guard
refuses the drill; later it restores the region at once (emergency pace), as does a region turning
unhealthy or silent, or an operator's abort.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from steering import drillguard
from steering.drill import ABORTED, DONE, DRAINING, HOLDING, MAX_SAMPLES, PREFLIGHT, RESTORING, Drill
from steering.model import Overrides
from steering.table import RoutingTable

Effect = Literal["", "evacuate", "restore", "restore_now"]
SAMPLE_SECONDS = 1.0  # at most one guard sample per this many seconds is kept
SAMPLE_REGIONS = 16  # regions whose utilization one sample keeps


@dataclass(frozen=True)
class View:
    """What the runner saw this tick: the table the leader published, the time, who runs the step, and the
    ``weights_text`` of that table (the weights before/after of the report)."""

    table: RoutingTable
    now: float
    replica: str
    summary: str
    # Prometheus guards as the runner asked them this tick: label (``alert:NAME``, ``query:PROMQL``) ->
    # (value, tripped); and how long they have gone unanswered against how long that is allowed.
    external: Mapping[str, tuple[float, bool]] = field(default_factory=dict)
    unanswered_for: float = 0.0
    unanswered_limit: float = 30.0


@dataclass(frozen=True)
class Step:
    drill: Drill
    effect: Effect = ""


def sample(table: RoutingTable) -> drillguard.Sample:
    util = {rid: (st.utilization or 0.0) if st.serving else 0.0 for rid, st in table.regions.items()}
    bad = sum(1 for st in table.regions.values() if st.health in ("unhealthy", "silent"))
    return drillguard.Sample(util, bad, table.fail_open)


def share(table: RoutingTable, region: str) -> int:
    """The region's weight summed over every geo of every service."""
    return sum(route.weights.get(region, 0) for svc in table.services.values() for route in svc.geos.values())


def weights_text(table: RoutingTable, limit: int = 2000) -> str:
    """Every route's weights on one line (``service geo: target=w ...; ...``), cut at ``limit`` characters:
    the report's weights before and after."""
    parts = []
    for name, svc in table.services.items():
        for geo, route in svc.geos.items():
            ws = " ".join(f"{t}={w}" for t, w in route.weights.items() if w)
            parts.append(f"{name} {geo}: {ws or 'none'}")
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def drained(table: RoutingTable, region: str) -> bool:
    st = table.regions.get(region)
    return st is not None and bool(st.evacuation) and share(table, region) == 0


def returned(table: RoutingTable, region: str) -> bool:
    st = table.regions.get(region)
    return st is not None and not st.evacuation and not table.converging


def steady(d: Drill, table: RoutingTable) -> bool:
    """The region is back though the table still converges for other reasons (a receiver's load moving
    traffic elsewhere): no ramp of its own, it has traffic, and its share is the same as in the last table
    sampled before this one while restoring."""
    st = table.regions.get(d.region)
    now = share(table, d.region)
    if st is None or st.evacuation or now == 0:
        return False
    older = [s for s in d.samples if int(s.get("version", table.version)) < table.version]
    return bool(older) and older[-1].get("phase") == RESTORING and older[-1].get("share") == now


def guards_of(d: Drill, regions: Mapping[str, object]) -> tuple[drillguard.Guard, ...]:
    """The drill's guards; one that no longer parses (the region left the config) is kept out, not fatal."""
    out = []
    for text in d.guards:
        try:
            out.append(drillguard.parse(text, set(regions)))
        except drillguard.GuardError:
            continue
    return tuple(out)


def trouble(d: Drill, table: RoutingTable, v: View | None = None) -> tuple[str, str] | None:
    """(cause, detail) that must end the drill now: an operator's abort, a region unhealthy or silent (the
    drilled one or a receiver), a tripped guard, a Prometheus guard firing or unanswered too long."""
    if d.abort_requested:
        return "operator", d.abort_requested
    for rid, st in table.regions.items():
        if st.health in ("unhealthy", "silent"):
            return "health", f"{rid} is {st.health}"
    hit = drillguard.first_tripped(guards_of(d, table.regions), sample(table))
    if hit is not None:
        guard, value = hit
        return "guard", f"{guard} (value {value:.4g})"
    if v is not None and (d.alerts or d.queries):
        for label, (value, firing) in v.external.items():
            if firing:
                return "prometheus", f"{label} (value {value:.4g})"
        if v.unanswered_for > v.unanswered_limit:
            return "prometheus", f"Prometheus unanswered for {v.unanswered_for:.0f}s (limit {v.unanswered_limit:g}s)"
    return None


def _observed(d: Drill, v: View) -> Drill:
    """The sample and peaks of this tick (receivers: every region but the drilled one)."""
    s = sample(v.table)
    peak = dict(d.peak)
    for rid, u in s.utilization.items():
        if rid != d.region:
            peak[rid] = max(peak.get(rid, 0.0), round(u, 6))
    samples = d.samples
    if not samples or v.now - float(samples[-1].get("at", 0.0)) >= SAMPLE_SECONDS:
        values = {str(g): round(drillguard.value(g, s), 6) for g in guards_of(d, v.table.regions)}
        values.update({label: round(value, 6) for label, (value, _) in v.external.items()})
        # the busiest regions only: a sample stays small whatever the topology (the peaks keep every receiver)
        busiest = sorted(s.utilization.items(), key=lambda kv: -kv[1])[:SAMPLE_REGIONS]
        entry = {"at": v.now, "phase": d.phase, "version": v.table.version, "share": share(v.table, d.region),
                 "values": values,
                 "utilization": {k: round(u, 6) for k, u in busiest}}
        samples = (*samples, entry)[-MAX_SAMPLES:]
    return replace(d, peak=peak, samples=samples)


def advance(d: Drill, v: View) -> Step:
    if d.finished:
        return Step(d)
    d = _observed(d.led_by(v.replica), v)
    now, table = v.now, v.table
    bad = trouble(d, table, v)
    if d.phase == PREFLIGHT:
        if bad is not None:
            cause, detail = bad
            d = replace(d, abort_cause="preflight" if cause != "operator" else cause, abort_detail=detail,
                        weights_before=v.summary, weights_after=v.summary)
            return Step(d.moved(ABORTED, now, f"{cause}: {detail}"))
        return Step(replace(d, weights_before=v.summary).moved(DRAINING, now, "evacuation submitted"), "evacuate")
    if d.phase in (DRAINING, HOLDING) and bad is not None:
        cause, detail = bad
        d = replace(d, abort_cause=cause, abort_detail=detail)
        return Step(d.moved(RESTORING, now, f"aborted by {cause}: {detail}; restoring at once"), "restore_now")
    if d.phase == DRAINING:
        if drained(table, d.region):
            d = replace(d, drained_at=now, hold_until=now + d.hold)
            return Step(d.moved(HOLDING, now, f"table v{table.version} holds none of {d.region}'s traffic"))
        return Step(d)
    if d.phase == HOLDING:
        if now >= d.hold_until:
            return Step(d.moved(RESTORING, now, "hold over; restore submitted"), "restore")
        return Step(d)
    # RESTORING
    if not d.aborted and bad is not None:
        cause, detail = bad
        d = replace(d, abort_cause=cause, abort_detail=detail)
        return Step(d.moved(RESTORING, now, f"aborted by {cause}: {detail}; restoring at once"), "restore_now")
    if returned(table, d.region) or steady(d, table):
        d = replace(d, returned_at=now, weights_after=v.summary)
        end = ABORTED if d.aborted else DONE
        return Step(d.moved(end, now, f"table v{table.version} gives {d.region} its traffic back"))
    return Step(d)


def refused(d: Drill, effect: Effect, message: str, now: float) -> Drill:
    """The effect was refused. An evacuation refused (the safety rules, another action in between) ends the
    drill with nothing changed; a refused restore leaves the restoring phase to notice the region back."""
    if effect == "evacuate":
        d = replace(d, abort_cause="preflight", abort_detail=message, weights_after=d.weights_before)
        return d.moved(ABORTED, now, f"evacuation refused: {message}")
    return replace(d, timeline=(*d.timeline, {"phase": d.phase, "at": now, "note": f"{effect}: {message}"[:300]}))


def preflight(region: str, table: RoutingTable, overrides: Overrides, active: str | None,
              guards: tuple[drillguard.Guard, ...], evacuation_refusal: str) -> list[str]:
    """Why a drill of ``region`` may not start now (empty: it may), each reason one phrase."""
    out = []
    if active:
        out.append(f"another drill is in flight: {active}")
    moving = [e.region for e in overrides.evacuations] + [r.region for r in overrides.restores]
    if moving:
        out.append(f"an evacuation or restore is in flight: {', '.join(sorted(set(moving)))}")
    for rid, st in table.regions.items():
        if st.health in ("unhealthy", "silent"):
            out.append(f"{rid} is already {st.health}")
    if table.fail_open:
        out.append("the table fails open")
    hit = drillguard.first_tripped(guards, sample(table))
    if hit is not None:
        out.append(f"guard {hit[0]} is already true (value {hit[1]:.4g})")
    if evacuation_refusal:
        out.append(f"the safety rules would refuse evacuating {region}: {evacuation_refusal}")
    return out
