"""Differential test of the static zone data: ``steering dns`` against knot, query by query, loopback only.

    .venv/bin/python bench/dns_differential.py [--seed 1] [--queries 1500] [--examples 1] [--keep]

Both servers serve the example zone (``deploy/examples/example.test.zone``)
with ``EXTRA_ZONE`` appended (a wildcard, a delegation with glue, empty
non-terminals, CNAME chains and loops, RRsets too big for 512 and 1232
bytes); knot also gets the steered names as the fixed records ours gives the
default geo (see ``dns_conformance.fixed_steered_records``). Ours runs
``steering dns --no-etcd`` with RRL off; knot runs with ECS support on
(``edns-client-subnet: on``), DNS Cookies (``mod-cookies``) and NSID, so that
both have the same features to compare.

The queries (seeded, so every run sends the same ones) mix every name kind of
the zone (apex, names that exist, CNAMEs, empty non-terminals, wildcard
matches, the delegation and names below it, glue, names that do not exist,
names outside the zone, steered names), every type in the zone and several
others, EDNS variants (none, payload 0/512/1232/4096, DO, unknown flags,
version 1, unknown and padding options, ECS v4/v6 of several lengths,
COOKIE client-only / with a server part / malformed, NSID, keepalive), 0x20
mixed case, RD/CD/AD bits, over UDP and TCP; then fixed special packets: every
opcode, zero and two questions, QR or TC set, records in the query's answer
section, truncated and malformed packets (cut names, compression loops, long
labels, trailing bytes), meta types and classes, duplicate OPT or ECS, and
TCP pipelining.

Each response is normalized (rcode including the extended bits, QR/AA/TC/RD/RA/
CD/AD, opcode, the question as sent back (case kept), each section as a set of
records, EDNS presence/version/DO/flags, options by code) and compared field
by field. Left out by design: the NSID value (its presence is compared), the
cookie's server part (the client part's echo and the server part's length are
compared), the keepalive timeout value, the EDNS payload size advertised, the
order of records, and for steered names (or CNAME chains reaching one) the
A/AAAA data and the ECS scope, since knot has no steering.

A difference's class is (field, what differs, the query's shape: its name kind
or special packet); each class is printed once with its count, the shapes it
spans and one example query. The last line is "N queries, K classes of
difference". Exits 0 (it is evidence, not a test; a server that exits during
the run is reported as a class and ends the run); 2 when a server cannot be
started.

Installs Debian ``knot`` on demand (apt-get). Every process started here is
stopped by PID; every query waits at most ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.name  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdataclass  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.zone  # noqa: E402

from bench.dns_conformance import ZONE, ensure_packages, knot_zone_text, start_knot, start_ours  # noqa: E402
from steering.config import load_config  # noqa: E402
from tests.support import free_port, stop_process  # noqa: E402
from tests.support.dns_server import write_config  # noqa: E402

# Extra static data both servers load (names chosen not to collide with the example zone's).
EXTRA_ZONE = "\n".join([
    "; --- bench/dns_differential.py ---",
    "*.dxwild 300 IN A 192.0.2.97",
    "*.dxwild 300 IN MX 10 mail.example.test.",
    "exists.dxwild 300 IN TXT \"a real name beside the wildcard\"",
    "dxcut 300 IN NS ns.dxcut.example.test.",
    "dxcut 300 IN NS ns.example.org.",
    "ns.dxcut 300 IN A 192.0.2.96",
    "ns.dxcut 300 IN AAAA 2001:db8::96",
    "host.dxent.dxdeep 300 IN A 192.0.2.98",
    "dxalias 300 IN CNAME mail.example.test.",
    "dxext 300 IN CNAME www.example.org.",
    "dxloop1 300 IN CNAME dxloop2.example.test.",
    "dxloop2 300 IN CNAME dxloop1.example.test.",
    "dxchain 300 IN CNAME dxalias.example.test.",
    "dxtowild 300 IN CNAME x.dxwild.example.test.",
    "dxtocut 300 IN CNAME x.dxcut.example.test.",
    "dxtonx 300 IN CNAME nothing-here.example.test.",
    *[f"dxmany 300 IN A 192.0.2.{i}" for i in range(100, 160)],
    *[f"dxbig 300 IN TXT \"{chr(97 + i) * 200}\"" for i in range(8)],
    "dxmx 300 IN MX 0 mail.example.test.",
    "dxmx 300 IN MX 10 ns.dxcut.example.test.",
    "dxsrv 300 IN SRV 0 0 443 dxmany.example.test.",
    "dxptr 300 IN PTR mail.example.test.",
    "dxhttps 300 IN HTTPS 1 . alpn=h2",
    "dxunknown 300 IN TYPE65280 \\# 4 0a000001",
])

OTHER_TYPES = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "SRV", "CAA", "CNAME", "PTR", "ANY", "DS", "DNSKEY",
               "HTTPS", "SVCB", "NAPTR", "RRSIG", "NSEC", "DNAME", "HINFO", "TYPE65280", "TYPE999"]
EDNS_VARIANTS = ["none", "p0", "p512", "p1232", "p4096", "do", "zflag", "unknown-opt", "padding",
                 "ecs4/24", "ecs4/32", "ecs4/16", "ecs4/0", "ecs6/56", "ecs6/48", "ecs6/128", "ecs6/0",
                 "ecs4-geo/24", "ecs6-geo/56", "cookie-client", "cookie-server", "nsid", "keepalive", "multi"]
WEIGHTED_EDNS = ["none"] * 6 + ["p1232"] * 4 + EDNS_VARIANTS

# ---- wire building -------------------------------------------------------------------------------


def name_wire(name: str) -> bytes:
    """Uncompressed wire form, case kept; '.' is the root."""
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode()
            out += bytes((len(raw),)) + raw
    return out + b"\x00"


@dataclass
class Edns:
    payload: int = 1232
    version: int = 0
    do: bool = False
    zflags: int = 0
    options: list[tuple[int, bytes]] = field(default_factory=list)

    def wire(self) -> bytes:
        opts = b"".join(struct.pack("!HH", c, len(d)) + d for c, d in self.options)
        ttl = (self.version << 16) | (0x8000 if self.do else 0) | self.zflags
        return b"\x00" + struct.pack("!HHIH", 41, self.payload, ttl, len(opts)) + opts


def header(qid: int, flags: int, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def query_wire(qid: int, qname: str, qtype: int, qclass: int = 1, flags: int = 0,
               edns: Edns | None = None, opcode: int = 0) -> bytes:
    flags |= opcode << 11
    q = name_wire(qname) + struct.pack("!HH", qtype, qclass)
    ar = b"" if edns is None else edns.wire()
    return header(qid, flags, 1, 0, 0, 1 if edns else 0) + q + ar


def ecs_option(family: int, source: int, addr: bytes, scope: int = 0) -> tuple[int, bytes]:
    return 8, struct.pack("!HBB", family, source, scope) + addr[:(source + 7) // 8]


def mixed_case(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in name)


# ---- the zone as names of each kind --------------------------------------------------------------

class ZoneModel:
    """Owner names, empty non-terminals, cuts, wildcards and steered names of the zone both servers serve."""

    def __init__(self, text: str, origin: str, steered: Iterable[str]) -> None:
        self.origin = dns.name.from_text(origin)
        zone = dns.zone.from_text(text, origin=self.origin, relativize=False, check_origin=True)
        self.rdtypes: dict[dns.name.Name, set[int]] = {}
        for name, node in zone.nodes.items():
            self.rdtypes[name.canonicalize()] = {rds.rdtype for rds in node.rdatasets}
        self.cname: dict[dns.name.Name, dns.name.Name] = {}
        for name, node in zone.nodes.items():
            rds = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if rds:
                self.cname[name.canonicalize()] = rds[0].target.canonicalize()
        self.cuts = {n for n, t in self.rdtypes.items() if dns.rdatatype.NS in t and n != self.origin}
        self.wild_parents = {n.parent() for n in self.rdtypes if n.labels[0] == b"*"}
        self.steered = {dns.name.from_text(s).canonicalize() for s in steered}
        self.ents: set[dns.name.Name] = set()
        for n in self.rdtypes:
            p = n.parent()
            while p != self.origin and p.is_subdomain(self.origin) and p not in self.rdtypes:
                self.ents.add(p)
                p = p.parent()

    def kind(self, qname: dns.name.Name) -> str:
        n = qname.canonicalize()
        if not n.is_subdomain(self.origin):
            return "out-of-zone"
        if n == self.origin:
            return "apex"
        for cut in self.cuts:
            if n == cut:
                return "delegation"
            if n.is_subdomain(cut):
                return "glue" if n in self.rdtypes else "below-delegation"
        if n in self.steered:
            return "steered"
        if n in self.rdtypes:
            if n.labels[0] == b"*":
                return "wildcard-owner"
            return "cname" if n in self.cname else "exists"
        if n in self.ents:
            return "ent"
        ce = n.parent()
        while ce != self.origin and ce not in self.rdtypes and ce not in self.ents:
            ce = ce.parent()
        return "wildcard-match" if ce in self.wild_parents else "nxdomain"

    def reaches_steered(self, qname: dns.name.Name) -> bool:
        n = qname.canonicalize()
        for _ in range(10):
            if n in self.steered:
                return True
            if n not in self.cname:
                return False
            n = self.cname[n]
        return False

    def name_pools(self, rng: random.Random) -> dict[str, list[str]]:
        o = self.origin.to_text()
        owners = sorted(n.to_text() for n in self.rdtypes)
        leaves = [n for n in owners if not n.startswith("*")]
        pools = {
            "owner": owners,
            "steered": sorted(n.to_text() for n in self.steered),
            "ent": sorted(n.to_text() for n in self.ents),
            "wildcard-match": [f"{lab}.{p.to_text()}" for p in sorted(self.wild_parents)
                               for lab in ("x", "www", "a.b", "deep.er.x", "mail", "_tcp")],
            "delegation": [c.to_text() for c in sorted(self.cuts)]
            + [f"{lab}.{c.to_text()}" for c in sorted(self.cuts) for lab in ("x", "www", "a.b", "ns")],
            "nxdomain": [f"nx{i}.{o}" for i in range(8)] + [f"nx.{n}" for n in leaves[:12]]
            + [f"deep.nx.nx.{o}", f"{'a' * 63}.{o}"],
            "out-of-zone": [".", "test.", "org.", "example.org.", "www.example.org.", "xexample.test.",
                            "example.test.example.org.", "1.0.0.127.in-addr.arpa."],
        }
        rng.shuffle(pools["nxdomain"])
        return pools


# ---- queries -------------------------------------------------------------------------------------

@dataclass
class Query:
    wire: bytes
    transport: str  # udp, tcp, tcp-pipeline
    shape: str  # the name kind, or the special packet's name
    qtype: str = "-"
    edns: str = "none"
    desc: str = ""
    steered: bool = False
    client_cookie: bytes = b""
    extra: list[bytes] = field(default_factory=list)  # further queries on the same TCP connection
    remake: Callable[[bytes], bytes] | None = None  # the same query with this COOKIE option data
    random: bool = False  # from random_queries (else a fixed special packet)


def edns_for(variant: str, rng: random.Random) -> tuple[Edns | None, bytes]:
    """The OPT for a variant name, and the client cookie it carries (b'' if none)."""
    if variant == "none":
        return None, b""
    e = Edns()
    cookie = b""
    if variant[0] == "p" and variant[1:].isdigit():
        e.payload = int(variant[1:])
    elif variant == "do":
        e.do = True
    elif variant == "zflag":
        e.zflags = 0x4000
    elif variant == "unknown-opt":
        e.options.append((65001, b"abc"))
    elif variant == "padding":
        e.options.append((12, bytes(16)))
    elif variant.startswith("ecs4-geo/"):  # inside a geo's prefix: ours steers (masked), knot cannot
        addr = bytes((rng.choice((198, 203)), 51 if rng.random() < 0.5 else 0, rng.randrange(256), 0))
        addr = bytes((198, 51, 100, 0)) if addr[0] == 198 else bytes((203, 0, 113, 0))
        e.options.append(ecs_option(1, 24, addr))
    elif variant.startswith("ecs6-geo/"):
        addr = bytes((0x20, 0x01, 0x0d, 0xb8, 0, rng.randrange(1, 6), 0, rng.randrange(256))) + bytes(8)
        e.options.append(ecs_option(2, 56, addr))
    elif variant.startswith("ecs4/"):
        src = int(variant[5:])
        addr = bytes((rng.choice((8, 100, 151, 185, 192)), rng.randrange(256), rng.randrange(256), 0))
        e.options.append(ecs_option(1, src, _masked(addr, src)))
    elif variant.startswith("ecs6/"):
        src = int(variant[5:])
        addr = bytes((0x20, 0x01, 0x0d, 0xb8, 0x99, rng.randrange(256))) + bytes(rng.randrange(256) for _ in range(10))
        e.options.append(ecs_option(2, src, _masked(addr, src)))
    elif variant == "cookie-client":
        cookie = bytes(rng.randrange(256) for _ in range(8))
        e.options.append((10, cookie))
    elif variant == "cookie-server":  # a client cookie and a server cookie neither server made
        cookie = bytes(rng.randrange(256) for _ in range(8))
        e.options.append((10, cookie + b"\x01\x00\x00\x00" + bytes(rng.randrange(256) for _ in range(12))))
    elif variant == "nsid":
        e.options.append((3, b""))
    elif variant == "keepalive":
        e.options.append((11, b""))
    elif variant == "multi":
        cookie = bytes(rng.randrange(256) for _ in range(8))
        e.options += [(3, b""), (10, cookie), ecs_option(1, 24, bytes((100, 64, rng.randrange(256), 0)))]
    else:
        raise ValueError(variant)
    return e, cookie


def _masked(addr: bytes, bits: int) -> bytes:
    out = bytearray(addr)
    for i in range(len(out)):
        keep = max(0, min(8, bits - 8 * i))
        out[i] &= (0xFF << (8 - keep)) & 0xFF
    return bytes(out)


class Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self) -> int:
        return self.rng.randrange(1, 65536)


def random_queries(model: ZoneModel, rng: random.Random, count: int) -> list[Query]:
    pools = model.name_pools(rng)
    weights = {"owner": 30, "steered": 5, "ent": 8, "wildcard-match": 12, "delegation": 12, "nxdomain": 15,
               "out-of-zone": 6}
    kinds = list(weights)
    ids = Ids(rng)
    out = []
    for _ in range(count):
        pool = rng.choices(kinds, [weights[k] for k in kinds])[0]
        qname = rng.choice(pools[pool] or pools["owner"])
        name = dns.name.from_text(qname)
        present = sorted(model.rdtypes.get(name.canonicalize(), set()))
        if present and rng.random() < 0.4:
            qtype = dns.rdatatype.to_text(dns.rdatatype.RdataType(rng.choice(present)))
        else:
            qtype = rng.choice(OTHER_TYPES)
        variant = rng.choice(WEIGHTED_EDNS)
        transport = "tcp" if rng.random() < 0.35 else "udp"
        e, cookie = edns_for(variant, rng)
        flags = 0
        tags = []
        if rng.random() < 0.5:
            flags |= 0x0100
            tags.append("rd")
        if rng.random() < 0.1:
            flags |= 0x0010
            tags.append("cd")
        if rng.random() < 0.1:
            flags |= 0x0020
            tags.append("ad")
        sent = mixed_case(rng, qname) if rng.random() < 0.3 else qname
        qid, rdtype = ids(), dns.rdatatype.from_text(qtype)
        wire = query_wire(qid, sent, rdtype, flags=flags, edns=e)

        def remake(cookie_data: bytes, qid: int = qid, sent: str = sent, rdtype: int = rdtype, flags: int = flags,
                   e: Edns | None = e) -> bytes:
            assert e is not None
            opts = [(c, cookie_data if c == 10 else d) for c, d in e.options]
            return query_wire(qid, sent, rdtype, flags=flags,
                              edns=Edns(e.payload, e.version, e.do, e.zflags, opts))

        out.append(Query(wire, transport, model.kind(name), qtype, variant,
                         f"{transport} {sent} {qtype} edns={variant} {'+'.join(tags)}".rstrip(),
                         model.reaches_steered(name), cookie, remake=remake if cookie else None, random=True))
    return out


def special_queries(model: ZoneModel, rng: random.Random) -> list[Query]:
    """Fixed odd packets, each over UDP and TCP."""
    ids = Ids(rng)
    apex = model.origin.to_text()
    www = "mail." + apex
    qsoa = name_wire(apex) + struct.pack("!HH", 6, 1)
    qa = name_wire(www) + struct.pack("!HH", 1, 1)
    opt = Edns().wire()
    specs: list[tuple[str, Callable[[int], bytes], bytes]] = []

    def add(shape: str, make: Callable[[int], bytes], cookie: bytes = b"") -> None:
        specs.append((shape, make, cookie))

    def opcode(op: int, edns: bool) -> Callable[[int], bytes]:
        return lambda i: header(i, op << 11, ar=1) + qsoa + opt if edns else header(i, op << 11) + qsoa

    for op in range(16):
        if op != 0:
            add(f"opcode-{op}", opcode(op, False))
            add(f"opcode-{op}+edns", opcode(op, True))
    add("notify-soa-aa", lambda i: header(i, (4 << 11) | 0x0400) + qsoa)
    add("update-empty", lambda i: header(i, 5 << 11, qd=1) + qsoa)
    add("no-question", lambda i: header(i, 0, qd=0))
    add("no-question+edns", lambda i: header(i, 0, qd=0, ar=1) + opt)
    add("two-questions", lambda i: header(i, 0, qd=2) + qa + qsoa)
    add("two-questions+edns", lambda i: header(i, 0, qd=2, ar=1) + qa + qsoa + opt)
    add("qr-set", lambda i: header(i, 0x8000) + qa)
    add("tc-set", lambda i: header(i, 0x0200) + qa)
    add("aa-set", lambda i: header(i, 0x0400) + qa)
    add("z-bit-set", lambda i: header(i, 0x0040) + qa)
    add("rcode-set", lambda i: header(i, 0x0003) + qa)
    answer_rr = name_wire(www) + struct.pack("!HHIH", 1, 1, 60, 4) + bytes((192, 0, 2, 1))
    add("answer-in-query", lambda i: header(i, 0, an=1) + qa + answer_rr)
    add("authority-in-query", lambda i: header(i, 0, ns=1) + qa + answer_rr)
    add("header-only", lambda i: header(i, 0, qd=1))
    add("short-5-bytes", lambda i: header(i, 0)[:5])
    add("cut-in-name", lambda i: header(i, 0) + qa[:6])
    add("cut-before-type", lambda i: header(i, 0) + name_wire(www))
    add("cut-in-class", lambda i: header(i, 0) + qa[:-1])
    add("trailing-garbage", lambda i: header(i, 0) + qa + b"\xde\xad\xbe\xef")
    add("counts-too-high", lambda i: header(i, 0, qd=1, an=3, ar=2) + qa)
    add("pointer-loop", lambda i: header(i, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1))
    add("pointer-forward", lambda i: header(i, 0) + b"\xc0\x20" + struct.pack("!HH", 1, 1) + bytes(20))
    add("pointer-in-question", lambda i: header(i, 0, qd=2) + qa + b"\xc0\x0c" + struct.pack("!HH", 28, 1))
    add("label-64", lambda i: header(i, 0) + b"\x40" + b"a" * 64 + name_wire(apex) + struct.pack("!HH", 1, 1))
    add("name-over-255", lambda i: header(i, 0) + b"".join(b"\x3f" + b"b" * 63 for _ in range(4))
        + name_wire(apex) + struct.pack("!HH", 1, 1))
    add("label-type-0x40", lambda i: header(i, 0) + b"\x41\x00" + struct.pack("!HH", 1, 1))
    add("uppercase-apex-soa", lambda i: header(i, 0) + name_wire(apex.upper()) + struct.pack("!HH", 6, 1))
    def of_class(cls: int) -> Callable[[int], bytes]:
        return lambda i: header(i, 0) + name_wire(www) + struct.pack("!HH", 1, cls)

    def of_type(t: int) -> Callable[[int], bytes]:
        return lambda i: header(i, 0) + name_wire(apex) + struct.pack("!HH", t, 1)

    for cls_name, cls in (("CH", 3), ("HS", 4), ("NONE", 254), ("ANY", 255), ("class-5", 5)):
        add(f"class-{cls_name}", of_class(cls))
    add("chaos-version.bind", lambda i: header(i, 0) + name_wire("version.bind.") + struct.pack("!HH", 16, 3))
    add("chaos-id.server", lambda i: header(i, 0) + name_wire("id.server.") + struct.pack("!HH", 16, 3))
    for tname in ("AXFR", "IXFR", "MAILA", "MAILB", "OPT", "TSIG", "TKEY", "TYPE0", "NULL"):
        add(f"qtype-{tname}", of_type(dns.rdatatype.from_text(tname)))
    add("edns-version-1", lambda i: query_wire(i, www, 1, edns=Edns(version=1)))
    add("edns-version-1-do", lambda i: query_wire(i, www, 1, edns=Edns(version=1, do=True)))
    add("edns-version-255-nx", lambda i: query_wire(i, "nx." + apex, 1, edns=Edns(version=255)))
    add("edns-version-1-refused", lambda i: query_wire(i, "example.org.", 1, edns=Edns(version=1)))
    add("two-opt", lambda i: header(i, 0, ar=2) + qa + opt + opt)
    add("opt-not-root", lambda i: header(i, 0, ar=1) + qa + b"\x01x\x00" + opt[1:])
    add("opt-in-answer", lambda i: header(i, 0, an=1) + qa + opt)
    add("opt-rdlen-too-long", lambda i: header(i, 0, ar=1) + qa + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 10)
        + b"\x00\x03\x00\x00")
    add("opt-option-overrun", lambda i: header(i, 0, ar=1) + qa + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 4)
        + struct.pack("!HH", 3, 8))
    add("opt-ext-rcode-set", lambda i: header(i, 0, ar=1) + qa + b"\x00" + struct.pack("!HHIH", 41, 1232, 1 << 24, 0))
    add("payload-100", lambda i: query_wire(i, "dxmany." + apex, 1, edns=Edns(payload=100)))
    add("payload-65535", lambda i: query_wire(i, "dxbig." + apex, 16, edns=Edns(payload=65535)))
    add("big-noedns", lambda i: query_wire(i, "dxmany." + apex, 1))
    add("big-512", lambda i: query_wire(i, "dxmany." + apex, 1, edns=Edns(payload=512)))
    add("bigger-1232", lambda i: query_wire(i, "dxbig." + apex, 16, edns=Edns(payload=1232)))
    add("bigger-4096", lambda i: query_wire(i, "dxbig." + apex, 16, edns=Edns(payload=4096)))
    v4 = bytes((100, 64, 1, 0))
    ecs_cases: list[tuple[str, tuple[int, bytes]]] = [
        ("ecs-source-33", (8, struct.pack("!HBB", 1, 33, 0) + v4 + b"\x00")),
        ("ecs-v6-source-129", (8, struct.pack("!HBB", 2, 129, 0) + bytes(17))),
        ("ecs-family-3", (8, struct.pack("!HBB", 3, 8, 0) + b"\x01")),
        ("ecs-family-0", (8, struct.pack("!HBB", 0, 0, 0))),
        ("ecs-scope-nonzero", (8, struct.pack("!HBB", 1, 24, 16) + v4[:3])),
        ("ecs-address-too-long", (8, struct.pack("!HBB", 1, 16, 0) + v4[:3])),
        ("ecs-address-too-short", (8, struct.pack("!HBB", 1, 24, 0) + v4[:2])),
        ("ecs-bits-beyond-source", (8, struct.pack("!HBB", 1, 20, 0) + bytes((100, 64, 0xFF)))),
        ("ecs-truncated-head", (8, b"\x00\x01\x18")),
        ("ecs-empty", (8, b"")),
        ("ecs-v4-in-geo", (8, struct.pack("!HBB", 1, 24, 0) + bytes((198, 51, 100))))]
    def with_option(o: tuple[int, bytes]) -> Callable[[int], bytes]:
        return lambda i: query_wire(i, www, 1, edns=Edns(options=[o]))

    for shape, option in ecs_cases:
        add(shape, with_option(option))
    add("ecs-twice", lambda i: query_wire(i, www, 1, edns=Edns(options=[ecs_option(1, 24, v4),
                                                                           ecs_option(1, 24, v4)])))
    for n in (1, 7, 9, 15, 41, 16, 40):
        add(f"cookie-len-{n}", with_option((10, bytes(range(1, n + 1)))), bytes(range(1, 9)) if 16 <= n <= 40 else b"")
    add("cookie-twice", lambda i: query_wire(i, www, 1, edns=Edns(options=[(10, bytes(8)), (10, bytes(8))])))
    add("nsid-with-data", lambda i: query_wire(i, www, 1, edns=Edns(options=[(3, b"xyz")])))
    add("nsid-twice", lambda i: query_wire(i, www, 1, edns=Edns(options=[(3, b""), (3, b"")])))
    add("keepalive-with-timeout", lambda i: query_wire(i, www, 1, edns=Edns(options=[(11, b"\x00\x64")])))
    add("keepalive-bad-length", lambda i: query_wire(i, www, 1, edns=Edns(options=[(11, b"\x01")])))
    add("ede-in-query", lambda i: query_wire(i, www, 1, edns=Edns(options=[(15, b"\x00\x03")])))
    add("expire-option", lambda i: query_wire(i, apex, 6, edns=Edns(options=[(9, b"")])))
    add("ede-edns-nx-do", lambda i: query_wire(i, "nx." + apex, 1, edns=Edns(do=True)))
    out = []
    for shape, make, cookie in specs:
        for transport in ("udp", "tcp"):
            qid = ids()

            def remake(data: bytes, qid: int = qid) -> bytes:
                return query_wire(qid, www, 1, edns=Edns(options=[(10, data)]))

            out.append(Query(make(qid), transport, shape, desc=f"{transport} special {shape}",
                             client_cookie=cookie, edns="special", remake=remake if cookie else None))
    # pipelining: three queries in one TCP write, answers matched by ID
    for n in range(4):
        wires = [query_wire(ids(), name, t, edns=Edns() if k % 2 else None)
                 for k, (name, t) in enumerate((("mail." + apex, 1), (apex, 6), ("nx." + apex, 28)))]
        out.append(Query(wires[0], "tcp-pipeline", "tcp-pipeline", desc=f"tcp pipeline of {len(wires)} (#{n})",
                         extra=wires[1:], edns="special"))
    return out


# ---- transport -----------------------------------------------------------------------------------

class Client:
    def __init__(self, port: int, timeout: float) -> None:
        self.addr = ("127.0.0.1", port)
        self.timeout = timeout
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.connect(self.addr)

    def close(self) -> None:
        self.udp.close()

    def send(self, q: Query) -> list[bytes] | str:
        """The response(s), or why there is none."""
        if q.transport == "udp":
            return self._udp(q.wire)
        return self._tcp([q.wire, *q.extra])

    def _udp(self, wire: bytes) -> list[bytes] | str:
        self.udp.settimeout(0.0)
        try:  # a late answer to an earlier query must not be taken for this one
            while True:
                self.udp.recv(65535)
        except (BlockingIOError, OSError):
            pass
        self.udp.settimeout(self.timeout)
        self.udp.send(wire)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "no response (udp)"
            self.udp.settimeout(left)
            try:
                resp = self.udp.recv(65535)
            except TimeoutError:
                return "no response (udp)"
            except ConnectionRefusedError:
                return "port unreachable"
            if len(wire) < 2 or resp[:2] == wire[:2]:
                return [resp]

    def _tcp(self, wires: Sequence[bytes]) -> list[bytes] | str:
        try:
            s = socket.create_connection(self.addr, timeout=self.timeout)
        except OSError as exc:
            return f"connect failed ({type(exc).__name__})"
        with s:
            s.sendall(b"".join(struct.pack("!H", len(w)) + w for w in wires))
            out: list[bytes] = []
            buf = b""
            deadline = time.monotonic() + self.timeout
            while len(out) < len(wires):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    chunk = s.recv(65535)
                except TimeoutError:
                    break
                except ConnectionResetError:
                    return out or "connection reset (tcp)"
                if not chunk:
                    return out or "connection closed (tcp)"
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                    n = struct.unpack("!H", buf[:2])[0]
                    out.append(buf[2:2 + n])
                    buf = buf[2 + n:]
            return out or "no response (tcp, open)"


# ---- normalization -------------------------------------------------------------------------------

Fields = dict[str, Any]
_NAME_TYPES = {dns.rdatatype.from_text(t) for t in ("CNAME", "NS", "MX", "SRV", "PTR", "SOA", "DNAME",
                                                    "HTTPS", "SVCB", "NAPTR", "RP", "AFSDB", "KX")}


def _options(msg: dns.message.Message) -> list[tuple[int, bytes]]:
    return [(int(o.otype), o.to_wire() or b"") for o in msg.options]


def normalize(resp: list[bytes] | str, q: Query, steered: set[str]) -> Fields:
    if isinstance(resp, str):
        return {"response": resp}
    if q.transport == "tcp-pipeline":
        ids = sorted((struct.unpack("!H", r[:2])[0], r[3] & 0x0F) for r in resp if len(r) >= 4)
        sent = sorted(struct.unpack("!H", w[:2])[0] for w in [q.wire, *q.extra])
        return {"response": "answered", "pipeline": (len(resp), [i for i, _ in ids] == sent, [c for _, c in ids])}
    wire = resp[0]
    out: Fields = {"response": "answered"}
    if len(wire) < 12:
        out["response"] = f"short ({len(wire)} bytes)"
        return out
    flags = struct.unpack("!H", wire[2:4])[0]
    out["id-echo"] = wire[:2] == q.wire[:2]
    for name, bit in (("QR", 0x8000), ("AA", 0x0400), ("TC", 0x0200), ("RD", 0x0100), ("RA", 0x0080),
                      ("AD", 0x0020), ("CD", 0x0010), ("Z", 0x0040)):
        out[f"flag.{name}"] = bool(flags & bit)
    out["opcode"] = (flags >> 11) & 0xF
    out["counts"] = struct.unpack("!HHHH", wire[4:12]) if not flags & 0x0200 else "truncated"
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=False, question_only=False)
    except Exception as exc:  # record what the header says; the rest is not comparable
        out["rcode"] = dns.rcode.to_text(flags & 0xF)
        out["parse"] = f"unparseable ({type(exc).__name__})"
        return out
    out["rcode"] = dns.rcode.to_text(msg.rcode())
    out["question"] = tuple((r.name.to_text(), dns.rdatatype.to_text(r.rdtype), dns.rdataclass.to_text(r.rdclass))
                            for r in msg.question)
    for sect, rrsets in (("answer", msg.answer), ("authority", msg.authority), ("additional", msg.additional)):
        recs = set()
        for rrset in rrsets:
            owner = rrset.name.to_text().lower()
            for rd in rrset:
                data = rd.to_text()
                if rrset.rdtype in _NAME_TYPES:  # a compressed name may take the query's 0x20 case
                    data = data.lower()
                if owner in steered and rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    data = "<steered>"
                recs.add((owner, dns.rdatatype.to_text(rrset.rdtype), dns.rdataclass.to_text(rrset.rdclass),
                          rrset.ttl, data))
        out[sect] = frozenset(recs)
    out["edns"] = None if msg.edns < 0 else (msg.edns, bool(msg.ednsflags & dns.flags.DO), msg.ednsflags & 0x7FFF)
    seen: Counter[int] = Counter()
    for code, data in _options(msg):
        seen[code] += 1
        out[f"opt.{_opt_name(code)}#{seen[code]}"] = _opt_value(code, data, q)
    return out


def _opt_name(code: int) -> str:
    return {3: "NSID", 8: "ECS", 9: "EXPIRE", 10: "COOKIE", 11: "KEEPALIVE", 12: "PADDING",
            15: "EDE"}.get(code, str(code))


def _opt_value(code: int, data: bytes, q: Query) -> Any:
    if code == 3:
        return "present"  # the value is the server's identity
    if code == 8 and len(data) >= 4:
        family, src, scope = struct.unpack("!HBB", data[:4])
        return (family, src, "*" if q.steered else scope, data[4:].hex())
    if code == 10:
        client = data[:8]
        return ("client " + ("echoed" if client == q.client_cookie else f"{client.hex()} (not the query's)"),
                f"server {len(data) - 8} bytes" if len(data) > 8 else "no server cookie")
    if code == 11:
        return f"{len(data)}-byte value"
    if code == 12:
        return "present"
    if code == 15 and len(data) >= 2:
        return f"info-code {struct.unpack('!H', data[:2])[0]}"
    return data.hex()


# ---- comparison ----------------------------------------------------------------------------------

def _owner_role(owner: str, qname: str, apex: str) -> str:
    if owner == qname:
        return "qname"
    if owner == apex:
        return "apex"
    return "other"


def section_change(ours: frozenset[Any], knot: frozenset[Any], qname: str, qtype: str, apex: str) -> str:
    """An abstract description of how two sections differ (types by owner role), so like causes group."""
    def groups(recs: frozenset[Any]) -> dict[tuple[str, str], set[Any]]:
        g: dict[tuple[str, str], set[Any]] = defaultdict(set)
        for owner, rtype, _cls, ttl, data in recs:
            t = "QTYPE" if rtype == qtype else rtype
            g[(_owner_role(owner, qname, apex), t)].add((owner, ttl, data))
        return g

    go, gk = groups(ours), groups(knot)
    parts = []
    for key in sorted(set(go) | set(gk)):
        role, t = key
        if key not in gk:
            parts.append(f"only ours {t}@{role}")
        elif key not in go:
            parts.append(f"only knot {t}@{role}")
        elif go[key] != gk[key]:
            o, k = go[key], gk[key]
            what = "TTL" if {(a, d) for a, _, d in o} == {(a, d) for a, _, d in k} else "data"
            parts.append(f"{t}@{role} {what} differs")
    return "; ".join(parts)


@dataclass
class DiffClass:
    field: str
    change: str
    special: str  # the special packet's name, "" for random queries (their shape is derived in report())
    count: int = 0
    dims: dict[str, Counter[str]] = dataclasses.field(default_factory=lambda: defaultdict(Counter))
    examples: list[tuple[Query, Any, Any, list[str]]] = dataclasses.field(default_factory=list)


# When one of these differs, the fields after it mostly follow from it: only it is reported, the others
# are named beside its example.
_LEADING = ("response", "parse", "rcode")


def compare(q: Query, ours: Fields, knot: Fields, apex: str) -> list[tuple[str, str, Any, Any, list[str]]]:
    """(field, change, ours value, knot value, other differing fields) for each difference worth a class."""
    qname = ""
    for f in (ours, knot):
        if f.get("question"):
            qname = f["question"][0][0].lower()
            break
    differing = [k for k in sorted(set(ours) | set(knot)) if ours.get(k) != knot.get(k) and k != "counts"]
    for lead in _LEADING:
        if lead in differing:
            rest = [k for k in differing if k != lead] if lead != "response" else []
            o, k = ours.get(lead), knot.get(lead)
            if lead == "response":
                o = f"{o} {ours.get('rcode', '')}".strip()
                k = f"{k} {knot.get('rcode', '')}".strip()
            return [(lead, f"ours {_short(o)} / knot {_short(k)}", o, k, rest)]
    if "edns" in differing and (ours.get("edns") is None or knot.get("edns") is None):
        differing = [k for k in differing if not k.startswith("opt.")]
    out: list[tuple[str, str, Any, Any, list[str]]] = []
    for key in differing:
        o, k = ours.get(key), knot.get(key)
        if key in ("answer", "authority", "additional") and isinstance(o, frozenset) and isinstance(k, frozenset):
            change = section_change(o, k, qname, q.qtype, apex)
        elif key == "question" and o and k and [x[0].lower() for x in o] == [x[0].lower() for x in k]:
            change = "case of the question name"
        else:
            change = f"ours {_short(o)} / knot {_short(k)}"
        out.append((key, change, o, k, []))
    return out


def _short(v: Any) -> str:
    if v is None:
        return "absent"
    if isinstance(v, frozenset):
        return "{" + ", ".join(sorted(f"{r[0]} {r[3]} {r[1]} {r[4]}" for r in v))[:300] + "}"
    return str(v)[:200]


def _cookie_from(resp: list[bytes] | str) -> bytes | None:
    """The COOKIE option data of a BADCOOKIE response, else None."""
    if isinstance(resp, str) or not resp:
        return None
    try:
        msg = dns.message.from_wire(resp[0])
    except Exception:
        return None
    if msg.rcode() != dns.rcode.BADCOOKIE:
        return None
    return next((data for code, data in _options(msg) if code == 10), None)


def exchange(client: Client, q: Query) -> tuple[list[bytes] | str, bool]:
    """The response; a BADCOOKIE with a server cookie is retried once with it, as a client would."""
    resp = client.send(q)
    cookie = _cookie_from(resp)
    if cookie is None or q.remake is None:
        return resp, False
    again = Query(q.remake(cookie), q.transport, q.shape, q.qtype, q.edns, q.desc, q.steered, q.client_cookie)
    return client.send(again), True


DIMS = ("kind", "qtype", "edns", "transport")
# RRL off: the run sends well over 200 answers a second to one /24, which the default would limit
OURS_DNS = {"rrl": {"enabled": False}, "nsid": True, "identity": "ours-differential"}
_FAMILIES = [("opcode", ("opcode-", "notify-", "update-")), ("meta qtype", ("qtype-",)),
             ("class", ("class-", "chaos-")), ("EDNS version", ("edns-version",)), ("ECS format", ("ecs-",)),
             ("COOKIE format", ("cookie-",)), ("NSID", ("nsid-",)), ("keepalive", ("keepalive-",)),
             ("OPT format", ("opt-", "two-opt")), ("truncation", ("payload-", "big-", "bigger-")),
             ("header", ("no-question", "two-questions", "qr-set", "tc-set", "aa-set", "z-bit-set", "rcode-set",
                         "answer-in-query", "authority-in-query", "counts-too-high", "uppercase-")),
             ("malformed", ("header-only", "short-", "cut-", "trailing-", "pointer-", "label-", "name-over-"))]


def family(shape: str) -> str:
    """The group a special packet belongs to (its classes are per group, the packets listed)."""
    return next((f for f, prefixes in _FAMILIES if shape.startswith(prefixes)), shape)


def dims_of(q: Query) -> dict[str, str]:
    return {"kind": q.shape, "qtype": q.qtype, "edns": q.edns, "transport": q.transport}


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="dnsdiff-"))
    cfg = load_config(write_config(work / "cfg"))
    steered_names = [s.name for s in cfg.services]
    ktext = knot_zone_text(cfg, EXTRA_ZONE)
    model = ZoneModel(ktext, ZONE, steered_names)
    queries = random_queries(model, rng, args.queries) + special_queries(model, rng)
    steered = {dns.name.from_text(s).to_text().lower() for s in steered_names}
    oport, kport = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    universe: dict[str, Counter[str]] = defaultdict(Counter)
    retried: Counter[str] = Counter()
    try:
        try:
            procs.append(start_ours(work / "ours", [("127.0.0.1", oport)], extra_zone=EXTRA_ZONE,
                                    dns=OURS_DNS))
            procs.append(start_knot(work / "knot", [("127.0.0.1", kport)], [(ZONE, ktext)],
                                    server_extra="    edns-client-subnet: on\n    nsid: knot-differential",
                                    extra="template:\n  - id: default\n    global-module: mod-cookies\n"))
        except RuntimeError as exc:
            print(f"could not start: {exc}", file=sys.stderr)
            return 2
        ours_c, knot_c = Client(oport, args.timeout), Client(kport, args.timeout)
        classes: dict[tuple[str, str, str], DiffClass] = {}
        t0 = time.monotonic()
        for q in queries:
            if q.random:
                for d, v in dims_of(q).items():
                    universe[d][v] += 1
            ro, ro_retried = exchange(ours_c, q)
            rk, rk_retried = exchange(knot_c, q)
            retried["ours"] += ro_retried
            retried["knot"] += rk_retried
            fo, fk = normalize(ro, q, steered), normalize(rk, q, steered)
            for fld, change, o, k, rest in compare(q, fo, fk, model.origin.to_text().lower()):
                special = "" if q.random else family(q.shape)
                c = classes.setdefault((fld, change, special), DiffClass(fld, change, special))
                c.count += 1
                for d, v in dims_of(q).items():
                    c.dims[d][v] += 1
                if len(c.examples) < args.examples:
                    c.examples.append((q, o, k, rest))
            dead = [(name, p) for name, p in zip(("ours", "knot"), procs, strict=True) if p.poll() is not None]
            if dead:  # a finding in itself: report it as a class and stop sending
                name, p = dead[0]
                c = classes.setdefault(("server", f"{name} exited ({p.returncode})", ""),
                                       DiffClass("server", f"{name} exited ({p.returncode})", ""))
                c.count += 1
                for d, v in dims_of(q).items():
                    c.dims[d][v] += 1
                c.examples.append((q, f"exit {p.returncode}", "", []))
                print(f"{name} exited with {p.returncode} after: {q.desc} (wire {q.wire.hex()})", file=sys.stderr)
                break
        elapsed = time.monotonic() - t0
        ours_c.close()
        knot_c.close()
    finally:
        for p in procs:
            stop_process(p, 10)
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(classes, universe)
    print("sent: " + "; ".join(f"{d}: {_top(universe[d], 30)}" for d in ("kind", "transport")))
    print(f"      {sum(1 for q in queries if not q.random)} special packets;"
          f" qtypes {len(universe['qtype'])}, EDNS variants {len(universe['edns'])}")
    print(f"BADCOOKIE answered, then retried with the server's cookie: ours {retried['ours']}, knot {retried['knot']}"
          f" (of {sum(1 for q in queries if q.remake)} queries with a well-formed cookie)")
    print(f"({elapsed:.1f} s, seed {args.seed})")
    print(f"{len(queries)} queries, {len(classes)} classes of difference")
    return 0


def _top(c: Counter[str], n: int = 6) -> str:
    items = [f"{k} {v}" for k, v in c.most_common(n)]
    return ", ".join(items) + (f", +{len(c) - n} more" if len(c) > n else "")


def shape_of(c: DiffClass, universe: Mapping[str, Counter[str]]) -> str:
    """A random-query class's shape: each dimension whose values it covers only a few of."""
    if c.special:
        return f"special packets, {c.special}: {_top(c.dims['kind'], 12)} ({_top(c.dims['transport'])})"
    parts = []
    for d in DIMS:
        seen = c.dims[d]
        if len(seen) < len(universe[d]) and len(seen) <= 4:
            parts.append(f"{d}={'|'.join(sorted(seen))}")
    return ", ".join(parts) or "any query"


