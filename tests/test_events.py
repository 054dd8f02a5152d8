"""The event timeline's pure parts: events derived from health views and tables (``eventdiff``), the
per-subject rate limit (``eventlimit``, with Hypothesis properties) and the bounded event record."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steering import event as ev
from steering.config import load_config
from steering.controller import eventdiff
from steering.controller.eventlimit import RateLimiter
from steering.event import Event
from steering.model import Check, Observed, Overrides, ReporterView, TargetHealth
from steering.planner import plan
from steering.ports import SinkStatus
from steering.table import GeoRoute, RoutingTable, ServiceRoute
from tests.support.paths import EXAMPLE_CONFIG

CONFIG = load_config(EXAMPLE_CONFIG)
KNOWN = eventdiff.targets_of(CONFIG)
TARGETS = list(KNOWN)
NOW = 1_700_000_000.0


def healthy(**status: str) -> dict[str, TargetHealth]:
    """Every target healthy unless named (``us_east_1="unhealthy"``)."""
    named = {k.replace("_", "-"): v for k, v in status.items()}
    return {t: TargetHealth(status=named.get(t, "healthy"), load=1000.0, updated_at=NOW) for t in TARGETS}  # type: ignore[arg-type]


def settled(health: dict[str, TargetHealth], previous: RoutingTable | None = None) -> RoutingTable:
    """The planner's table for ``health``, stepped until it stops moving (max_shift paces non-emergencies)."""
    table = plan(CONFIG, Observed(health=health), Overrides(), previous, NOW, leader="t")
    for _ in range(20):
        nxt = plan(CONFIG, Observed(health=health), Overrides(), table, NOW, leader="t")
        if nxt.same_routing(table):
            return nxt
        table = nxt
    return table


# ---------------------------------------------------------------- health


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(TARGETS), st.sampled_from(["healthy", "unhealthy", "silent", "unknown"]), max_size=4),
                min_size=1, max_size=8))
def test_passing_over_the_targets_whose_health_is_the_same_object_changes_nothing(
        steps: list[dict[str, str]]) -> None:
    """The leader's sink hands the last merged health on (``last``): a target whose health is the very object
    it was there is passed over; events and baselines are those of looking at every target."""
    health = {t: TargetHealth() for t in TARGETS}
    full: dict[str, str] = {}
    quick: dict[str, str] = {}
    last: dict[str, TargetHealth] | None = None
    for i, step in enumerate(steps):
        # New objects for the targets named (even with the same status), the others handed on as they were.
        health = {**health, **{t: TargetHealth(status=st_, updated_at=NOW + i) for t, st_ in step.items()}}  # type: ignore[arg-type]
        want, full = eventdiff.health_events(full, health, {}, KNOWN, NOW + i)
        got, quick = eventdiff.health_events(quick, health, {}, KNOWN, NOW + i, last)
        last = health
        assert got == want and quick == full and list(quick) == list(full)



def test_a_health_flip_names_the_failing_checks_and_the_reporters() -> None:
    baseline = {t: "healthy" for t in TARGETS}
    check = Check(name="frontend", kind="http", detail="status 503")
    health = healthy()
    health["oc-nyc-1"] = TargetHealth(status="unhealthy", checks=(check,), detail="frontend: status 503",
                                      updated_at=NOW)
    records = {"oc-nyc-1@c1": health["oc-nyc-1"], "oc-nyc-1@c2": TargetHealth(status="healthy", updated_at=1.0),
               "us-east-1@c1": health["us-east-1"]}
    events, new = eventdiff.health_events(baseline, health, records, KNOWN, NOW)
    assert [e.kind for e in events] == [ev.HEALTH_CHANGED]
    e = events[0]
    assert e.subject == "site/oc-nyc-1" and e.severity == "warning"
    assert e.details["from"] == "healthy" and e.details["to"] == "unhealthy"
    assert e.details["checks"] == [{"name": "frontend", "kind": "http", "detail": "status 503"}]
    # the newest record of each reporter (here its local agent, heard by two replicas in turn)
    assert e.details["reporters"] == {"local": "unhealthy"} and e.details["heard_by"] == {"local": "c1"}
    assert e.details["region"] == "us-east-1"
    assert "frontend (http): status 503" in e.message and "(local: unhealthy via c1)" in e.message
    assert new["oc-nyc-1"] == "unhealthy"
    # and back: one info event, nothing else
    back, _ = eventdiff.health_events(new, healthy(), {}, KNOWN, NOW + 5)
    assert [(e.kind, e.subject, e.severity, e.details["to"]) for e in back] == [
        (ev.HEALTH_CHANGED, "site/oc-nyc-1", "info", "healthy")]


