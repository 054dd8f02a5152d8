"""The leader's timing rules, driven with injected time: no etcd, no sleeps (``steering.controller.leaderstate``).

Each test plays the shell's part: it feeds events with the monotonic time they happen at, asks ``next``,
runs the real planner on a ``Plan`` and answers with ``planned``/``published``.
"""

from __future__ import annotations

import dataclasses

import pytest

from steering.config import load_config
from steering.controller.leaderstate import (
    LeaderState,
    Plan,
    Publish,
    Resign,
    Skip,
    Timing,
    Wait,
    has_emergency,
)
from steering.model import Evacuation, Observed, Overrides, TargetHealth
from steering.planner import plan
from steering.table import RoutingTable
from tests.support.paths import EXAMPLE_CONFIG

CONFIG = load_config(EXAMPLE_CONFIG)
REGIONS = [r.id for r in CONFIG.regions]
KNOWN = REGIONS + [s.id for s in CONFIG.sites]
TIMING = Timing(debounce_seconds=0.2, step_seconds=5.0, silence_seconds=10.0)
T0 = 1000.0  # monotonic time the term begins
WALL = 1_700_000_000.0


def records(*, down: tuple[str, ...] = (), missing: tuple[str, ...] = (), load: float = 1000.0,
            replica: str = "r1") -> dict[str, TargetHealth]:
    """Health records as the store yields them: ``site@replica`` -> health."""
    return {f"{t}@{replica}": TargetHealth(status="unhealthy" if t in down else "healthy", load=load,
                                          updated_at=WALL)
            for t in KNOWN if t not in missing}


def run(step: Plan) -> tuple[RoutingTable, bool]:
    """What the shell does with a ``Plan``: the real planner, and whether the routing is unchanged."""
    table = plan(CONFIG, Observed(health=step.health), step.overrides, step.previous, step.now, leader="t",
                 elapsed=step.elapsed)
    return table, step.previous is not None and table.same_routing(step.previous)


def table_of(health: dict[str, TargetHealth] | None = None) -> RoutingTable:
    merged = {k.partition("@")[0]: h for k, h in (health or records()).items()}
    return plan(CONFIG, Observed(health=merged), Overrides(), None, WALL, leader="other")


def started(previous: RoutingTable | None = None, timing: Timing = TIMING, read_at: float = T0) -> LeaderState:
    state = LeaderState(timing, KNOWN, gained_at=T0)
    state.table_observed(previous, read_at)
    return state


def plan_at(state: LeaderState, at: float) -> Plan:
    decision = state.next(WALL + at - T0, at)
    assert isinstance(decision, Plan), decision
    return decision


def wait_at(state: LeaderState, at: float) -> float:
    decision = state.next(WALL + at - T0, at)
    assert isinstance(decision, Wait), decision
    return decision.until


def publish_first(state: LeaderState, at: float) -> RoutingTable:
    """Both snapshots read at ``at``; the first table is planned after the debounce and published."""
    state.health_changed(records())
    state.overrides_changed(Overrides())
    assert wait_at(state, at) == pytest.approx(at + TIMING.debounce_seconds)
    outcome = state.planned(*run(plan_at(state, at + TIMING.debounce_seconds)))
    assert isinstance(outcome, Publish)
    assert state.published(True) is None
    return outcome.table


def test_timing_comes_from_the_config() -> None:
    assert Timing.of(CONFIG) == Timing(debounce_seconds=CONFIG.controller.debounce_seconds,
                                       step_seconds=CONFIG.policy.step_seconds,
                                       silence_seconds=CONFIG.policy.silence_seconds)


def test_nothing_is_planned_before_health_and_overrides_have_both_been_read() -> None:
    state = started()
    state.health_changed(records())
    assert wait_at(state, T0 + 1.0) == pytest.approx(T0 + 1.2)
    # The debounce ends with overrides still unread: no plan, only a new wait (a half-read state).
    assert wait_at(state, T0 + 1.2) > T0 + 1.2
    state.overrides_changed(Overrides())
    assert wait_at(state, T0 + 1.3) == pytest.approx(T0 + 1.5)
    step = plan_at(state, T0 + 1.5)
    assert step.previous is None and set(step.health) == set(KNOWN)


