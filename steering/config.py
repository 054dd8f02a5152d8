"""The configuration file: typed, immutable, validated as a whole.

Loading happens in two passes. Pydantic checks the shape and the value of
each field; then ``_cross_check`` checks what refers to what (preference
lists, answers, zones), collecting every problem instead of stopping at the
first, so an operator fixes a broken file in one go. Each problem is one
line, ``path: message``, with the path in the file's own terms
(``geos[2].prefer[1]``). Shape errors do not hide the second pass: it runs on
what validates once the refused parts are cut out (``steering.salvage``).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import dns.name
import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from steering import geocodes

# TOTAL_WEIGHT is re-exported: it lives beside the weight arithmetic, so steering.table loads without pydantic
from steering.weights import TOTAL_WEIGHT as TOTAL_WEIGHT

RecordType = Literal["A", "AAAA", "CNAME"]
T = TypeVar("T")


class ConfigError(Exception):
    """A configuration (or state) file that cannot be used; ``problems`` are one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # NaN passes no bound check


PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Identifier = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


QuorumRule = Literal["majority", "all", "any"]
QUORUM_RULES: tuple[str, ...] = ("majority", "all", "any")


class HealthPolicy(_Model):
    """How a target's reporters (its local agent and its observers) decide its health (docs/health.md)."""

    quorum: QuorumRule | int = Field(
        "majority", description="unhealthy when this many of its counted reporters say so: majority, all, any "
                                "or a number")
    per_geo_reachability: bool = Field(
        False, description="a target the observers of a geo cannot reach gets no traffic from that geo")

    @field_validator("quorum", mode="before")
    @classmethod
    def _quorum(cls, value: Any) -> Any:
        # One message for the field, not one per member of the union.
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= 1000:
                raise ValueError(f"{value} is not a number of reporters in [1, 1000]")
            return value
        if isinstance(value, str) and value in QUORUM_RULES:
            return value
        raise ValueError(f"{str(value)[:40]!r} is not majority, all, any or a number of reporters")


class Policy(_Model):
    watermark: float = Field(0.8, gt=0, le=1, description="fill regions up to this share of capacity")
    hard_limit: float = Field(1.0, gt=0, description="utilization no evacuation may plan a region beyond")
    min_serving_regions: int = Field(2, ge=1)
    max_shift: float = Field(0.25, gt=0, le=1, description="share of a geo's traffic one step may move")
    step_seconds: float = Field(30, gt=0)
    fall: int = Field(3, ge=1)
    rise: int = Field(2, ge=1)
    hysteresis: float = Field(0.02, ge=0, lt=1, description="ignore moves smaller than this share of a geo")
    silence_seconds: float = Field(15, gt=0, description="a site with no report for this long is silent")
    report_band: float = Field(0.05, ge=0, lt=1, description="capacity/load changes below this are not written")
    health: HealthPolicy = HealthPolicy()


class Region(_Model):
    id: Identifier
    capacity: PositiveFloat
    continent: str | None = None
    country: str | None = None


class Site(_Model):
    id: Identifier
    region: str
    capacity: PositiveFloat


