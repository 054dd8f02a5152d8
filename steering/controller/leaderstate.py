"""When the leader plans and publishes: a state machine without I/O (docs/architecture.md §9).

Like h11's ``_state.py``: every rule about *when* lives here, and nothing here
reads a clock, sleeps or talks to etcd. The async shell (``leader.py``) feeds it
events with the time they happened and carries out its decisions. One
``LeaderState`` per term of leadership: it is made when the term begins.

Events in: ``table_observed`` (the table in force when the term began),
``health_changed``, ``overrides_changed``, ``planned`` (a plan's result),
``published`` (whether the sinks took it), ``leadership_lost``.
Decisions out: ``next(now, monotonic)`` answers ``Wait(until)``, ``Plan(...)``
or ``Resign``; ``planned`` answers ``Publish(table)`` or ``Skip``; ``published``
answers ``Resign`` when a sink refused (another replica leads).

The rules, every interval on the monotonic clock (the wall clock ``now`` only
becomes the plan's ``generated_at``):

- **Ready**: nothing is planned before both health and overrides have been read
  once: never from a half-read state.
- **Debounce**: after a change, wait ``controller.debounce_seconds`` from when
  the leader is next idle, gathering a burst into one plan; later changes do
  not extend the wait. An operator action is planned at once, also when it
  lands during a debounce (which it then ends).
- **Tick**: with no change, plan anyway every ``policy.step_seconds`` (ramps
  move on the clock), when a deferred step is due, and just after the start-up
  grace ends.
- **Publish**: not when the routing is unchanged, unless an operator action not
  yet published is in the plan (a new version is how steerctl knows a leader
  planned with it). At once for the first table, an operator action and an
  **emergency** (a target stopped serving, or ``fail_open`` flipped);
  otherwise at most one table per ``step_seconds`` (**steps**).
- **Start-up grace**: for the first ``policy.silence_seconds`` of the term, a
  site without a record is unknown, not silent (unless the table in force had
  it silent): agents are still connecting (``healthmerge``).
- **Ramps**: each plan is told the monotonic seconds since the table in force
  was planned, or since this term read it if another leader wrote it
  (``elapsed``; ``steering.ramps``).
- **Resign**: once leadership is lost, or a sink refuses, the term is over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import is_not
from typing import Literal

from steering.config import Config
from steering.controller.healthmerge import Merger
from steering.controller.vantage import Vantage, lost_reach
from steering.model import Overrides, TargetHealth
from steering.table import RoutingTable


@dataclass(frozen=True)
class Timing:
    debounce_seconds: float  # controller.debounce_seconds
    step_seconds: float  # policy.step_seconds
    silence_seconds: float  # policy.silence_seconds: also the start-up grace

    @classmethod
    def of(cls, config: Config) -> Timing:
        return cls(debounce_seconds=config.controller.debounce_seconds, step_seconds=config.policy.step_seconds,
                   silence_seconds=config.policy.silence_seconds)


# ---- decisions

@dataclass(frozen=True)
class Wait:
    """Nothing to do before monotonic ``until``, unless an event comes first."""

    until: float


@dataclass(frozen=True)
class Plan:
    """Plan now with these inputs (``planner.plan(..., previous, now, elapsed=elapsed)``), then call ``planned``."""

    health: dict[str, TargetHealth]  # merged: one per known target
    overrides: Overrides
    previous: RoutingTable | None
    now: float  # wall clock: the table's generated_at
    elapsed: float  # monotonic seconds since ``previous`` was planned (or read, if another leader wrote it)


@dataclass(frozen=True)
class Publish:
    """Hand ``table`` to every sink in order, then call ``published``."""

    table: RoutingTable


@dataclass(frozen=True)
class Skip:
    """The plan is not published: the routing is unchanged, or a step is not due before ``due``."""

    reason: Literal["unchanged", "paced"]
    due: float | None = None


@dataclass(frozen=True)
class Resign:
    """The term is over: stop planning and publishing."""

    reason: str


@dataclass(frozen=True)
class _Flight:
    """A plan handed out and not yet answered for."""

    at: float  # monotonic time it was decided
    operator: int  # the operator changes it includes (a count)


class LeaderState:
    def __init__(self, timing: Timing, known: Sequence[str], gained_at: float, vantage: Vantage | None = None,
                 ) -> None:
        """``gained_at``: the monotonic time leadership was gained; ``known``: every region and site id;
        ``vantage``: the config's reporters and quorum (targets with observers: ``healthmerge``)."""
        self.timing = timing
        self.known = tuple(known)
        self.vantage = vantage
        self.started = gained_at
        self.previous: RoutingTable | None = None
        self._observed = False
        self._planned_at = gained_at  # when ``previous`` was planned, or read: ``elapsed`` counts from it
        self._records: Mapping[str, TargetHealth] = {}
        self._overrides = Overrides()
        self._health_read = self._overrides_read = False
        # Overrides snapshots after the first are operator actions (or a re-list, which counts the same);
        # counted rather than flagged, so one arriving while a plan runs is not lost when that plan publishes.
        self._operator_seen = 0
        self._operator_published = 0
        self._dirty = False
        self._debounce_until: float | None = None
        self._tick_until: float | None = None
        self._last_step = 0.0  # when the last table was published
        self._due = 0.0  # a deferred step is due then (0: none)
        self._flight: _Flight | None = None
        self._publishing: tuple[RoutingTable, _Flight] | None = None
        self._over: str | None = None
        self._before: tuple[RoutingTable | None, dict[str, str]] | None = None  # ``previous``'s statuses
        self._merger = Merger()  # the records' merge, per plan, redoing only the sites whose records changed

    # ---- events

    def table_observed(self, table: RoutingTable | None, monotonic: float) -> None:
        """The table in force as the term begins. Another leader's counts as planned when read: the time
        before is not this leader's to measure."""
        self.previous = table
        self._planned_at = monotonic
        self._observed = True

    def health_changed(self, records: Mapping[str, TargetHealth]) -> None:
        """Every health record now, keyed ``site@replica``."""
        self._records = records
        self._health_read = True
        self._dirty = True

    def overrides_changed(self, overrides: Overrides) -> None:
        if self._overrides_read:
            self._operator_seen += 1
        self._overrides = overrides
        self._overrides_read = True
        self._dirty = True

    def leadership_lost(self, reason: str = "leadership lost") -> Resign:
        if self._over is None:
            self._over = reason
        return Resign(self._over)

    # ---- decisions

    @property
    def ready(self) -> bool:
        return self._observed and self._health_read and self._overrides_read

    @property
    def operator_pending(self) -> bool:
        """An operator action no published table has been planned with yet."""
        return self._operator_seen > self._operator_published

    def next(self, now: float, monotonic: float) -> Wait | Plan | Resign:
        """What to do at ``monotonic`` (``now``: the wall clock, for the plan). Call again after every event,
        after a ``Wait`` ends, and after each plan has been answered for (``planned``/``published``)."""
        if self._over is not None:
            return Resign(self._over)
        if self._flight is not None or self._publishing is not None:
            raise RuntimeError("a plan is in flight: answer it with planned()/published() first")
        if self._tick_until is None:
            self._tick_until = monotonic + self._tick(monotonic)
        if self._dirty:
            if self._debounce_until is None:
                self._debounce_until = monotonic + self.timing.debounce_seconds
            # An operator action is planned at once: the debounce gathers bursts of health reports, and an
            # operator waiting on `steerctl evacuate --now` is not one (issue 18: evacuate -> answer p99 0.3 s)
            if monotonic < self._debounce_until and not self.operator_pending:
                return Wait(self._debounce_until)
        elif monotonic < self._tick_until:
            return Wait(self._tick_until)
        # Due: a change has waited out its debounce, or the tick came. Either way the wait starts over.
        self._dirty = False
        self._debounce_until = self._tick_until = None
        if not self.ready:
            return self.next(now, monotonic)
        previous = self.previous
        after_grace = monotonic - self.started >= self.timing.silence_seconds
        before: dict[str, str] | None = None
        if not after_grace:  # only the grace period reads the last table's statuses (``healthmerge._absent``)
            if self._before is None or self._before[0] is not previous:  # once per table
                self._before = (previous, {t: st.health for t, st in [
                    *(previous.regions.items() if previous else ()), *(previous.sites.items() if previous else ())]})
            before = self._before[1]
        else:
            self._before = None
        health = self._merger.merge(self._records, self.known, after_grace, before, self.vantage)
        self._flight = _Flight(at=monotonic, operator=self._operator_seen)
        return Plan(health=health, overrides=self._overrides, previous=previous, now=now,
                    elapsed=monotonic - self._planned_at)

    def planned(self, table: RoutingTable, unchanged: bool) -> Publish | Skip:
        """The plan's result; ``unchanged``: it routes as the table in force does."""
        flight, self._flight = self._flight, None
        if flight is None:
            raise RuntimeError("planned() without a Plan")
        operator = flight.operator > self._operator_published
        if unchanged and not operator:
            return Skip("unchanged")
        step = self.timing.step_seconds
        urgent = self.previous is None or operator or has_emergency(self.previous, table) or (
            self.vantage is not None and self.vantage.per_geo and lost_reach(self.previous, table))
        if not urgent and flight.at - self._last_step < step:
            # Non-emergency moves (ramps, spill, recovery) go one step per step_seconds.
            self._due = self._last_step + step
            return Skip("paced", due=self._due)
        self._publishing = (table, flight)
        return Publish(table)

    def published(self, ok: bool) -> Resign | None:
        """Whether every sink took the table; a refusal means another replica leads (Resign)."""
        publishing, self._publishing = self._publishing, None
        if publishing is None:
            raise RuntimeError("published() without a Publish")
        if not ok:
            return self.leadership_lost("publish refused: no longer the leader")
        table, flight = publishing
        self.previous = table
        self._last_step = self._planned_at = flight.at
        self._due = 0.0
        self._operator_published = max(self._operator_published, flight.operator)
        return None

    def _tick(self, monotonic: float) -> float:
        """How long to wait without events: ramps, deferred steps and the start-up grace end on the clock."""
        tick = self.timing.step_seconds
        grace_left = self.started + self.timing.silence_seconds - monotonic
        if grace_left > 0:
            tick = min(tick, grace_left + 0.05)
        if self._due:
            tick = min(tick, self._due - monotonic + 0.01)
        return max(0.05, tick)


def has_emergency(before: RoutingTable, after: RoutingTable) -> bool:
    """A target stopped serving (health or evacuation): that change must not wait for the step timer."""
    for old, new in ((before.regions, after.regions), (before.sites, after.sites)):
        # The planner hands an unchanged target's state on as the same object: only the others are read.
        for t, st in compress(new.items(), map(is_not, new.values(), map(old.get, new))):
            was = old.get(t)
            if was is not None and was.serving and not st.serving:
                return True
    return before.fail_open != after.fail_open