def test_the_first_table_is_published_at_once_with_the_wall_clock_as_its_time() -> None:
    state = started()
    state.health_changed(records())
    state.overrides_changed(Overrides())
    until = wait_at(state, T0 + 0.1)
    step = plan_at(state, until)
    assert step.now == WALL + until - T0
    outcome = state.planned(*run(step))
    assert isinstance(outcome, Publish) and outcome.table.generated_at == step.now
    assert state.published(True) is None
    assert state.previous is outcome.table


def test_a_burst_of_changes_is_gathered_and_later_changes_do_not_extend_the_debounce() -> None:
    state = started(table_of())
    state.health_changed(records())
    state.overrides_changed(Overrides())
    assert wait_at(state, T0 + 1.0) == pytest.approx(T0 + 1.2)
    state.health_changed(records(load=2000.0))  # within the debounce
    assert wait_at(state, T0 + 1.15) == pytest.approx(T0 + 1.2)
    step = plan_at(state, T0 + 1.2)
    assert {h.load for h in step.health.values()} == {2000.0}  # the latest snapshot, one plan for the burst


def test_the_debounce_counts_from_when_the_leader_is_next_idle() -> None:
    state = started()
    publish_first(state, T0 + 1.0)
    state.health_changed(records(load=900.0))
    assert wait_at(state, T0 + 1.5) == pytest.approx(T0 + 1.7)
    step = plan_at(state, T0 + 1.7)
    state.health_changed(records(load=800.0))  # arrives while the plan runs
    if isinstance(state.planned(*run(step)), Publish):
        state.published(True)
    assert wait_at(state, T0 + 2.0) == pytest.approx(T0 + 2.2)  # not from T0 + 1.7, when the change came


def test_an_operator_action_ends_a_debounce_under_way() -> None:
    state = started()
    publish_first(state, T0 + 1.0)
    state.health_changed(records(load=900.0))
    assert wait_at(state, T0 + 1.5) == pytest.approx(T0 + 1.7)  # a health change waits out the debounce
    evacuation = Evacuation(region="us-west-2", mode="now", started_at=WALL, reason="test")
    state.overrides_changed(Overrides(evacuations=(evacuation,)))
    step = plan_at(state, T0 + 1.55)  # the operator's action does not
    assert step.overrides.evacuations == (evacuation,) and {h.load for h in step.health.values()} == {900.0}
    assert isinstance(state.planned(*run(step)), Publish)
    state.published(True)
    state.health_changed(records(load=800.0))
    assert wait_at(state, T0 + 2.0) == pytest.approx(T0 + 2.2)  # and health debounces again after it


def test_without_a_debounce_a_change_is_planned_at_once() -> None:
    state = started(timing=dataclasses.replace(TIMING, debounce_seconds=0.0))
    state.health_changed(records())
    state.overrides_changed(Overrides())
    plan_at(state, T0 + 1.0)


def test_an_unchanged_plan_is_not_published() -> None:
    state = started()
    publish_first(state, T0 + 1.0)
    state.health_changed(records())  # a re-list: the same health
    wait_at(state, T0 + 2.0)
    assert state.planned(*run(plan_at(state, T0 + 2.2))) == Skip("unchanged")


def test_with_no_change_the_leader_plans_every_step_for_ramps() -> None:
    state = started(timing=dataclasses.replace(TIMING, silence_seconds=1.0))
    publish_first(state, T0 + 2.0)
    until = wait_at(state, T0 + 2.5)
    assert until == pytest.approx(T0 + 2.5 + TIMING.step_seconds)
    assert wait_at(state, until - 0.01) == until  # the same wait, not a new one
    plan_at(state, until)  # the tick: planned with nothing changed, so a ramp can take its step


