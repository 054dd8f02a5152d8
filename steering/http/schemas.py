"""The JSON Schemas of the REST API: what each request may hold and what each response holds (pure).

Built from the configuration, so the ids a replica knows (regions, cache
sites, services, geos) are enums in its document and the bounds are those of
``steering.limits`` (the gRPC API's). Requests are checked against these
very schemas (``validate.py``); responses are the JSON shapes of
``shapes.py`` (``steerctl --json``'s), and the fuzz test
(tests/test_http_fuzz.py) checks every response against them, so a shape
that drifts from its schema fails a test. Response objects list every key
(``additionalProperties: false``): clients should still ignore keys they do
not know, since later versions may add some.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from steering import limits
from steering.config import Config

Schema = dict[str, Any]

MAX_ENUM = 500  # ids listed as an enum up to this many; beyond, a bounded string (the server still checks)
REQUEST_ID_PATTERN = r"^[^/\s]+$"  # one component of an etcd key (steering.store.keys.check_component)

S: Schema = {"type": "string"}
N: Schema = {"type": "number"}
INT: Schema = {"type": "integer"}
B: Schema = {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object"}


def nullable(schema: Schema) -> Schema:
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": [*kinds, "null"]}


def or_null(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(props: dict[str, Schema], optional: dict[str, Schema] | None = None, *,
        extra: bool | Schema = False) -> Schema:
    """An object with ``props`` required and ``optional`` allowed; no other keys unless ``extra``."""
    out: Schema = {"type": "object", "properties": {**props, **(optional or {})}, "additionalProperties": extra}
    if props:
        out["required"] = list(props)
    return out


def arr(items: Schema, max_items: int | None = None) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if max_items is not None:
        out["maxItems"] = max_items
    return out


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def ids(values: Iterable[str], max_len: int = limits.MAX_ID) -> Schema:
    """One of ``values``: an enum when there are few enough, else a bounded string."""
    known = list(values)
    if len(known) <= MAX_ENUM:
        return {"type": "string", "enum": known}
    return {"type": "string", "minLength": 1, "maxLength": max_len}


def text(max_len: int, min_len: int = 0) -> Schema:
    out: Schema = {"type": "string", "maxLength": max_len}
    if min_len:
        out["minLength"] = min_len
    return out


def number(bounds: tuple[float, float]) -> Schema:
    return {"type": "number", "minimum": bounds[0], "maximum": bounds[1]}


def integer(bounds: tuple[int, int]) -> Schema:
    return {"type": "integer", "minimum": bounds[0], "maximum": bounds[1]}


REQUEST_ID: Schema = {"type": "string", "minLength": 1, "maxLength": limits.MAX_REQUEST_ID,
                      "pattern": REQUEST_ID_PATTERN}
HEALTH: Schema = {"type": "string", "enum": ["healthy", "unhealthy", "silent", "unknown"]}
WEIGHTS: Schema = {"type": "object", "additionalProperties": INT}  # target -> share of 1000


class Known:
    """The ids a replica's configuration names, as schemas."""

    def __init__(self, config: Config) -> None:
        self.regions = ids(r.id for r in config.regions)
        self.targets = ids([*(r.id for r in config.regions), *(s.id for s in config.sites)])
        self.services = ids(s.name for s in config.services)
        self.geos = ids(g.id for g in config.geos)


# ---------------------------------------------------------------------- requests


def ramp_fields() -> dict[str, Schema]:
    return {"mode": {"type": "string", "enum": ["now", "ramp"]},
            "step": number(limits.RAMP_STEP), "interval_seconds": number(limits.RAMP_INTERVAL)}


def requests(known: Known) -> dict[str, Schema]:
    ramp = ramp_fields()
    return {
        "EvacuateRequest": obj(
            {"region": known.regions, "reason": text(limits.MAX_REASON, 1)},
            {**ramp, "dry_run": B, "force": B, "request_id": REQUEST_ID}),
        "PinRequest": obj(
            {"weights": {"type": "object", "propertyNames": known.targets,
                         "additionalProperties": integer(limits.PIN_WEIGHT), "minProperties": 1,
                         "maxProperties": limits.MAX_PIN_TARGETS},
             "reason": text(limits.MAX_REASON, 1)},
            {"dry_run": B, "force": B, "request_id": REQUEST_ID}),
        "PlanRequest": obj({}, {
            "evacuate": arr(obj({"region": known.regions}, {"reason": text(limits.MAX_REASON)}), limits.MAX_WHAT_IF),
            "restore": arr(known.regions, limits.MAX_WHAT_IF),
            "healthy": {"type": "object", "propertyNames": known.targets, "additionalProperties": B,
                        "maxProperties": limits.MAX_WHAT_IF}}),
    }


# ---------------------------------------------------------------------- responses


def _why() -> dict[str, Schema]:
    """Why a region or site is in its state (``steering.cli.shapes.site_why``)."""
    return {"last_report": nullable(N), "last_report_local": B, "last_change": nullable(N), "heard_by": S,
            "detail": S, "checks": arr(obj({"name": S, "kind": S, "detail": S})), "verdict": S,
            "unreachable_geos": arr(S), "reporters": arr(ref("Reporter"))}


def _target_state() -> Schema:
    return obj({"kind": {"type": "string", "enum": ["region", "site"]}, "region": S, "health": S, "serving": B,
                "capacity": N, "load": N, "planned_load": N, "utilization": nullable(N), "evacuation": S,
                "reason": S})


