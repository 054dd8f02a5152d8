"""The persisted table can never keep the DNS server down: whatever the file holds, it starts and answers.

``RoutingTable.from_json`` raises ValueError (only) for anything that is not a
table; ``load_table`` turns that into one log line and sets the file aside;
the daemon answers fail-open from the configuration until a table arrives.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.geo import GeoMap
from dnsserver.metrics import Stats
from dnsserver.persist import KEEP_BAD, load_table, save_table, set_aside_files
from dnsserver.render import build_snapshot
from dnsserver.zones import load_zones
from steering.config import Config
from steering.table import RoutingTable
from tests.support import eventually_sync
from tests.support.dns_server import (
    EAST,
    EU,
    SPLIT,
    WEST,
    DnsProcess,
    addresses,
    ask_tcp,
    ask_udp,
    load,
    table_with,
    write_config,
)

DEEP = 100_000


def _valid(tmp_path: Path) -> dict[str, Any]:
    cfg = load(tmp_path / "cfg")
    return json.loads(table_with(cfg, 3, SPLIT).to_json())


def _with(doc: dict[str, Any], path: list[Any], value: Any) -> bytes:
    d = json.loads(json.dumps(doc))
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(d).encode()


def _bad_files(tmp_path: Path) -> dict[str, bytes]:
    """One state file of each kind that must not be used."""
    doc = _valid(tmp_path)
    good = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    weights = ["services", "api.example.test.", "geos", "world", "weights"]
    return {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not-json": b"\x00\xff\xfe binary garbage",
        "nested-array": b"[" * DEEP,
        "nested-object": b'{"a":' * DEEP,
        "nested-in-table": _with(doc, ["notes"], json.loads("[" * 500 + "]" * 500)),
        "list-not-table": b"[1, 2, 3]",
        "services-a-list": _with(doc, ["services"], []),
        "weight-a-string": _with(doc, weights, {"us-east-1": "1000"}),
        "weight-a-float": _with(doc, weights, {"us-east-1": 999.5, "us-west-2": 0.5}),
        "weight-true": _with(doc, weights, {"us-east-1": True}),
        "version-missing": json.dumps({k: v for k, v in doc.items() if k != "version"}).encode(),
        "version-huge": _with(doc, ["version"], 2**64),
        "version-digits": good.replace(b'"version":3', b'"version":' + b"9" * 5000),
        "version-infinite": good.replace(b'"version":3', b'"version":1e999'),
        "generated-nan": good.replace(b'"generated_at":1000000.0', b'"generated_at":NaN'),
        "weights-not-summing": _with(doc, weights, {"us-east-1": 10**18, "us-west-2": -(10**18) + 1000}),
        "region-state-wrong": _with(doc, ["regions"], {"us-east-1": {"kind": "region"}}),
        "reasons-a-number": _with(doc, ["services", "api.example.test.", "geos", "world", "reasons"], 7),
    }


def test_every_kind_of_bad_table_is_a_value_error(tmp_path: Path) -> None:
    for kind, blob in _bad_files(tmp_path).items():
        with pytest.raises(ValueError, match="malformed routing table") as err:
            RoutingTable.from_json(blob)
        assert type(err.value) is ValueError, kind


def test_good_tables_still_parse(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    table = table_with(cfg, 3, SPLIT)
    assert RoutingTable.from_json(table.to_json()) == table
    # the planner reports infinite and missing loads; they are data, not a broken table
    doc = json.loads(table.to_json())
    doc["regions"] = {"us-east-1": {"kind": "region", "region": "us-east-1", "health": "healthy", "serving": True,
                                    "capacity": 100, "load": float("inf"), "planned_load": 0.0, "utilization": None}}
    parsed = RoutingTable.from_json(json.dumps(doc))
    assert math.isinf(parsed.regions["us-east-1"].load)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
                     max_leaves=20)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@pytest.fixture(scope="module")
def rendering(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict[str, Any], list[Any], GeoMap]:
    """The config, a valid table's document, the zones and the geo map: read once (the property's examples
    only read them)."""
    tmp = tmp_path_factory.mktemp("persist")
    cfg = load(tmp / "cfg")
    return cfg, _valid(tmp), load_zones(cfg), GeoMap(cfg.geos, cfg.default_geo.id)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_mutation_is_a_table_that_renders_or_a_value_error(
        rendering: tuple[Config, dict[str, Any], list[Any], GeoMap], data: st.DataObject) -> None:
    """Replace one part of a real table with any JSON value: a ValueError, or a table the server renders."""
    cfg, doc, zones, geomap = rendering
    paths = _paths(doc)
    path = data.draw(st.sampled_from(paths))
    mutated = _with(doc, list(path), data.draw(_JSON))
    try:
        table = RoutingTable.from_json(mutated)
    except ValueError:
        return
    build_snapshot(cfg, zones, geomap, table, Stats())


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=200) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_are_a_table_or_a_value_error(blob: bytes) -> None:
    try:
        RoutingTable.from_json(blob)
    except ValueError:
        pass


def test_unusable_file_is_set_aside_keeping_the_newest_few(tmp_path: Path) -> None:
    state = tmp_path / "dns-table.json"
    blobs = [f"[{i}".encode() for i in range(KEEP_BAD + 3)]
    for blob in blobs:
        state.write_bytes(blob)
        assert load_table(state) is None
        assert not state.exists()
    kept = set_aside_files(state)
    assert [p.read_bytes() for p in kept] == blobs[-KEEP_BAD:]  # the newest, oldest first
    assert all(p.name.startswith("dns-table.json.bad-") for p in kept)
    # a reader that does not own the file leaves it where it is
    state.write_bytes(b"nope")
    assert load_table(state, set_aside=False) is None and state.read_bytes() == b"nope"
    # a good table after all that loads, and the next save replaces the file
    cfg = load(tmp_path / "cfg")
    save_table(state, table_with(cfg, 9, SPLIT))
    loaded = load_table(state)
    assert loaded is not None and loaded.version == 9


def test_unreadable_path_is_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "dns-table.json"
    state.mkdir()
    assert load_table(state) is None
    assert state.is_dir() and not set_aside_files(state)


# ---- the daemon


def _fail_open_answers(port: int) -> set[frozenset[str]]:
    """Answers for many subnets of the world geo: fail-open spreads them over its configured targets."""
    seen = set()
    for i in range(40):  # bounded
        r = ask_udp(port, f"10.{i}.3.0") if i % 4 else ask_tcp(port, f"10.{i}.3.0")
        assert r.rcode() == dns.rcode.NOERROR
        seen.add(addresses(r))
    return seen


KINDS = ["truncated", "empty", "not-json", "nested-array", "nested-object", "list-not-table", "weight-a-string",
         "version-digits", "version-infinite"]


def _start_with_bad_file(tmp_path: Path, kind: str, workers: int) -> tuple[DnsProcess, Path, bytes]:
    blob = _bad_files(tmp_path)[kind]
    config = write_config(tmp_path)
    state = tmp_path / "dns-table.json"
    state.write_bytes(blob)
    d = DnsProcess(config, "--workers", str(workers), "--no-etcd", "--listen", "127.0.0.1:0", metrics=False)
    return d, state, blob


def _check_started_fail_open(d: DnsProcess, state: Path, blob: bytes) -> None:
    port = d.port
    seen = _fail_open_answers(port)
    assert seen <= {EAST, WEST, EU} and len(seen) >= 2, seen  # the configured targets, not one table pick
    assert d.named("dns.fallback.fail_open", reason="no-table")
    loud = [e for e in d.events if e.get("level") in ("warning", "error", "critical")
            and str(state) in json.dumps(e)]
    assert len(loud) == 1, loud  # one line naming the file and the problem
    assert loud[0]["event"] == "dns.state.unusable" and loud[0]["path"] == str(state) and loud[0]["problem"]
    assert not state.exists()
    aside = set_aside_files(state)
    assert len(aside) == 1 and aside[0].read_bytes() == blob and loud[0]["set_aside"] == str(aside[0])


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_starts_fail_open_with_a_bad_state_file(tmp_path: Path, kind: str) -> None:
    d, state, blob = _start_with_bad_file(tmp_path, kind, workers=1)
    with d:
        _check_started_fail_open(d, state, blob)
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_workers_start_fail_open_with_a_bad_state_file(tmp_path: Path) -> None:
    d, state, blob = _start_with_bad_file(tmp_path, "nested-array", workers=2)
    with d:
        d.wait_event("dns.supervisor.ready")
        _check_started_fail_open(d, state, blob)
        assert len(d.named("dns.listening")) == 2
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_second_start_after_a_bad_file_is_clean(tmp_path: Path) -> None:
    """The file set aside, the next start finds none: no second warning, no crash loop."""
    d, state, _ = _start_with_bad_file(tmp_path, "truncated", workers=1)
    with d:
        d.wait_event("dns.listening")
        assert d.stop() == 0
    d2 = DnsProcess(tmp_path / "steering.yaml", "--workers", "1", "--no-etcd", "--listen", "127.0.0.1:0", metrics=False)
    with d2:
        eventually_sync(lambda: ask_udp(d2.port).rcode() == dns.rcode.NOERROR, 20, "an answer")
        assert d2.named("dns.state.none", path=str(state)) and not d2.named("dns.state.unusable")
        assert d2.stop() == 0
    assert len(set_aside_files(state)) == 1 and os.path.exists(tmp_path / "steering.yaml")
