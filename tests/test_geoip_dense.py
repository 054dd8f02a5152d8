"""The dense block index of a large map (dnsserver/clientkeys.py, docs/geoip.md): the client tuple GeoMap.key
gives and the dicts give, in ``ClientKeys.ecs`` and in the fast path's inline walk, for configured and GeoIP
maps; which maps get it; a reload between a dict index and a dense one answers with one map or the other."""

from __future__ import annotations

import struct
import sys
import threading
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.clientkeys import DENSE_MIN_BLOCKS, DICT_ENTRY_BYTES, ClientKeys, dense_index
from dnsserver.fastpath import FastPath
from steering import pick
from steering.config import Geo
from steering.geoip import Codes, DatabaseInfo, GeoIpMap, compile_networks
from steering.topology import GeoMap
from tests.support.strategies import ecs_options, geomaps
from tests.test_geoip import GEOS, databases

NAME = b"\x03api\x07example\x04test\x00"
SPLIT = pick.split([("a", 3), ("b", 7)])
SEED = 77
AT = 12 + len(NAME) + 4  # the answer's first two bytes: (geo, picked target)


def geoip_map(entries: list[tuple[int, int, int, Codes]], explicit: list[str]) -> GeoMap:
    geos = [Geo(id="lab", prefer=("r",), prefixes=tuple(explicit)), *GEOS[:4],
            Geo(id="world", prefer=("r",), default=True)]
    prefixes = compile_networks(entries, geos, "world")
    info = DatabaseInfo("x", "t", 0, len(entries), True, (0, 0, 0))
    return GeoMap(geos, "world", GeoIpMap(tuple(g.id for g in geos), prefixes, info, 0.0))


