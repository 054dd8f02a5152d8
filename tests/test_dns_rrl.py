"""Response rate limiting: the pure limiter (windows, classes, slip pattern, exemptions, bounded memory,
IPv4/IPv6 prefixes) on replies the server really makes, and the in-process server over real UDP and TCP
sockets (every UDP loop limited, TCP never, other prefixes and exempt ones untouched, disabled = off)."""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsserver.cookies import Cookies, packed_address, server_cookie
from dnsserver.metrics import RRL_CLASSES, Stats, StatsCollector
from dnsserver.rrl import ERRORS, NXDOMAIN, REFERRALS, RESPONSES, Exempt, RateLimiter, host_text, truncated
from dnsserver.server import DnsServer
from steering.config import Rrl
from tests.support import eventually
from tests.support.dns_server import load, serving

ZONE = b"\x07example\x04test\x00"
MODES = [("batch", True, True), ("thread", True, False), ("loop", False, False)]


def v4(text: str) -> int:
    """An IPv4 address the way the batch loop hands it over: ``sin_addr`` read as a native-endian int."""
    return int.from_bytes(socket.inet_aton(text), sys.byteorder)


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """A server that is not listening: its answer functions make the replies the limiter sees."""
    yield DnsServer(load(tmp_path_factory.mktemp("rrl")))


def reply(server: DnsServer, name: str, rdtype: str = "A", **kw: object) -> tuple[bytes, bytes]:
    q = dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]
    r = server.handle(q, "127.0.0.1", 0)
    assert r is not None
    return q, r


def limiter(**cfg: object) -> tuple[RateLimiter, Stats]:
    stats = Stats()
    return RateLimiter(Rrl.model_validate(cfg), [ZONE], stats), stats


def outcome(sent: bytes | None, full: bytes) -> str:
    if sent is None:
        return "drop"
    return "full" if sent == full else "slip"


def outcomes(check: Callable[..., bytes | None], q: bytes, r: bytes, host: object, now: int, n: int) -> list[str]:
    return [outcome(check(q, r, host, now), r) for _ in range(n)]


# ---- the pure limiter


def test_window_allows_the_rate_then_limits_until_the_next_second(server: DnsServer) -> None:
    lim, stats = limiter(responses_per_second=3, slip=0)
    q, r = reply(server, "www.example.test")
    host = v4("192.0.2.1")
    assert outcomes(lim.check, q, r, host, 100, 5) == ["full"] * 3 + ["drop"] * 2
    # a thread whose batch started in an earlier second counts into the current window, never back
    assert outcomes(lim.check, q, r, host, 99, 1) == ["drop"]
    assert outcomes(lim.check, q, r, host, 101, 4) == ["full"] * 3 + ["drop"]
    assert outcomes(lim.check, q, r, host, 250, 3) == ["full"] * 3
    assert stats.rrl_limited[("responses", "dropped")] == [4]
    assert len(lim.buckets) == 1  # only the current second's buckets are kept


@pytest.mark.parametrize("slip,pattern", [(0, "ddddddd"), (1, "sssssss"), (2, "dsdsdsd"), (3, "ddsddsd")])
def test_slip_pattern(server: DnsServer, slip: int, pattern: str) -> None:
    lim, stats = limiter(responses_per_second=2, slip=slip)
    q, r = reply(server, "www.example.test")
    got = outcomes(lim.check, q, r, v4("192.0.2.1"), 7, 9)
    assert got == ["full", "full"] + [{"d": "drop", "s": "slip"}[c] for c in pattern]
    assert stats.rrl_limited[("responses", "slipped")] == [pattern.count("s")]
    assert stats.rrl_limited[("responses", "dropped")] == [pattern.count("d")]


@pytest.mark.parametrize("name,rdtype,edns", [("WwW.ExAmPlE.TeSt", "A", 0), ("api.example.test", "AAAA", None),
                                              ("nope.example.test", "A", 0), ("example.test", "ANY", 0)])
