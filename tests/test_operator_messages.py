"""The smaller findings of issue 11 §7, against real processes: messages say what is true.

``restore`` does not say "done" while no leader publishes; a missing client certificate is named, not
just "Socket closed"; failed authentication is logged with the peer and the method (never the token);
``auth`` without ``tls`` beyond loopback is refused at start unless ``--insecure``.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc

from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc
from tests.support import eventually
from tests.support.cli import steerctl
from tests.support.controller import ControllerProcess, make_config, start_controller, stubs, write_config
from tests.support.paths import STEERING
from tests.support.pki import OPERATOR, VIEWER, make_pki, tokens_file


async def test_restore_does_not_say_done_while_no_leader_publishes(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    ghost_store = Store(config.etcd)
    await ghost_store.open()
    other = None
    # A leader that never publishes: it campaigns now, and leads once c1 steps down.
    ghost = asyncio.create_task(ghost_store.campaign("ghost"))
    try:
        await run.stop()
        leadership = await asyncio.wait_for(ghost, 20)
        other = await start_controller(config, name="c2", agents=False, lead=False)
        await eventually(lambda: other.ctl.tables.current is not None, what="c2 to follow the last table")
        ch, op, _, md = stubs(other.target)
        try:
            # Recorded while nobody publishes: the table never shows it, so it looks "restored" already.
            await op.Evacuate(pb.EvacuateRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_NOW, reason="x"),
                              metadata=md)
        finally:
            await ch.close()
        rc, out, err = await steerctl("restore", "eu-west-1", "--now", "--yes", "--publish-wait", "1",
                                      env={"STEERCTL_SERVER": other.target})
        assert rc == 1, (rc, out, err)
        assert "done" not in out, out
        assert "accepted (audit" in out
        assert "recorded, but the leader (ghost) has published no table for it" in err, err
        await leadership.resign()
    finally:
        if not ghost.done():
            ghost.cancel()
        if other is not None:
            await other.stop()
        await ghost_store.close()


async def test_steerctl_names_a_missing_client_certificate(etcd: EtcdCluster, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    config = make_config(etcd.endpoints, {"tls": {"cert": str(pki["server_cert"]), "key": str(pki["server_key"]),
                                                  "client_ca": str(pki["ca"])}})
    run = await start_controller(config, agents=False)
    env = {"STEERCTL_SERVER": run.target}
    try:
        rc, out, err = await steerctl("status", "--ca", str(pki["ca"]), env=env)
        assert rc == 3, (rc, err)
        assert "it probably requires a client certificate (give --cert and --key)" in err, err
        rc, out, err = await steerctl("status", env=env)
        assert rc == 3 and "it probably requires TLS (give --ca)" in err, err
        rc, out, err = await steerctl("status", "--ca", str(pki["ca"]), "--cert", str(pki["client_cert"]),
                                      "--key", str(pki["client_key"]), env=env)
        assert rc == 0 and "leader c1" in out, (rc, err)
    finally:
        await run.stop()


async def test_failed_authentication_is_logged_with_peer_and_method_never_the_token(etcd: EtcdCluster,
                                                                                    tmp_path: Path) -> None:
    wrong = "not-a-real-token-4711"
    config = write_config(tmp_path / "steering.yaml", etcd.endpoints,
                          {"auth": {"tokens_file": str(tokens_file(tmp_path / "tokens.yaml"))}})
    ctl = ControllerProcess(tmp_path, config)
    try:
        await ctl.ready()
        async with grpc.aio.insecure_channel(ctl.target) as ch:
            op = pb_grpc.OperatorServiceStub(ch)
            for md in ((("authorization", f"Bearer {wrong}"),), (), (("authorization", f"Bearer {VIEWER}"),)):
                try:
                    await op.Evacuate(pb.EvacuateRequest(region="eu-west-1", reason="x", dry_run=True), metadata=md)
                except grpc.aio.AioRpcError:
                    pass
            await op.Status(pb.StatusRequest(), metadata=(("authorization", f"Bearer {OPERATOR}"),))

        def denials() -> list[dict[str, object]]:
            return [e for e in ctl.logs() if e.get("event") in ("authentication failed", "permission denied")]

        found = await eventually(lambda: len(denials()) >= 3 and denials(), what="three denials in the log")
        assert [(e["event"], e["code"]) for e in found] == [
            ("authentication failed", "UNAUTHENTICATED"), ("authentication failed", "UNAUTHENTICATED"),
            ("permission denied", "PERMISSION_DENIED")]
        for e in found:
            assert e["method"] == "/steering.v1.OperatorService/Evacuate"
            assert str(e["peer"]).startswith("ipv4:127.0.0.1:")
        assert "invalid bearer token" in str(found[0]["error"]) and "missing bearer token" in str(found[1]["error"])
        text = ctl.log_path.read_text()
        for secret in (wrong, VIEWER, OPERATOR):
            assert secret not in text, "a token reached the log"
    finally:
        ctl.stop()


def test_auth_without_tls_beyond_loopback_is_refused_unless_insecure(etcd: EtcdCluster, tmp_path: Path) -> None:
    config = write_config(tmp_path / "steering.yaml", etcd.endpoints,
                          {"auth": {"tokens_file": str(tokens_file(tmp_path / "tokens.yaml"))}})
    # 192.0.2.1 (TEST-NET-1) is refused before anything binds it.
    args = [STEERING, "controller", "--config", str(config), "--listen", "192.0.2.1:50051"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("steering controller:")]
    assert lines == ["steering controller: refusing to listen on 192.0.2.1:50051 with auth but without tls: bearer "
                     "tokens would cross the network in clear text; configure tls or pass --insecure"], done.stderr
    # With --insecure the check lets it through (with a warning); binding a TEST-NET address then fails.
    done = subprocess.run([*args, "--insecure"], capture_output=True, text=True, timeout=60)
    assert "refusing to listen" not in done.stderr
    assert "with auth but WITHOUT TLS (--insecure)" in done.stderr + done.stdout


async def test_a_negative_pin_weight_is_named() -> None:
    rc, _out, err = await steerctl("pin", "api.example.test.", "europe", "eu-west-1=1005", "us-east-1=-5",
                                  "--reason", "x", env={"STEERCTL_SERVER": "127.0.0.1:1"})
    assert rc == 2 and err.strip() == "steerctl: weights[us-east-1]: -5 must be >= 0", err
