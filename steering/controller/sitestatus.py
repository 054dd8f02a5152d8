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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from steering.controller.healthmerge import split_key
from steering.model import Check, TargetHealth


@dataclass(frozen=True)
class SiteWhy:
    last_report: float | None  # unix seconds
    last_report_local: bool
    last_change: float | None
    heard_by: str
    checks: tuple[Check, ...]
    detail: str


def newest_records(records: Mapping[str, TargetHealth]) -> dict[str, tuple[str, TargetHealth]]:
    """``site@replica`` records -> per site (replica, record), newest first as ``healthmerge.merge`` picks."""
    best: dict[str, tuple[str, TargetHealth]] = {}
    for key, health in records.items():
        site, replica = split_key(key)
        cur = best.get(site)
        if cur is None or (health.updated_at, health.status) > (cur[1].updated_at, cur[1].status):
            best[site] = (replica, health)
    return best


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