def test_slipped_reply_is_minimal_and_truncated(server: DnsServer, name: str, rdtype: str, edns: int | None) -> None:
    q, r = reply(server, name, rdtype, use_edns=edns, want_dnssec=edns is not None)
    full = dns.message.from_wire(r)
    slipped = truncated(r)
    msg = dns.message.from_wire(slipped)
    assert msg.id == full.id and msg.flags & dns.flags.TC and msg.flags & dns.flags.QR
    assert msg.flags & dns.flags.AA == full.flags & dns.flags.AA and msg.rcode() == full.rcode()
    assert msg.question == full.question and msg.question[0].name.to_text() == name + "."  # case kept
    assert not msg.answer and not msg.authority and not msg.additional and msg.edns < 0
    assert slipped[12:] == q[12:q.find(b"\x00", 12) + 5] and len(slipped) <= len(q)  # no amplification at all


def test_classes_and_their_keys(server: DnsServer) -> None:
    lim, _ = limiter()
    pfx = lim.prefix(v4("192.0.2.1"))
    answer = reply(server, "www.example.test")[1]
    assert lim.classify(answer, pfx) == ((pfx, b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"), RESPONSES)
    # 0x20 case and NODATA (SOA in authority) are answers: by name and type
    assert lim.classify(reply(server, "WWW.example.TEST")[1], pfx)[0] == (pfx, answer[12:34].lower())
    nodata = reply(server, "mail.example.test", "AAAA")[1]
    assert dns.message.from_wire(nodata).authority and lim.classify(nodata, pfx)[1] == RESPONSES
    # every name that does not exist in one zone shares the zone's bucket
    nx1 = reply(server, "a.nope.example.test")[1]
    nx2 = reply(server, "B.other.example.test", "TXT")[1]
    assert lim.classify(nx1, pfx) == lim.classify(nx2, pfx) == ((pfx, NXDOMAIN, ZONE), NXDOMAIN)
    # a delegation, without AA: one bucket per prefix
    ref = reply(server, "host.child.example.test")[1]
    assert not dns.message.from_wire(ref).flags & dns.flags.AA
    assert lim.classify(ref, pfx) == ((pfx, REFERRALS), REFERRALS)
    # errors share one bucket per prefix whatever the name: REFUSED, FORMERR, NOTIMP, BADVERS, SERVFAIL
    refused = reply(server, "example.org")[1]
    formerr = server.handle(reply(server, "www.example.test")[0] + b"\x00", "127.0.0.1", 0)
    q = dns.message.make_query("www.example.test", "A")
    q.set_opcode(dns.opcode.STATUS)
    notimp = server.handle(q.to_wire(), "127.0.0.1", 0)
    badvers = reply(server, "www.example.test", use_edns=1)[1]
    servfail = server.handle_slow(b"\x12\x34\x01\x00" + b"\x00" * 8, "127.0.0.1", 0)  # no question: FORMERR
    rcodes = set()
    for wire in (refused, formerr, notimp, badvers, servfail):
        assert wire is not None
        assert lim.classify(wire, pfx) == ((pfx, ERRORS), ERRORS)
        rcodes.add(dns.message.from_wire(wire).rcode())
    assert rcodes >= {dns.rcode.REFUSED, dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.BADVERS}


def test_each_class_has_its_rate(server: DnsServer) -> None:
    lim, stats = limiter(responses_per_second=5, nxdomains_per_second=3, errors_per_second=2, slip=0)
    host = v4("192.0.2.1")
    q, r = reply(server, "www.example.test")
    assert outcomes(lim.check, q, r, host, 1, 7).count("full") == 5
    # another type of the same name: a bucket of its own
    q, r = reply(server, "www.example.test", "AAAA")
    assert outcomes(lim.check, q, r, host, 1, 7).count("full") == 5
    # random names in one zone all count against one NXDOMAIN bucket
    nx = [reply(server, f"r{i}.example.test") for i in range(6)]
    assert [outcome(lim.check(q, r, host, 1), r) for q, r in nx] == ["full"] * 3 + ["drop"] * 3
    errs = [reply(server, f"x{i}.example.org") for i in range(4)]
    assert [outcome(lim.check(q, r, host, 1), r) for q, r in errs] == ["full"] * 2 + ["drop"] * 2
    assert {c: stats.rrl_limited[(c, "dropped")][0] for c in RRL_CLASSES} == {
        "responses": 4, "referrals": 0, "nxdomain": 3, "errors": 2}


def test_prefixes_ipv4_and_ipv6() -> None:
    lim, _ = limiter()  # /24 and /56
    assert lim.prefix(v4("10.1.2.3")) == lim.prefix(v4("10.1.2.200")) != lim.prefix(v4("10.1.3.3"))
    # the text, the packed and the IPv4-mapped forms of an address share its bucket
    for other in ("10.1.2.77", "::ffff:10.1.2.77", v6("::ffff:10.1.2.9"), b"\x0a\x01\x02\x05"):
        assert lim.prefix(other) == lim.prefix(v4("10.1.2.3"))
    assert lim.prefix(v6("2001:db8:0:1ff::1")) == lim.prefix(v6("2001:db8:0:100::2")) == lim.prefix("2001:db8:0:1aa::")
    assert lim.prefix(v6("2001:db8:0:100::1")) != lim.prefix(v6("2001:db8:0:200::1"))
    assert lim.prefix("fe80::1%lo") == lim.prefix(v6("fe80::"))
    assert lim.prefix("not an address") == lim.prefix("nor this") == b"?"
    narrow, _ = limiter(ipv4_prefix=20, ipv6_prefix=60)
    assert narrow.prefix(v4("10.1.0.1")) == narrow.prefix(v4("10.1.15.1")) != narrow.prefix(v4("10.1.16.1"))
    assert narrow.prefix("10.1.15.1") == narrow.prefix(v4("10.1.0.1"))
    assert narrow.prefix(v6("2001:db8:0:10::")) == narrow.prefix(v6("2001:db8:0:1f::")) != narrow.prefix(
        v6("2001:db8:0:20::"))


def test_different_prefixes_do_not_share(server: DnsServer) -> None:
    lim, _ = limiter(responses_per_second=2, slip=0)
    q, r = reply(server, "www.example.test")
    assert outcomes(lim.check, q, r, v4("192.0.2.1"), 5, 4) == ["full", "full", "drop", "drop"]
    assert outcomes(lim.check, q, r, v4("192.0.3.1"), 5, 2) == ["full", "full"]
    assert outcomes(lim.check, q, r, "192.0.2.99", 5, 1) == ["drop"]  # text, same /24
    assert outcomes(lim.check, q, r, v6("2001:db8::1"), 5, 3) == ["full", "full", "drop"]
    assert outcomes(lim.check, q, r, v6("2001:db8:0:100::1"), 5, 1) == ["full"]


def test_exempt_prefixes(server: DnsServer) -> None:
    lim, stats = limiter(responses_per_second=1, slip=0,
                         exempt=("192.0.2.7/32", "10.0.0.0/8", "2001:db8:1::/48", "::ffff:172.16.0.0/108"))
    q, r = reply(server, "www.example.test")
    for host in (v4("192.0.2.7"), "10.200.1.1", v6("2001:db8:1:ff::1"), "::ffff:10.0.0.1", "172.16.5.5"):
        assert outcomes(lim.check, q, r, host, 3, 5) == ["full"] * 5
    # the exempt /32 does not lift its /24 neighbours' limit, although they share the bucket
    assert outcomes(lim.check, q, r, v4("192.0.2.8"), 3, 2) == ["drop", "drop"]
    # five buckets, one reply in full each: the /32 (its /24 bucket is shared) is looked up for each of its
    # four limited replies; a prefix holding the whole bucket exempts the bucket for the second at once
    assert stats.rrl_exempt["prefix"] == [4 + 1 + 1 + 1 + 1]
    assert not Exempt(()) and "10.0.0.1" not in Exempt(()) and b"junk" not in Exempt(["10.0.0.0/8"])


def test_valid_server_cookie_exempts(server: DnsServer) -> None:
    secret = bytes(range(16))
    cookies = Cookies([secret])
    stats = Stats()
    lim = RateLimiter(Rrl(responses_per_second=1, slip=0), [ZONE], stats, cookies.query_has_valid_server_cookie)
    host = "192.0.2.44"
    cc = b"clientck"
    head = b"\x01\x00\x00\x00" + int(time.time()).to_bytes(4, "big")
    good = cc + server_cookie(secret, cc, head, packed_address(host))
    forged = cc + server_cookie(bytes(16), cc, head, packed_address(host))
    q_good, r = reply(server, "www.example.test", use_edns=0, options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, good)])
    q_bad, _ = reply(server, "www.example.test", use_edns=0, options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, forged)])
    q_none, _ = reply(server, "www.example.test", use_edns=0)
    assert outcomes(lim.check, q_none, r, host, 9, 2) == ["full", "drop"]
    assert outcomes(lim.check, q_good, r, host, 9, 3) == ["full"] * 3
    assert outcomes(lim.check, q_bad, r, host, 9, 1) == ["drop"]
    assert outcomes(lim.check, q_good, r, "192.0.2.45", 9, 1) == ["drop"]  # another address's cookie
    assert stats.rrl_exempt["cookie"] == [3]


