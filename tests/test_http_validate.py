"""The REST API's request checks (steering/http/validate.py) and its OpenAPI document, without a server: any
JSON is either accepted or refused with 400/422 naming the field, never anything else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steering.config import load_config
from steering.http import openapi, schemas, validate
from steering.http.routes import PREFIX, Api, Call, Reply, routes
from tests.support.paths import EXAMPLE_CONFIG

CONFIG = load_config(str(EXAMPLE_CONFIG))
KNOWN = schemas.Known(CONFIG)
REQUESTS = schemas.requests(KNOWN)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
# objects that look like requests: known field names with any values
field_names = st.sampled_from(sorted({n for s in REQUESTS.values() for n in s["properties"]} | {"ramp", "x"}))
near_requests = st.dictionaries(field_names, json_values, max_size=6)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(REQUESTS)), value=json_values | near_requests)
def test_any_json_is_accepted_or_refused_naming_the_field(name: str, value: Any) -> None:
    try:
        checked = validate.check(REQUESTS[name], value)
    except validate.Invalid as exc:
        assert exc.status in (400, 422) and exc.code and exc.problem
        assert str(exc).startswith(f"{exc.field}: ") or not exc.field
        return
    assert isinstance(checked, dict)
    assert set(checked) <= set(REQUESTS[name]["properties"])


@pytest.mark.parametrize(("value", "status", "code", "field"), [
    ({"region": "eu-west-1", "reason": "x", "step": True}, 400, "wrong_type", "step"),
    ({"region": "eu-west-1", "reason": "x", "step": 0.0001}, 422, "invalid_value", "step"),
    ({"region": "eu-west-1", "reason": "x", "interval_seconds": float("inf")}, 422, "invalid_value",
     "interval_seconds"),
    ({"region": "eu-west-1", "reason": ""}, 422, "invalid_value", "reason"),
    ({"reason": "x"}, 400, "missing_field", "region"),
    ({"region": "eu-west-1", "reason": "x", "force": 1}, 400, "wrong_type", "force"),
])
def test_refusals_name_the_field(value: dict[str, Any], status: int, code: str, field: str) -> None:
    with pytest.raises(validate.Invalid) as info:
        validate.check(REQUESTS["EvacuateRequest"], value)
    assert (info.value.status, info.value.code, info.value.field) == (status, code, field)


def test_integral_numbers_are_integers_and_pin_keys_are_targets() -> None:
    pin = REQUESTS["PinRequest"]
    assert validate.check(pin, {"weights": {"us-east-1": 2.0}, "reason": "r"})["weights"] == {"us-east-1": 2}
    with pytest.raises(validate.Invalid) as info:
        validate.check(pin, {"weights": {"oc-lon-2": 1}, "reason": "r"})
    assert info.value.field == "weights.oc-lon-2" and "as a key" in info.value.problem


def test_the_document_describes_every_route_and_only_known_keywords() -> None:
    async def nothing(api: Api, call: Call) -> Reply:
        return Reply(200, {})

    table = routes(KNOWN, nothing)
    doc = openapi.document(table, REQUESTS, schemas.responses(), bearer=True, loopback_only=False)
    assert doc["openapi"] == "3.1.0" and doc["security"] == [{"bearer": []}]
    assert {(PREFIX + r.path, r.method.lower()) for r in table} == {
        (p, m) for p, ops in doc["paths"].items() for m in ops}
    for r in table:
        op = doc["paths"][PREFIX + r.path][r.method.lower()]
        assert "401" in op["responses"] and "422" in op["responses"]
        for p in r.params:  # parameters are checked with the same validator: only keywords it knows
            assert set(p.schema) <= validate.KEYWORDS
    refs = {v for s in doc["components"]["schemas"].values() for v in _refs(s)}
    assert refs <= {f"#/components/schemas/{n}" for n in doc["components"]["schemas"]}


def _refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        return [*([schema["$ref"]] if "$ref" in schema else []), *(r for v in schema.values() for r in _refs(v))]
    if isinstance(schema, list):
        return [r for v in schema for r in _refs(v)]
    return []
