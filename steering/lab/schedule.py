"""The history run's seeded schedule (``steering lab history``), computed without touching the system.

Faults come as episodes: a region partitioned from all others, or one of its
components (controller, dns, etcd, agent) killed; each ends (heal, restart)
before the run does. Episodes may overlap, but never beyond what the
deployment is built to bear (``bearable``): etcd members out of reach at most
the quorum's slack, at most one region silent (its agent dead or it cut off),
one controller left outside the cut regions, one episode per region. Operator
actions come as pairs (evacuate then restore a region; pin then unpin a geo),
one pair at a time, so at most one region is evacuated while at most one is
silent: some region can always serve.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

FAULT_COMPONENTS = ("controller", "dns", "etcd", "agent")
MIN_EPISODE, MAX_EPISODE = 4.0, 12.0  # seconds a fault lasts
MIN_GAP, MAX_GAP = 1.0, 4.0  # seconds between episode starts
TAIL = 2.0  # every episode ends this long before the run does
TIMEOUT_RETRY_SHARE = 0.3  # actions whose first attempt gets a deadline too short to answer in


@dataclass(frozen=True)
class Episode:
    start: float
    end: float
    region: str
    kind: str  # "partition" or a component killed

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "region": self.region, "kind": self.kind}


@dataclass(frozen=True)
class Action:
    kind: str  # evacuate | restore | pin | unpin
    region: str = ""
    service: str = ""
    geo: str = ""
    weights: tuple[tuple[str, int], ...] = ()
    short_first_deadline: bool = False  # the first attempt times out by design: its retry uses the same id


def silences(kind: str) -> bool:
    """Whether the episode makes its region silent to the control plane (health leaves answers)."""
    return kind in ("partition", "agent")


def bearable(active: list[Episode], regions: int) -> bool:
    """Whether these episodes together stay within what the deployment bears."""
    if len({e.region for e in active}) != len(active):
        return False
    etcd_out = sum(1 for e in active if e.kind in ("partition", "etcd"))
    silent = sum(1 for e in active if silences(e.kind))
    cut = {e.region for e in active if e.kind == "partition"}
    dead_controllers = {e.region for e in active if e.kind == "controller"}
    controllers_left = regions - len(cut | dead_controllers)
    return etcd_out <= (regions - 1) // 2 and silent <= 1 and controllers_left >= 1


def active_at(episodes: list[Episode], t: float) -> list[Episode]:
    return [e for e in episodes if e.start <= t < e.end]


def fault_schedule(seed: int, duration: float, regions: list[str]) -> list[Episode]:
    """Episodes in start order, all ending by ``duration - TAIL``; the same for the same arguments."""
    rng = random.Random(seed)
    kinds = ("partition", *FAULT_COMPONENTS)
    out: list[Episode] = []
    t = rng.uniform(MIN_GAP, MAX_GAP)
    while t + MIN_EPISODE <= duration - TAIL:
        end = min(t + rng.uniform(MIN_EPISODE, MAX_EPISODE), duration - TAIL)
        for _ in range(8):  # a few draws; when none fits next to what runs, no episode starts now
            ep = Episode(t, end, rng.choice(regions), rng.choice(kinds))
            overlapping = [e for e in out if e.start < ep.end and ep.start < e.end]
            # checked at every start inside the new episode: the set of episodes changes only there
            if all(bearable(active_at([*overlapping, ep], s), len(regions))
                   for s in {ep.start, *(e.start for e in overlapping if ep.start <= e.start < ep.end)}):
                out.append(ep)
                break
        t += rng.uniform(MIN_GAP, MAX_GAP)
    return out


def action_pairs(seed: int, regions: list[str], service: str, geos: list[str]) -> list[Action]:
    """An endless-enough list of operator actions (pairs), the same for the same arguments."""
    rng = random.Random(seed ^ 0x5EED)
    out: list[Action] = []
    for _ in range(200):
        short = rng.random() < TIMEOUT_RETRY_SHARE
        if rng.random() < 0.5 or not geos or len(regions) < 2:
            r = rng.choice(regions)
            out += [Action("evacuate", region=r, short_first_deadline=short),
                    Action("restore", region=r, short_first_deadline=rng.random() < TIMEOUT_RETRY_SHARE)]
        else:
            geo = rng.choice(geos)
            two = rng.sample(regions, 2)
            weights = ((two[0], rng.randint(1, 999)), (two[1], 1000))
            out += [Action("pin", service=service, geo=geo, weights=weights, short_first_deadline=short),
                    Action("unpin", service=service, geo=geo,
                           short_first_deadline=rng.random() < TIMEOUT_RETRY_SHARE)]
    return out


MAX_SPAN_SECONDS = 86_400.0


def parse_span(text: str, what: str) -> float:
    """``60s``, ``5m``, ``90`` (seconds) -> seconds, in (0, a day]; ValueError naming ``what``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "")
    if not m:
        raise ValueError(f"{what}: {text!r} is not a duration like 60s or 5m")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not 0 < seconds <= MAX_SPAN_SECONDS:
        raise ValueError(f"{what}: {text!r} is not between 0 and a day")
    return seconds
