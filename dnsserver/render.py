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

from dnsserver.answers import (
    _TARGET_TYPES,
    Catalog,
    Chooser,
    Fallback,
    Resolution,
    SteeredName,
    build_steering,
    resolve,
)
from dnsserver.answerwire import answer_body
from dnsserver.dnssec import Signer, Signing, sign_resolution
from dnsserver.geo import GeoMap
from dnsserver.metrics import Stats
from dnsserver.zones import LoadedZone
from steering.config import Config
from steering.pick import SlotTable, Split, slot_table
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


_CELL_LABELS: dict[tuple[int, int], tuple[str, str]] = {}  # (qtype, rcode) -> their texts (the counters' labels)


def _labels(qtype: dns.rdatatype.RdataType, rcode: dns.rcode.Rcode) -> tuple[str, str]:
    labels = _CELL_LABELS.get((qtype, rcode))
    if labels is None:
        labels = _CELL_LABELS[(qtype, rcode)] = (dns.rdatatype.to_text(qtype), dns.rcode.to_text(rcode))
    return labels


def _variant(qname: dns.name.Name, qtype: dns.rdatatype.RdataType, res: Resolution, stats: Stats,
             catalog: Catalog | None = None, signing: Signing | None = None) -> Variant:
    if signing is not None and catalog is not None:
        return _pair(qname, qtype, res, sign_resolution(signing, catalog, qname, qtype, res), stats)
    direct = answer_body(qname, res)
    if direct is not None:
        an, body = direct
        counts, counts_opt = struct.pack("!HHHH", 1, an, 0, 0), struct.pack("!HHHH", 1, an, 0, 1)
    else:
        wire = message_for(qname, qtype, res).to_wire()
        qlen = len(_name_wire(qname)) + 4
        an, ns, ar = struct.unpack("!HHH", wire[6:12])
        counts, counts_opt, body = wire[4:12], struct.pack("!HHHH", 1, an, ns, ar + 1), wire[12 + qlen:]
    qt, rc = _labels(qtype, res.rcode)
    return (res.rcode, counts, counts_opt, body, stats.query_cell("udp", qt, rc), stats.query_cell("tcp", qt, rc),
            _QR_AA if res.authoritative else _QR)


Parts = tuple[SlotTable, tuple[list[int], ...], list[int] | None]  # a split's slot table, answer and fallback cells


def _pair(qname: dns.name.Name, qtype: dns.rdatatype.RdataType, res: Resolution, signed: Resolution,
          stats: Stats) -> Variant:
    """The variant of ``res`` with its signed twin (``signed``: ``res`` itself outside signed zones)."""
    if signed is res:
        return _variant(qname, qtype, res, stats)
    return (*_variant(qname, qtype, res, stats), _variant(qname, qtype, signed, stats))


@dataclass(frozen=True)
class Reuse:
    """What the next table's render may take from this one (``build_snapshot``'s ``previous``).

    A variant depends on the (name, type), the picked target's records, the zones and the other steered
    names (existence, denial, CNAME targets), the signing epoch and the counters it points at; never on the
    table. So while ``inputs`` (config, zones, signing epoch and Stats by identity, the geo ids by value)
    and every steered name's ``records`` object are the ones of the next render, that render takes each
    (entry, target)'s variant from ``by_target``, and renders (and signs) only targets it has not seen;
    and each entry's row of a geo whose split did not change (``rows``: a one-site change touches a few
    geos). A new config, zone set, key set or epoch (re-signing before expiry), or another Stats, starts
    empty (tests/test_render_reuse.py: a reused render equals a render from nothing)."""

    inputs: tuple[Any, ...]
    records: dict[dns.name.Name, Mapping[str, Mapping[int, dns.rrset.RRset]]]  # held: keeps their ids unique
    # entry key -> target -> variant: shared by the renders of one ``inputs`` and only ever added to, so it is
    # bounded by the config's (name, type, target)s, not by the number of tables
    by_target: dict[bytes, dict[str, Variant]]
    statics: dict[bytes, Variant]
    # each steered name's splits, and each steered entry's rows (one per geo): a geo whose split is equal
    # in the next table (targets, weights, fallback) keeps its row, which those determine
    splits: dict[dns.name.Name, tuple[Split, ...]]
    rows: dict[bytes, tuple[Any, ...]]

    def fits(self, inputs: tuple[Any, ...], steered: Mapping[dns.name.Name, SteeredName]) -> bool:
        return (len(inputs) == len(self.inputs) and all(a is b for a, b in zip(inputs[1:], self.inputs[1:], strict=True))
                and inputs[0] == self.inputs[0] and len(steered) == len(self.records)
                and all(self.records.get(name) is s.records for name, s in steered.items()))