def test_non_urgent_moves_go_one_step_per_step_seconds() -> None:
    state = started(timing=dataclasses.replace(TIMING, silence_seconds=1.0))
    first = publish_first(state, T0 + 2.0)  # published at T0 + 2.2
    state.health_changed(records(load=5000.0))
    wait_at(state, T0 + 3.0)
    step = plan_at(state, T0 + 3.2)
    table, unchanged = run(step)
    assert not unchanged and not has_emergency(first, table)
    skip = state.planned(table, unchanged)
    assert isinstance(skip, Skip) and skip.reason == "paced"
    assert skip.due == pytest.approx(T0 + 2.2 + TIMING.step_seconds)
    # The deferred step ends the next wait (with a margin), before a full step_seconds from now.
    until = wait_at(state, T0 + 3.3)
    assert until == pytest.approx(T0 + 2.2 + TIMING.step_seconds + 0.01)
    outcome = state.planned(*run(plan_at(state, until)))
    assert isinstance(outcome, Publish)


def test_an_emergency_is_published_at_once() -> None:
    state = started(timing=dataclasses.replace(TIMING, silence_seconds=1.0))
    first = publish_first(state, T0 + 2.0)
    state.health_changed(records(down=("us-east-1",)))
    wait_at(state, T0 + 2.5)
    table, unchanged = run(plan_at(state, T0 + 2.7))  # half a second after the last step
    assert first.regions["us-east-1"].serving and not table.regions["us-east-1"].serving
    assert state.planned(table, unchanged) == Publish(table)


def test_what_counts_as_an_emergency() -> None:
    healthy = table_of()
    assert not has_emergency(healthy, healthy)
    assert has_emergency(healthy, table_of(records(down=("eu-west-1",))))
    assert has_emergency(healthy, table_of(records(down=("oc-lon-1",))))  # a site stops serving
    assert not has_emergency(table_of(records(down=("eu-west-1",))), healthy)  # coming back is paced
    assert has_emergency(healthy, dataclasses.replace(healthy, fail_open=True))
    assert has_emergency(dataclasses.replace(healthy, fail_open=True), healthy)


def test_an_operator_action_is_published_at_once_even_when_it_moves_nothing() -> None:
    state = started()
    publish_first(state, T0 + 1.0)
    state.overrides_changed(Overrides())  # after the first snapshot: an operator action (here a no-op)
    assert state.operator_pending
    table, unchanged = run(plan_at(state, T0 + 1.5))  # at once (no debounce), within step_seconds of the last
    assert unchanged
    assert state.planned(table, unchanged) == Publish(table)
    state.published(True)
    assert not state.operator_pending
    wait_at(state, T0 + 2.0)
    state.health_changed(records())
    wait_at(state, T0 + 2.0)
    assert state.planned(*run(plan_at(state, T0 + 2.2))) == Skip("unchanged")  # once only


def test_an_operator_action_that_arrives_while_a_plan_runs_gets_its_own_table() -> None:
    state = started()
    publish_first(state, T0 + 1.0)
    state.overrides_changed(Overrides())
    step = plan_at(state, T0 + 1.5)
    evacuation = Evacuation(region="us-west-2", mode="now", started_at=WALL, reason="test")
    state.overrides_changed(Overrides(evacuations=(evacuation,)))  # lands during the plan
    outcome = state.planned(*run(step))
    assert isinstance(outcome, Publish)
    state.published(True)
    assert state.operator_pending  # the table just published was planned without it
    step = plan_at(state, T0 + 2.0)  # planned at once after the one that ran
    assert step.overrides.evacuations == (evacuation,)
    assert isinstance(state.planned(*run(step)), Publish)
    state.published(True)
    assert not state.operator_pending


def test_start_up_grace_a_site_without_a_record_is_unknown_then_silent() -> None:
    slow = dataclasses.replace(TIMING, step_seconds=30.0)
    state = started(timing=slow)
    state.health_changed(records(missing=("oc-lon-1",)))
    state.overrides_changed(Overrides())
    wait_at(state, T0 + 1.0)
    step = plan_at(state, T0 + 1.2)
    assert step.health["oc-lon-1"].status == "unknown"
    assert isinstance(state.planned(*run(step)), Publish)
    state.published(True)
    # No event: the next wake is just after the grace ends (before a whole step_seconds).
    until = wait_at(state, T0 + 1.5)
    assert until == pytest.approx(T0 + slow.silence_seconds + 0.05)
    step = plan_at(state, until)
    assert step.health["oc-lon-1"].status == "silent"
    table, unchanged = run(step)
    assert not table.sites["oc-lon-1"].serving
    assert isinstance(state.planned(table, unchanged), Publish)  # a site stopped serving: an emergency


