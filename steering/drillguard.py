"""Drill guards: small expressions over the live state that abort a drill when true. Pure: no I/O.

Grammar (one guard; several ``--abort-if`` are OR'ed, docs/drills.md)::

    guard  := atom [ op number ]        a bare atom is true when it is non-zero (``fail_open``)
    atom   := NAME | NAME "(" ID ")"
    op     := ">" | ">=" | "<" | "<=" | "==" | "!="
    number := digits [ "." digits ] [ "e" [sign] digits ] [ "%" ]   85% is 0.85

Names: ``max_utilization`` (the highest planned utilization of any serving region),
``utilization(REGION)`` (that region's planned utilization; 0 when it does not serve),
``unhealthy_regions`` (regions unhealthy or silent), ``fail_open`` (1 while the table fails open).
Agents report no error rates today, so ``error_rate(REGION)`` is refused naming that.

``parse`` raises ``GuardError`` (a ``ValueError``) with one line naming the problem and never anything
else, whatever the text; ``str(parse(s))`` parses back to the same guard.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

MAX_GUARD = 200  # characters of one guard expression
MAX_GUARDS = 16  # guards on one drill
NUMBER_BOUNDS = (0.0, 1e9)

OPS = (">=", "<=", "==", "!=", ">", "<")
NAMES = ("max_utilization", "unhealthy_regions", "fail_open")
FUNCTIONS = ("utilization",)
_UNSUPPORTED = {"error_rate": "agents report no error rates yet"}
# A word is a name or a region id (``us-east-1``); which one it must be is checked by position.
_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?)|(?P<word>[A-Za-z_][A-Za-z0-9._:-]*)|(?P<op>>=|<=|==|!=|>|<)"
                    r"|(?P<punct>[()]))")


class GuardError(ValueError):
    """A guard that does not parse, or names something unknown: one line."""


@dataclass(frozen=True)
class Guard:
    name: str
    arg: str = ""  # the region of utilization(REGION)
    op: str = ""  # empty: true when non-zero
    threshold: float = 0.0

    @property
    def atom(self) -> str:
        return f"{self.name}({self.arg})" if self.arg else self.name

    def __str__(self) -> str:
        if not self.op:
            return self.atom
        t = self.threshold
        shown = str(int(t)) if t.is_integer() and abs(t) < 1e15 else repr(t)  # both parse back to ``t``
        return f"{self.atom} {self.op} {shown}"


@dataclass(frozen=True)
class Sample:
    """The live state guards are evaluated on (``sample`` builds it from a table and health)."""

    utilization: Mapping[str, float] = field(default_factory=dict)  # planned, per region (0: not serving)
    unhealthy_regions: int = 0
    fail_open: bool = False


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            shown = text[pos:].strip()[:20]
            raise GuardError(f"unexpected {shown!r} at character {pos + 1}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse(text: str, regions: Collection[str] | None = None) -> Guard:
    """One guard; ``regions``: the known region ids (None: any id is accepted)."""
    if not isinstance(text, str):
        raise GuardError("not text")
    if len(text) > MAX_GUARD:
        raise GuardError(f"{len(text)} characters; at most {MAX_GUARD}")
    if not text.strip():
        raise GuardError("empty")
    toks = _tokens(text)
    i = 0

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise GuardError("ends too early")
        i += 1
        return toks[i - 1]

    kind, name = take()
    if kind != "word":
        raise GuardError(f"expected a name ({', '.join(NAMES + FUNCTIONS)}), got {name!r}")
    if name in _UNSUPPORTED:
        raise GuardError(f"{name}: {_UNSUPPORTED[name]}")
    arg = ""
    if name in FUNCTIONS:
        if take() != ("punct", "("):
            raise GuardError(f"{name}: expected '(' and a region")
        k, arg = take()
        if k != "word":
            raise GuardError(f"{name}: expected a region, got {arg!r}")
        if take() != ("punct", ")"):
            raise GuardError(f"{name}({arg}: expected ')'")
        if regions is not None and arg not in regions:
            raise GuardError(f"{name}({arg}): unknown region {arg!r} (known: {', '.join(sorted(regions))})")
    elif name not in NAMES:
        raise GuardError(f"unknown name {name!r} (known: {', '.join(NAMES + FUNCTIONS)})")
    if i == len(toks):
        return Guard(name, arg)
    k, op = take()
    if k != "op":
        raise GuardError(f"expected a comparison ({', '.join(OPS)}) after {name}, got {op!r}")
    k, num = take()
    if k != "num":
        raise GuardError(f"expected a number after {op}, got {num!r}")
    value = float(num[:-1]) / 100 if num.endswith("%") else float(num)
    if not (math.isfinite(value) and NUMBER_BOUNDS[0] <= value <= NUMBER_BOUNDS[1]):
        raise GuardError(f"{num}: out of range {NUMBER_BOUNDS[0]:g}..{NUMBER_BOUNDS[1]:g}")
    if i != len(toks):
        raise GuardError(f"unexpected {toks[i][1]!r} after the number")
    return Guard(name, arg, op, value)


def value(guard: Guard, s: Sample) -> float:
    """The guard's left-hand side on ``s``."""
    if guard.name == "max_utilization":
        return max(s.utilization.values(), default=0.0)
    if guard.name == "utilization":
        return s.utilization.get(guard.arg, 0.0)
    if guard.name == "unhealthy_regions":
        return float(s.unhealthy_regions)
    if guard.name == "fail_open":
        return 1.0 if s.fail_open else 0.0
    raise AssertionError(f"unknown guard name {guard.name}")  # parse admits no other


def tripped(guard: Guard, v: float) -> bool:
    t = guard.threshold
    return {"": v != 0, ">": v > t, ">=": v >= t, "<": v < t, "<=": v <= t, "==": v == t, "!=": v != t}[guard.op]


def first_tripped(guards: tuple[Guard, ...], s: Sample) -> tuple[Guard, float] | None:
    for g in guards:
        v = value(g, s)
        if tripped(g, v):
            return g, v
    return None
