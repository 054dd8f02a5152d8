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
from collections.abc import Mapping, Sequence
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


def _resolution_key(res: Resolution) -> tuple[Any, ...]:
    """Everything ``_variant`` (and ``sign_resolution``) reads of ``res``: its RRsets by identity (the zone's
    and the steered targets' objects, alive while the memo holds ``res``), and the record types of the
    targets it picked (a signed NODATA's NSEC lists them)."""
    return (res.rcode, res.authoritative, tuple(map(id, res.answer)), tuple(map(id, res.authority)),
            tuple(map(id, res.additional)), tuple((id(s), frozenset(s.records[t])) for s, t in res.picks))


def _records_key(records: Mapping[int, dns.rrset.RRset], qtype: int) -> tuple[Any, ...]:
    """What ``resolve`` reads of a picked target's records for ``qtype``: the RRset of that type (for ANY, of
    the first type) and the CNAME, by identity, and which types there are (a signed NODATA lists them).
    Targets alike here resolve alike: every target without the type (nor a CNAME) gets the same NODATA."""
    first = records[min(records)] if qtype == dns.rdatatype.ANY and records else None
    return (id(records.get(qtype)), id(records.get(dns.rdatatype.CNAME)), id(first), frozenset(records))


def build_snapshot(cfg: Config, zones: Sequence[LoadedZone], geomap: GeoMap, table: RoutingTable | None,
                   stats: Stats, signing: Signing | None = None) -> RenderedAnswers:
    """Render every entry. Each (name, type, resolution) is rendered once: targets whose records resolve
    alike (a NODATA for every target without the type) are resolved once, targets whose resolutions are
    alike share one variant, and a steered name's slot tables and counters are looked up once for all its
    types (the bytes are those of rendering every target apart: tests/test_render_memo.py)."""
    steered, fallbacks = build_steering(cfg, table, geomap)
    catalog = Catalog(zones, steered)
    entries: dict[bytes, tuple[Any, Any]] = {}
    # per steered name, per geo: (slot table, answer cells, fallback cell), the same for every qtype
    split_parts: dict[int, list[tuple[Any, tuple[list[int], ...], list[int] | None]]] = {}
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
            parts = split_parts.get(id(dep))
            if parts is None:
                parts = split_parts[id(dep)] = [
                    (slot_table(split, dep.seed),
                     tuple(stats.answer_cell(dep.service, geomap.ids[gi], t) for t in split.targets),
                     stats.fallback_cell(dep.service, geomap.ids[gi], split.fallback) if split.fallback else None)
                    for gi, split in enumerate(dep.splits)]
            by_target: dict[str, Variant] = {}
            by_records: dict[tuple[Any, ...], Variant] = {}  # ids of dep.records' RRsets: alive all along
            by_resolution: dict[tuple[Any, ...], tuple[Resolution, Variant]] = {}  # holds res: its ids stay its own
            by_targets: dict[tuple[str, ...], tuple[Variant, ...]] = {}
            splits = []
            for split, (slots, cells, fb) in zip(dep.splits, parts, strict=True):
                variants = by_targets.get(split.targets)
                if variants is None:
                    for target in split.targets:
                        if target in by_target:
                            continue
                        recs_key = _records_key(dep.records[target], qtype)
                        variant = by_records.get(recs_key)
                        if variant is None:
                            r = resolve(catalog, qname, qtype, _always(target))
                            rkey = _resolution_key(r)
                            hit = by_resolution.get(rkey)
                            if hit is None:
                                hit = by_resolution[rkey] = (r, _variant(qname, qtype, r, stats, catalog, signing))
                            variant = by_records[recs_key] = hit[1]
                        by_target[target] = variant
                    variants = by_targets[split.targets] = tuple(by_target[t] for t in split.targets)
                splits.append((slots, variants, cells, fb))
            entries[key] = (dep.seed, tuple(splits))
    return RenderedAnswers(catalog, entries, table, tuple(fallbacks), signing)