def test_with_observers_the_event_shows_each_reporters_view() -> None:
    views = (ReporterView("local", "local", "healthy", NOW, heard_by="c1"),
             ReporterView("eu-probe", "observer", "unhealthy", NOW, geos=("europe",), detail="frontend: timeout",
                          heard_by="c2"))
    health = healthy()
    health["us-east-1"] = TargetHealth(status="healthy", reporters=views, unreachable_from=("europe",))
    health["eu-west-1"] = TargetHealth(status="unhealthy", reporters=views)
    events, _ = eventdiff.health_events({t: "healthy" for t in TARGETS}, health, {}, KNOWN, NOW)
    assert [e.subject for e in events] == ["region/eu-west-1"]
    e = events[0]
    assert e.details["reporters"] == {"local": "healthy", "eu-probe": "unhealthy"}
    assert e.details["heard_by"] == {"local": "c1", "eu-probe": "c2"}
    assert "eu-probe: unhealthy via c2" in e.message


def test_unknown_is_no_transition_and_a_first_sighting_no_event() -> None:
    """A leader's start-up grace reads sites without records as unknown: that must not replay every site."""
    baseline = {t: "healthy" for t in TARGETS}
    unknown = {t: TargetHealth(status="unknown") for t in TARGETS}
    events, kept = eventdiff.health_events(baseline, unknown, {}, KNOWN, NOW)
    assert events == [] and kept == baseline
    events, _ = eventdiff.health_events(kept, healthy(), {}, KNOWN, NOW)
    assert events == []
    first, new = eventdiff.health_events({}, healthy(us_east_1="unhealthy"), {}, KNOWN, NOW)
    assert first == [] and new["us-east-1"] == "unhealthy"


def test_the_baseline_of_a_table_is_its_known_health() -> None:
    table = settled(healthy(eu_west_1="silent"))
    base = eventdiff.baseline_of(table)
    assert base["eu-west-1"] == "silent" and base["us-east-1"] == "healthy"
    assert eventdiff.baseline_of(None) == {}


# ---------------------------------------------------------------- tables


def test_a_region_going_down_leaves_service_in_its_geos_and_others_enter() -> None:
    before = settled(healthy())
    after = plan(CONFIG, Observed(health=healthy(us_east_1="unhealthy")), Overrides(), before, NOW, leader="t")
    events = eventdiff.table_events(before, after, KNOWN, 0.1, NOW)
    left = [e for e in events if e.kind == ev.LEFT_SERVICE and e.subject == "region/us-east-1"]
    assert len(left) == 1, events
    e = left[0]
    assert e.severity == "warning" and "now serves no geo" in e.message
    geos = {g for gs in e.details["geos"].values() for g in gs}
    assert {"na-east", "south-america", "world"} <= geos
    assert e.details["serving_geos"] == 0 and "unhealthy" in e.details["reason"]
    entered = {e.subject for e in events if e.kind == ev.ENTERED_SERVICE}
    assert entered and "region/us-east-1" not in entered
    assert eventdiff.table_events(None, after, KNOWN, 0.1, NOW) == []  # a first table is no change
    assert eventdiff.table_events(after, after, KNOWN, 0.1, NOW) == []


def _table(routes: dict[str, dict[str, GeoRoute]], version: int = 2, notes: tuple[str, ...] = ()) -> RoutingTable:
    base = settled(healthy())
    services = {name: ServiceRoute(targets="regions", geos=geos) for name, geos in routes.items()}
    return RoutingTable(version=version, parent_version=version - 1, generated_at=NOW, services=services,
                        regions=base.regions, sites=base.sites, fail_open=any(r.fail_open for g in routes.values()
                                                                               for r in g.values()),
                        converging=False, topology=base.topology, leader="t", notes=notes)


