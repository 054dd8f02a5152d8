"""A DNS server reads a table without its sites' states (it serves none of them).

The writer says where the value of "sites" is in the JSON (``to_json_with_sites_span``, carried in the store's
pointer); a reader given that span parses the rest only. It must get the very table the whole document gives,
with no site states; and a span that does not hold must change nothing: the whole document decides.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.planner import plan
from steering.store import codec
from steering.table import RoutingTable, TargetState
from tests.support.store import make_table
from tests.support.strategies import Scenario, scenarios

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(table: RoutingTable) -> None:
    raw, (start, end) = table.to_json_with_sites_span()
    assert raw == table.to_json()
    assert json.loads(raw[start:end]) == json.loads(raw)["sites"]
    whole = RoutingTable.from_json(raw)
    assert RoutingTable.from_json(raw, (start, end)) == replace(whole, sites={})


@SETTINGS
@given(scenarios())
def test_a_planned_table_read_without_its_sites_is_the_whole_one_without_them(s: Scenario) -> None:
    _check(plan(s.config, s.observed, s.overrides, None, s.now))


# Names and text that look like the keys around the sites' value: a site or region called "sites" or
# "topology", notes and reasons that hold the very text searched for.
_TRAPS = ['sites', 'topology', 'version', '"sites":{', ',"topology":"x"', '},"topology":', ',"version":1}', '{}']


@SETTINGS
@given(st.lists(st.sampled_from(_TRAPS), max_size=6), st.integers(0, 40), st.booleans())
def test_names_and_text_that_look_like_the_span_do_not_move_it(traps: list[str], n_sites: int, named: bool) -> None:
    base = make_table(7, n_sites=n_sites)
    sites = dict(base.sites)
    regions = dict(base.regions)
    state = TargetState(kind="site", region="region-0", health="healthy", serving=True, capacity=1.0, load=0.0,
                        planned_load=0.0, utilization=0.0, reason=",".join(traps), evacuation="".join(traps))
    if named:
        for name in ("sites", "topology", "version"):
            sites[name] = state
        regions["sites"] = replace(state, kind="region")
    _check(replace(base, sites=sites, regions=regions, notes=tuple(traps), topology="".join(traps)))


def test_a_span_that_does_not_hold_changes_nothing() -> None:
    table = make_table(3, n_sites=5)
    raw, (start, end) = table.to_json_with_sites_span()
    whole = RoutingTable.from_json(raw)
    assert whole.sites  # the whole document's reading keeps them
    for span in [(0, 5), (start + 1, end), (start, end - 1), (end, start), (start, len(raw) + 1), (-3, end),
                 (start - 1, end), (0, len(raw))]:
        assert RoutingTable.from_json(raw, span) == whole, span
    # and a document that is no table says so, span or not, in the same words
    broken = raw.replace(b'"services"', b'"servicez"')
    with pytest.raises(ValueError) as plain:
        RoutingTable.from_json(broken)
    with pytest.raises(ValueError) as spanned:
        RoutingTable.from_json(broken, (start, end))
    assert str(spanned.value) == str(plain.value) == "malformed routing table: services: missing"


def test_what_is_not_parsed_is_not_checked() -> None:
    # The trade, on purpose: a state a DNS server never serves does not stop it taking the table (the whole
    # reading refuses it, as every other reader does).
    table = make_table(4, n_sites=2)
    raw, (start, end) = table.to_json_with_sites_span()
    bad = raw[:start] + b'{"site-x":{"load":"heavy"}}' + raw[end:]
    span = (start, start + len(b'{"site-x":{"load":"heavy"}}'))
    with pytest.raises(ValueError, match=r"sites\.site-x\.kind: missing"):
        RoutingTable.from_json(bad)
    assert RoutingTable.from_json(bad, span) == replace(table, sites={})


def test_the_pointer_carries_the_span_and_a_serving_reader_uses_it() -> None:
    table = make_table(9, n_sites=30)
    enc = codec.encode_table(table)
    _, span = table.to_json_with_sites_span()
    assert enc.pointer.sites == span
    pointer = codec.parse_pointer(enc.pointer.to_json())
    assert pointer == enc.pointer
    assert codec.decode_table(enc.pointer, enc.chunks) == table
    assert codec.decode_table(enc.pointer, enc.chunks, serving_only=True) == replace(table, sites={})
    # a pointer written before the span was kept: every reader parses the whole table
    older = replace(enc.pointer, sites=None)
    assert b'"sites"' not in older.to_json()
    assert codec.decode_table(older, enc.chunks, serving_only=True) == table


@pytest.mark.parametrize("value", ['"0-9"', "[1]", "[1,2,3]", "[2,1]", "[-1,5]", "[1.0,5]", "[true,5]", "null",
                                   "{}", "[1,9223372036854775808]"])
def test_a_malformed_span_in_a_pointer_is_as_if_absent(value: str) -> None:
    enc = codec.encode_table(make_table(2, n_sites=3))
    stored = json.loads(enc.pointer.to_json())
    stored["sites"] = json.loads(value)
    pointer = codec.parse_pointer(json.dumps(stored).encode())
    assert isinstance(pointer, codec.Pointer) and pointer.sites is None
    assert codec.decode_table(pointer, enc.chunks, serving_only=True) == make_table(2, n_sites=3)
