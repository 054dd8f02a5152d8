"""The shipped ``steering dns`` command (its own uvloop, its worker processes) answering every rule of
dnsserver/README.md "Answers" over UDP and TCP, IPv4 and IPv6; dnspython and plain sockets as clients.

Two daemons per module: ``main`` (worker count as shipped, a table persisted before start) and
``limits`` (one worker, no table, a small TCP connection cap, metrics served) for the rules that
count connections or need an exact metric.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import structlog
import uvloop

from dnsserver.persist import save_table
from steering.config import load_config
from tests.support import eventually_sync
from tests.support.dns_server import DnsProcess, serving, table_with, write_config
from tests.support.ports import dual_free_port

BIG_TXT = "\n".join(f'big IN TXT "{"x" * 200}{i}"' for i in range(4))  # ~860 bytes of answer
CHAIN = "c1 IN CNAME c2\nc2 IN CNAME www"  # c1 -> c2 -> www -> api (steered)
REGION_OF = {"192.0.2.10": "us-east-1", "192.0.2.11": "us-east-1", "192.0.2.20": "us-west-2",
             "192.0.2.30": "eu-west-1", "2001:db8::10": "us-east-1", "2001:db8::20": "us-west-2",
             "2001:db8::30": "eu-west-1"}
# The persisted table: na-west is sent away from its first preference, so an answer from eu-west-1
# there can only come from the file; europe is split.
WEIGHTS = {"api.example.test.": {"na-west": {"eu-west-1": 1000}, "world": {"us-east-1": 1000},
                                 "europe": {"eu-west-1": 500, "us-east-1": 500},
                                 "asia-pacific": {"us-west-2": 1000}}}
IDLE = 1.0
QUERY_LIMIT = 5
CAP = 3
HOSTS = {"v4": "127.0.0.1", "v6": "::1"}
# These tests send bursts of the same question from one loopback address; response rate limiting
# (tested on its own) would rightly drop or truncate some of them.
NO_RRL = {"rrl": {"enabled": False}}
VIAS = [("udp", "v4"), ("udp", "v6"), ("tcp", "v4"), ("tcp", "v6")]


def query(name: str = "api.example.test", qtype: str = "A", **kw: Any) -> dns.message.QueryMessage:
    return dns.message.make_query(name, qtype, **kw)


def ask(d: DnsProcess, q: dns.message.Message, transport: str = "udp", family: str = "v4",
        source: str | None = None) -> dns.message.Message:
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    return send(q, HOSTS[family], port=d.port, timeout=3, source=source)


def connect(d: DnsProcess, family: str = "v4") -> socket.socket:
    sock = socket.create_connection((HOSTS[family], d.port), timeout=5)
    sock.settimeout(5)
    return sock


def framed(*wires: bytes) -> bytes:
    return b"".join(len(w).to_bytes(2, "big") + w for w in wires)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return data
        data += chunk
    return data


def read_replies(sock: socket.socket, limit: int = 50) -> tuple[list[bytes], bool]:
    """Length-framed replies until the server closes (True) or ``limit`` replies (False)."""
    got: list[bytes] = []
    while len(got) < limit:
        head = read_exactly(sock, 2)
        if len(head) < 2:
            assert head == b"", "the server closed mid-frame"
            return got, True
        size = int.from_bytes(head, "big")
        body = read_exactly(sock, size)
        assert len(body) == size
        got.append(body)
    return got, False


def raw(d: DnsProcess, wire: bytes, transport: str, family: str) -> bytes:
    """One message sent as is (no parsing on our side), the reply's bytes."""
    if transport == "udp":
        with socket.socket(socket.AF_INET if family == "v4" else socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(wire, (HOSTS[family], d.port))
            return s.recv(65535)
    with connect(d, family) as s:
        s.sendall(framed(wire))
        (reply,), _ = read_replies(s, limit=1)
        return reply


def regions(r: dns.message.Message) -> set[str]:
    return {REGION_OF[rd.address] for rrset in r.answer if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
            for rd in rrset}


def ecs_query(addr: str, plen: int, name: str = "api.example.test") -> dns.message.QueryMessage:
    return query(name, use_edns=0, options=[dns.edns.ECSOption(addr, plen)])


def start(directory: Path, dns_cfg: dict[str, Any], table_weights: dict[str, Any] | None,
          metrics: bool) -> Iterator[DnsProcess]:
    cfg_path = write_config(directory, dns=dns_cfg, extra_zone=BIG_TXT + "\n" + CHAIN)
    cfg = load_config(cfg_path)
    if table_weights is not None:
        assert cfg.dns.state_file
        save_table(cfg.dns.state_file, table_with(cfg, 7, table_weights))
    port = dual_free_port()
    with DnsProcess(cfg_path, "--no-etcd", "--listen", f"127.0.0.1:{port}", "--listen", f"[::1]:{port}",
                    metrics=metrics) as d:
        def answering() -> bool:
            assert d.proc.poll() is None, f"steering dns exited {d.proc.returncode}:\n{d.log()}"
            try:
                for transport, family in VIAS:
                    q = query("example.test", "SOA")
                    send = dns.query.udp if transport == "udp" else dns.query.tcp
                    send(q, HOSTS[family], port=port, timeout=0.3)
                if metrics:
                    d.metrics()
            except (OSError, dns.exception.DNSException):
                return False
            return True

        eventually_sync(answering, 30, "steering dns to answer on UDP and TCP, IPv4 and IPv6")
        yield d
        code = d.stop(20)  # a clean exit can take seconds on a loaded machine: wait for it, do not kill
    text = d.log()
    assert "Traceback" not in text, text[-3000:]  # exceptions are counted and logged as one line
    assert code == 0, text[-3000:]  # SIGTERM: a clean exit


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsProcess]:
    dns_cfg = {"tcp_idle_seconds": IDLE, "tcp_max_queries_per_connection": QUERY_LIMIT, **NO_RRL}
    yield from start(tmp_path_factory.mktemp("dns-main"), dns_cfg, WEIGHTS, metrics=True)


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsProcess]:
    # one worker, so one process sees every connection the cap counts; idle long enough for the cap test
    dns_cfg = {"workers": 1, "tcp_idle_seconds": 5.0, "tcp_max_connections": CAP,
               "tcp_max_queries_per_connection": QUERY_LIMIT, **NO_RRL}
    yield from start(tmp_path_factory.mktemp("dns-limits"), dns_cfg, None, metrics=True)


