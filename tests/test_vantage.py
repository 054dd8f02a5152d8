"""Health from several vantage points, the pure parts (docs/health.md): the quorum, the merge of a target's
reporters, per-geo reachability in the planner, report validation and credentials for observers, and the
configuration's bad input. Hypothesis: more failing reporters never make a target healthier; reachability
never takes a geo's last usable target away silently."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from steering.auth import Token
from steering.config import TOTAL_WEIGHT, Config, ConfigError, HealthPolicy, parse_config
from steering.controller import agentauth
from steering.controller.healthmerge import merge, parse_key, record_key, split_key
from steering.controller.reports import ReportError, ReportRefused, validate
from steering.controller.sitestatus import newest_records, reporters_why
from steering.controller.vantage import Vantage, decide, needed, slot, split_slot, unreachable_geos
from steering.model import Check, Observed, Overrides, ReporterView, TargetHealth
from steering.planner import plan
from steering.v1 import steering_pb2 as pb
from tests.support import EXAMPLE_CONFIG
from tests.support.strategies import scenarios

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
API = "api.example.test."


def example(observers: list[dict[str, Any]] | None = None, **health: Any) -> Config:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["observers"] = observers if observers is not None else [
        {"id": "probe-na", "geos": ["na-east"], "targets": ["us-east-1", "us-west-2", "eu-west-1"]},
        {"id": "probe-eu", "geos": ["europe"], "targets": ["us-east-1", "us-west-2", "eu-west-1"]},
    ]
    data["policy"]["health"] = {"quorum": "majority", "per_geo_reachability": True, **health}
    return parse_config(data, "test", EXAMPLE_CONFIG.parent)


def h(status: str, t: float = 10.0, detail: str = "", checks: tuple[Check, ...] = (), **kw: Any) -> TargetHealth:
    return TargetHealth(status=status, updated_at=t, detail=detail, checks=checks, **kw)  # type: ignore[arg-type]


def key(site: str, reporter: str = "", replica: str = "c1") -> str:
    return record_key(slot(site, reporter), replica)


KNOWN = ["us-east-1", "us-west-2", "eu-west-1", "oc-nyc-1", "oc-lon-1"]


# ---- keys and the quorum


def test_an_observers_record_key_names_site_reporter_and_replica() -> None:
    assert key("us-east-1", "probe-eu", "c2") == "us-east-1~probe-eu@c2"
    assert parse_key("us-east-1~probe-eu@c2") == ("us-east-1", "probe-eu", "c2")
    assert parse_key("us-east-1@c2") == ("us-east-1", "local", "c2")
    assert split_key("us-east-1~probe-eu@c2") == ("us-east-1", "c2")  # what readers of sites see
    assert split_slot(slot("oc-nyc-1")) == ("oc-nyc-1", "local")


@pytest.mark.parametrize(("rule", "counted", "need"), [
    ("majority", 1, 1), ("majority", 2, 2), ("majority", 3, 2), ("majority", 4, 3), ("majority", 5, 3),
    ("all", 3, 3), ("any", 3, 1), (2, 3, 2), (3, 2, 2), (1, 3, 1), ("all", 0, 1),
])
def test_the_quorum_needs(rule: Any, counted: int, need: int) -> None:
    assert needed(rule, counted) == need


def test_local_healthy_observer_failing_is_unreachable_not_unhealthy() -> None:
    cfg = example()
    v = Vantage.of(cfg)
    verdict = decide([v.view("us-east-1", "local", "healthy"), v.view("us-east-1", "probe-na", "healthy"),
                      v.view("us-east-1", "probe-eu", "unhealthy")], v.rule)
    assert verdict.status == "healthy"
    assert verdict.unreachable_from == ("europe",) and verdict.unreachable_by == ("probe-eu",)
    assert verdict.text == "unreachable from probe-eu (europe)"


# ---- the merge


def test_merge_decides_an_observed_target_by_its_reporters() -> None:
    cfg = example()
    vantage = Vantage.of(cfg)
    records = {key(t): h("healthy", capacity=5000.0, load=100.0) for t in KNOWN}
    records[key("us-east-1", "probe-na", "c2")] = h("healthy")
    records[key("us-east-1", "probe-eu")] = h("unhealthy", 12.0, "frontend: timeout",
                                                (Check("frontend", "http", "timeout"),))
    out = merge(records, KNOWN, True, vantage=vantage)
    east = out["us-east-1"]
    assert east.status == "healthy" and east.capacity == 5000.0 and east.load == 100.0
    assert east.unreachable_from == ("europe",)
    assert east.detail.startswith("unreachable from probe-eu (europe)")
    assert [(r.reporter, r.role, r.status, r.heard_by) for r in east.reporters] == [
        ("local", "local", "healthy", "c1"), ("probe-na", "observer", "healthy", "c2"),
        ("probe-eu", "observer", "unhealthy", "c1")]
    assert out["oc-nyc-1"] is records[key("oc-nyc-1")]  # a target without observers: its agent's record
    # A second observer failing makes a majority: unhealthy, with every failing reporter's checks.
    records[key("us-east-1", "probe-na", "c2")] = h("unhealthy", 13.0, checks=(Check("frontend", "http", "503"),))
    east = merge(records, KNOWN, True, vantage=vantage)["us-east-1"]
    assert east.status == "unhealthy" and not east.can_serve and east.unreachable_from == ()
    assert [c.name for c in east.checks] == ["probe-na/frontend", "probe-eu/frontend"]
    assert "2 of 3 reporters" in east.detail


def test_a_silent_reporter_does_not_count_and_with_none_left_the_silence_rule_applies() -> None:
    vantage = Vantage.of(example())
    # probe-na is silent: two counted (local healthy, probe-eu failing), a majority of two needs both.
    records = {key("us-east-1"): h("healthy"), key("us-east-1", "probe-eu"): h("unhealthy")}
    east = merge(records, KNOWN, True, vantage=vantage)["us-east-1"]
    assert east.status == "healthy" and [r.counted for r in east.reporters] == [True, False, True]
    # The local agent silent too: the one counted reporter decides.
    records = {key("us-east-1", "probe-eu"): h("unhealthy")}
    assert merge(records, KNOWN, True, vantage=vantage)["us-east-1"].status == "unhealthy"
    # Nobody left: silent after the start-up grace, unknown during it (as without observers).
    assert merge({}, KNOWN, True, vantage=vantage)["us-east-1"].status == "silent"
    grace = merge({}, KNOWN, False, vantage=vantage)["us-east-1"]
    assert grace.status == "unknown" and len(grace.reporters) == 3
    # An outvoted agent's capacity 0 is its failure speaking: the config's capacity stands.
    records = {key("us-east-1"): h("unhealthy", capacity=0.0), key("us-east-1", "probe-eu"): h("healthy"),
               key("us-east-1", "probe-na"): h("healthy")}
    east = merge(records, KNOWN, True, vantage=vantage)["us-east-1"]
    assert east.status == "healthy" and east.capacity is None
    assert "its agent says unhealthy, outvoted" in east.detail


def test_status_reads_each_reporter_with_its_age() -> None:
    vantage = Vantage.of(example())
    records = {key("us-east-1"): h("healthy", 100.0), key("us-east-1", "probe-eu", "c2"): h("unhealthy", 90.0)}
    memory = {"us-east-1~probe-eu": (105.0, h("unhealthy", 90.0))}
    seen = reporters_why("us-east-1", records, vantage, memory.get, lambda s: 2 if s == "us-east-1~probe-eu" else 1)
    assert seen is not None and seen.verdict.text == "unreachable from probe-eu (europe)"
    rows = {r.view.reporter: (r.last_report, r.last_report_local, r.streams) for r in seen.reporters}
    assert rows == {"local": (100.0, False, 1), "probe-na": (None, False, 1), "probe-eu": (105.0, True, 2)}
    assert reporters_why("oc-nyc-1", records, vantage, memory.get, lambda s: 0) is None
    assert set(newest_records(records)) == {"us-east-1"}  # a site's own "why" never comes from an observer


# ---- the planner


def east_unreachable_from(*geos: str) -> Observed:
    return Observed(health={"us-east-1": TargetHealth(status="healthy", load=6000.0, unreachable_from=geos)})


def test_per_geo_reachability_takes_a_target_out_of_that_geo_only() -> None:
    cfg = example()
    table = plan(cfg, east_unreachable_from("na-east"), Overrides(), None, 100.0)
    na, sa = table.services[API].geos["na-east"], table.services[API].geos["south-america"]
    assert na.weights["us-east-1"] == 0 and na.reasons["us-east-1"].startswith("unreachable from na-east")
    assert sum(na.weights.values()) == TOTAL_WEIGHT and not na.fail_open
    assert sa.weights["us-east-1"] > 0  # the geos that reach it keep it
    assert table.regions["us-east-1"].serving and table.regions["us-east-1"].health == "healthy"
    # Off: the same observation moves nothing.
    off = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"health": HealthPolicy()})})
    assert plan(off, east_unreachable_from("na-east"), Overrides(), None, 100.0).services[API].geos[
        "na-east"].weights["us-east-1"] > 0


def test_reachability_fails_open_for_a_geo_it_would_leave_with_nothing() -> None:
    cfg = example()
    health = {"us-east-1": TargetHealth(status="healthy", unreachable_from=("na-east",)),
              "us-west-2": TargetHealth(status="unhealthy"), "eu-west-1": TargetHealth(status="unhealthy")}
    table = plan(cfg, Observed(health=health), Overrides(), None, 100.0)
    na = table.services[API].geos["na-east"]
    assert na.weights["us-east-1"] == TOTAL_WEIGHT and not na.fail_open
    assert any(n.startswith(f"REACHABILITY FAIL-OPEN {API} na-east") for n in table.notes)


# ---- properties


VIEW = st.builds(lambda status, geo: (status, geo), st.sampled_from(["healthy", "unhealthy", "silent"]),
                 st.sampled_from(["g0", "g1", ""]))
RULES = st.sampled_from(["majority", "all", "any"]) | st.integers(1, 6)


def _views(spec: list[tuple[str, str]]) -> list[ReporterView]:
    out = [ReporterView("local", "local", spec[0][0])]  # type: ignore[arg-type]
    out += [ReporterView(f"o{i}", "observer", status, 1.0, (geo,) if geo else ())  # type: ignore[arg-type]
            for i, (status, geo) in enumerate(spec[1:])]
    return out


@SETTINGS
@given(st.lists(VIEW, min_size=1, max_size=7), RULES, st.data())
def test_more_failing_reporters_never_make_a_target_healthier(spec: list[tuple[str, str]], rule: Any,
                                                              data: st.DataObject) -> None:
    views = _views(spec)
    healthy = [i for i, v in enumerate(views) if v.status == "healthy"]
    if not healthy:
        return
    i = data.draw(st.sampled_from(healthy))
    worse = [dataclasses.replace(v, status="unhealthy") if j == i else v for j, v in enumerate(views)]
    before, after = decide(views, rule), decide(worse, rule)
    if before.status == "unhealthy":
        assert after.status == "unhealthy"
    assert set(unreachable_geos(views, rule)) <= set(unreachable_geos(worse, rule)) or after.status == "unhealthy"


@SETTINGS
@given(scenarios(pins=False), st.data())
def test_reachability_never_takes_a_geos_last_usable_target_silently(s: Any, data: st.DataObject) -> None:
    config = s.config.model_copy(update={"policy": s.config.policy.model_copy(
        update={"health": HealthPolicy(per_geo_reachability=True)})})
    geos = [g.id for g in config.geos]
    targets = [r.id for r in config.regions] + [x.id for x in config.sites]
    health = dict(s.observed.health)
    cut: dict[str, tuple[str, ...]] = {}
    for t in data.draw(st.lists(st.sampled_from(targets), unique=True)):
        cut[t] = tuple(sorted(data.draw(st.sets(st.sampled_from(geos), min_size=1))))
        health[t] = dataclasses.replace(health.get(t, TargetHealth()), unreachable_from=cut[t])
    observed = Observed(health=health, demand=s.observed.demand)
    base = plan(config, s.observed, s.overrides, None, s.now)
    table = plan(config, observed, s.overrides, None, s.now)
    again = plan(config, observed, s.overrides, base, s.now)  # from a table that still sent them traffic
    for t in (table, again):
        for name, svc in t.services.items():
            for geo, route in svc.geos.items():
                assert sum(route.weights.values()) == TOTAL_WEIGHT
                # Reachability alone never makes a geo fail open: it did or did not without it.
                assert route.fail_open == base.services[name].geos[geo].fail_open, (name, geo)
                if route.fail_open:
                    continue
                excluded = {x for x in route.weights if geo in cut.get(x, ())}
                opened = f"REACHABILITY FAIL-OPEN {name} {geo}:" in " ".join(t.notes)
                if excluded and base.services[name].geos[geo].weights.keys() & excluded:
                    event("a geo lost a target it used" if not opened else "reachability failed open")
                if excluded and not opened:
                    assert all(route.weights[x] == 0 for x in excluded), (name, geo, route.weights)
                    assert all(route.reasons[x].startswith("unreachable from") or not t.regions.get(
                        x, t.sites.get(x)).serving for x in excluded)  # type: ignore[union-attr]
                if opened:  # kept: every target it could use was unreachable; they keep serving it
                    assert excluded and sum(route.weights[x] for x in excluded) == TOTAL_WEIGHT


# ---- reports and credentials


def observer_report(site: str, agent: str, geos: tuple[str, ...] = (), **kw: Any) -> pb.HealthReport:
    return pb.HealthReport(site=site, region=site, kind=pb.SITE_KIND_REGION, status=pb.HEALTH_STATUS_UNHEALTHY,
                           sequence=1, agent_id=agent, role=pb.AGENT_ROLE_OBSERVER, geos=list(geos), capacity=9.0,
                           **kw)


def test_observer_reports_are_checked_against_the_config() -> None:
    cfg = example([{"id": "probe-eu", "geos": ["europe"], "targets": ["us-east-1"]}])
    r = validate(observer_report("us-east-1", "probe-eu", ("europe",)), cfg, None, 5.0)
    assert (r.reporter, r.slot, r.health.capacity, r.health.load) == ("probe-eu", "us-east-1~probe-eu", None, None)
    with pytest.raises(ReportRefused, match="observer 'probe-eu' may not observe 'eu-west-1'"):
        validate(observer_report("eu-west-1", "probe-eu"), cfg, None, 5.0)
    with pytest.raises(ReportRefused, match="'probe-xx' is not a configured observer"):
        validate(observer_report("us-east-1", "probe-xx"), cfg, None, 5.0)
    with pytest.raises(ReportError, match=r"geos\[0\]: 'asia-pacific' is not among the geos"):
        validate(observer_report("us-east-1", "probe-eu", ("asia-pacific",)), cfg, None, 5.0)
    local = pb.HealthReport(site="us-east-1", region="us-east-1", kind=pb.SITE_KIND_REGION,
                            status=pb.HEALTH_STATUS_HEALTHY, sequence=1, agent_id="probe-eu")
    with pytest.raises(ReportError, match="agent_id: 'probe-eu' is a configured observer"):
        validate(local, cfg, None, 5.0)


def test_an_observers_credential_names_the_observers_it_may_speak_as() -> None:
    token = agentauth.token_grant(Token("eu", "agent", "0" * 64, sites=frozenset(), observers=frozenset({"probe-eu"})))
    assert token.allows_observer("probe-eu") and not token.allows_observer("probe-na")
    assert not token.allows("us-east-1")  # an observer's token never reports as a site's own agent
    cert = agentauth.certificate_grant({"peer_uri": [b"spiffe://steering.test/observer/probe-eu"],
                                        "x509_common_name": [b"eu"]})
    assert cert.allows_observer("probe-eu") and not cert.allows("us-east-1") and not cert.why
    both = agentauth.combine([token, cert])
    assert both.allows_observer("probe-eu") and not both.allows_observer("probe-na")
    assert agentauth.OPEN.allows_observer("anyone")


# ---- bad input


@pytest.mark.parametrize(("change", "line"), [
    ({"observers": [{"id": "o", "targets": ["mars-1"]}]}, "observers[0].targets[0]: unknown region or site 'mars-1'"),
    ({"observers": [{"id": "o", "targets": ["us-east-1"], "geos": ["eurpe"]}]},
     "observers[0].geos[0]: unknown geo 'eurpe'"),
    ({"observers": [{"id": "o", "targets": ["us-east-1"]}], "quorum": 3},
     "policy.health.quorum: 3 is more than the 2 reporters configured for 'us-east-1' (its agent and 1 observer)"),
    ({"observers": [], "quorum": 2}, "policy.health.quorum: 2 is more than the 1 reporter every target has"),
    ({"observers": [], "quorum": "most"}, "policy.health.quorum: 'most' is not majority, all, any or a number"),
])
def test_bad_observer_config_is_one_line_naming_the_field(change: dict[str, Any], line: str) -> None:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["observers"] = change["observers"]
    if "quorum" in change:
        data["policy"]["health"] = {"quorum": change["quorum"]}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "steering.yaml", EXAMPLE_CONFIG.parent)
    assert info.value.problems == [info.value.problems[0]] and info.value.problems[0].startswith(line)


def test_the_default_health_policy_keeps_the_tables_fingerprint() -> None:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    plain = parse_config(data, "a", EXAMPLE_CONFIG.parent)
    data["policy"]["health"] = {"quorum": "majority", "per_geo_reachability": False}
    assert parse_config(data, "b", EXAMPLE_CONFIG.parent).fingerprint() == plain.fingerprint()
    data["policy"]["health"]["per_geo_reachability"] = True
    assert parse_config(data, "c", EXAMPLE_CONFIG.parent).fingerprint() != plain.fingerprint()


def test_a_geo_leaving_an_unreachable_target_is_published_at_once() -> None:
    from steering.controller.leaderstate import LeaderState, Plan, Publish, Skip, Timing

    for per_geo, expected in ((True, Publish), (False, Skip)):
        cfg = example(per_geo_reachability=per_geo)
        state = LeaderState(Timing(0.0, 30.0, 1.0), KNOWN, gained_at=0.0, vantage=Vantage.of(cfg))
        state.table_observed(plan(cfg, Observed(), Overrides(), None, 0.0), 0.0)
        state.health_changed({})
        state.overrides_changed(Overrides())
        assert isinstance(state.next(1.0, 1.0), Plan)
        cut = plan(example(), east_unreachable_from("na-east"), Overrides(), state.previous, 1.0)
        # Not an emergency by the target (it still serves) but by the geo: no step_seconds pacing for it.
        assert isinstance(state.planned(cut, False), expected)
