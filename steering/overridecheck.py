"""The planner's intake of operator overrides: keep what it can plan with, set aside the rest. Pure.

Records read from etcd were parsed by ``Evacuation.from_dict`` and friends,
which refuse what is out of bounds; this is the second line, for overrides
built any other way (a state file, a what-if, a record written before the
bounds existed) and for what only the configuration can judge (an unknown
region, service or geo). One record the planner cannot use must never stop
every plan: it is moved to ``Overrides.skipped`` with the reason, and the
planner notes it in the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from steering import limits
from steering.config import Config
from steering.model import Evacuation, Overrides, Pin, Restore, Skipped
from steering.textsafe import printable


def _known(config: Config) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    return (frozenset(r.id for r in config.regions), frozenset(s.name for s in config.services),
            frozenset(g.id for g in config.geos))


def _finite_in(value: Any, bounds: tuple[float, float]) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # An int is finite whatever its size (math.isfinite(10**400) would overflow); compare it as it is.
    return (isinstance(value, int) or math.isfinite(value)) and bounds[0] <= value <= bounds[1]


def _region_problem(region: Any, regions: frozenset[str]) -> str | None:
    if not isinstance(region, str) or region not in regions:
        return f"region: unknown region {limits.show(region)}"
    return None


def _ramp_problem(step: Any, interval: Any, started_at: Any) -> str | None:
    if not _finite_in(step, limits.RAMP_STEP):
        return f"step: {limits.show(step)} is not a finite number in [{limits.RAMP_STEP[0]:g}, {limits.RAMP_STEP[1]:g}]"
    if not _finite_in(interval, limits.RAMP_INTERVAL):
        lo, hi = limits.RAMP_INTERVAL
        return f"interval: {limits.show(interval)} is not a finite number in [{lo:g}, {hi:g}]"
    return _started_problem(started_at)


def _started_problem(started_at: Any) -> str | None:
    if not _finite_in(started_at, limits.STARTED_AT):
        return f"started_at: {limits.show(started_at)} is not a unix time in [0, {limits.STARTED_AT[1]:g}]"
    return None


def evacuation_problem(e: Evacuation, regions: frozenset[str]) -> str | None:
    if e.mode not in ("now", "ramp"):
        return f"mode: {limits.show(e.mode)} is not 'now' or 'ramp'"
    found = _region_problem(e.region, regions)
    if found is None:
        found = (_ramp_problem(e.step, e.interval, e.started_at) if e.mode == "ramp"
                 else _started_problem(e.started_at))
    return found


def restore_problem(r: Restore, regions: frozenset[str]) -> str | None:
    return _region_problem(r.region, regions) or _ramp_problem(r.step, r.interval, r.started_at)


def pin_problem(p: Pin, services: frozenset[str], geos: frozenset[str]) -> str | None:
    if not isinstance(p.service, str) or p.service not in services:
        return f"service: unknown service {limits.show(p.service)}"
    if not isinstance(p.geo, str) or p.geo not in geos:
        return f"geo: unknown geo {limits.show(p.geo)}"
    if not isinstance(p.weights, Mapping) or not p.weights:
        return "weights: missing or empty"
    if len(p.weights) > limits.MAX_PIN_TARGETS:
        return f"weights: {len(p.weights)} targets; at most {limits.MAX_PIN_TARGETS}"
    lo, hi = limits.PIN_WEIGHT
    for target, w in p.weights.items():
        if not isinstance(target, str):
            return f"weights: target {limits.show(target)} is not a string"
        if isinstance(w, bool) or not isinstance(w, int) or not lo <= w <= hi:
            return f"weights[{printable(target, 60)}]: {limits.show(w)} is not an integer in [{lo}, {hi}]"
    if sum(p.weights.values()) <= 0:
        return "weights: all zero"
    if not isinstance(p.reason, str):
        return f"reason: {limits.show(p.reason)} is not a string"
    return None


def _key(kind: str, *parts: Any) -> str:
    return f"overrides/{kind}/" + "/".join(printable(x, 80) for x in parts)


def usable(config: Config, overrides: Overrides) -> Overrides:
    """``overrides`` without the records the planner cannot use, which go to ``skipped`` with the reason.

    Returns ``overrides`` itself when every record is usable (the common case costs no allocation), and is
    idempotent: what it keeps passes again."""
    regions, services, geos = config.derived("overridecheck.known", _known)
    skipped: list[Skipped] = []
    evacs = []
    for e in overrides.evacuations:
        why = evacuation_problem(e, regions)
        if why is None:
            evacs.append(e)
        else:
            skipped.append(Skipped(_key("evacuations", e.region), "evacuation", why))
    restores = []
    for r in overrides.restores:
        why = restore_problem(r, regions)
        if why is None:
            restores.append(r)
        else:
            skipped.append(Skipped(_key("restores", r.region), "restore", why))
    pins = []
    for p in overrides.pins:
        why = pin_problem(p, services, geos)
        if why is None:
            pins.append(p)
        else:
            skipped.append(Skipped(_key("weights", p.service, p.geo), "pin", why))
    if not skipped:
        return overrides
    return Overrides(evacuations=tuple(evacs), restores=tuple(restores), pins=tuple(pins),
                     skipped=overrides.skipped + tuple(skipped))
