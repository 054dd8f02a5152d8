"""eventdiff.reporters with the per-site index health_events builds once per plan: the same answer as
without it (which reads every record for each target), for sites with several reporters and replicas."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from steering.controller.eventdiff import newest_by_site, reporters
from steering.controller.healthmerge import newest
from steering.model import TargetHealth

KEYS = st.sampled_from(["s1@a", "s1@b", "s1~probe@a", "s2@a", "s2~probe@b", "s2~other@a", "r1@b",
                        "s10@a", "s1-x@b", "s1-x~probe@a"])  # sites whose names start with another's


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(KEYS, st.tuples(st.sampled_from(["healthy", "unhealthy"]), st.floats(0, 10)), max_size=7))
def test_reporters_with_the_index_equal_reporters_without(raw: dict[str, tuple[str, float]]) -> None:
    records = {k: TargetHealth(status="healthy" if s == "healthy" else "unhealthy", updated_at=t)
               for k, (s, t) in raw.items()}
    index = newest_by_site(records)
    for target in ("s1", "s2", "r1", "absent"):
        h = TargetHealth(status="healthy")
        # What reporters() said before the index: every record read for each target.
        said = {r: rec.status for (site, r), (_, rec) in sorted(newest(records).items()) if site == target}
        heard = {r: replica for (site, r), (replica, _) in sorted(newest(records).items()) if site == target}
        assert reporters(h, records, target, index) == reporters(h, records, target) == (said, heard)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(KEYS, st.tuples(st.sampled_from(["healthy", "unhealthy"]), st.floats(0, 10)), max_size=10),
       st.lists(st.sampled_from(["s1", "s2", "r1", "s10", "s1-x", "absent"]), unique=True))
def test_the_index_of_some_sites_is_the_whole_index_for_them(raw: dict[str, tuple[str, float]],
                                                              sites: list[str]) -> None:
    # health_events builds it for the targets that changed only (a few among thousands), by key prefix.
    records = {k: TargetHealth(status="healthy" if s == "healthy" else "unhealthy", updated_at=t)
               for k, (s, t) in raw.items()}
    whole = newest_by_site(records)
    assert newest_by_site(records, sites) == {s: whole[s] for s in sites if s in whole}
