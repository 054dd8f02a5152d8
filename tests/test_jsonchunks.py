"""``steering.jsonchunks`` gives what ``json`` gives: the same text written, the same values read, the same
documents refused (a ValueError), at every depth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steering import jsonchunks

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=5),
                                                       st.tuples(kids, kids),
                                                       st.dictionaries(st.text(max_size=6), kids, max_size=5)),
                      max_leaves=40)
DEPTHS = st.integers(0, 5)


def reference(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(VALUES, DEPTHS)
def test_dumps_writes_what_json_writes(obj: Any, depth: int) -> None:
    assert jsonchunks.dumps(obj, depth) == reference(obj)


@settings(max_examples=300, deadline=None)
@given(VALUES, DEPTHS, st.sampled_from([None, 0, 2]), st.booleans(), st.booleans(),
       st.dictionaries(st.text(max_size=6), DEPTHS, max_size=3))
def test_loads_reads_what_json_reads(obj: Any, depth: int, indent: int | None, as_bytes: bool,
                                     ascii_only: bool, deeper: dict[str, int]) -> None:
    doc: str | bytes = json.dumps(obj, indent=indent, ensure_ascii=ascii_only)
    if as_bytes:
        doc = doc.encode()
    # compared as written: NaN is not equal to itself, but it writes as NaN both times
    assert reference(jsonchunks.loads(doc, depth)) == reference(json.loads(doc))
    if isinstance(obj, dict) and obj and deeper:  # some members of the top object walked deeper, or less deep
        deeper[next(iter(obj))] = depth + 1
    assert reference(jsonchunks.loads(doc, depth, deeper)) == reference(json.loads(doc))


def _outcome(fn: Any, doc: str) -> tuple[str, str]:
    try:
        return "ok", reference(fn(doc))
    except ValueError:
        return "refused", ""


@settings(max_examples=400, deadline=None)
@given(VALUES, DEPTHS, st.data())
def test_a_mangled_document_is_refused_or_read_as_json_does(obj: Any, depth: int, data: st.DataObject) -> None:
    doc = json.dumps(obj, indent=data.draw(st.sampled_from([None, 1])))
    edits = data.draw(st.lists(st.tuples(st.integers(0, max(0, len(doc))), st.sampled_from(
        ["", "{", "}", "[", "]", ",", ":", '"', " ", "\\", "x", "1", "\ufeff", "nul", "-", "."])), min_size=1,
        max_size=3))
    for pos, text in edits:  # replace one character (or insert at the end)
        doc = doc[:pos] + text + doc[pos + 1:]
    assert _outcome(lambda d: jsonchunks.loads(d, depth), doc) == _outcome(json.loads, doc)
    deeper = {k: depth + 2 for k in obj} if isinstance(obj, dict) else {"": 3}
    assert _outcome(lambda d: jsonchunks.loads(d, depth, deeper), doc) == _outcome(json.loads, doc)


@pytest.mark.parametrize("doc", ["", " ", "{", "[1,]", '{"a" 1}', '{"a":1,}', "[1 2]", "01", '"\\x"', "\ufeff{}",
                                 "{} {}", '{"a":[1,{"b":}]}', "nan", "[NaN, Infinity, -Infinity]"])
def test_edge_documents(doc: str) -> None:
    for depth in range(5):
        assert _outcome(lambda d, k=depth: jsonchunks.loads(d, k), doc) == _outcome(json.loads, doc)


def test_a_table_round_trips_through_the_pieces_as_through_json() -> None:
    from steering.config import load_config
    from steering.model import Observed, Overrides, TargetHealth
    from steering.planner import plan
    from steering.table import RoutingTable
    from tests.support import EXAMPLE_CONFIG

    config = load_config(EXAMPLE_CONFIG)
    observed = Observed(health={t: TargetHealth(status="healthy", capacity=1000.0, load=100.0)
                                for t in [*(r.id for r in config.regions), *(s.id for s in config.sites)]})
    table = plan(config, observed, Overrides(), None, 0.0)
    blob = table.to_json()
    assert blob == reference(table.to_dict()).encode()  # to_json writes through the pieces, as json would
    again = RoutingTable.from_json(blob)
    assert again == table and again.to_json() == blob


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["site", "region"]), st.sampled_from(["r1", "r2"]), st.sampled_from(["healthy", "silent"]),
    st.sampled_from([True, False, 1, 0]),
    *[st.sampled_from([0.0, -0.0, 1.0, 1, 2.5, 1e300, float("inf"), float("nan"), 0, True]) for _ in range(3)],
    st.sampled_from([None, 0.0, -0.0, 0.5, 1, float("nan")]), st.sampled_from(["", "evacuating (50%)"]),
    st.sampled_from(["", "r\u00e9ason \"quoted\""])), min_size=1, max_size=6))
def test_a_tables_sites_are_written_as_json_writes_them_whatever_came_before(
        states: list[tuple[Any, ...]]) -> None:
    # Site states are written from a memo of earlier ones (table._sites_json): equal states of other types or
    # signs (1 and 1.0, True and 1, 0.0 and -0.0) must still be written as json writes each.
    from steering.table import RoutingTable, TargetState

    sites = {f"s{i}": TargetState(kind=k, region=r, health=h, serving=sv, capacity=c, load=lo, planned_load=p,
                                  utilization=u, evacuation=e, reason=why)
             for i, (k, r, h, sv, c, lo, p, u, e, why) in enumerate(states)}
    table = RoutingTable(version=1, parent_version=0, generated_at=0.0, services={}, regions={}, sites=sites)
    for _ in range(2):  # the second time from the memo
        assert table.to_json() == json.dumps(table.to_dict(), sort_keys=True, separators=(",", ":")).encode()


def test_site_states_handed_on_are_written_from_the_memo_which_stays_bounded() -> None:
    # The incremental planner hands most sites' state objects on from table to table (table._sites_json knows
    # them by identity) while a few get new ones: every table is still written as json writes it, and the
    # memo by content never holds more than twice a table's states (plus a little), however long loads move.
    from steering import table as tablemod
    from steering.table import RoutingTable, TargetState

    def state(load: float) -> TargetState:
        return TargetState(kind="site", region="r1", health="healthy", serving=True, capacity=1000.0, load=load,
                           planned_load=load / 2, utilization=load / 1000.0)

    sites = {f"s{i}": state(float(i)) for i in range(50)}
    sizes = []
    for n in range(60):
        for j in range(5):  # five sites move each time; the other 45 keep their very objects
            sites[f"s{(n * 5 + j) % 50}"] = state(1000.0 * n + j)
        table = RoutingTable(version=n + 1, parent_version=n, generated_at=0.0, services={}, regions={},
                             sites=dict(sites))
        assert table.to_json() == json.dumps(table.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        sizes.append(len(tablemod._SITE_JSON[0]))
        assert sizes[-1] <= 2 * len(sites) + 64
    assert min(sizes[20:]) < max(sizes)  # it was rebuilt along the way, not just capped
    assert set(tablemod._SITE_JSON[0].values()) >= set(tablemod._SITE_BY_ID[0][id(s)][2] for s in sites.values())
