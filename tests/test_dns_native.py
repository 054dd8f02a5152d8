"""The hot path in C (dnsserver/_hot.c) answers exactly as the Python closure it mirrors.

Reply by reply, over random queries (valid and mangled), hosts in every form, stale or not, dense and
dict block indexes, random geo maps and the rate limit's own counting: the same bytes (or None, or b""
for a drop) and the same counters. Then the batched UDP loop in C over real sockets, with and without
the rate limit, against the same server answering through the Python loop.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import struct
import zlib
from array import array
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dns.edns
import dns.message
import dns.query
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver import fastpath
from dnsserver.clientkeys import ClientKeys
from dnsserver.fastpath import FastPath
from dnsserver.metrics import (
    UDP_BATCH,
    UDP_LATENCY_BOUNDS,
    UDP_LATENCY_SLOTS,
    UDP_QUERY,
    UDP_TIMING_SLOTS,
    UDP_WAIT,
    Stats,
    StatsCollector,
)
from dnsserver.server import DnsServer
from dnsserver.udpbatch import BatchUdpWorker, batch_available
from steering import pick as shared
from steering.config import load_config
from tests.support.dns_server import load, table_with
from tests.support.dnssec import signed_config
from tests.support.strategies import ecs_options, geomaps

pytestmark = pytest.mark.skipif(fastpath._hot is None and shutil.which("cc") is None,
                                reason="no C compiler here: the server answers through the Python closure")

WEIGHTS = {"api.example.test.": {g: {"us-east-1": 500, "us-west-2": 300, "eu-west-1": 200}
                                 for g in ("na-east", "na-west", "europe", "south-america", "asia-pacific", "world")}}
NAMES = ["api.example.test", "API.Example.TEST", "www.example.test", "example.test", "video.example.test",
         "missing.example.test", "mail.example.test", "other.test"]
TYPES = ["A", "AAAA", "MX", "TXT", "NS", "SOA", "ANY", "HTTPS", "SRV"]
OTHER = [None, (12, b""), (65001, b"x"), (10, bytes(8)), (3, b""), (11, b"")]
HOSTS = [0x0100007F, 0x0302017F, 0x0900037F, b"\x00" * 15 + b"\x01", "127.3.0.9", "::ffff:127.2.0.1"]


def test_the_native_hot_path_is_built_where_a_compiler_is() -> None:
    # CI has a compiler: a build that silently fell back to Python would measure and test the wrong thing
    assert fastpath._hot is not None, "dnsserver/_hot.c was not built: `make venv` (pip install -e .) builds it"
    assert fastpath.native_available()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=40), value=st.integers(0, 2**32 - 1))
def test_crc32_is_zlibs(data: bytes, value: int) -> None:
    assert fastpath._hot is not None
    assert fastpath._hot.crc32(data, value) == zlib.crc32(data, value)


@pytest.fixture(scope="module", params=["unsigned", "signed"])
def pair(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[DnsServer, FastPath]:
    """A server (answering natively) and a Python FastPath over the same snapshot and counters."""
    directory = Path(tmp_path_factory.mktemp("native"))
    cfg = load(directory) if request.param == "unsigned" else load_config(signed_config(directory)[0])
    server = DnsServer(cfg, table_with(cfg, 1, WEIGHTS))
    assert server.fast.native
    py = FastPath(server.geomap, server.snapshot, server.slow.routed, native=False)
    py._cur = server.fast._cur  # one _Tables: the same counters
    py.answer = py._make_answer(None)
    assert not py.native
    return server, py


def cells(fast: FastPath) -> list[int]:
    """Every counter the hot path bumps, in a fixed order."""
    out: list[int] = []

    def walk(x: Any) -> None:
        if isinstance(x, list):
            out.extend(x)
        elif isinstance(x, tuple):
            for y in x:
                walk(y)

    for v in fast.tables.entries.values():
        walk(v)
    return out


def wire(name: str, qtype: str, edns: int | None, payload: int, dnssec: bool, ecs: bytes | None,
         other: tuple[int, bytes] | None, flips: list[tuple[int, int]]) -> bytes:
    options: list[dns.edns.Option] = []
    if ecs is not None:
        options.append(dns.edns.GenericOption(8, ecs))
    if other is not None:
        options.append(dns.edns.GenericOption(other[0], other[1]))
    q = dns.message.make_query(name, qtype, use_edns=edns if edns is not None or not options else 0,
                               payload=payload, want_dnssec=dnssec, options=options or None)
    w = bytearray(q.to_wire())
    for pos, value in flips:
        if pos < len(w):
            w[pos] = value
    return bytes(w)


@settings(max_examples=250, deadline=None)
@given(name=st.sampled_from(NAMES), qtype=st.sampled_from(TYPES), edns=st.sampled_from([None, 0, 1]),
       payload=st.sampled_from([0, 512, 600, 1232, 4096]), dnssec=st.booleans(),
       family=st.sampled_from([1, 2, 3]), src=st.integers(0, 130), addr=st.binary(max_size=17),
       valid=st.booleans(), other=st.sampled_from(OTHER), ecs=st.booleans(),
       flips=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=2),
       host=st.sampled_from(HOSTS), tcp=st.sampled_from([0, 1]), stale=st.booleans(),
       truncate=st.integers(0, 3))
def test_native_answers_as_the_python_closure(
        pair: tuple[DnsServer, FastPath], name: str, qtype: str, edns: int | None, payload: int, dnssec: bool,
        family: int, src: int, addr: bytes, valid: bool, other: tuple[int, bytes] | None, ecs: bool,
        flips: list[tuple[int, int]], host: Any, tcp: int, stale: bool, truncate: int) -> None:
    server, py = pair
    if valid and family != 3:  # mostly well-formed ECS: the address as long as the source says, masked
        src = min(src, 32 if family == 1 else 128)
        nb = (src + 7) >> 3
        raw = bytearray(addr[:nb].ljust(nb, b"\x7f"))
        if src & 7:
            raw[-1] &= 0xFF << (8 - (src & 7)) & 0xFF
        addr = bytes(raw)
    w = wire(name, qtype, edns, payload, dnssec, struct.pack("!HBB", family, src, 0) + addr if ecs else None,
             other, flips)
    if truncate:
        w = w[:len(w) - truncate * 7]
    server.fast.set_stale(stale)
    py.set_stale(stale)
    try:
        before = cells(server.fast)
        got = server.fast.answer(w, host, tcp)
        mid = cells(server.fast)
        want = py.answer(w, host, tcp)
        after = cells(server.fast)
    finally:
        server.fast.set_stale(False)
        py.set_stale(False)
    assert got == want, w.hex()
    # the same counters moved by the same amounts
    assert [b - a for a, b in zip(before, mid, strict=True)] == [b - a for a, b in zip(mid, after, strict=True)]


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_native_geo_and_pick_match_with_either_block_index(data: st.DataObject) -> None:
    # random prefix sets, dict levels or the dense arrays: C and Python give the same bytes, the geo, pick and
    # scope GeoMap.key gives
    geomap = data.draw(geomaps())
    dense = data.draw(st.sampled_from([None, True]))
    name = b"\x03api\x07example\x04test\x00"
    split = shared.split([("a", 3), ("b", 7)])

    def variant(tag: tuple[int, int]) -> tuple[object, ...]:
        return (0, b"\x00\x01\x00\x01\x00\x00\x00\x00", b"\x00\x01\x00\x01\x00\x00\x00\x01", bytes(tag), [0], [0])

    splits = tuple((shared.slot_table(split, 77), (variant((g, 0)), variant((g, 1))), ([0], [0]), None)
                   for g in range(len(geomap.ids)))
    snapshot = SimpleNamespace(entries={name + b"\x00\x01\x00\x01": (77, splits)})
    c_fast = FastPath(geomap, snapshot, native=True)  # type: ignore[arg-type]
    py_fast = FastPath(geomap, snapshot, native=False)  # type: ignore[arg-type]
    keys = ClientKeys(geomap, dense=dense)
    c_fast.set_geomap(geomap, keys)
    py_fast.set_geomap(geomap, keys)
    at = 12 + len(name) + 4
    for _ in range(20):
        opt = data.draw(ecs_options(geomap))
        family, src = opt[1], opt[2]
        ecs = b"\x00\x08" + struct.pack("!H", len(opt)) + opt
        w = (b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01" + name + b"\x00\x01\x00\x01"
             + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + struct.pack("!H", len(ecs)) + ecs)
        got = c_fast.answer(w, 0x0100007F, 0)
        assert got is not None and got == py_fast.answer(w, 0x0100007F, 0), w.hex()
        ref = geomap.key(4 if family == 1 else 6, opt[4:], src)
        assert (got[at], got[at + 1], got[at + 2 + 9 + 9]) == (ref.geo, shared.pick(split, ref.subnet, 77),
                                                                ref.scope), opt.hex()


RRL = {"enabled": True, "responses_per_second": 2, "nxdomains_per_second": 1, "errors_per_second": 1, "slip": 2,
       "exempt": ["10.0.0.0/8"]}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> DnsServer:
    return DnsServer(load(tmp_path_factory.mktemp("nativerrl"), dns={"rrl": RRL}), None)


@settings(max_examples=50, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(NAMES[:6]), st.sampled_from(["A", "AAAA", "TXT"]),
                                 st.sampled_from([None, 0]), st.sampled_from([0x0100007F, 0x0A00007F,
                                                                              b"\x00" * 15 + b"\x01"]),
                                 st.integers(0, 3)), max_size=60))
def test_native_rate_limit_counts_as_the_python_closure(limited: DnsServer,
                                                        events: list[tuple[str, str, int | None, Any, int]]) -> None:
    c_rrl, py_rrl = limited._rate_limiter(), limited._rate_limiter()
    assert c_rrl is not None and py_rrl is not None
    c_udp = FastPath(limited.geomap, limited.snapshot, limited.slow.routed, c_rrl, native=True).answer_udp
    py_udp = FastPath(limited.geomap, limited.snapshot, limited.slow.routed, py_rrl, native=False).answer_udp
    now = 500
    for name, qtype, edns, host, step in events:
        if step == 3:
            now += 1
        c_rrl.tick(now)
        py_rrl.tick(now)
        w = dns.message.make_query(name, qtype, use_edns=edns).to_wire()
        assert c_udp(w, host, 0) == py_udp(w, host, 0), (name, qtype, host, now)
    assert c_rrl.buckets == py_rrl.buckets


@pytest.fixture
def batch_server(tmp_path: Path) -> DnsServer:
    if not batch_available():
        pytest.skip("recvmmsg is not available here")
    cfg = load(tmp_path, dns={"rrl": {"enabled": True, "responses_per_second": 1000}})
    return DnsServer(cfg, table_with(cfg, 1, WEIGHTS))


def ask(port: int, wires: list[bytes]) -> list[bytes]:
    """Send every query at once (so the loop takes them as batches), then read the replies by id."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        for w in wires:
            c.sendto(w, ("127.0.0.1", port))
        got: dict[int, bytes] = {}
        while len(got) < len(wires):
            data, _ = c.recvfrom(65535)
            got[int.from_bytes(data[:2], "big")] = data
    return [got[int.from_bytes(w[:2], "big")] for w in wires]


