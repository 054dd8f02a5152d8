"""The REST API's routes under ``/api/v1/``: what each takes, whose roles apply, and its handler.

Every handler is an adapter: JSON in → the request message → the same
implementation the gRPC API runs (``OperatorService.evacuate`` and the
others: validate, request id, read ``Live``, ``actions.decide_*``, apply in
one transaction; ``RoutingService.explanation``) → JSON out. Nothing here
decides or writes by itself. The table (one, by version, the versions
kept) is read from the followed table and the store, as Status reads it.

``ROUTES`` is also what the OpenAPI document is built from (``openapi.py``),
so a route cannot be served without being described.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from steering.auth import OPERATOR_METHODS
from steering.config import Config
from steering.controller.operator import OperatorService
from steering.controller.routing_api import RoutingService
from steering.http import configured, schemas, shapes
from steering.http.errors import RETRY, ApiError
from steering.http.schemas import B, Known, Schema
from steering.http.utilization import UtilizationHistory
from steering.ports import FollowedTable
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb

PREFIX = "/api/v1"
OPERATOR = "/steering.v1.OperatorService/"
ROUTING = "/steering.v1.RoutingService/"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class TableHistory(Protocol):
    """What the table routes read of the store (``steering.store.Store``)."""

    async def get_table(self) -> RoutingTable | None: ...

    async def get_table_version(self, version: int) -> RoutingTable | None: ...

    async def table_versions(self) -> set[int]: ...


class TableBytes:
    """The canonical JSON of the last tables served, built once per version (docs/architecture.md §3: a
    benchmark-scale table is megabytes, and every poll would otherwise encode it again on the event loop)."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._by_version: dict[tuple[int, str], bytes] = {}

    async def of(self, table: RoutingTable) -> bytes:
        key = (table.version, table.leader)  # a version is never reused by a leader; the pair is exact
        found = self._by_version.get(key)
        if found is None:
            found = await asyncio.to_thread(table.to_json)
            self._by_version[key] = found
            while len(self._by_version) > self.keep:
                del self._by_version[min(self._by_version)]
        return found


@dataclass(frozen=True)
class Api:
    """What the handlers call: the replica's config, its two services, the table it follows, the store."""

    config: Config
    operator: OperatorService
    routing: RoutingService
    tables: FollowedTable
    store: TableHistory
    known: Known
    table_bytes: TableBytes = field(default_factory=TableBytes)
    utilization: UtilizationHistory = field(default_factory=UtilizationHistory)


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["path", "query", "header"]
    schema: Schema
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Call:
    """A request as its handler sees it: checked against the route's schemas."""

    path: Mapping[str, Any]
    query: Mapping[str, Any]
    headers: Mapping[str, Any]
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # JSON-able, or bytes already JSON
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Api, Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under PREFIX; {name} for a path parameter (the same syntax in aiohttp and OpenAPI)
    operation: str  # the OpenAPI operationId
    rpc: str  # the gRPC method whose roles apply (steering.auth.allowed_roles)
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    body: str = ""  # the request body's schema (components.schemas), "" for none
    ok: tuple[tuple[int, str], ...] = ((200, ""),)  # (status, response schema)
    errors: frozenset[int] = frozenset()  # besides 400, 401, 403, 422 and 503
    description: str = ""

    @property
    def action(self) -> bool:
        return self.rpc.rsplit("/", 1)[-1] in OPERATOR_METHODS


def _request_id(call: Call, given: Any) -> str:
    """The action's request id: the ``Idempotency-Key`` header or the ``request_id`` field (the same id if
    both), else a new one: a retry with the same id is applied once."""
    header = call.headers.get(IDEMPOTENCY_HEADER)
    if header is not None and given is not None and header != given:
        raise ApiError(400, "conflicting_request_id", f"request_id {given!r} differs from the {IDEMPOTENCY_HEADER} "
                       f"header {header!r}; give one, or the same in both", field="request_id")
    rid = given if given is not None else header
    return str(rid) if rid is not None else uuid.uuid4().hex


_MODES: dict[str | None, pb.EvacuationMode] = {None: pb.EVACUATION_MODE_UNSPECIFIED, "now": pb.EVACUATION_MODE_NOW,
                                                "ramp": pb.EVACUATION_MODE_RAMP}


