"""A per-subject budget on events, so a flapping site cannot flood etcd. Pure: time comes in.

Each subject (``site/oc-nyc-1``, ``geo/europe``, ...) may have at most
``budget`` events written in any ``window`` seconds (a sliding window: for
every written event, the events of its subject written in the ``window``
seconds up to it number at most ``budget``). Events beyond it are not written
but counted; as soon as the subject has room again (its next event, or
``flush``), one ``flapping`` event says how many were suppressed and of which
kinds, and takes a place in the budget like any other. So every event given
to ``admit`` is either returned, or counted in exactly one ``flapping``
event (or still pending in ``pending``): the property tests check both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from steering import event as ev
from steering.event import Event


@dataclass
class _Subject:
    sent: deque[float] = field(default_factory=deque)  # times of the events written within the window
    suppressed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first: float = 0.0  # wall time of the first suppressed event
    last: float = 0.0  # ... and of the last
    replica: str = ""


class RateLimiter:
    def __init__(self, budget: int, window: float = 60.0) -> None:
        if budget < 1 or not window > 0:
            raise ValueError("budget: at least 1 event per window; window: positive")
        self.budget = budget
        self.window = window
        self.suppressed_total = 0  # every event ever suppressed
        self._subjects: dict[str, _Subject] = {}
        self._now = float("-inf")

    def _clock(self, now: float) -> float:
        self._now = max(self._now, now)  # never backwards, whatever the caller's clock did
        return self._now

    def _room(self, s: _Subject, now: float) -> bool:
        while s.sent and s.sent[0] <= now - self.window:
            s.sent.popleft()
        return len(s.sent) < self.budget

    def _summary(self, name: str, s: _Subject, now: float) -> Event:
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(s.kinds.items()))
        e = Event(time=s.last, kind=ev.FLAPPING, severity="warning", subject=name,
                  message=f"{name} is flapping: {s.suppressed} event(s) suppressed ({kinds}) "
                          f"beyond {self.budget} per {self.window:g}s",
                  details={"suppressed": s.suppressed, "kinds": dict(sorted(s.kinds.items())), "first": s.first,
                           "last": s.last, "budget": self.budget, "window_seconds": self.window},
                  replica=s.replica)
        s.sent.append(now)
        s.suppressed, s.kinds = 0, {}
        return e

    def admit(self, events: Iterable[Event], now: float) -> list[Event]:
        """The events to write now, in order (a ``flapping`` summary before a subject's first event once it
        has room again); the others are counted (``suppressed_total``, and the subject's next summary).
        ``now``: a monotonic clock."""
        now = self._clock(now)
        out: list[Event] = []
        for e in events:
            s = self._subjects.setdefault(e.subject, _Subject())
            if s.suppressed and self._room(s, now):
                out.append(self._summary(e.subject, s, now))
            if self._room(s, now):
                s.sent.append(now)
                out.append(e)
                continue
            if not s.suppressed:
                s.first = e.time
            s.suppressed += 1
            s.kinds[e.kind] = s.kinds.get(e.kind, 0) + 1
            s.last = max(s.last, e.time)
            s.replica = e.replica
            self.suppressed_total += 1
        return out

    def flush(self, now: float) -> list[Event]:
        """Summaries for the subjects that suppressed events and have room again; forgets quiet subjects."""
        now = self._clock(now)
        out: list[Event] = []
        for name in sorted(self._subjects):
            s = self._subjects[name]
            room = self._room(s, now)
            if s.suppressed and room:
                out.append(self._summary(name, s, now))
            elif not s.suppressed and not s.sent:
                del self._subjects[name]
        return out

    @property
    def pending(self) -> int:
        """Events suppressed and not yet reported in a summary."""
        return sum(s.suppressed for s in self._subjects.values())
