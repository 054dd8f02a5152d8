"""Answer selection: which records answer (name, type) for a client. Pure; no sockets, no clock.

Two halves:

* ``build_steering`` turns the config and a routing table into, per steered
  name, one weighted ``Split`` per geo. Whenever the table cannot give a
  usable split (no table, service or geo missing, only targets without
  answers), the split fails open to every configured target of the geo with
  equal weight, and the reason is reported so the caller logs and counts it.
* ``resolve`` answers a question the way an authoritative server must
  (REFUSED outside our zones, NXDOMAIN/NODATA with the SOA, CNAME chasing
  inside our zones, a minimal ANY, wildcards per RFC 4592, referrals at
  delegations with their glue, additional addresses for NS/MX/SRV targets)
  with a ``choose`` callback for the weighted pick, so the fast path's
  pre-rendering and the slow path share it.

A client's pick is ``pick(split, subnet, seed)``: ``steering.pick``, the one
pick that ``RoutingService.Resolve`` and ``steering.client`` make too (the
client subnet's slot, then a weighted rendezvous of the targets' names over
it: minimal movement when weights change, table version left out on
purpose). Splits come from ``steering.pick.table_split`` and, failing open,
``steering.topology.fail_open_targets``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

from dnsserver.geo import GeoMap
from dnsserver.zones import LoadedZone
from steering import pick as shared
from steering.config import Config, Service
from steering.pick import Split, name_seed
from steering.table import RoutingTable
from steering.topology import fail_open_targets

MAX_CNAME_CHAIN = 8


def pick(split: Split, subnet: bytes, seed: int) -> int:
    """Index into ``split.targets`` for a client subnet: ``steering.pick.pick`` over the split."""
    return shared.pick(split, subnet, seed)


@dataclass(frozen=True)
class SteeredName:
    service: str
    name: dns.name.Name
    ttl: int
    seed: int
    records: Mapping[str, Mapping[int, dns.rrset.RRset]]  # target -> rdtype -> rrset
    splits: tuple[Split, ...]  # by geo index

    @functools.cached_property
    def cname_targets(self) -> tuple[str, ...]:
        """One target per distinct CNAME among those the splits race: the only answers that go on to another
        name, which may be another steered name (a second pick); targets with one CNAME lead to the same names."""
        by_cname: dict[dns.name.Name, str] = {}
        for split in self.splits:
            for target in split.targets:
                cname = self.records[target].get(dns.rdatatype.CNAME)
                if cname is not None:
                    by_cname.setdefault(cname[0].target, target)
        return tuple(by_cname.values())


@dataclass(frozen=True)
class Fallback:
    service: str
    geo: str
    reason: str


# The last config's records per service, reused by the next table's render: they do not depend on the table,
# and with 10,000 answers building them was half of a render. One config only (the one served: a reload
# replaces it), so an old config's records go with it. Never mutated once built (the pre-rendered bytes and
# DNSSEC's by-identity signature memo rely on that).
_last_records: tuple[Config, dict[str, dict[str, dict[int, dns.rrset.RRset]]]] | None = None


def _target_records(name: dns.name.Name, svc: Service) -> dict[str, dict[int, dns.rrset.RRset]]:
    out: dict[str, dict[int, dns.rrset.RRset]] = {}
    for target, ans in svc.answers.items():
        recs: dict[int, dns.rrset.RRset] = {}
        # addresses straight into their rdata classes: what from_text_list makes of them, without its tokenizer
        # (10,000 site answers per service took seconds through it)
        if ans.A:
            recs[dns.rdatatype.A] = dns.rrset.from_rdata_list(name, svc.ttl, [
                dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, a)  # type: ignore[no-untyped-call]
                for a in ans.A])
        if ans.AAAA:
            recs[dns.rdatatype.AAAA] = dns.rrset.from_rdata_list(name, svc.ttl, [
                dns.rdtypes.IN.AAAA.AAAA(dns.rdataclass.IN, dns.rdatatype.AAAA, a)  # type: ignore[no-untyped-call]
                for a in ans.AAAA])
        if ans.CNAME:
            recs[dns.rdatatype.CNAME] = dns.rrset.from_text(name, svc.ttl, "IN", "CNAME", ans.CNAME)
        out[target] = recs
    return out


def build_steering(cfg: Config, table: RoutingTable | None,
                   geomap: GeoMap) -> tuple[dict[dns.name.Name, SteeredName], list[Fallback]]:
    global _last_records
    steered: dict[dns.name.Name, SteeredName] = {}
    fallbacks: list[Fallback] = []
    last = _last_records
    records = last[1] if last is not None and last[0] is cfg else {}
    for svc in cfg.services:
        name = dns.name.from_text(svc.name)
        if svc.name not in records:
            records[svc.name] = _target_records(name, svc)
        splits: list[Split] = []
        for geo_id in geomap.ids:
            split, reason = shared.table_split(table, svc.name, geo_id, svc.answers)
            if split is None:
                fallbacks.append(Fallback(svc.name, geo_id, reason))
                split = shared.spread(fail_open_targets(cfg, svc, geo_id), reason)
            splits.append(split)
        steered[name] = SteeredName(svc.name, name, svc.ttl, name_seed(name), records[svc.name],
                                    tuple(splits))
    _last_records = (cfg, records)
    return steered, fallbacks


@dataclass
class Resolution:
    rcode: dns.rcode.Rcode
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    # a referral's glue (required: ``required_glue``), or the addresses of NS/MX/SRV targets (optional)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    authoritative: bool = True
    picks: list[tuple[SteeredName, str]] = field(default_factory=list)  # steered choices it took


class Catalog:
    """Everything answerable: the zones and the steered names, with every existing owner name.

    A name exists when it owns records, or has a descendant that does (an empty non-terminal); names
    below a delegation exist too (glue), though only referrals are given for them. Existence is what
    the wildcard rules turn on: a wildcard covers only names whose closest existing ancestor is its
    parent.
    """

    def __init__(self, zones: Sequence[LoadedZone], steered: Mapping[dns.name.Name, SteeredName]) -> None:
        self.zones = list(zones)
        self.steered = dict(steered)
        self.existing: set[dns.name.Name] = set()
        self._sorted: list[dns.name.Name] | None = None
        owners = [(z, n) for z in self.zones for n in z.nodes] + [(None, n) for n in self.steered]
        for home, owner in owners:
            zone = self.zone_for(owner)
            if zone is None or (home is not None and home is not zone):
                continue  # the parent's copy of a zone we also serve (its glue) is not the child's data
            name = owner
            # ancestors up to the apex exist too (empty non-terminals answer NODATA, not NXDOMAIN)
            while name not in self.existing and len(name) >= len(zone.origin):
                self.existing.add(name)
                if name == zone.origin:
                    break
                name = name.parent()

    def zone_for(self, name: dns.name.Name) -> LoadedZone | None:
        for zone in self.zones:  # longest origin first
            if name.is_subdomain(zone.origin):
                return zone
        return None

    def names(self) -> list[dns.name.Name]:
        return sorted(self.existing)

    def sorted_names(self) -> list[dns.name.Name]:
        """``names()``, sorted once (canonical order: DNSSEC's denial looks up a name's predecessor)."""
        if self._sorted is None:
            self._sorted = sorted(self.existing)
        return self._sorted


Chooser = Callable[[SteeredName], str]

_REFUSED_TYPES = {dns.rdatatype.AXFR, dns.rdatatype.IXFR}
_NOTIMP_TYPES = {dns.rdatatype.MAILA, dns.rdatatype.MAILB}
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
_TARGET_TYPES = {dns.rdatatype.NS, dns.rdatatype.MX, dns.rdatatype.SRV}
# DNSSEC types that stand beside a CNAME at its owner (RFC 4035 §2.5): asked for there, never followed
_OWNER_TYPES = {dns.rdatatype.RRSIG, dns.rdatatype.NSEC}
_ASTERISK = b"*"


def resolve(catalog: Catalog, qname: dns.name.Name, qtype: int, choose: Chooser) -> Resolution:
    asked = qname
    qname = qname.canonicalize()
    zone = catalog.zone_for(qname)
    if zone is None:
        return Resolution(dns.rcode.REFUSED, authoritative=False)
    if qtype in _REFUSED_TYPES:
        return Resolution(dns.rcode.REFUSED)
    if qtype in _NOTIMP_TYPES:
        return Resolution(dns.rcode.NOTIMP)
    if qtype == dns.rdatatype.DS and qname == zone.origin and qname != dns.name.root:
        # DS belongs to the parent side of a cut: answer it from the parent zone when we serve that too
        zone = catalog.zone_for(qname.parent()) or zone
    res = Resolution(dns.rcode.NOERROR)
    name = qname
    owner = asked  # the name as written (0x20 case), for records synthesized from a wildcard
    seen = {qname}  # a CNAME loop ends where it comes back, each CNAME once (as BIND and knot answer it)
    for _ in range(MAX_CNAME_CHAIN + 1):
        cut = zone.cut_above(name)
        if cut is not None and not (name == cut and qtype == dns.rdatatype.DS):
            _refer(zone, cut, res)
            # AA speaks for the first owner in the answer: after a CNAME of ours it stays set
            res.authoritative = bool(res.answer)
            return res
        source = name if name in catalog.existing else _source_of_synthesis(catalog, zone, name)
        if source is None:
            res.rcode = dns.rcode.NXDOMAIN  # RFC 6604: the rcode speaks for the chain's last name
            res.authority.append(zone.negative_soa())
            return res
        synthesized = source != name
        steered = catalog.steered.get(source)  # a steered wildcard picks per query, with its own seed
        if steered is not None:
            target = choose(steered)
            res.picks.append((steered, target))
            rrsets: Mapping[int, dns.rrset.RRset] = steered.records[target]
        else:
            rrsets = zone.nodes.get(source, {})  # an empty non-terminal wildcard: NODATA (RFC 4592)
        if qtype == dns.rdatatype.ANY:
            # RFC 8482: one RRset is a complete answer to ANY
            if rrsets:
                first = min(rrsets)
                res.answer.append(_owned_by(rrsets[first], owner) if synthesized else rrsets[first])
            else:
                res.authority.append(zone.negative_soa())
            return res
        if qtype in rrsets:
            rrset = rrsets[qtype]
            res.answer.append(_owned_by(rrset, owner) if synthesized else rrset)
            if qtype in _TARGET_TYPES:
                res.additional.extend(_target_addresses(catalog, rrset))
            return res
        cname = rrsets.get(dns.rdatatype.CNAME)
        if cname is None or qtype in _OWNER_TYPES:
            res.authority.append(zone.negative_soa())  # NODATA
            return res
        res.answer.append(_owned_by(cname, owner) if synthesized else cname)
        owner = cname[0].target
        name = owner.canonicalize()
        if name in seen:
            return res  # a loop: the resolver sees it in the CNAMEs given
        seen.add(name)
        next_zone = catalog.zone_for(name)
        if next_zone is None:
            return res  # the resolver follows it elsewhere
        zone = next_zone
    return res


def _source_of_synthesis(catalog: Catalog, zone: LoadedZone, name: dns.name.Name) -> dns.name.Name | None:
    """RFC 4592 §3.3.1: ``*.<closest encloser>`` when it exists, for a name that does not.

    The closest encloser is the longest existing ancestor; empty non-terminals exist, so a wildcard
    does not reach below them. Never at or below a cut: the caller refers those before asking.
    """
    encloser = name.parent()
    while encloser not in catalog.existing and len(encloser) > len(zone.origin):
        encloser = encloser.parent()
    wild = dns.name.Name((_ASTERISK, *encloser.labels))
    return wild if wild in catalog.existing else None


def _owned_by(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    """A wildcard's RRset under the name that was asked for."""
    return dns.rrset.from_rdata_list(owner, rrset.ttl, list(rrset))


