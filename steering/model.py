"""What the planner reads besides the configuration: observed health and operator overrides.

Plain frozen dataclasses with a JSON form, because the same records are held
in etcd (``health/<site>``, ``overrides/...``), sent over gRPC and written by
hand in the offline state file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from steering import limits
from steering.textsafe import printable

Status = Literal["healthy", "unhealthy", "silent", "unknown"]
STATUSES: tuple[str, ...] = ("healthy", "unhealthy", "silent", "unknown")


@dataclass(frozen=True)
class Check:
    """One failing health check as a health record keeps it: what failed and why (no latency, no history)."""

    name: str
    kind: str = ""  # http | tcp | grpc
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        if not isinstance(data, Mapping):
            raise ValueError(f"checks: {data!r} is not an object")
        return cls(name=str(data.get("name") or "unnamed"), kind=str(data.get("kind", "")),
                   detail=str(data.get("detail", "")))


# A health record stays small: at most this many failing checks, each detail cut to this length.
MAX_CHECKS = 8
MAX_CHECK_DETAIL = 120


@dataclass(frozen=True)
class ReporterView:
    """One reporter's view of a target, as the leader merged it: the target's local agent (``local``) or an
    observer probing it from elsewhere (its agent_id). Never stored: built from the health records."""

    reporter: str
    role: Literal["local", "observer"] = "local"
    status: Status = "silent"  # healthy | unhealthy | silent (no record: not heard within the silence timeout)
    updated_at: float = 0.0  # its record's, the time of its last state change (0: silent)
    geos: tuple[str, ...] = ()  # the client geos an observer stands for
    detail: str = ""  # its failing checks, one line
    heard_by: str = ""  # the replica whose record is the newest

    @property
    def counted(self) -> bool:
        """Counts toward the quorum: a silent reporter does not."""
        return self.status in ("healthy", "unhealthy")


@dataclass(frozen=True)
class TargetHealth:
    """The observed state of one region or cache site.

    ``unknown`` means no report yet: the planner treats it as serving, so a
    fresh control plane does not refuse everything while agents connect.
    ``capacity``/``load`` of None mean "not reported": the config's capacity
    stands and the load counts as zero.
    """

    status: Status = "unknown"
    capacity: float | None = None
    load: float | None = None
    updated_at: float = 0.0
    detail: str = ""
    # The failing checks of the report that wrote this record (empty when all pass); absent from the
    # JSON when empty, so records written before this field existed read back the same.
    checks: tuple[Check, ...] = ()
    # Filled by the leader's merge for a target with observers (docs/health.md), never stored: each
    # reporter's view, and the client geos whose observers cannot reach it (the planner drops it from
    # those geos under policy.health.per_geo_reachability).
    reporters: tuple[ReporterView, ...] = ()
    unreachable_from: tuple[str, ...] = ()

    @property
    def can_serve(self) -> bool:
        return self.status in ("healthy", "unknown")

    def to_dict(self) -> dict[str, Any]:
        # The record's form: what one reporter said (the merge's views are not part of it).
        out: dict[str, Any] = {"status": self.status}
        if self.capacity is not None:
            out["capacity"] = self.capacity
        if self.load is not None:
            out["load"] = self.load
        out["updated_at"] = self.updated_at
        out["detail"] = self.detail
        if self.checks:
            out["checks"] = [c.to_dict() for c in self.checks]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetHealth:
        status = str(data.get("status", "unknown"))
        if status not in STATUSES:
            raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        return cls(
            status=status,  # type: ignore[arg-type]  # checked against STATUSES just above; mypy cannot narrow str to the Literal
            capacity=_opt_number(data, "capacity"),
            load=_opt_number(data, "load"),
            updated_at=limits.number("updated_at", data.get("updated_at", 0.0), limits.STARTED_AT),
            detail=str(data.get("detail", "")),
            checks=_checks(data.get("checks")),
        )


# The ingest makes one TargetHealth per agent report, thousands a second: the frozen dataclass __init__ (one
# object.__setattr__ per field) is most of that. ``reported_health`` fills the instance dict directly instead,
# an equal object (as planner._state does for TargetState).
_HEALTH_FIELDS = ("status", "capacity", "load", "updated_at", "detail", "checks", "reporters", "unreachable_from")
if tuple(f.name for f in fields(TargetHealth)) != _HEALTH_FIELDS:
    raise RuntimeError("steering.model.TargetHealth changed its fields: update reported_health")


def reported_health(status: Status, capacity: float | None, load: float | None, updated_at: float, detail: str,
                    checks: tuple[Check, ...]) -> TargetHealth:
    """``TargetHealth(status, capacity, load, updated_at, detail, checks)``, equal and cheaper."""
    h = object.__new__(TargetHealth)
    d = h.__dict__
    d["status"] = status
    d["capacity"] = capacity
    d["load"] = load
    d["updated_at"] = updated_at
    d["detail"] = detail
    d["checks"] = checks
    d["reporters"] = ()
    d["unreachable_from"] = ()
    return h


@dataclass(frozen=True)
class Evacuation:
    """An operator's (or the controller's) decision to move traffic off a region.

    ``mode == "now"`` empties the region in one step. A ramp empties it by
    ``step`` of its normal share every ``interval`` seconds, counted from
    ``started_at``, so the progress is a pure function of time and survives a
    leader change.
    """

    region: str
    mode: Literal["now", "ramp"] = "now"
    step: float = 1.0
    interval: float = 30.0
    started_at: float = 0.0
    reason: str = ""
    actor: str = ""
    forced: bool = False
    request_id: str = ""

    def remaining(self, now: float) -> float:
        """Share of the region's normal traffic it still gets at ``now`` by the record's own clock, in [0, 1].

        The leader does not use this: it counts steps from the table (``planner``), so a clock that
        disagrees with the one that wrote ``started_at`` cannot move the ramp back or finish it early."""
        if self.mode == "now":
            return 0.0
        return self.left(1 + max(0, math.floor((now - self.started_at) / self.interval)))

    def left(self, steps: int) -> float:
        """Share of the region's normal traffic it still gets after ``steps`` steps, in [0, 1]."""
        return 0.0 if self.mode == "now" else max(0.0, 1.0 - self.step * steps)

    def describe(self) -> str:
        if self.mode == "now":
            return "now"
        return f"ramp {self.step:.0%}/{self.interval:g}s"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evacuation:
        """Raises ValueError (a ``limits.LimitError`` for numbers) naming the field the planner cannot use."""
        mode = data.get("mode", "now")
        if mode not in ("now", "ramp"):
            raise ValueError(f"mode: {limits.show(mode)} is not 'now' or 'ramp'")
        if mode == "ramp":
            step, interval = _ramp(data, 0.25)
        else:  # step and interval mean nothing to an evacuation "now": a stray value must not cost the record
            step, interval = 1.0, _lenient(data.get("interval"), limits.RAMP_INTERVAL, 30.0)
        forced = data.get("forced", False)
        if not isinstance(forced, bool):
            raise ValueError(f"forced: {limits.show(forced)} is not true or false")
        return cls(
            region=_region(data),
            mode=mode,
            step=step,
            interval=interval,
            started_at=limits.number("started_at", data.get("started_at", 0.0), limits.STARTED_AT),
            reason=limits.clip(data.get("reason", ""), limits.MAX_REASON),
            actor=limits.clip(data.get("actor", ""), limits.MAX_ACTOR),
            forced=forced,
            request_id=limits.clip(data.get("request_id", ""), limits.MAX_REQUEST_ID),
        )


