"""Pre-rendering: when a table or zone arrives, render every answer the fast path may send.

A ``RenderedAnswers`` is immutable once built and swapped in whole, so a query
sees either the old answers or the new ones, never a mix. An entry is keyed
by the lower-case wire name plus the raw qtype/qclass bytes, and holds the
response *after* the question: header counts and the answer, authority and
additional sections, whose compression pointers refer to the question at
offset 12. The fast path copies the query's ID, RD/CD bits and question (so
its 0x20 case is echoed) in front, and an OPT record behind (after the
additional records, as the counts with OPT say).

Only names that exist have entries: a name synthesized from a wildcard, or
one below a delegation that the zone file does not list, finds no entry and
goes to the slow path. Referrals (at and below a delegation) are entries like
any other, with AA clear in their flags byte.

Entry layouts (tuples, because the hot path indexes them):

* variant: ``(rcode, counts, counts_with_opt, body, udp_cell, tcp_cell, flags[, signed])``;
  ``flags`` is the reply's header byte 2 before RD: QR, and AA when authoritative; ``signed``, in a
  DNSSEC-signed zone, the variant a DO=1 query gets (RRSIGs and denial proofs: ``dnssec.sign_resolution``)
* static entry: ``(None, variant)``
* steered entry: ``(seed, splits)``; ``splits[geo] = (slot_table, variants, answer_cells, fallback_cell)``,
  ``slot_table`` the split's ``steering.pick.SlotTable`` (``variants[i]`` answers for its target i),
  shared by every split with the same seed, targets and weights, and reused from the previous
  snapshot while it lives: a table whose weights for a geo did not change keeps the slots raced so far
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnsserver.answers import Catalog, Chooser, Fallback, Resolution, SteeredName, build_steering, resolve
from dnsserver.dnssec import Signing, sign_resolution
from dnsserver.geo import GeoMap
from dnsserver.metrics import Stats
from dnsserver.zones import LoadedZone
from steering.config import Config
from steering.pick import slot_table
from steering.table import RoutingTable

PRERENDER_TYPES: tuple[dns.rdatatype.RdataType, ...] = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.ANY, dns.rdatatype.MX,
    dns.rdatatype.TXT, dns.rdatatype.NS, dns.rdatatype.SOA, dns.rdatatype.SRV, dns.rdatatype.CAA,
    dns.rdatatype.HTTPS, dns.rdatatype.SVCB,
)

Variant = tuple[Any, ...]  # (rcode, counts, counts_with_opt, body, udp_cell, tcp_cell, flags[, signed])
_QR_AA = 0x84  # header byte 2: QR, AA
_QR = 0x80


class _MultiplePicks(Exception):
    pass


def message_for(qname: dns.name.Name, qtype: dns.rdatatype.RdataType, res: Resolution,
                query_id: int = 0) -> dns.message.Message:
    msg = dns.message.Message(id=query_id)
    msg.flags = dns.flags.QR | (dns.flags.AA if res.authoritative else 0)
    msg.set_rcode(res.rcode)
    msg.question = [dns.rrset.RRset(qname, dns.rdataclass.IN, qtype)]
    msg.answer = list(res.answer)
    msg.authority = list(res.authority)
    msg.additional = list(res.additional)
    return msg


def _name_wire(name: dns.name.Name) -> bytes:
    return cast(bytes, name.to_wire())  # without a file to write to, to_wire returns the bytes (never None)


def _variant(qname: dns.name.Name, qtype: dns.rdatatype.RdataType, res: Resolution, stats: Stats,
             catalog: Catalog | None = None, signing: Signing | None = None) -> Variant:
    if signing is not None and catalog is not None:
        signed = sign_resolution(signing, catalog, qname, qtype, res)
        if signed is not res:
            return (*_variant(qname, qtype, res, stats), _variant(qname, qtype, signed, stats))
    wire = message_for(qname, qtype, res).to_wire()
    qlen = len(_name_wire(qname)) + 4
    an, ns, ar = struct.unpack("!HHH", wire[6:12])
    qt = dns.rdatatype.to_text(qtype)
    rc = dns.rcode.to_text(res.rcode)
    return (res.rcode, wire[4:12], struct.pack("!HHHH", 1, an, ns, ar + 1), wire[12 + qlen:],
            stats.query_cell("udp", qt, rc), stats.query_cell("tcp", qt, rc), _QR_AA if res.authoritative else _QR)


@dataclass(frozen=True)
class RenderedAnswers:
    catalog: Catalog
    entries: dict[bytes, tuple[Any, Any]]
    table: RoutingTable | None
    fallbacks: tuple[Fallback, ...]
    signing: Signing | None = None  # the DNSSEC epoch whose signatures these answers carry (slow path too)


def _always(target: str) -> Chooser:
    return lambda s: target


def _probe(catalog: Catalog, qname: dns.name.Name, qtype: int) -> tuple[SteeredName | None, Resolution | None]:
    """Resolve once to learn whether the answer depends on a single steered pick (or none)."""
    seen: list[SteeredName] = []

    def choose(s: SteeredName) -> str:
        if seen and seen[0] is not s:
            raise _MultiplePicks
        seen.append(s)
        return s.splits[0].targets[0]

    try:
        res = resolve(catalog, qname, qtype, choose)
    except _MultiplePicks:
        return None, None
    return (seen[0] if seen else None), res


def build_snapshot(cfg: Config, zones: Sequence[LoadedZone], geomap: GeoMap, table: RoutingTable | None,
                   stats: Stats, signing: Signing | None = None) -> RenderedAnswers:
    steered, fallbacks = build_steering(cfg, table, geomap)
    catalog = Catalog(zones, steered)
    entries: dict[bytes, tuple[Any, Any]] = {}
    for qname in catalog.names():
        key_name = _name_wire(qname.canonicalize())
        for qtype in PRERENDER_TYPES:
            key = key_name + struct.pack("!HH", qtype, dns.rdataclass.IN)
            dep, res = _probe(catalog, qname, qtype)
            if res is None:
                continue  # depends on two picks (a CNAME chain across steered names): slow path
            if dep is None:
                entries[key] = (None, _variant(qname, qtype, res, stats, catalog, signing))
                continue
            by_target: dict[str, Variant] = {}
            splits = []
            for gi, split in enumerate(dep.splits):
                variants = []
                cells = []
                for target in split.targets:
                    if target not in by_target:
                        r = resolve(catalog, qname, qtype, _always(target))
                        by_target[target] = _variant(qname, qtype, r, stats, catalog, signing)
                    variants.append(by_target[target])
                    cells.append(stats.answer_cell(dep.service, geomap.ids[gi], target))
                fb = stats.fallback_cell(dep.service, geomap.ids[gi], split.fallback) if split.fallback else None
                splits.append((slot_table(split, dep.seed), tuple(variants), tuple(cells), fb))
            entries[key] = (dep.seed, tuple(splits))
    return RenderedAnswers(catalog, entries, table, tuple(fallbacks), signing)