def _route(weights: dict[str, int], reasons: dict[str, str], fail_open: bool = False) -> GeoRoute:
    return GeoRoute(weights=weights, reasons=reasons, fail_open=fail_open)


def test_a_spill_beyond_the_threshold_starts_and_ends() -> None:
    home = _route({"eu-west-1": 1000, "us-east-1": 0}, {"eu-west-1": "home", "us-east-1": "standby"})
    small = _route({"eu-west-1": 950, "us-east-1": 50}, {"eu-west-1": "home", "us-east-1": "spillover from eu-west-1"})
    big = _route({"eu-west-1": 700, "us-east-1": 300}, {"eu-west-1": "home", "us-east-1": "spillover from eu-west-1"})
    failover = _route({"eu-west-1": 0, "us-east-1": 1000},
                      {"eu-west-1": "unhealthy", "us-east-1": "failover: eu-west-1 unavailable"})
    svc = "api.example.test."
    t = {name: _table({svc: {"europe": r}}) for name, r in
         (("home", home), ("small", small), ("big", big), ("failover", failover))}
    assert [e.kind for e in eventdiff.table_events(t["home"], t["small"], KNOWN, 0.1, NOW)
            if e.kind.startswith("spill")] == []  # 5 %: under the threshold
    started = [e for e in eventdiff.table_events(t["small"], t["big"], KNOWN, 0.1, NOW) if e.kind.startswith("spill")]
    assert [(e.kind, e.subject) for e in started] == [(ev.SPILL_STARTED, "geo/europe")]
    assert started[0].details["services"] == {svc: 0.3} and started[0].details["full"] == ["eu-west-1"]
    assert "30%" in started[0].message
    ended = [e.kind for e in eventdiff.table_events(t["big"], t["home"], KNOWN, 0.1, NOW) if e.kind.startswith("spill")]
    assert ended == [ev.SPILL_ENDED]
    # a failover is not capacity-driven: no spill event
    assert [e.kind for e in eventdiff.table_events(t["home"], t["failover"], KNOWN, 0.1, NOW)
            if e.kind.startswith("spill")] == []
    assert eventdiff.spill_shares(t["big"], 0.3) == {}  # "beyond": at the threshold is not beyond


def test_fail_open_starts_and_ends_per_geo() -> None:
    before = settled(healthy())
    down = healthy(**{r.id.replace("-", "_"): "unhealthy" for r in CONFIG.regions},
                   **{s.id.replace("-", "_"): "unhealthy" for s in CONFIG.sites})
    failed = plan(CONFIG, Observed(health=down), Overrides(), before, NOW, leader="t")
    assert failed.fail_open
    events = [e for e in eventdiff.table_events(before, failed, KNOWN, 0.1, NOW) if e.kind.startswith("fail_open")]
    assert {e.subject for e in events} == {f"geo/{g.id}" for g in CONFIG.geos}
    assert all(e.kind == ev.FAIL_OPEN_STARTED and e.severity == "critical" for e in events)
    assert all("FAILS OPEN" in e.message and e.details["services"] for e in events)
    back = settled(healthy(), failed)
    ended = [e for e in eventdiff.table_events(failed, back, KNOWN, 0.1, NOW) if e.kind.startswith("fail_open")]
    assert {e.subject for e in ended} == {f"geo/{g.id}" for g in CONFIG.geos}
    assert all(e.kind == ev.FAIL_OPEN_ENDED for e in ended)