via = pytest.mark.parametrize("transport,family", VIAS, ids=[f"{t}-{f}" for t, f in VIAS])
families = pytest.mark.parametrize("family", ["v4", "v6"])


# ---- answers


@via
def test_authoritative_answer_flags(main: DnsProcess, transport: str, family: str) -> None:
    q = query()
    q.flags |= dns.flags.RD
    r = ask(main, q, transport, family)
    assert r.rcode() == dns.rcode.NOERROR and r.id == q.id
    assert r.flags & dns.flags.QR and r.flags & dns.flags.AA and not r.flags & dns.flags.RA
    assert r.flags & dns.flags.RD  # copied from the query
    assert r.answer[0].rdtype == dns.rdatatype.A and r.answer[0].ttl == 30


@via
def test_refused_outside_our_zones(main: DnsProcess, transport: str, family: str) -> None:
    r = ask(main, query("www.example.com"), transport, family)
    assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA and not r.answer


@via
def test_nxdomain_and_nodata_carry_the_soa_at_the_negative_ttl(main: DnsProcess, transport: str, family: str) -> None:
    r = ask(main, query("missing.example.test"), transport, family)
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA and not r.answer
    assert r.authority[0].rdtype == dns.rdatatype.SOA and r.authority[0].ttl == 60  # min(SOA TTL 300, MINIMUM 60)
    for name in ("mail.example.test", "video.example.test"):  # a static name, a steered one
        r = ask(main, query(name, "AAAA"), transport, family)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer, name
        assert r.authority[0].rdtype == dns.rdatatype.SOA and r.authority[0].ttl == 60


@via
def test_formerr_for_malformed_queries(main: DnsProcess, transport: str, family: str) -> None:
    good = query().to_wire()
    for bad in (good[:-3], good[:4] + b"\x00\x02" + good[6:], good + b"\xff\xff"):
        reply = raw(main, bad, transport, family)
        assert reply[:2] == bad[:2] and reply[3] & 0x0F == dns.rcode.FORMERR
        dns.message.from_wire(reply)


