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
            "checks": [{"name": c.name, "kind": c.kind, "detail": c.detail} for c in s.checks],
            "verdict": s.verdict, "unreachable_geos": list(s.unreachable_geos),
            "reporters": [reporter(r) for r in s.reporters]}


def reporter(r: pb.ReporterHealth) -> dict[str, Any]:
    """One reporter's view of a target (docs/health.md; keys documented in the operator guide)."""
    return {"reporter": r.reporter, "role": r.role, "status": health_name(r.status), "geos": list(r.geos),
            "last_report": _time(r.last_report) if r.HasField("last_report") else None,
            "last_report_local": r.last_report_local, "heard_by": r.heard_by, "counted": r.counted,
            "detail": r.detail, "streams": r.streams}


def status(resp: pb.StatusResponse) -> dict[str, Any]:
    table = table_of(resp.table) if resp.HasField("table") else None
    whys = {s.site: site_why(s) for s in resp.sites}
    blank: dict[str, Any] = {"last_report": None, "last_report_local": False, "last_change": None, "heard_by": "",
                             "detail": "", "checks": [], "verdict": "", "unreachable_geos": [], "reporters": []}
    out: dict[str, Any] = {
        "replica": resp.replica, "leader": resp.leader, "connected_agents": resp.connected_agents,
        # stale: etcd could not be reached, so this is the answering replica's last known state
        "stale": resp.stale,
        "etcd_unreachable_since": _time(resp.etcd_unreachable_since) if resp.stale else None,
        "table": None, "regions": [], "sites": [], "geos": {},
        "evacuations": [evacuation(e) for e in resp.evacuations],
        "events": [event(e) for e in resp.recent_events],
        "route53": {"enabled": resp.route53.enabled, "last_sync": _time(resp.route53.last_sync) or None,
                    "last_duration_seconds": resp.route53.last_duration_seconds,
                    "last_changes": resp.route53.last_changes, "last_error": resp.route53.last_error},
        "geoip": None if not resp.HasField("geoip") else {  # the answering replica's database (docs/geoip.md)
            "database_type": resp.geoip.database_type, "build_time": _time(resp.geoip.build_time),
            "networks": resp.geoip.networks, "prefixes": resp.geoip.prefixes, "path": resp.geoip.path,
            "reloads": {"ok": resp.geoip.reloads_ok, "error": resp.geoip.reloads_failed},
            "last_error": resp.geoip.last_error},
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


def event(e: pb.Event) -> dict[str, Any]:
    """One event of the timeline (keys documented in the operator guide, "Events")."""
    try:
        details = json.loads(e.details_json) if e.details_json else {}
    except ValueError:
        details = {}
    return {"id": e.id, "time": _time(e.time), "kind": e.kind, "severity": e.severity, "subject": e.subject,
            "message": e.message, "details": details if isinstance(details, dict) else {}, "replica": e.replica}


def health_name(value: pb.HealthStatus) -> str:
    return HEALTH_NAMES.get(value, "unknown")


def explanation(r: pb.ExplainResponse) -> dict[str, Any]:
    """``RoutingService.Explain``'s answer in the shape ``steerctl explain --config --table`` prints
    (``steering.explain.Explanation.to_dict``; keys documented in the operator guide, "explain")."""
    from steering import explain  # imported when used: the other commands start without the pick and GeoIP

    says = None
    if r.HasField("geoip"):
        g = r.geoip
        says = explain.GeoIpSays(country=g.country, continent=g.continent, subdivisions=tuple(g.subdivisions),
                                 matched=g.matched, error=g.error)
    return explain.Explanation(
        service=r.service, client_address=r.client_address, ecs_subnet=r.ecs_subnet,
        placed=explain.Placed(geo=r.geo, source=r.geo_source, prefix=r.geo_prefix, geoip=says, why=r.why),
        weights=tuple(explain.Weight(target=w.target, kind=w.kind, region=w.region, weight=w.weight,
                                     reason=w.reason, in_split=w.in_split) for w in r.weights),
        fail_open=r.fail_open, pinned=r.pinned, fallback=r.fallback,
        split=tuple((s.target, s.weight) for s in r.split), client_subnet=r.client_subnet,
        key_source=r.key_source, slot=r.slot, target=r.target,
        records=tuple(explain.Record(type=x.type, value=x.value) for x in r.records), ttl=r.ttl,
        ecs_scope=r.ecs_scope if r.HasField("ecs_scope") else None, table_version=r.table_version,
        table_generated_at=r.table_generated_at).to_dict()