def test_a_target_removed_from_the_table_leaves_service() -> None:
    before = settled(healthy())
    regions = {k: v for k, v in before.regions.items() if k != "eu-west-1"}
    services = {}
    for name, svc in before.services.items():
        geos = {}
        for g, r in svc.geos.items():
            w = {t: x for t, x in r.weights.items() if t != "eu-west-1"}
            missing = 1000 - sum(w.values())
            first = next(iter(w))
            w[first] += missing
            geos[g] = GeoRoute(weights=w, reasons={t: "home" for t in w})
        services[name] = ServiceRoute(targets=svc.targets, geos=geos)
    after = RoutingTable(version=before.version + 1, parent_version=before.version, generated_at=NOW,
                         services=services, regions=regions, sites=before.sites, fail_open=False, converging=False,
                         topology=before.topology, leader="t")
    left = [e for e in eventdiff.table_events(before, after, KNOWN, 0.1, NOW)
            if e.kind == ev.LEFT_SERVICE and e.subject == "region/eu-west-1"]
    assert len(left) == 1 and left[0].details["removed"] is True
    assert "no longer configured" in left[0].message


# ---------------------------------------------------------------- sinks, leadership


def _status(error: str | None, version: int = 3) -> SinkStatus:
    return SinkStatus(sink="route53", started_at=NOW, duration=0.5, table_version=version, change_count=2,
                      error=error)


def test_route53_errors_are_one_event_per_run_and_a_recovery() -> None:
    kinds = []
    before: SinkStatus | None = None
    for status in (_status(None), _status("Throttling"), _status("Throttling again"), _status(None), _status(None)):
        kinds += [(e.kind, e.severity) for e in eventdiff.sink_events(before, status, NOW)]
        before = status
    assert kinds == [(ev.ROUTE53_ERROR, "warning"), (ev.ROUTE53_RECOVERED, "info")]
    first = eventdiff.sink_events(None, _status("AccessDenied"), NOW)
    assert first[0].subject == "sink/route53" and "AccessDenied" in first[0].message


def test_leadership_events() -> None:
    e = eventdiff.leader_event(ev.LEADER_ELECTED, "c2", NOW, previous="c1")
    assert e.subject == "replica/c2" and e.replica == "c2" and "planned by c1" in e.message
    assert eventdiff.leader_event(ev.LEADER_LOST, "c1", NOW, reason="lease lost").severity == "warning"
    assert "resigned" in eventdiff.leader_event(ev.LEADER_RESIGNED, "c1", NOW).message
    again = eventdiff.leader_event(ev.LEADER_ELECTED, "c1", NOW, previous="c1", resumed=True)
    assert again.details["resumed"] is True and "leads again under the term it gave up" in again.message
    assert "resumed" not in e.details
    with pytest.raises(ValueError):
        eventdiff.leader_event("health_changed", "c1", NOW)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("events, line", [
    ({"max_count": 0}, "controller.events.max_count: Input should be greater than or equal to 10"),
    ({"max_age_seconds": "inf"}, "controller.events.max_age_seconds: "),
    ({"per_subject_per_minute": 0}, "controller.events.per_subject_per_minute: "),
    ({"spill_threshold": 1.0}, "controller.events.spill_threshold: "),
    ({"retention": 3}, "controller.events.retention: unknown field"),
])
def test_a_bad_events_section_is_one_line_naming_the_field(events: dict[str, Any], line: str) -> None:
    import yaml

    from steering.config import ConfigError, parse_config

    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["controller"]["events"] = events
    with pytest.raises(ConfigError) as info:
        parse_config(data, "steering.yaml", EXAMPLE_CONFIG.parent)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(line), info.value.problems


# ---------------------------------------------------------------- the record


def test_an_event_is_bounded_whatever_it_is_given() -> None:
    huge = {f"k{i}": "x" * 10_000 for i in range(100)}
    e = Event(time=NOW, kind="k" * 500, severity="info", subject="s" * 1000, message="m\n" * 5000,
              details={**huge, "nested": [[[[["deep"]]]]], "nan": math.nan, "list": list(range(1000))})
    assert len(e.kind) <= ev.MAX_KIND and len(e.subject) <= ev.MAX_SUBJECT and len(e.message) <= ev.MAX_MESSAGE
    assert "\n" not in e.message
    blob = json.dumps(e.to_dict())
    assert len(json.dumps(dict(e.details))) <= ev.MAX_DETAILS_BYTES + 64
    back = Event.from_dict(json.loads(blob), id="x")
    assert back.kind == e.kind and back.details == e.details and back.id == "x"


