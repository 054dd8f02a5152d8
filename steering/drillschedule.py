"""Drill schedules: when the leader may start a drill on its own. Pure: time is passed in.

A schedule (``drills/schedules/<id>``) names a region, how often (``every``), a weekly window in UTC
(``Tue 14:00-16:00 UTC``, ``Mon-Fri 09:00-11:30 UTC``, ``daily 00:00-24:00 UTC``), blackout date ranges
(``2026-12-20..2027-01-03``, both days included, UTC) and the drill's own options. ``due`` says whether a
drill should start now: inside the window, outside every blackout, and ``every`` after the last start
less the window's length (so a drill that started late in one window is not pushed out of the next). The
runner starts at most one drill at a time whatever the schedules say (``drills/active``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from steering import limits

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY = (3600.0, 366 * 86400.0)
MAX_BLACKOUTS = 32
_WINDOW = re.compile(r"^\s*(?P<days>[A-Za-z]{3,5}(?:\s*[-,]\s*[A-Za-z]{3})*)\s+"
                     r"(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*-\s*(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*(?P<zone>[A-Za-z]+)?\s*$")
_BLACKOUT = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})\s*$")


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after 00:00 UTC, inclusive
    end: int  # exclusive, at most 24 * 60

    @property
    def minutes(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        days = "daily" if len(self.days) == 7 else ",".join(DAYS[d].title() for d in sorted(self.days))
        return f"{days} {self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d} UTC"

    def contains(self, now: float) -> bool:
        t = datetime.fromtimestamp(now, UTC)
        minute = t.hour * 60 + t.minute
        return t.weekday() in self.days and self.start <= minute < self.end


def _day(field_name: str, text: str) -> int:
    key = text.strip().lower()
    if key not in DAYS:
        raise ValueError(f"{field_name}: {limits.show(text)} is not a day (Mon..Sun)")
    return DAYS.index(key)


def parse_window(field_name: str, text: str) -> Window:
    """``Tue 14:00-16:00 UTC`` -> Window; ValueError naming ``field_name``."""
    m = _WINDOW.match(text or "")
    if m is None:
        raise ValueError(f"{field_name}: {limits.show(text)} is not DAYS HH:MM-HH:MM UTC (e.g. 'Tue 14:00-16:00 UTC')")
    if (m.group("zone") or "UTC").upper() != "UTC":
        raise ValueError(f"{field_name}: windows are in UTC, not {m.group('zone')}")
    spec = m.group("days").lower().replace(" ", "")
    if spec in ("daily", "every"):
        days = set(range(7))
    else:
        days = set()
        for part in spec.split(","):
            if part.count("-") > 1:
                raise ValueError(f"{field_name}: {limits.show(part)} is not a day or a range of days (Mon-Fri)")
            if "-" in part:
                a, b = (_day(field_name, x) for x in part.split("-"))
                days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
            else:
                days.add(_day(field_name, part))
    h1, m1, h2, m2 = (int(m.group(k)) for k in ("h1", "m1", "h2", "m2"))
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{field_name}: {limits.show(text)} has a time that is not HH:MM (00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end <= start:
        raise ValueError(f"{field_name}: the window ends before it starts (it may not cross midnight)")
    return Window(frozenset(days), start, end)


def parse_blackout(field_name: str, text: str) -> tuple[str, str]:
    """``2026-12-20..2027-01-03`` -> the two ISO dates; ValueError naming ``field_name``."""
    m = _BLACKOUT.match(text or "")
    if m is None:
        raise ValueError(f"{field_name}: {limits.show(text)} is not FIRST..LAST (e.g. 2026-12-20..2027-01-03)")
    try:
        first, last = date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2))
    except ValueError as exc:
        raise ValueError(f"{field_name}: {exc}") from None
    if last < first:
        raise ValueError(f"{field_name}: {text.strip()} ends before it starts")
    return first.isoformat(), last.isoformat()


def in_blackout(blackouts: tuple[tuple[str, str], ...], now: float) -> bool:
    today = datetime.fromtimestamp(now, UTC).date().isoformat()
    return any(first <= today <= last for first, last in blackouts)


@dataclass(frozen=True)
class Schedule:
    id: str
    region: str
    every: float  # seconds
    window: str  # as ``str(Window)``: parsed again where used
    reason: str
    blackouts: tuple[tuple[str, str], ...] = ()
    step: float = 0.25
    interval: float = 60.0
    hold: float = 600.0
    restore_step: float = 0.25
    restore_interval: float = 60.0
    guards: tuple[str, ...] = ()
    actor: str = ""
    created_at: float = 0.0
    last_started_at: float = 0.0
    last_drill: str = ""
    last_refusal: str = ""  # why the last attempt did not start (preflight), for ``schedule list``
    last_attempt_at: float = 0.0

    def due(self, now: float, retry_seconds: float = 60.0) -> bool:
        window = parse_window("window", self.window)
        if not window.contains(now) or in_blackout(self.blackouts, now):
            return False
        if self.last_attempt_at and now - self.last_attempt_at < retry_seconds:
            return False  # a refused attempt is retried, but not on every tick
        return not self.last_started_at or now - self.last_started_at >= self.every - window.minutes * 60

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["blackouts"] = [list(b) for b in self.blackouts]
        out["guards"] = list(self.guards)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")

        def num(name: str, bounds: tuple[float, float], default: float) -> float:
            return limits.number(name, data.get(name, default), bounds)

        window = str(parse_window("window", str(data.get("window", ""))))
        blackouts = data.get("blackouts", [])
        if not isinstance(blackouts, list) or len(blackouts) > MAX_BLACKOUTS:
            raise ValueError(f"blackouts: not a list of at most {MAX_BLACKOUTS}")
        parsed = tuple(parse_blackout(f"blackouts[{i}]", "..".join(map(str, b)) if isinstance(b, list) else "")
                       for i, b in enumerate(blackouts))
        guards = data.get("guards", [])
        if not isinstance(guards, list) or len(guards) > 16:
            raise ValueError("guards: not a list of at most 16")
        region = limits.text("region", data.get("region"), limits.MAX_ID)
        if not region:
            raise ValueError("region: missing")
        sid = limits.text("id", data.get("id"), 64)
        if not re.fullmatch(r"s-[0-9a-z]{1,40}", sid):
            raise ValueError(f"id: {limits.show(sid)} is not a schedule id")
        return cls(id=sid, region=region, every=num("every", EVERY, 7 * 86400.0), window=window,
                   reason=limits.clip(data.get("reason", ""), limits.MAX_REASON), blackouts=parsed,
                   step=num("step", limits.RAMP_STEP, 0.25), interval=num("interval", limits.RAMP_INTERVAL, 60.0),
                   hold=num("hold", (0.0, 7 * 86400.0), 600.0),
                   restore_step=num("restore_step", limits.RAMP_STEP, 0.25),
                   restore_interval=num("restore_interval", limits.RAMP_INTERVAL, 60.0),
                   guards=tuple(limits.clip(g, 200) for g in guards),
                   actor=limits.clip(data.get("actor", ""), limits.MAX_ACTOR),
                   created_at=num("created_at", limits.STARTED_AT, 0.0),
                   last_started_at=num("last_started_at", limits.STARTED_AT, 0.0),
                   last_drill=limits.clip(data.get("last_drill", ""), 64),
                   last_refusal=limits.clip(data.get("last_refusal", ""), limits.MAX_REASON),
                   last_attempt_at=num("last_attempt_at", limits.STARTED_AT, 0.0))
