"""The routing table: one immutable, versioned snapshot of where traffic goes.

The leader writes it, etcd holds it (canonical JSON, see ``to_json``), and the
DNS server, the Route 53 sink and ``steering.client`` serve from it. The JSON
is canonical (sorted keys, no spaces), so the same table is the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steering.config import TOTAL_WEIGHT


@dataclass(frozen=True)
class GeoRoute:
    """Weights (summing to TOTAL_WEIGHT) over a geo's candidate targets, each with its reason."""

    weights: Mapping[str, int]
    reasons: Mapping[str, str]
    fail_open: bool = False
    pinned: bool = False

    def serving(self) -> list[tuple[str, int]]:
        """Targets with a non-zero weight, highest first (ties in candidate order)."""
        order = list(self.weights)
        return sorted(((t, w) for t, w in self.weights.items() if w > 0), key=lambda tw: (-tw[1], order.index(tw[0])))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"weights": dict(self.weights), "reasons": dict(self.reasons)}
        if self.fail_open:
            out["fail_open"] = True
        if self.pinned:
            out["pinned"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeoRoute:
        return cls(weights={str(k): int(v) for k, v in data["weights"].items()},
                   reasons={str(k): str(v) for k, v in data.get("reasons", {}).items()},
                   fail_open=bool(data.get("fail_open", False)), pinned=bool(data.get("pinned", False)))


@dataclass(frozen=True)
class ServiceRoute:
    targets: str  # "regions" | "sites"
    geos: Mapping[str, GeoRoute]

    def to_dict(self) -> dict[str, Any]:
        return {"targets": self.targets, "geos": {g: r.to_dict() for g, r in self.geos.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceRoute:
        return cls(targets=str(data.get("targets", "regions")),
                   geos={str(g): GeoRoute.from_dict(r) for g, r in data["geos"].items()})


@dataclass(frozen=True)
class TargetState:
    """A region's or site's state as the planner saw it, and the load it planned for it."""

    kind: str  # "region" | "site"
    region: str
    health: str
    serving: bool
    capacity: float
    load: float
    planned_load: float
    utilization: float | None  # None when capacity is 0
    evacuation: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "region": self.region, "health": self.health, "serving": self.serving,
            "capacity": self.capacity, "load": self.load, "planned_load": self.planned_load,
            "utilization": self.utilization, "evacuation": self.evacuation, "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetState:
        util = data.get("utilization")
        return cls(kind=str(data["kind"]), region=str(data["region"]), health=str(data["health"]),
                   serving=bool(data["serving"]), capacity=float(data["capacity"]), load=float(data["load"]),
                   planned_load=float(data["planned_load"]), utilization=None if util is None else float(util),
                   evacuation=str(data.get("evacuation", "")), reason=str(data.get("reason", "")))


@dataclass(frozen=True)
class RoutingTable:
    version: int
    parent_version: int
    generated_at: float
    services: Mapping[str, ServiceRoute]
    regions: Mapping[str, TargetState]
    sites: Mapping[str, TargetState] = field(default_factory=dict)
    fail_open: bool = False
    converging: bool = False
    topology: str = ""  # config fingerprint the table was planned for
    leader: str = ""
    notes: tuple[str, ...] = ()  # loud, human-readable warnings (fail-open, blocked evacuations)

    def route(self, service: str, geo: str) -> GeoRoute | None:
        svc = self.services.get(service)
        return None if svc is None else svc.geos.get(geo)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "parent_version": self.parent_version,
            "generated_at": self.generated_at,
            "fail_open": self.fail_open,
            "converging": self.converging,
            "topology": self.topology,
            "leader": self.leader,
            "notes": list(self.notes),
            "services": {n: s.to_dict() for n, s in self.services.items()},
            "regions": {r: s.to_dict() for r, s in self.regions.items()},
            "sites": {r: s.to_dict() for r, s in self.sites.items()},
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    def same_routing(self, other: RoutingTable) -> bool:
        """Equal decisions (ignoring version, time and leader): nothing to publish. Cheaper than JSON."""
        return (self.services == other.services and self.regions == other.regions and self.sites == other.sites
                and self.fail_open == other.fail_open and self.converging == other.converging
                and self.topology == other.topology and self.notes == other.notes)

    def routing_json(self) -> bytes:
        """The routing decisions alone (no version, time or leader): equal bytes mean nothing to publish."""
        d = self.to_dict()
        for key in ("version", "parent_version", "generated_at", "leader"):
            d.pop(key)
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingTable:
        return cls(
            version=int(data["version"]),
            parent_version=int(data.get("parent_version", 0)),
            generated_at=float(data.get("generated_at", 0.0)),
            fail_open=bool(data.get("fail_open", False)),
            converging=bool(data.get("converging", False)),
            topology=str(data.get("topology", "")),
            leader=str(data.get("leader", "")),
            notes=tuple(str(n) for n in data.get("notes", ())),
            services={str(n): ServiceRoute.from_dict(s) for n, s in data["services"].items()},
            regions={str(r): TargetState.from_dict(s) for r, s in data.get("regions", {}).items()},
            sites={str(r): TargetState.from_dict(s) for r, s in data.get("sites", {}).items()},
        )

    @classmethod
    def from_json(cls, blob: bytes | str) -> RoutingTable:
        """Parse a table; raises ValueError naming the problem for anything malformed."""
        try:
            data = json.loads(blob)
            table = cls.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed routing table: {type(exc).__name__}: {exc}") from None
        for name, svc in table.services.items():
            for geo, route in svc.geos.items():
                total = sum(route.weights.values())
                if total != TOTAL_WEIGHT or any(w < 0 for w in route.weights.values()):
                    raise ValueError(f"malformed routing table: {name} {geo}: weights sum to {total}, not {TOTAL_WEIGHT}")
        return table
