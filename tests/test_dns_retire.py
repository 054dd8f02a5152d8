"""``retire`` frees what only it holds and never changes what anyone else still holds."""

from __future__ import annotations

import gc
import os
import weakref
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steering import retire as retire_mod
from steering.model import Overrides, TargetHealth
from steering.planner import plan
from steering.replan import Replanner
from steering.retire import retire
from steering.store import codec
from tests.support import EXAMPLE_CONFIG


@dataclass(frozen=True)
class Node:
    name: str
    kids: tuple[Any, ...]
    attrs: dict[str, Any]


class Probe:
    """A leaf we can watch die (weakref), the way a render's objects would."""


KINDS = ("int", "probe", "dict", "list", "tuple", "node")


@st.composite
def recipes(draw: st.DrawFn) -> list[tuple[str, list[int], bool]]:
    """An object graph as data (Hypothesis keeps what it draws alive, so the objects are built in the test):
    node i is (kind, the earlier nodes it holds, whether somebody else keeps it too); the last is the root.
    A node held by several is shared."""
    n = draw(st.integers(1, 30))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS[:2] if i == 0 else KINDS))
        kids = draw(st.lists(st.integers(0, i - 1), max_size=4)) if i and kind not in KINDS[:2] else []
        out.append((kind, kids, draw(st.booleans()) and i < n - 1))
    return out


def build(recipe: list[tuple[str, list[int], bool]]) -> tuple[list[Any], list[Any], list[weakref.ref[Probe]]]:
    built: list[Any] = []
    kept: list[Any] = []
    refs = []
    for i, (kind, kids, keep) in enumerate(recipe):
        parts = [built[j] for j in kids]
        if kind == "int":
            o: Any = 10**20 + i  # an int no cache holds
        elif kind == "probe":
            o = Probe()
            refs.append(weakref.ref(o))
        elif kind == "dict":
            o = {f"k{j}": v for j, v in enumerate(parts)}
        elif kind == "list":
            o = parts
        elif kind == "tuple":
            o = tuple(parts)
        else:
            o = Node(name=f"n{i}", kids=tuple(parts), attrs={"first": parts[:1]})
        built.append(o)
        if keep:
            kept.append(o)
    return [built[-1]], kept, refs


