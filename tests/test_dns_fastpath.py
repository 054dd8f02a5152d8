"""The hot path agrees with the reference code: client keys with GeoMap.key, replies with the slow path.

Pure (no sockets): Hypothesis drives random prefix sets, ECS options and
queries; whenever the fast path answers, the slow path (dnspython) must give
the same message, and the client key must be the one GeoMap computes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import dns.edns
import dns.flags
import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.clientkeys import ClientKeys
from dnsserver.fastpath import FastPath
from dnsserver.geo import GeoMap
from dnsserver.server import DnsServer
from steering import pick as shared
from steering.config import Geo, load_config
from tests.support.dns_server import load, table_with
from tests.support.dnssec import signed_config
from tests.support.strategies import ecs_options, geomaps

WEIGHTS = {"api.example.test.": {g: {"us-east-1": 500, "us-west-2": 300, "eu-west-1": 200}
                                 for g in ("na-east", "na-west", "europe", "south-america", "asia-pacific", "world")}}


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_client_keys_match_geomap(data: st.DataObject) -> None:
    geomap = data.draw(geomaps())
    keys = ClientKeys(geomap)
    for _ in range(20):
        opt = data.draw(ecs_options(geomap))
        family, src, addr = opt[1], opt[2], opt[4:]
        ref = geomap.key(4 if family == 1 else 6, addr, src)
        assert keys.ecs(opt) == (ref.geo, ref.subnet, ref.scope), opt.hex()


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_scope_is_the_longest_configured_prefix_inside_the_source(data: st.DataObject) -> None:
    # RFC 7871 §7.2.1, brute force over the configured networks: the scope is the bits used (source, at
    # most the key bits), or the longest configured prefix lying inside that block when one does
    geomap = data.draw(geomaps())
    for _ in range(20):
        opt = data.draw(ecs_options(geomap))
        family, src, raw = (4 if opt[1] == 1 else 6), opt[2], opt[4:]
        width = 32 if family == 4 else 128
        bits = min(src, geomap.key_bits[family])
        network = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
        block = network((int.from_bytes(raw.ljust(width // 8, b"\0"), "big") >> (width - bits) << (width - bits),
                         bits))
        inside = [plen for plen, net in geomap.networks[family]
                  if plen > bits and network((net, plen)).subnet_of(block)]  # type: ignore[arg-type]
        assert geomap.key(family, raw, src).scope == max([bits, *inside]), opt.hex()


@pytest.mark.parametrize("opt", [b"", b"\x00\x01\x18", b"\x00\x03\x18\x00\x01\x02\x03", b"\x01\x01\x18\x00\x01\x02\x03",
                                 b"\x00\x01\x18\x05\x01\x02\x03",  # scope set in a query
                                 b"\x00\x01\x18\x00\x01\x02",  # address shorter than the source prefix
                                 b"\x00\x01\x17\x00\x01\x02\x03",  # bits beyond the source prefix set
                                 b"\x00\x01\x21\x00\x01\x02\x03\x04\x05"])  # /33 for IPv4
def test_client_keys_reject_malformed(opt: bytes) -> None:
    keys = ClientKeys(GeoMap([Geo(id="world", prefer=("r",), default=True)], "world"))
    assert keys.ecs(opt) is None


@pytest.fixture(scope="module", params=["unsigned", "signed"])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> DnsServer:
    # signed: example.test with DNSSEC (docs/dnssec.md), so DO=1 queries get the signed variants
    directory = Path(tmp_path_factory.mktemp("fast"))
    cfg = load(directory) if request.param == "unsigned" else load_config(signed_config(directory)[0])
    return DnsServer(cfg, table_with(cfg, 1, WEIGHTS))


# EDNS options beside ECS: ignored ones (padding, an unknown code, an EDE in a query) and ones the slow path
# answers (COOKIE well-formed or not, NSID, keepalive: over TCP only)
OTHER_OPTIONS = [None, (12, b""), (12, bytes(30)), (65001, b"x"), (15, b"\x00\x03"), (10, b"abcdefgh"), (10, b"abc"),
                 (10, bytes(24)), (3, b""), (11, b""), (11, b"\x00\x10")]


@contextlib.contextmanager
def stale_answers(server: DnsServer, stale: bool) -> Iterator[None]:
    """The module's server with its control plane away (its table is old) for the block's duration."""
    server.set_control_plane_reachable(not stale)
    try:
        assert server.fast.stale == server.slow.stale == stale
        yield
    finally:
        server.set_control_plane_reachable(True)


NAMES = ["api.example.test", "API.Example.TEST", "aPi.eXample.test", "www.example.test", "example.test",
         "video.example.test", "missing.example.test", "mail.example.test", "other.test", "www.example.com"]
TYPES = ["A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "ANY", "HTTPS", "SRV", "CAA"]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(NAMES), qtype=st.sampled_from(TYPES), edns=st.sampled_from([None, 0]),
       payload=st.sampled_from([512, 600, 1232, 4096]), dnssec=st.booleans(), rd=st.booleans(), cd=st.booleans(),
       ecs=st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([0, 16, 24, 26, 32]))),
       ecs6=st.one_of(st.none(), st.tuples(st.integers(0, 2**128 - 1), st.sampled_from([32, 48, 56, 64]))),
       host=st.sampled_from(["127.0.0.1", "127.1.2.3", "127.3.0.9", "::1", "::ffff:127.2.0.1"]),
       tcp=st.sampled_from([0, 1]), other=st.sampled_from(OTHER_OPTIONS), other_first=st.booleans(),
       stale=st.booleans())
def test_fast_path_replies_equal_slow_path(server: DnsServer, name: str, qtype: str, edns: int | None, payload: int,
                                           dnssec: bool, rd: bool, cd: bool, ecs: tuple[int, int] | None,
                                           ecs6: tuple[int, int] | None, host: str, tcp: int,
                                           other: tuple[int, bytes] | None, other_first: bool, stale: bool) -> None:
    options: list[dns.edns.Option] = []
    if ecs is not None:
        addr = ecs[0] >> (32 - ecs[1]) << (32 - ecs[1]) if ecs[1] else 0
        options = [dns.edns.ECSOption(str(ipaddress.IPv4Address(addr)), ecs[1])]
    elif ecs6 is not None:
        addr = ecs6[0] >> (128 - ecs6[1]) << (128 - ecs6[1])
        options = [dns.edns.ECSOption(str(ipaddress.IPv6Address(addr)), ecs6[1])]
    if other is not None:
        extra = dns.edns.GenericOption(*other)
        options = [extra, *options] if other_first else [*options, extra]
    q = dns.message.make_query(name, qtype, use_edns=0 if options else edns, payload=payload,
                               want_dnssec=dnssec, options=options or None)
    q.flags = (q.flags & ~dns.flags.RD) | (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    wire = q.to_wire()
    with stale_answers(server, stale):
        fast = server.fast.answer(wire, host, tcp)
        general = server.fast.answer_general(wire, host, tcp)
        slow = server.slow.answer(server.snapshot, wire, host, tcp)
    assert fast == general
    if other is not None and other[0] in server.slow.routed[tcp]:
        assert fast is None  # COOKIE, NSID, keepalive over TCP: the slow path answers them
    if fast is None:
        return  # the slow path's own rules are tested over sockets elsewhere
    a, b = dns.message.from_wire(fast), dns.message.from_wire(slow)
    # CD: the fast path copies it (RFC 4035 §3.1.6); dnspython's make_response in the slow path does not
    assert (a.id, a.flags & ~dns.flags.CD, a.ednsflags, a.edns, a.payload) == (
        b.id, b.flags & ~dns.flags.CD, b.ednsflags, b.edns, b.payload)
    assert a.flags & dns.flags.CD == (dns.flags.CD if cd else 0)
    assert a.question == b.question and a.question[0].name.to_text() == name + "."  # 0x20 case kept
    assert a.answer == b.answer and a.authority == b.authority
    assert [o.to_wire() for o in a.options] == [o.to_wire() for o in b.options]  # EDE 3, ECS echo and scope
    has_ede = dns.edns.EDE in [o.otype for o in a.options]
    assert not has_ede if not stale else has_ede or a.edns < 0 or name.lower() != "api.example.test"
    assert len(fast) <= len(slow)  # the same message; the pre-rendered one may compress better


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(NAMES), qtype=st.sampled_from(TYPES), edns=st.sampled_from([None, 0, 1]),
       payload=st.sampled_from([0, 511, 512, 600, 1232, 4096]), dnssec=st.booleans(),
       family=st.sampled_from([1, 2, 3]), src=st.integers(0, 130), addr=st.binary(min_size=0, max_size=17),
       scope=st.sampled_from([0, 0, 0, 0, 5]), extra=st.sampled_from(OTHER_OPTIONS),
       ecs=st.booleans(), flips=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=2),
       host=st.sampled_from([0x0100007F, 0x0302017F, b"\x00" * 15 + b"\x01", "127.3.0.9"]),
       tcp=st.sampled_from([0, 1]), stale=st.booleans())
def test_hot_path_is_byte_identical_to_its_reference(
        server: DnsServer, name: str, qtype: str, edns: int | None, payload: int, dnssec: bool, family: int,
        src: int, addr: bytes, scope: int, extra: tuple[int, bytes] | None, ecs: bool, flips: list[tuple[int, int]],
        host: object, tcp: int, stale: bool) -> None:
    # raw ECS options, valid or not (any family, source, address length, trailing bits, scope), other
    # options beside them, and flipped bytes: ``answer`` must give exactly what ``answer_general`` gives
    options: list[dns.edns.Option] = []
    if ecs and family != 3 and scope == 0:  # mostly valid: the address as long as the source says, masked
        src = min(src, 32 if family == 1 else 128)
        nb = (src + 7) >> 3
        raw = bytearray(addr[:nb].ljust(nb, b"\x7f"))
        if src & 7 and len(addr) != 1:
            raw[-1] &= 0xFF << (8 - (src & 7)) & 0xFF
        addr = bytes(raw)
    if ecs:
        options.append(dns.edns.GenericOption(8, struct.pack("!HBB", family, src, scope) + addr))
    if extra is not None:
        options.append(dns.edns.GenericOption(*extra))
    q = dns.message.make_query(name, qtype, use_edns=edns if edns is not None or not options else 0,
                               payload=payload, want_dnssec=dnssec, options=options or None)
    wire = bytearray(q.to_wire())
    for pos, value in flips:
        if pos < len(wire):
            wire[pos] = value
    w = bytes(wire)
    with stale_answers(server, stale):
        assert server.fast.answer(w, host, tcp) == server.fast.answer_general(w, host, tcp), w.hex()


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["api.example.test", "API.Example.TEST", "www.example.test"]),
       qtype=st.sampled_from(["A", "AAAA", "ANY", "TXT"]), payload=st.sampled_from([512, 1232, 4096]),
       dnssec=st.booleans(), family=st.sampled_from([1, 2]), src=st.integers(0, 128),
       addr=st.binary(min_size=16, max_size=16), near=st.sampled_from(["", "7f02", "c63364"]),
       tcp=st.sampled_from([0, 1]))
def test_hot_path_ecs_picks_like_its_reference(server: DnsServer, name: str, qtype: str, payload: int,
                                               dnssec: bool, family: int, src: int, addr: bytes, near: str,
                                               tcp: int) -> None:
    # valid ECS options for steered names, often inside the configured prefixes: geo, pick and scope
    src = min(src, 32 if family == 1 else 128)
    if near:  # a /16 geo, a /24 block refined by /26 geos; a /48 geo in a refined /32
        addr = bytes.fromhex(near if family == 1 else "20010db80002") + addr[6:]
    nb = (src + 7) >> 3
    raw = bytearray(addr[:nb])
    if src & 7:
        raw[-1] &= 0xFF << (8 - (src & 7)) & 0xFF
    opt = dns.edns.GenericOption(8, struct.pack("!HBB", family, src, 0) + bytes(raw))
    w = dns.message.make_query(name, qtype, use_edns=0, payload=payload, want_dnssec=dnssec,
                               options=[opt]).to_wire()
    got = server.fast.answer(w, 0x0100007F, tcp)
    assert got is not None and got == server.fast.answer_general(w, 0x0100007F, tcp), w.hex()


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_hot_path_geo_and_pick_match_geomap(data: st.DataObject) -> None:
    # random prefix sets: the hot path's inline block lookup must give GeoMap.key's geo, pick and scope.
    # One steered name whose answer in geo g, target t is the two bytes (g, t) (weights 3:7).
    geomap = data.draw(geomaps())
    name = b"\x03api\x07example\x04test\x00"
    split = shared.split([("a", 3), ("b", 7)])

    def variant(tag: tuple[int, int]) -> tuple[object, ...]:
        return (0, b"\x00\x01\x00\x01\x00\x00\x00\x00", b"\x00\x01\x00\x01\x00\x00\x00\x01", bytes(tag), [0], [0])

    splits = tuple((shared.slot_table(split, 77), (variant((g, 0)), variant((g, 1))), ([0], [0]), None)
                   for g in range(len(geomap.ids)))
    snapshot = SimpleNamespace(entries={name + b"\x00\x01\x00\x01": (77, splits)})  # all FastPath reads
    fast = FastPath(geomap, snapshot)  # type: ignore[arg-type]
    stale = data.draw(st.booleans())
    fast.set_stale(stale)  # EDE 3 goes before the ECS option: 6 bytes more before the scope
    at = 12 + len(name) + 4
    for _ in range(20):
        opt = data.draw(ecs_options(geomap))
        family, src = opt[1], opt[2]
        ecs = b"\x00\x08" + struct.pack("!H", len(opt)) + opt
        wire = (b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01" + name + b"\x00\x01\x00\x01"
                + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + struct.pack("!H", len(ecs)) + ecs)
        got = fast.answer(wire, 0x0100007F, 0)
        assert got is not None and got == fast.answer_general(wire, 0x0100007F, 0), wire.hex()
        ref = geomap.key(4 if family == 1 else 6, opt[4:], src)
        pick = shared.pick(split, ref.subnet, 77)
        ede = b"\x00\x0f\x00\x02\x00\x03" if stale else b""
        assert got[at + 2 + 11:at + 2 + 11 + len(ede)] == ede
        assert (got[at], got[at + 1], got[at + 2 + 9 + 9 + len(ede)]) == (ref.geo, pick, ref.scope), opt.hex()
