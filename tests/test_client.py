"""steering.client: a local view fed by Watch, answering in-process, surviving a controller restart."""

from __future__ import annotations

import grpc
import pytest

from steering.client import SteeringClient
from steering.etcdproc import EtcdCluster
from steering.resolve import ResolveError
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.controller import API, make_config, start_controller, stubs

EUROPE_CLIENT = "198.51.100.130"  # in europe's 198.51.100.128/26


async def test_client_follows_changes_and_survives_a_controller_restart(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    target = run.target
    client = SteeringClient([target], backoff_initial=0.05, backoff_max=0.5)
    ch, op, routing, md = stubs(target)
    try:
        await client.start()
        assert await client.wait_ready(timeout=10)
        with pytest.raises(ResolveError):
            client.resolve("nope.example.test", geo="europe")
        first = client.choose("api.example.test", client_address=EUROPE_CLIENT)
        assert first is not None and first.target == "eu-west-1" and first.addresses == ("192.0.2.30", "2001:db8::30")
        # The in-process answer is the RPC's answer.
        rpc = await routing.Resolve(pb.ResolveRequest(service=API, client_address=EUROPE_CLIENT), metadata=md)
        local = client.resolve(API, client_address=EUROPE_CLIENT)
        assert rpc.geo == "europe" and [t.target for t in rpc.targets] == [t.target for t in local]
        assert [t.weight for t in rpc.targets] == [t.weight for t in local] and rpc.ttl == 30
        assert rpc.choice.target == first.target  # the same pick (tests/test_pick.py checks it against DNS)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await routing.Resolve(pb.ResolveRequest(service=API, client_address="not-an-ip"), metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith("client_address:")

        await op.Evacuate(pb.EvacuateRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_NOW, reason="client test"),
                          metadata=md)

        def moved() -> bool:
            t = client.choose(API, client_address=EUROPE_CLIENT)
            return t is not None and t.target != "eu-west-1"

        await eventually(moved, what="the client to follow the evacuation")
        version = client.version
        await ch.close()

        # The controller goes away: the client keeps answering from its last view.
        await run.stop()
        await eventually(lambda: not client.connected, what="the client to notice")
        assert client.version == version and moved()

        # A controller comes back on the same address; the client reconnects and follows a restore.
        run = await start_controller(config, "c2", listen=target)
        await eventually(lambda: client.connected, what="the client to reconnect")
        ch, op, routing, md = stubs(target)
        await op.Restore(pb.RestoreRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_NOW), metadata=md)

        def back() -> bool:
            t = client.choose(API, client_address=EUROPE_CLIENT)
            return t is not None and t.target == "eu-west-1"

        await eventually(back, timeout=15, what="the client to follow the restore")
        assert client.version > version and client.reconnects >= 1
    finally:
        await ch.close()
        await client.close()
        await run.stop()
