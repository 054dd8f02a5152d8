"""``RoutingService``: Resolve (where should this client go?), Watch (the table as it changes) and Explain
(why a client gets the DNS answer it gets).

All answer from the table this replica follows (``controller.tables``), never
from etcd per call. Resolve ranks with ``steering.resolve.rank`` and names the
client's target with ``steering.resolve.choose_ranked`` (the DNS server's pick),
the same code ``steering.client`` runs in-process. Watch sends every subscriber
the same message per table version (``tablewire``). Explain is
``steering.explain.explain``, the function ``steerctl explain --config --table``
runs offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from steering import explain, limits, logs
from steering.controller.tablewire import WatchMessages
from steering.geoip import Codes, codes_at
from steering.geoipwatch import Placement
from steering.resolve import ResolveError, Topology, choose_ranked, rank
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.routing_api")


class NoTable(Exception):
    """This replica follows no routing table yet (it is starting): UNAVAILABLE, HTTP 503."""


class RoutingService(pb_grpc.RoutingServiceServicer):
    def __init__(self, controller: Any) -> None:
        self.ctl = controller
        # the topology with the GeoIP map in use: the controller's placement swaps it on a reload
        self.placement: Placement = getattr(controller, "placement", None) or Placement(controller.config)
        self.topology_json = self.topology.to_json()
        self.messages = WatchMessages(self.topology_json)

    @property
    def topology(self) -> Topology:
        return self.placement.topology

    async def Resolve(self, request: pb.ResolveRequest,
                      context: grpc.aio.ServicerContext[pb.ResolveRequest, pb.ResolveResponse]) -> pb.ResolveResponse:
        try:
            # Bounded first: the refusals below quote the value, and a megabyte does not belong in one.
            for field in ("service", "client_address", "geo"):
                limits.text(field, getattr(request, field), limits.MAX_ID)
        except limits.LimitError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        table = self.ctl.tables.current
        if table is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no routing table yet: the controller is starting")
        which = request.WhichOneof("client")
        address = request.client_address if which == "client_address" else ""
        try:
            name, geo, targets = rank(table, self.topology, request.service, client_address=address,
                                      geo=request.geo if which == "geo" else "", max_targets=request.max_targets)
            choice = choose_ranked(table, self.topology, name, geo, targets, address)
        except ResolveError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        route = table.route(name, geo)
        resp = pb.ResolveResponse(service=name, geo=geo, table_version=table.version,
                                  fail_open=bool(route and route.fail_open), ttl=self.topology.services[name].ttl)
        for t in targets:
            resp.targets.add(target=t.target, kind=t.kind, region=t.region, weight=t.weight,
                             addresses=list(t.addresses), reason=t.reason)
        if choice is not None:
            resp.choice.CopyFrom(pb.RankedTarget(target=choice.target, kind=choice.kind, region=choice.region,
                                                  weight=choice.weight, addresses=list(choice.addresses),
                                                  reason=choice.reason))
        return resp

    async def Explain(self, request: pb.ExplainRequest,
                      context: grpc.aio.ServicerContext[pb.ExplainRequest, pb.ExplainResponse]) -> pb.ExplainResponse:
        try:
            found = await self.explanation(request.service, request.client_address, request.ecs_subnet)
        except (limits.LimitError, ResolveError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NoTable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return explanation_pb(found)

    async def explanation(self, service: str, client_address: str, ecs_subnet: str) -> explain.Explanation:
        """Explain for both transports (gRPC above, the REST API in steering/http): LimitError or
        ResolveError for bad input, NoTable before the first table."""
        for field, value in (("service", service), ("client_address", client_address), ("ecs_subnet", ecs_subnet)):
            limits.text(field, value, limits.MAX_ID)
        table = self.ctl.tables.current
        if table is None:
            raise NoTable("no routing table yet: the controller is starting")
        topology = self.topology  # one view for the whole call, even if a GeoIP reload swaps it
        info = topology.geomap.geoip
        if info is None:
            return explain.explain(topology, table, service, client_address, ecs_subnet)
        path = info.path  # the database is read for what it says of the address: off the event loop

        def codes_of(address: str) -> Codes | None:
            return codes_at(path, address)

        return await asyncio.to_thread(explain.explain, topology, table, service, client_address, ecs_subnet,
                                       codes_of)

    async def Watch(self, request: pb.WatchRequest,
                    context: grpc.aio.ServicerContext[pb.WatchRequest, pb.WatchResponse],
                    ) -> AsyncIterator[pb.WatchResponse]:
        service = ""
        if len(request.service) > limits.MAX_ID:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"service: {len(request.service)} characters; at most {limits.MAX_ID}")
        if request.service:
            try:
                service = self.topology.service_name(request.service)
            except ResolveError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        last = request.since_version
        first = True
        while True:
            table = self.ctl.tables.current
            if table is None or table.version <= last:
                if first:  # nothing to send yet: still hand the client its topology at once
                    yield self.messages.topology_only()
                    first = False
                table = await self.ctl.tables.wait_newer(last, timeout=30.0)
                if table is None:
                    continue
            last = table.version
            # built once per version (and service filter) for every subscriber: never modify it here
            msg = self.messages.response(table, service, first)
            first = False
            yield msg


def explanation_pb(e: explain.Explanation) -> pb.ExplainResponse:
    """An ``Explanation`` as the API sends it (``steering.cli.shapes.explanation`` reads it back)."""
    p = e.placed
    resp = pb.ExplainResponse(
        service=e.service, client_address=e.client_address, ecs_subnet=e.ecs_subnet, geo=p.geo,
        geo_source=p.source, geo_prefix=p.prefix, why=p.why, fail_open=e.fail_open, pinned=e.pinned,
        fallback=e.fallback, client_subnet=e.client_subnet, key_source=e.key_source, slot=e.slot, target=e.target,
        ttl=e.ttl, table_version=e.table_version, table_generated_at=e.table_generated_at)
    if p.geoip is not None:
        resp.geoip.CopyFrom(pb.ExplainGeoIp(country=p.geoip.country, continent=p.geoip.continent,
                                            subdivisions=list(p.geoip.subdivisions), matched=p.geoip.matched,
                                            error=p.geoip.error))
    for w in e.weights:
        resp.weights.add(target=w.target, kind=w.kind, region=w.region, weight=w.weight, reason=w.reason,
                         in_split=w.in_split)
    for t, weight in e.split:
        resp.split.add(target=t, weight=weight)
    for r in e.records:
        resp.records.add(type=r.type, value=r.value)
    if e.ecs_scope is not None:
        resp.ecs_scope = e.ecs_scope
    return resp