def _ramp(args: Mapping[str, Any]) -> tuple[pb.EvacuationMode, pb.Ramp]:
    return _MODES[args.get("mode")], pb.Ramp(step=args.get("step", 0.0), interval_seconds=args.get("interval_seconds", 0.0))


async def _current(api: Api) -> RoutingTable:
    table = api.tables.current or await api.store.get_table()
    if table is None:
        raise ApiError(503, "unavailable", "no routing table yet: the controller is starting", headers=RETRY)
    return table


# ---------------------------------------------------------------------- reads


async def status(api: Api, call: Call) -> Reply:
    return Reply(200, shapes.status(await api.operator.status()))


async def topology(api: Api, call: Call) -> Reply:
    return Reply(200, configured.topology(api.config, api.operator.replica, api.config.auth is not None))


async def utilization(api: Api, call: Call) -> Reply:
    history = api.utilization
    samples = history.since(time.time(), float(call.query.get("seconds", history.window)))
    return Reply(200, {"window_seconds": history.window, "every_seconds": history.every,
                       "samples": [s.to_json() for s in samples]})


async def table(api: Api, call: Call) -> Reply:
    t = await _current(api)
    return Reply(200, await api.table_bytes.of(t), {"ETag": f'"v{t.version}"'})


async def tables(api: Api, call: Call) -> Reply:
    return Reply(200, shapes.tables(api.tables.current or await api.store.get_table(),
                                    await api.store.table_versions()))


async def table_version(api: Api, call: Call) -> Reply:
    version = call.path["version"]
    current = api.tables.current
    found = current if current is not None and current.version == version else \
        await api.store.get_table_version(version)
    if found is None:
        kept = sorted(await api.store.table_versions())
        raise ApiError(404, "not_found", f"table v{version} is not kept: etcd keeps the current version and up to 3 "
                       f"before it ({', '.join(f'v{v}' for v in kept) or 'none yet'})", field="version")
    return Reply(200, await api.table_bytes.of(found), {"ETag": f'"v{found.version}"'})


async def events(api: Api, call: Call) -> Reply:
    q = call.query
    req = pb.EventsRequest(limit=q.get("limit", 0), after_id=q.get("after_id", ""))
    if "since" in q:
        ts = Timestamp()
        ts.FromNanoseconds(int(q["since"] * 1e9))
        req.since.CopyFrom(ts)
    return Reply(200, shapes.events(await api.operator.events(req)))


async def history(api: Api, call: Call) -> Reply:
    return Reply(200, shapes.history(await api.operator.history(pb.HistoryRequest(limit=call.query.get("limit", 0)))))


async def evacuations(api: Api, call: Call) -> Reply:
    return Reply(200, shapes.evacuations(await api.operator.overrides()))


async def evacuation(api: Api, call: Call) -> Reply:
    region = call.path["region"]
    listed = shapes.evacuations(await api.operator.overrides())["evacuations"]
    mine = [e for e in listed if e["region"] == region]
    if not mine:
        raise ApiError(404, "not_found", f"{region} has no evacuation or restore in flight", field="region")
    return Reply(200, {"evacuations": mine})


async def pins(api: Api, call: Call) -> Reply:
    return Reply(200, shapes.pins(await api.operator.overrides()))


async def explain(api: Api, call: Call) -> Reply:
    q = call.query
    found = await api.routing.explanation(q["service"], q["client_address"], q.get("ecs_subnet", ""))
    return Reply(200, found.to_dict())


async def plan(api: Api, call: Call) -> Reply:
    b = call.body
    req = pb.PlanRequest(evacuations=[pb.Evacuation(region=e["region"], reason=e.get("reason", ""))
                                      for e in b.get("evacuate", ())],
                         restore=list(b.get("restore", ())), healthy=dict(b.get("healthy", {})))
    return Reply(200, shapes.plan(await api.operator.plan(req)))


# ---------------------------------------------------------------------- actions


def _done(result: dict[str, Any], created: str = "") -> Reply:
    """201 with the resource's address for an evacuation applied now; 200 for a dry run or a duplicate."""
    if created and result["applied"] and not result["duplicate"] and not result["dry_run"]:
        return Reply(201, result, {"Location": created})
    return Reply(200, result)