class Geo(_Model):
    id: Identifier
    prefixes: tuple[str, ...] = ()
    demand: NonNegativeFloat = 0.0
    prefer: tuple[str, ...] = Field(min_length=1)
    prefer_sites: tuple[str, ...] = ()
    default: bool = False
    # GeoIP codes (docs/geoip.md): placed by the geoip database, published as Route 53 geolocations.
    # ``continent``/``country`` are the older single-code spellings, still read: each adds to its list.
    continent: str | None = Field(None, pattern=r"^(AF|AN|AS|EU|NA|OC|SA)$")
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    continents: tuple[str, ...] = Field((), max_length=7)
    countries: tuple[str, ...] = Field((), max_length=300)
    subdivisions: tuple[str, ...] = Field((), max_length=5000)

    @field_validator("country")
    @classmethod
    def _country_known(cls, value: str | None) -> str | None:
        return None if value is None else geocodes.check_country(value)

    @field_validator("continents", "countries", "subdivisions")
    @classmethod
    def _codes_known(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        check = {"continents": geocodes.check_continent, "countries": geocodes.check_country,
                 "subdivisions": geocodes.check_subdivision}[str(info.field_name)]
        for i, code in enumerate(value):
            try:
                check(str(code))
            except ValueError as exc:
                raise ValueError(f"entry {i}: {exc}") from None
        return tuple(dict.fromkeys(value))

    def all_continents(self) -> tuple[str, ...]:
        """``continents`` and the older ``continent``: what the GeoIP map and Route 53 place here."""
        return tuple(dict.fromkeys((*self.continents, *((self.continent,) if self.continent else ()))))

    def all_countries(self) -> tuple[str, ...]:
        """``countries`` and the older ``country``."""
        return tuple(dict.fromkeys((*self.countries, *((self.country,) if self.country else ()))))

    def has_geo_codes(self) -> bool:
        return bool(self.continents or self.countries or self.subdivisions or self.continent or self.country)

    @field_validator("prefixes")
    @classmethod
    def _prefixes_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for i, text in enumerate(value):
            try:
                net = ipaddress.ip_network(str(text), strict=True)
            except ValueError as exc:
                raise ValueError(f"entry {i}: {text!r} is not a CIDR prefix ({exc})") from None
            out.append(str(net))
        return tuple(out)

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p) for p in self.prefixes]


class Observer(_Model):
    """An agent that probes targets from outside (``role: observer`` in its agent file), and what it may
    report: the ``agent_id`` it reports with, the regions and sites it observes, the client geos it stands
    for (docs/health.md)."""

    id: Identifier
    targets: tuple[str, ...] = Field(min_length=1, max_length=10_000)
    geos: tuple[str, ...] = ()