def test_start_up_grace_keeps_a_site_the_table_in_force_had_silent_silent() -> None:
    previous = table_of({**records(missing=("oc-lon-1",)),
                         "oc-lon-1@r0": TargetHealth(status="silent", updated_at=WALL)})
    assert previous.sites["oc-lon-1"].health == "silent"
    state = started(previous)
    state.health_changed(records(missing=("oc-lon-1", "oc-nyc-1")))
    state.overrides_changed(Overrides())
    wait_at(state, T0 + 1.0)
    health = plan_at(state, T0 + 1.2).health
    assert health["oc-lon-1"].status == "silent"  # never sent traffic back to a site nobody hears from
    assert health["oc-nyc-1"].status == "unknown"


def test_elapsed_counts_from_reading_the_table_then_from_each_published_plan() -> None:
    state = started(table_of(), read_at=T0 + 3.0)  # reading the table in force took 3 s
    state.health_changed(records(load=5000.0))
    state.overrides_changed(Overrides())
    wait_at(state, T0 + 4.0)
    step = plan_at(state, T0 + 4.2)
    assert step.elapsed == pytest.approx(1.2)  # the time before the read is not this leader's to measure
    table, unchanged = run(step)
    assert isinstance(state.planned(table, unchanged), Publish)  # after an election: once at once
    state.published(True)
    state.health_changed(records(load=6000.0))
    wait_at(state, T0 + 5.0)
    step = plan_at(state, T0 + 5.2)
    assert step.elapsed == pytest.approx(1.0)
    assert isinstance(state.planned(*run(step)), Skip)  # paced: elapsed keeps counting from T0 + 4.2
    wait_at(state, T0 + 6.0)
    state.health_changed(records(load=7000.0))
    wait_at(state, T0 + 9.0)
    assert plan_at(state, T0 + 9.2).elapsed == pytest.approx(5.0)


def test_losing_leadership_resigns_whatever_was_pending() -> None:
    state = started()
    state.health_changed(records())
    state.overrides_changed(Overrides())
    wait_at(state, T0 + 1.0)
    assert state.leadership_lost("lease lost: no keepalive ack") == Resign("lease lost: no keepalive ack")
    assert state.next(WALL, T0 + 1.2) == Resign("lease lost: no keepalive ack")
    state.health_changed(records(load=1.0))
    assert state.next(WALL, T0 + 9.0) == Resign("lease lost: no keepalive ack")  # for good


def test_a_publish_refused_by_the_fence_ends_the_term() -> None:
    state = started()
    state.health_changed(records())
    state.overrides_changed(Overrides())
    wait_at(state, T0 + 1.0)
    outcome = state.planned(*run(plan_at(state, T0 + 1.2)))
    assert isinstance(outcome, Publish)
    assert state.published(False) == Resign("publish refused: no longer the leader")
    assert state.previous is None  # the refused table was never in force
    assert isinstance(state.next(WALL, T0 + 2.0), Resign)


def test_the_shell_must_answer_a_plan_before_asking_again() -> None:
    state = started()
    state.health_changed(records())
    state.overrides_changed(Overrides())
    wait_at(state, T0 + 1.0)
    plan_at(state, T0 + 1.2)
    with pytest.raises(RuntimeError):
        state.next(WALL, T0 + 1.3)
    with pytest.raises(RuntimeError):
        state.published(True)


def test_an_emergency_among_states_handed_on_as_they_were() -> None:
    """The incremental planner hands unchanged states on as the same objects; only the others are read."""
    healthy = table_of()
    down = table_of(records(down=("oc-lon-1",)))
    after = dataclasses.replace(healthy, sites={**healthy.sites, "oc-lon-1": down.sites["oc-lon-1"]})
    assert has_emergency(healthy, after)
    assert not has_emergency(after, dataclasses.replace(after, sites=dict(after.sites)))