async def evacuate(api: Api, call: Call) -> Reply:
    b = call.body
    rid = _request_id(call, b.get("request_id"))
    mode, ramp = _ramp(b)
    resp = await api.operator.evacuate(pb.EvacuateRequest(
        region=b["region"], mode=mode, ramp=ramp, reason=b["reason"], dry_run=b.get("dry_run", False),
        force=b.get("force", False), request_id=rid))
    return _done(shapes.evacuated(resp, b["region"], rid), f"{PREFIX}/evacuations/{b['region']}")


async def restore(api: Api, call: Call) -> Reply:
    q, region = call.query, call.path["region"]
    rid = _request_id(call, q.get("request_id"))
    mode, ramp = _ramp(q)
    resp = await api.operator.restore(pb.RestoreRequest(
        region=region, mode=mode, ramp=ramp, reason=q.get("reason", ""), dry_run=q.get("dry_run", False),
        request_id=rid))
    return _done(shapes.restored(resp, region, rid))


async def pin(api: Api, call: Call) -> Reply:
    b, service, geo = call.body, call.path["service"], call.path["geo"]
    rid = _request_id(call, b.get("request_id"))
    resp = await api.operator.pin(pb.PinWeightsRequest(
        service=service, geo=geo, weights=b["weights"], reason=b["reason"], dry_run=b.get("dry_run", False),
        force=b.get("force", False), request_id=rid))
    return _done(shapes.pinned(resp, service, geo, rid))


async def unpin(api: Api, call: Call) -> Reply:
    q, service, geo = call.query, call.path["service"], call.path["geo"]
    rid = _request_id(call, q.get("request_id"))
    resp = await api.operator.unpin(pb.UnpinWeightsRequest(service=service, geo=geo, reason=q.get("reason", ""),
                                                           dry_run=q.get("dry_run", False), request_id=rid))
    return _done(shapes.unpinned(resp, service, geo, rid))


# ---------------------------------------------------------------------- the table of routes


