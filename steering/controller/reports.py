"""Validation of one agent report against the topology: pure, no I/O.

A report that fails any rule is rejected whole (nothing is stored) with a
message that names the field, which the ingest turns into INVALID_ARGUMENT;
an observer reporting a target the config does not let it observe is
``ReportRefused`` (PERMISSION_DENIED).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from steering import limits
from steering.config import Config
from steering.controller.vantage import LOCAL, Vantage, slot
from steering.model import MAX_CHECK_DETAIL, MAX_CHECKS, Check, Status, TargetHealth
from steering.v1 import steering_pb2 as pb


class ReportError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class ReportRefused(ReportError):
    """Well formed, but not this agent's to report: an observer outside its configured targets."""


# An observer stands for at most this many client geos in one report.
MAX_GEOS = 64


STATUS_NAMES: dict[pb.HealthStatus, Status] = {
    pb.HEALTH_STATUS_HEALTHY: "healthy",
    pb.HEALTH_STATUS_UNHEALTHY: "unhealthy",
}


@dataclass(frozen=True)
class Report:
    site: str
    region: str
    kind: str  # region | cache
    agent: str
    sequence: int
    health: TargetHealth
    reporter: str = LOCAL  # ``local`` (the site's own agent) or the observer's agent_id
    slot: str = ""  # where the ingest keeps it: the site, or ``site~observer`` (``vantage.slot``)


def _bounded(field: str, value: str, most: int) -> None:
    if len(value) > most:
        raise ReportError(field, f"{len(value)} characters; at most {most}")


def check_sizes(report: pb.HealthReport) -> None:
    """Every string and list within ``steering.limits``; first, so no later message echoes a huge value."""
    _bounded("agent_id", report.agent_id, limits.MAX_AGENT_ID)
    _bounded("site", report.site, limits.MAX_ID)
    _bounded("region", report.region, limits.MAX_ID)
    if len(report.checks) > limits.MAX_CHECKS:
        raise ReportError("checks", f"{len(report.checks)} checks; at most {limits.MAX_CHECKS}")
    for i, c in enumerate(report.checks):
        _bounded(f"checks[{i}].name", c.name, limits.MAX_CHECK_NAME)
        _bounded(f"checks[{i}].kind", c.kind, limits.MAX_CHECK_KIND)
        _bounded(f"checks[{i}].detail", c.detail, limits.MAX_CHECK_DETAIL)
    if len(report.geos) > MAX_GEOS:
        raise ReportError("geos", f"{len(report.geos)} entries; at most {MAX_GEOS}")
    for i, geo in enumerate(report.geos):
        _bounded(f"geos[{i}]", geo, limits.MAX_ID)
    if len(report.geo_load) > limits.MAX_GEO_LOAD:
        raise ReportError("geo_load", f"{len(report.geo_load)} entries; at most {limits.MAX_GEO_LOAD}")
    for geo in report.geo_load:
        if len(geo) > limits.MAX_ID:
            raise ReportError("geo_load", f"a key of {len(geo)} characters; at most {limits.MAX_ID}")


def _reporter(report: pb.HealthReport, config: Config) -> str:
    """Who speaks for the site: ``local``, or a configured observer allowed to observe it (docs/health.md)."""
    vantage = Vantage.of(config)
    agent_id = report.agent_id
    if report.role == pb.AGENT_ROLE_OBSERVER:
        if agent_id not in vantage.targets:
            raise ReportRefused("agent_id", f"{agent_id!r} is not a configured observer (observers[].id)")
        if report.site not in vantage.targets[agent_id]:
            raise ReportRefused("site", f"observer {agent_id!r} may not observe {report.site!r} "
                                        "(not in its observers[].targets)")
        allowed = vantage.geos.get(agent_id, ())
        for i, geo in enumerate(report.geos):
            if geo not in allowed:
                raise ReportError(f"geos[{i}]", f"{geo!r} is not among the geos configured for observer "
                                                f"{agent_id!r} ({', '.join(allowed) or 'none'})")
        return agent_id
    if report.role not in (pb.AGENT_ROLE_UNSPECIFIED, pb.AGENT_ROLE_LOCAL):
        raise ReportError("role", "must be AGENT_ROLE_LOCAL or AGENT_ROLE_OBSERVER")
    if report.geos:
        raise ReportError("geos", "only an observer stands for client geos")
    if agent_id in vantage.targets:
        raise ReportError("agent_id", f"{agent_id!r} is a configured observer: it reports with role observer")
    return LOCAL


