"""The topology: what a client of a service may be sent to, where a site belongs, which geo an address is in.

Pure; the one home of three facts every consumer needs (docs/architecture.md §2):

* **Candidates** (``candidates``): per (service, geo), the targets the
  planner may weigh, in preference order: the geo's cache sites first when
  the service targets sites (their regions' own answers are the fallback),
  then its regions; only targets the service has answers for. The planner
  water-fills in this order and the operator API checks pins against it.
  ``fail_open_targets`` is the same set in the DNS server's order (regions,
  then sites) for the equal spread it answers with when the table gives no
  usable route: with equal weights the order only decides which client
  subnets get which target, so it is kept as the DNS server has always had
  it (its answers must not change), and falls back to every target the
  service answers for when the geo has no candidate at all.
* **Site → region** (``site_regions``, ``region_of``).
* **The geo map** (``GeoMap``): longest-prefix match of a client address or
  ECS subnet to a geo, and the client key: the subnet bytes a client's pick
  hashes (``steering.pick``) and the ECS scope. The DNS server's hot path
  uses it (``dnsserver.geo`` re-exports it; ``dnsserver.clientkeys`` is its
  faster, property-checked copy for ECS options), as do
  ``RoutingService.Resolve`` and ``steering.client`` through ``Topology``.
  A GeoIP map (``steering.geoip``: geos by country, continent or
  subdivision) adds its prefixes under the configured ones, which win for
  every address they hold (docs/geoip.md).

``Topology`` is the slice of the configuration answering needs (geos with
their prefixes and preferences, services' answers, site → region), built
from a Config on a controller or from the JSON a client receives on its
first ``Watch`` response.
"""

from __future__ import annotations

import ipaddress
import json
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steering.config import Config, Geo, Service

if TYPE_CHECKING:
    from steering.geoip import DatabaseInfo, GeoIpMap

# Granularity of a client subnet when the query does not ask for less: the
# common ECS source prefixes. A configured prefix longer than this raises it.
V4_KEY_BITS = 24
V6_KEY_BITS = 56

# The byte-aligned block levels of the DNS server's index (dnsserver.clientkeys) per family: for the
# configured prefixes, and with a GeoIP map, whose many short IPv6 prefixes need levels 8 bits apart
# (a prefix then fills at most 128 blocks of the next level). steering.geoip compiles to the same levels.
INDEX_LEVELS: Mapping[int, tuple[int, ...]] = {4: (16, 24), 6: (32, 48, 56)}
GEOIP_LEVELS: Mapping[int, tuple[int, ...]] = {4: (16, 24), 6: (16, 24, 32, 40, 48, 56)}


# ---------------------------------------------------------------- candidates and site -> region


def candidates_from(prefer: Sequence[str], prefer_sites: Sequence[str], targets: str,
                    answers: Collection[str]) -> tuple[str, ...]:
    """The planner's candidates from a geo's preferences: sites (for a ``targets: sites`` service), then
    regions, each in preference order, only those with answers."""
    regions = tuple(r for r in prefer if r in answers)
    if targets == "sites":
        return tuple(s for s in prefer_sites if s in answers) + regions
    return regions


def fail_open_from(prefer: Sequence[str], prefer_sites: Sequence[str], targets: str,
                   answers: Collection[str]) -> tuple[str, ...]:
    """The DNS server's fail-open spread: the candidates with regions first, else every answer."""
    cands = list(prefer) + (list(prefer_sites) if targets == "sites" else [])
    out = tuple(t for t in cands if t in answers)
    return out or tuple(answers)


def candidates(svc: Service, geo: Geo) -> tuple[str, ...]:
    """What ``geo`` may be sent to for ``svc``, in the planner's preference order (see the module doc)."""
    return candidates_from(geo.prefer, geo.prefer_sites, svc.targets, svc.answers)


def fail_open_targets(config: Config, svc: Service, geo_id: str) -> tuple[str, ...]:
    """The targets the DNS server spreads a geo over, equally, when the table gives it no usable route."""
    geo = config.geo(geo_id)
    return fail_open_from(geo.prefer, geo.prefer_sites, svc.targets, svc.answers)


def candidate_lists(config: Config) -> tuple[dict[str, tuple[str, ...]], ...]:
    """Per service (config order): geo -> candidates. Built once per Config object."""
    return config.derived("topology.candidates", _candidate_lists)


def _candidate_lists(config: Config) -> tuple[dict[str, tuple[str, ...]], ...]:
    return tuple({g.id: candidates(svc, g) for g in config.geos} for svc in config.services)


