"""Validation of one agent report against the topology: pure, no I/O.

A report that fails any rule is rejected whole (nothing is stored) with a
message that names the field, which the ingest turns into INVALID_ARGUMENT;
an observer reporting a target the config does not let it observe is
``ReportRefused`` (PERMISSION_DENIED).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from steering import limits
from steering.config import Config
from steering.controller.vantage import LOCAL, Vantage, slot
from steering.model import MAX_CHECK_DETAIL, MAX_CHECKS, Check, Status, TargetHealth, reported_health
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


class Report(NamedTuple):
    """One validated report (a tuple: made for every report, and cheaper than a frozen dataclass)."""

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
    # Each list read once, and an entry's field names (``checks[3].detail``) formatted only for a message:
    # this runs for every report, and a report's entries are nearly always within bounds.
    checks = report.checks
    if checks:
        if len(checks) > limits.MAX_CHECKS:
            raise ReportError("checks", f"{len(checks)} checks; at most {limits.MAX_CHECKS}")
        for i, c in enumerate(checks):
            name, kind, detail = c.name, c.kind, c.detail
            if (len(name) > limits.MAX_CHECK_NAME or len(kind) > limits.MAX_CHECK_KIND
                    or len(detail) > limits.MAX_CHECK_DETAIL):
                _bounded(f"checks[{i}].name", name, limits.MAX_CHECK_NAME)
                _bounded(f"checks[{i}].kind", kind, limits.MAX_CHECK_KIND)
                _bounded(f"checks[{i}].detail", detail, limits.MAX_CHECK_DETAIL)
    geos = report.geos
    if geos:
        if len(geos) > MAX_GEOS:
            raise ReportError("geos", f"{len(geos)} entries; at most {MAX_GEOS}")
        for i, geo in enumerate(geos):
            if len(geo) > limits.MAX_ID:
                _bounded(f"geos[{i}]", geo, limits.MAX_ID)
    geo_load = report.geo_load
    if geo_load:
        if len(geo_load) > limits.MAX_GEO_LOAD:
            raise ReportError("geo_load", f"{len(geo_load)} entries; at most {limits.MAX_GEO_LOAD}")
        for geo in geo_load:
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


def _rate(field: str, value: float) -> None:
    """A capacity, load or geo_load figure: finite, non-negative and within ``limits.RATE``."""
    lo, hi = limits.RATE
    if lo <= value <= hi:  # the common case in one comparison (NaN fails it: its comparisons are all false)
        return
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ReportError(field, f"{value!r} is not a finite non-negative number")
    raise ReportError(field, f"{value:g} is outside [{lo:g}, {hi:g}]")


def validate(report: pb.HealthReport, config: Config, last_sequence: int | None, now: float) -> Report:
    """Check ``report``; ``last_sequence`` is the previous sequence on the same stream (None: its first report)."""
    check_sizes(report)
    # Each field read once: a protobuf attribute read builds a new Python object every time, and this runs
    # for every report of every agent.
    site_id, region_id, kind_value = report.site, report.region, report.kind
    if not site_id:
        raise ReportError("site", "missing")
    if not region_id:
        raise ReportError("region", "missing")
    if kind_value == pb.SITE_KIND_REGION:
        try:
            config.region(site_id)
        except KeyError:
            raise ReportError("site", f"unknown region {site_id!r} (kind region reports use the region id)") from None
        if region_id != site_id:
            raise ReportError("region", f"{region_id!r} differs from site {site_id!r} for kind region")
        kind = "region"
    elif kind_value == pb.SITE_KIND_CACHE:
        try:
            site = config.site(site_id)
        except KeyError:
            raise ReportError("site", f"unknown cache site {site_id!r}") from None
        if region_id != site.region:
            raise ReportError("region", f"{region_id!r}, but site {site_id!r} is in {site.region!r}")
        kind = "cache"
    else:
        raise ReportError("kind", "must be SITE_KIND_REGION or SITE_KIND_CACHE")
    status = STATUS_NAMES.get(report.status)
    if status is None:
        raise ReportError("status", "must be HEALTH_STATUS_HEALTHY or HEALTH_STATUS_UNHEALTHY")
    reporter = _reporter(report, config)
    capacity, load = report.capacity, report.load
    _rate("capacity", capacity)
    _rate("load", load)
    geo_load = report.geo_load
    if geo_load:
        for geo, value in geo_load.items():
            _rate(f"geo_load.{geo}", value)
    sequence = report.sequence
    if sequence == 0:
        raise ReportError("sequence", "missing (must start at 1)")
    if last_sequence is not None and sequence <= last_sequence:
        raise ReportError("sequence", f"{sequence} is not above the previous {last_sequence} on this stream")
    agent_id = report.agent_id
    agent = agent_id or f"{site_id}-agent"
    checks = report.checks
    failing = [c for c in checks if not c.ok] if checks else []
    detail = "; ".join(f"{c.name}: {c.detail or 'failed'}" for c in failing)[:200] if failing else ""
    observer = reporter != LOCAL
    return Report(
        site=site_id,
        region=region_id,
        kind=kind,
        agent=agent,
        sequence=sequence,
        reporter=reporter,
        slot=slot(site_id, reporter),
        health=reported_health(
            status,
            # A report of capacity 0 with a healthy status is "no capacity figure": keep the config's.
            # An observer sees the target from outside: its capacity and load are not its to say.
            capacity=None if observer else capacity if capacity > 0 or status == "unhealthy" else None,
            load=None if observer else load,
            updated_at=now,
            detail=detail,
            checks=tuple(Check(name=c.name or "unnamed", kind=c.kind,
                               detail=(c.detail or "failed")[:MAX_CHECK_DETAIL]) for c in failing[:MAX_CHECKS])
            if failing else (),
        ),
    )