@via
def test_notimp_for_other_opcodes(main: DnsProcess, transport: str, family: str) -> None:
    q = query("example.test", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    r = dns.message.from_wire(raw(main, q.to_wire(), transport, family))
    assert r.rcode() == dns.rcode.NOTIMP and r.id == q.id and r.opcode() == dns.opcode.NOTIFY


@via
def test_edns_payload_opt_echo_do_and_badvers(main: DnsProcess, transport: str, family: str) -> None:
    r = ask(main, query(use_edns=0, payload=4096, want_dnssec=True), transport, family)
    assert r.edns == 0 and r.payload == 1232 and r.ednsflags & dns.flags.DO and r.answer
    r = ask(main, query(use_edns=0), transport, family)
    assert r.edns == 0 and not r.ednsflags & dns.flags.DO
    assert ask(main, query(), transport, family).edns == -1  # no OPT asked, none sent
    r = ask(main, query(use_edns=1), transport, family)
    assert r.rcode() == dns.rcode.BADVERS and r.edns == 0 and not r.answer


@families
def test_truncation_on_udp_full_answer_on_tcp(main: DnsProcess, family: str) -> None:
    r = ask(main, query("big.example.test", "TXT"), "udp", family)  # no EDNS: 512 bytes
    assert r.flags & dns.flags.TC and not r.answer
    r = ask(main, query("big.example.test", "TXT", use_edns=0, payload=600), "udp", family)
    assert r.flags & dns.flags.TC and r.edns == 0  # the client's payload size is honoured
    r = ask(main, query("big.example.test", "TXT", use_edns=0, payload=1232), "udp", family)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 4
    r = ask(main, query("big.example.test", "TXT"), "tcp", family)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 4


@via
def test_query_case_is_echoed(main: DnsProcess, transport: str, family: str) -> None:
    for name in ("ApI.eXaMpLe.TeSt.", "MiSsInG.example.TEST.", "BIG.example.test."):
        r = ask(main, query(name, "TXT" if name.startswith("BIG") else "A", use_edns=0), transport, family)
        assert r.question[0].name.to_text() == name
        if r.answer:
            assert r.answer[0].name.to_text() == name


@via
def test_any_gets_one_rrset(main: DnsProcess, transport: str, family: str) -> None:
    for name in ("example.test", "api.example.test"):
        r = ask(main, query(name, "ANY"), transport, family)
        assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1, name


@via
def test_cname_chain_is_followed(main: DnsProcess, transport: str, family: str) -> None:
    r = ask(main, query("c1.example.test"), transport, family)
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype)) for rr in r.answer] == [
        ("c1.example.test.", "CNAME"), ("c2.example.test.", "CNAME"), ("www.example.test.", "CNAME"),
        ("api.example.test.", "A")]
    assert regions(r) == {"us-east-1"}  # the resolver is loopback: the world geo


# ---- steering


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_geo_by_source_address(main: DnsProcess, transport: str) -> None:
    # 127.2/16 is na-west, 127.5/16 asia-pacific in the example config; others fall to the default geo
    assert regions(ask(main, query(), transport, source="127.2.0.9")) == {"eu-west-1"}
    assert regions(ask(main, query(), transport, source="127.5.0.9")) == {"us-west-2"}
    assert regions(ask(main, query(), transport, source="127.0.0.1")) == {"us-east-1"}
    assert regions(ask(main, query("api.example.test", "AAAA"), transport, "v6")) == {"us-east-1"}


@via
def test_geo_by_ecs_with_scope(main: DnsProcess, transport: str, family: str) -> None:
    for (addr, plen), region, scope in [(("198.51.100.70", 32), "eu-west-1", 26),  # na-west
                                        (("2001:db8:5:1::", 64), "us-west-2", 56),  # asia-pacific
                                        (("10.1.2.0", 24), "us-east-1", 24)]:  # world
        r = ask(main, ecs_query(addr, plen), transport, family)
        assert regions(r) == {region}, addr
        (opt,) = [o for o in r.options if isinstance(o, dns.edns.ECSOption)]
        assert (opt.address, opt.srclen, opt.scopelen) == (addr, plen, scope)


def test_state_file_is_loaded_at_start(main: DnsProcess) -> None:
    # na-west's first preference is us-west-2; fail-open would share all three: only the table says eu-west-1
    subnets = [f"2001:db8:2:{i:x}00::" for i in range(40)]
    assert {r for s in subnets for r in regions(ask(main, ecs_query(s, 56)))} == {"eu-west-1"}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_weighted_pick_splits_and_is_stable(main: DnsProcess, transport: str) -> None:
    subnets = [f"2001:db8:3:{i:x}00::" for i in range(48)]  # europe: eu-west-1 and us-east-1 at 500 each
    first = {s: regions(ask(main, ecs_query(s, 56), transport)) for s in subnets}
    assert all(len(v) == 1 for v in first.values())
    assert set().union(*first.values()) == {"eu-west-1", "us-east-1"}
    for s in subnets[:12]:
        assert regions(ask(main, ecs_query(s, 56), transport, "v6")) == first[s]