def report(classes: Mapping[tuple[str, str, str], DiffClass], universe: Mapping[str, Counter[str]]) -> None:
    for c in sorted(classes.values(), key=lambda c: (c.special != "", c.field, -c.count, c.change)):
        print(f"[{c.count:4}] {c.field}: {c.change}")
        print(f"       shape: {shape_of(c, universe)}")
        if not c.special:
            print("       spread: " + "; ".join(f"{d}: {_top(c.dims[d], 5)}" for d in DIMS))
        for q, o, k, rest in c.examples:
            print(f"       e.g. {q.desc}  (wire {q.wire[:80].hex()}{'...' if len(q.wire) > 80 else ''})")
            print(f"            ours: {_short(o)}")
            print(f"            knot: {_short(k)}")
            if rest:
                print(f"            (also differ: {', '.join(rest)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--queries", type=int, default=1500, help="random queries (the fixed special ones come on top)")
    ap.add_argument("--timeout", type=float, default=0.5, help="seconds to wait for each response")
    ap.add_argument("--examples", type=int, default=1, help="example queries shown per class")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, zone, logs)")
    args = ap.parse_args()
    args.queries = min(max(args.queries, 1), 20_000)
    args.timeout = min(max(args.timeout, 0.05), 5.0)
    ensure_packages({"knotd": "knot"})
    sys.exit(run(args))


if __name__ == "__main__":
    main()
