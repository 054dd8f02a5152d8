"""``steering.controller.reports``: one agent report checked against the topology. Pure: no stream, no etcd."""

from __future__ import annotations

import math
from typing import Any

import pytest

from steering import limits
from steering.config import load_config
from steering.controller.reports import ReportError, validate
from steering.model import MAX_CHECK_DETAIL, MAX_CHECKS, Check
from steering.v1 import steering_pb2 as pb
from tests.support.paths import EXAMPLE_CONFIG

CONFIG = load_config(EXAMPLE_CONFIG)
NOW = 1_700_000_000.0


def report(**fields: Any) -> pb.HealthReport:
    base: dict[str, Any] = {"site": "us-east-1", "region": "us-east-1", "kind": pb.SITE_KIND_REGION,
                            "status": pb.HEALTH_STATUS_HEALTHY, "capacity": 900.0, "load": 300.0, "sequence": 1,
                            "agent_id": "agent-1"}
    return pb.HealthReport(**{**base, **fields})


def refused(r: pb.HealthReport, last: int | None = None) -> ReportError:
    with pytest.raises(ReportError) as info:
        validate(r, CONFIG, last, NOW)
    return info.value


def test_a_region_report_becomes_its_health() -> None:
    got = validate(report(), CONFIG, None, NOW)
    assert (got.site, got.region, got.kind, got.agent, got.sequence) == ("us-east-1", "us-east-1", "region",
                                                                         "agent-1", 1)
    assert got.health.status == "healthy" and got.health.capacity == 900.0 and got.health.load == 300.0
    assert got.health.updated_at == NOW and got.health.detail == "" and got.health.checks == ()


def test_a_cache_site_report() -> None:
    got = validate(report(site="oc-lon-1", region="eu-west-1", kind=pb.SITE_KIND_CACHE, agent_id="", sequence=5),
                   CONFIG, 4, NOW)
    assert got.kind == "cache" and got.region == "eu-west-1"
    assert got.agent == "oc-lon-1-agent"  # no agent id: named after its site


def test_capacity_zero_means_no_figure_when_healthy_and_zero_when_unhealthy() -> None:
    assert validate(report(capacity=0.0), CONFIG, None, NOW).health.capacity is None  # the config's stands
    down = validate(report(capacity=0.0, status=pb.HEALTH_STATUS_UNHEALTHY), CONFIG, None, NOW)
    assert down.health.status == "unhealthy" and down.health.capacity == 0.0


def test_failing_checks_are_kept_bounded_and_named_in_the_detail() -> None:
    checks = [pb.CheckResult(name=f"c{i}", kind="http", ok=False, detail="x" * 500) for i in range(MAX_CHECKS + 2)]
    checks.insert(0, pb.CheckResult(name="fine", kind="tcp", ok=True))
    checks.append(pb.CheckResult(name="", kind="tcp", ok=False))
    got = validate(report(checks=checks, status=pb.HEALTH_STATUS_UNHEALTHY), CONFIG, None, NOW).health
    assert len(got.checks) == MAX_CHECKS
    assert got.checks[0] == Check(name="c0", kind="http", detail="x" * MAX_CHECK_DETAIL)
    assert got.detail.startswith("c0: xxx") and len(got.detail) == 200
    last = validate(report(checks=[pb.CheckResult(kind="tcp", ok=False)]), CONFIG, None, NOW).health
    assert last.checks == (Check(name="unnamed", kind="tcp", detail="failed"),) and last.detail == ": failed"


@pytest.mark.parametrize(("fields", "field", "problem"), [
    ({"site": ""}, "site", "missing"),
    ({"region": ""}, "region", "missing"),
    ({"site": "mars-1", "region": "mars-1"}, "site", "unknown region 'mars-1'"),
    ({"region": "eu-west-1"}, "region", "differs from site"),
    ({"site": "oc-par-1", "region": "eu-west-1", "kind": pb.SITE_KIND_CACHE}, "site", "unknown cache site"),
    ({"site": "oc-lon-1", "region": "us-east-1", "kind": pb.SITE_KIND_CACHE}, "region", "is in 'eu-west-1'"),
    ({"kind": pb.SITE_KIND_UNSPECIFIED}, "kind", "must be"),
    ({"status": pb.HEALTH_STATUS_SILENT}, "status", "must be"),  # silence is the controller's to decide
    ({"capacity": math.nan}, "capacity", "not a finite non-negative number"),
    ({"load": -1.0}, "load", "not a finite non-negative number"),
    ({"load": math.inf}, "load", "not a finite non-negative number"),
    ({"capacity": limits.RATE[1] * 10}, "capacity", "is outside"),
    ({"geo_load": {"europe": math.nan}}, "geo_load.europe", "not a finite non-negative number"),
    ({"geo_load": {"europe": limits.RATE[1] * 10}}, "geo_load.europe", "is outside"),
    ({"sequence": 0}, "sequence", "missing (must start at 1)"),
    ({"agent_id": "a" * (limits.MAX_AGENT_ID + 1)}, "agent_id", "characters; at most"),
    ({"site": "s" * (limits.MAX_ID + 1)}, "site", "characters; at most"),
    ({"checks": [pb.CheckResult(name="c")] * (limits.MAX_CHECKS + 1)}, "checks", "checks; at most"),
    ({"checks": [pb.CheckResult(name="n" * (limits.MAX_CHECK_NAME + 1))]}, "checks[0].name", "at most"),
    ({"geo_load": {"g" * (limits.MAX_ID + 1): 1.0}}, "geo_load", "a key of"),
])
def test_a_report_breaking_a_rule_is_refused_naming_the_field(fields: dict[str, Any], field: str,
                                                              problem: str) -> None:
    err = refused(report(**fields))
    assert err.field == field
    assert str(err).startswith(f"{field}: ") and problem in str(err)


def test_sizes_are_checked_first_so_no_message_echoes_a_huge_value() -> None:
    huge = "z" * 100_000
    err = refused(report(site=huge, region=huge, kind=pb.SITE_KIND_UNSPECIFIED))
    assert err.field == "site" and len(str(err)) < 100


def test_the_sequence_must_rise_on_its_stream() -> None:
    assert validate(report(sequence=8), CONFIG, 7, NOW).sequence == 8
    assert refused(report(sequence=7), last=7).field == "sequence"
    assert "not above the previous 9" in str(refused(report(sequence=8), last=9))