@dataclass(frozen=True)
class RenderedAnswers:
    catalog: Catalog
    entries: dict[bytes, tuple[Any, Any]]
    table: RoutingTable | None
    fallbacks: tuple[Fallback, ...]
    signing: Signing | None = None  # the DNSSEC epoch whose signatures these answers carry (slow path too)
    reuse: Reuse | None = None


def _always(target: str) -> Chooser:
    return lambda s: target


def _probe(catalog: Catalog, qname: dns.name.Name, qtype: int) -> tuple[SteeredName | None, Resolution | None]:
    """Resolve to learn whether the answer depends on a single steered pick (or none): once, then once per
    CNAME among the picked name's targets (``cname_targets``: a mix of addresses and CNAMEs to another
    steered name must not be judged by its first target alone)."""
    seen: list[SteeredName] = []
    chosen: list[str] = []  # the target the resolution takes for seen[0]; its first split's first until set

    def choose(s: SteeredName) -> str:
        if seen and seen[0] is not s:
            raise _MultiplePicks
        seen.append(s)
        return chosen[0] if chosen else s.splits[0].targets[0]

    try:
        res = resolve(catalog, qname, qtype, choose)
        for target in seen[0].cname_targets if seen else ():
            chosen[:] = [target]
            resolve(catalog, qname, qtype, choose)
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


def _own_rrset(records: Mapping[int, dns.rrset.RRset], qtype: int) -> dns.rrset.RRset | None:
    """The RRset that answers ``qtype`` at a steered name itself with these records, if one does."""
    if qtype == dns.rdatatype.ANY:
        return records[min(records)] if records else None  # RFC 8482: one RRset (resolve's choice)
    return None if qtype in _TARGET_TYPES else records.get(qtype)


def _answers_with_own(res: Resolution, dep: SteeredName, target: str, own: dns.rrset.RRset | None) -> bool:
    """``res`` (resolved for ``target``) is ``own`` alone, picked at the question's name. ``resolve`` takes the
    same steps for every target up to the pick (zone, cut, existence: the name's, not the target's), and
    after it answers with the target's RRset of the type and stops (``_own_rrset``'s types): so once one
    target's resolution is this, every target with its own RRset resolves to that RRset alone."""
    return (own is not None and res.rcode == dns.rcode.NOERROR and res.authoritative and len(res.answer) == 1
            and res.answer[0] is own and not res.authority and not res.additional
            and len(res.picks) == 1 and res.picks[0][0] is dep and res.picks[0][1] == target)


def _signed_shape(signing: Signing | None, catalog: Catalog, qname: dns.name.Name, res: Resolution,
                  signed: Resolution) -> tuple[Signer | None] | None:
    """Given ``res``, a steered name's own RRset alone (``_answers_with_own``), and ``signed``, what
    ``sign_resolution`` made of it: ``(signer,)`` when that is the RRset and its RRSIGs alone, so every other
    target's own RRset is signed alike by ``signer``; ``(None,)`` when nothing signs it; None otherwise (each
    target then goes through ``resolve`` and ``sign_resolution``)."""
    if signed is res:
        return (None,)
    zone = catalog.zone_for(qname.canonicalize())
    signer = signing.signer_for(zone.origin) if signing is not None and zone is not None else None
    own = res.answer[0]
    if (signer is None or signed.rcode != res.rcode or signed.authoritative != res.authoritative
            or signed.authority or signed.additional or len(signed.answer) != 2 or signed.answer[0] is not own
            or signed.answer[1] is not signer.rrsigs(own)):
        return None
    return (signer,)


