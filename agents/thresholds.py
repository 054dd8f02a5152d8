"""Rise and fall: the status changes only after a streak of contrary results.

Pure (no I/O, no clock), in the sans-I/O style: feed it one result per probe
round and read the status. A healthy site turns unhealthy after ``fall``
consecutive failed rounds; an unhealthy one turns healthy after ``rise``
consecutive good rounds. Any result that agrees with the current status
resets the streak, so flapping never changes the status.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    rise: int
    fall: int

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"rise and fall must be at least 1, got rise={self.rise} fall={self.fall}")


@dataclass(frozen=True)
class State:
    healthy: bool
    streak: int = 0  # consecutive results that contradict ``healthy``

    def step(self, ok: bool, thresholds: Thresholds) -> State:
        if ok == self.healthy:
            return State(self.healthy, 0)
        streak = self.streak + 1
        needed = thresholds.fall if self.healthy else thresholds.rise
        if streak >= needed:
            return State(ok, 0)
        return State(self.healthy, streak)


def run(results: list[bool], thresholds: Thresholds, initial: State) -> list[State]:
    """The state after each result (convenient for tests and replay)."""
    out = []
    state = initial
    for ok in results:
        state = state.step(ok, thresholds)
        out.append(state)
    return out