def site_regions(config: Config) -> Mapping[str, str]:
    """Site id -> its region. Built once per Config object."""
    return config.derived("topology.site_regions", lambda c: {s.id: s.region for s in c.sites})


def region_of(config: Config, target: str) -> str:
    """The region a target is in: a site's region, a region itself."""
    return site_regions(config).get(target, target)


# ---------------------------------------------------------------- the geo map


@dataclass(frozen=True)
class ClientKey:
    """What steering looks at: the geo index, the subnet bytes hashed for a stable answer, the scope."""

    geo: int
    subnet: bytes
    scope: int


class GeoMap:
    """Longest-prefix match from an address to a geo index (position in ``ids``).

    An answer for a steered name depends only on the first ``bits`` of the
    client's address (its *key*): a resolver's ECS subnet or its own address,
    truncated to ``key_bits[family]`` (/24 for IPv4, /56 for IPv6, or the
    longest configured prefix of the family when that is longer). The ECS
    scope returned is ``bits``, or more when a configured prefix longer than
    ``bits`` lies inside the client's block (RFC 7871 §7.2.1: a /24 holding a
    configured /28 gets scope 28): the answer was chosen without the bits that
    would have placed some of that block's clients elsewhere, so a resolver
    must not reuse it for the whole block.
    """

    def __init__(self, geos: Sequence[Geo], default_id: str, geoip: GeoIpMap | None = None) -> None:
        self.ids: tuple[str, ...] = tuple(g.id for g in geos)
        self.default: int = self.ids.index(default_id)
        # per family: {prefix length: {network int: geo index}}, lengths longest first
        self._tables: dict[int, list[tuple[int, dict[int, int]]]] = {4: [], 6: []}
        by_len: dict[int, dict[int, dict[int, int]]] = {4: {}, 6: {}}
        longest = {4: V4_KEY_BITS, 6: V6_KEY_BITS}
        for i, g in enumerate(geos):
            for net in g.networks():
                fam = net.version
                by_len[fam].setdefault(net.prefixlen, {})[int(net.network_address)] = i
                longest[fam] = max(longest[fam], net.prefixlen)
        self.geoip: DatabaseInfo | None = None
        self.levels: Mapping[int, tuple[int, ...]] = INDEX_LEVELS
        if geoip is not None:
            self._add_geoip(by_len, geoip)
        for fam in (4, 6):
            self._tables[fam] = sorted(by_len[fam].items(), key=lambda kv: -kv[0])
        # per family, longest first: (prefix length, sorted network ints), to find prefixes inside a block
        self._starts = {fam: [(plen, sorted(nets)) for plen, nets in self._tables[fam]] for fam in (4, 6)}
        self.key_bits = longest  # family -> bits of the address that can matter
        # per family, what a full-length key matches (every prefix is usable then): the starts of the
        # longest-prefix function's pieces and their geos, for one bisect instead of a probe per length
        self._flat = {fam: _flatten(self._tables[fam], 32 if fam == 4 else 128, self.default) for fam in (4, 6)}

    def _add_geoip(self, by_len: dict[int, dict[int, dict[int, int]]], geoip: GeoIpMap) -> None:
        """The GeoIP map's prefixes under the configured ones: one inside or equal to a configured prefix is
        dropped, so a configured prefix wins over GeoIP for every address it holds (docs/geoip.md)."""
        if tuple(geoip.geo_ids) != self.ids:
            raise ValueError("the GeoIP map was compiled for other geos")
        self.geoip = geoip.info
        if geoip.count():
            self.levels = GEOIP_LEVELS
        for fam, width in ((4, 32), (6, 128)):
            configured = {plen: set(nets) for plen, nets in by_len[fam].items()}
            lengths = sorted(configured)
            for plen, net, geo in geoip.prefixes[fam]:
                if any(le <= plen and net >> (width - le) << (width - le) in configured[le] for le in lengths):
                    continue
                by_len[fam].setdefault(plen, {})[net] = geo

    def prefixes(self, family: int) -> list[tuple[int, int, int]]:
        """Every prefix of the family, configured and GeoIP: (length, network int, geo index)."""
        return [(plen, net, geo) for plen, nets in self._tables[family] for net, geo in nets.items()]

    def match(self, family: int, addr: int, bits: int) -> int:
        """Geo index for ``addr`` of which only the first ``bits`` are known (the rest zero)."""
        width = 32 if family == 4 else 128
        if bits >= self.key_bits[family]:
            starts, geos = self._flat[family]
            return geos[bisect_right(starts, addr) - 1]
        for plen, nets in self._tables[family]:
            if plen > bits:
                continue  # the client did not tell us enough to match this one
            net = addr >> (width - plen) << (width - plen) if plen else 0
            hit = nets.get(net)
            if hit is not None:
                return hit
        return self.default

    def matched(self, family: int, addr: int, bits: int) -> tuple[int, int, int] | None:
        """The prefix ``match`` places ``addr``/``bits`` by: (length, network int, geo index), or None when
        no prefix holds it (the default geo). For explaining one client (``steering.explain``): a probe
        per prefix length, not the hot path's bisect."""
        width = 32 if family == 4 else 128
        for plen, nets in self._tables[family]:  # longest first
            if plen > bits:
                continue
            net = addr >> (width - plen) << (width - plen) if plen else 0
            hit = nets.get(net)
            if hit is not None:
                return plen, net, hit
        return None

    def key(self, family: int, addr_bytes: bytes, source_bits: int) -> ClientKey:
        """The client key for an address (4 or 16 bytes, or an ECS address of any length) and prefix.

        The subnet is ``bytes((family, bits))`` and the address cut to ``bits`` and padded to the
        family's width: the bytes every pick of a steered answer hashes (``steering.pick``)."""
        width = 32 if family == 4 else 128
        nbytes = width // 8
        bits = min(source_bits, self.key_bits[family], width)
        raw = (addr_bytes[:nbytes]).ljust(nbytes, b"\0")
        addr = int.from_bytes(raw, "big")
        addr = addr >> (width - bits) << (width - bits) if bits else 0
        geo = self.match(family, addr, bits)
        subnet = bytes((family, bits)) + addr.to_bytes(nbytes, "big")
        return ClientKey(geo, subnet, self.scope(family, addr, bits))

    def scope(self, family: int, addr: int, bits: int) -> int:
        """The ECS scope for the block ``addr``/``bits``: ``bits``, or the longest configured prefix inside it."""
        width = 32 if family == 4 else 128
        end = addr + (1 << (width - bits))
        for plen, starts in self._starts[family]:  # longest first: the first one inside is the answer
            if plen <= bits:
                break
            i = bisect_left(starts, addr)
            if i < len(starts) and starts[i] < end:
                return plen
        return bits

    def key_for_source(self, host: str) -> ClientKey:
        """The client key for a resolver's source address (text, as the socket gives it), or any client
        address: an IPv4-mapped IPv6 address counts as its IPv4 address, a zone suffix is ignored."""
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return self.key(ip.version, ip.packed, 128)


