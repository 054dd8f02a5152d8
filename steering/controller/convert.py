"""Routing tables, overrides and previews to their protobuf messages: pure."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from steering.model import Evacuation, Restore
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb

HEALTH = {"healthy": pb.HEALTH_STATUS_HEALTHY, "unhealthy": pb.HEALTH_STATUS_UNHEALTHY,
          "silent": pb.HEALTH_STATUS_SILENT}
HEALTH_NAMES = {v: k for k, v in HEALTH.items()} | {pb.HEALTH_STATUS_UNSPECIFIED: "unknown"}


def timestamp(t: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def table_to_pb(table: RoutingTable, with_json: bool = True) -> pb.RoutingTable:
    msg = pb.RoutingTable(version=table.version, parent_version=table.parent_version,
                          generated_at=timestamp(table.generated_at), fail_open=table.fail_open,
                          converging=table.converging, leader=table.leader)
    for name, svc in table.services.items():
        s = msg.services.add(service=name, targets=svc.targets)
        for geo, route in svc.geos.items():
            g = s.geos.add(geo=geo, fail_open=route.fail_open, pinned=route.pinned)
            for target, w in route.weights.items():
                g.weights.add(target=target, weight=w, reason=route.reasons.get(target, ""))
    for rid, st in table.regions.items():
        msg.regions.add(region=rid, health=HEALTH.get(st.health, pb.HEALTH_STATUS_UNSPECIFIED), serving=st.serving,
                        capacity=st.capacity, load=st.load, planned_load=st.planned_load,
                        utilization=st.utilization or 0.0, evacuation=st.evacuation, reason=st.reason)
    for sid, st in table.sites.items():
        msg.sites.add(site=sid, region=st.region, health=HEALTH.get(st.health, pb.HEALTH_STATUS_UNSPECIFIED),
                      serving=st.serving, capacity=st.capacity, load=st.load, planned_load=st.planned_load,
                      utilization=st.utilization or 0.0)
    if with_json:
        msg.json = table.to_json().decode()
    return msg


def only_service(table: RoutingTable, service: str) -> RoutingTable:
    """The table with one service's routing (regions and sites stay)."""
    from dataclasses import replace

    return replace(table, services={n: s for n, s in table.services.items() if n == service})


def evacuation_to_pb(e: Evacuation) -> pb.Evacuation:
    mode = pb.EVACUATION_MODE_NOW if e.mode == "now" else pb.EVACUATION_MODE_RAMP
    msg = pb.Evacuation(region=e.region, mode=mode, reason=e.reason, actor=e.actor,
                        started_at=timestamp(e.started_at), forced=e.forced, request_id=e.request_id)
    if e.mode == "ramp":
        msg.ramp.step, msg.ramp.interval_seconds = e.step, e.interval
    return msg


def restore_to_pb(r: Restore) -> pb.Evacuation:
    msg = pb.Evacuation(region=r.region, mode=pb.EVACUATION_MODE_RAMP, reason=r.reason, actor=r.actor,
                        started_at=timestamp(r.started_at), restoring=True)
    msg.ramp.step, msg.ramp.interval_seconds = r.step, r.interval
    return msg


def preview_to_pb(preview: Any) -> pb.Preview:
    """A ``safety.Preview`` as its message."""
    msg = pb.Preview(fail_open_after=preview.fail_open_after)
    for c in preview.changes:
        g = msg.changes.add(service=c.service, geo=c.geo)
        g.before.update(c.before)
        g.after.update(c.after)
    for r in preview.regions:
        msg.regions.add(region=r.region, capacity=r.capacity, planned_load_before=r.planned_load_before,
                        planned_load_after=r.planned_load_after, utilization_before=r.utilization_before,
                        utilization_after=r.utilization_after, hard_limit=r.hard_limit)
    return msg