@st.composite
def options_near(draw: st.DrawFn, gm: GeoMap) -> bytes:
    """ECS option data for an address in or near one of the map's prefixes (or anywhere), with a source
    length at a level, just beside one, or any."""
    code = draw(st.sampled_from([1, 2]))
    fam, width = (4, 32) if code == 1 else (6, 128)
    nets = gm.prefixes(fam)
    near = draw(st.booleans())
    if nets and near:
        plen, net, _geo = draw(st.sampled_from(nets))
        addr = net + draw(st.integers(0, (1 << (width - plen)) - 1))
        addr ^= draw(st.sampled_from([0, 1 << (width - plen)])) if plen else 0  # or the block beside it
    else:
        addr = draw(st.integers(0, (1 << width) - 1))
    src = min(draw(st.one_of(st.sampled_from([0, 15, 16, 17, 23, 24, 25, 31, 32, 40, 47, 48, 55, 56, 57, 64]),
                             st.integers(0, width))), width)
    addr = addr >> (width - src) << (width - src) if src else 0
    return bytes((0, code, src, 0)) + addr.to_bytes(width // 8, "big")[:(src + 7) // 8]


def agrees(gm: GeoMap, dense: ClientKeys, dicts: ClientKeys, opt: bytes) -> None:
    ref = gm.key(4 if opt[1] == 1 else 6, opt[4:], opt[2])
    assert dense.ecs(opt) == dicts.ecs(opt) == (ref.geo, ref.subnet, ref.scope), opt.hex()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_dense_index_of_configured_prefixes_matches_geomap(data: st.DataObject) -> None:
    geomap = data.draw(geomaps())
    dense, dicts = ClientKeys(geomap, dense=True), ClientKeys(geomap, dense=False)
    # IPv4 whenever the index reaches /24; IPv6's levels (/32, /48, /56) are not 8 bits apart: dicts
    assert (dense._fam[1].dense is not None) == (24 in [b for b, _n, _t in dicts._fam[1].levels])
    assert dense._fam[2].dense is None and dicts._fam[1].dense is None
    for _ in range(30):
        agrees(geomap, dense, dicts, data.draw(ecs_options(geomap)))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_dense_index_of_a_geoip_map_matches_geomap(data: st.DataObject) -> None:
    gm = geoip_map(*data.draw(databases()))
    dense, dicts = ClientKeys(gm, dense=True), ClientKeys(gm, dense=False)
    for code in (1, 2):  # both families when the index reaches the root level (/24, /16)
        root = 24 if code == 1 else 16
        assert (dense._fam[code].dense is not None) == (root in [b for b, _n, _t in dicts._fam[code].levels])
    for _ in range(30):
        agrees(gm, dense, dicts, data.draw(options_near(gm)))


def fast_path(gm: GeoMap, keys: ClientKeys) -> FastPath:
    """A fast path over one steered name whose answer in geo g, target t is the two bytes (g, t), placing
    clients with ``keys`` (installed as a reload installs a new map's index)."""

    def variant(tag: tuple[int, int]) -> tuple[object, ...]:
        return (0, b"\x00\x01\x00\x01\x00\x00\x00\x00", b"\x00\x01\x00\x01\x00\x00\x00\x01", bytes(tag), [0], [0])

    splits = tuple((pick.slot_table(SPLIT, SEED), (variant((g, 0)), variant((g, 1))), ([0], [0]), None)
                   for g in range(len(gm.ids)))
    snapshot = SimpleNamespace(entries={NAME + b"\x00\x01\x00\x01": (SEED, splits)})  # all FastPath reads
    fast = FastPath(gm, snapshot)  # type: ignore[arg-type]
    fast.set_geomap(gm, keys)
    return fast


def query(opt: bytes) -> bytes:
    ecs = b"\x00\x08" + struct.pack("!H", len(opt)) + opt
    return (b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01" + NAME + b"\x00\x01\x00\x01"
            + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + struct.pack("!H", len(ecs)) + ecs)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_fast_paths_inline_dense_walk_matches_geomap(data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        gm: GeoMap = data.draw(geomaps())
        options = ecs_options(gm)  # type: ignore[arg-type]
    else:
        gm = geoip_map(*data.draw(databases()))
        options = options_near(gm)
    fast = fast_path(gm, ClientKeys(gm, dense=True))
    stale = data.draw(st.booleans())
    fast.set_stale(stale)  # EDE 3 goes before the ECS option: 6 bytes more before the scope
    ede = 6 if stale else 0
    for _ in range(20):
        opt = data.draw(options)
        wire = query(opt)
        got = fast.answer(wire, 0x0100007F, 0)
        assert got is not None and got == fast.answer_general(wire, 0x0100007F, 0), wire.hex()
        ref = gm.key(4 if opt[1] == 1 else 6, opt[4:], opt[2])
        want = (ref.geo, pick.pick(SPLIT, ref.subnet, SEED), ref.scope)
        assert (got[AT], got[AT + 1], got[AT + 2 + 9 + 9 + ede]) == want, opt.hex()


def test_small_maps_keep_their_dicts_and_large_ones_go_dense() -> None:
    small = GeoMap(GEOS, "world")
    assert ClientKeys(small).sizes() == {4: (3, 0), 6: (2, 0)}  # the lab's prefixes (and blocks above), in dicts
    # IPv4 /24s of three geos in every other block from 20.0.0.0: enough blocks for their dicts to take
    # half of what the /24 array takes (more than DENSE_MIN_BLOCKS)
    count = (1 << 24) // (2 * DICT_ENTRY_BYTES) + 10
    assert count > DENSE_MIN_BLOCKS
    blocks = [(24, (20 << 24) + (i << 9), i % 3) for i in range(count)]
    ids = tuple(g.id for g in GEOS)
    big = GeoMap(GEOS, "world", GeoIpMap(ids, {4: tuple(blocks), 6: ()}, DatabaseInfo("x", "t", 0, 1, True, (0, 0, 0)),
                                         0.0))
    keys = ClientKeys(big)
    (v4_dicts, v4_bytes), (_v6_dicts, v6_bytes) = keys.sizes()[4], keys.sizes()[6]
    assert v4_bytes == 1 << 24 and v6_bytes == 0  # one byte per /24; IPv6 has no prefix here
    assert v4_dicts == len({b[1] >> 16 for b in blocks}) + 2  # the /16 level stays (sources /16 to /23), lab too
    dicts = ClientKeys(big, dense=False)
    for _plen, net, geo in blocks[::997]:
        for src in (16, 20, 24, 26):
            opt = bytes((0, 1, src, 0)) + (net >> (32 - src) << (32 - src)).to_bytes(4, "big")[:(src + 7) // 8]
            assert keys.ecs(opt) == dicts.ecs(opt)
        assert keys.ecs(bytes((0, 1, 24, 0)) + net.to_bytes(4, "big")[:3])[0] == geo  # type: ignore[index]
    # the rule: enough blocks, and arrays at most twice what the dicts take
    assert not dense_index(DENSE_MIN_BLOCKS - 1, 0)
    assert dense_index(DENSE_MIN_BLOCKS, 2 * DICT_ENTRY_BYTES * DENSE_MIN_BLOCKS)
    assert not dense_index(DENSE_MIN_BLOCKS, 2 * DICT_ENTRY_BYTES * DENSE_MIN_BLOCKS + 1)


def test_a_reload_between_dicts_and_a_dense_index_answers_with_one_map_or_the_other() -> None:
    # map A (prefixes, dicts) puts 20.1/16 in geo 0 and 2600:1::/32 in geo 1, map B (with GeoIP prefixes
    # elsewhere: both families dense) the other way round; queries run while the maps swap
    world = Geo(id="world", prefer=("r",), default=True)
    a = GeoMap([Geo(id="g0", prefer=("r",), prefixes=("20.1.0.0/16",)),
                Geo(id="g1", prefer=("r",), prefixes=("2600:1::/32",)), world], "world")
    geos_b = [Geo(id="g0", prefer=("r",), prefixes=("2600:1::/32",)),
              Geo(id="g1", prefer=("r",), prefixes=("20.1.0.0/16",)), world]
    geoip = GeoIpMap(("g0", "g1", "world"), {4: ((24, 30 << 24, 0),), 6: ((56, 0x2A00 << 112, 1),)},
                     DatabaseInfo("x", "t", 0, 2, True, (0, 0, 0)), 0.0)
    b = GeoMap(geos_b, "world", geoip)
    prepared = [(a, ClientKeys(a, dense=False)), (b, ClientKeys(b, dense=True))]
    assert prepared[1][1]._fam[1].dense is not None and prepared[1][1]._fam[2].dense is not None
    fast = fast_path(a, prepared[0][1])
    queries = [query(bytes((0, 1, 24, 0, 20, 1, 7))), query(bytes((0, 2, 56, 0, 0x26, 0, 0, 1, 0, 2, 0)))]
    want = [{fast.answer_general(q, 0x0100007F, 0) for q in queries}]
    fast.set_geomap(*prepared[1])
    want.append({fast.answer_general(q, 0x0100007F, 0) for q in queries})
    assert want[0].isdisjoint(want[1])  # the maps answer differently
    allowed = want[0] | want[1]
    stop = threading.Event()

    def swap() -> None:
        for i in range(1000):  # bounded
            if stop.is_set():
                return
            fast.set_geomap(*prepared[i % 2])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so swaps land between a query's steps
    swapper = threading.Thread(target=swap)
    try:
        swapper.start()
        for i in range(500_000):  # queries for as long as the maps swap (bounded)
            if not swapper.is_alive():
                break
            assert fast.answer(queries[i % 2], 0x0100007F, 0) in allowed
    finally:
        stop.set()
        swapper.join()
        sys.setswitchinterval(interval)
