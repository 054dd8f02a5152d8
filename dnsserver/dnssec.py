"""DNSSEC: zone keys from their files, and the signatures and denial records an answer carries.

Online signing that fits pre-rendering: ``sign_resolution`` turns a ``Resolution``
(what ``answers.resolve`` found) into the one a DO=1 query gets, adding
RRSIGs after each RRset and the proof a negative answer or a referral needs.
Render calls it for every pre-rendered (name, type, target) answer, so the hot
path copies signed bytes; the slow path calls it for the rest (names that do
not exist, wildcard expansions, types not pre-rendered).

Signatures are deterministic (RFC 6979 ECDSA, Ed25519) over a window fixed per
``Signing`` (one signing epoch), so the fast and the slow path give the same
bytes for the same answer, and each RRset is signed once per epoch and cached
(bounded: the slow path signs names clients make up). The server starts a new
epoch (``Signing.due``) well before the signatures expire and re-renders.

Denial of existence is compact (RFC 9824), made online: a name that does not
exist is answered NOERROR with an NSEC at the name itself, its next name
``\\000.<name>`` and a bitmap of RRSIG, NSEC and NXNAME; NODATA gets an NSEC at
the name with the name's types. A wildcard expansion carries the NSEC of the
real name before the query name (its true types), with the next name
``<first label>\\000.<parent>``: it covers only the query name (and names below it, none of which
exist), and says nothing that would make the query name exist. A referral carries the
DS RRset, or an NSEC at the cut whose bitmap has NS and no DS.
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.RRSIG
import dns.rdtypes.util
import dns.rrset
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ALGORITHMS: dict[str, int] = {"ECDSAP256SHA256": 13, "ED25519": 15}
SEP = 257  # DNSKEY flags: zone key + secure entry point (KSK, or a combined key)
ZONE = 256  # DNSKEY flags: zone key (ZSK)
NXNAME = 128  # RFC 9824's pseudo-type in a compact denial's bitmap
_CACHE_MAX = 200_000  # signatures kept per epoch (the slow path's made-up names included)
_SKEW = 3600  # inception this far in the past: validators with a clock behind still accept
_DAY = 86400
# a clock before this cannot be right (signatures would start in the past of every validator's): refuse
EARLIEST_SANE_TIME = 1_767_225_600  # 2026-01-01

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class KeyError_(Exception):
    """A key file that cannot be used: the message names the config field (``field_name``) and the file
    (``path``: empty when the problem is the set of keys, not one file)."""

    def __init__(self, message: str, field_name: str = "", path: str = "") -> None:
        super().__init__(message)
        self.field_name = field_name
        self.path = path


@dataclass(frozen=True)
class SigningKey:
    role: str  # csk, ksk or zsk
    private: PrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY
    path: str
    active: bool = True  # False: published in the DNSKEY RRset, not signing yet (a ZSK pre-published)
    # the key's timeline (POSIX seconds; None: always): in the DNSKEY RRset from publish until delete,
    # signing from activate until inactive. A ZSK roll on a schedule is two keys with these set.
    publish: float | None = None
    activate: float | None = None
    inactive: float | None = None
    delete: float | None = None

    @functools.cached_property
    def tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)

    @property
    def signs_keys(self) -> bool:
        return self.role in ("csk", "ksk")

    @property
    def signs_zone(self) -> bool:
        return self.role in ("csk", "zsk") and self.active

    def published(self, now: float | None) -> bool:
        return now is None or ((self.publish is None or self.publish <= now)
                               and (self.delete is None or now < self.delete))

    def signing(self, now: float | None) -> bool:
        """Signs the zone's RRsets at ``now`` (None: ignoring the timeline)."""
        return self.signs_zone and self.published(now) and (now is None or (
            (self.activate is None or self.activate <= now) and (self.inactive is None or now < self.inactive)))

    def events(self) -> list[float]:
        return [t for t in (self.publish, self.activate, self.inactive, self.delete) if t is not None]


