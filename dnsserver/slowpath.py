"""The complete path: dnspython parses the query and renders the reply. Used for anything unusual.

Every rule of an authoritative server lives here (FORMERR, NOTIMP, BADVERS,
REFUSED, NXDOMAIN/NODATA, TC, ECS scope); the fast path only takes the cases
whose answers it can copy from ``render`` byte for byte.

EDNS options are read from the wire here (``ednsopts``), not by dnspython:
dnspython parses the query with the OPT's rdata emptied, so a malformed
option gets a FORMERR that keeps the question and an OPT, like any other
FORMERR of a query that parses, instead of dnspython's bare one. The
reply's options, in order: Extended DNS Errors, the ECS echo, COOKIE, NSID,
edns-tcp-keepalive (the fast path renders EDE 3 before ECS too).
"""

from __future__ import annotations

import os
import socket
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
import dns.rdtypes.ANY.TXT
import dns.rrset

from dnsserver import ednsopts
from dnsserver.answers import SteeredName, pick, required_glue, resolve
from dnsserver.cookies import Cookies, packed_address
from dnsserver.dnssec import sign_resolution
from dnsserver.fastpath import MAX_UDP_PAYLOAD
from dnsserver.geo import ClientKey, GeoMap
from dnsserver.metrics import Stats
from dnsserver.render import RenderedAnswers
from steering.config import Config


def _bare(wire: bytes, rcode: int) -> bytes:
    """A reply with no sections, for a query we cannot (or will not) parse."""
    flags = 0x8000 | (((wire[2] >> 3) & 0x0F) << 11) | ((wire[2] & 0x01) << 8) | rcode
    return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


# ``dig @server table.steering. CH TXT``: the version and leader of the table this process answers from, in
# the same snapshot as its answers (the lab's history checker reads it per server: docs/lab.md). Class CH is
# never ours to be authoritative for, so the name cannot collide with a zone.
TABLE_QNAME = dns.name.from_text("table.steering.")


def table_txt(snapshot: RenderedAnswers) -> dns.rrset.RRset:
    """``"version=N" "leader=ID"`` (version -1 and no leader before any table)."""
    table = snapshot.table
    version, leader = (-1, "") if table is None else (table.version, table.leader)
    rrset = dns.rrset.RRset(TABLE_QNAME, dns.rdataclass.CH, dns.rdatatype.TXT)
    # built from bytes, not text: a leader id is never parsed as zone-file syntax
    rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.CH, dns.rdatatype.TXT,
                                      [f"version={version}".encode(), f"leader={leader}".encode()[:240]]), 0)
    return rrset


def _option(code: int, data: bytes) -> dns.edns.Option:
    # GenericOption's annotation asks for an OptionType; it converts the code with OptionType.make itself
    return dns.edns.GenericOption(dns.edns.OptionType.make(code), data)


WORKER_ENV = "STEERING_DNS_WORKER"  # the worker number, set by the supervisor; absent: a single process


def nsid_identity(configured: str | None = None) -> bytes:
    """What NSID answers: ``dns.identity``, else the host name and the worker number ("host-1/w0")."""
    if configured:
        return configured.encode()
    worker = os.environ.get(WORKER_ENV)
    host = socket.gethostname()
    return (f"{host}/w{worker}" if worker else host).encode()


class _Options:
    """What a query's EDNS options ask for, once they are known to be well-formed."""

    __slots__ = ("cookie", "ecs", "keepalive", "nsid")

    def __init__(self) -> None:
        self.ecs: bytes | None = None  # the ECS option's data
        self.cookie: bytes | None = None  # the COOKIE option's data (first one; later ones are ignored)
        self.nsid = False
        self.keepalive = False


def slow_path_for(cfg: Config, geomap: GeoMap, stats: Stats) -> SlowPath:
    """The slow path with the options ``cfg.dns`` turns on: cookies (and their secrets), NSID, keepalive."""
    dns_cfg = cfg.dns
    cookies = None
    if dns_cfg.cookies.enabled:
        path = dns_cfg.cookies.secret_file
        cookies = Cookies.create(cfg.resolve_path(path) if path else None, stats)
    return SlowPath(geomap, stats, cookies, nsid_identity(dns_cfg.identity) if dns_cfg.nsid else None,
                    dns_cfg.tcp_idle_seconds)