def test_memory_is_bounded_and_a_full_window_limits_new_keys(server: DnsServer) -> None:
    lim, stats = limiter(max_buckets=1000, responses_per_second=5, slip=2)
    q, r = reply(server, "www.example.test")
    hosts = [v4(f"10.{i >> 8}.{i & 255}.1") for i in range(1500)]
    got = [outcome(lim.check(q, r, h, 40), r) for h in hosts]
    assert len(lim.buckets) == 1000
    assert got[:1000] == ["full"] * 1000
    assert got[1000:] == ["drop", "slip"] * 250  # limited, at the slip rate
    assert stats.rrl_table_full == [500] and stats.rrl_limited[("responses", "slipped")] == [250]
    # an existing bucket still counts normally in a full window (it holds 1: four more in full, then limited)
    assert outcomes(lim.check, q, r, hosts[0], 40, 6) == ["full"] * 4 + ["drop", "slip"]
    # the next second starts empty
    assert [outcome(lim.check(q, r, h, 41), r) for h in hosts[1000:]] == ["full"] * 500
    assert len(lim.buckets) == 500


def test_metrics_exported() -> None:
    stats = Stats()
    stats.rrl_limited[("nxdomain", "slipped")][0] = 4
    stats.rrl_exempt["cookie"][0] = 2
    stats.rrl_table_full[0] = 1
    families = {m.name: m for m in StatsCollector(stats).collect()}
    limited = {(s.labels["class"], s.labels["action"]): s.value for s in families["steering_dns_rrl_limited"].samples}
    assert limited[("nxdomain", "slipped")] == 4 and len(limited) == len(RRL_CLASSES) * 2
    assert {s.labels["reason"]: s.value for s in families["steering_dns_rrl_exempt"].samples} == {
        "prefix": 0, "cookie": 2}
    assert families["steering_dns_rrl_table_full"].samples[0].value == 1


