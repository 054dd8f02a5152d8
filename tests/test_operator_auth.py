"""Tokens, roles and TLS on the controller's API, over real gRPC sockets and a real etcd."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import yaml

from steering.auth import load_tokens
from steering.config import ConfigError
from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc
from tests.support.controller import make_config, start_controller, stubs
from tests.support.pki import AGENT, OPERATOR, VIEWER, make_pki, tokens_file
from tests.support.reporters import send, send_refused


def test_tokens_file_problems_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tokens": [{"name": "x", "role": "admin", "token": "short"},
                                              {"role": "viewer", "token": "long-enough-1"},
                                              {"name": "y", "role": "viewer"}]}))
    with pytest.raises(ConfigError) as info:
        load_tokens(bad)
    text = str(info.value)
    assert "tokens[0].role: 'admin'" in text and "tokens[0].token" in text
    assert "tokens[1].name: missing" in text and "tokens[2]: give exactly one of token or sha256" in text
    good = load_tokens(tokens_file(tmp_path / "t.yaml"))
    assert good.lookup(VIEWER).name == "grafana" and good.lookup("nope") is None  # type: ignore[union-attr]


async def test_roles_and_audit_actor(etcd: EtcdCluster, tmp_path: Path) -> None:
    config = make_config(etcd.endpoints, {"auth": {"tokens_file": str(tokens_file(tmp_path / "tokens.yaml"))}})
    # Agents without a token are refused: the controller gets no health, so it plans with "unknown".
    run = await start_controller(config, agents=False)
    store = Store(config.etcd)
    await store.open()
    channels = []
    try:
        async def call(token: str | None, method: str, req: object) -> grpc.StatusCode:
            ch, op, _, md = stubs(run.target, token)
            channels.append(ch)
            try:
                await getattr(op, method)(req, metadata=md)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        evac = pb.EvacuateRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_NOW, reason="auth test", dry_run=True)
        assert await call(None, "Status", pb.StatusRequest()) == grpc.StatusCode.UNAUTHENTICATED
        assert await call("wrong-token-1", "Status", pb.StatusRequest()) == grpc.StatusCode.UNAUTHENTICATED
        assert await call(VIEWER, "Status", pb.StatusRequest()) == grpc.StatusCode.OK
        assert await call(VIEWER, "History", pb.HistoryRequest()) == grpc.StatusCode.OK
        assert await call(VIEWER, "Evacuate", evac) == grpc.StatusCode.PERMISSION_DENIED
        assert await call(AGENT, "Status", pb.StatusRequest()) == grpc.StatusCode.PERMISSION_DENIED
        assert await call(OPERATOR, "Evacuate", evac) == grpc.StatusCode.OK

        ch, _op, routing, md = stubs(run.target, VIEWER)
        channels.append(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs(run.target, None)[2].Resolve(pb.ResolveRequest(service="api.example.test.", geo="europe"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing bearer token" in (info.value.details() or "")
        await routing.Resolve(pb.ResolveRequest(service="api.example.test.", geo="europe"), metadata=md)

        real = pb.EvacuateRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_NOW, reason="auth test")
        _, op2, _, md2 = stubs(run.target, OPERATOR)
        await op2.Evacuate(real, metadata=md2)
        audit = await store.list_audit()
        assert audit[0]["actor"] == "alice"
        ev = (await store.get_overrides()).evacuations
        assert ev[0].actor == "alice"

        # The health check stays open; the agent stream needs the agent (or operator) role.
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        h = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert h.status == health_pb2.HealthCheckResponse.SERVING
        report = pb.HealthReport(site="us-east-1", region="us-east-1", kind=pb.SITE_KIND_REGION,
                                 status=pb.HEALTH_STATUS_HEALTHY, sequence=1, agent_id="a")
        assert (await send_refused(run.target, [report], token=VIEWER)).code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await send(run.target, [report], token=AGENT))[0].sequence == 1
    finally:
        for ch in channels:
            await ch.close()
        await store.close()
        await run.stop()


async def test_tls_with_client_certificates(etcd: EtcdCluster, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    config = make_config(etcd.endpoints, {"tls": {"cert": str(pki["server_cert"]), "key": str(pki["server_key"]),
                                                  "client_ca": str(pki["ca"])}})
    run = await start_controller(config, agents=False)
    try:
        ca = pki["ca"].read_bytes()
        good = grpc.ssl_channel_credentials(ca, pki["client_key"].read_bytes(), pki["client_cert"].read_bytes())
        async with grpc.aio.secure_channel(run.target, good) as ch:
            st = await pb_grpc.OperatorServiceStub(ch).Status(pb.StatusRequest(), timeout=5)
            assert st.replica == "c1"
        # Without a client certificate the handshake fails.
        async with grpc.aio.secure_channel(run.target, grpc.ssl_channel_credentials(ca)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.OperatorServiceStub(ch).Status(pb.StatusRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # Plaintext to a TLS port fails too.
        async with grpc.aio.insecure_channel(run.target) as ch:
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.OperatorServiceStub(ch).Status(pb.StatusRequest(), timeout=5)
    finally:
        await run.stop()
