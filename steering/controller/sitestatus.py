"""Why a site is in its state and when it was last heard from, for ``Status``: pure, no I/O.

Health reaches etcd on change only (``health/<site>@<replica>``), so no
record says when a site last reported. Each replica does know that for the
agents that report to it (its ``HealthView``), so the answer combines:

- the answering replica's own memory, when it is at least as new as the
  newest record: exact ("local");
- else the newest record's ``updated_at``: the time of the site's latest
  state change, a lower bound (a record exists only while the replica that
  wrote it still hears the agent, so "heard within the silence timeout").

The failing checks come from the same source: the latest report here, or
the report that wrote the newest record (the latest status change).

A target with observers (docs/health.md) also gets each reporter's view,
its age found the same way per reporter slot, and the quorum's reading of
them (``vantage.decide``, as the leader merges it): "unreachable from ...".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from steering.controller.healthmerge import newest, views
from steering.controller.vantage import LOCAL, Vantage, Verdict, decide, slot
from steering.model import Check, ReporterView, TargetHealth


@dataclass(frozen=True)
class SiteWhy:
    last_report: float | None  # unix seconds
    last_report_local: bool
    last_change: float | None
    heard_by: str
    checks: tuple[Check, ...]
    detail: str


def newest_records(records: Mapping[str, TargetHealth]) -> dict[str, tuple[str, TargetHealth]]:
    """``site@replica`` records -> per site (replica, record) of its own agent, newest as ``healthmerge.merge``
    picks (observers' records are the reporters', below)."""
    return {site: found for (site, reporter), found in newest(records).items() if reporter == LOCAL}


@dataclass(frozen=True)
class ReporterWhy:
    view: ReporterView
    last_report: float | None  # unix seconds, as ``SiteWhy.last_report``
    last_report_local: bool
    streams: int  # streams open on this replica for the reporter's slot


@dataclass(frozen=True)
class Reporters:
    """A target's reporters as status shows them, and what the quorum reads from them."""

    reporters: tuple[ReporterWhy, ...]
    verdict: Verdict
    checks: tuple[Check, ...]  # the failing reporters' failing checks (an observer's as ``observer/check``)


def reporters_why(site: str, records: Mapping[str, TargetHealth], vantage: Vantage,
                  local: Callable[[str], tuple[float, TargetHealth | None] | None],
                  streams: Callable[[str], int]) -> Reporters | None:
    """Each configured reporter of ``site`` with its age; None for a site with only its local agent.
    ``local(slot)`` and ``streams(slot)``: this replica's memory of a reporter slot (``ingest``)."""
    if site not in vantage.observed:
        return None
    best = newest(records)
    seen = views(site, best, vantage)
    out = []
    for v in seen:
        key = slot(site, v.reporter)
        mine = local(key)
        if mine is not None and mine[0] >= v.updated_at:
            when: float | None = mine[0]
            exact = True
        else:
            when, exact = (v.updated_at if v.updated_at > 0 else None), False
        out.append(ReporterWhy(v, when, exact, streams(key)))
    verdict = decide(seen, vantage.rule)
    checks: list[Check] = []
    if verdict.status == "unhealthy":
        for reporter in verdict.failing:
            found = best.get((site, reporter))
            for c in found[1].checks if found is not None else ():
                checks.append(c if reporter == LOCAL else Check(f"{reporter}/{c.name}", c.kind, c.detail))
    return Reporters(tuple(out), verdict, tuple(checks))


def site_why(status: str, newest: tuple[str, TargetHealth] | None,
             local: tuple[float, TargetHealth | None] | None, replica: str, silence_seconds: float) -> SiteWhy:
    """Combine the newest record and this replica's memory for one site whose table status is ``status``."""
    heard_by, record = newest if newest is not None else ("", None)
    last_change = record.updated_at if record is not None and record.updated_at > 0 else None
    if local is not None and local[0] >= (last_change or 0.0):
        when, latest = local
        if latest is not None:
            return SiteWhy(when, True, last_change, heard_by or replica, latest.checks,
                           latest.detail or _silent(status, silence_seconds))
        return SiteWhy(when, True, last_change, heard_by, (),
                       f"no report within {silence_seconds:g}s (went silent on {replica})")
    if record is not None:
        return SiteWhy(last_change, False, last_change, heard_by, record.checks,
                       record.detail or _silent(status, silence_seconds))
    return SiteWhy(None, False, None, "", (), _silent(status, silence_seconds))


def _silent(status: str, silence_seconds: float) -> str:
    if status == "silent":
        return f"no report within {silence_seconds:g}s"
    if status == "unknown":
        return "waiting for a first report"
    return ""
