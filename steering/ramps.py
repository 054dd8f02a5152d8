"""Ramp progress: which step an evacuation or restore ramp is at, for one plan. Pure.

A ramp moves one step every ``interval`` seconds. The step must not depend on the leader's wall clock
agreeing with the clock that wrote the record's ``started_at``, nor with the previous leader's: a leader
30 s behind once published a step backwards, and one 60 s ahead finished a restore at once. So the
table carries each ramp's progress (``RampProgress``: steps taken, seconds waited towards the next),
and a plan continues from the previous table's by the seconds that passed since that table was
planned, as the leader measured them on its monotonic clock (``elapsed``):

- steps never go down, and a step is taken only after ``interval`` seconds of measured time, so a ramp
  of n steps completes no sooner than (n - 1) x interval after its first table;
- a leader that takes over counts from when it read the table (the time before is not its to measure),
  so a leader change can delay a ramp by that gap, never hurry it;
- a ramp the previous table does not have starts at step 1 then: the record's ``started_at`` is only
  its identity (a rewritten record starts over).

Without ``elapsed`` (``steerctl plan``, previews, tests: one clock for everything) the caller's ``now``
is trusted with the records': the step is the record's rule, ``1 + (now - started_at) // interval``,
never below the previous table's. A previous table from before progress was kept has no "ramps": a
leader continues a ramp older than it from where that rule put it at that table's time.
"""

from __future__ import annotations

import math

from steering.model import ramp_steps
from steering.table import RampProgress, RoutingTable


def progress(kind: str, region: str, started_at: float, step: float, interval: float,
             previous: RoutingTable | None, now: float, elapsed: float | None) -> RampProgress:
    """The ramp's progress at this plan; ``elapsed`` is the measured seconds since ``previous`` was planned."""
    known = previous.ramps if previous is not None else None
    before = known.get(region) if known else None
    if before is not None and (before.kind != kind or before.started_at != started_at):
        before = None  # the region's earlier ramp: this one starts over
    if elapsed is None:
        steps, waited = _by_record(started_at, interval, now)
        if before is not None and before.steps > steps:
            steps, waited = before.steps, before.waited
    else:
        since = elapsed if math.isfinite(elapsed) and elapsed > 0 else 0.0
        if before is not None:
            steps, waited = before.steps, before.waited + since
        elif previous is not None and known is None and started_at <= previous.generated_at:
            # A table from before progress was kept showed the record's rule at its own time.
            steps, waited = _by_record(started_at, interval, previous.generated_at)
            waited += since
        else:
            steps, waited = 1, 0.0  # first seen by this leader now: the first step, and its clock starts
    total = ramp_steps(step)
    more = math.floor(waited / interval)
    if steps + more >= total:
        return RampProgress(kind, started_at, total, 0.0)
    # Float rounding must never leave "waited" a full interval (a step owed) or below zero.
    waited = min(max(0.0, waited - more * interval), math.nextafter(interval, 0.0))
    return RampProgress(kind, started_at, steps + more, waited)


def _by_record(started_at: float, interval: float, now: float) -> tuple[int, float]:
    """(steps, seconds into the current step) by the record's clock at ``now``: the first step at once."""
    passed = max(0.0, now - started_at)
    whole = math.floor(passed / interval)
    return 1 + whole, passed - whole * interval