def responses() -> dict[str, Schema]:
    load = {"capacity": N, "load": N, "planned_load": N, "utilization": nullable(N)}
    return {
        "Error": obj({
            "error": obj({"status": INT, "code": S, "message": S, "field": nullable(S),
                          "rules": arr(obj({"rule": S, "message": S}))}),
            "preview": or_null(ref("Preview"))}),
        "Preview": obj({
            "changes": arr(obj({"service": S, "geo": S, "before": WEIGHTS, "after": WEIGHTS})),
            "regions": arr(obj({"region": S, "capacity": N, "planned_load_before": N, "planned_load_after": N,
                                "utilization_before": N, "utilization_after": N, "hard_limit": N})),
            "fail_open_after": B}),
        "Reporter": obj({"reporter": S, "role": S, "status": HEALTH, "geos": arr(S), "last_report": nullable(N),
                         "last_report_local": B, "heard_by": S, "counted": B, "detail": S, "streams": INT}),
        "Evacuation": obj({"region": S, "mode": {"type": "string", "enum": ["now", "ramp"]}, "step": N,
                           "interval_seconds": N, "reason": S, "actor": S, "started_at": N, "forced": B,
                           "restoring": B, "request_id": S}),
        "Event": obj({"id": S, "time": N, "kind": S, "severity": S, "subject": S, "message": S,
                      "details": ANY_OBJECT, "replica": S}),
        "Status": obj({
            "replica": S, "leader": S, "connected_agents": INT, "stale": B, "etcd_unreachable_since": nullable(N),
            "table": nullable(obj({"version": INT, "generated_at": N, "age_seconds": N, "fail_open": B,
                                   "converging": B, "leader": S, "notes": arr(S)})),
            "regions": arr(obj({"region": S, "health": HEALTH, "serving": B, **load, "evacuation": S, **_why()})),
            "sites": arr(obj({"site": S, "region": S, "health": HEALTH, "serving": B, **load, **_why()})),
            "geos": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": WEIGHTS}},
            "evacuations": arr(ref("Evacuation")),
            "events": arr(ref("Event")),
            "route53": obj({"enabled": B, "last_sync": nullable(N), "last_duration_seconds": N, "last_changes": INT,
                            "last_error": S}),
            "geoip": nullable(obj({"database_type": S, "build_time": N, "networks": INT, "prefixes": INT,
                                   "path": S, "reloads": obj({"ok": INT, "error": INT}), "last_error": S}))}),
        "Table": obj(
            {"version": INT, "parent_version": INT, "generated_at": N, "fail_open": B, "converging": B,
             "topology": S, "leader": S, "notes": arr(S),
             "services": {"type": "object", "additionalProperties": obj(
                 {"targets": S, "geos": {"type": "object", "additionalProperties": obj(
                     {"weights": WEIGHTS, "reasons": {"type": "object", "additionalProperties": S}},
                     {"fail_open": B, "pinned": B})}})},
             "regions": {"type": "object", "additionalProperties": _target_state()},
             "sites": {"type": "object", "additionalProperties": _target_state()}},
            {"ramps": {"type": "object", "additionalProperties": obj(
                {"kind": S, "started_at": N, "steps": INT, "waited": N})}}),
        "Tables": obj({"current": nullable(INT), "kept": arr(INT)}),
        "Events": obj({"events": arr(ref("Event")), "skipped": INT, "more": B}),
        "History": obj({"records": arr(obj({
            "id": S, "time": N, "actor": S, "action": S, "region": S, "service": S, "geo": S, "reason": S,
            "request_id": S, "forced": B, "before": S, "after": S, "details": ANY_OBJECT}))}),
        "Evacuations": obj({"evacuations": arr(ref("Evacuation"))}),
        "Pins": obj({"pins": arr(obj({"service": S, "geo": S, "weights": WEIGHTS, "reason": S, "actor": S}))}),
        "ActionResult": obj(
            {"action": {"type": "string", "enum": ["evacuate", "restore", "pin", "unpin"]}, "applied": B,
             "dry_run": B, "duplicate": B, "request_id": S, "audit_id": nullable(S), "warnings": arr(S),
             "preview": or_null(ref("Preview"))},
            {"region": S, "service": S, "geo": S}),
        "Plan": obj({"table": ref("Table"), "preview": ref("Preview")}),
        "Topology": obj({
            "replica": S, "auth": B,
            "regions": arr(obj({"name": S, "capacity": N})),
            "sites": arr(obj({"name": S, "region": S, "capacity": N})),
            "services": arr(obj({"name": S, "targets_kind": {"type": "string", "enum": ["regions", "sites"]},
                                 "targets": arr(S), "geos": arr(S)})),
            "geos": arr(S),
            "policy": obj({"watermark": N, "hard_limit": N, "max_shift": N, "step_seconds": N,
                           "min_serving_regions": INT})}),
        "Utilization": obj({"window_seconds": N, "every_seconds": N, "samples": arr(obj({
            "time": N, "version": INT, "utilization": {"type": "object", "additionalProperties": nullable(N)}}))}),
        "Explanation": obj({
            "service": S, "client_address": S, "ecs_subnet": nullable(S), "geo": S,
            "placed_by": obj({"source": S, "prefix": nullable(S), "geoip": nullable(obj({
                "country": nullable(S), "continent": nullable(S), "subdivisions": arr(S), "matched": nullable(S),
                "error": nullable(S)}))}),
            "why": S,
            "weights": arr(obj({"target": S, "kind": S, "region": S, "weight": INT, "reason": S, "in_split": B})),
            "fail_open": B, "pinned": B, "fallback": nullable(S),
            "split": arr(obj({"target": S, "weight": INT})),
            "client_key": obj({"subnet": S, "from": S, "slot": INT}),
            "target": nullable(S), "records": arr(obj({"type": S, "value": S})), "ttl": INT,
            "ecs_scope": nullable(INT), "table_version": INT, "table_generated_at": N}),
    }
