"""The committed generated gRPC code matches proto/ (run `make proto` when this fails)."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2  # noqa: F401  (the official packages import cleanly)
from grpc_reflection.v1alpha import reflection  # noqa: F401

from steering import protogen
from steering.v1 import steering_pb2, steering_pb2_grpc


def test_generated_code_is_current(tmp_path: Path) -> None:
    written = protogen.generate(tmp_path)
    stale = []
    for fresh in written:
        committed = protogen.ROOT / "steering" / "v1" / fresh.name
        if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
            stale.append(fresh.name)
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def test_contract_has_the_services_and_messages_later_parts_need() -> None:
    services = steering_pb2.DESCRIPTOR.services_by_name
    assert set(services) == {"HealthService", "RoutingService", "OperatorService", "DrillService"}
    assert set(services["DrillService"].methods_by_name) == {"StartDrill", "GetDrill", "AbortDrill", "ListDrills",
                                                             "AddSchedule", "ListSchedules", "RemoveSchedule"}
    assert set(services["OperatorService"].methods_by_name) == {
        "Status", "Evacuate", "Restore", "PinWeights", "UnpinWeights", "History", "Plan", "Events"}
    assert set(services["RoutingService"].methods_by_name) == {"Resolve", "Watch", "Explain"}
    report = steering_pb2.HealthReport.DESCRIPTOR.fields_by_name
    for field in ("site", "region", "kind", "status", "checks", "capacity", "load", "geo_load", "sequence",
                  "agent_time"):
        assert field in report, field
    evac = steering_pb2.EvacuateRequest.DESCRIPTOR.fields_by_name
    for field in ("region", "mode", "ramp", "reason", "dry_run", "force", "request_id"):
        assert field in evac, field
    assert hasattr(steering_pb2_grpc, "add_HealthServiceServicer_to_server")
    assert grpc.__version__.startswith("1.85")