@dataclass(frozen=True)
class ZoneKeys:
    origin: dns.name.Name
    algorithm: int
    keys: tuple[SigningKey, ...]
    dnskey_ttl: int = 3600
    validity_days: int = 14

    def dnskey_rrset(self, now: float | None = None) -> dns.rrset.RRset:
        """The keys published at ``now`` (None: every key)."""
        return dns.rrset.from_rdata_list(self.origin, self.dnskey_ttl,
                                         [k.dnskey for k in self.keys if k.published(now)])

    def sep_keys(self, now: float | None = None) -> list[SigningKey]:
        return [k for k in self.keys if k.signs_keys and k.published(now)]

    def ds(self, digest: str = "SHA256") -> list[dns.rdata.Rdata]:
        return [dns.dnssec.make_ds(self.origin, k.dnskey, digest) for k in self.sep_keys()]

    def cds_rrset(self, now: float | None = None) -> dns.rrset.RRset:
        rds = [dns.dnssec.make_cds(self.origin, k.dnskey, "SHA256") for k in self.sep_keys(now)]
        return dns.rrset.from_rdata_list(self.origin, self.dnskey_ttl, rds)

    def cdnskey_rrset(self, now: float | None = None) -> dns.rrset.RRset:
        rds = [dns.dnssec.make_cdnskey(k.private.public_key(), self.algorithm, flags=SEP)
               for k in self.sep_keys(now)]
        return dns.rrset.from_rdata_list(self.origin, self.dnskey_ttl, rds)

    def apex_rrsets(self, now: float | None = None) -> dict[int, dns.rrset.RRset]:
        """DNSKEY, CDS and CDNSKEY as published at ``now``."""
        return {dns.rdatatype.DNSKEY: self.dnskey_rrset(now), dns.rdatatype.CDS: self.cds_rrset(now),
                dns.rdatatype.CDNSKEY: self.cdnskey_rrset(now)}


def algorithm_number(name: str) -> int:
    return ALGORITHMS[name.upper()]


def generate(algorithm: str) -> PrivateKey:
    if algorithm_number(algorithm) == 15:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_dnskey(key: PrivateKey, algorithm: int, role: str) -> dns.rdtypes.ANY.DNSKEY.DNSKEY:
    return dns.dnssec.make_dnskey(key.public_key(), algorithm, flags=ZONE if role == "zsk" else SEP)


def read_key(path: Path, field_name: str, algorithm: int, role: str) -> tuple[PrivateKey, dns.rdtypes.ANY.DNSKEY.DNSKEY]:
    """The private key in ``path`` (PKCS#8 PEM) and its DNSKEY; KeyError_ naming ``field_name`` otherwise.
    The file's contents never reach a message or a log."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{field_name}: cannot read {path}: {exc.strerror or type(exc).__name__}", field_name,
                        str(path)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyError_(f"{field_name}: {path} is not an unencrypted PKCS#8 PEM private key", field_name,
                        str(path)) from None
    want = ed25519.Ed25519PrivateKey if algorithm == 15 else ec.EllipticCurvePrivateKey
    if not isinstance(key, want) or (isinstance(key, ec.EllipticCurvePrivateKey)
                                     and not isinstance(key.curve, ec.SECP256R1)):
        name = next(n for n, v in ALGORITHMS.items() if v == algorithm)
        raise KeyError_(f"{field_name}: {path} is not a {name} key", field_name, str(path))
    return key, make_dnskey(key, algorithm, role)


def load_zone_keys(origin: dns.name.Name, settings: Any, where: str, resolve: Any) -> ZoneKeys:
    """``settings``: a zone's ``dnssec`` config section; ``where``: its field path (``zones[0].dnssec``);
    ``resolve``: the config's ``resolve_path``."""
    algorithm = algorithm_number(settings.algorithm)
    keys = []
    for i, k in enumerate(settings.keys):
        private, dnskey = read_key(resolve(k.file), f"{where}.keys[{i}].file", algorithm, k.role)
        keys.append(SigningKey(k.role, private, dnskey, k.file, k.active, *(
            None if t is None else t.timestamp() for t in (k.publish, k.activate, k.inactive, k.delete))))
    if not any(k.signs_keys for k in keys) or not any(k.signs_zone for k in keys):
        raise KeyError_(f"{where}.keys: needs an active combined (csk) key, or a ksk and an active zsk",
                        f"{where}.keys")
    return ZoneKeys(origin, algorithm, tuple(keys), settings.dnskey_ttl, settings.validity_days)