def queries() -> list[bytes]:
    out = []
    for i, (name, qtype, edns) in enumerate([(n, t, e) for n in NAMES[:6] for t in ("A", "TXT", "SOA")
                                              for e in (None, 0)]):
        q = dns.message.make_query(name, qtype, use_edns=edns)
        q.id = 1000 + i
        out.append(q.to_wire())
    ecs = dns.edns.ECSOption("198.51.100.0", 24)
    for j in range(20):
        q = dns.message.make_query("api.example.test", "A", use_edns=0, options=[ecs])
        q.id = 2000 + j
        out.append(q.to_wire())
    return out


def test_the_native_batch_loop_answers_as_the_python_loop(batch_server: DnsServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server = batch_server
    assert server.rrl is not None
    wires = queries()
    replies = {}
    for native in ("1", "0"):
        monkeypatch.setenv("STEERING_DNS_NATIVE", native)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        worker = BatchUdpWorker(s, server.fast.answer_udp, server.handle_slow, server.rrl)
        worker.start()
        try:
            replies[native] = ask(s.getsockname()[1], wires)
        finally:
            worker.stop()
    for a, b in zip(replies["1"], replies["0"], strict=True):
        ma, mb = dns.message.from_wire(a), dns.message.from_wire(b)
        assert (ma.id, ma.rcode(), ma.answer, ma.authority, ma.options) == (
            mb.id, mb.rcode(), mb.answer, mb.authority, mb.options)
    assert all(dns.message.from_wire(r).answer for r in replies["1"][-20:])  # the steered ones, answered


def test_the_native_batch_loop_times_its_batches_into_the_servers_histograms(
        batch_server: DnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = batch_server
    wires = queries()
    for native in ("1", "0"):
        monkeypatch.setenv("STEERING_DNS_NATIVE", native)
        stats = Stats()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        worker = BatchUdpWorker(s, server.fast.answer_udp, server.handle_slow, server.rrl, stats)
        worker.start()
        try:
            assert len(ask(s.getsockname()[1], wires)) == len(wires)
        finally:
            worker.stop()
        t = stats.udp_timings
        n = len(UDP_LATENCY_BOUNDS) + 1
        wait, batch, query = t[UDP_WAIT:UDP_WAIT + n], t[UDP_BATCH:UDP_BATCH + n], t[UDP_QUERY:UDP_QUERY + n]
        if native == "0":  # the Python loop cannot see its wait for the interpreter: it measures nothing
            assert not stats.udp_timed and not any(t)
            continue
        assert stats.udp_timed
        # one observation of each per batch: every query answered, in 1 to len(wires) batches
        assert 1 <= sum(wait) == sum(batch) <= len(wires), (list(wait), list(batch))
        assert sum(query) == len(wires)  # one per query answered, from the kernel's receive stamp
        for at, counts in ((UDP_WAIT, wait), (UDP_BATCH, batch), (UDP_QUERY, query)):  # the longest: >= the mean
            total_ns, longest_ns = t[at + n], t[at + n + 1]
            assert 0 < total_ns / sum(counts) <= longest_ns <= total_ns and stats.udp_longest(at) == longest_ns / 1e9
        assert stats.udp_longest(UDP_BATCH) >= stats.udp_longest(UDP_WAIT)  # a batch's time holds its wait
        # scraped: cumulative buckets ending at the count, the sum in seconds
        fams = {f.name: f for f in StatsCollector(stats).collect()}
        for name, counts in (("steering_dns_udp_interpreter_wait_seconds", wait),
                             ("steering_dns_udp_batch_seconds", batch), ("steering_dns_udp_query_seconds", query)):
            samples = {(x.name, x.labels.get("le")): x.value for x in fams[name].samples}
            assert samples[(name + "_count", None)] == sum(counts) == samples[(name + "_bucket", "+Inf")]
            assert [samples[(name + "_bucket", repr(b))] for b in UDP_LATENCY_BOUNDS] == list(
                itertools.accumulate(counts))[:-1]


def test_the_native_loop_refuses_a_timings_buffer_of_another_shape() -> None:
    assert fastpath._hot is not None
    assert fastpath._hot.LATENCY_BOUNDS == UDP_LATENCY_BOUNDS  # the C loop's buckets are the exported ones
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # too short (the two-histogram shape of before included), not 'Q', read-only
        for bad in (array("Q", bytes(8 * 3)), array("Q", bytes(8 * 2 * UDP_LATENCY_SLOTS)),
                    bytearray(8 * UDP_TIMING_SLOTS), array("d", bytes(8 * UDP_TIMING_SLOTS)),
                    bytes(8 * UDP_TIMING_SLOTS)):
            with pytest.raises((ValueError, TypeError, BufferError)):
                fastpath._hot.serve(s.fileno(), False, lambda *a: None, lambda *a: None, str, None, None,
                                    [False], bad)