@dataclass(frozen=True)
class Restore:
    """A ramped return of a region after an evacuation: ``step`` more of its share per ``interval``."""

    region: str
    step: float = 0.25
    interval: float = 30.0
    started_at: float = 0.0
    reason: str = ""
    actor: str = ""

    def restored(self, now: float) -> float:
        """Share back at ``now`` by the record's own clock (see ``Evacuation.remaining``)."""
        return self.back(1 + max(0, math.floor((now - self.started_at) / self.interval)))

    def back(self, steps: int) -> float:
        """Share of its normal traffic the region has back after ``steps`` steps, in (0, 1]."""
        return min(1.0, self.step * steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Restore:
        step, interval = _ramp(data, 0.25)
        return cls(region=_region(data), step=step, interval=interval,
                   started_at=limits.number("started_at", data.get("started_at", 0.0), limits.STARTED_AT),
                   reason=limits.clip(data.get("reason", ""), limits.MAX_REASON),
                   actor=limits.clip(data.get("actor", ""), limits.MAX_ACTOR))


def ramp_steps(step: float) -> int:
    """How many steps a ramp of ``step`` takes: the least n with ``step * n >= 1`` as floats compute it, so
    it agrees with ``Evacuation.left`` reaching 0 and ``Restore.back`` reaching 1."""
    n = max(1, math.ceil(1.0 / step))
    for _ in range(4):  # 1 / step is within a unit of the answer; this settles the rounding
        if n > 1 and step * (n - 1) >= 1.0:
            n -= 1
        elif step * n < 1.0:
            n += 1
        else:
            break
    return n


@dataclass(frozen=True)
class Pin:
    """Operator-pinned weights for one (service, geo); they bypass the water-filling."""

    service: str
    geo: str
    weights: Mapping[str, int]
    reason: str = ""
    actor: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "geo": self.geo, "weights": dict(self.weights),
                "reason": self.reason, "actor": self.actor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pin:
        weights = data.get("weights")
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError("weights: missing or empty")
        if len(weights) > limits.MAX_PIN_TARGETS:
            raise ValueError(f"weights: {len(weights)} targets; at most {limits.MAX_PIN_TARGETS}")
        clean: dict[str, int] = {}
        for target, w in weights.items():
            name = limits.text("weights", target, limits.MAX_ID)
            clean[name] = limits.integer(f"weights.{name}", w, limits.PIN_WEIGHT)
        if sum(clean.values()) <= 0:
            raise ValueError("weights: all zero")
        return cls(service=_id(data, "service"), geo=_id(data, "geo"), weights=clean,
                   reason=limits.clip(data.get("reason", ""), limits.MAX_REASON),
                   actor=limits.clip(data.get("actor", ""), limits.MAX_ACTOR))


@dataclass(frozen=True)
class Skipped:
    """A stored override the planner cannot use (unreadable, out of bounds, unknown region...): left out of
    the plan and reported (a table note, a log line, ``steering_controller_skipped_records_total``)."""

    key: str  # relative to the prefix, e.g. overrides/evacuations/eu-west-1
    kind: str  # evacuation | restore | pin | unknown
    problem: str

    def note(self) -> str:
        return f"SKIPPED {printable(self.key, 120)}: {printable(self.problem, 200)}"


@dataclass(frozen=True)
class Overrides:
    evacuations: tuple[Evacuation, ...] = ()
    restores: tuple[Restore, ...] = ()
    pins: tuple[Pin, ...] = ()
    skipped: tuple[Skipped, ...] = ()  # records read but not usable; see ``steering.overridecheck``


@dataclass(frozen=True)
class Observed:
    """A snapshot of health per region and site id, and optionally measured demand per geo."""

    health: Mapping[str, TargetHealth] = field(default_factory=dict)
    demand: Mapping[str, float] | None = None


def _opt_number(data: Mapping[str, Any], key: str) -> float | None:
    if data.get(key) is None:
        return None
    return limits.number(key, data[key], limits.RATE)


def _id(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None or value == "":
        raise ValueError(f"{key}: missing")
    return limits.text(key, value, limits.MAX_ID)


def _region(data: Mapping[str, Any]) -> str:
    return _id(data, "region")


def _ramp(data: Mapping[str, Any], default_step: float) -> tuple[float, float]:
    """(step, interval) of a stored ramp, within ``limits``: a NaN here would stop every plan."""
    return (limits.number("step", data.get("step", default_step), limits.RAMP_STEP),
            limits.number("interval", data.get("interval", 30.0), limits.RAMP_INTERVAL))


def _lenient(value: Any, bounds: tuple[float, float], default: float) -> float:
    try:
        return limits.number("", value, bounds)
    except ValueError:
        return default


def _checks(value: Any) -> tuple[Check, ...]:
    if value is None:
        return ()
    # Checks only explain a status; a malformed list must not cost the record its health, so it is dropped.
    if not isinstance(value, list):
        return ()
    return tuple(Check.from_dict(c) for c in value[:MAX_CHECKS] if isinstance(c, Mapping))
