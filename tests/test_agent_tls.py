"""The agent over mTLS with a bearer token, against a real TLS grpc.aio controller."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agents.agent import Agent
from agents.config import parse_agent_config
from agents.testing import FakeController, TcpTarget, wait_for


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, ca: bool = False, ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_mtls_and_token(tmp_path: Path) -> None:
    ca_key = _key()
    ca = _cert("test-ca", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    server = _cert("controller", server_key, ca, ca_key, ip="127.0.0.1")
    client = _cert("agent", client_key, ca, ca_key)
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "agent.pem").write_bytes(_pem(client))
    (tmp_path / "agent.key").write_bytes(_pem_key(client_key))
    (tmp_path / "token").write_text("s3cret\n")

    credentials = grpc.ssl_server_credentials([(_pem_key(server_key), _pem(server))],
                                              root_certificates=_pem(ca), require_client_auth=True)
    controller = await FakeController("tls", credentials=credentials).start()
    tcp = TcpTarget()
    try:
        cfg = parse_agent_config({
            "site": "us-east-1", "region": "us-east-1", "controllers": [controller.endpoint],
            "interval_seconds": 0.1, "capacity": 1,
            "probes": [{"name": "db", "kind": "tcp", "address": tcp.address}],
            "tls": {"ca": "ca.pem", "cert": "agent.pem", "key": "agent.key"},
            "token_file": "token",
        }, base_dir=tmp_path)
        agent = Agent(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await wait_for(lambda: len(controller.reports) >= 2, what="reports over mTLS")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
        assert controller.service.metadata[0]["authorization"] == "Bearer s3cret"
    finally:
        tcp.close()
        await controller.stop()
