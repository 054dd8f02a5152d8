"""Capacity and load: JSON fields and Prometheus metrics, parsed and fetched from real HTTP servers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.capacity import ReadingError, Readings, from_json, from_prometheus
from agents.config import Reading
from tests.support.agent_targets import HttpTarget

PROM = """\
# HELP http_requests_per_second Requests served per second.
# TYPE http_requests_per_second gauge
http_requests_per_second{region="us-east-1",worker="a"} 120.5
http_requests_per_second{region="us-east-1",worker="b"} 79.5
http_requests_per_second{region="eu-west-1",worker="a"} 999
# TYPE site_capacity gauge
site_capacity 5000
# TYPE requests counter
requests_total{code="200"} 42
"""


@pytest.fixture
def target() -> Iterator[HttpTarget]:
    t = HttpTarget()
    try:
        yield t
    finally:
        t.close()


def test_json_paths() -> None:
    body = json.dumps({"capacity": {"rps": 1000}, "workers": [{"load": 3}, {"load": "4.5"}], "flag": True})
    assert from_json(body, "capacity.rps") == 1000.0
    assert from_json(body, "workers.1.load") == 4.5
    assert from_json(body, "workers.-1.load") == 4.5


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ('{"a": {"b": 1}}', "a.c", "a.c: no such field"),
        ('{"a": [1]}', "a.3", "a.3: not an index of a list of 1"),
        ('{"a": 1}', "a.b", "a.b: cannot descend into int"),
        ('{"a": true}', "a", "is not a number"),
        ('{"a": "x"}', "a", "is not a number"),
        ('{"a": -1}', "a", "is negative"),
        ('{"a": {"b": 1}}', "a", "is not a number"),
        ("not json", "a", "not JSON"),
    ],
)
def test_json_errors_name_the_path(body: str, path: str, message: str) -> None:
    with pytest.raises(ReadingError, match=message):
        from_json(body, path)


def test_prometheus_by_name_and_labels() -> None:
    assert from_prometheus(PROM, "site_capacity") == 5000
    assert from_prometheus(PROM, "http_requests_per_second", {"region": "us-east-1"}) == 200.0
    assert from_prometheus(PROM, "http_requests_per_second", {"region": "us-east-1", "worker": "b"}) == 79.5
    assert from_prometheus(PROM, "requests_total") == 42


def test_prometheus_errors() -> None:
    with pytest.raises(ReadingError, match=re.escape('no sample http_requests_per_second{region="ap-south-1"}')):
        from_prometheus(PROM, "http_requests_per_second", {"region": "ap-south-1"})
    with pytest.raises(ReadingError, match="no sample missing"):
        from_prometheus(PROM, "missing")


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False), st.text("abc", min_size=1, max_size=5))
def test_prometheus_roundtrip(value: float, label: str) -> None:
    text = f'm{{l="{label}"}} {value!r}\nm{{l="other"}} 1\n'
    assert from_prometheus(text, "m", {"l": label}) == (value if label != "other" else value + 1)


async def test_capacity_from_json_endpoint(target: HttpTarget) -> None:
    target.set("/stats", body=json.dumps({"capacity": {"rps": 8000}, "load": {"rps": 1234.5}}),
               ctype="application/json")
    readings = Readings({
        "capacity": Reading(url=target.url("/stats"), json_path="capacity.rps"),
        "load": Reading(url=target.url("/stats"), json_path="load.rps", scale=2),
    })
    assert await readings.refresh() == {}
    assert readings.get("capacity") == 8000 and readings.get("load") == 2469.0
    assert target.requests == 1  # one fetch serves both readings


async def test_load_from_prometheus_endpoint(target: HttpTarget) -> None:
    target.set("/metrics", body=PROM)
    readings = Readings({
        "load": Reading(url=target.url("/metrics"), metric="http_requests_per_second",
                        labels={"region": "us-east-1"}),
        "capacity": Reading(value=300),
    })
    assert await readings.refresh() == {}
    assert readings.get("load") == 200.0 and readings.get("capacity") == 300


async def test_failed_read_keeps_last_value(target: HttpTarget) -> None:
    target.set("/stats", body='{"cap": 10}')
    readings = Readings({"capacity": Reading(url=target.url("/stats"), json_path="cap", timeout_seconds=0.3)})
    assert await readings.refresh() == {}
    target.set("/stats", status=500, body="boom")
    errors = await readings.refresh()
    assert errors["capacity"].endswith("status 500")
    assert readings.get("capacity") == 10
    target.set("/stats", body='{"other": 1}')
    assert "cap: no such field" in (await readings.refresh())["capacity"]
    target.hang = True
    assert "timeout after 0.3s" in (await readings.refresh())["capacity"]
    assert readings.get("capacity") == 10
