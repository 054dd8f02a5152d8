"""Agent identity: a credential (bearer token or client certificate) names the sites it may report.

Against real processes: ``steering controller`` started as a console script on a real etcd, agents as gRPC
clients over real sockets; the mTLS case runs the controller in-process with real TLS.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
import yaml

from steering.auth import load_tokens
from steering.config import ConfigError
from steering.controller.agentauth import sites_of_uris
from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.controller import ControllerProcess, make_config, start_controller, write_config
from tests.support.paths import STEERING
from tests.support.pki import make_pki
from tests.support.reporters import report, send, send_refused

EAST, CACHE, ANY, OPERATOR = "east-secret-123", "cache-secret-123", "any-secret-123", "op-secret-123"


def write_tokens(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"tokens": [
        {"name": "agent-east", "role": "agent", "token": EAST, "sites": ["us-east-1"]},
        {"name": "agent-cache", "role": "agent", "token": CACHE, "sites": ["oc-nyc-1", "oc-lon-1"]},
        {"name": "agent-any", "role": "agent", "token": ANY, "sites": ["*"]},
        {"name": "alice", "role": "operator", "token": OPERATOR},
    ]}))
    return path


def test_tokens_file_sites_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tokens": [
        {"name": "a", "role": "agent", "token": "agent-secret-1"},
        {"name": "b", "role": "viewer", "token": "view-secret-1", "sites": ["us-east-1"]},
        {"name": "c", "role": "agent", "token": "agent-secret-2", "sites": ["us-esat-1"]},
        {"name": "d", "role": "agent", "token": "agent-secret-3", "sites": ["*", "us-east-1"]},
        {"name": "e", "role": "agent", "token": "agent-secret-4", "sites": "us-east-1"},
    ]}))
    with pytest.raises(ConfigError) as info:
        load_tokens(bad, known_sites=frozenset({"us-east-1", "oc-nyc-1"}))
    text = str(info.value)
    assert "tokens[0].sites: required for role agent" in text
    assert "tokens[1].sites: a viewer token does not report health" in text
    assert "tokens[2].sites: unknown site(s) 'us-esat-1'" in text
    assert 'tokens[3].sites: "*" stands alone' in text
    assert "tokens[4].sites: expected a non-empty list" in text
    tokens = load_tokens(write_tokens(tmp_path / "t.yaml"), known_sites=frozenset({"us-east-1", "oc-nyc-1",
                                                                                    "oc-lon-1"}))
    east, anyone, op = tokens.lookup(EAST), tokens.lookup(ANY), tokens.lookup(OPERATOR)
    assert east is not None and east.may_report("us-east-1") and not east.may_report("eu-west-1")
    assert anyone is not None and anyone.may_report("eu-west-1")
    assert op is not None and op.may_report("oc-lon-1")  # an operator without sites may report any


def test_certificate_uri_sans_name_sites() -> None:
    assert sites_of_uris(["spiffe://steering.test/site/us-east-1", "spiffe://steering.test/site/oc-nyc-1",
                          "https://example.test/other", "spiffe://steering.test/site/"]) == {"us-east-1", "oc-nyc-1"}
    assert sites_of_uris(["spiffe://steering.test/site/*"]) is None
    assert sites_of_uris([]) == frozenset()


async def test_a_token_reports_only_the_sites_it_names(etcd: EtcdCluster, tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens.yaml")
    config = write_config(tmp_path / "steering.yaml", etcd.endpoints, {"auth": {"tokens_file": str(tokens)}})
    ctl = ControllerProcess(tmp_path, config)
    store = Store(make_config(etcd.endpoints).etcd)
    await store.open()
    try:
        await ctl.ready()
        assert (await send(ctl.target, [report("us-east-1")], token=EAST))[0].sequence == 1
        # The us-east-1 agent's token reporting another region, or a cache site: refused, nothing stored.
        spoof = [report("eu-west-1", status=pb.HEALTH_STATUS_UNHEALTHY, agent="agent-east-1")]
        err = await send_refused(ctl.target, spoof, token=EAST)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "site: token agent-east may not report 'eu-west-1'"
        err = await send_refused(ctl.target, [report("oc-nyc-1", "us-east-1", status=pb.HEALTH_STATUS_UNHEALTHY)],
                                 token=EAST)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        # A stream that starts with its own site cannot switch to another either (one site per stream).
        err = await send_refused(ctl.target, [report("us-east-1", sequence=5), report("eu-west-1", sequence=6)],
                                 token=EAST)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "one site per stream" in (err.details() or "")
        assert (await send_refused(ctl.target, spoof)).code() == grpc.StatusCode.UNAUTHENTICATED
        # What a token names, it may report; "*" and an operator token may report any site.
        assert await send(ctl.target, [report("oc-lon-1", "eu-west-1")], token=CACHE)
        assert await send(ctl.target, [report("eu-west-1", agent="agent-any")], token=ANY)
        assert await send(ctl.target, [report("us-west-2", agent="alice")], token=OPERATOR)

        async def written() -> dict[str, str]:
            records = await store.get_health()
            return {k: h.status for k, h in records.items()} if len(records) >= 4 else {}

        records = await eventually(written, what="the allowed reports in etcd")
        assert records["us-east-1@c1"] == "healthy" and records["eu-west-1@c1"] == "healthy"
        assert "oc-nyc-1@c1" not in records, "a refused report was stored"

        refusals = [e for e in ctl.logs() if e.get("event") == "report refused: the credential does not name this site"]
        assert {(e["site"], e["credential"]) for e in refusals} == {("eu-west-1", "token agent-east"),
                                                                    ("oc-nyc-1", "token agent-east")}
        assert all(e["peer"].startswith("ipv4:127.0.0.1:") and e["agent"] for e in refusals)
        text = ctl.log_path.read_text()
        assert all(secret not in text for secret in (EAST, CACHE, ANY, OPERATOR)), "a token was logged"
    finally:
        await store.close()
        ctl.stop()


async def test_a_client_certificate_reports_only_the_sites_it_names(etcd: EtcdCluster, tmp_path: Path) -> None:
    pki = make_pki(tmp_path, clients={"nyc": ["spiffe://steering.test/site/oc-nyc-1"], "plain": [],
                                      "any": ["spiffe://steering.test/site/*"]})
    config = make_config(etcd.endpoints, {"tls": {"cert": str(pki["server_cert"]), "key": str(pki["server_key"]),
                                                  "client_ca": str(pki["ca"])}})
    run = await start_controller(config, agents=False)
    ca = pki["ca"].read_bytes()

    def creds(who: str) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(ca, pki[f"{who}_key"].read_bytes(), pki[f"{who}_cert"].read_bytes())

    try:
        assert await send(run.target, [report("oc-nyc-1", "us-east-1")], credentials=creds("nyc"))
        err = await send_refused(run.target, [report("us-east-1", status=pb.HEALTH_STATUS_UNHEALTHY)],
                                 credentials=creds("nyc"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "site: certificate nyc may not report 'us-east-1'"
        err = await send_refused(run.target, [report("us-east-1")], credentials=creds("plain"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "names no site (URI SAN .../site/<id>)" in (err.details() or "")
        assert await send(run.target, [report("eu-west-1")], credentials=creds("any"))
        assert run.ctl.ingest.view.latest("us-east-1") is None  # nothing of the refused reports was kept
    finally:
        await run.stop()


async def test_token_and_certificate_must_both_allow_the_site(etcd: EtcdCluster, tmp_path: Path) -> None:
    pki = make_pki(tmp_path, clients={"nyc": ["spiffe://steering.test/site/oc-nyc-1"]})
    tokens = write_tokens(tmp_path / "tokens.yaml")
    config = make_config(etcd.endpoints, {"auth": {"tokens_file": str(tokens)},
                                          "tls": {"cert": str(pki["server_cert"]), "key": str(pki["server_key"]),
                                                  "client_ca": str(pki["ca"])}})
    run = await start_controller(config, agents=False)
    nyc = grpc.ssl_channel_credentials(pki["ca"].read_bytes(), pki["nyc_key"].read_bytes(),
                                       pki["nyc_cert"].read_bytes())
    try:
        assert await send(run.target, [report("oc-nyc-1", "us-east-1")], token=CACHE, credentials=nyc)
        # The token allows oc-lon-1, the certificate does not.
        err = await send_refused(run.target, [report("oc-lon-1", "eu-west-1")], token=CACHE, credentials=nyc)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "token agent-cache + certificate nyc" in (err.details() or "")
    finally:
        await run.stop()


def test_without_auth_the_controller_listens_on_loopback_only(etcd: EtcdCluster, tmp_path: Path) -> None:
    config = write_config(tmp_path / "steering.yaml", etcd.endpoints)
    # 192.0.2.1 (TEST-NET-1) is refused before anything binds it.
    done = subprocess.run([STEERING, "controller", "--config", str(config), "--listen", "192.0.2.1:50051"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to listen on 192.0.2.1:50051 without an auth section or client certificates" in done.stderr


async def test_without_auth_on_loopback_the_controller_says_so(etcd: EtcdCluster, tmp_path: Path) -> None:
    ctl = ControllerProcess(tmp_path, write_config(tmp_path / "steering.yaml", etcd.endpoints))
    try:
        await ctl.ready()
        await eventually(lambda: any(e.get("event", "").startswith("no authentication configured: listening on "
                                                                    "loopback only") for e in ctl.logs()),
                         what="the start-up line saying the API is open on loopback only")
    finally:
        ctl.stop()
