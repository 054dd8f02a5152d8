"""``RoutingTable.from_json`` takes its routes' parsed weights and reasons as they are (``checked``), where
``from_dict`` of anything else copies them with conversions: the two must give the same table.

The decode a DNS worker runs at every swap builds no second copy of 10,000 dicts this way, and frees none;
what it gives must still be exactly the table ``from_dict`` makes of the same document, with the types the
copy would have made, whatever the planner wrote.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from steering.planner import plan
from steering.table import RoutingTable
from tests.support.strategies import Scenario, scenarios

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_a_decoded_table_is_the_one_from_dict_makes_with_the_same_types(s: Scenario) -> None:
    table = plan(s.config, s.observed, s.overrides, None, s.now)
    raw = table.to_json()
    decoded = RoutingTable.from_json(raw)
    copied = RoutingTable.from_dict(json.loads(raw))
    assert decoded == copied == table
    assert decoded.to_json() == raw
    for name, svc in decoded.services.items():
        for geo, route in svc.geos.items():
            other = copied.services[name].geos[geo]
            assert type(route.weights) is dict and type(route.reasons) is dict, (name, geo)
            assert list(route.weights.items()) == list(other.weights.items())  # order kept: the pick's candidates
            assert all(type(k) is str and type(w) is int for k, w in route.weights.items())
            assert all(type(k) is str and type(r) is str for k, r in route.reasons.items())
            assert type(route.fail_open) is bool and type(route.pinned) is bool


def test_routes_of_two_decodes_share_nothing() -> None:
    # each decode owns what it adopted: a table kept (the served one) and the next one decoded from the same
    # bytes hold no dict in common, so retiring one never takes apart the other's
    from tests.support.store import make_table

    raw = make_table(3).to_json()
    a, b = RoutingTable.from_json(raw), RoutingTable.from_json(raw)
    assert a == b
    ids = {id(r.weights) for svc in a.services.values() for r in svc.geos.values()}
    assert ids and not ids & {id(r.weights) for svc in b.services.values() for r in svc.geos.values()}
