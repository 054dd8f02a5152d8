"""Metrics of health from several vantage points (docs/health.md): each reporter's view, per-geo reach,
agent_id conflicts. Label values are configured ids only (targets, observers, geos), so the series are
bounded by the config."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress
from operator import attrgetter

from prometheus_client import Counter, Gauge

from steering.model import TargetHealth

REPORTER_HEALTHY = Gauge("steering_target_reporter_healthy",
                         "1 while this reporter (local: the target's own agent; else an observer's agent_id) "
                         "says the target is healthy, 0 while it says unhealthy or is silent (leader only)",
                         ["target", "reporter"])
REPORTER_COUNTED = Gauge("steering_target_reporter_counted",
                         "1 while this reporter counts toward the target's quorum (it is not silent; leader only)",
                         ["target", "reporter"])
UNREACHABLE = Gauge("steering_target_unreachable",
                    "1 while the observers of this client geo cannot reach the target, 0 while they can "
                    "(leader only)",
                    ["target", "geo"])
AGENT_ID_CONFLICTS = Gauge("steering_controller_duplicate_agent_ids",
                           "agent_ids that several streams on this replica carry for one target at once")
AGENT_ID_CONFLICTS_TOTAL = Counter("steering_controller_agent_id_conflicts_total",
                                   "Streams that opened with an agent_id another open stream already carried "
                                   "for the same target")

_exported: dict[str, set[tuple[str, str]]] = {"reporters": set(), "geos": set()}
_REPORTERS = attrgetter("reporters")
_UNREACHABLE = attrgetter("unreachable_from")


def export(health: Mapping[str, TargetHealth]) -> None:
    """Set the gauges from the leader's merged health; series of reporters or geos no longer there go."""
    reporters: set[tuple[str, str]] = set()
    geos: set[tuple[str, str]] = set()
    # Most targets have no observers: nothing to set for them, and walking 5,000 of them in Python cost
    # 3.7 ms a plan, then 0.3: those with reporters or geos are picked out in C.
    values = health.values()
    for target, h in compress(health.items(), map(any, zip(map(_REPORTERS, values), map(_UNREACHABLE, values), strict=True))):
        for v in h.reporters:
            REPORTER_HEALTHY.labels(target, v.reporter).set(1 if v.status == "healthy" else 0)
            REPORTER_COUNTED.labels(target, v.reporter).set(1 if v.counted else 0)
            reporters.add((target, v.reporter))
        for g in {g for v in h.reporters for g in v.geos} | set(h.unreachable_from):
            UNREACHABLE.labels(target, g).set(1 if g in h.unreachable_from else 0)
            geos.add((target, g))
    for labels in _exported["reporters"] - reporters:
        REPORTER_HEALTHY.remove(*labels)
        REPORTER_COUNTED.remove(*labels)
    for labels in _exported["geos"] - geos:
        UNREACHABLE.remove(*labels)
    _exported["reporters"], _exported["geos"] = reporters, geos


def clear() -> None:
    """This replica no longer leads: its views would go stale."""
    export({})
