"""Tokens, roles and TLS on the controller's API, over real gRPC sockets and a real etcd."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from steering.auth import load_tokens
from steering.config import ConfigError
from steering.store import Store
from steering.testing.etcd import EtcdCluster
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc
from tests.operator_helpers import make_config, start_controller, stubs

OPERATOR, VIEWER, AGENT = "op-secret-123", "view-secret-123", "agent-secret-123"


def tokens_file(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"tokens": [
        {"name": "alice", "role": "operator", "token": OPERATOR},
        {"name": "grafana", "role": "viewer", "sha256": hashlib.sha256(VIEWER.encode()).hexdigest()},
        {"name": "agent-1", "role": "agent", "token": AGENT, "sites": ["us-east-1"]},
    ]}))
    return path


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

        ch, op, routing, md = stubs(run.target, VIEWER)
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
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in pb_grpc.HealthServiceStub(ch).Report(iter([report]), metadata=md):
                pass
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        acks = [a async for a in pb_grpc.HealthServiceStub(ch).Report(
            iter([report]), metadata=(("authorization", f"Bearer {AGENT}"),))]
        assert acks[0].sequence == 1
    finally:
        for ch in channels:
            await ch.close()
        await store.close()
        await run.stop()


def _cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          ca: bool = False, uris: Sequence[str] = ()) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        import ipaddress

        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         *map(x509.UniformResourceIdentifier, uris)]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path, clients: Mapping[str, Sequence[str]] = MappingProxyType({"client": ()})) -> dict[str, Path]:
    """A CA, a server certificate and one client certificate per entry of ``clients`` (name -> its URI SANs):
    ``ca``, ``server_cert``/``server_key``, ``<name>_cert``/``<name>_key``."""
    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, ca=True)
    out = {"ca": d / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, uris in {"server": (), **clients}.items():
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(who, k, (ca.subject, ca_key), uris=uris)
        out[f"{who}_cert"], out[f"{who}_key"] = d / f"{who}.pem", d / f"{who}.key"
        out[f"{who}_cert"].write_bytes(c.public_bytes(serialization.Encoding.PEM))
        out[f"{who}_key"].write_bytes(pem_key(k))
    return out


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
