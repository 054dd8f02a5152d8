"""Static zone data: zone files (dnspython) or a synthesized SOA and NS per configured zone.

Pure apart from reading the zone files. ``load_zones`` raises ZoneError naming
the zone and the problem, so a bad file fails the start, not a query.

NS records at an owner below the apex are a delegation (a zone cut): the
child's servers are authoritative at and below it, so data there (glue) is
not ours to answer, only to hand out with the referral. ``LoadedZone.cuts``
holds those owners and ``cut_above`` finds the one a name falls under.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rrset
import dns.zone

from dnsserver.dnssec import KeyError_, ZoneKeys, load_zone_keys
from steering.config import Config, Zone


class ZoneError(Exception):
    pass


@dataclass(frozen=True)
class LoadedZone:
    origin: dns.name.Name
    soa: dns.rrset.RRset
    # owner name -> rdtype -> rrset; absolute, lower-case names
    nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]]
    # owners below the apex with NS records: delegations to child zones
    cuts: frozenset[dns.name.Name] = field(init=False)
    keys: ZoneKeys | None = None  # DNSSEC signing keys (docs/dnssec.md); None: unsigned

    def __post_init__(self) -> None:
        cuts = frozenset(n for n, rrs in self.nodes.items() if n != self.origin and dns.rdatatype.NS in rrs)
        object.__setattr__(self, "cuts", cuts)

    def cut_above(self, name: dns.name.Name) -> dns.name.Name | None:
        """The highest delegation at or above ``name`` (a cut below a cut is the child's business)."""
        if not self.cuts:
            return None
        found = None
        while len(name) > len(self.origin):
            if name in self.cuts:
                found = name
            name = name.parent()
        return found

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 §5: the lesser of the SOA's TTL and its MINIMUM field."""
        soa: dns.rdtypes.ANY.SOA.SOA = self.soa[0]  # dnspython's Set.__getitem__ is unannotated
        return min(self.soa.ttl, soa.minimum)

    def negative_soa(self) -> dns.rrset.RRset:
        # one object per zone (nothing mutates it): DNSSEC signs it once per epoch, found by identity
        cached: dns.rrset.RRset | None = self.__dict__.get("_negative_soa")
        if cached is None:
            cached = dns.rrset.RRset(self.origin, dns.rdataclass.IN, dns.rdatatype.SOA)
            cached.update_ttl(self.negative_ttl)
            cached.add(self.soa[0])
            object.__setattr__(self, "_negative_soa", cached)
        return cached


def _synthesized(zone: Zone) -> dict[dns.name.Name, dict[int, dns.rrset.RRset]]:
    origin = dns.name.from_text(zone.origin)
    ns = [dns.name.from_text(n, origin) for n in zone.ns] or [dns.name.from_text("ns1", origin)]
    mname = dns.name.from_text(zone.soa_mname, origin) if zone.soa_mname else ns[0]
    rname = dns.name.from_text(zone.soa_rname, origin) if zone.soa_rname else dns.name.from_text("hostmaster", origin)
    soa = dns.rrset.from_text(origin, 3600, "IN", "SOA",
                              f"{mname} {rname} 1 3600 600 604800 {zone.negative_ttl}")
    nsset = dns.rrset.from_text_list(origin, 3600, "IN", "NS", [n.to_text() for n in ns])
    return {origin: {dns.rdatatype.SOA: soa, dns.rdatatype.NS: nsset}}


def _from_file(zone: Zone, path: str) -> dict[dns.name.Name, dict[int, dns.rrset.RRset]]:
    origin = dns.name.from_text(zone.origin)
    try:
        z = dns.zone.from_file(path, origin=origin, relativize=False, check_origin=True)
    except Exception as exc:  # dnspython raises many types for a bad file
        raise ZoneError(f"zone {zone.origin}: {path}: {exc}") from None
    nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
    for name, node in z.nodes.items():
        owner = name if name.is_absolute() else name.derelativize(origin)
        owner = dns.name.from_text(owner.to_text().lower())
        for rds in node.rdatasets:
            if rds.rdclass != dns.rdataclass.IN:
                continue
            rrset = dns.rrset.RRset(owner, rds.rdclass, rds.rdtype)
            rrset.update(rds)  # type: ignore[no-untyped-call]  # dnspython's Rdataset.update has no annotations
            rrset.update_ttl(rds.ttl)
            nodes.setdefault(owner, {})[rds.rdtype] = rrset
    return nodes


def load_zones(cfg: Config) -> list[LoadedZone]:
    """Every configured zone, longest origin first (so the most specific zone wins)."""
    out: list[LoadedZone] = []
    for i, zone in enumerate(cfg.zones):
        origin = dns.name.from_text(zone.origin)
        nodes = _from_file(zone, str(cfg.resolve_path(zone.file))) if zone.file else _synthesized(zone)
        apex = nodes.get(origin, {})
        if dns.rdatatype.SOA not in apex:
            raise ZoneError(f"zone {zone.origin}: no SOA record at the apex")
        if dns.rdatatype.NS not in apex:
            raise ZoneError(f"zone {zone.origin}: no NS records at the apex")
        keys = None
        if zone.dnssec is not None and zone.dnssec.enabled:
            keys = _signed(cfg, i, origin, nodes)
        out.append(LoadedZone(origin, apex[dns.rdatatype.SOA], nodes, keys))
    out.sort(key=lambda z: -len(z.origin))
    return out


_SIGNED_TYPES = (dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3, dns.rdatatype.NSEC3PARAM,
                 dns.rdatatype.DNSKEY, dns.rdatatype.CDS, dns.rdatatype.CDNSKEY)


def _signed(cfg: Config, index: int, origin: dns.name.Name,
            nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]]) -> ZoneKeys:
    """The zone's keys (ZoneError naming the field when a key file cannot be used); the apex gets the
    DNSKEY, CDS and CDNSKEY RRsets, and DNSSEC records a zone file brings are dropped (we sign online)."""
    settings = cfg.zones[index].dnssec
    assert settings is not None
    try:
        keys = load_zone_keys(origin, settings, f"zones[{index}].dnssec", cfg.resolve_path)
    except KeyError_ as exc:
        raise ZoneError(str(exc)) from None
    for rrsets in nodes.values():
        for t in _SIGNED_TYPES:
            rrsets.pop(t, None)
    apex = nodes[origin]
    apex[dns.rdatatype.DNSKEY] = keys.dnskey_rrset()
    apex[dns.rdatatype.CDS] = keys.cds_rrset()
    apex[dns.rdatatype.CDNSKEY] = keys.cdnskey_rrset()
    return keys
