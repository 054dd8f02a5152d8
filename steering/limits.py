"""Bounds on every number and string the control plane takes from outside: pure, no I/O.

The operator API, agent reports and the records read back from etcd are
checked against these, so one value from a client (NaN, 1e12, a megabyte
of text) is refused with a message naming the field instead of reaching
the planner. docs/operator-guide.md ("Limits") lists them; change both
together. Shared by the operator API, the report ingest and the model's
readers of stored records: add a bound here rather than a literal there.
"""

from __future__ import annotations

import math
from typing import Any

# ---- numbers: (lowest, highest), both inclusive
RAMP_STEP = (0.001, 1.0)  # share of a region's traffic per step: at least one of the 1000 weight units
RAMP_INTERVAL = (0.1, 86400.0)  # seconds between ramp steps: 100 ms to a day
STARTED_AT = (0.0, 1e11)  # unix seconds of a stored evacuation or restore (year 5138: far, but finite)
PIN_WEIGHT = (0, 1_000_000)  # one pinned weight before normalising to 1000
RATE = (0.0, 1e12)  # requests/s: capacity, load and geo_load of an agent report or a health record

# ---- strings: at most this many characters
MAX_REASON = 1024  # reason of an evacuation, restore, pin or unpin
MAX_ACTOR = 256  # who acted (a token name) as stored
MAX_ID = 253  # a region, site, geo, service or target id in a request (a DNS name at most)
MAX_REQUEST_ID = 128
MAX_AGENT_ID = 256
MAX_CHECK_NAME = 256  # a check's name in an agent report
MAX_CHECK_DETAIL = 4096  # a check's detail in an agent report (health records keep 120 of it)
MAX_CHECKS = 64  # checks in one agent report
MAX_CHECK_KIND = 16  # a check's kind in an agent report (http | tcp | grpc)
MAX_GEO_LOAD = 256  # entries of an agent report's geo_load (keys: MAX_ID)
MAX_HEALTH_RECORD_BYTES = 8192  # a health record as written to etcd (JSON); one from a valid ASCII report is < 4 KiB

# ---- counts
MAX_PIN_TARGETS = 1000  # targets in one pin
MAX_WHAT_IF = 1000  # entries of each list or map of a Plan (what-if) request


class LimitError(ValueError):
    """A value outside its bounds; ``field`` names it (``ramp.interval_seconds``), the message says why."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def show(value: Any, width: int = 40) -> str:
    """``value`` for an error message: its repr (control characters escaped), cut to ``width``."""
    if isinstance(value, str) and len(value) > width * 4:
        value = value[: width * 4]  # repr of a megabyte only to cut it: cut first
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def number(field: str, value: Any, bounds: tuple[float, float]) -> float:
    """``value`` as a float if it is a finite number within ``bounds``; else LimitError."""
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LimitError(field, f"{show(value)} is not a number")
    try:
        f = float(value)
    except OverflowError:  # an int beyond any float
        raise LimitError(field, f"{show(value)} is outside [{lo:g}, {hi:g}]") from None
    if not math.isfinite(f):
        raise LimitError(field, f"{show(value)} is not a finite number")
    if not lo <= f <= hi:
        raise LimitError(field, f"{f:g} is outside [{lo:g}, {hi:g}]")
    return f


def integer(field: str, value: Any, bounds: tuple[int, int]) -> int:
    """``value`` if it is an integer (not a bool) within ``bounds``; else LimitError."""
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitError(field, f"{show(value)} is not an integer")
    if value < lo:
        raise LimitError(field, f"{show(value)} must be >= {lo}")
    if value > hi:
        raise LimitError(field, f"{show(value)} must be <= {hi}")
    return value


def text(field: str, value: Any, max_len: int) -> str:
    """``value`` if it is a string of at most ``max_len`` characters; else LimitError (not echoing it)."""
    if not isinstance(value, str):
        raise LimitError(field, f"{show(value)} is not a string")
    if len(value) > max_len:
        raise LimitError(field, f"{len(value)} characters; at most {max_len}")
    return value


def clip(value: Any, max_len: int) -> str:
    """A stored string cut to ``max_len`` (for text that only explains, where cutting beats refusing)."""
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= max_len else s[: max_len - 1] + "…"