@pytest.mark.parametrize("record, field", [
    ([], "JSON object"), ({"time": "now"}, "time"), ({"time": math.inf}, "time"),
    ({"time": 1.0, "kind": ""}, "kind"), ({"time": 1.0, "kind": "x", "severity": "loud"}, "severity"),
    ({"time": 1.0, "kind": "x", "severity": "info", "subject": 3}, "subject"),
    ({"time": 1.0, "kind": "x", "severity": "info", "subject": "s", "message": "m", "details": []}, "details"),
])
def test_a_stored_record_that_is_not_an_event_is_refused_naming_the_field(record: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Event.from_dict(record)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=20)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["time", "kind", "severity", "subject", "message", "details", "replica"]),
                       json_values) | json_values)
def test_decoding_anything_either_gives_an_event_or_raises_value_error(record: Any) -> None:
    try:
        e = Event.from_dict(record)
    except ValueError:
        return
    assert e.severity in ev.SEVERITIES and math.isfinite(e.time)


# ---------------------------------------------------------------- the rate limit


def _event(subject: str, kind: str = ev.HEALTH_CHANGED, t: float = NOW) -> Event:
    return Event(time=t, kind=kind, severity="warning", subject=subject, message=f"{subject} flipped")


def test_a_flapping_subject_is_cut_to_its_budget_and_summed_up_once_it_has_room() -> None:
    limiter = RateLimiter(budget=3, window=60.0)
    out = limiter.admit([_event("site/a") for _ in range(10)] + [_event("site/b")], now=0.0)
    assert [e.subject for e in out] == ["site/a"] * 3 + ["site/b"]
    assert limiter.suppressed_total == 7 and limiter.pending == 7
    assert limiter.flush(30.0) == []  # no room yet
    summary = limiter.flush(60.0)
    assert [(e.kind, e.subject, e.details["suppressed"]) for e in summary] == [(ev.FLAPPING, "site/a", 7)]
    assert "7 event(s) suppressed" in summary[0].message and limiter.pending == 0
    # the next event of a subject with a summary due comes after its summary
    limiter.admit([_event("site/c") for _ in range(5)], now=100.0)
    nxt = limiter.admit([_event("site/c", kind=ev.LEFT_SERVICE)], now=161.0)
    assert [e.kind for e in nxt] == [ev.FLAPPING, ev.LEFT_SERVICE]


@settings(max_examples=300, deadline=None)
@given(budget=st.integers(1, 5), window=st.sampled_from([1.0, 10.0, 60.0]),
       steps=st.lists(st.tuples(st.sampled_from(["site/a", "site/b", "geo/c"]),  # subject
                                st.floats(0, 30, allow_nan=False),  # seconds since the previous step
                                st.integers(0, 4),  # events at this step
                                st.booleans()),  # flush after the step
                      max_size=60))
def test_the_rate_limit_never_exceeds_its_budget_and_loses_no_transition(
        budget: int, window: float, steps: list[tuple[str, float, int, bool]]) -> None:
    limiter = RateLimiter(budget, window)
    now = 0.0
    given_count = 0
    emitted: list[tuple[float, Event]] = []
    for subject, dt, n, flush in steps:
        now += dt
        batch = [_event(subject, t=NOW + now) for _ in range(n)]
        given_count += n
        emitted += [(now, e) for e in limiter.admit(batch, now)]
        if flush:
            emitted += [(now, e) for e in limiter.flush(now)]
    # the budget: for every written event, its subject's events written in the window up to it
    for t, e in emitted:
        in_window = [1 for u, f in emitted if f.subject == e.subject and t - window < u <= t]
        assert len(in_window) <= budget, (e.subject, t)
    # every transition is written, or counted in exactly one summary, or still pending one
    plain = sum(1 for _, e in emitted if e.kind != ev.FLAPPING)
    summed = sum(int(e.details["suppressed"]) for _, e in emitted if e.kind == ev.FLAPPING)
    assert plain + summed + limiter.pending == given_count
    assert limiter.suppressed_total == summed + limiter.pending
