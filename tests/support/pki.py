"""Credentials for tests: a tokens file with one token per role, and a PKI (CA, server, clients with URI SANs)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

OPERATOR, VIEWER, AGENT = "op-secret-123", "view-secret-123", "agent-secret-123"


def tokens_file(path: Path) -> Path:
    """A tokens file: alice (operator, ``OPERATOR``), grafana (viewer, ``VIEWER`` as sha256), agent-1 (us-east-1)."""
    path.write_text(yaml.safe_dump({"tokens": [
        {"name": "alice", "role": "operator", "token": OPERATOR},
        {"name": "grafana", "role": "viewer", "sha256": hashlib.sha256(VIEWER.encode()).hexdigest()},
        {"name": "agent-1", "role": "agent", "token": AGENT, "sites": ["us-east-1"]},
    ]}))
    return path


def _cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          ca: bool = False, uris: Sequence[str] = ()) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
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