def _refer(zone: LoadedZone, cut: dns.name.Name, res: Resolution) -> None:
    """A referral to the child at ``cut``: its NS set, and the glue only we can give (RFC 9471)."""
    ns = zone.nodes[cut][dns.rdatatype.NS]
    res.authority.append(ns)
    for rd in ns:
        if rd.target.is_subdomain(cut):  # in-bailiwick: the resolver cannot look these up elsewhere
            node = zone.nodes.get(rd.target.canonicalize(), {})
            res.additional.extend(node[t] for t in _ADDRESS_TYPES if t in node)


def _target_addresses(catalog: Catalog, rrset: dns.rrset.RRset) -> list[dns.rrset.RRset]:
    """A/AAAA of an NS, MX or SRV RRset's targets from our static data (RFC 1034 §4.3.2 step 6; RFC 2782).

    Not steered names (their address depends on a pick the target's own query makes) nor names at or
    below a cut (the child's data); nothing synthesized from wildcards."""
    out: list[dns.rrset.RRset] = []
    seen: set[dns.name.Name] = set()
    for rd in rrset:
        target = (rd.exchange if rrset.rdtype == dns.rdatatype.MX else rd.target).canonicalize()
        if target in seen or target in catalog.steered:
            continue
        seen.add(target)
        zone = catalog.zone_for(target)
        if zone is None or zone.cut_above(target) is not None:
            continue
        node = zone.nodes.get(target, {})
        out.extend(node[t] for t in _ADDRESS_TYPES if t in node)
    return out


def required_glue(authority: Sequence[dns.rrset.RRset],
                  additional: Sequence[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
    """The additional RRsets a reply may not drop: the addresses of a referral's in-bailiwick name
    servers (RFC 9471). A reply that cannot carry them is truncated; anything else is dropped first."""
    targets = {rd.target for ns in authority if ns.rdtype == dns.rdatatype.NS
               for rd in ns if rd.target.is_subdomain(ns.name)}
    return [rrset for rrset in additional if rrset.name in targets]