def _flatten(tables: list[tuple[int, dict[int, int]]], width: int, default: int) -> tuple[list[int], list[int]]:
    """The longest-prefix function of ``tables`` as pieces: (sorted starts from 0, the geo of each piece).

    Prefixes nest or are disjoint, so a sweep in address order (outer prefixes first) with a stack of the
    prefixes still open gives every point where the longest match changes."""
    spans = sorted((net, -(net + (1 << (width - plen))), geo) for plen, nets in tables for net, geo in nets.items())
    starts, geos = [0], [default]
    stack: list[tuple[int, int]] = []  # (end, geo) of the prefixes holding the sweep's position

    def piece(at: int, geo: int) -> None:
        if starts[-1] == at:
            geos[-1] = geo
            if len(geos) > 1 and geos[-2] == geo:
                starts.pop()
                geos.pop()
        elif geos[-1] != geo:
            starts.append(at)
            geos.append(geo)

    for start, neg_end, geo in spans:
        while stack and stack[-1][0] <= start:
            end, _ = stack.pop()
            piece(end, stack[-1][1] if stack else default)
        piece(start, geo)
        stack.append((-neg_end, geo))
    while stack:
        end, _ = stack.pop()
        if end < 1 << width:
            piece(end, stack[-1][1] if stack else default)
    return starts, geos


# ---------------------------------------------------------------- the slice of config answering needs


