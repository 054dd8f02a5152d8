"""Hypothesis properties of the rate limiter: the per-query closure agrees with a plain model written from
the rules (classes read by dnspython, prefixes by ``ipaddress``), prefix keys agree with ``ipaddress``
networks in every host form, and no reply or host makes ``check`` raise."""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.rrl import NXDOMAIN, RateLimiter, is_compact_denial
from dnsserver.server import DnsServer
from steering.config import Rrl, load_config
from tests.support.dns_server import load

ZONE = b"\x07example\x04test\x00"
QUERIES = [("www.example.test", "A"), ("WWW.Example.test", "A"), ("www.example.test", "AAAA"),
           ("api.example.test", "A"), ("mail.example.test", "AAAA"), ("a.nope.example.test", "A"),
           ("B.Nope.Example.Test", "TXT"), ("host.child.example.test", "A"), ("example.org", "A"),
           ("x.example.org", "MX")]
HOSTS = ["192.0.2.1", "192.0.2.200", "192.0.3.1", "10.9.8.7", "::ffff:192.0.2.77", "2001:db8:0:100::1",
         "2001:db8:0:1ff::2", "2001:db8:0:200::1"]


@pytest.fixture(scope="module")
def replies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[bytes, bytes]]]:
    server = DnsServer(load(tmp_path_factory.mktemp("rrlprop")))
    out = []
    for name, rdtype in QUERIES:
        q = dns.message.make_query(name, rdtype, use_edns=0).to_wire()
        r = server.handle(q, "127.0.0.1", 0)
        assert r is not None
        out.append((q, r))
    yield out