@settings(max_examples=200, deadline=None)
@given(recipes())
def test_what_others_hold_is_left_whole_and_the_rest_is_freed(recipe: list[tuple[str, list[int], bool]]) -> None:
    box, kept, refs = build(recipe)
    before = _plain(kept)
    held: set[int] = set()

    def mark(o: Any) -> None:  # everything reachable from what is kept must survive, and only that
        if id(o) in held:
            return
        held.add(id(o))
        if isinstance(o, dict):
            for v in o.values():
                mark(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                mark(v)
        elif isinstance(o, Node):
            mark(o.kids)
            mark(o.attrs)

    for o in kept:
        mark(o)
    gc.disable()  # reference counting alone must free it: no collection may hide a leak
    try:
        retire(box)
        assert box == []
        assert _plain(kept) == before  # nothing anyone else holds changed
        alive = [r() for r in refs]
        assert all(p is None or id(p) in held for p in alive)  # the rest is gone, freed by the walk
    finally:
        gc.enable()


def _plain(o: Any) -> Any:
    """A comparable form (probes by their presence only: deep copies are other objects)."""
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [type(o).__name__, *[_plain(v) for v in o]]
    if isinstance(o, Node):
        return ["Node", o.name, _plain(o.kids), _plain(o.attrs)]
    if isinstance(o, Probe):
        return "probe"
    return o


def test_a_decoded_table_is_taken_apart_and_a_table_sharing_its_routes_is_untouched() -> None:
    from steering.config import load_config
    from steering.model import Observed

    config = load_config(EXAMPLE_CONFIG)
    observed = Observed(health={t: TargetHealth(status="healthy", capacity=1000.0, load=100.0)
                                for t in [*(r.id for r in config.regions), *(s.id for s in config.sites)]})
    first = plan(config, observed, Overrides(), None, 0.0)
    enc = codec.encode_table(first, 1 << 20)
    decoded = codec.decode_table(enc.pointer, enc.chunks)
    box = [decoded]
    del decoded
    assert retire(box) > len(first.sites) + len(first.regions)  # every state and route taken apart

    # The replanner's next table reuses the routes of the one it follows: retiring that one leaves them be.
    replanner = Replanner()
    t1 = replanner.plan(config, observed, Overrides(), None, 0.0)
    site = next(iter(config.sites)).id
    health = dict(observed.health)
    health[site] = TargetHealth(status="unhealthy")
    t2 = replanner.plan(config, Observed(health=health), Overrides(), t1, 1.0)
    want = t2.to_json()
    box = [t1]
    del t1
    retire(box)
    assert t2.to_json() == want


def test_a_parsed_table_document_is_freed_by_retire(monkeypatch) -> None:
    """``RoutingTable.from_json`` takes its parsed JSON apart piecewise instead of dropping it whole."""
    import steering.table as table_mod
    from steering.config import load_config
    from steering.model import Observed

    config = load_config(EXAMPLE_CONFIG)
    observed = Observed(health={t: TargetHealth(status="healthy", capacity=1000.0, load=100.0)
                                for t in [*(r.id for r in config.regions), *(s.id for s in config.sites)]})
    table = plan(config, observed, Overrides(), None, 0.0)
    taken: list[int] = []

    def counting(box: list[Any]) -> int:
        n = retire(box)
        taken.append(n)
        return n

    monkeypatch.setattr(table_mod, "retire", counting)
    assert table_mod.RoutingTable.from_json(table.to_json()) == table
    # the document's dicts: one per service, geo, route, site and region at least
    routes = sum(len(s.geos) for s in table.services.values())
    assert len(taken) == 1 and taken[0] > routes + len(table.sites) + len(table.regions)


async def test_apply_table_frees_the_table_it_replaces_off_the_loop(tmp_path) -> None:
    """The table served until a swap is taken apart by ``retire`` in a worker thread. A reference held across
    the swap (there was one: the old version check) made retire leave it whole, and it then went in one
    cascade of deallocations on the event loop's thread when ``apply_table`` returned."""
    import threading

    from tests.support.dns_server import load, table_with

    cfg = load(tmp_path)
    from dnsserver.server import DnsServer

    enc = codec.encode_table(table_with(cfg, 1, {"api.example.test.": {"world": {"eu-west-1": 1000}}}), 1 << 20)
    first = codec.decode_table(enc.pointer, enc.chunks)  # objects of its own, as from etcd
    freed_in: list[str] = []
    ref = weakref.ref(first, lambda _: freed_in.append(threading.current_thread().name))
    server = DnsServer(cfg, first)
    del first
    await server.apply_table(table_with(cfg, 2, {"api.example.test.": {"world": {"us-west-2": 1000}}}))
    assert ref() is None
    assert freed_in and freed_in[0] != threading.main_thread().name, freed_in
    assert server.snapshot.table is not None and server.snapshot.table.version == 2


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(retire_mod._TRIM is None, reason="no malloc_trim in this C library (not glibc)")
def test_trim_gives_freed_pages_back_to_the_system() -> None:
    # Blocks of 4 KB come from malloc, not the interpreter's small-object arenas; one in sixteen kept alive
    # pins the heap below the others, so freeing them leaves their pages resident until a trim.
    blocks = [bytes(4000) for _ in range(40_000)]  # ~160 MB
    kept = blocks[::16]
    for i in range(len(blocks)):
        blocks[i] = b""
    del blocks
    before = _rss()
    assert retire_mod.trim() is True
    after = _rss()
    assert before - after > 50 * 2**20, (before, after)  # most of the ~150 MB freed went back
    assert len(kept) == 2500 and all(len(b) == 4000 for b in kept)  # what is alive is untouched
