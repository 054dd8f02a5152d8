"""Ramp progress kept in the table (issue 11, finding 6): its JSON shape, tables written before it, the
leader's rule for a ramp it continues or starts, and the restore janitor deciding by the table (real etcd).

The property over skewed clocks and leader changes is in ``test_planner_properties``; the real processes
under libfaketime are in ``test_clock_skew``.
"""

from __future__ import annotations

import json

import pytest

from steering.config import load_config
from steering.controller.api import clean_finished_restores
from steering.etcdproc import EtcdCluster
from steering.model import Evacuation, Observed, Overrides, Restore, TargetHealth
from steering.planner import plan
from steering.store import Store
from steering.table import RoutingTable
from tests.support import EXAMPLE_CONFIG
from tests.support.controller import make_config

CONFIG = load_config(EXAMPLE_CONFIG)
HEALTH = Observed(health={r.id: TargetHealth(status="healthy", load=1000.0) for r in CONFIG.regions})
T0 = 1_700_000_000.0
EVAC = Evacuation(region="eu-west-1", mode="ramp", step=0.25, interval=30.0, started_at=T0, reason="test")
RAMP = Overrides(evacuations=(EVAC,))


def left(table: RoutingTable) -> str:
    return table.regions["eu-west-1"].evacuation


def test_a_table_carries_its_ramps_progress_and_reads_back_the_same() -> None:
    table = plan(CONFIG, HEALTH, RAMP, None, T0 + 31.0)
    assert table.ramps is not None and table.ramps["eu-west-1"].steps == 2
    assert table.ramps["eu-west-1"].waited == pytest.approx(1.0)
    assert RoutingTable.from_json(table.to_json()).to_json() == table.to_json()
    assert plan(CONFIG, HEALTH, Overrides(), None, T0).to_dict()["ramps"] == {}


def test_a_table_written_before_progress_was_kept_reads_back_byte_for_byte() -> None:
    data = plan(CONFIG, HEALTH, RAMP, None, T0).to_dict()
    del data["ramps"]
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    old = RoutingTable.from_json(blob)
    assert old.ramps is None and old.to_json() == blob


@pytest.mark.parametrize(("ramps", "problem"), [
    ([], "ramps: not an object"),
    ({"eu-west-1": []}, "ramps.eu-west-1: not an object"),
    ({"eu-west-1": {"kind": "evacuation", "started_at": 1.0}}, "ramps.eu-west-1.steps: missing"),
    ({"eu-west-1": {"kind": "drain", "started_at": 1.0, "steps": 1}}, "ramps.eu-west-1.kind: 'drain'"),
    ({"eu-west-1": {"kind": "restore", "started_at": 1.0, "steps": 0}}, "ramps.eu-west-1.steps: 0"),
    ({"eu-west-1": {"kind": "restore", "started_at": 1.0, "steps": "2"}}, "ramps.eu-west-1.steps: '2'"),
    ({"eu-west-1": {"kind": "restore", "started_at": 1.0, "steps": True}}, "ramps.eu-west-1.steps: True"),
    ({"eu-west-1": {"kind": "restore", "started_at": -1.0, "steps": 1}}, "ramps.eu-west-1.started_at: -1.0"),
    ({"eu-west-1": {"kind": "restore", "started_at": 1.0, "steps": 1, "waited": float("nan")}},
     "ramps.eu-west-1.waited: nan"),
])
def test_malformed_ramp_progress_is_refused_naming_the_field(ramps: object, problem: str) -> None:
    data = plan(CONFIG, HEALTH, Overrides(), None, T0).to_dict()
    data["ramps"] = ramps
    with pytest.raises(ValueError, match="malformed routing table: " + problem.replace("(", r"\(")):
        RoutingTable.from_json(json.dumps(data))


@pytest.mark.parametrize("skew", [-30.0, 0.0, 60.0])
def test_a_leader_continues_from_a_table_without_progress_where_that_table_was(skew: float) -> None:
    # The old leader published step 3 (25 % left) at T0 + 60; this leader's clock is ``skew`` off and
    # it measured 1 s since reading that table.
    data = plan(CONFIG, HEALTH, RAMP, None, T0 + 60.0).to_dict()
    del data["ramps"]
    old = RoutingTable.from_dict(data)
    assert "(25% left)" in left(old)
    table = plan(CONFIG, HEALTH, RAMP, old, T0 + 61.0 + skew, elapsed=1.0)
    assert "(25% left)" in left(table), left(table)  # neither back to 75 % nor on to 0 %
    assert table.ramps is not None and table.ramps["eu-west-1"].steps == 3
    assert table.generated_at >= old.generated_at


def test_a_leader_counts_a_ramp_from_when_it_first_plans_it_not_from_the_records_clock() -> None:
    first = plan(CONFIG, HEALTH, Overrides(), None, T0 + 100.0)  # by a leader whose clock is 10 s ahead
    # By this leader's clock the record began 90 s ago (the rule by the record would say: evacuated). It
    # first plans it now: step 1.
    assert plan(CONFIG, HEALTH, RAMP, first, T0 + 90.0).regions["eu-west-1"].evacuation == "ramp 25%/30s"
    table = plan(CONFIG, HEALTH, RAMP, first, T0 + 90.0, elapsed=0.5)
    assert "(75% left)" in left(table)
    assert table.generated_at == first.generated_at  # never older than the table it follows
    # 29.9 s later by the monotonic clock: still step 1, whatever the wall clock says.
    later = plan(CONFIG, HEALTH, RAMP, table, T0 + 500.0, elapsed=29.9)
    assert "(75% left)" in left(later)
    assert "(50% left)" in left(plan(CONFIG, HEALTH, RAMP, later, T0 - 300.0, elapsed=0.1))


def test_a_rewritten_record_starts_its_ramp_over() -> None:
    table = plan(CONFIG, HEALTH, RAMP, None, T0 + 60.0)
    assert "(25% left)" in left(table)
    again = Overrides(evacuations=(Evacuation(region="eu-west-1", mode="ramp", step=0.5, interval=30.0,
                                              started_at=T0 + 61.0, reason="again"),))
    assert "(50% left)" in left(plan(CONFIG, HEALTH, again, table, T0 + 62.0, elapsed=1.0))


async def test_the_restore_janitor_goes_by_the_table_not_by_a_clock(etcd: EtcdCluster) -> None:
    store = Store(make_config(etcd.endpoints).etcd)
    await store.open()
    try:
        restore = Restore(region="eu-west-1", step=0.5, interval=30.0, started_at=T0, reason="test")
        await store.put_restore(restore)
        ramp = Overrides(restores=(restore,))
        under_way = plan(CONFIG, HEALTH, ramp, None, T0 + 1.0)
        assert left(under_way) == "restoring (50%)"
        complete = plan(CONFIG, HEALTH, ramp, under_way, T0 + 40.0, elapsed=39.0)
        assert left(complete) == "" and complete.ramps and complete.ramps["eu-west-1"].steps == 2
        other = plan(CONFIG, HEALTH, Overrides(restores=(Restore(region="eu-west-1", step=1.0, started_at=T0 - 5),)),
                     None, T0)  # another restore of the region, complete
        for table in (None, under_way, other):
            assert await clean_finished_restores(store, table) == []
            assert (await store.get_overrides()).restores == (restore,)
        assert await clean_finished_restores(store, complete) == ["eu-west-1"]
        assert (await store.get_overrides()).restores == ()
    finally:
        await store.close()