def forms(text: str) -> list[str | bytes | int]:
    """The address in each form a UDP loop hands over."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return [text, int.from_bytes(ip.packed, sys.byteorder)]
    return [text, ip.packed]


def model_key(reply: bytes, host: str, cfg: Rrl) -> tuple[object, ...]:
    """The bucket from the rules, with dnspython and ipaddress: (network, class, what)."""
    ip = ipaddress.ip_address(host)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    net = ipaddress.ip_network(f"{ip}/{cfg.ipv4_prefix if ip.version == 4 else cfg.ipv6_prefix}", strict=False)
    msg = dns.message.from_wire(reply)
    rcode = msg.rcode()
    if rcode == dns.rcode.NOERROR and (msg.flags & dns.flags.AA or msg.answer):
        q = msg.question[0]
        return net, "responses", q.name.to_text().lower(), q.rdtype
    if rcode == dns.rcode.NOERROR and msg.authority:
        return net, "referrals"
    if rcode == dns.rcode.NXDOMAIN:
        return net, "nxdomain", "example.test." if msg.question[0].name.to_text().lower().endswith(
            ".example.test.") else ""
    return net, "errors"


def rate(cfg: Rrl, cls: str) -> int:
    return {"nxdomain": cfg.nxdomains_per_second, "errors": cfg.errors_per_second}.get(cls, cfg.responses_per_second)


@settings(max_examples=150, deadline=None)
@given(rps=st.integers(1, 4), nx=st.integers(1, 3), err=st.integers(1, 3), slip=st.integers(0, 3),
       events=st.lists(st.tuples(st.integers(0, len(QUERIES) - 1), st.sampled_from(HOSTS), st.booleans(),
                                 st.integers(0, 2)), max_size=120))
def test_check_agrees_with_the_model(replies: list[tuple[bytes, bytes]], rps: int, nx: int, err: int, slip: int,
                                     events: list[tuple[int, str, bool, int]]) -> None:
    cfg = Rrl(responses_per_second=rps, nxdomains_per_second=nx, errors_per_second=err, slip=slip)
    check = RateLimiter(cfg, [ZONE]).check
    now = 1000
    counts: dict[tuple[object, ...], int] = {}
    for qi, host, text, step in events:
        if step == 2:  # a new second: the model forgets everything
            now += 1
            counts = {}
        q, r = replies[qi]
        key = model_key(r, host, cfg)
        counts[key] = n = counts.get(key, 0) + 1
        over = n - rate(cfg, str(key[1]))
        want = "full" if over <= 0 else "slip" if slip and over % slip == 0 else "drop"
        form = forms(host)[0 if text else 1]
        got = check(q, r, form, now)
        assert (got is None and want == "drop") or (got == r and want == "full") or (
            want == "slip" and got is not None and got != r and got[2] & 0x02 and got[:2] == r[:2])


@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, 2**32 - 1), b=st.integers(0, 2**32 - 1), same=st.integers(0, 32),
       prefix=st.integers(8, 32))
def test_ipv4_prefix_keys_match_networks(a: int, b: int, same: int, prefix: int) -> None:
    if same:  # often share the first `same` bits, so equal keys are exercised too
        b = (a >> (32 - same) << (32 - same)) | (b & ((1 << (32 - same)) - 1))
    lim = RateLimiter(Rrl(ipv4_prefix=prefix))
    ta, tb = str(ipaddress.IPv4Address(a)), str(ipaddress.IPv4Address(b))
    keys_a = {lim.prefix(f) for f in [*forms(ta), f"::ffff:{ta}", socket.inet_aton(ta)]}
    assert len(keys_a) == 1  # every form of one address, one bucket
    same_net = ipaddress.ip_network(f"{ta}/{prefix}", strict=False) == ipaddress.ip_network(f"{tb}/{prefix}",
                                                                                            strict=False)
    assert (lim.prefix(forms(tb)[1]) in keys_a) == same_net


@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, 2**128 - 1), b=st.integers(0, 2**128 - 1), same=st.integers(0, 128),
       prefix=st.integers(16, 128))
def test_ipv6_prefix_keys_match_networks(a: int, b: int, same: int, prefix: int) -> None:
    if same:
        b = (a >> (128 - same) << (128 - same)) | (b & ((1 << (128 - same)) - 1))
    ia, ib = ipaddress.IPv6Address(a), ipaddress.IPv6Address(b)
    if ia.ipv4_mapped is not None or ib.ipv4_mapped is not None:
        return  # those are IPv4 clients: the other property
    lim = RateLimiter(Rrl(ipv6_prefix=prefix))
    assert lim.prefix(str(ia)) == lim.prefix(ia.packed)
    same_net = ipaddress.ip_network(f"{ia}/{prefix}", strict=False) == ipaddress.ip_network(f"{ib}/{prefix}",
                                                                                            strict=False)
    assert (lim.prefix(ia.packed) == lim.prefix(ib.packed)) == same_net


@settings(max_examples=400, deadline=None)
@given(reply=st.binary(min_size=12, max_size=80), query=st.binary(max_size=40),
       host=st.one_of(st.integers(0, 2**32 - 1), st.binary(max_size=20), st.text(max_size=40)),
       slip=st.integers(0, 3), rounds=st.integers(1, 6))
def test_check_never_raises(reply: bytes, query: bytes, host: str | bytes | int, slip: int, rounds: int) -> None:
    lim = RateLimiter(Rrl(responses_per_second=1, nxdomains_per_second=1, errors_per_second=1, slip=slip,
                          exempt=("10.0.0.0/8", "2001:db8::/32")), [ZONE],
                      cookie_ok=lambda wire, text: len(text) > 100)
    for _ in range(rounds):
        got = lim.check(query, reply, host, 5)
        assert got is None or got == reply or (got[:2] == reply[:2] and got[2] & 0x02 and len(got) <= len(reply) + 12)


FAST_QUERIES = [("api.example.test", "A", None), ("API.example.TEST", "A", None), ("api.example.test", "A", 0),
                ("api.example.test", "A", "198.51.100.0"), ("api.example.test", "A", "203.0.113.0"),
                ("www.example.test", "A", None), ("www.example.test", "AAAA", 0), ("host.child.example.test", "A", 0),
                ("a.nope.example.test", "A", None), ("api.example.test", "TXT", 0), ("example.org", "A", None)]


@pytest.fixture(scope="module")
def fast_queries() -> list[bytes]:
    out = []
    for name, rdtype, edns in FAST_QUERIES:
        if isinstance(edns, str):
            q = dns.message.make_query(name, rdtype, use_edns=0, options=[dns.edns.ECSOption(edns, 24)])
        else:
            q = dns.message.make_query(name, rdtype, use_edns=edns)
        q.id = 4242
        out.append(q.to_wire())
    return out


_SERVERS: dict[tuple[int, int], DnsServer] = {}


@settings(max_examples=60, deadline=None)
@given(rps=st.integers(1, 3), slip=st.integers(0, 2),
       events=st.lists(st.tuples(st.integers(0, len(FAST_QUERIES) - 1),
                                 st.sampled_from([*HOSTS, "10.1.2.3"]), st.booleans(), st.integers(0, 3)),
                       max_size=80))
def test_the_fast_paths_own_counting_agrees_with_check(
        tmp_path_factory: pytest.TempPathFactory, fast_queries: list[bytes], rps: int, slip: int,
        events: list[tuple[int, str, bool, int]]) -> None:
    """``answer_udp`` (the fast path counting its own replies, as the UDP loops use it) sends exactly what
    the unlimited answer passed through ``RateLimiter.check`` sends, reply by reply."""
    server = _SERVERS.get((rps, slip))
    if server is None:
        rrl = {"enabled": True, "responses_per_second": rps, "nxdomains_per_second": 1, "errors_per_second": 1,
               "slip": slip, "exempt": ["10.0.0.0/8"]}
        server = _SERVERS[(rps, slip)] = DnsServer(load(tmp_path_factory.mktemp("rrlfast"), dns={"rrl": rrl}))
    inline, reference = server._rate_limiter(), server._rate_limiter()  # fresh windows, the server's settings
    assert inline is not None and reference is not None
    # the server's own answer_udp counts in server.rrl: give it this example's fresh limiter
    answer_udp = type(server.fast)(server.geomap, server.snapshot, server.slow.routed, inline).answer_udp
    now = 1000
    for qi, host, text, step in events:
        if step == 3:
            now += 1
        q = fast_queries[qi]
        form = forms(host)[0 if text else 1]
        inline.tick(now)
        got = answer_udp(q, form, 0)
        if got is None:
            got = server.handle_slow(q, host, 0)
            got = None if got is None else inline.check(q, got, form, now)
        else:
            got = got or None  # b"": dropped
        want = server.handle(q, host, 0)  # unlimited: the fast path without a limiter, then the slow path
        want = None if want is None else reference.check(q, want, form, now)
        # the same decision; the same bytes but for a referral's NS order, which the slow path rotates
        assert sent(got) == sent(want), (FAST_QUERIES[qi], host, now)


def sent(reply: bytes | None) -> object:
    if reply is None:
        return None
    msg = dns.message.from_wire(reply)
    return msg.id, msg.flags, msg.rcode(), str(msg.question), msg.options, \
        [sorted(line for rrset in section for line in str(rrset).splitlines())
         for section in (msg.answer, msg.authority, msg.additional)]


def test_the_fast_path_counts_what_it_answers(tmp_path: Path, fast_queries: list[bytes]) -> None:
    """The steered and static names are answered (and counted) by answer_udp itself: a slip or a drop comes
    from there, not from the slow path."""
    rrl = {"enabled": True, "responses_per_second": 2, "slip": 2}
    server = DnsServer(load(tmp_path, dns={"rrl": rrl}))
    assert server.rrl is not None
    for second, q in enumerate((fast_queries[0], fast_queries[3], fast_queries[5]), 50):
        server.rrl.tick(second)  # a new window: api.example.test with and without ECS share a bucket
        got = [server.fast.answer_udp(q, "192.0.2.1", 0) for _ in range(5)]
        assert all(r is not None for r in got)  # never the slow path
        full = sent(server.handle(q, "192.0.2.1", 0))
        assert [r != b"" and sent(r) == full for r in got] == [True, True, False, False, False]
        assert [r == b"" for r in got] == [False, False, True, False, True]  # slip 2: the 2nd over the rate slips
        assert got[3] and got[3][2] & 0x02 and not got[0][2] & 0x02  # type: ignore[index]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> DnsServer:
    from tests.support.dnssec import signed_config

    path, _ = signed_config(tmp_path_factory.mktemp("rrlsigned"),
                            dns_settings={"rrl": {"enabled": True, "nxdomains_per_second": 2,
                                                  "responses_per_second": 50, "slip": 0}})
    return DnsServer(load_config(path))


def do_query(name: str, rdtype: str = "A") -> bytes:
    q = dns.message.make_query(name, rdtype, want_dnssec=True)
    wire: bytes = q.to_wire()
    return wire


def test_a_compact_denial_is_limited_as_an_nxdomain_per_zone(signed: DnsServer) -> None:
    """With DNSSEC a missing name is NOERROR + an NSEC with NXNAME to DO=1 queries (RFC 9824): still an
    NXDOMAIN to the rate limit, one bucket per zone, so random names from one prefix share it."""
    lim = signed._rate_limiter()
    assert lim is not None
    replies = []
    for i in range(5):  # five random names under the zone, one prefix, one second
        q = do_query(f"rnd{i}x.example.test")
        r = signed.handle(q, "192.0.2.1", 0)
        assert r is not None and r[3] & 0x0F == 0 and is_compact_denial(r)  # NOERROR: the compact form
        replies.append(lim.check(q, r, "192.0.2.1", 7))
    assert [r is not None for r in replies] == [True, True, False, False, False]  # 2/s, then dropped (slip 0)
    assert (lim.prefix("192.0.2.1"), NXDOMAIN, b"\x07example\x04test\x00") in lim.buckets
    # NODATA (the name exists, not the type) is not a denial of the name: an answer-class bucket per name
    nodata = signed.handle(do_query("www.example.test", "TXT"), "192.0.2.9", 0)
    assert nodata is not None and not is_compact_denial(nodata)
    plain = signed.handle(dns.message.make_query("rnd0x.example.test", "A").to_wire(), "192.0.2.9", 0)
    assert plain is not None and plain[3] & 0x0F == 3 and not is_compact_denial(plain)  # DO=0: NXDOMAIN


@settings(max_examples=400, deadline=None)
@given(reply=st.binary(min_size=0, max_size=120))
def test_is_compact_denial_never_raises(reply: bytes) -> None:
    assert is_compact_denial(reply) in (True, False)