def test_host_text() -> None:
    assert host_text(v4("192.0.2.9")) == "192.0.2.9"
    assert host_text(v6("2001:db8::9")) == "2001:db8::9"
    assert host_text("10.0.0.1") == "10.0.0.1"
    assert ipaddress.ip_address(host_text(b"\x00" * 3)) is not None


# ---- the server over real sockets


def dropped(stats: Stats) -> int:
    return sum(stats.rrl_limited[(c, "dropped")][0] for c in RRL_CLASSES)


def drain(sock: socket.socket, into: list[bytes]) -> int:
    while True:
        try:
            into.append(sock.recv(65535))
        except BlockingIOError:
            return len(into)


async def burst(server: DnsServer, port: int, wire: bytes, n: int, source: str = "127.0.0.1",
                chunk: int = 50) -> list[bytes]:
    """``n`` copies of ``wire`` from ``source``, in chunks the socket buffers hold; waits for the server to
    have answered each chunk and for every reply it did not drop. Returns the replies received."""
    stats = server.stats
    replies: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.setblocking(False)
        base, base_dropped = stats.total_queries(), dropped(stats)
        sent = 0
        while sent < n:
            k = min(chunk, n - sent)
            for _ in range(k):
                s.sendto(wire, ("127.0.0.1", port))
            sent += k
            answered = base + sent
            # polled every 2 ms: the whole burst must stay within the second its rate is counted in
            await eventually(lambda: stats.total_queries() >= answered,  # noqa: B023 (awaited at once)
                             15, "the server to answer the chunk", interval=0.002)
            want = sent - (dropped(stats) - base_dropped)
            await eventually(lambda: drain(s, replies) >= want, 15, f"{want} replies",  # noqa: B023 (awaited at once)
                             interval=0.002)
    return replies


def split(replies: list[bytes]) -> tuple[int, int]:
    """(full answers, slipped replies), checking the shape of each."""
    full = slipped = 0
    for wire in replies:
        msg = dns.message.from_wire(wire)
        if msg.flags & dns.flags.TC:
            assert not msg.answer and not msg.authority and msg.question[0].name.to_text() == "www.example.test."
            slipped += 1
        else:
            assert msg.answer and msg.rcode() == dns.rcode.NOERROR
            full += 1
    return full, slipped