def build_snapshot(cfg: Config, zones: Sequence[LoadedZone], geomap: GeoMap, table: RoutingTable | None,
                   stats: Stats, signing: Signing | None = None,
                   previous: RenderedAnswers | None = None) -> RenderedAnswers:
    """Render every entry. Each (name, type, resolution) is rendered once: targets whose records resolve
    alike (a NODATA for every target without the type) are resolved once, targets whose resolutions are
    alike share one variant, and a steered name's slot tables and counters are looked up once for all its
    types (the bytes are those of rendering every target apart: tests/test_render_memo.py).

    ``previous``: the render this one follows (the table served until now). What did not change since is
    taken from it (``Reuse``): a table that moves a few sites renders and signs only those sites' answers."""
    steered, fallbacks = build_steering(cfg, table, geomap)
    catalog = Catalog(zones, steered)
    inputs = (tuple(geomap.ids), cfg, signing, stats, *zones)
    old = previous.reuse if previous is not None else None
    if old is not None and not old.fits(inputs, steered):
        old = None
    reuse = Reuse(inputs, {name: s.records for name, s in steered.items()},
                  old.by_target if old is not None else {}, {}, {}, {})
    old_statics = old.statics if old is not None else {}
    by_target_all = reuse.by_target
    entries: dict[bytes, tuple[Any, Any]] = {}
    # per steered name: the geos whose split changed since the previous render (None: every geo), and
    # per geo (slot table, answer cells, fallback cell), the same for every qtype
    changed: dict[int, list[int] | None] = {}
    parts_by_dep: dict[int, dict[int, Parts]] = {}
    for qname in catalog.names():
        key_name = _name_wire(qname.canonicalize())
        for qtype in PRERENDER_TYPES:
            key = key_name + struct.pack("!HH", qtype, dns.rdataclass.IN)
            dep, res = _probe(catalog, qname, qtype)
            if res is None:
                continue  # depends on two picks (a CNAME chain across steered names): slow path
            if dep is None:
                static = old_statics.get(key)
                if static is None:
                    static = _variant(qname, qtype, res, stats, catalog, signing)
                entries[key] = (None, reuse.statics.setdefault(key, static))
                continue
            if id(dep) not in changed:
                changed[id(dep)] = _changed_geos(old.splits.get(dep.name) if old is not None else None, dep.splits)
                reuse.splits[dep.name] = dep.splits
                parts_by_dep[id(dep)] = {}
            moved = changed[id(dep)]
            old_rows = old.rows.get(key) if old is not None else None
            if old_rows is not None and moved is not None and not moved:
                reuse.rows[key] = old_rows  # no geo of this name changed: the very rows of the previous render
                entries[key] = (dep.seed, old_rows)
                continue
            parts = parts_by_dep[id(dep)]
            # the steered name's own RRset answers for every target that has one, once one target's did
            own_shape = catalog.steered.get(qname) is dep and qtype not in _TARGET_TYPES
            shape: tuple[Signer | None] | None = None  # set once one target answered with its own RRset
            by_records: dict[tuple[Any, ...], Variant] = {}  # ids of dep.records' RRsets: alive all along
            by_resolution: dict[tuple[Any, ...], tuple[Resolution, Variant]] = {}  # holds res: its ids stay its own
            by_targets: dict[tuple[str, ...], tuple[Variant, ...]] = {}
            known = by_target_all.setdefault(key, {})
            rows = list(old_rows) if old_rows is not None else [None] * len(dep.splits)
            for gi in (range(len(dep.splits)) if old_rows is None or moved is None else moved):
                split = dep.splits[gi]
                part = parts.get(gi)
                if part is None:
                    part = parts[gi] = _parts(dep, gi, split, geomap, stats)
                variants = by_targets.get(split.targets)
                if variants is None:
                    picked = []
                    for target in split.targets:
                        variant = known.get(target)
                        if variant is None:
                            records = dep.records[target]
                            recs_key = _records_key(records, qtype)
                            variant = by_records.get(recs_key)
                            if variant is None:
                                own = _own_rrset(records, qtype) if own_shape else None
                                if shape is not None and own is not None:
                                    r = Resolution(dns.rcode.NOERROR, [own], picks=[(dep, target)])
                                    signed = r if shape[0] is None else Resolution(
                                        dns.rcode.NOERROR, [own, shape[0].rrsigs(own)], picks=[(dep, target)])
                                    variant = _pair(qname, qtype, r, signed, stats)
                                else:
                                    r = resolve(catalog, qname, qtype, _always(target))
                                    rkey = _resolution_key(r)
                                    hit = by_resolution.get(rkey)
                                    if hit is None:
                                        signed = r if signing is None else sign_resolution(signing, catalog, qname,
                                                                                           qtype, r)
                                        hit = by_resolution[rkey] = (r, _pair(qname, qtype, r, signed, stats))
                                        if shape is None and own_shape and _answers_with_own(r, dep, target, own):
                                            shape = _signed_shape(signing, catalog, qname, r, signed)
                                    variant = hit[1]
                                by_records[recs_key] = variant
                            known[target] = variant
                        picked.append(variant)
                    variants = by_targets[split.targets] = tuple(picked)
                rows[gi] = (part[0], variants, part[1], part[2])
            entries[key] = (dep.seed, reuse.rows.setdefault(key, tuple(rows)))
    return RenderedAnswers(catalog, entries, table, tuple(fallbacks), signing, reuse)


def _parts(dep: SteeredName, gi: int, split: Split, geomap: GeoMap, stats: Stats) -> Parts:
    geo = geomap.ids[gi]
    return (slot_table(split, dep.seed), tuple(stats.answer_cell(dep.service, geo, t) for t in split.targets),
            stats.fallback_cell(dep.service, geo, split.fallback) if split.fallback else None)


def _changed_geos(old: tuple[Split, ...] | None, new: tuple[Split, ...]) -> list[int] | None:
    """The geo indexes whose split differs (None: no previous splits to compare with)."""
    if old is None or len(old) != len(new):
        return None
    return [gi for gi, (a, b) in enumerate(zip(old, new, strict=True)) if a is not b and a != b]
