"""What the planner reads besides the configuration: observed health and operator overrides.

Plain frozen dataclasses with a JSON form, because the same records are held
in etcd (``health/<site>``, ``overrides/...``), sent over gRPC and written by
hand in the offline state file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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

    @property
    def can_serve(self) -> bool:
        return self.status in ("healthy", "unknown")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "checks"}
        if self.checks:
            out["checks"] = [c.to_dict() for c in self.checks]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetHealth:
        status = str(data.get("status", "unknown"))
        if status not in STATUSES:
            raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        return cls(
            status=status,  # type: ignore[arg-type]
            capacity=_opt_number(data, "capacity"),
            load=_opt_number(data, "load"),
            updated_at=float(data.get("updated_at", 0.0)),
            detail=str(data.get("detail", "")),
            checks=_checks(data.get("checks")),
        )


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
        """Share of the region's normal traffic it still gets at ``now``, in [0, 1]."""
        if self.mode == "now":
            return 0.0
        steps = 1 + max(0, math.floor((now - self.started_at) / self.interval))
        return max(0.0, 1.0 - self.step * steps)

    def describe(self) -> str:
        if self.mode == "now":
            return "now"
        return f"ramp {self.step:.0%}/{self.interval:g}s"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evacuation:
        mode = str(data.get("mode", "now"))
        if mode not in ("now", "ramp"):
            raise ValueError(f"mode: {mode!r} is not 'now' or 'ramp'")
        step = float(data.get("step", 1.0 if mode == "now" else 0.25))
        if not 0 < step <= 1:
            raise ValueError(f"step: {step} is outside (0, 1]")
        interval = float(data.get("interval", 30.0))
        if interval <= 0:
            raise ValueError(f"interval: {interval} must be positive")
        region = data.get("region")
        if not isinstance(region, str) or not region:
            raise ValueError("region: missing")
        return cls(
            region=region,
            mode=mode,  # type: ignore[arg-type]
            step=step,
            interval=interval,
            started_at=float(data.get("started_at", 0.0)),
            reason=str(data.get("reason", "")),
            actor=str(data.get("actor", "")),
            forced=bool(data.get("forced", False)),
            request_id=str(data.get("request_id", "")),
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
        steps = 1 + max(0, math.floor((now - self.started_at) / self.interval))
        return min(1.0, self.step * steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Restore:
        step = float(data.get("step", 0.25))
        if not 0 < step <= 1:
            raise ValueError(f"step: {step} is outside (0, 1]")
        interval = float(data.get("interval", 30.0))
        if interval <= 0:
            raise ValueError(f"interval: {interval} must be positive")
        region = data.get("region")
        if not isinstance(region, str) or not region:
            raise ValueError("region: missing")
        return cls(region=region, step=step, interval=interval, started_at=float(data.get("started_at", 0.0)),
                   reason=str(data.get("reason", "")), actor=str(data.get("actor", "")))


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
        clean: dict[str, int] = {}
        for target, w in weights.items():
            if not isinstance(w, int) or isinstance(w, bool) or w < 0:
                raise ValueError(f"weights.{target}: {w!r} is not a non-negative integer")
            clean[str(target)] = w
        if sum(clean.values()) <= 0:
            raise ValueError("weights: all zero")
        return cls(service=str(data["service"]), geo=str(data["geo"]), weights=clean,
                   reason=str(data.get("reason", "")), actor=str(data.get("actor", "")))


@dataclass(frozen=True)
class Overrides:
    evacuations: tuple[Evacuation, ...] = ()
    restores: tuple[Restore, ...] = ()
    pins: tuple[Pin, ...] = ()


@dataclass(frozen=True)
class Observed:
    """A snapshot of health per region and site id, and optionally measured demand per geo."""

    health: Mapping[str, TargetHealth] = field(default_factory=dict)
    demand: Mapping[str, float] | None = None


def _opt_number(data: Mapping[str, Any], key: str) -> float | None:
    if data.get(key) is None:
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: {value!r} is not a number")
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise ValueError(f"{key}: {value!r} must be a finite non-negative number")
    return float(value)


def _checks(value: Any) -> tuple[Check, ...]:
    if value is None:
        return ()
    # Checks only explain a status; a malformed list must not cost the record its health, so it is dropped.
    if not isinstance(value, list):
        return ()
    return tuple(Check.from_dict(c) for c in value[:MAX_CHECKS] if isinstance(c, Mapping))
