"""Planned utilization over the last hour, as this replica saw the tables (``GET /api/v1/utilization``).

The console charts each region's and site's planned load against capacity.
etcd keeps only the last few tables, so each replica remembers what it
followed: one sample per new table version, and one every ``every`` seconds
while the table stays the same (a flat line is data too). Bounded by age and
by count; a replica that restarts starts an empty chart (said in
docs/console.md). Pure: the caller feeds tables and the time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from steering.table import RoutingTable

WINDOW = 3600.0
EVERY = 10.0


@dataclass(frozen=True)
class Sample:
    time: float
    version: int
    utilization: dict[str, float | None]  # region or site -> planned load / capacity (None: no capacity)

    def to_json(self) -> dict[str, object]:
        return {"time": self.time, "version": self.version, "utilization": self.utilization}


class UtilizationHistory:
    def __init__(self, window: float = WINDOW, every: float = EVERY, max_samples: int = 4000) -> None:
        self.window = window
        self.every = every
        self._samples: deque[Sample] = deque(maxlen=max_samples)

    def add(self, table: RoutingTable, now: float) -> bool:
        """Record ``table`` at ``now`` unless the last sample is of the same version and recent."""
        last = self._samples[-1] if self._samples else None
        if last is not None and last.version == table.version and now - last.time < self.every:
            return False
        util: dict[str, float | None] = {}
        for states in (table.regions, table.sites):
            for target, st in states.items():
                u = st.utilization
                util[target] = u if u is not None and math.isfinite(u) else None
        self._samples.append(Sample(now, table.version, util))
        self._expire(now)
        return True

    def since(self, now: float, seconds: float) -> list[Sample]:
        """Samples of the last ``seconds`` (at most the window), oldest first."""
        self._expire(now)
        start = now - min(seconds, self.window)
        return [s for s in self._samples if s.time >= start]

    def _expire(self, now: float) -> None:
        while self._samples and self._samples[0].time < now - self.window:
            self._samples.popleft()
