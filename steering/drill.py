"""A chaos drill as stored in etcd (``drills/items/<id>``): a practice evacuation and everything seen on the way.

Pure: no I/O, no clock. The leader advances it (``steering.controller.drillstep``) and writes it back after
every step, so a new leader resumes where the last one stopped (docs/drills.md). Every list is bounded, every
number checked on the way back in (``from_dict`` raises ``ValueError`` naming the field; the reader skips the
record and reports it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from steering import limits

PREFLIGHT, DRAINING, HOLDING, RESTORING, DONE, ABORTED = "preflight", "draining", "holding", "restoring", "done", \
    "aborted"
PHASES = (PREFLIGHT, DRAINING, HOLDING, RESTORING, DONE, ABORTED)
FINISHED = (DONE, ABORTED)
HOLD_SECONDS = (0.0, 7 * 86400.0)
MAX_SAMPLES = 120  # guard samples kept (oldest dropped past this: the report shows the latest)
MAX_TIMELINE = 32
MAX_NOTE = 300
_ID = re.compile(r"^d-[0-9a-z]{1,40}$")
_RAMP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def check_id(value: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"id: {limits.show(value)} is not a drill id (d-<letters and digits>)")
    return value


def parse_ramp(field_name: str, text: str) -> tuple[float, float]:
    """``25%/60s`` -> (0.25, 60.0); ValueError naming ``field_name``."""
    m = _RAMP.match(text or "")
    if m is None:
        raise ValueError(f"{field_name}: {limits.show(text)} is not STEP%/INTERVAL (e.g. 25%/60s)")
    step = limits.number(f"{field_name} step", float(m.group(1)) / 100, limits.RAMP_STEP)
    interval = limits.number(f"{field_name} interval", float(m.group(2)) * _UNIT[m.group(3)], limits.RAMP_INTERVAL)
    return step, interval


def parse_duration(field_name: str, text: str, bounds: tuple[float, float]) -> float:
    """``10m`` -> 600.0; ValueError naming ``field_name``."""
    m = _DURATION.match(text or "")
    if m is None:
        raise ValueError(f"{field_name}: {limits.show(text)} is not a duration (e.g. 90s, 10m, 1h)")
    return limits.number(field_name, float(m.group(1)) * _UNIT[m.group(2)], bounds)


def ramp_text(step: float, interval: float) -> str:
    return f"{step * 100:g}%/{interval:g}s"


@dataclass(frozen=True)
class Drill:
    id: str
    region: str
    reason: str
    actor: str = ""
    step: float = 0.25
    interval: float = 60.0
    hold: float = 600.0
    restore_step: float = 0.25
    restore_interval: float = 60.0
    guards: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()  # Prometheus alerts that abort when firing
    queries: tuple[str, ...] = ()  # PromQL that aborts when it returns a series
    phase: str = PREFLIGHT
    created_at: float = 0.0
    phase_since: float = 0.0
    hold_until: float = 0.0  # set on entering holding
    drained_at: float = 0.0  # when the table first held none of the region's traffic
    returned_at: float = 0.0  # when the table gave the region its full share back
    hard_limit: float = 1.0
    timeline: tuple[Mapping[str, Any], ...] = ()  # {phase, at, note}
    samples: tuple[Mapping[str, Any], ...] = ()  # {at, values: {guard: value}, utilization: {region: u}}
    peak: Mapping[str, float] = field(default_factory=dict)  # receiver -> highest planned utilization seen
    abort_requested: str = ""  # an operator's abort reason, picked up by the leader
    abort_cause: str = ""  # guard | health | operator | preflight | the safety rules
    abort_detail: str = ""
    weights_before: str = ""  # ``actions.summary`` of the tables at start and at the end
    weights_after: str = ""
    leaders: tuple[str, ...] = ()  # replicas that ran a step, in order
    schedule: str = ""  # the schedule that started it (empty: an operator did)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def aborted(self) -> bool:
        return bool(self.abort_cause)

    def moved(self, phase: str, now: float, note: str = "") -> Drill:
        entry = {"phase": phase, "at": now, "note": limits.clip(note, MAX_NOTE)}
        return replace(self, phase=phase, phase_since=now, timeline=(*self.timeline, entry)[-MAX_TIMELINE:])

    def led_by(self, replica: str) -> Drill:
        if self.leaders and self.leaders[-1] == replica:
            return self
        return replace(self, leaders=(*self.leaders, limits.clip(replica, 64))[-MAX_TIMELINE:])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["guards"] = list(self.guards)
        out["alerts"] = list(self.alerts)
        out["queries"] = list(self.queries)
        out["timeline"] = [dict(t) for t in self.timeline]
        out["samples"] = [dict(s) for s in self.samples]
        out["leaders"] = list(self.leaders)
        out["peak"] = dict(self.peak)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Drill:
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        phase = data.get("phase")
        if phase not in PHASES:
            raise ValueError(f"phase: {limits.show(phase)} is not one of {', '.join(PHASES)}")

        def num(name: str, bounds: tuple[float, float], default: float = 0.0) -> float:
            return limits.number(name, data.get(name, default), bounds)

        def items(name: str, limit: int) -> tuple[Mapping[str, Any], ...]:
            v = data.get(name, [])
            if not isinstance(v, list) or not all(isinstance(x, Mapping) for x in v):
                raise ValueError(f"{name}: not a list of objects")
            for i, x in enumerate(v[-limit:]):  # what the report reads of each entry
                limits.number(f"{name}[{i}].at", x.get("at"), limits.STARTED_AT)
                values = x.get("values", {})
                if not isinstance(values, Mapping):
                    raise ValueError(f"{name}[{i}].values: not an object")
                for k, n in values.items():
                    limits.number(f"{name}[{i}].values.{str(k)[:40]}", n, (-1e12, 1e12))
            return tuple(v[-limit:])

        guards = data.get("guards", [])
        if not isinstance(guards, list) or len(guards) > 16:
            raise ValueError("guards: not a list of at most 16")
        prom = {}
        for name in ("alerts", "queries"):
            v = data.get(name, [])
            if not isinstance(v, list) or len(v) > 16:
                raise ValueError(f"{name}: not a list of at most 16")
            prom[name] = tuple(limits.clip(x, 1000) for x in v)
        peak = data.get("peak", {})
        if not isinstance(peak, Mapping):
            raise ValueError("peak: not an object")
        leaders = data.get("leaders", [])
        if not isinstance(leaders, list):
            raise ValueError("leaders: not a list")
        region = limits.text("region", data.get("region"), limits.MAX_ID)
        if not region:
            raise ValueError("region: missing")
        return cls(
            id=check_id(str(data.get("id", ""))), region=region,
            reason=limits.clip(data.get("reason", ""), limits.MAX_REASON),
            actor=limits.clip(data.get("actor", ""), limits.MAX_ACTOR),
            step=num("step", limits.RAMP_STEP, 0.25), interval=num("interval", limits.RAMP_INTERVAL, 60.0),
            hold=num("hold", HOLD_SECONDS),
            restore_step=num("restore_step", limits.RAMP_STEP, 0.25),
            restore_interval=num("restore_interval", limits.RAMP_INTERVAL, 60.0),
            guards=tuple(limits.clip(g, 200) for g in guards), alerts=prom["alerts"], queries=prom["queries"],
            phase=str(phase),
            created_at=num("created_at", limits.STARTED_AT), phase_since=num("phase_since", limits.STARTED_AT),
            hold_until=num("hold_until", limits.STARTED_AT), drained_at=num("drained_at", limits.STARTED_AT),
            returned_at=num("returned_at", limits.STARTED_AT), hard_limit=num("hard_limit", (0.0, 1e6), 1.0),
            timeline=items("timeline", MAX_TIMELINE), samples=items("samples", MAX_SAMPLES),
            peak={limits.clip(k, limits.MAX_ID): limits.number(f"peak.{k}", v, (0.0, 1e9)) for k, v in peak.items()},
            abort_requested=limits.clip(data.get("abort_requested", ""), limits.MAX_REASON),
            abort_cause=limits.clip(data.get("abort_cause", ""), 64),
            abort_detail=limits.clip(data.get("abort_detail", ""), limits.MAX_REASON),
            weights_before=limits.clip(data.get("weights_before", ""), 2000),
            weights_after=limits.clip(data.get("weights_after", ""), 2000),
            leaders=tuple(limits.clip(x, 64) for x in leaders[-MAX_TIMELINE:]),
            schedule=limits.clip(data.get("schedule", ""), 64),
        )
