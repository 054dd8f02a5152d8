"""The complete path: dnspython parses the query and renders the reply. Used for anything unusual.

Every rule of an authoritative server lives here (FORMERR, NOTIMP, BADVERS,
REFUSED, NXDOMAIN/NODATA, TC, ECS scope); the fast path only takes the cases
whose answers it can copy from ``render`` byte for byte.
"""

from __future__ import annotations

import ipaddress
import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from dnsserver.answers import SteeredName, pick, resolve
from dnsserver.fastpath import MAX_UDP_PAYLOAD
from dnsserver.geo import ClientKey, GeoMap
from dnsserver.metrics import Stats
from dnsserver.render import Snapshot


def _bare(wire: bytes, rcode: int) -> bytes:
    """A reply with no sections, for a query we cannot (or will not) parse."""
    flags = 0x8000 | (((wire[2] >> 3) & 0x0F) << 11) | ((wire[2] & 0x01) << 8) | rcode
    return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


class SlowPath:
    def __init__(self, geomap: GeoMap, stats: Stats) -> None:
        self.geomap = geomap
        self.stats = stats

    def _count(self, tcp: int, qtype: str, rcode: int) -> None:
        self.stats.query_cell("tcp" if tcp else "udp", qtype, dns.rcode.to_text(rcode))[0] += 1

    def answer(self, snapshot: Snapshot, wire: bytes, host: str, tcp: int,
               source_key: ClientKey | None = None) -> bytes | None:
        """The reply's wire form, or None for a packet that gets no reply (too short, or a response)."""
        self.stats.slow_path[0] += 1
        if len(wire) < 12 or wire[2] & 0x80:
            self.stats.dropped[0] += 1
            return None
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # dnspython raises many types for a malformed message
            self._count(tcp, "none", dns.rcode.FORMERR)
            return _bare(wire, dns.rcode.FORMERR)
        qtype_text = dns.rdatatype.to_text(query.question[0].rdtype) if len(query.question) == 1 else "none"
        response = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
        response.flags &= ~dns.flags.RA
        limit = 65535 if tcp else (max(512, min(query.payload, MAX_UDP_PAYLOAD)) if query.edns >= 0 else 512)
        rcode, scope, ecs = self._fill(snapshot, query, response, host, source_key)
        response.set_rcode(rcode)
        if ecs is not None:
            response.use_edns(0, query.ednsflags & dns.flags.DO, MAX_UDP_PAYLOAD,
                              options=[dns.edns.ECSOption(ecs.address, ecs.srclen, scope)])
        elif query.edns >= 0:
            response.use_edns(0, query.ednsflags & dns.flags.DO, MAX_UDP_PAYLOAD)
        if rcode == dns.rcode.BADVERS:
            response.use_edns(0, 0, MAX_UDP_PAYLOAD)
            response.set_rcode(rcode)
        self._count(tcp, qtype_text, rcode)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer = []
            response.authority = []
            response.additional = []
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    def _fill(self, snapshot: Snapshot, query: dns.message.Message, response: dns.message.Message, host: str,
              source_key: ClientKey | None) -> tuple[int, int, dns.edns.ECSOption | None]:
        if query.opcode() != dns.opcode.QUERY:
            response.question = []
            return dns.rcode.NOTIMP, 0, None
        if query.edns > 0:
            return dns.rcode.BADVERS, 0, None
        if len(query.question) != 1:
            return dns.rcode.FORMERR, 0, None
        ecs_opts = [o for o in query.options if isinstance(o, dns.edns.ECSOption)]
        if len(ecs_opts) > 1:
            return dns.rcode.FORMERR, 0, None
        ecs = ecs_opts[0] if ecs_opts else None
        q = query.question[0]
        if q.rdtype == dns.rdatatype.OPT or dns.rdatatype.is_metatype(q.rdtype) and q.rdtype not in (
                dns.rdatatype.ANY, dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA,
                dns.rdatatype.MAILB):
            return dns.rcode.FORMERR, 0, ecs
        if q.rdclass != dns.rdataclass.IN:
            return dns.rcode.REFUSED, 0, ecs
        if ecs is not None:
            addr = ipaddress.ip_address(ecs.address).packed
            key = self.geomap.key(4 if ecs.family == 1 else 6, addr, ecs.srclen)
        else:
            key = source_key or self.geomap.key_for_source(host)
        picked: list[tuple[SteeredName, str]] = []

        def choose(s: SteeredName) -> str:
            split = s.splits[key.geo]
            target = split.targets[pick(split, key.subnet, s.seed)]
            picked.append((s, target))
            geo = self.geomap.ids[key.geo]
            self.stats.answer_cell(s.service, geo, target)[0] += 1
            if split.fallback:
                self.stats.fallback_cell(s.service, geo, split.fallback)[0] += 1
            return target

        res = resolve(snapshot.catalog, q.name, q.rdtype, choose)
        if res.authoritative:
            response.flags |= dns.flags.AA
        response.answer = res.answer
        response.authority = res.authority
        return res.rcode, (key.scope if picked else 0), ecs