class ResolveError(ValueError):
    """Bad input to a lookup (``Topology``, ``steering.resolve``): ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class ServiceInfo:
    ttl: int
    targets: str
    answers: Mapping[str, tuple[str, ...]]  # target -> addresses (or the CNAME)


class Topology:
    """Geos and services' answers: built from a Config (controller) or from JSON (client)."""

    def __init__(self, geos: list[dict[str, Any]], services: Mapping[str, ServiceInfo],
                 site_region: Mapping[str, str], geoip: GeoIpMap | None = None) -> None:
        self.geos = geos
        self.services = dict(services)
        self.site_region = dict(site_region)
        self.geo_ids: list[str] = [g["id"] for g in geos]
        self._geo = {g["id"]: g for g in geos}
        self.default_id = next((g["id"] for g in geos if g.get("default")), self.geo_ids[0])
        self.geomap = GeoMap(self.geo_models(), self.default_id, geoip)

    def geo_models(self) -> list[Geo]:
        """The geos as config models: prefixes and GeoIP codes (what a GeoIP map is compiled against)."""
        return [Geo(id=g["id"], prefixes=tuple(g.get("prefixes", ())), prefer=tuple(g.get("prefer") or ("x",)),
                    continents=tuple(g.get("continents", ())), countries=tuple(g.get("countries", ())),
                    subdivisions=tuple(g.get("subdivisions", ()))) for g in self.geos]

    def uses_geoip(self) -> bool:
        """Some geo names countries, continents or subdivisions: placing clients needs a GeoIP database."""
        return any(g.get("continents") or g.get("countries") or g.get("subdivisions") for g in self.geos)

    def with_geoip(self, geoip: GeoIpMap | None) -> Topology:
        """The same topology placing clients with ``geoip`` (a reloaded database): a new object, so a reader
        holding the old one keeps a consistent view."""
        return Topology(self.geos, self.services, self.site_region, geoip)

    @classmethod
    def from_config(cls, config: Config, geoip: GeoIpMap | None = None) -> Topology:
        geos = []
        for g in config.geos:
            geo: dict[str, Any] = {"id": g.id, "prefixes": list(g.prefixes), "prefer": list(g.prefer),
                                   "prefer_sites": list(g.prefer_sites), "default": g is config.default_geo}
            # GeoIP codes only when set (older clients ignore them; a client places them with its own copy
            # of the database: docs/geoip.md, "steering.client")
            for key, codes in (("continents", g.all_continents()), ("countries", g.all_countries()),
                               ("subdivisions", g.subdivisions)):
                if codes:
                    geo[key] = list(codes)
            geos.append(geo)
        services = {}
        for s in config.services:
            answers = {t: tuple(a.addresses()) or ((a.CNAME,) if a.CNAME else ()) for t, a in s.answers.items()}
            services[s.name] = ServiceInfo(ttl=s.ttl, targets=s.targets, answers=answers)
        return cls(geos, services, dict(site_regions(config)), geoip)

    def to_json(self) -> str:
        return json.dumps({
            "geos": self.geos,
            "services": {n: {"ttl": s.ttl, "targets": s.targets, "answers": {t: list(a) for t, a in s.answers.items()}}
                         for n, s in self.services.items()},
            "sites": self.site_region,
        }, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Topology:
        try:
            data = json.loads(text)
            services = {str(n): ServiceInfo(ttl=int(s["ttl"]), targets=str(s["targets"]),
                                            answers={str(t): tuple(map(str, a)) for t, a in s["answers"].items()})
                        for n, s in data["services"].items()}
            return cls(list(data["geos"]), services, {str(k): str(v) for k, v in data.get("sites", {}).items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed topology: {type(exc).__name__}: {exc}") from None

    def client_key(self, client_address: str) -> ClientKey:
        """The geo map's key for a client address (``GeoMap.key_for_source``)."""
        try:
            return self.geomap.key_for_source(client_address)
        except ValueError:
            raise ResolveError("client_address", f"{client_address!r} is not an IPv4 or IPv6 address") from None

    def geo_for(self, client_address: str) -> str:
        """Longest-prefix match of an address over the geos' prefixes; the default geo if none matches."""
        return self.geo_ids[self.client_key(client_address).geo]

    def service_name(self, name: str) -> str:
        """The configured name for ``name`` (case-insensitive, trailing dot optional)."""
        wanted = name.strip().lower()
        if wanted and not wanted.endswith("."):
            wanted += "."
        if wanted not in self.services:
            raise ResolveError("service", f"unknown service {name!r} (known: {', '.join(sorted(self.services))})")
        return wanted

    def fail_open_targets(self, service: str, geo: str) -> tuple[str, ...]:
        """``fail_open_targets`` of the config this topology came from (a topology from a controller that
        did not send ``prefer_sites`` spreads over regions only)."""
        info = self.services[service]
        g = self._geo[geo]
        return fail_open_from(g.get("prefer") or (), g.get("prefer_sites") or (), info.targets, info.answers)
