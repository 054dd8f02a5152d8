"""Operator actions as pure change sets (docs/architecture.md §6): live state in, a decision out.

The shape of ExternalDNS's ``plan.Changes`` and octoDNS's ``raise_if_unsafe``:
``decide_evacuate``, ``decide_restore``, ``decide_pin`` and ``decide_unpin``
take the configuration, a validated request and the ``Live`` state the
servicer read (health the current table was planned with, the overrides,
the operator sequence they reflect, the time), and return a ``Decision``:

- a refusal naming each rule broken (and the preview, when there is one), or
- the ``Changes`` to apply (puts, deletes, every key from ``steering.store.keys``,
  and the audit record), the preview and the warnings (rules ``force`` passed).

No I/O, no clock, no randomness: the servicer (``operator.py``) checks the
request id, reads, decides, and applies ``Changes`` in one transaction that
compares ``Live.sequence``. A refused decision carries no changes. The
what-if of ``Plan`` (``what_if``) is here too: it writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from steering.config import TOTAL_WEIGHT, Config
from steering.controller import safety
from steering.model import Evacuation, Overrides, Pin, Restore, TargetHealth
from steering.store import keys
from steering.store.codec import record_bytes
from steering.table import RampProgress, RoutingTable
from steering.weights import apportion

Mode = Literal["now", "ramp"]


# ---------------------------------------------------------------------- what goes in


@dataclass(frozen=True)
class Live:
    """What the servicer read before deciding. ``sequence`` is the operator sequence of that read: the write
    compares it, so rules checked here still hold when the change lands (or the action is decided again)."""

    health: dict[str, TargetHealth]
    overrides: Overrides
    sequence: int
    now: float
    ramps: Mapping[str, RampProgress] = field(default_factory=dict)  # the table's ramp progress (conflicts)


@dataclass(frozen=True)
class EvacuateRequest:
    region: str
    mode: Mode
    step: float
    interval: float
    reason: str
    actor: str
    request_id: str
    force: bool = False


@dataclass(frozen=True)
class RestoreRequest:
    region: str
    mode: Mode
    step: float
    interval: float
    reason: str
    actor: str


@dataclass(frozen=True)
class PinRequest:
    service: str
    geo: str
    weights: Mapping[str, int]  # as asked: any positive numbers over the pinned targets, normalised here
    reason: str
    actor: str
    force: bool = False


@dataclass(frozen=True)
class UnpinRequest:
    service: str
    geo: str
    reason: str
    actor: str


# ---------------------------------------------------------------------- what comes out


@dataclass(frozen=True)
class Changes:
    """One operator action's writes: keys relative to the prefix (``steering.store.keys``), and the audit
    record (the store adds its time, id and request id)."""

    puts: Mapping[str, bytes]
    deletes: tuple[str, ...]
    audit: Mapping[str, Any]


@dataclass(frozen=True)
class Decision:
    action: str
    preview: safety.Preview | None = None
    changes: Changes | None = None
    warnings: tuple[str, ...] = ()
    refusals: tuple[safety.Refusal, ...] = field(default_factory=tuple)

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @property
    def message(self) -> str:
        """The refusal as the API words it: ``refused by <rule>: <numbers>; <rule>: ...``."""
        return "refused by " + "; ".join(str(r) for r in self.refusals)


def _refused(action: str, refusals: list[safety.Refusal], preview: safety.Preview | None = None) -> Decision:
    return Decision(action=action, preview=preview, refusals=tuple(refusals))


def _forced(action: str, refusals: list[safety.Refusal], preview: safety.Preview,
            force: bool) -> tuple[Decision | None, list[str]]:
    """Refusals stop the action unless forced; forced ones come back as warnings."""
    if refusals and not force:
        return _refused(action, refusals, preview), []
    return None, [f"forced past {r}" for r in refusals]


def summary(table: RoutingTable) -> str:
    """One line: each region's planned utilization, or why it does not serve (the audit's before/after)."""
    parts = []
    for rid, st in table.regions.items():
        if st.serving:
            parts.append(f"{rid} {st.utilization or 0:.0%}")
        else:
            parts.append(f"{rid} out (" + ("evacuated" if st.evacuation else st.health) + ")")
    return ", ".join(parts) + (" FAIL-OPEN" if table.fail_open else "")


def has_restore(overrides: Overrides, region: str) -> bool:
    """A restore record for ``region``, usable or not (an unusable one is replaced or removed with it)."""
    key = keys.restore_path(region)
    return any(r.region == region for r in overrides.restores) or any(s.key == key for s in overrides.skipped)


# ---------------------------------------------------------------------- the actions


def decide_evacuate(config: Config, req: EvacuateRequest, live: Live) -> Decision:
    """Rules: ``conflicting_evacuation``, ``min_serving_regions``, ``hard_limit`` (``force`` passes them)."""
    health, overrides, now = live.health, live.overrides, live.now
    evac = Evacuation(region=req.region, mode=req.mode, step=req.step, interval=req.interval, started_at=now,
                      reason=req.reason, actor=req.actor, forced=req.force, request_id=req.request_id)
    # Previewed as forced: the planner would block it on min_serving_regions, and the preview must show
    # what the evacuation does (the rules below decide whether it may).
    p = safety.preview(config, health, overrides,
                       safety.with_evacuation(overrides, dataclasses.replace(evac, forced=True)), now)
    stop, warnings = _forced("evacuate", safety.evacuation_refusals(config, health, overrides, evac, p, now, live.ramps), p,
                             req.force)
    if stop is not None:
        return stop
    if health.get(req.region, TargetHealth()).status in ("unhealthy", "silent"):
        warnings.append(f"{req.region} is {health[req.region].status}: it already receives no traffic")
    deletes = (keys.restore_path(req.region),) if has_restore(overrides, req.region) else ()
    audit = {"action": "evacuate", "region": req.region, "reason": req.reason, "forced": req.force,
             "actor": req.actor, "before": summary(p.before), "after": summary(p.after),
             "details": {"mode": req.mode, "step": req.step, "interval": req.interval, "warnings": warnings}}
    changes = Changes({keys.evacuation_path(req.region): record_bytes(evac.to_dict())}, deletes, audit)
    return Decision("evacuate", p, changes, tuple(warnings))


def decide_restore(config: Config, req: RestoreRequest, live: Live) -> Decision:
    """Rules: ``not_evacuated`` (or ``conflicting_evacuation`` while something ramps); ``force`` cannot pass them.

    An evacuation record the planner skips (it never took effect) can be restored too: removing it is the
    restore, at once."""
    health, overrides, now, region = live.health, live.overrides, live.now, req.region
    evac_key = keys.evacuation_path(region)
    unusable = any(s.key == evac_key for s in overrides.skipped)
    evacuated = any(e.region == region for e in overrides.evacuations)
    if not evacuated and not unusable:
        conflict = safety.check_conflicts(overrides, region, now, action="restore", ramps=live.ramps)
        return _refused("restore", [conflict if conflict is not None else
                                    safety.Refusal("not_evacuated", f"{region} has no evacuation to restore")])
    mode: Mode = req.mode if evacuated else "now"
    after = safety.without_evacuation(overrides, region)
    puts: dict[str, bytes] = {}
    if mode == "ramp":
        restore = Restore(region=region, step=req.step, interval=req.interval, started_at=now, reason=req.reason,
                          actor=req.actor)
        after = Overrides(evacuations=after.evacuations, restores=(*after.restores, restore), pins=after.pins)
        puts[keys.restore_path(region)] = record_bytes(restore.to_dict())
    p = safety.preview(config, health, overrides, after, now)
    deletes = [evac_key]
    if mode == "now" and has_restore(overrides, region):
        deletes.append(keys.restore_path(region))
    audit = {"action": "restore", "region": region, "reason": req.reason, "forced": False, "actor": req.actor,
             "before": summary(p.before), "after": summary(p.after),
             "details": {"mode": mode, "step": req.step, "interval": req.interval,
                         "removed_unusable_record": unusable}}
    return Decision("restore", p, Changes(puts, tuple(deletes), audit))


def pin_weights(config: Config, service: str, geo: str, asked: Mapping[str, int]) -> dict[str, int]:
    """The asked weights over the geo's candidates, in the planner's order, apportioned to sum to 1000."""
    order = [t for t in safety.pin_candidates(config, service, geo) if t in asked]
    return apportion({t: float(asked[t]) for t in order}, TOTAL_WEIGHT, order)


def pin_target_refusal(config: Config, req: PinRequest) -> safety.Refusal | None:
    """``no_answers`` / ``not_a_candidate``: a weight the planner would ignore. It needs only the config, so the
    servicer checks it before reading the live state; ``force`` cannot pass it: forcing could not make it happen."""
    return safety.check_pin_targets(config, req.service, req.geo, dict(req.weights))


def decide_pin(config: Config, req: PinRequest, live: Live) -> Decision:
    """Rules: ``no_answers``, ``not_a_candidate`` (never forced), ``cannot_serve``, ``hard_limit``."""
    ignored = pin_target_refusal(config, req)
    if ignored is not None:
        return _refused("pin", [ignored])
    health, overrides, service, geo = live.health, live.overrides, req.service, req.geo
    weights = pin_weights(config, service, geo, req.weights)
    pin = Pin(service=service, geo=geo, weights=weights, reason=req.reason, actor=req.actor)
    after = Overrides(evacuations=overrides.evacuations, restores=overrides.restores,
                      pins=(*(p for p in overrides.pins if (p.service, p.geo) != (service, geo)), pin))
    p = safety.preview(config, health, overrides, after, live.now)
    stop, warnings = _forced("pin", safety.pin_refusals(config, health, overrides, service, geo, weights, p), p,
                             req.force)
    if stop is not None:
        return stop
    audit = {"action": "pin", "service": service, "geo": geo, "reason": req.reason, "forced": req.force,
             "actor": req.actor, "before": summary(p.before), "after": summary(p.after),
             "details": {"weights": weights, "warnings": warnings}}
    return Decision("pin", p, Changes({keys.pin_path(service, geo): record_bytes(pin.to_dict())}, (), audit),
                    tuple(warnings))


def decide_unpin(config: Config, req: UnpinRequest, live: Live) -> Decision:
    """Rule: ``not_pinned`` (an unusable pin record may be removed too)."""
    overrides, service, geo = live.overrides, req.service, req.geo
    pin_key = keys.pin_path(service, geo)
    if (not any((p.service, p.geo) == (service, geo) for p in overrides.pins)
            and not any(s.key == pin_key for s in overrides.skipped)):
        return _refused("unpin", [safety.Refusal("not_pinned", f"{service} {geo} has no pin")])
    after = Overrides(evacuations=overrides.evacuations, restores=overrides.restores,
                      pins=tuple(p for p in overrides.pins if (p.service, p.geo) != (service, geo)))
    p = safety.preview(config, live.health, overrides, after, live.now)
    audit = {"action": "unpin", "service": service, "geo": geo, "reason": req.reason, "forced": False,
             "actor": req.actor, "before": summary(p.before), "after": summary(p.after), "details": {}}
    return Decision("unpin", p, Changes({}, (pin_key,), audit))


# ---------------------------------------------------------------------- Plan: the what-if (writes nothing)


def what_if(config: Config, live: Live, evacuate: Sequence[tuple[str, str]], restore: Sequence[str],
            healthy: Mapping[str, bool]) -> safety.Preview:
    """From the live state to the live state with these evacuations ((region, reason): forced, at once),
    restores and health."""
    overrides, now = live.overrides, live.now
    after = overrides
    for region, reason in evacuate:
        after = safety.with_evacuation(after, Evacuation(region=region, started_at=now, reason=reason, forced=True))
    for region in restore:
        after = safety.without_evacuation(after, region)
    p = safety.preview(config, live.health, overrides, after, now)
    if not healthy:
        return p
    health = dict(live.health)
    for site, ok in healthy.items():
        base = health.get(site, TargetHealth())
        health[site] = TargetHealth(status="healthy" if ok else "unhealthy", capacity=base.capacity,
                                    load=base.load, detail="what-if")
    return _merged(p, safety.preview(config, health, after, after, now))


def _merged(p: safety.Preview, what_if: safety.Preview) -> safety.Preview:
    """A preview from the live state (before) to the what-if health and overrides (after)."""
    before, after = p.before, what_if.after
    changes = []
    for name, svc in after.services.items():
        for geo, route in svc.geos.items():
            old = before.route(name, geo)
            b = dict(old.weights) if old else {}
            if b != dict(route.weights):
                changes.append(safety.GeoChange(name, geo, b, dict(route.weights)))
    regions = []
    for rid, st in after.regions.items():
        was = before.regions[rid]
        cap = st.capacity
        regions.append(safety.RegionProjection(rid, cap, was.planned_load, st.planned_load,
                                               was.planned_load / cap if cap > 0 else 0.0,
                                               st.planned_load / cap if cap > 0 else 0.0,
                                               p.regions[0].hard_limit if p.regions else 1.0))
    return safety.Preview(tuple(changes), tuple(regions), after.fail_open, before, after)
