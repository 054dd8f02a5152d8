"""The REST API's JSON: the shared implementation's answers as plain dicts (pure).

Status, events, history, previews and explanations are ``steerctl --json``'s
shapes (``steering.cli.shapes``, documented in docs/operator-guide.md): one
shape for a terminal and for HTTP. A table is its canonical JSON
(``RoutingTable.to_json``, built once per version by ``routes.TableBytes``).
The action results and the listings are the REST API's own (docs/rest-api.md).
``schemas.py`` describes each.
"""

from __future__ import annotations

from typing import Any

from steering.cli import shapes as cli
from steering.controller.convert import evacuation_to_pb, restore_to_pb
from steering.model import Overrides
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb

status = cli.status
preview = cli.preview


def events(resp: pb.EventsResponse) -> dict[str, Any]:
    return {"events": [cli.event(e) for e in resp.events], "skipped": resp.skipped, "more": resp.more}


def history(resp: pb.HistoryResponse) -> dict[str, Any]:
    return {"records": [cli.audit(r) for r in resp.records]}


def tables(current: RoutingTable | None, kept: set[int]) -> dict[str, Any]:
    return {"current": current.version if current is not None else None, "kept": sorted(kept)}


def plan(resp: pb.PlanResponse) -> dict[str, Any]:
    return {"table": RoutingTable.from_json(resp.table.json).to_dict(), "preview": cli.preview(resp.preview)}


def evacuations(overrides: Overrides) -> dict[str, Any]:
    """Evacuations, then restores in flight (``restoring``), as Status lists them."""
    found = [*(evacuation_to_pb(e) for e in overrides.evacuations), *(restore_to_pb(r) for r in overrides.restores)]
    return {"evacuations": [cli.evacuation(e) for e in found]}


def pins(overrides: Overrides) -> dict[str, Any]:
    return {"pins": [p.to_dict() for p in overrides.pins]}


def _result(action: str, resp: Any, about: dict[str, str], request_id: str) -> dict[str, Any]:
    """An action's outcome. ``preview`` is null for a duplicate (the first call applied it; nothing was
    decided this time)."""
    fields = type(resp).DESCRIPTOR.fields_by_name
    return {"action": action, **about, "applied": resp.applied,
            "dry_run": bool(resp.dry_run) if "dry_run" in fields else False, "duplicate": resp.duplicate,
            "request_id": request_id, "audit_id": resp.audit_id or None,
            "warnings": list(resp.warnings) if "warnings" in fields else [],
            "preview": cli.preview(resp.preview) if "preview" in fields and resp.HasField("preview") else None}


def evacuated(resp: pb.EvacuateResponse, region: str, request_id: str) -> dict[str, Any]:
    return _result("evacuate", resp, {"region": region}, request_id)


def restored(resp: pb.RestoreResponse, region: str, request_id: str) -> dict[str, Any]:
    return _result("restore", resp, {"region": region}, request_id)


def pinned(resp: pb.PinWeightsResponse, service: str, geo: str, request_id: str) -> dict[str, Any]:
    return _result("pin", resp, {"service": service, "geo": geo}, request_id)


def unpinned(resp: pb.UnpinWeightsResponse, service: str, geo: str, request_id: str) -> dict[str, Any]:
    return _result("unpin", resp, {"service": service, "geo": geo}, request_id)
