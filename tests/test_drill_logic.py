"""Drills' pure parts: the guard language (properties), ramps and durations, the stored record, the state
machine driven with the real planner and injected time (``steering.drillguard``, ``steering.drill``,
``steering.controller.drillstep``, ``steering.drillreport``)."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steering import drillguard, drillschedule, promquery
from steering.config import load_config
from steering.controller import drillstep
from steering.drill import ABORTED, DONE, DRAINING, HOLDING, PREFLIGHT, RESTORING, Drill, parse_duration, parse_ramp
from steering.drillreport import markdown, report
from steering.model import Evacuation, Observed, Overrides, Restore, TargetHealth
from steering.planner import plan
from steering.table import RoutingTable
from tests.support.paths import EXAMPLE_CONFIG

CONFIG = load_config(EXAMPLE_CONFIG)
REGIONS = {r.id for r in CONFIG.regions}
T0 = 1_700_000_000.0

# ---------------------------------------------------------------------- guards

GUARD = st.builds(
    drillguard.Guard,
    name=st.sampled_from(["max_utilization", "unhealthy_regions", "fail_open", "utilization"]),
    op=st.sampled_from(["", *drillguard.OPS]),
    threshold=st.floats(0, 1e9, allow_nan=False, allow_infinity=False),
).map(lambda g: dataclasses.replace(g, arg="us-east-1" if g.name == "utilization" else "",
                                    threshold=g.threshold if g.op else 0.0))


@given(GUARD)
def test_a_guard_printed_parses_back_to_itself(g: drillguard.Guard) -> None:
    assert drillguard.parse(str(g), REGIONS) == g


@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused_with_one_line(text: str) -> None:
    try:
        g = drillguard.parse(text, REGIONS)
    except drillguard.GuardError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert drillguard.parse(str(g), REGIONS) == g
    assert math.isfinite(g.threshold)


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty"), ("max_utilization >", "ends too early"), ("max_utilization > x", "expected a number"),
    ("cpu > 1", "unknown name 'cpu'"), ("utilization(mars-1) > 0.5", "unknown region 'mars-1'"),
    ("utilization > 0.5", "expected '('"), ("error_rate(us-east-1) > 0.01", "agents report no error rates"),
    ("max_utilization > 0.8 or fail_open", "unexpected 'or'"), ("max_utilization > 1e999", "out of range"),
    ("x" * 300, "at most 200"),
])
def test_bad_guards_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(drillguard.GuardError, match=problem.replace("(", r"\(")):
        drillguard.parse(text, REGIONS)


def test_guards_evaluate_on_a_sample() -> None:
    s = drillguard.Sample({"us-east-1": 0.9, "us-west-2": 0.2}, unhealthy_regions=1, fail_open=False)
    assert drillguard.first_tripped((drillguard.parse("fail_open"),), s) is None
    hit = drillguard.first_tripped((drillguard.parse("fail_open"), drillguard.parse("max_utilization > 85%")), s)
    assert hit is not None and str(hit[0]) == "max_utilization > 0.85" and hit[1] == 0.9
    assert drillguard.value(drillguard.parse("utilization(eu-west-1) > 1"), s) == 0.0
    assert drillguard.tripped(drillguard.parse("unhealthy_regions >= 1"), 1.0)


# ---------------------------------------------------------------------- ramps, durations, the record


def test_ramps_and_durations() -> None:
    assert parse_ramp("--ramp", "25%/60s") == (0.25, 60.0)
    assert parse_ramp("--ramp", "50% / 1.5m") == (0.5, 90.0)
    assert parse_duration("--hold", "10m", (0, 1e6)) == 600.0
    for bad in ("25", "0%/1s", "25%/0s", "150%/1s", "fast"):
        with pytest.raises(ValueError, match="--ramp"):
            parse_ramp("--ramp", bad)
    with pytest.raises(ValueError, match="--hold"):
        parse_duration("--hold", "-3", (0, 1e6))


@given(st.dictionaries(st.sampled_from(["id", "region", "phase", "step", "hold", "samples", "peak", "guards"]),
                       st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers()))))
def test_a_stored_drill_that_cannot_be_used_is_refused_naming_a_field(data: dict[str, object]) -> None:
    try:
        Drill.from_dict(data)
    except ValueError as exc:
        assert str(exc)


# ---------------------------------------------------------------------- the state machine


def table(overrides: Overrides | None = None, load: dict[str, float] | None = None,
          down: tuple[str, ...] = (), previous: RoutingTable | None = None, now: float = T0) -> RoutingTable:
    health = {t: TargetHealth(status="unhealthy" if t in down else "healthy", load=(load or {}).get(t, 100.0),
                              updated_at=T0)
              for t in [*REGIONS, *(s.id for s in CONFIG.sites)]}
    return plan(CONFIG, Observed(health=health), overrides or Overrides(), previous, now, leader="t")


def settled(overrides: Overrides, **kw: object) -> RoutingTable:
    """The table once every ramp of ``overrides`` has run its course."""
    t = table(overrides, **kw)  # type: ignore[arg-type]
    for i in range(1, 40):
        if not t.converging:
            break
        t = table(overrides, previous=t, now=T0 + i * 100, **kw)  # type: ignore[arg-type]
    return t


def view(t: RoutingTable, now: float, replica: str = "r1") -> drillstep.View:
    return drillstep.View(t, now, replica, "summary")


DRILL = Drill(id="d-1", region="eu-west-1", reason="practice", step=0.5, interval=1.0, hold=10.0,
              guards=("max_utilization > 0.5",), created_at=T0)
EVACUATED = Overrides(evacuations=(Evacuation("eu-west-1", "ramp", 0.5, 1.0, T0),))
RESTORED = Overrides(restores=(Restore("eu-west-1", 0.5, 1.0, T0 + 20),))


def test_a_drill_walks_every_phase_with_one_effect_each() -> None:
    start = table()
    s = drillstep.advance(DRILL, view(start, T0))
    assert (s.drill.phase, s.effect) == (DRAINING, "evacuate")
    d = s.drill
    s = drillstep.advance(d, view(table(EVACUATED), T0 + 1))  # the first step: still some traffic
    assert (s.drill.phase, s.effect) == (DRAINING, "")
    s = drillstep.advance(s.drill, view(settled(EVACUATED), T0 + 3))
    assert (s.drill.phase, s.effect) == (HOLDING, "") and s.drill.hold_until == T0 + 13
    s = drillstep.advance(s.drill, view(settled(EVACUATED), T0 + 12))
    assert (s.drill.phase, s.effect) == (HOLDING, "")
    s = drillstep.advance(s.drill, view(settled(EVACUATED), T0 + 13))
    assert (s.drill.phase, s.effect) == (RESTORING, "restore")
    s = drillstep.advance(s.drill, view(settled(RESTORED), T0 + 30, replica="r2"))
    assert (s.drill.phase, s.effect) == (DONE, "")
    d = s.drill
    assert d.leaders == ("r1", "r2") and d.peak.keys() == {"us-east-1", "us-west-2"}
    assert drillstep.advance(d, view(settled(RESTORED), T0 + 40)) == drillstep.Step(d)  # finished: no more steps
    r = report(d)
    assert r["drain_seconds"] == 3.0 and r["return_seconds"] == 17.0 and r["abort"] is None
    assert "| eu-west-1" not in markdown(d)  # receivers only
    assert Drill.from_dict(json.loads(json.dumps(d.to_dict()))) == d


@pytest.mark.parametrize("phase", [DRAINING, HOLDING])
def test_a_guard_a_health_event_or_an_abort_restores_at_once(phase: str) -> None:
    d = dataclasses.replace(DRILL, phase=phase, hold_until=T0 + 100)
    hot = settled(EVACUATED, load={"us-east-1": 9500.0})
    s = drillstep.advance(d, view(hot, T0 + 5))
    assert (s.drill.phase, s.effect, s.drill.abort_cause) == (RESTORING, "restore_now", "guard")
    assert "max_utilization > 0.5 (value 0.679)" in s.drill.abort_detail
    s = drillstep.advance(d, view(settled(EVACUATED, down=("us-west-2",)), T0 + 5))
    assert (s.effect, s.drill.abort_cause, s.drill.abort_detail) == ("restore_now", "health", "us-west-2 is unhealthy")
    s = drillstep.advance(dataclasses.replace(d, abort_requested="alice: enough"), view(settled(EVACUATED), T0 + 5))
    assert (s.effect, s.drill.abort_cause) == ("restore_now", "operator")
    back = drillstep.advance(s.drill, view(settled(Overrides()), T0 + 6))
    assert back.drill.phase == ABORTED and back.effect == ""


def test_a_guard_during_a_ramped_return_speeds_it_up_once() -> None:
    d = dataclasses.replace(DRILL, phase=RESTORING)
    s = drillstep.advance(d, view(table(RESTORED, load={"us-east-1": 9500.0}), T0 + 21))
    assert (s.drill.phase, s.effect, s.drill.abort_cause) == (RESTORING, "restore_now", "guard")
    again = drillstep.advance(s.drill, view(table(RESTORED, load={"us-east-1": 9500.0}), T0 + 22))
    assert again.effect == ""


def test_preflight_refuses_a_drill_that_a_guard_or_the_state_forbids() -> None:
    g = (drillguard.parse("max_utilization > 0.4"),)
    assert drillstep.preflight("eu-west-1", table(), Overrides(), None, g, "") == []
    why = drillstep.preflight("eu-west-1", table(load={"us-east-1": 9500.0}, down=("us-west-2",)), EVACUATED,
                              "d-x", g, "min_serving_regions: 1 < 2")
    assert why == ["another drill is in flight: d-x", "an evacuation or restore is in flight: eu-west-1",
                   "us-west-2 is already unhealthy", "guard max_utilization > 0.4 is already true (value 0.6305)",
                   "the safety rules would refuse evacuating eu-west-1: min_serving_regions: 1 < 2"]
    s = drillstep.advance(DRILL, view(table(load={"us-east-1": 20000.0}), T0))
    assert (s.drill.phase, s.effect, s.drill.abort_cause) == (ABORTED, "", "preflight")
    assert s.drill.phase != PREFLIGHT


# ---------------------------------------------------------------------- schedules (time injected)

TUE_1400 = datetime(2026, 12, 1, 14, 0, tzinfo=UTC).timestamp()  # a Tuesday
WINDOW = st.builds(lambda days, a, n: drillschedule.Window(frozenset(days), a, min(1440, a + n)),
                   st.sets(st.integers(0, 6), min_size=1), st.integers(0, 1439), st.integers(1, 1440))
NOW = st.floats(1.6e9, 2.0e9, allow_nan=False)


@given(WINDOW)
def test_a_window_printed_parses_back_to_itself(w: drillschedule.Window) -> None:
    assert drillschedule.parse_window("--window", str(w)) == w


@given(WINDOW, NOW)
def test_a_window_contains_only_its_days_and_minutes(w: drillschedule.Window, now: float) -> None:
    t = datetime.fromtimestamp(now, UTC)
    assert w.contains(now) == (t.weekday() in w.days and w.start <= t.hour * 60 + t.minute < w.end)


def schedule(**kw: object) -> drillschedule.Schedule:
    base: dict[str, object] = {"id": "s-1", "region": "eu-west-1", "every": 7 * 86400.0,
                               "window": "Tue 14:00-16:00 UTC", "reason": "weekly"}
    return drillschedule.Schedule(**{**base, **kw})  # type: ignore[arg-type]


@given(NOW, st.floats(0, 2.0e9), st.floats(0, 2.0e9))
def test_a_schedule_is_due_only_inside_its_window_and_never_in_a_blackout(now: float, last: float,
                                                                        attempt: float) -> None:
    s = schedule(window="Mon-Fri 09:00-17:30 UTC", last_started_at=last, last_attempt_at=attempt,
                 blackouts=(("2027-12-20", "2028-01-03"),))
    if s.due(now):
        assert drillschedule.parse_window("w", s.window).contains(now)
        assert not drillschedule.in_blackout(s.blackouts, now)
    today = datetime.fromtimestamp(now, UTC).date().isoformat()
    assert not schedule(window="daily 00:00-24:00 UTC", blackouts=((today, today),)).due(now)


def test_a_weekly_schedule_fires_once_per_window() -> None:
    s = schedule()
    assert s.due(TUE_1400) and s.due(TUE_1400 + 7199) and not s.due(TUE_1400 + 7200)
    assert not s.due(TUE_1400 - 60) and not s.due(TUE_1400 + 86400)  # before it; Wednesday
    ran = schedule(last_started_at=TUE_1400 + 300)  # started 5 minutes into the window
    assert not ran.due(TUE_1400 + 600)  # the same window: once
    assert ran.due(TUE_1400 + 7 * 86400)  # next week's window from its start, though 5 minutes short of 7d
    refused = schedule(last_attempt_at=TUE_1400)  # preflight refused a minute ago: retried, not every tick
    assert not refused.due(TUE_1400 + 30) and refused.due(TUE_1400 + 60)
    assert not schedule(blackouts=(("2026-11-30", "2026-12-02"),)).due(TUE_1400)
    back = drillschedule.Schedule.from_dict(json.loads(json.dumps(ran.to_dict())))
    assert back == ran


@pytest.mark.parametrize(("text", "problem"), [
    ("Tue 14:00-16:00 CET", "in UTC"), ("Tue 16:00-14:00 UTC", "ends before it starts"),
    ("Tuesday", "is not DAYS"), ("Tux 14:00-16:00", "is not a day"), ("Tue 14:00-24:30", "not HH:MM"),
    ("Mon-Wed-Fri 14:00-16:00", "range of days"),
])
def test_bad_windows_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"--window: .*{problem}"):
        drillschedule.parse_window("--window", text)


def test_bad_blackouts_name_the_field() -> None:
    assert drillschedule.parse_blackout("--blackout", "2026-12-20..2027-01-03") == ("2026-12-20", "2027-01-03")
    for bad in ("2026-12-20", "2026-13-01..2026-12-02", "2027-01-03..2026-12-20"):
        with pytest.raises(ValueError, match="--blackout"):
            drillschedule.parse_blackout("--blackout", bad)


# ---------------------------------------------------------------------- Prometheus guards


def test_prometheus_answers_read_as_the_alerting_rules_do() -> None:
    def vector(*values: str) -> dict[str, object]:
        return {"status": "success", "data": {"resultType": "vector",
                                              "result": [{"metric": {}, "value": [1.0, v]} for v in values]}}

    assert promquery.first_value(vector()) is None
    assert promquery.first_value(vector("0.93", "2")) == 0.93
    assert promquery.first_value({"status": "success", "data": {"resultType": "scalar", "result": [1, "0"]}}) is None
    bad: object
    for bad in ({"status": "error", "error": "bad_data"}, {"status": "success"}, [], vector("x")):
        with pytest.raises(promquery.PrometheusError):
            promquery.first_value(bad)
    assert promquery.alert_query("DrillPain") == 'ALERTS{alertname="DrillPain",alertstate="firing"}'
    with pytest.raises(ValueError, match="--abort-on-alert"):
        promquery.check_alert("--abort-on-alert", 'x"} or vector(1) #')


def test_a_firing_prometheus_guard_or_a_silent_prometheus_restores_at_once() -> None:
    d = dataclasses.replace(DRILL, phase=HOLDING, hold_until=T0 + 100, alerts=("DrillPain",))
    t = settled(EVACUATED)
    quiet = dataclasses.replace(view(t, T0 + 5), external={"alert:DrillPain": (0.0, False)})
    assert drillstep.advance(d, quiet).effect == ""
    firing = dataclasses.replace(quiet, external={"alert:DrillPain": (1.0, True)})
    s = drillstep.advance(d, firing)
    assert (s.effect, s.drill.abort_cause, s.drill.abort_detail) == ("restore_now", "prometheus",
                                                                     "alert:DrillPain (value 1)")
    silent = dataclasses.replace(view(t, T0 + 5), unanswered_for=31.0, unanswered_limit=30.0)
    s = drillstep.advance(d, silent)
    assert s.effect == "restore_now" and "unanswered for 31s" in s.drill.abort_detail
    assert drillstep.advance(dataclasses.replace(d, alerts=()), silent).effect == ""  # no Prometheus guard


def test_the_return_ends_when_the_regions_share_holds_though_others_still_move() -> None:
    d = dataclasses.replace(DRILL, phase=RESTORING)
    moving = dataclasses.replace(settled(RESTORED), converging=True)  # a receiver's load moves traffic elsewhere
    first = drillstep.advance(d, view(moving, T0 + 30))
    assert first.drill.phase == RESTORING  # one table: nothing to compare with yet
    later = dataclasses.replace(moving, version=moving.version + 1)
    assert drillstep.advance(first.drill, view(later, T0 + 32)).drill.phase == DONE
