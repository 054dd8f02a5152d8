"""Every protocol rule of the DNS server, over real UDP and TCP sockets, dnspython as the client."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from tests.support import eventually
from tests.support.dns_server import load, serving, table_with

BIG_TXT = "\n".join(f'big IN TXT "{"x" * 200}{i}"' for i in range(4))  # ~860 bytes of answer


@pytest.fixture
def cfg(tmp_path: Path):
    return load(tmp_path, extra_zone=BIG_TXT, dns={"tcp_idle_seconds": 0.5, "tcp_max_connections": 3},
                extra_zones=[{"origin": "other.test.", "negative_ttl": 30, "ns": ["ns.other.test."]}])


async def udp(port: int, q: dns.message.Message, **kw) -> dns.message.Message:
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3, ignore_trailing=False, **kw)


async def tcp(port: int, q: dns.message.Message) -> dns.message.Message:
    return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)


async def raw_udp(port: int, wire: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, wire)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 3)
    finally:
        sock.close()


async def test_authoritative_answer_and_flags(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port):
        for send in (udp, tcp):
            r = await send(port, dns.message.make_query("api.example.test", "A"))
            assert r.rcode() == dns.rcode.NOERROR
            assert r.flags & dns.flags.AA and r.flags & dns.flags.QR
            assert not r.flags & dns.flags.RA
            assert r.flags & dns.flags.RD  # copied from the query
            assert r.answer and r.answer[0].ttl == 30
            assert r.answer[0].rdtype == dns.rdatatype.A


async def test_static_records_from_zone_file(cfg) -> None:
    async with serving(cfg) as (_, port):
        for name, qtype, want in [("example.test", "MX", "10 mail.example.test."),
                                  ("_sip._tcp.example.test", "SRV", "10 60 5060 sip.example.test."),
                                  ("example.test", "CAA", '0 issue "ca.example.test"'),
                                  ("ns1.example.test", "AAAA", "2001:db8::53"),
                                  ("example.test", "SOA", None), ("example.test", "NS", None)]:
            r = await udp(port, dns.message.make_query(name, qtype))
            assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA, (name, qtype)
            assert r.answer[0].rdtype == dns.rdatatype.from_text(qtype)
            if want:
                assert want in [rd.to_text() for rd in r.answer[0]]


async def test_synthesized_zone_has_soa_and_ns(cfg) -> None:
    async with serving(cfg) as (_, port):
        r = await udp(port, dns.message.make_query("other.test", "NS"))
        assert [rd.to_text() for rd in r.answer[0]] == ["ns.other.test."]
        r = await udp(port, dns.message.make_query("nothing.other.test", "A"))
        assert r.rcode() == dns.rcode.NXDOMAIN
        soa = r.authority[0]
        assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 30 and soa[0].minimum == 30


async def test_refused_outside_zones(cfg) -> None:
    async with serving(cfg) as (_, port):
        for send in (udp, tcp):
            r = await send(port, dns.message.make_query("www.example.com", "A"))
            assert r.rcode() == dns.rcode.REFUSED
            assert not r.flags & dns.flags.AA and not r.answer


async def test_nxdomain_and_nodata_carry_soa_with_negative_ttl(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port):
        r = await udp(port, dns.message.make_query("missing.example.test", "A"))
        assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA and not r.answer
        assert r.authority[0].rdtype == dns.rdatatype.SOA and r.authority[0].ttl == 60  # min(300, MINIMUM 60)
        # NODATA: the name exists, the type does not (also for a steered name)
        for name in ("mail.example.test", "video.example.test"):
            r = await udp(port, dns.message.make_query(name, "AAAA"))
            assert r.rcode() == dns.rcode.NOERROR and not r.answer, name
            assert r.authority[0].rdtype == dns.rdatatype.SOA and r.authority[0].ttl == 60
        # an empty non-terminal exists: NODATA, not NXDOMAIN
        r = await udp(port, dns.message.make_query("_tcp.example.test", "A"))
        assert r.rcode() == dns.rcode.NOERROR and r.authority[0].rdtype == dns.rdatatype.SOA


async def test_formerr_for_malformed(cfg) -> None:
    async with serving(cfg) as (_, port):
        good = dns.message.make_query("api.example.test", "A").to_wire()
        for bad in (good[:-3],  # question cut short
                    good[:4] + b"\x00\x02" + good[6:],  # two questions announced, one present
                    good + b"\xff\xff"):  # trailing junk
            reply = await raw_udp(port, bad)
            assert reply[:2] == bad[:2]
            assert reply[3] & 0x0F == dns.rcode.FORMERR
            dns.message.from_wire(reply)  # parses
        # no question at all
        reply = await raw_udp(port, good[:4] + b"\x00\x00" + good[6:12])
        assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


async def test_notimp_for_other_opcodes(cfg) -> None:
    async with serving(cfg) as (_, port):
        for opcode in (dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.IQUERY, dns.opcode.STATUS):
            q = dns.message.make_query("example.test", "SOA")
            q.set_opcode(opcode)
            reply = dns.message.from_wire(await raw_udp(port, q.to_wire()))
            assert reply.rcode() == dns.rcode.NOTIMP and reply.id == q.id
            assert reply.opcode() == opcode


async def test_edns_payload_opt_echo_and_badvers(cfg) -> None:
    async with serving(cfg) as (_, port):
        r = await udp(port, dns.message.make_query("api.example.test", "A", use_edns=0, payload=4096,
                                                   want_dnssec=True))
        assert r.edns == 0 and r.payload == 1232 and r.ednsflags & dns.flags.DO
        r = await udp(port, dns.message.make_query("api.example.test", "A"))
        assert r.edns == -1  # no OPT asked, none sent
        q = dns.message.make_query("api.example.test", "A", use_edns=1)
        for send in (udp, tcp):
            r = await send(port, q)
            assert r.rcode() == dns.rcode.BADVERS and r.edns == 0 and not r.answer


async def test_truncation_and_tcp_fallback(cfg) -> None:
    async with serving(cfg) as (_, port):
        r = await udp(port, dns.message.make_query("big.example.test", "TXT"))  # no EDNS: 512 bytes
        assert r.flags & dns.flags.TC and not r.answer
        r = await udp(port, dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=512))
        assert r.flags & dns.flags.TC and r.edns == 0
        r = await udp(port, dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=1232))
        assert not r.flags & dns.flags.TC and len(r.answer[0]) == 4  # the payload size is honoured
        r = await tcp(port, dns.message.make_query("big.example.test", "TXT"))
        assert not r.flags & dns.flags.TC and len(r.answer[0]) == 4


async def test_several_queries_on_one_tcp_connection(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        queries = [dns.message.make_query(n, t) for n, t in
                   [("api.example.test", "A"), ("www.example.test", "A"), ("missing.example.test", "A"),
                    ("example.test", "MX")]]
        # pipelined in one write, one split across writes
        writer.write(b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries[:3])))
        last = queries[3].to_wire()
        framed = len(last).to_bytes(2, "big") + last
        writer.write(framed[:5])
        await writer.drain()
        writer.write(framed[5:])
        got = []
        for _ in queries:
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 3), "big")
            got.append(dns.message.from_wire(await reader.readexactly(size)))
        assert [g.id for g in got] == [q.id for q in queries]
        assert [g.rcode() for g in got] == [0, 0, dns.rcode.NXDOMAIN, 0]
        writer.close()


async def test_tcp_idle_timeout_and_connection_cap(cfg) -> None:
    async with serving(cfg) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server when idle
        writer.close()
        conns = []
        for _ in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            conns.append((r, w))
        await eventually(lambda: server.stats.tcp_open[0] >= 3, 5, "three open connections")
        r4, w4 = await asyncio.open_connection("127.0.0.1", port)
        try:
            data = await asyncio.wait_for(r4.read(), 5)
        except ConnectionResetError:
            data = b""
        assert data == b"" and server.stats.tcp_refused[0] == 1
        w4.close()
        for _, w in conns:
            w.close()


async def test_query_case_is_echoed(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port):
        for name in ("ApI.eXaMpLe.TeSt.", "WWW.Example.Test.", "MiSsInG.example.TEST."):
            for send in (udp, tcp):
                r = await send(port, dns.message.make_query(name, "A", use_edns=0))
                assert r.question[0].name.to_text() == name
                if r.answer:
                    assert r.answer[0].name.to_text() == name


async def test_any_is_answered_minimally(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port):
        for name in ("example.test", "api.example.test"):
            r = await udp(port, dns.message.make_query(name, "ANY"))
            assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1, name


async def test_no_recursion_for_recursive_queries(cfg) -> None:
    async with serving(cfg) as (_, port):
        q = dns.message.make_query("example.org", "A")
        q.flags |= dns.flags.RD
        r = await udp(port, q)
        assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.RA


async def test_responses_are_not_answered(cfg) -> None:
    async with serving(cfg) as (server, port):
        wire = bytearray(dns.message.make_query("example.test", "SOA").to_wire())
        wire[2] |= 0x80
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, bytes(wire))
        await eventually(lambda: server.stats.dropped[0] >= 1, 5, "the response to be dropped")
        sock.close()
        assert struct.unpack("!H", wire[4:6]) == (1,)
