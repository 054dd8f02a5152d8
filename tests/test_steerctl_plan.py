"""`steerctl plan` as a real console script: JSON shape, human output, state and previous files, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.support import EXAMPLE_CONFIG, EXAMPLES
from tests.support.paths import STEERCTL

STATE = EXAMPLES / "state.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STEERCTL, *args], capture_output=True, text=True, timeout=60)


def test_json_has_the_documented_shape() -> None:
    proc = run("plan", "--config", str(EXAMPLE_CONFIG), "--state", str(STATE), "--json", "--now", "1000")
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert table["version"] == 1 and table["fail_open"] is False
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    geos = {g["id"] for g in config["geos"]}
    for name in ("api.example.test.", "video.example.test."):
        svc = table["services"][name]
        assert set(svc["geos"]) == geos
        for geo, route in svc["geos"].items():
            weights = route["weights"]
            assert sum(weights.values()) == 1000, (name, geo, weights)
            assert all(isinstance(w, int) and w >= 0 for w in weights.values())
            assert set(route["reasons"]) == set(weights)
    for region in ("us-east-1", "us-west-2", "eu-west-1"):
        r = table["regions"][region]
        assert r["serving"] is True
        assert r["utilization"] == round(r["planned_load"] / r["capacity"], 4)
    # Europe is served from its home region in the healthy state.
    assert table["services"]["api.example.test."]["geos"]["europe"]["weights"]["eu-west-1"] == 1000


def test_evacuation_in_state_moves_traffic_and_previous_table_limits_ramp(tmp_path: Path) -> None:
    state = yaml.safe_load(STATE.read_text())
    before = run("plan", "--config", str(EXAMPLE_CONFIG), "--state", str(STATE), "--json", "--now", "1000")
    prev = tmp_path / "prev.json"
    prev.write_text(before.stdout)
    state["evacuations"] = [{"region": "eu-west-1", "mode": "now", "reason": "test"}]
    evac_state = tmp_path / "evac.yaml"
    evac_state.write_text(yaml.safe_dump(state))
    proc = run("plan", "--config", str(EXAMPLE_CONFIG), "--state", str(evac_state), "--previous", str(prev),
               "--json", "--now", "1001")
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert table["version"] == 2 and table["parent_version"] == 1
    europe = table["services"]["api.example.test."]["geos"]["europe"]
    assert europe["weights"]["eu-west-1"] == 0 and "evacuated" in europe["reasons"]["eu-west-1"]
    assert table["regions"]["eu-west-1"]["serving"] is False

    state["evacuations"] = [{"region": "eu-west-1", "mode": "ramp", "step": 0.25, "interval": 60,
                             "started_at": 1000}]
    evac_state.write_text(yaml.safe_dump(state))
    proc = run("plan", "--config", str(EXAMPLE_CONFIG), "--state", str(evac_state), "--previous", str(prev),
               "--json", "--now", "1001")
    table = json.loads(proc.stdout)
    europe = table["services"]["api.example.test."]["geos"]["europe"]["weights"]
    assert europe["eu-west-1"] == 750, europe
    assert table["converging"] is True


def test_human_output_lists_services_and_targets() -> None:
    proc = run("plan", "--config", str(EXAMPLE_CONFIG), "--state", str(STATE))
    assert proc.returncode == 0, proc.stderr
    for text in ("api.example.test.", "video.example.test.", "na-east", "us-east-1", "utilization"):
        assert text in proc.stdout


def test_bad_state_is_named_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "state.yaml"
    bad.write_text(yaml.safe_dump({
        "regions": {"mars-1": {"healthy": True}, "us-east-1": {"healthy": "yes", "load": 5}},
        "demand": {"na-east": -3},
        "evacuations": [{"region": "us-west-2", "mode": "sideways"}],
    }))
    proc = run("plan", "--config", str(EXAMPLE_CONFIG), "--state", str(bad))
    assert proc.returncode == 2
    err = proc.stderr
    assert "regions.mars-1: unknown region 'mars-1'" in err
    assert "regions.us-east-1.healthy" in err
    assert "demand.na-east" in err
    assert "evacuations[0].mode" in err
    assert "Traceback" not in err


def test_missing_files_and_bad_previous(tmp_path: Path) -> None:
    proc = run("plan", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    prev = tmp_path / "prev.json"
    prev.write_text('{"version": 1, "services": {"x": {"geos": {"g": {"weights": {"a": 3}}}}}}')
    proc = run("plan", "--config", str(EXAMPLE_CONFIG), "--previous", str(prev))
    assert proc.returncode == 2 and "weights sum to 3" in proc.stderr
    assert "Traceback" not in proc.stderr