class SlowPath:
    def __init__(self, geomap: GeoMap, stats: Stats, cookies: Cookies | None = None, nsid: bytes | None = None,
                 tcp_idle_seconds: float = 10.0) -> None:
        self.geomap = geomap
        self.stats = stats
        self.cookies = cookies  # None: COOKIE options are ignored (cookies disabled)
        self.nsid = nsid  # None: NSID options are ignored
        self.keepalive = ednsopts.keepalive(tcp_idle_seconds)[4:]
        self.stale = False  # steered answers carry EDE 3 (set by the server, like FastPath.set_stale)

    @property
    def routed(self) -> tuple[frozenset[int], frozenset[int]]:
        """The option codes this path answers and the fast path must hand over, for UDP and for TCP."""
        udp = frozenset(code for code, on in ((ednsopts.COOKIE, self.cookies is not None),
                                              (ednsopts.NSID, self.nsid is not None)) if on)
        return udp, udp | {ednsopts.KEEPALIVE}

    def _options(self, options: list[ednsopts.Option] | None, tcp: int) -> _Options | None:
        """The options' requests, or None when one of them is malformed (FORMERR)."""
        if options is None:
            return None  # an option runs past the OPT's end
        out = _Options()
        for code, data in options:
            if code == ednsopts.ECS:
                if out.ecs is not None or not ednsopts.ecs_valid(data):
                    return None  # two ECS options, or a malformed one (RFC 7871): FORMERR
                out.ecs = data
            elif code == ednsopts.COOKIE and self.cookies is not None:
                if out.cookie is None:
                    out.cookie = data  # checked (and counted) once every option is known to be well-formed
            elif code == ednsopts.NSID:
                out.nsid = self.nsid is not None  # a payload in the query is ignored (RFC 5001)
            elif code == ednsopts.KEEPALIVE and tcp:  # over UDP a server ignores the option (RFC 7828)
                if data:
                    return None  # a query's keepalive carries no TIMEOUT (RFC 7828): FORMERR, as unbound does
                out.keepalive = True
        return out

    def _count(self, tcp: int, qtype: str, rcode: dns.rcode.Rcode) -> None:
        self.stats.query_cell("tcp" if tcp else "udp", qtype, dns.rcode.to_text(rcode))[0] += 1

    def answer(self, snapshot: RenderedAnswers, wire: bytes, host: str, tcp: int,
               source_key: ClientKey | None = None) -> bytes | None:
        """The reply's wire form, or None for a packet that gets no reply (too short, or a response)."""
        self.stats.slow_path[0] += 1
        if len(wire) < 12 or wire[2] & 0x80:
            self.stats.dropped[0] += 1
            return None
        where = ednsopts.locate_opt(wire)
        try:
            query = dns.message.from_wire(wire if where is None else ednsopts.without_options(wire, where))
        except Exception:  # dnspython raises many types for a malformed message
            self._count(tcp, "none", dns.rcode.FORMERR)
            return _bare(wire, dns.rcode.FORMERR)
        qtype_text = dns.rdatatype.to_text(query.question[0].rdtype) if len(query.question) == 1 else "none"
        response = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
        response.flags &= ~dns.flags.RA
        limit = 65535 if tcp else (max(512, min(query.payload, MAX_UDP_PAYLOAD)) if query.edns >= 0 else 512)
        reply_options: list[dns.edns.Option] = []
        if query.opcode() != dns.opcode.QUERY:
            rcode = dns.rcode.NOTIMP  # the question (zone) section stays, and the OPT
        elif query.edns > 0:
            rcode = dns.rcode.BADVERS
        else:
            opts = _Options() if where is None else self._options(ednsopts.parse_options(wire[where[1]:where[2]]), tcp)
            cookie = None if opts is None or opts.cookie is None else self._cookie(opts.cookie, host)
            if opts is None or (opts.cookie is not None and cookie is None):
                rcode = dns.rcode.FORMERR  # a malformed option (a COOKIE: RFC 7873 §5.2.2)
            else:
                rcode, scope, steered, ede = self._fill(snapshot, query, response, host, source_key, opts.ecs)
                if query.edns == 0:
                    reply_options = self._reply_options(opts, scope, steered, ede, cookie)
        response.set_rcode(rcode)
        if query.edns >= 0:
            # RFC 3225: DO is copied into every reply with an OPT, BADVERS included (its version is ours, 0)
            response.use_edns(0, query.ednsflags & dns.flags.DO, MAX_UDP_PAYLOAD, options=reply_options)
            response.set_rcode(rcode)  # the extended rcode bits (BADVERS) live in the OPT's TTL
        self._count(tcp, qtype_text, rcode)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            # optional additional data goes first; a referral's in-bailiwick glue may not (RFC 9471)
            glue = required_glue(response.authority, response.additional)
            if len(glue) < len(response.additional):
                response.additional = glue
                try:
                    return response.to_wire(max_size=limit)
                except dns.exception.TooBig:
                    pass
            response.answer = []
            response.authority = []
            response.additional = []
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    def _cookie(self, data: bytes, host: str) -> bytes | None:
        """The reply's COOKIE data for the query's, or None when malformed (FORMERR)."""
        assert self.cookies is not None
        try:
            ip = packed_address(host)
        except (OSError, ValueError):
            ip = b""  # not an address (a test's stand-in): the cookie then binds to nothing
        return self.cookies.answer(data, ip)[1]

    def _reply_options(self, opts: _Options, scope: int, steered: bool, ede: int | None,
                       cookie: bytes | None) -> list[dns.edns.Option]:
        out: list[dns.edns.Option] = []
        if ede is None and steered and self.stale:
            ede = ednsopts.EDE_STALE_ANSWER
        if ede is not None:
            out.append(_option(ednsopts.EDE, ede.to_bytes(2, "big")))
            self.stats.ede.setdefault(ede, [0])[0] += 1
        if opts.ecs is not None:
            # the echo is the query's option with our scope: the address bytes exactly as sent
            out.append(_option(ednsopts.ECS, opts.ecs[:3] + bytes((scope,)) + opts.ecs[4:]))
        if cookie is not None:
            out.append(_option(ednsopts.COOKIE, cookie))
        if opts.nsid and self.nsid is not None:
            out.append(_option(ednsopts.NSID, self.nsid))
            self.stats.nsid[0] += 1
        if opts.keepalive:
            out.append(_option(ednsopts.KEEPALIVE, self.keepalive))
        return out

    def _fill(self, snapshot: RenderedAnswers, query: dns.message.Message, response: dns.message.Message, host: str,
              source_key: ClientKey | None, ecs: bytes | None) -> tuple[dns.rcode.Rcode, int, bool, int | None]:
        """(rcode, ECS scope, whether a steered pick decided the answer, Extended DNS Error info-code)."""
        if len(query.question) != 1:
            return dns.rcode.FORMERR, 0, False, None
        q = query.question[0]
        if q.rdtype == dns.rdatatype.OPT or (dns.rdatatype.is_metatype(q.rdtype) and q.rdtype not in (
                dns.rdatatype.ANY, dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA,
                dns.rdatatype.MAILB)):
            return dns.rcode.FORMERR, 0, False, None
        if q.rdclass == dns.rdataclass.CH and q.name == TABLE_QNAME and q.rdtype == dns.rdatatype.TXT:
            response.answer = [table_txt(snapshot)]
            return dns.rcode.NOERROR, 0, False, None
        if q.rdclass != dns.rdataclass.IN:
            return dns.rcode.REFUSED, 0, False, ednsopts.EDE_NOT_AUTHORITATIVE
        if ecs is not None:
            key = self.geomap.key(4 if ecs[1] == 1 else 6, ecs[4:], ecs[2])
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
        if snapshot.signing is not None and query.edns >= 0 and query.ednsflags & dns.flags.DO:
            # DO=1: RRSIGs and denial proofs, the signatures the rendered answers carry (docs/dnssec.md)
            res = sign_resolution(snapshot.signing, snapshot.catalog, q.name, q.rdtype, res)
        if res.authoritative:
            response.flags |= dns.flags.AA
        response.answer = res.answer
        response.authority = res.authority
        response.additional = res.additional
        ede = None
        if res.rcode == dns.rcode.REFUSED:
            # out of our zones: not authoritative; in them, a zone transfer we do not serve
            ede = ednsopts.EDE_PROHIBITED if res.authoritative else ednsopts.EDE_NOT_AUTHORITATIVE
        return res.rcode, (key.scope if picked else 0), bool(picked), ede
