"""agent.yaml: the example loads; bad files fail with one line per problem naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.config import AgentConfig, load_agent_config, parse_agent_config
from steering.config import ConfigError
from tests.support.paths import AGENT_EXAMPLE


def minimal(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "site": "us-east-1",
        "region": "us-east-1",
        "controllers": ["127.0.0.1:50051"],
        "probes": [{"name": "web", "kind": "tcp", "address": "127.0.0.1:80"}],
        "capacity": 1000,
    }
    data.update(over)
    return data


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_agent_config(data)
    return info.value.problems


def test_example_loads() -> None:
    cfg = load_agent_config(AGENT_EXAMPLE)
    assert cfg.site == cfg.region == "us-east-1"
    assert {p.kind for p in cfg.probes} >= {"http", "tcp"}
    assert cfg.capacity.url and cfg.capacity.json_path
    assert len(cfg.controllers) >= 2


def test_defaults_and_shorthand() -> None:
    cfg = parse_agent_config(minimal())
    assert isinstance(cfg, AgentConfig)
    assert cfg.capacity.value == 1000 and cfg.load.value == 0
    assert (cfg.rise, cfg.fall, cfg.kind, cfg.initial) == (2, 3, "region", "unhealthy")
    assert cfg.identity()  # hostname-pid by default


def test_http_probe_single_status() -> None:
    cfg = parse_agent_config(minimal(probes=[{"name": "w", "kind": "http", "url": "http://127.0.0.1:1/x",
                                               "expect_status": 204}]))
    assert cfg.probes[0].expect_status == (204,)


def test_prometheus_reading() -> None:
    cfg = parse_agent_config(minimal(load={"url": "http://127.0.0.1:9/metrics", "metric": "rps",
                                           "labels": {"region": "us-east-1"}}))
    assert cfg.load.metric == "rps" and dict(cfg.load.labels) == {"region": "us-east-1"}


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"controllers": ["127.0.0.1"]}, "controllers[0]: '127.0.0.1': no port given"),
        ({"controllers": []}, "controllers: give at least one"),
        ({"probes": []}, "probes: give at least one"),
        ({"interval_seconds": 0}, "interval_seconds: Input should be greater than 0"),
        ({"rise": 0}, "rise: Input should be greater than or equal to 1"),
        ({"kind": "edge"}, "kind: Input should be 'region' or 'cache'"),
        ({"site": "other"}, "site: a site of kind region is the region itself"),
        ({"probes": [{"name": "a", "kind": "http", "url": "ftp://x"}]}, "probes[0].url: 'ftp://x' is not an http"),
        ({"probes": [{"name": "a", "kind": "tcp"}]}, "probes[0].address: Field required"),
        ({"probes": [{"name": "a", "kind": "tcp", "address": "h:1", "timeout_seconds": -1}]},
         "probes[0].timeout_seconds: Input should be greater than 0"),
        ({"probes": [{"name": "a", "kind": "smtp"}]}, "probes[0]: Input tag 'smtp'"),
        ({"probes": [{"name": "a", "kind": "tcp", "address": "h:1"}, {"name": "a", "kind": "tcp", "address": "h:2"}]},
         "probes[1].name: 'a' is used by an earlier probe"),
        ({"probes": [{"name": "a", "kind": "tcp", "address": "h:1", "critical": False}]},
         "probes: at least one probe must be critical"),
        ({"capacity": {"url": "http://h/", "json_path": "a", "metric": "b"}},
         "capacity: with url, give exactly one of json_path or metric"),
        ({"capacity": {}}, "capacity: give either value or url"),
        ({"capacity": -5}, "capacity.value: Input should be greater than or equal to 0"),
        ({"load": {"value": 1, "metric": "x"}}, "load: json_path, metric and labels need a url"),
        ({"backoff": {"initial_seconds": 5, "max_seconds": 1}}, "backoff: max_seconds must be at least initial_seconds"),
        ({"tls": {"ca": "/nonexistent/ca.pem"}}, "tls.ca: /nonexistent/ca.pem does not exist"),
        ({"colour": "blue"}, "colour: unknown field"),
    ],
)
def test_bad_fields_are_named(over: dict[str, Any], expected: str) -> None:
    lines = problems(minimal(**over))
    assert any(line.startswith(expected) for line in lines), lines


def test_every_problem_at_once() -> None:
    data = minimal(interval_seconds=-1, controllers=["nope"],
                   probes=[{"name": "a", "kind": "tcp"}, {"name": "b", "kind": "http", "url": "x"}])
    del data["capacity"]
    lines = problems(data)
    fields = {line.split(":")[0] for line in lines}
    assert fields == {"interval_seconds", "controllers[0]", "probes[0].address", "probes[1].url", "capacity"}, lines


def test_not_a_mapping() -> None:
    assert problems([1, 2]) == ["(top level): expected a mapping of fields"]


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_agent_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_agent_config(bad)


def test_relative_paths_resolve_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret\n")
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(minimal(token_file="token")))
    cfg = load_agent_config(path)
    assert cfg.resolve_path("token") == tmp_path / "token"