def validate(report: pb.HealthReport, config: Config, last_sequence: int | None, now: float) -> Report:
    """Check ``report``; ``last_sequence`` is the previous sequence on the same stream (None: its first report)."""
    check_sizes(report)
    if not report.site:
        raise ReportError("site", "missing")
    if not report.region:
        raise ReportError("region", "missing")
    if report.kind == pb.SITE_KIND_REGION:
        try:
            config.region(report.site)
        except KeyError:
            raise ReportError("site", f"unknown region {report.site!r} (kind region reports use the region id)") from None
        if report.region != report.site:
            raise ReportError("region", f"{report.region!r} differs from site {report.site!r} for kind region")
        kind = "region"
    elif report.kind == pb.SITE_KIND_CACHE:
        try:
            site = config.site(report.site)
        except KeyError:
            raise ReportError("site", f"unknown cache site {report.site!r}") from None
        if report.region != site.region:
            raise ReportError("region", f"{report.region!r}, but site {report.site!r} is in {site.region!r}")
        kind = "cache"
    else:
        raise ReportError("kind", "must be SITE_KIND_REGION or SITE_KIND_CACHE")
    status = STATUS_NAMES.get(report.status)
    if status is None:
        raise ReportError("status", "must be HEALTH_STATUS_HEALTHY or HEALTH_STATUS_UNHEALTHY")
    reporter = _reporter(report, config)
    lo, hi = limits.RATE
    for name in ("capacity", "load"):
        value = getattr(report, name)
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise ReportError(name, f"{value!r} is not a finite non-negative number")
        if not lo <= value <= hi:
            raise ReportError(name, f"{value:g} is outside [{lo:g}, {hi:g}]")
    for geo, value in report.geo_load.items():
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise ReportError(f"geo_load.{geo}", f"{value!r} is not a finite non-negative number")
        if not lo <= value <= hi:
            raise ReportError(f"geo_load.{geo}", f"{value:g} is outside [{lo:g}, {hi:g}]")
    if report.sequence == 0:
        raise ReportError("sequence", "missing (must start at 1)")
    if last_sequence is not None and report.sequence <= last_sequence:
        raise ReportError("sequence", f"{report.sequence} is not above the previous {last_sequence} on this stream")
    agent = report.agent_id or f"{report.site}-agent"
    failing = [c for c in report.checks if not c.ok]
    detail = "; ".join(f"{c.name}: {c.detail or 'failed'}" for c in failing)[:200]
    observer = reporter != LOCAL
    return Report(
        site=report.site,
        region=report.region,
        kind=kind,
        agent=agent,
        sequence=report.sequence,
        reporter=reporter,
        slot=slot(report.site, reporter),
        health=TargetHealth(
            status=status,
            # A report of capacity 0 with a healthy status is "no capacity figure": keep the config's.
            # An observer sees the target from outside: its capacity and load are not its to say.
            capacity=None if observer else report.capacity if report.capacity > 0 or status == "unhealthy" else None,
            load=None if observer else report.load,
            updated_at=now,
            detail=detail,
            checks=tuple(Check(name=c.name or "unnamed", kind=c.kind,
                               detail=(c.detail or "failed")[:MAX_CHECK_DETAIL]) for c in failing[:MAX_CHECKS]),
        ),
    )
