"""steerctl's ``--json`` shapes: plain dicts built from the API's messages (documented in docs/operator-guide.md).

Built by hand rather than with ``MessageToDict`` so that the shape is ours:
snake_case keys, health and modes as short words, times as unix seconds.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from steering.controller.convert import HEALTH_NAMES
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb


def _time(ts: Timestamp) -> float:
    return round(ts.seconds + ts.nanos / 1e9, 3)


def table_of(msg: pb.RoutingTable) -> RoutingTable | None:
    return RoutingTable.from_json(msg.json) if msg.json else None


def preview(p: pb.Preview) -> dict[str, Any]:
    return {
        "changes": [{"service": c.service, "geo": c.geo, "before": dict(sorted(c.before.items())),
                     "after": dict(sorted(c.after.items()))} for c in p.changes],
        "regions": [{"region": r.region, "capacity": r.capacity, "planned_load_before": r.planned_load_before,
                     "planned_load_after": r.planned_load_after,
                     "utilization_before": round(r.utilization_before, 4),
                     "utilization_after": round(r.utilization_after, 4), "hard_limit": r.hard_limit}
                    for r in p.regions],
        "fail_open_after": p.fail_open_after,
    }


def evacuation(e: pb.Evacuation) -> dict[str, Any]:
    mode = "now" if e.mode == pb.EVACUATION_MODE_NOW else "ramp"
    return {"region": e.region, "mode": mode, "step": e.ramp.step if mode == "ramp" else 1.0,
            "interval_seconds": e.ramp.interval_seconds if mode == "ramp" else 0.0, "reason": e.reason,
            "actor": e.actor, "started_at": _time(e.started_at), "forced": e.forced, "restoring": e.restoring,
            "request_id": e.request_id}


def site_why(s: pb.SiteHealth) -> dict[str, Any]:
    """Why a site is in its state and when it was last heard from (keys documented in the operator guide)."""
    return {"last_report": _time(s.last_report) if s.HasField("last_report") else None,
            "last_report_local": s.last_report_local,
            "last_change": _time(s.last_change) if s.HasField("last_change") else None,
            "heard_by": s.heard_by, "detail": s.detail,
            "checks": [{"name": c.name, "kind": c.kind, "detail": c.detail} for c in s.checks]}


def status(resp: pb.StatusResponse) -> dict[str, Any]:
    table = table_of(resp.table) if resp.HasField("table") else None
    whys = {s.site: site_why(s) for s in resp.sites}
    blank: dict[str, Any] = {"last_report": None, "last_report_local": False, "last_change": None, "heard_by": "",
                             "detail": "", "checks": []}
    out: dict[str, Any] = {
        "replica": resp.replica, "leader": resp.leader, "connected_agents": resp.connected_agents,
        # stale: etcd could not be reached, so this is the answering replica's last known state
        "stale": resp.stale,
        "etcd_unreachable_since": _time(resp.etcd_unreachable_since) if resp.stale else None,
        "table": None, "regions": [], "sites": [], "geos": {},
        "evacuations": [evacuation(e) for e in resp.evacuations],
        "route53": {"enabled": resp.route53.enabled, "last_sync": _time(resp.route53.last_sync) or None,
                    "last_duration_seconds": resp.route53.last_duration_seconds,
                    "last_changes": resp.route53.last_changes, "last_error": resp.route53.last_error},
    }
    if table is None:
        return out
    out["table"] = {"version": table.version, "generated_at": table.generated_at,
                    "age_seconds": round(resp.table_age_seconds, 3), "fail_open": table.fail_open,
                    "converging": table.converging, "leader": table.leader, "notes": list(table.notes)}
    for rid, st in table.regions.items():
        out["regions"].append({"region": rid, "health": st.health, "serving": st.serving, "capacity": st.capacity,
                               "load": st.load, "planned_load": st.planned_load, "utilization": st.utilization,
                               "evacuation": st.evacuation, **whys.get(rid, blank)})
    for sid, st in table.sites.items():
        out["sites"].append({"site": sid, "region": st.region, "health": st.health, "serving": st.serving,
                             "capacity": st.capacity, "load": st.load, "planned_load": st.planned_load,
                             "utilization": st.utilization, **whys.get(sid, blank)})
    for name, svc in table.services.items():
        out["geos"][name] = {geo: {t: w for t, w in route.weights.items() if w} for geo, route in svc.geos.items()}
    return out


def audit(r: pb.AuditRecord) -> dict[str, Any]:
    try:
        details = json.loads(r.details_json) if r.details_json else {}
    except ValueError:
        details = {}
    return {"id": r.id, "time": _time(r.time), "actor": r.actor, "action": r.action, "region": r.region,
            "service": r.service, "geo": r.geo, "reason": r.reason, "request_id": r.request_id, "forced": r.forced,
            "before": r.before, "after": r.after, "details": details}


def health_name(value: pb.HealthStatus) -> str:
    return HEALTH_NAMES.get(value, "unknown")