def test_fail_open_without_a_table(limits: DnsProcess) -> None:
    # no state file, no etcd: every geo's configured targets share the answers
    seen = set()
    for i in range(60):
        r = ask(limits, ecs_query(f"10.9.{i}.0", 24), "udp" if i % 2 else "tcp", "v6" if i % 3 else "v4")
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        seen |= regions(r)
    assert seen == {"us-east-1", "us-west-2", "eu-west-1"}
    assert limits.metric("steering_dns_fallbacks_total", reason="no-table") >= 1
    assert limits.metric("steering_dns_table_version") == -1


# ---- TCP (RFC 7766)


@families
def test_tcp_pipelining(main: DnsProcess, family: str) -> None:
    queries = [query("api.example.test"), query("www.example.test"), query("missing.example.test"),
               query("big.example.test", "TXT")]
    with connect(main, family) as sock:
        sock.sendall(framed(*(q.to_wire() for q in queries)))  # one write
        replies, closed = read_replies(sock, limit=len(queries))
        assert not closed
        got = {m.id: m for m in map(dns.message.from_wire, replies)}  # order may differ
        assert set(got) == {q.id for q in queries}
        assert [got[q.id].rcode() for q in queries] == [0, 0, dns.rcode.NXDOMAIN, 0]
        assert len(got[queries[3].id].answer[0]) == 4  # full size on TCP
        # and the connection still takes queries, a frame split across writes included
        q = query("example.test", "MX")
        wire = framed(q.to_wire())
        sock.sendall(wire[:3])
        time.sleep(0.05)  # let the first part arrive alone
        sock.sendall(wire[3:])
        (reply,), _ = read_replies(sock, limit=1)
        assert dns.message.from_wire(reply).id == q.id


@families
def test_tcp_idle_connection_is_closed(main: DnsProcess, family: str) -> None:
    idle = main.metric("steering_dns_tcp_closed_total", reason="idle")
    with connect(main, family) as sock:
        sock.settimeout(IDLE + 10)  # the deadline; the close comes after IDLE seconds without a query
        q = query()
        sock.sendall(framed(q.to_wire()))
        replies, closed = read_replies(sock)
        assert closed and [dns.message.from_wire(w).id for w in replies] == [q.id]
    # counted by whichever worker held it, summed over the workers
    eventually_sync(lambda: main.metric("steering_dns_tcp_closed_total", reason="idle") == idle + 1, 10,
                    "the idle close to be counted")


@families
def test_tcp_query_limit_closes_gracefully_after_the_last_answer(main: DnsProcess, family: str) -> None:
    queries = [query(f"n{i}.example.test") for i in range(QUERY_LIMIT + 3)]
    with connect(main, family) as sock:
        sock.sendall(framed(*(q.to_wire() for q in queries)))
        replies, closed = read_replies(sock)  # a reset here would raise ConnectionResetError
        assert closed
        ids = [dns.message.from_wire(w).id for w in replies]
        assert len(ids) == QUERY_LIMIT and set(ids) <= {q.id for q in queries}


def test_tcp_limits_are_counted(limits: DnsProcess) -> None:
    before = limits.metric("steering_dns_tcp_closed_total", reason="query_limit")
    with connect(limits, "v6") as sock:
        sock.sendall(framed(*(query().to_wire() for _ in range(QUERY_LIMIT + 1))))
        replies, closed = read_replies(sock)
        assert closed and len(replies) == QUERY_LIMIT
    eventually_sync(lambda: limits.metric("steering_dns_tcp_closed_total", reason="query_limit") == before + 1, 10,
                    "the query-limit close to be counted")


def test_tcp_connection_cap(limits: DnsProcess) -> None:
    eventually_sync(lambda: limits.metric("steering_dns_tcp_open_connections") == 0, 10, "earlier connections to close")
    refused = limits.metric("steering_dns_tcp_refused_total")
    held = [connect(limits, "v4" if i % 2 else "v6") for i in range(CAP)]
    try:
        for i, sock in enumerate(held):  # an answer on each: all CAP connections are open in the server
            sock.sendall(framed(query().to_wire()))
            replies, closed = read_replies(sock, limit=1)
            assert len(replies) == 1 and not closed, i
        assert limits.metric("steering_dns_tcp_open_connections") == CAP
        with connect(limits) as extra:
            extra.sendall(framed(query().to_wire()))
            try:
                data = extra.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b""  # closed at once, unanswered
        eventually_sync(lambda: limits.metric("steering_dns_tcp_refused_total") == refused + 1, 10,
                        "the refused connection to be counted")
    finally:
        for sock in held:
            sock.close()
    eventually_sync(lambda: limits.metric("steering_dns_tcp_open_connections") == 0, 10,
                    "the held connections to close")
    assert ask(limits, query(), "tcp").answer  # room again