QUERY = dns.message.make_query("www.example.test", "A", use_edns=0, payload=4096).to_wire()


@pytest.mark.parametrize("mode,threads,batch", MODES)
async def test_one_source_is_limited_on_every_udp_loop(tmp_path: Path, mode: str, threads: bool, batch: bool) -> None:
    rate = 10
    cfg = load(tmp_path, dns={"rrl": {"responses_per_second": rate, "slip": 2}})
    server = DnsServer(cfg, udp_threads=threads, udp_batch=batch)
    await server.start(["127.0.0.1:0"])
    try:
        port = server.addresses[0][1]
        first = int(time.monotonic())
        replies = await burst(server, port, QUERY, 1000)
        windows = int(time.monotonic()) - first + 1  # the seconds the burst can have touched, at most
        full, slipped = split(replies)
        stats = server.stats
        drops = dropped(stats)
        assert full + slipped + drops == 1000
        assert slipped == stats.rrl_limited[("responses", "slipped")][0]
        # each second allows `rate` in full (one second at least saw that many); of the rest every other one
        # slips, so drops exceed slips by at most one per second
        assert rate <= full <= rate * windows < 500
        assert 0 <= drops - slipped <= windows
        # another /24 is not affected: it gets all of its `rate` answers, however the seconds fall
        other = await burst(server, port, QUERY, rate, source="127.0.1.1")
        assert split(other) == (rate, 0) and dropped(stats) == drops
    finally:
        await server.close()


async def test_tcp_is_never_limited(tmp_path: Path) -> None:
    cfg = load(tmp_path, dns={"rrl": {"responses_per_second": 2, "slip": 0}})
    async with serving(cfg) as (server, port):
        q = dns.message.make_query("www.example.test", "A")
        for _ in range(60):
            r = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=5)
            assert r.answer and not r.flags & dns.flags.TC
        assert all(c[0] == 0 for c in server.stats.rrl_limited.values())


async def test_exempt_prefix_is_not_limited(tmp_path: Path) -> None:
    cfg = load(tmp_path, dns={"rrl": {"responses_per_second": 5, "exempt": ["127.0.2.0/24"]}})
    async with serving(cfg) as (server, port):
        full, slipped = split(await burst(server, port, QUERY, 300, source="127.0.2.1"))
        assert (full, slipped) == (300, 0) and dropped(server.stats) == 0
        assert 0 < server.stats.rrl_exempt["prefix"][0] <= 295


async def test_disabled_answers_everything(tmp_path: Path) -> None:
    cfg = load(tmp_path, dns={"rrl": {"enabled": False, "responses_per_second": 1}})
    async with serving(cfg) as (server, port):
        assert server.rrl is None
        assert split(await burst(server, port, QUERY, 300)) == (300, 0)


async def test_a_slipped_client_retries_over_tcp_and_gets_the_answer(tmp_path: Path) -> None:
    cfg = load(tmp_path, dns={"rrl": {"responses_per_second": 1, "slip": 1}})
    async with serving(cfg) as (server, port):
        q = dns.message.make_query("www.example.test", "A", use_edns=0)
        direct = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5)
        for _ in range(20):  # the next one slips unless a second has just begun
            r, used_tcp = await dns.asyncquery.udp_with_fallback(q, "127.0.0.1", port=port, timeout=5)
            if used_tcp:
                break
        assert used_tcp and r.answer == direct.answer and not r.flags & dns.flags.TC
        assert server.stats.rrl_limited[("responses", "slipped")][0] >= 1


async def test_server_cookie_exempts_over_udp(tmp_path: Path) -> None:
    cfg = load(tmp_path, dns={"rrl": {"responses_per_second": 2, "slip": 0}})
    async with serving(cfg) as (server, port):
        cookies = server.cookies
        assert cookies is not None  # dns.cookies.enabled is on by default
        cc = b"\x01\x02\x03\x04\x05\x06\x07\x08"
        head = b"\x01\x00\x00\x00" + int(time.time()).to_bytes(4, "big")
        data = cc + server_cookie(cookies.secrets[0], cc, head, packed_address("127.0.0.1"))
        wire = dns.message.make_query("www.example.test", "A", use_edns=0,
                                      options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, data)]).to_wire()
        assert split(await burst(server, port, wire, 100)) == (100, 0)
        assert dropped(server.stats) == 0 and server.stats.rrl_exempt["cookie"][0] > 0