# ---- signing


@dataclass
class Signer:
    """One zone's signatures for one epoch: inception and base expiration fixed, a cache of RRSIG RRsets."""

    keys: ZoneKeys
    inception: int
    expiration: int  # the earliest any signature of this epoch expires (jitter only adds)
    jitter: int
    at: float | None = None  # the keys' timeline is read at this time (the epoch's start)
    cache: dict[tuple[Any, ...], list[dns.rdata.Rdata]] = field(default_factory=dict)
    by_id: dict[int, tuple[dns.rrset.RRset, dns.name.Name | None, dns.rrset.RRset]] = field(default_factory=dict)
    signed: list[int] = field(default_factory=lambda: [0])  # signatures made (a cell: metrics read it)

    def rrsigs(self, rrset: dns.rrset.RRset, owner: dns.name.Name | None = None) -> dns.rrset.RRset:
        """The RRSIG RRset for ``rrset``, signed as owned by ``owner`` (a wildcard) when given, and
        returned under ``rrset``'s own name."""
        # render asks for the same RRset objects (the zone's, the steered targets') many times: by identity
        # first (the entry holds the RRset, so its id stays its own), by content below
        memo = self.by_id.get(id(rrset))
        if memo is not None and memo[0] is rrset and memo[1] == owner:
            return memo[2]
        out = self._rrsigs(rrset, owner)
        if len(self.by_id) >= _CACHE_MAX:
            self.by_id.clear()
        self.by_id[id(rrset)] = (rrset, owner, out)
        return out

    def _rrsigs(self, rrset: dns.rrset.RRset, owner: dns.name.Name | None) -> dns.rrset.RRset:
        signed_as = (owner or rrset.name).canonicalize()
        rdatas = sorted(rd.to_digestable(self.keys.origin) for rd in rrset)
        key = (signed_as, rrset.rdtype, rrset.ttl, tuple(rdatas))
        sigs = self.cache.get(key)
        if sigs is None:
            sigs = self._sign(signed_as, rrset, rdatas, zlib.crc32(b"".join(rdatas)))
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[key] = sigs
        return dns.rrset.from_rdata_list(rrset.name, rrset.ttl, sigs)

    def _sign(self, name: dns.name.Name, rrset: dns.rrset.RRset, rdatas: list[bytes], salt: int) -> list[dns.rdata.Rdata]:
        """``rrset`` signed as owned by ``name`` (canonical), ``rdatas`` its records' canonical forms, sorted."""
        apex_keys = rrset.rdtype in (dns.rdatatype.DNSKEY, dns.rdatatype.CDS, dns.rdatatype.CDNSKEY)
        at = self.at
        signers = [k for k in self.keys.keys if (k.signs_keys and k.published(at) if apex_keys else k.signing(at))]
        # jitter per RRset (deterministic: both paths give the same bytes), so expiries spread out
        expiration = self.expiration + (salt % self.jitter if self.jitter else 0)
        out: list[dns.rdata.Rdata] = []
        for k in signers:
            if k.dnskey.algorithm in _FAST:
                out.append(_signature(name, rrset.rdtype, rrset.rdclass, rrset.ttl, rdatas, k, self.keys.origin,
                                      self.inception, expiration))
            else:
                out.append(dns.dnssec.sign(dns.rrset.from_rdata_list(name, rrset.ttl, list(rrset)), k.private,
                                           self.keys.origin, k.dnskey, inception=self.inception, expiration=expiration))
            self.signed[0] += 1
        return out


_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)  # RFC 6979: both paths, every replica alike


_FAST = (13, 15)  # the algorithms _signature makes itself (ALGORITHMS: every one a zone may use)


