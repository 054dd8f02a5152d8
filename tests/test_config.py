"""Configuration loading: the example is valid; every kind of bad input is named, one line each."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from steering.config import ConfigError, load_config, parse_config
from tests.support import EXAMPLE_CONFIG


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE_CONFIG.read_text())


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml", EXAMPLE_CONFIG.parent)
    return info.value.problems


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE_CONFIG)
    assert [r.id for r in cfg.regions] == ["us-east-1", "us-west-2", "eu-west-1"]
    assert len(cfg.geos) >= 5 and cfg.default_geo.id == "world"
    assert {s.targets for s in cfg.services} == {"regions", "sites"}
    assert any(":" in p for g in cfg.geos for p in g.prefixes), "IPv6 prefixes expected"
    assert cfg.service("API.example.test").name == "api.example.test."
    assert cfg.resolve_path(cfg.zones[0].file or "").is_file()
    assert cfg.fingerprint() == load_config(EXAMPLE_CONFIG).fingerprint()


def test_config_is_immutable() -> None:
    cfg = load_config(EXAMPLE_CONFIG)
    with pytest.raises(ValidationError):
        cfg.regions[0].capacity = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["geos"][0]["prefer"].append("mars-1"), "geos[0].prefer[3]: unknown region 'mars-1'"),
        (lambda d: d["regions"].append({"id": "us-east-1", "capacity": 5}), "regions: duplicate id 'us-east-1'"),
        (lambda d: d["geos"][1]["prefixes"].append("10.0.0.1/8"), "geos[1].prefixes: entry 3: '10.0.0.1/8' is not a CIDR prefix"),
        (lambda d: d["geos"][1]["prefixes"].append("banana"), "'banana' is not a CIDR prefix"),
        (lambda d: d["policy"].update(watermark=1.5), "policy.watermark: Input should be less than or equal to 1"),
        (lambda d: d["policy"].update(watermark=0), "policy.watermark: Input should be greater than 0"),
        (lambda d: d["services"][0]["answers"].update({"ap-south-9": {"A": ["192.0.2.1"]}}),
         "services[0].answers.ap-south-9: unknown region 'ap-south-9'"),
        (lambda d: d["services"][0].update(name="api.other.test."),
         "services[0].name: api.other.test. is outside every configured zone"),
        (lambda d: d["services"][0]["answers"]["us-east-1"].update(A=["300.1.1.1"]), "'300.1.1.1' is not an IPv4"),
        (lambda d: d["sites"][0].update(region="nowhere"), "sites[0].region: unknown region 'nowhere'"),
        (lambda d: d["geos"][0].update(default=True), "geos: more than one default geo"),
        (lambda d: d["geos"][0]["prefer_sites"].append("oc-xyz"), "geos[0].prefer_sites[1]: unknown site 'oc-xyz'"),
        (lambda d: d["regions"][0].update(capacity=-5), "regions[0].capacity: Input should be greater than 0"),
        (lambda d: d.update(colour="blue"), "colour: unknown field"),
        (lambda d: d["zones"][0].update(file="missing.zone"), "zones[0].file:"),
        (lambda d: d["geos"][2]["prefixes"].append("198.51.100.0/26"), "already belongs to geo 'na-east'"),
        (lambda d: d["controller"].update(ingest_listen="no-port-here"),
         "controller.ingest_listen: 'no-port-here': no port given"),
        (lambda d: d["controller"].update(http_listen="127.0.0.1:99999"),
         "controller.http_listen: '127.0.0.1:99999': port 99999 is out of range"),
    ],
)
def test_bad_config_names_the_problem(mutate: Any, expected: str) -> None:
    data = copy.deepcopy(example())
    mutate(data)
    found = problems_of(data)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    data = example()
    data["geos"][0]["prefer"].append("mars-1")
    data["sites"][0]["region"] = "nowhere"
    data["services"][0]["answers"]["pluto"] = {"A": ["192.0.2.9"]}
    found = problems_of(data)
    assert len(found) >= 3, found


def test_cli_reports_bad_config_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    data = example()
    data["geos"][0]["prefer"].append("mars-1")
    data["policy"]["watermark"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    (tmp_path / "example.test.zone").write_text((EXAMPLE_CONFIG.parent / "example.test.zone").read_text())
    proc = subprocess.run([sys.executable, "-m", "steering.cli.steerctl_main", "plan", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any("policy.watermark" in line for line in lines), lines
    assert all(line.startswith("steerctl: ") for line in lines), lines


def test_cli_reports_unparsable_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("regions: [\n  - {id: x\n")
    proc = subprocess.run([sys.executable, "-m", "steering.cli.steerctl_main", "plan", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "invalid YAML" in proc.stderr and "line" in proc.stderr
    assert "Traceback" not in proc.stderr
