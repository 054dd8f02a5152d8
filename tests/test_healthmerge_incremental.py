"""``healthmerge.Merger`` (the leader's merge, redoing only the sites whose records changed) against
``healthmerge.merge``: over random sequences of record changes (new, rewritten, gone, several replicas and
observers, equal times that ``newest`` settles by order), the grace period ending, the last table's statuses
changing during it, with and without reporters; every result equal, and reused where nothing forced a full
merge."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.config import parse_config
from steering.controller.healthmerge import Merger, merge, record_key
from steering.controller.vantage import Vantage, slot
from steering.model import Check, Status, TargetHealth
from tests.support import EXAMPLE_CONFIG


def _vantage() -> Vantage:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["observers"] = [{"id": "probe-na", "geos": ["na-east"], "targets": ["us-east-1", "us-west-2"]},
                         {"id": "probe-eu", "geos": ["europe"], "targets": ["us-east-1"]}]
    data["policy"]["health"] = {"quorum": "majority", "per_geo_reachability": True}
    return Vantage.of(parse_config(data, "test", EXAMPLE_CONFIG.parent))


VANTAGE = _vantage()
KNOWN = ("us-east-1", "us-west-2", "eu-west-1", "oc-1", "oc-2")
SLOTS = [*KNOWN, "not-known", slot("us-east-1", "probe-na"), slot("us-east-1", "probe-eu"),
         slot("us-west-2", "probe-na")]
STATUSES: list[Status] = ["healthy", "unhealthy", "silent", "unknown"]

records = st.builds(lambda status, at, cap, failing: TargetHealth(
    status=status, updated_at=at, capacity=cap, detail="x" if status == "unhealthy" else "",
    checks=(Check(name="http", kind="http", detail="503"),) if failing else ()),
    st.sampled_from(STATUSES), st.sampled_from([1.0, 2.0, 3.0, 4.0]), st.sampled_from([None, 0.0, 50.0]),
    st.booleans())
change = st.tuples(st.sampled_from(SLOTS), st.sampled_from(["c1", "c2", "c3"]), st.one_of(st.none(), records))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(change, max_size=4), st.booleans(), st.booleans()), min_size=1, max_size=12),
       st.booleans())
def test_incremental_merges_equal_full_merges(steps: list[tuple[list[tuple[str, str, TargetHealth | None]],
                                                                 bool, bool]], observers: bool) -> None:
    vantage = VANTAGE if observers else None
    merger = Merger()
    current: dict[str, TargetHealth] = {}
    tables: list[dict[str, str]] = [{"oc-1": "silent"}, {"oc-2": "silent"}]
    reused = 0
    for changes, after_grace, other_table in steps:
        current = dict(current)  # a new map each time, unchanged records the same objects (as the watch does)
        for where, replica, h in changes:
            key = record_key(where, replica)
            if h is None:
                current.pop(key, None)
            else:
                current[key] = h
        previous = tables[1] if other_table else tables[0]
        got = merger.merge(current, KNOWN, after_grace, previous, vantage)
        assert got == merge(current, KNOWN, after_grace, previous, vantage)
        assert list(got) == list(KNOWN)
        reused += merger.last_incremental
    if len(steps) > 1 and all(not c for c, _, _ in steps[1:]) and len({(g, o) for _, g, o in steps}) == 1:
        assert reused == len(steps) - 1  # nothing changed: every merge after the first reuses the last


def test_one_record_changed_among_many_is_merged_incrementally() -> None:
    known = tuple(f"s{i:04d}" for i in range(2000))
    recs: dict[str, Any] = {record_key(s, "c1"): TargetHealth(status="healthy", updated_at=1.0) for s in known}
    merger = Merger()
    merger.merge(recs, known, True)
    assert not merger.last_incremental
    recs = dict(recs)
    recs[record_key("s0007", "c2")] = TargetHealth(status="unhealthy", updated_at=2.0, detail="down")
    out = merger.merge(recs, known, True)
    assert merger.last_incremental and out["s0007"].status == "unhealthy" and out == merge(recs, known, True)
    recs = dict(recs)  # a new map, as the watch hands on (a map once merged is never changed in place)
    del recs[record_key("s0007", "c2")]
    del recs[record_key("s0008", "c1")]
    out = merger.merge(recs, known, True)
    assert merger.last_incremental and out["s0007"].status == "healthy" and out["s0008"].status == "silent"
    assert out == merge(recs, known, True)


def test_a_tie_between_replicas_is_settled_as_merge_does() -> None:
    """Two replicas' records of one time and status: ``newest`` keeps the first in the map's order, which
    the incremental merge cannot see, so it merges in full; a map where the later one changes, then the
    first, then both are rewritten in the other order."""
    known = ("oc-1", "oc-2")
    first = TargetHealth(status="healthy", updated_at=5.0, capacity=10.0)
    second = TargetHealth(status="healthy", updated_at=5.0, capacity=20.0)
    maps = [{record_key("oc-1", "c1"): first, record_key("oc-2", "c1"): first},
            {record_key("oc-1", "c1"): first, record_key("oc-2", "c1"): first, record_key("oc-1", "c2"): second},
            {record_key("oc-1", "c2"): second, record_key("oc-2", "c1"): first, record_key("oc-1", "c1"): first},
            {record_key("oc-1", "c2"): TargetHealth(status="healthy", updated_at=5.0, capacity=30.0),
             record_key("oc-2", "c1"): first, record_key("oc-1", "c1"): first}]
    merger = Merger()
    for recs in maps:
        assert merger.merge(recs, known, True) == merge(recs, known, True)
