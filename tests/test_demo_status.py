"""The demo's change lines (pure): what ``steering demo`` prints, one line per change, when not on a terminal."""

from __future__ import annotations

import itertools

from steering.config import load_config
from steering.controller import eventdiff
from steering.demo.status import events, route_changes
from steering.model import Observed, Overrides, TargetHealth
from steering.planner import plan
from steering.table import RoutingTable
from tests.support.paths import EXAMPLE_CONFIG

CONFIG = load_config(EXAMPLE_CONFIG)
NOW = 1_700_000_000.0


def _health(unhealthy: str = "") -> Observed:
    targets = list(eventdiff.targets_of(CONFIG))
    return Observed(health={t: TargetHealth(status="unhealthy" if t == unhealthy else "healthy", load=1000.0,
                                            updated_at=NOW) for t in targets})


def _ramp() -> list[RoutingTable]:
    """A region fails, then recovers: the planner's tables until the return ramp stops moving."""
    down = plan(CONFIG, _health("us-east-1"), Overrides(), None, NOW, leader="t")
    tables = [down]
    for _ in range(40):
        nxt = plan(CONFIG, _health(), Overrides(), tables[-1], NOW, leader="t")
        if nxt.same_routing(tables[-1]):
            break
        tables.append(nxt)
    return tables


def test_a_ramp_is_announced_and_its_end_too() -> None:
    tables = _ramp()
    assert any(t.converging for t in tables) and not tables[-1].converging
    lines = [line for a, b in itertools.pairwise(tables) for line in events(a, b)]
    assert any(line.endswith(": ramping (one step per policy.step_seconds)") for line in lines), lines
    assert lines[-1] == f"v{tables[-1].version}: converged", lines


def test_a_first_table_says_whether_it_is_still_ramping() -> None:
    """A demo that starts watching late sees a ramp already done: its first line must say so, as nothing
    later will."""
    tables = _ramp()
    ramping = next(t for t in tables if t.converging)
    [first] = events(None, ramping)
    assert first.startswith(f"v{ramping.version}: first table, serving ") and first.endswith("; ramping"), first
    [first] = events(None, tables[-1])
    assert first.endswith("; converged") and "us-east-1" in first, first
    # and every service and geo is named once, for a first table
    names = route_changes(None, tables[-1])
    assert len(names) == sum(len(s.geos) for s in tables[-1].services.values())
