"""A ramp is never hurried by skewed wall clocks, whatever the events between its steps (pure).

The lab once saw (docs/failure-modes.md, "a ramp hurried under a leader 30 s ahead, once") a leader 30 s
ahead publish a 25 %/1 s evacuation's last step a quarter of a second after its first, with the record
written by a replica 30 s behind. This drives what the leader runs, ``LeaderState`` deciding and the
``Replanner`` planning, through seeded random schedules of health snapshots and re-read overrides, that
record 60 s behind the leader's wall clock, debounces with and without a wait, and a leader change part way
(the next leader 30 s behind, with its own monotonic clock, reading the last published table), and checks
the tables published: step k of the ramp is first published no sooner than (k - 1) intervals after step 1.
"""

from __future__ import annotations

import random

import pytest

from steering.config import load_config
from steering.controller.leaderstate import LeaderState, Plan, Publish, Timing, Wait
from steering.model import Evacuation, Observed, Overrides, TargetHealth
from steering.replan import Replanner
from steering.table import RoutingTable
from tests.support.paths import EXAMPLE_CONFIG

CONFIG = load_config(EXAMPLE_CONFIG)
KNOWN = [r.id for r in CONFIG.regions] + [s.id for s in CONFIG.sites]
GONE = CONFIG.regions[-1].id
EPOCH = 1_700_000_000.0
INTERVAL = 1.0
STEP = 0.25  # four steps: the lab's 25 %/1 s
RUN = 30.0  # seconds of real time per schedule
SLACK = 0.06  # the simulated time a plan takes before its table is published


def _records(at: float, load: float) -> dict[str, TargetHealth]:
    return {f"{t}@r1": TargetHealth(status="healthy", load=load, updated_at=at) for t in KNOWN}


class _Term:
    """One leader: its wall clock ``skew`` seconds off, its monotonic clock ``mono_off`` from real time."""

    def __init__(self, rnd: random.Random, real: float, skew: float, mono_off: float,
                 previous: RoutingTable | None, overrides: Overrides) -> None:
        self.skew, self.mono_off = skew, mono_off
        timing = Timing(debounce_seconds=rnd.choice([0.0, 0.1, 0.2]), step_seconds=1.0, silence_seconds=3.0)
        self.state = LeaderState(timing, KNOWN, gained_at=real + mono_off)
        self.state.table_observed(previous, real + mono_off)
        self.state.health_changed(_records(EPOCH + real + skew, 1000.0))
        self.state.overrides_changed(overrides)
        self.replanner = Replanner()

    def wall(self, real: float) -> float:
        return EPOCH + real + self.skew


def _schedule(seed: int) -> list[tuple[float, int]]:
    """(real time, ramp steps) of every table published with the ramp in it."""
    rnd = random.Random(seed)
    real = 0.0
    term = _Term(rnd, real, +30.0, 100.0, None, Overrides())
    evacuate_at = rnd.uniform(4.0, 8.0)
    handover_at = rnd.choice([None, evacuate_at + rnd.uniform(0.0, 3.0)])
    events = sorted(rnd.uniform(0.0, RUN) for _ in range(rnd.randint(20, 100)))
    overrides = Overrides()
    published: list[tuple[float, int]] = []
    last: RoutingTable | None = None
    for _ in range(10_000):  # bounded: a schedule takes a few hundred decisions
        if real >= RUN:
            break
        decision = term.state.next(term.wall(real), real + term.mono_off)
        if isinstance(decision, Wait):
            due = [decision.until - term.mono_off, *(e for e in events if e > real)]
            due += [t for t in (evacuate_at, handover_at) if t is not None and t > real]
            real = max(min(due), real + 1e-6)
            for e in [e for e in events if e <= real]:
                events.remove(e)
                if overrides.evacuations and rnd.random() < 0.2:
                    term.state.overrides_changed(overrides)  # a re-list: the same records again
                else:
                    term.state.health_changed(_records(term.wall(real), rnd.choice([900.0, 1000.0, 1100.0])))
            if not overrides.evacuations and real >= evacuate_at:
                # Written by a replica 30 s behind: 60 s behind this leader's wall clock.
                evacuation = Evacuation(region=GONE, mode="ramp", step=STEP, interval=INTERVAL,
                                        started_at=EPOCH + real - 30.0, actor="skewed")
                overrides = Overrides(evacuations=(evacuation,))
                term.state.overrides_changed(overrides)
            if handover_at is not None and real >= handover_at:
                handover_at = None
                real += rnd.uniform(0.0, 2.0)  # the lease runs out; the next leader reads the table in force
                term = _Term(rnd, real, -30.0, rnd.uniform(-50.0, 5000.0), last, overrides)
            continue
        assert isinstance(decision, Plan), decision
        table = term.replanner.plan(CONFIG, Observed(health=decision.health), decision.overrides,
                                    decision.previous, decision.now, leader="l", elapsed=decision.elapsed)
        unchanged = decision.previous is not None and table.same_routing(decision.previous)
        outcome = term.state.planned(table, unchanged)
        real += rnd.choice([0.0, 0.01, SLACK])
        if isinstance(outcome, Publish):
            assert term.state.published(True) is None
            last = table
            progress = (table.ramps or {}).get(GONE)
            if progress is not None:
                published.append((real, progress.steps))
    return published


@pytest.mark.parametrize("seed", range(40))
def test_no_schedule_of_events_or_skewed_clocks_hurries_a_ramp(seed: int) -> None:
    published = _schedule(seed)
    first: dict[int, float] = {}
    for at, steps in published:
        first.setdefault(steps, at)
    assert 1 in first and max(first) == round(1 / STEP), published  # the ramp ran to its end
    for steps, at in first.items():
        assert at - first[1] >= (steps - 1) * INTERVAL - SLACK, (steps, first)
