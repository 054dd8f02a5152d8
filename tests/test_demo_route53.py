"""``steering demo`` and Route 53: ``--route53`` runs moto's Route 53 on loopback and the leader syncs it;
``--config FILE`` keeps the file's ``route53`` section (loudly when it points past loopback); without moto,
one line says how to install it. The demo, steerctl and the controllers are the real console scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import EXAMPLE_CONFIG, ROOT, eventually_sync
from tests.support.demo import DemoRun, all_gone
from tests.support.paths import STEERCTL, STEERING
from tests.support.ports import free_port_block
from tests.support.route53 import MotoRoute53, make_boto3_client

pytestmark = pytest.mark.timeout(400)

DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"}


def _steerctl(run: DemoRun, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STEERCTL, "--server", run.servers, *args], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "STEERCTL_TOKEN_FILE": "/nonexistent", **(env or {})})


def _config_with(tmp_path: Path, route53: dict[str, Any]) -> Path:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    for zone in data["zones"]:
        if zone.get("file"):
            zone["file"] = str(EXAMPLE_CONFIG.parent / zone["file"])
    data["route53"] = route53
    path = tmp_path / "with-route53.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _weights(boto: Any, zone_id: str, target: str) -> list[int]:
    out = boto.list_resource_record_sets(HostedZoneId=zone_id, MaxItems="100000")["ResourceRecordSets"]
    return [r["Weight"] for r in out if r.get("SetIdentifier") == target and "Weight" in r and r["Type"] == "A"]


def test_demo_route53_syncs_moto_and_steerctl_shows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in DUMMY_AWS.items():  # this test's own boto3 client looks at the fake zone
        monkeypatch.setenv(k, v)
    run = DemoRun.start(tmp_path, "--route53")
    try:
        info = run.up()
        fake = info["route53"]
        assert fake and fake["endpoint_url"].startswith("http://127.0.0.1:"), info
        assert "route53 plan --config" in run.output()

        def synced() -> dict[str, Any] | None:
            proc = _steerctl(run, "status", "--json")
            r53 = json.loads(proc.stdout)["route53"] if proc.returncode == 0 else {}
            return r53 if r53.get("enabled") and r53.get("last_sync") and not r53.get("last_error") else None

        eventually_sync(synced, 120, "a Route 53 sync shown by steerctl status")
        text = _steerctl(run, "status").stdout
        assert "route53: last sync" in text and "error" not in text.split("route53:", 1)[1].splitlines()[0]

        def plan() -> dict[str, Any] | None:
            proc = _steerctl(run, "route53", "plan", "--config", str(run.state / "steering.yaml"), "--json",
                             env=DUMMY_AWS)
            assert proc.returncode == 0, proc.stderr
            counts = json.loads(proc.stdout)["counts"]
            return counts if counts == {"CREATE": 0, "UPSERT": 0, "DELETE": 0} else None

        eventually_sync(plan, 60, "steerctl route53 plan to find nothing left to do")

        # An evacuation reaches the zone: eu-west-1's weighted records go to 0.
        boto = make_boto3_client(fake["endpoint_url"])
        assert any(_weights(boto, fake["hosted_zone_id"], "eu-west-1"))
        proc = _steerctl(run, "evacuate", "eu-west-1", "--reason", "demo", "--now", "--yes")
        assert proc.returncode == 0, proc.stderr
        eventually_sync(lambda: set(_weights(boto, fake["hosted_zone_id"], "eu-west-1")) == {0}, 60,
                        "eu-west-1 at weight 0 in the fake Route 53")
    finally:
        run.close()


def test_demo_config_keeps_its_route53_section(tmp_path: Path, moto: MotoRoute53) -> None:
    """A loopback endpoint (here the test's moto) is used as given, with no warning."""
    boto = make_boto3_client(moto.url)
    zone_id = boto.create_hosted_zone(Name="example.test", CallerReference="demo-config")["HostedZone"]["Id"]
    config = _config_with(tmp_path, {"hosted_zone_id": zone_id, "endpoint_url": moto.url,
                                     "max_requests_per_second": 50, "sync_interval": 15})
    run = DemoRun.start(tmp_path, "--config", str(config))
    try:
        run.up()
        assert "ROUTE 53" not in run.output()
        eventually_sync(lambda: any(_weights(boto, zone_id, "us-east-1")), 120,
                        "the demo's leader to write the config's zone")
        # The terminal closing (SIGHUP) stops every child too, not only Ctrl-C and SIGTERM.
        pids = list(run.pids().values())
        os.kill(run.demo_pid(), signal.SIGHUP)
        assert run.proc.wait(90) == 0
        all_gone(pids)
    finally:
        run.close()


def test_demo_config_pointing_past_loopback_says_so_loudly(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is never reached: the demo stops before its leader could sync.
    config = _config_with(tmp_path, {"hosted_zone_id": "Z0123456789ABCDEFGHIJ", "endpoint_url": "http://192.0.2.1:9"})
    proc = subprocess.run([STEERING, "demo", "--config", str(config), "--state-dir", str(tmp_path / "state"),
                           "--dns-port", str(free_port_block(1)), "--api-port", str(free_port_block(2)),
                           "--http-port", "0", "--ingest-port", "0", "--for-seconds", "0.5"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert "ROUTE 53:" in out and "WILL CHANGE hosted zone Z0123456789ABCDEFGHIJ" in out, out
    assert "--route53" in out


def test_demo_route53_without_moto_says_how_to_install_it(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "moto"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'moto'\", name='moto')\n")
    proc = subprocess.run([STEERING, "demo", "--route53", "--state-dir", str(tmp_path / "state"), "--dns-port",
                           str(free_port_block(1)), "--api-port", str(free_port_block(2)), "--http-port", "0",
                           "--ingest-port", "0"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(shadow.parent)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--route53: moto is not installed" in lines[0] and "pip install" in lines[0], lines
    assert proc.stdout == ""
