"""Watch encodes each table version once and sends every subscriber the same message (tablewire.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import grpc

from steering.controller.routing_api import RoutingService
from steering.controller.tableview import TableView
from steering.controller.tablewire import WatchMessages
from steering.table import RoutingTable
from steering.topology import Topology
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc
from tests.support.dns_server import load, table_with

API = "api.example.test."


def test_one_message_per_version_and_filter(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    topology = Topology.from_config(cfg).to_json()
    messages = WatchMessages(topology)
    v1 = table_with(cfg, 1, {})
    plain = messages.response(v1)
    assert messages.response(v1) is plain and messages.builds == 1
    first = messages.response(v1, first=True)
    assert first is messages.response(v1, first=True) and messages.builds == 1  # a copy of the built table
    assert first.topology_json == topology and not plain.topology_json and first.table == plain.table
    assert RoutingTable.from_json(plain.table.json) == v1
    only = messages.response(v1, API)
    assert messages.builds == 2 and [s.service for s in only.table.services] == [API]
    v2 = replace(table_with(cfg, 2, {}), leader="c2")
    assert RoutingTable.from_json(messages.response(v2).table.json) == v2 and messages.builds == 3
    # a stream still sending the older table gets it, without pushing the newer one out
    assert RoutingTable.from_json(messages.response(v1).table.json) == v1 and messages.builds == 4
    assert messages.response(v2) is messages.response(v2) and messages.builds == 4
    assert messages.topology_only().topology_json == topology and not messages.topology_only().HasField("table")


async def test_every_subscriber_gets_the_same_bytes_built_once(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    tables = TableView(store=None)
    service = RoutingService(SimpleNamespace(config=cfg, tables=tables))  # what RoutingService reads of a controller
    server = grpc.aio.server()
    pb_grpc.add_RoutingServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.RoutingServiceStub(channel)  # type: ignore[no-untyped-call]
    streams = [stub.Watch(pb.WatchRequest()) for _ in range(3)]
    try:
        for call in streams:  # no table yet: each stream gets the topology at once
            hello = await asyncio.wait_for(call.read(), 10)
            assert hello.topology_json and not hello.HasField("table")
        for version in (1, 2):
            tables.update(table_with(cfg, version, {}))
            got = [await asyncio.wait_for(call.read(), 10) for call in streams]
            assert {m.table.version for m in got} == {version}
            assert len({m.SerializeToString() for m in got}) == 1
            assert service.messages.builds == version  # one build per version, whatever the subscribers
    finally:
        for call in streams:
            call.cancel()
        await channel.close()
        await server.stop(None)