class Answer(_Model):
    A: tuple[str, ...] = ()
    AAAA: tuple[str, ...] = ()
    CNAME: str | None = None

    @field_validator("A")
    @classmethod
    def _v4(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            try:
                ipaddress.IPv4Address(text)
            except ValueError:
                raise ValueError(f"{text!r} is not an IPv4 address") from None
        return value

    @field_validator("AAAA")
    @classmethod
    def _v6(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            try:
                ipaddress.IPv6Address(text)
            except ValueError:
                raise ValueError(f"{text!r} is not an IPv6 address") from None
        return tuple(str(ipaddress.IPv6Address(t)) for t in value)

    def addresses(self) -> list[str]:
        return [*self.A, *self.AAAA]

    def is_empty(self) -> bool:
        return not (self.A or self.AAAA or self.CNAME)


class Service(_Model):
    name: str
    ttl: int = Field(30, ge=0, le=86400)
    targets: Literal["regions", "sites"] = "regions"
    answers: Mapping[str, Answer]

    @field_validator("name")
    @classmethod
    def _absolute_name(cls, value: str) -> str:
        return _normalise_name(value)


class DnssecKey(_Model):
    """A private key file (PKCS#8 PEM, as ``steerctl dnssec keygen`` writes it), read by every DNS replica."""
    file: str = Field(min_length=1, max_length=4096)
    role: Literal["csk", "ksk", "zsk"] = "csk"
    active: bool = True  # false: a ZSK published in the DNSKEY RRset ahead of its roll (docs/dnssec.md)
    # the key's timeline (ISO 8601 with a zone, or POSIX seconds; unset: always): in the DNSKEY RRset from
    # publish until delete, signing from activate until inactive; the server follows it (a ZSK roll)
    publish: AwareDatetime | None = None
    activate: AwareDatetime | None = None
    inactive: AwareDatetime | None = None
    delete: AwareDatetime | None = None


class Dnssec(_Model):
    """A zone's DNSSEC signing (docs/dnssec.md): a combined key, or a KSK and a ZSK."""
    enabled: bool = True
    algorithm: Literal["ECDSAP256SHA256", "ED25519"] = "ECDSAP256SHA256"
    keys: tuple[DnssecKey, ...] = Field((), max_length=8)
    validity_days: int = Field(14, ge=2, le=90)
    dnskey_ttl: int = Field(3600, ge=0, le=86400)

    @field_validator("keys", mode="before")
    @classmethod
    def _plain_paths(cls, value: Any) -> Any:
        # a bare path is a combined signing key
        if isinstance(value, (list, tuple)):
            return [{"file": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("keys")
    @classmethod
    def _roles(cls, value: tuple[DnssecKey, ...], info: ValidationInfo) -> tuple[DnssecKey, ...]:
        if info.data.get("enabled", True):
            roles = {k.role for k in value if k.active or k.role != "zsk"}
            if not value:
                raise ValueError("DNSSEC is enabled but no keys are listed")
            if "csk" not in roles and not {"ksk", "zsk"} <= roles:
                raise ValueError("needs a combined key (role csk), or a ksk and an active zsk")
        return value


class Zone(_Model):
    origin: str
    file: str | None = None
    ns: tuple[str, ...] = ()
    soa_mname: str | None = None
    soa_rname: str | None = None
    negative_ttl: int = Field(60, ge=0, le=86400)
    dnssec: Dnssec | None = None

    @field_validator("origin")
    @classmethod
    def _absolute_origin(cls, value: str) -> str:
        return _normalise_name(value)


class TlsFiles(_Model):
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


class Etcd(_Model):
    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    prefix: str = Field("/steering/v1", pattern=r"^/[^\s]*[^/\s]$")
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    timeout_seconds: PositiveFloat = 5.0
    # gRPC's own reconnect backoff grows to 120 s: a process then noticed a returned etcd up to two minutes
    # late. This caps it, and every retry loop of the store, so everyone is back within seconds.
    reconnect_max_seconds: float = Field(2.0, ge=0.1, le=60.0,
                                         description="longest wait between two reconnect or retry attempts")
    # Pings find a peer that stopped answering (a hung or partitioned member) while a watch sits idle.
    # etcd answers pings more frequent than its --grpc-keepalive-min-time (5 s) with GOAWAY.
    keepalive_seconds: float = Field(10.0, ge=6.0, le=3600.0,
                                     description="ping the connection this often while streams are open")


def _cidr_list(value: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for i, text in enumerate(value):
        try:
            out.append(str(ipaddress.ip_network(str(text), strict=False)))
        except ValueError as exc:
            raise ValueError(f"entry {i}: {text!r} is not a CIDR prefix ({exc})") from None
    return tuple(out)


class Rrl(_Model):
    """Response rate limiting (defaults and their reasons: dnsserver/README.md, "Response rate limiting")."""

    enabled: bool = True
    responses_per_second: int = Field(200, ge=1, le=1_000_000, description="same name and type, per prefix")
    nxdomains_per_second: int = Field(50, ge=1, le=1_000_000, description="NXDOMAIN answers, per prefix")
    errors_per_second: int = Field(50, ge=1, le=1_000_000, description="REFUSED/FORMERR/SERVFAIL/..., per prefix")
    slip: int = Field(2, ge=0, le=100, description="every slip-th limited reply goes out truncated (0: none)")
    ipv4_prefix: int = Field(24, ge=8, le=32)
    ipv6_prefix: int = Field(56, ge=16, le=128)
    exempt: tuple[str, ...] = Field((), max_length=10_000, description="client prefixes never limited")
    max_buckets: int = Field(200_000, ge=1_000, le=10_000_000, description="buckets kept per second, per worker")

    @field_validator("exempt")
    @classmethod
    def _exempt_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _cidr_list(value)


class Cookies(_Model):
    """DNS Cookies (RFC 7873, server cookies per RFC 9018)."""

    enabled: bool = True
    # hex secrets (16 bytes), one per line: the first signs, every line is accepted (rotation); re-read
    # when it changes. None: a random secret per server start, shared by its workers.
    secret_file: str | None = None


class Dns(_Model):
    listen: tuple[str, ...] = ("127.0.0.1:5353",)
    state_file: str | None = None
    workers: int | None = Field(None, ge=1, le=64, description="worker processes (default: CPUs available)")
    tcp_idle_seconds: float = Field(10.0, gt=0, le=3600)
    tcp_max_connections: int = Field(256, ge=1, le=1_000_000)
    tcp_max_queries_per_connection: int = Field(10_000, ge=1, le=10_000_000)
    ecs: bool = True
    nsid: bool = True
    identity: str | None = Field(None, min_length=1, max_length=128,
                                 description="NSID text (default: host name and worker number)")
    stale_answer_seconds: float = Field(300.0, gt=0, le=86_400 * 30,
                                        description="table age past which answers carry EDE 3 while etcd is unreachable")
    rrl: Rrl = Rrl()
    cookies: Cookies = Cookies()


class Route53(_Model):
    hosted_zone_id: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    max_requests_per_second: PositiveFloat = 5.0
    sync_interval: PositiveFloat = 60.0
    owner_id: str = Field("steering", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
    max_attempts: int = Field(8, ge=1, le=50, description="tries per request on Throttling/PriorRequestNotComplete")
    backoff_base_seconds: PositiveFloat = 0.2
    backoff_max_seconds: PositiveFloat = 20.0
    insync_timeout_seconds: PositiveFloat = 300.0
    insync_poll_seconds: PositiveFloat = 2.0


class Tls(_Model):
    cert: str
    key: str
    client_ca: str | None = None


class Auth(_Model):
    tokens_file: str


class Events(_Model):
    """The event timeline the leader writes (docs/operator-guide.md, "Events")."""

    max_count: int = Field(10_000, ge=10, le=1_000_000, description="events kept; the oldest go first")
    max_age_seconds: float = Field(7 * 86400, ge=60, le=366 * 86400, description="events older are deleted")
    per_subject_per_minute: int = Field(6, ge=1, le=600,
                                        description="events per target/geo/replica in any 60 s; more are "
                                                    "suppressed and summed up in one 'flapping' event")
    spill_threshold: float = Field(0.1, gt=0, lt=1,
                                   description="a geo spilling more than this share of its traffic is an event")


class GeoIp(_Model):
    """The GeoIP database that places clients in geos by country, continent or subdivision (docs/geoip.md)."""

    database: str = Field(min_length=1, max_length=4096, description="a MaxMind DB file (.mmdb)")
    reload_seconds: float = Field(5.0, ge=0.5, le=3600, description="how often the file is looked at for a change")


class Controller(_Model):
    listen: str = "127.0.0.1:50051"
    # the REST API (docs/rest-api.md) on HOST:PORT beside gRPC, with the same auth and tls; None: not served
    http_listen: str | None = Field(None, min_length=1, max_length=300)
    # agents' HealthService.Report on HOST:PORT, gRPC over HTTP/2 without grpc core (a fraction of the CPU per
    # report), with the same auth and tls; None: agents report on ``listen`` only
    ingest_listen: str | None = Field(None, min_length=1, max_length=300)
    debounce_seconds: NonNegativeFloat = 0.2
    events: Events = Events()

    @field_validator("listen", "http_listen", "ingest_listen")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        # `steering config check` says what `steering controller` would refuse at start
        if v is not None:
            from steering.addr import parse_hostport

            parse_hostport(v)  # ValueError naming the problem: "'x': no port given"
        return v


class DrillSettings(_Model):
    """Chaos drills (docs/drills.md): the Prometheus that ``--abort-on-alert`` and ``--abort-query`` ask."""

    prometheus_url: str | None = Field(None, min_length=1, max_length=2048,
                                       description="http(s)://HOST[:PORT][/PATH] of a Prometheus")
    prometheus_timeout_seconds: float = Field(2.0, gt=0, le=60, description="per query")
    prometheus_unreachable_seconds: float = Field(30.0, ge=0, le=3600,
                                                  description="a Prometheus guard unanswered this long aborts")

    @field_validator("prometheus_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(v)
            port = parts.port  # raises ValueError on a port that is not a number in range
        except ValueError as exc:
            raise ValueError(f"{v!r} does not parse: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{v!r} is not an http(s)://HOST[:PORT][/PATH] URL")
        del port
        return v.rstrip("/")


_TOPOLOGY_FIELDS = ("policy", "regions", "sites", "geos", "services", "zones")


class _Index(NamedTuple):
    """Lookups by id, built once per (frozen) config."""

    regions: dict[str, Region]
    sites: dict[str, Site]
    geos: dict[str, Geo]
    services: dict[str, Service]


class Config(_Model):
    policy: Policy = Policy()
    regions: tuple[Region, ...] = Field(min_length=1)
    sites: tuple[Site, ...] = ()
    observers: tuple[Observer, ...] = Field((), max_length=10_000)
    geos: tuple[Geo, ...] = Field(min_length=1)
    services: tuple[Service, ...] = Field(min_length=1)
    zones: tuple[Zone, ...] = Field(min_length=1)
    etcd: Etcd = Etcd()
    dns: Dns = Dns()
    controller: Controller = Controller()
    route53: Route53 | None = None
    geoip: GeoIp | None = None
    drill: DrillSettings = DrillSettings()
    tls: Tls | None = None
    auth: Auth | None = None
    base_dir: str = Field(".", exclude=True, description="directory relative paths are resolved against")

    # ---- lookups: by id through an index built once (the model is frozen); hot paths
    # (report validation, planning) look up thousands of sites per second.

    @functools.cached_property
    def _index(self) -> _Index:
        return _Index({r.id: r for r in self.regions}, {s.id: s for s in self.sites}, {g.id: g for g in self.geos},
                      {s.name: s for s in self.services})

    def region(self, region_id: str) -> Region:
        return self._index.regions[region_id]

    def site(self, site_id: str) -> Site:
        return self._index.sites[site_id]

    def service(self, name: str) -> Service:
        services = self._index.services
        if name in services:
            return services[name]
        try:
            return services[_normalise_name(name)]
        except (KeyError, ValueError):
            raise KeyError(name) from None

    def geo(self, geo_id: str) -> Geo:
        return self._index.geos[geo_id]

    @property
    def default_geo(self) -> Geo:
        for g in self.geos:
            if g.default:
                return g
        return self.geos[0]

    def resolve_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def fingerprint(self) -> str:
        """A short hash of the topology, so readers can tell two configs apart."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        # Serialising a large topology takes ~0.4 s (10,000 sites) and the
        # planner asks on every plan; the model is frozen, so compute it once.
        # Only what the planner and the answers are made of: the dns, etcd, controller, route53, tls and
        # auth sections are each process's own settings (a DNS replica listening elsewhere, with other
        # rate limits, serves the same topology and must not be told it mismatches).
        topology = self.model_dump(mode="json", include=set(_TOPOLOGY_FIELDS))
        if self.policy.health == HealthPolicy():
            del topology["policy"]["health"]  # the default: tables planned before it existed keep their hash
        for geo in topology["geos"]:  # GeoIP code lists count once set: older configs keep their hash
            for codes in ("continents", "countries", "subdivisions"):
                if not geo.get(codes):
                    geo.pop(codes, None)
        for zone in topology["zones"]:  # DNSSEC signing changes no answer's choice (nor older configs' hash)
            zone.pop("dnssec", None)
        blob = json.dumps(topology, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def derived(self, key: str, build: Callable[[Config], T]) -> T:
        """``build(self)``, computed once per config object and kept: for structures other modules
        derive from the topology (the planner's candidate lists). The model is frozen, so they stay valid."""
        cache = self._derived
        if key not in cache:
            cache[key] = build(self)
        return cache[key]  # type: ignore[no-any-return]

    @functools.cached_property
    def _derived(self) -> dict[str, Any]:
        return {}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Config:
        # model_copy copies the instance dict, cached fingerprint included: drop it.
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("_fingerprint", None)
        copy.__dict__.pop("_index", None)
        copy.__dict__.pop("_derived", None)
        return copy


def _normalise_name(value: str) -> str:
    try:
        name = dns.name.from_text(value)
    except Exception as exc:  # dnspython raises several types for bad names
        raise ValueError(f"{value!r} is not a DNS name ({exc})") from None
    return name.to_text().lower()


def _duplicates(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for i in ids:
        if i in seen and i not in dup:
            dup.append(i)
        seen.add(i)
    return dup


def _services_below_delegations(cfg: Config) -> list[str]:
    """A steered name at or below a delegation in its zone's file is never steered: the child zone's
    servers answer there (ours only refer). A zone file that does not parse is left to ``steering dns``,
    whose start names the problem."""
    import dns.rdataclass
    import dns.rdatatype
    import dns.zone

    cuts: list[tuple[dns.name.Name, dns.name.Name]] = []
    for z in cfg.zones:
        path = cfg.resolve_path(z.file) if z.file is not None else None
        if path is None or not path.is_file():
            continue
        origin = dns.name.from_text(z.origin)
        try:
            zone = dns.zone.from_file(str(path), origin=origin, relativize=False, check_origin=False)
        except Exception:  # dnspython raises many types for a bad file
            continue
        cuts += [(origin, n) for n, node in zone.nodes.items()
                 if n != origin and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS) is not None]
    problems: list[str] = []
    origins = [dns.name.from_text(z.origin) for z in cfg.zones]
    for i, svc in enumerate(cfg.services):
        name = dns.name.from_text(svc.name)
        home = max((o for o in origins if name.is_subdomain(o)), key=len, default=None)
        for origin, cut in cuts:
            if origin == home and name.is_subdomain(cut):
                problems.append(f"services[{i}].name: {svc.name} is at or below the delegation {cut} in zone "
                                f"{origin}; the child zone's servers answer there, so it cannot be steered")
    return problems


def _cross_check(cfg: Config) -> list[str]:
    problems: list[str] = []
    region_ids = [r.id for r in cfg.regions]
    site_ids = [s.id for s in cfg.sites]
    for what, ids in (("regions", region_ids), ("sites", site_ids), ("geos", [g.id for g in cfg.geos]),
                      ("services", [s.name for s in cfg.services]), ("zones", [z.origin for z in cfg.zones])):
        for dup in _duplicates(ids):
            problems.append(f"{what}: duplicate id {dup!r}")
    clash = set(region_ids) & set(site_ids)
    for c in sorted(clash):
        problems.append(f"sites: id {c!r} is also a region id; site and region ids share one namespace")
    regions = set(region_ids)
    sites = set(site_ids)
    for i, s in enumerate(cfg.sites):
        if s.region not in regions:
            problems.append(f"sites[{i}].region: unknown region {s.region!r}")

    defaults = [g.id for g in cfg.geos if g.default]
    if len(defaults) > 1:
        problems.append(f"geos: more than one default geo ({', '.join(defaults)})")
    elif not defaults and len(cfg.geos) > 1:
        problems.append("geos: no default geo; mark the one for unmatched clients with 'default: true'")
    prefix_owner: dict[str, str] = {}
    for i, g in enumerate(cfg.geos):
        for j, r in enumerate(g.prefer):
            if r not in regions:
                problems.append(f"geos[{i}].prefer[{j}]: unknown region {r!r}")
        for dup in _duplicates(list(g.prefer)):
            problems.append(f"geos[{i}].prefer: region {dup!r} listed twice")
        for j, site_id in enumerate(g.prefer_sites):
            if site_id not in sites:
                problems.append(f"geos[{i}].prefer_sites[{j}]: unknown site {site_id!r}")
        for j, p in enumerate(g.prefixes):
            if p in prefix_owner:
                problems.append(f"geos[{i}].prefixes[{j}]: {p} already belongs to geo {prefix_owner[p]!r}")
            prefix_owner[p] = g.id
    if cfg.geos and sum(g.demand for g in cfg.geos) <= 0:
        problems.append("geos: every demand share is 0; give at least one geo a positive demand")

    zone_names = [dns.name.from_text(z.origin) for z in cfg.zones]
    for i, svc in enumerate(cfg.services):
        name = dns.name.from_text(svc.name)
        if not any(name.is_subdomain(z) for z in zone_names):
            problems.append(f"services[{i}].name: {svc.name} is outside every configured zone")
        allowed = regions | (sites if svc.targets == "sites" else set())
        for target, answer in svc.answers.items():
            if target not in allowed:
                kind = "region or site" if svc.targets == "sites" else "region"
                problems.append(f"services[{i}].answers.{target}: unknown {kind} {target!r}")
            if answer.is_empty():
                problems.append(f"services[{i}].answers.{target}: no A, AAAA or CNAME given")
            if answer.CNAME and (answer.A or answer.AAAA):
                problems.append(f"services[{i}].answers.{target}: CNAME cannot stand beside A/AAAA")
        if not svc.answers:
            problems.append(f"services[{i}].answers: empty; a service needs answers for at least one target")
        for g in cfg.geos:
            reachable = [r for r in g.prefer if r in svc.answers]
            if svc.targets == "sites":
                reachable += [s for s in g.prefer_sites if s in svc.answers]
            if not reachable and svc.answers:
                problems.append(
                    f"services[{i}].answers: geo {g.id!r} prefers none of the targets this service answers for"
                )
    for i, z in enumerate(cfg.zones):
        if z.file is not None and not cfg.resolve_path(z.file).is_file():
            problems.append(f"zones[{i}].file: {cfg.resolve_path(z.file)} does not exist")
    problems += _services_below_delegations(cfg)
    problems += geo_code_problems(cfg)
    problems += _observer_problems(cfg)
    if cfg.auth is not None and not cfg.resolve_path(cfg.auth.tokens_file).is_file():
        problems.append(f"auth.tokens_file: {cfg.resolve_path(cfg.auth.tokens_file)} does not exist")
    return problems


def reporters_of(cfg: Config) -> dict[str, tuple[Observer, ...]]:
    """Each observed target's observers, in config order (a target missing here has only its local agent)."""
    out: dict[str, list[Observer]] = {}
    for o in cfg.observers:
        for t in dict.fromkeys(o.targets):
            out.setdefault(t, []).append(o)
    return {t: tuple(obs) for t, obs in out.items()}


def _observer_problems(cfg: Config) -> list[str]:
    """Observers name known targets and geos; a numeric quorum fits the reporters each observed target has."""
    problems: list[str] = []
    targets = {r.id for r in cfg.regions} | {s.id for s in cfg.sites}
    geos = {g.id for g in cfg.geos}
    for dup in _duplicates([o.id for o in cfg.observers]):
        problems.append(f"observers: duplicate id {dup!r}")
    for i, o in enumerate(cfg.observers):
        if o.id == "local":
            problems.append(f"observers[{i}].id: 'local' names a target's own agent; choose another id")
        for j, t in enumerate(o.targets):
            if t not in targets:
                problems.append(f"observers[{i}].targets[{j}]: unknown region or site {t!r}")
        for dup in _duplicates(list(o.targets)):
            problems.append(f"observers[{i}].targets: {dup!r} listed twice")
        for j, g in enumerate(o.geos):
            if g not in geos:
                problems.append(f"observers[{i}].geos[{j}]: unknown geo {g!r}")
    quorum = cfg.policy.health.quorum
    if isinstance(quorum, int):
        observed = {t: len(obs) + 1 for t, obs in reporters_of(cfg).items() if t in targets}
        short = sorted((n, t) for t, n in observed.items() if n < quorum)
        if not observed and quorum > 1:
            problems.append(f"policy.health.quorum: {quorum} is more than the 1 reporter every target has "
                            "(no observers are configured)")
        elif short:
            n, t = short[0]
            problems.append(f"policy.health.quorum: {quorum} is more than the {n} reporters configured for {t!r} "
                            f"(its agent and {n - 1} observer{'s' if n != 2 else ''})")
    return problems


def geo_codes(cfg: Config) -> list[geocodes.GeoCodes]:
    return [geocodes.GeoCodes(g.id, f"geos[{i}]", g.all_continents(), g.all_countries(), g.subdivisions)
            for i, g in enumerate(cfg.geos)]


def geo_code_problems(cfg: Config) -> list[str]:
    """GeoIP codes: usable (a database to place them, unless prefixes do), each in one geo when a database
    places clients by them (without one they are Route 53's only, where the first geo keeps a location and
    the plan notes the others, as before), not hiding a whole continent; the database file exists
    (whether it reads is the daemon's start: steering.geoip)."""
    problems = geocodes.shadowing(geo_codes(cfg))[0]
    if cfg.geoip is not None:
        problems = geocodes.duplicates(geo_codes(cfg)) + problems
    for i, g in enumerate(cfg.geos):
        if cfg.geoip is None and cfg.route53 is None and g.has_geo_codes() and not g.prefixes and not g.default:
            problems.append(f"geos[{i}]: countries, continents and subdivisions need geoip.database to place "
                            f"clients (or a route53 section, which places them in Route 53 only); add "
                            f"geoip.database, or prefixes")
        elif cfg.geoip is not None and not g.has_geo_codes() and not g.prefixes and not g.default:
            problems.append(f"geos[{i}]: no prefixes and no countries, continents or subdivisions: "
                            f"geo {g.id!r} would get no client")
    if cfg.geoip is not None and not cfg.resolve_path(cfg.geoip.database).is_file():
        problems.append(f"geoip.database: {cfg.resolve_path(cfg.geoip.database)} does not exist")
    return problems


def geo_code_warnings(cfg: Config) -> list[str]:
    """What ``steering config check`` says without refusing: countries that take every client of theirs
    from another geo's continent (geocodes.shadowing), and, with a route53 section, geos only Route 53
    places and subdivisions it cannot publish."""
    warnings = geocodes.shadowing(geo_codes(cfg))[1]
    if cfg.route53 is not None:
        for i, g in enumerate(cfg.geos):
            if cfg.geoip is None and g.has_geo_codes() and not g.prefixes and not g.default:
                warnings.append(f"geos[{i}]: placed by its codes in Route 53 only: without geoip.database, "
                                f"steering dns and Resolve give its clients the default geo")
            for j, code in enumerate(g.subdivisions):
                if geocodes.subdivision_country(code) != "US":
                    warnings.append(f"geos[{i}].subdivisions[{j}]: Route 53 takes US states only; {code} is "
                                    "not published there (its clients get the country, continent or default "
                                    "location)")
    return warnings


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per pydantic error: ``regions[0].capacity: Input should be greater than 0``."""
    lines = []
    errors = exc.errors()
    # pydantic adds "should have at least 1 item after validation, not 0" to a list whose every element it
    # refused: the elements' own errors say what is wrong, and the list is not empty in the file.
    refused = {loc[:i] for err in errors for loc in [err["loc"]] for i in range(1, len(loc))
                if isinstance(loc[i], int)}
    for err in errors:
        if err["type"] == "too_short" and tuple(err["loc"]) in refused:
            continue
        path = ""
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += ("." if path else "") + str(part)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{path or '(top level)'}: {msg}")
    return lines


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, turning every failure into a one-line ConfigError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(p), [f"{where}invalid YAML: {problem}"]) from None


M = TypeVar("M", bound=BaseModel)


def parse_file_model(model: type[M], data: Any, source: str, base_dir: str | Path,
                     cross_check: Callable[[M], list[str]],
                     tidy: Callable[[list[str]], list[str]] = lambda lines: lines) -> M:
    """Validate a YAML document into ``model`` (shape, then ``cross_check``); every problem one line.

    Shared by every file format of ours (the config, the agent's file) so they report alike.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of fields"])
    try:
        obj = model.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        shape = tidy(format_validation_error(exc))
        raise ConfigError(source, shape + _cross_problems_despite(model, data, base_dir, exc, cross_check)) from None
    problems = cross_check(obj)
    if problems:
        raise ConfigError(source, problems)
    return obj


def _cross_problems_despite(model: type[M], data: dict[str, Any], base_dir: str | Path, exc: ValidationError,
                            cross_check: Callable[[M], list[str]]) -> list[str]:
    """The cross-reference problems of the file beside its shape errors, in the same pass: checked on what
    validates once the refused parts are cut out, less those a cut may have caused (steering.salvage)."""
    from steering.salvage import salvage

    def validate(d: dict[str, Any]) -> M:
        return model.model_validate({**d, "base_dir": str(base_dir)})

    def locations(e: Exception) -> list[tuple[Any, ...]] | None:
        return [tuple(err["loc"]) for err in e.errors()] if isinstance(e, ValidationError) else None

    try:
        found = salvage(data, [tuple(err["loc"]) for err in exc.errors()], validate, locations)
        if found is None:
            return []
        obj, cut = found
        return [p for p in map(cut.problem_to_file, cross_check(obj)) if not cut.related(p)]
    except Exception:  # best effort: the shape errors are reported whatever a partial object does here
        return []


def parse_config(data: Any, source: str = "<config>", base_dir: str | Path = ".") -> Config:
    return parse_file_model(Config, data, source, base_dir, _cross_check)


def load_config(path: str | Path) -> Config:
    p = Path(path)
    return parse_config(load_yaml(p), str(p), p.resolve().parent)