def sign_rrset(rrset: dns.rrset.RRset, key: SigningKey, signer: dns.name.Name, inception: int,
               expiration: int) -> dns.rdtypes.ANY.RRSIG.RRSIG:
    """``dns.dnssec.sign(rrset, key.private, signer, key.dnskey, inception=..., expiration=...)``: the same RRSIG
    (tests/test_dnssec_signer.py)."""
    if key.dnskey.algorithm not in _FAST:
        return dns.dnssec.sign(rrset, key.private, signer, key.dnskey, inception=inception, expiration=expiration)
    return _signature(rrset.name, rrset.rdtype, rrset.rdclass, rrset.ttl, sorted(rd.to_digestable() for rd in rrset),
                      key, signer, inception, expiration)


def _signature(name: dns.name.Name, rdtype: int, rdclass: int, ttl: int, rdatas: list[bytes], key: SigningKey,
               signer: dns.name.Name, inception: int, expiration: int) -> dns.rdtypes.ANY.RRSIG.RRSIG:
    """The RRSIG by ``key`` over the RRset ``name``/``rdtype``/``ttl`` whose records' canonical forms are
    ``rdatas`` (sorted: RFC 4034 §6.3), as ``dns.dnssec.sign`` makes it, without its generic steps (policy, key
    class lookup, a template RRSIG replaced, the RRset's records made canonical again): at a new signing epoch
    those were three quarters of each of the ~18,000 signatures of a 10,000-site table. ``name``: absolute,
    a wildcard's ``*`` not counted in its labels (RFC 4034 §3.1.3)."""
    algorithm = key.dnskey.algorithm
    labels = len(name) - 1 - (1 if name.is_wild() else 0)
    tag = key.tag
    owner = name.to_digestable()
    fixed = struct.pack("!HHI", rdtype, rdclass, ttl)
    parts = [struct.pack("!HBBIIIH", rdtype, algorithm, labels, ttl, expiration, inception, tag),
             signer.to_digestable()]
    for rd in rdatas:
        parts += (owner, fixed, struct.pack("!H", len(rd)), rd)
    data = b"".join(parts)
    private = key.private
    if isinstance(private, ec.EllipticCurvePrivateKey):
        r, s_ = decode_dss_signature(private.sign(data, _ECDSA))
        signature = r.to_bytes(32, "big") + s_.to_bytes(32, "big")  # RFC 6605 §4: r and s, 32 octets each
    else:
        signature = private.sign(data)
    return dns.rdtypes.ANY.RRSIG.RRSIG(  # type: ignore[no-untyped-call]  # dnspython leaves it unannotated
        rdclass, dns.rdatatype.RRSIG, rdtype, algorithm, labels, ttl, expiration, inception, tag, signer, signature)


class ClockError(Exception):
    pass