def routes(known: Known, openapi: Handler) -> tuple[Route, ...]:
    from steering import limits

    region = Param("region", "path", known.regions, True, "a configured region")
    service = Param("service", "path", known.services, True, "a configured service, as named in the config "
                    "(with its trailing dot)")
    geo = Param("geo", "path", known.geos, True, "a configured geo")
    idem = Param(IDEMPOTENCY_HEADER, "header", schemas.REQUEST_ID, False,
                 "the request id: a retry with the same id is applied once (or request_id)")
    ramp = schemas.ramp_fields()
    reason = Param("reason", "query", schemas.text(limits.MAX_REASON), False, "why (kept in the audit)")
    dry_run = Param("dry_run", "query", B, False, "the preview only: write nothing")
    request_id = Param("request_id", "query", schemas.REQUEST_ID, False, f"as the {IDEMPOTENCY_HEADER} header")
    limit = Param("limit", "query", schemas.integer((1, 1000)), False, "at most this many (default 50)")
    evac_ok = ((201, "ActionResult"), (200, "ActionResult"))
    return (
        Route("GET", "/status", "getStatus", OPERATOR + "Status", "Regions, sites, the table, evacuations, events",
              status, ok=((200, "Status"),),
              description="The shape of `steerctl status --json`. While etcd cannot be reached, the replica answers "
                          "from what it last knew and says so (`stale`)."),
        Route("GET", "/topology", "getTopology", OPERATOR + "Status",
              "The configured regions, sites, services, geos and policy", topology, ok=((200, "Topology"),),
              description="What the configuration says (the status says what is observed): every target of a "
                          "service, weight 0 included, and the watermark and hard limit the console draws."),
        Route("GET", "/utilization", "getUtilization", OPERATOR + "Status",
              "Planned utilization per region and site over the last hour", utilization,
              params=(Param("seconds", "query", schemas.number((1, 3600)), False,
                            "how far back (default and at most 3600)"),),
              ok=((200, "Utilization"),),
              description="As this replica followed the tables: one sample per table version and one every "
                          "`every_seconds` while it stays the same; a replica that restarted has less."),
        Route("GET", "/table", "getTable", OPERATOR + "Status", "The current routing table", table,
              ok=((200, "Table"),), description="The table's canonical form (docs/architecture.md §3)."),
        Route("GET", "/tables", "listTables", OPERATOR + "Status", "The table versions etcd keeps", tables,
              ok=((200, "Tables"),)),
        Route("GET", "/tables/{version}", "getTableVersion", OPERATOR + "Status", "A table version etcd still keeps",
              table_version, params=(Param("version", "path", schemas.integer((1, 2**63 - 1)), True),),
              ok=((200, "Table"),), errors=frozenset({404}),
              description="etcd keeps the current version and up to 3 before it; older ones are 404."),
        Route("GET", "/events", "listEvents", OPERATOR + "Events", "The event timeline (oldest first)", events,
              params=(Param("since", "query", schemas.number(limits.STARTED_AT), False, "unix seconds"),
                      Param("after_id", "query", {"type": "string", "minLength": 1, "maxLength": 64,
                                                  "pattern": schemas.REQUEST_ID_PATTERN}, False,
                            "only events after this id (to follow the timeline)"),
                      Param("limit", "query", schemas.integer((1, 1000)), False,
                            "at most this many (default 50); without after_id the newest")),
              ok=((200, "Events"),)),
        Route("GET", "/history", "listHistory", OPERATOR + "History", "Operator actions (the audit), newest first",
              history, params=(limit,), ok=((200, "History"),)),
        Route("POST", "/plan", "plan", OPERATOR + "Plan", "What if: evacuations, restores, health", plan,
              body="PlanRequest", ok=((200, "Plan"),),
              description="Writes nothing. `evacuate` entries apply at once (forced); `healthy` overrides a "
                          "region's or site's health."),
        Route("GET", "/evacuations", "listEvacuations", OPERATOR + "Status", "Evacuations and restores in flight",
              evacuations, ok=((200, "Evacuations"),)),
        Route("POST", "/evacuations", "evacuate", OPERATOR + "Evacuate", "Evacuate a region", evacuate,
              params=(idem,), body="EvacuateRequest", ok=evac_ok, errors=frozenset({409}),
              description="Checked against the safety rules on the live state; a refusal is 409 naming each rule "
                          "and its numbers, with the preview. `dry_run` returns the preview and writes nothing. "
                          "Without `mode` the policy's pace applies."),
        Route("GET", "/evacuations/{region}", "getEvacuation", OPERATOR + "Status",
              "A region's evacuation or restore in flight", evacuation, params=(region,),
              ok=((200, "Evacuations"),), errors=frozenset({404})),
        Route("DELETE", "/evacuations/{region}", "restore", OPERATOR + "Restore", "Restore a region", restore,
              params=(region, Param("mode", "query", ramp["mode"], False, "now, or ramp (the default)"),
                      Param("step", "query", ramp["step"], False, "share of traffic back per step"),
                      Param("interval_seconds", "query", ramp["interval_seconds"], False, "seconds between steps"),
                      reason, dry_run, request_id, idem),
              ok=((200, "ActionResult"),), errors=frozenset({404, 409})),
        Route("GET", "/pins", "listPins", OPERATOR + "Status", "Pinned weights", pins, ok=((200, "Pins"),)),
        Route("PUT", "/pins/{service}/{geo}", "pin", OPERATOR + "PinWeights", "Pin a geo's weights for a service",
              pin, params=(service, geo, idem), body="PinRequest", ok=((200, "ActionResult"),),
              errors=frozenset({404, 409}),
              description="Weights are normalised to 1000 over the pinned targets."),
        Route("DELETE", "/pins/{service}/{geo}", "unpin", OPERATOR + "UnpinWeights", "Remove a pin", unpin,
              params=(service, geo, reason, dry_run, request_id, idem), ok=((200, "ActionResult"),),
              errors=frozenset({404, 409})),
        Route("GET", "/explain", "explain", ROUTING + "Explain", "Why a client gets the DNS answer it gets", explain,
              params=(Param("service", "query", schemas.text(limits.MAX_ID, 1), True, "a service name"),
                      Param("client_address", "query", schemas.text(limits.MAX_ID, 1), True,
                            "the query's source address (the client or its resolver)"),
                      Param("ecs_subnet", "query", schemas.text(limits.MAX_ID), False,
                            "the query's EDNS Client Subnet, e.g. 198.51.100.0/24")),
              ok=((200, "Explanation"),)),
        Route("GET", "/openapi.json", "openapi", OPERATOR + "Status", "This document", openapi,
              ok=((200, "OpenApi"),)),
    )