def test_tcp_framing_errors_are_counted_and_never_stop_the_server(limits: DnsProcess) -> None:
    framing = limits.metric("steering_dns_tcp_errors_total", reason="framing")
    q = query()
    with connect(limits) as sock:  # an answer, then a zero-length frame: the answer comes, then the close
        sock.sendall(framed(q.to_wire()) + b"\x00\x00" + framed(query().to_wire()))
        replies, closed = read_replies(sock)
        assert closed and [dns.message.from_wire(w).id for w in replies] == [q.id]
    with connect(limits) as sock:  # a 5-byte "message": shorter than any DNS header, so the same close
        sock.sendall(framed(q.to_wire()) + b"\x00\x05\xb7\xaf\x00\x00\x00")
        replies, closed = read_replies(sock)
        assert closed and [dns.message.from_wire(w).id for w in replies] == [q.id]
    with connect(limits, "v6") as sock:  # a frame cut short, then EOF
        sock.sendall(b"\x00\x40" + q.to_wire()[:10])
        sock.shutdown(socket.SHUT_WR)
        assert read_replies(sock) == ([], True)
    eventually_sync(lambda: limits.metric("steering_dns_tcp_errors_total", reason="framing") == framing + 3, 10,
                    "the three framing errors to be counted")
    assert limits.metric("steering_dns_tcp_errors_total", reason="exception") == 0
    for transport, family in VIAS:
        assert ask(limits, query(), transport, family).answer


def test_tcp_reset_by_the_client_is_counted_quietly(limits: DnsProcess) -> None:
    resets = limits.metric("steering_dns_tcp_closed_total", reason="reset")
    sock = connect(limits, "v6")
    sock.sendall(framed(query().to_wire()) + b"\x00\x40partial")  # an answer, then half a frame pending
    assert len(read_replies(sock, limit=1)[0]) == 1
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # linger 0: RST instead of FIN
    eventually_sync(lambda: limits.metric("steering_dns_tcp_closed_total", reason="reset") == resets + 1, 10,
                    "the reset to be counted")
    assert limits.metric("steering_dns_tcp_errors_total", reason="exception") == 0  # and no traceback (teardown)

def test_tcp_connections_are_accounted(limits: DnsProcess) -> None:
    for family in ("v4", "v6"):
        assert ask(limits, query(), "tcp", family).answer  # closed by the client: reason peer
    eventually_sync(lambda: limits.metric("steering_dns_tcp_open_connections") == 0, 10, "connections to close")
    m = limits.metrics()
    closed = sum(v for (name, _), v in m.items() if name == "steering_dns_tcp_closed_total")
    assert m[("steering_dns_tcp_connections_total", ())] == closed > 0
    assert m[("steering_dns_tcp_closed_total", (("reason", "peer"),))] >= 2



# ---- in process, on uvloop as shipped: a bug in a TCP callback


def test_an_exception_in_a_tcp_callback_is_one_counted_line(tmp_path: Path) -> None:
    """A raising answer function (a bug stand-in): the connection is aborted, counted, logged once, and
    the loop's exception handler (the traceback printer) never hears of it; the server keeps answering."""
    cfg = load_config(write_config(tmp_path))
    loop_reports: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_reports.append(ctx))
        async with serving(cfg) as (server, port):
            answer = server.handle

            def broken(wire: bytes, host: str, tcp: int) -> bytes | None:
                if b"\x04boom" in wire:
                    raise RuntimeError("boom")
                return answer(wire, host, tcp)

            server.handle = broken  # type: ignore[method-assign]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(framed(query("boom.example.test").to_wire()))
            try:
                data = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                data = b""
            assert data == b""
            writer.close()
            for _ in range(500):
                if server.stats.tcp_closed["exception"][0]:
                    break
                await asyncio.sleep(0.01)
            assert server.stats.tcp_errors["exception"][0] == 1 and server.stats.tcp_closed["exception"][0] == 1
            assert server.stats.tcp_open[0] == 0
            r = await dns.asyncquery.tcp(query(), "127.0.0.1", port=port, timeout=3)
            assert r.rcode() == dns.rcode.NOERROR

    with structlog.testing.capture_logs() as events:
        uvloop.run(scenario())
    errors = [e for e in events if e["event"] == "dns.tcp.error"]
    assert len(errors) == 1 and errors[0]["where"] == "data_received" and "RuntimeError: boom" in errors[0]["error"]
    assert loop_reports == []