@dataclass
class Signing:
    """Every signed zone's ``Signer`` for one epoch. Shared by a snapshot's fast and slow paths."""

    signers: dict[dns.name.Name, Signer]
    started: float
    resign_at: float
    signed: list[int] = field(default_factory=lambda: [0])  # signatures made, every zone (the signers' cell)

    @classmethod
    def create(cls, zone_keys: Sequence[ZoneKeys], now: float | None = None,
               counter: list[int] | None = None) -> Signing:
        """``counter``: the cell that counts signatures (``Stats.dnssec_signatures``: it outlives epochs)."""
        counter = [0] if counter is None else counter
        made = counter[0]
        now = time.time() if now is None else now
        if now < EARLIEST_SANE_TIME:
            raise ClockError(f"the clock says {int(now)}: signatures would not validate, refusing to sign")
        signers = {}
        resign_at = float("inf")
        for zk in zone_keys:
            validity = zk.validity_days * _DAY
            # epochs on a grid of half the validity: every worker and replica started in the same half signs
            # with the same window, so (signatures being deterministic) they serve the same bytes, and each
            # starts the next epoch at the same time, with at least half the window left
            half = validity // 2
            start = int(now) // half * half
            if not any(k.signing(now) for k in zk.keys) or not zk.sep_keys(now):
                raise ClockError(f"zone {zk.origin}: no key signs it at {int(now)} (see the keys' publish, "
                                 "activate, inactive and delete times)")
            signers[zk.origin] = Signer(zk, start - _SKEW, start + validity, max(1, validity // 10), now,
                                        signed=counter)
            # a key event (a ZSK published, activated, retired, deleted) starts a new epoch too
            resign_at = min([resign_at, start + half, *(t for k in zk.keys for t in k.events() if t > now)])
        signing = cls(signers, now, resign_at, counter)
        signing.base = made
        return signing

    def due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now >= self.resign_at

    def signer_for(self, zone_origin: dns.name.Name) -> Signer | None:
        return self.signers.get(zone_origin)

    base: int = 0  # the counter when this epoch started

    def signatures_made(self) -> int:
        """Signatures made in this epoch."""
        return self.signed[0] - self.base


# ---- answers


_NSECS: dict[tuple[Any, ...], dns.rrset.RRset] = {}  # one object per NSEC (so its RRSIG is found by identity)


def _nsec(owner: dns.name.Name, next_name: dns.name.Name, types: set[int], ttl: int) -> dns.rrset.RRset:
    key = (owner.to_digestable(), next_name.to_digestable(), frozenset(types), ttl)
    rrset = _NSECS.get(key)
    if rrset is None:
        rrset = _make_nsec(owner, next_name, types, ttl)
        if len(_NSECS) >= _CACHE_MAX:
            _NSECS.clear()
        _NSECS[key] = rrset
    return rrset


def _make_nsec(owner: dns.name.Name, next_name: dns.name.Name, types: set[int], ttl: int) -> dns.rrset.RRset:
    bitmap = dns.rdtypes.util.Bitmap.from_rdtypes(sorted(dns.rdatatype.RdataType.make(t) for t in types))
    rd = dns.rdtypes.ANY.NSEC.NSEC(  # type: ignore[no-untyped-call]  # dnspython leaves it unannotated
        dns.rdataclass.IN, dns.rdatatype.NSEC, next_name, bitmap.windows)
    return dns.rrset.from_rdata_list(owner, ttl, [rd])


def _successor(name: dns.name.Name) -> dns.name.Name:
    """``\\000.<name>``: the first name after ``name`` in canonical order."""
    return dns.name.Name((b"\x00", *name.canonicalize().labels))


def _next_sibling(name: dns.name.Name) -> dns.name.Name:
    """The first name after ``name`` and all its descendants (``x\\000.<parent>`` for ``x.<parent>``): an NSEC
    with it as next name covers ``name`` without saying ``name`` has descendants (which would make it exist)."""
    labels = name.canonicalize().labels
    if len(labels[0]) < 63:
        return dns.name.Name((labels[0] + b"\x00", *labels[1:]))
    return _successor(name)  # a 63-octet label: the descendant form (a validator may then see an ENT)


def sign_resolution(signing: Signing, catalog: Any, qname: dns.name.Name, qtype: int, res: Any) -> Any:
    """The Resolution a DO=1 query gets, or ``res`` itself when no signed zone is involved."""
    from dnsserver.answers import Resolution, _source_of_synthesis

    def signer_of(name: dns.name.Name) -> tuple[Any, Signer | None]:
        zone = catalog.zone_for(name.canonicalize())
        if zone is None:
            return None, None
        return zone, signing.signer_for(zone.origin)

    touched = False
    answer: list[dns.rrset.RRset] = []
    for rrset in res.answer:
        answer.append(rrset)
        zone, signer = signer_of(rrset.name)
        if signer is None:
            continue
        touched = True
        name = rrset.name.canonicalize()
        source = None
        if name not in catalog.existing:  # a wildcard expansion: signed as the wildcard, with its proof
            source = _source_of_synthesis(catalog, zone, name)
        answer.append(signer.rrsigs(rrset, source))
    authority: list[dns.rrset.RRset] = []
    rcode = res.rcode
    last = qname.canonicalize()
    for rrset in res.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            last = rrset[0].target.canonicalize()
    soa = next((r for r in res.authority if r.rdtype == dns.rdatatype.SOA), None)
    ns = next((r for r in res.authority if r.rdtype == dns.rdatatype.NS), None)
    if soa is not None:
        zone, signer = signer_of(soa.name)
        authority.append(soa)
        if signer is not None:
            touched = True
            authority.append(signer.rrsigs(soa))
            ttl = zone.negative_ttl
            if rcode == dns.rcode.NXDOMAIN:
                rcode = dns.rcode.NOERROR  # RFC 9824: the name "exists" with nothing but its NSEC
                nsec = _nsec(last, _successor(last), {dns.rdatatype.RRSIG, dns.rdatatype.NSEC, NXNAME}, ttl)
            else:
                types = _types_at(catalog, zone, last, res.picks) if last in catalog.existing else set()
                nsec = _nsec(last, _successor(last), types | {dns.rdatatype.RRSIG, dns.rdatatype.NSEC}, ttl)
            authority += [nsec, signer.rrsigs(nsec)]
    elif ns is not None:  # a referral (after a CNAME of ours too, AA then set): the DS or its absence
        authority.append(ns)
        cut = ns.name.canonicalize()
        zone, signer = signer_of(cut.parent())
        if signer is not None:
            touched = True
            ds = zone.nodes.get(cut, {}).get(dns.rdatatype.DS)
            if ds is not None:
                authority += [ds, signer.rrsigs(ds)]
            else:
                nsec = _nsec(cut, _successor(cut), _types_at(catalog, zone, cut, res.picks)
                             | {dns.rdatatype.RRSIG, dns.rdatatype.NSEC}, zone.negative_ttl)
                authority += [nsec, signer.rrsigs(nsec)]
    else:
        authority = list(res.authority)
    # a wildcard expansion's proof that the query name itself does not exist
    for rrset in res.answer:
        name = rrset.name.canonicalize()
        if name in catalog.existing:
            continue
        zone, signer = signer_of(name)
        if signer is None:
            continue
        before = _previous_existing(catalog, zone, name)
        nsec = _nsec(before, _next_sibling(name), _types_at(catalog, zone, before, ())
                     | {dns.rdatatype.RRSIG, dns.rdatatype.NSEC}, zone.negative_ttl)
        authority += [nsec, signer.rrsigs(nsec)]
        break
    if not touched:
        return res
    return Resolution(rcode, answer, authority, list(res.additional), res.authoritative, list(res.picks))


def _types_at(catalog: Any, zone: Any, name: dns.name.Name, picks: Sequence[Any]) -> set[int]:
    """The types an NSEC at ``name`` lists: a steered name's picked target's (all its targets' when no pick
    is known), a cut's NS and DS only (the rest is the child's), else the zone's."""
    steered = catalog.steered.get(name)
    if steered is not None:
        for s, target in picks:
            if s is steered:
                return set(steered.records[target])
        return {t for recs in steered.records.values() for t in recs}
    types = set(zone.nodes.get(name, {}))
    if name in zone.cuts:
        types &= {dns.rdatatype.NS, dns.rdatatype.DS}
    return types


def _previous_existing(catalog: Any, zone: Any, name: dns.name.Name) -> dns.name.Name:
    """The last name of ``zone``'s own data before ``name`` in canonical order (the apex at the least)."""
    names = catalog.sorted_names()
    i = bisect.bisect_left(names, name)
    while i > 0:
        i -= 1
        cand: dns.name.Name = names[i]
        cut = zone.cut_above(cand)
        if catalog.zone_for(cand) is zone and (cut is None or cut == cand):
            return cand  # not glue below a cut, not a child zone's name
    origin: dns.name.Name = zone.origin
    return origin


# ---- key files (``steerctl dnssec keygen``)


def key_file_name(origin: dns.name.Name, algorithm: int, tag: int, role: str) -> str:
    zone = origin.to_text(omit_final_dot=True) or "root"
    return f"K{zone}+{algorithm:03d}+{tag:05d}.{role}.pem"


def write_key(directory: Path, origin: dns.name.Name, algorithm: str, role: str) -> tuple[Path, SigningKey]:
    """A new private key in ``directory`` (mode 0600, written aside and renamed), and its SigningKey."""
    number = algorithm_number(algorithm)
    private = generate(algorithm)
    dnskey = make_dnskey(private, number, role)
    path = directory / key_file_name(origin, number, dns.dnssec.key_id(dnskey), role)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(private))
    os.replace(tmp, path)
    return path, SigningKey(role, private, dnskey, str(path))
