"""The records we want in Route 53, built from the config and a routing table (pure).

Model, per service ``S`` and record type ``T`` in (A, AAAA) — see README.md:

* ``<geo>.S`` T: a *weighted* record set, one record per target of the geo
  (SetIdentifier = target id, Weight = table weight scaled to 0–255, values =
  the target's answers of type T, TTL = the service's).
* ``S`` T: *geolocation* records, one per location (continent, country, US
  state, or the default location ``*``), each an alias to ``<geo>.S`` T.
* ``_steering.<name>`` TXT: the ownership marker of every name we write; it
  lists the types at that name we own (``heritage=steering,owner=<id>,type=A``).
  A separate name keeps the marker off the steered names, so it never clashes
  with users' own TXT records or with Route 53's rules for alias and
  failover record sets (external-dns #1420, #2362).

Locations of a geo: each of its ``subdivisions`` (US states: the only ones
Route 53 takes; others are noted and left out), ``countries`` and
``continents`` (with the older single ``country``/``continent``), or ``*``
when it names none. Route 53 answers from the most specific location that
holds the client, as our GeoIP map does (docs/geoip.md, "Route 53").
When several geos claim one location, the first in config order wins, except
that the config's default geo wins ``*``; the losers get no geolocation record
(reported in ``Desired.notes``). If no geo maps to ``*``, the default geo is
published at ``*`` as well, so Route 53 never answers "nowhere".
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steering.config import TOTAL_WEIGHT, Config, Geo, geo_codes
from steering.geocodes import US_STATES, shadowing
from steering.table import RoutingTable

MAX_WEIGHT = 255
MARKER_PREFIX = "_steering."
MARKER_TTL = 300
HERITAGE = "steering"
STEERED_TYPES = ("A", "AAAA")
CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})

Geolocation = tuple[str, str]  # ("continent", "NA") | ("country", "US") | ("subdivision", "US-CA") | ("country", "*")
Alias = tuple[str, str, bool]  # (hosted zone id, DNS name, evaluate target health)


def scale_weight(weight: int, total: int = TOTAL_WEIGHT) -> int:
    """Table weight (0..total) to Route 53's 0..255; a non-zero weight never rounds to 0."""
    if weight <= 0:
        return 0
    return max(1, min(MAX_WEIGHT, math.floor(weight * MAX_WEIGHT / total + 0.5)))


def normalise_name(name: str) -> str:
    name = name.lower()
    # Route 53 returns some characters octal-escaped (``*`` as ``\\052``).
    if "\\" in name:
        name = _unescape(name)
    return name if name.endswith(".") else name + "."


def _unescape(name: str) -> str:
    out, i = [], 0
    while i < len(name):
        if name[i] == "\\" and name[i + 1:i + 4].isdigit():
            out.append(chr(int(name[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def bare_zone_id(zone_id: str) -> str:
    return zone_id.rsplit("/", 1)[-1]


@dataclass(frozen=True, order=True)
class RecordKey:
    """What identifies a record set in Route 53: name, type and SetIdentifier ("" for none)."""

    name: str
    type: str
    set_id: str = ""

    def __str__(self) -> str:
        return f"{self.name} {self.type}" + (f" [{self.set_id}]" if self.set_id else "")


@dataclass(frozen=True)
class Record:
    """One Route 53 resource record set, in a normal form that compares equal when Route 53 would."""

    name: str
    type: str
    set_id: str = ""
    ttl: int | None = None
    values: tuple[str, ...] = ()
    weight: int | None = None
    geo: Geolocation | None = None
    alias: Alias | None = None
    extra: str = ""  # any other attribute (HealthCheckId, Failover, ...), canonical JSON, so drift shows
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> RecordKey:
        return RecordKey(self.name, self.type, self.set_id)

    @property
    def policy(self) -> str:
        """The routing policy; Route 53 cannot change it in place (an UPSERT across policies fails)."""
        if self.weight is not None:
            return "weighted"
        if self.geo is not None:
            return "geolocation"
        if self.extra:
            return "other"
        return "simple"

    def value_chars(self) -> int:
        return sum(len(v) for v in self.values)

    def to_api(self) -> dict[str, Any]:
        """The ResourceRecordSet as boto3 wants it; a record read from Route 53 is sent back verbatim."""
        if self.raw is not None:
            return dict(self.raw)
        out: dict[str, Any] = {"Name": self.name, "Type": self.type}
        if self.set_id:
            out["SetIdentifier"] = self.set_id
        if self.weight is not None:
            out["Weight"] = self.weight
        if self.geo is not None:
            out["GeoLocation"] = _api_location(self.geo)
        if self.alias is not None:
            zone, dns_name, evaluate = self.alias
            out["AliasTarget"] = {"HostedZoneId": zone, "DNSName": dns_name, "EvaluateTargetHealth": evaluate}
        else:
            out["TTL"] = self.ttl
            out["ResourceRecords"] = [{"Value": v} for v in self.values]
        return out

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Record:
        known = {"Name", "Type", "SetIdentifier", "TTL", "ResourceRecords", "Weight", "GeoLocation", "AliasTarget"}
        rtype = str(data["Type"])
        values = tuple(sorted(_normalise_value(rtype, str(rr["Value"])) for rr in data.get("ResourceRecords") or ()))
        geo: Geolocation | None = None
        extra = {k: v for k, v in data.items() if k not in known}
        loc = data.get("GeoLocation")
        if loc:
            if "ContinentCode" in loc and len(loc) == 1:
                geo = ("continent", str(loc["ContinentCode"]))
            elif "CountryCode" in loc and len(loc) == 1:
                geo = ("country", str(loc["CountryCode"]))
            elif set(loc) == {"CountryCode", "SubdivisionCode"}:
                geo = ("subdivision", f"{loc['CountryCode']}-{loc['SubdivisionCode']}")
            else:
                extra["GeoLocation"] = loc  # not a shape we write: keep it visible as drift
        alias: Alias | None = None
        at = data.get("AliasTarget")
        if at:
            alias = (bare_zone_id(str(at["HostedZoneId"])), normalise_name(str(at["DNSName"])),
                     bool(at.get("EvaluateTargetHealth", False)))
        ttl = data.get("TTL")
        weight = data.get("Weight")
        return cls(name=normalise_name(str(data["Name"])), type=rtype, set_id=str(data.get("SetIdentifier") or ""),
                   ttl=None if ttl is None else int(ttl), values=values,
                   weight=None if weight is None else int(weight), geo=geo, alias=alias,
                   extra=json.dumps(extra, sort_keys=True, default=str) if extra else "", raw=dict(data))


def _normalise_value(rtype: str, value: str) -> str:
    if rtype == "AAAA":
        try:
            return str(ipaddress.IPv6Address(value))
        except ValueError:
            return value
    return value


# ---- ownership markers


def marker_name(name: str) -> str:
    return MARKER_PREFIX + name


def marker_base(name: str) -> str | None:
    """The owned name a marker name stands for, or None if ``name`` is not a marker name."""
    return name[len(MARKER_PREFIX):] if name.startswith(MARKER_PREFIX) else None


def marker_record(name: str, owner: str, types: frozenset[str]) -> Record:
    values = tuple(sorted(f'"heritage={HERITAGE},owner={owner},type={t}"' for t in types))
    return Record(name=marker_name(name), type="TXT", ttl=MARKER_TTL, values=values)


@dataclass(frozen=True)
class MarkerClaim:
    owner: str | None  # None: a TXT record there that is no steering marker at all
    types: frozenset[str]


def parse_marker(record: Record) -> MarkerClaim:
    """Who claims the name, and which types; anything unparseable is not ours."""
    owners: set[str] = set()
    types: set[str] = set()
    for value in record.values:
        fields = dict(part.split("=", 1) for part in value.strip('"').split(",") if "=" in part)
        if fields.get("heritage") != HERITAGE or "owner" not in fields or "type" not in fields:
            return MarkerClaim(None, frozenset())
        owners.add(fields["owner"])
        types.add(fields["type"])
    if len(owners) != 1 or record.set_id or record.extra:
        return MarkerClaim(None, frozenset())
    return MarkerClaim(owners.pop(), frozenset(types))


# ---- the desired state


@dataclass(frozen=True)
class Desired:
    """Records we want, by key, with the service each belongs to (for batching) and notes for operators."""

    records: Mapping[RecordKey, Record]
    service_of: Mapping[RecordKey, str]
    notes: tuple[str, ...] = ()


def _api_location(loc: Geolocation) -> dict[str, str]:
    kind, code = loc
    if kind == "continent":
        return {"ContinentCode": code}
    if kind == "subdivision":
        country, _, sub = code.partition("-")
        return {"CountryCode": country, "SubdivisionCode": sub}
    return {"CountryCode": code}


def geo_locations(geo: Geo) -> tuple[list[Geolocation], list[str]]:
    """A geo's locations, most specific first (``*`` when it names none), and notes on codes Route 53
    cannot take (subdivisions outside the US)."""
    out: list[Geolocation] = []
    notes: list[str] = []
    for code in geo.subdivisions:
        country, _, sub = code.partition("-")
        if country == "US" and sub in US_STATES:
            out.append(("subdivision", code))
        else:
            notes.append(f"geo {geo.id}: subdivision {code} not published (Route 53 takes US states only)")
    out += [("country", c) for c in geo.all_countries()]
    out += [("continent", c) for c in geo.all_continents()]
    if not out and not notes:
        out.append(("country", "*"))
    return out, notes


def location_label(loc: Geolocation) -> str:
    """The SetIdentifier of a geolocation record: the location, so one location is one record."""
    kind, code = loc
    return "default" if code == "*" else f"{kind}-{code}"


def locations(config: Config) -> tuple[dict[Geolocation, str], list[str]]:
    """Location -> geo id, and notes on geos that lost their location to another geo."""
    default = config.default_geo.id
    chosen: dict[Geolocation, str] = {}
    notes: list[str] = []
    for g in config.geos:
        locs, skipped = geo_locations(g)
        notes += skipped
        for loc in locs:
            holder = chosen.get(loc)
            if holder is None:
                chosen[loc] = g.id
            elif loc[1] == "*" and g.id == default:
                notes.append(f"geo {holder}: location * goes to the default geo {g.id}; {holder} is not published")
                chosen[loc] = g.id
            else:
                notes.append(f"geo {g.id}: location {location_label(loc)} already taken by geo {holder}; "
                             "not published")
    if ("country", "*") not in chosen:
        chosen[("country", "*")] = default
    return chosen, notes


def desired_records(config: Config, table: RoutingTable, zone_id: str) -> Desired:
    """Every record the table calls for (markers are added by the planner, which knows ownership)."""
    zone = bare_zone_id(zone_id)
    chosen, notes = locations(config)
    notes += shadowing(geo_codes(config))[1]  # a country hiding another geo's continent: so in Route 53 too
    records: dict[RecordKey, Record] = {}
    service_of: dict[RecordKey, str] = {}

    def add(rec: Record, service: str) -> None:
        if rec.key in records:
            notes.append(f"{rec.key}: produced twice (a geo id clashes with a service name); kept the first")
            return
        records[rec.key] = rec
        service_of[rec.key] = service

    for svc in config.services:
        route = table.services.get(svc.name)
        if route is None:
            notes.append(f"service {svc.name}: not in the routing table; nothing published")
            continue
        for target, answer in svc.answers.items():
            if answer.CNAME:
                notes.append(f"service {svc.name}: target {target} answers with a CNAME; "
                             "only A/AAAA answers are published to Route 53")
        published: dict[str, set[str]] = {}  # geo -> types with a weighted set
        for geo_id in sorted({g for g in chosen.values()}):
            geo_route = route.geos.get(geo_id)
            if geo_route is None:
                notes.append(f"service {svc.name}: geo {geo_id} missing from the table; not published")
                continue
            set_name = normalise_name(f"{geo_id}.{svc.name}")
            for rtype in STEERED_TYPES:
                members = []
                for target, weight in geo_route.weights.items():
                    member = svc.answers.get(target)
                    values = tuple(sorted(getattr(member, rtype))) if member is not None else ()
                    if values:
                        members.append(Record(name=set_name, type=rtype, set_id=target, ttl=svc.ttl, values=values,
                                              weight=scale_weight(weight)))
                # Route 53 spreads an all-zero weighted set evenly: that would send traffic to
                # evacuated targets, so such a set is not published at all.
                if not members or all(m.weight == 0 for m in members):
                    continue
                published.setdefault(geo_id, set()).add(rtype)
                for m in members:
                    add(m, svc.name)
        for loc, geo_id in sorted(chosen.items()):
            for rtype in sorted(published.get(geo_id, ())):
                set_name = normalise_name(f"{geo_id}.{svc.name}")
                add(Record(name=svc.name, type=rtype, set_id=location_label(loc), geo=loc,
                           alias=(zone, set_name, False)), svc.name)
    return Desired(records=records, service_of=service_of, notes=tuple(notes))


# ---- validation: moto accepts what AWS rejects, so we check before sending


def validate(record: Record, zone_name: str | None = None) -> list[str]:
    """Problems Route 53 would reject this record for (empty when it is fine)."""
    problems: list[str] = []
    name = record.name
    if not name.endswith("."):
        problems.append("name is not absolute")
    if len(name) > 255:
        problems.append("name longer than 255 characters")
    if any(len(label) > 63 or not label for label in name.rstrip(".").split(".")):
        problems.append("a label is empty or longer than 63 characters")
    if zone_name and not (name == zone_name or name.endswith("." + zone_name)):
        problems.append(f"name outside the hosted zone {zone_name}")
    if record.type not in ("A", "AAAA", "TXT"):
        problems.append(f"type {record.type} is not one this sink writes")
    if (record.weight is not None or record.geo is not None) and not record.set_id:
        problems.append("weighted or geolocation record without SetIdentifier")
    if record.set_id and len(record.set_id) > 128:
        problems.append("SetIdentifier longer than 128 characters")
    if record.set_id and record.weight is None and record.geo is None:
        problems.append("SetIdentifier without a routing policy")
    if record.weight is not None and record.geo is not None:
        problems.append("both Weight and GeoLocation")
    if record.weight is not None and not 0 <= record.weight <= MAX_WEIGHT:
        problems.append(f"weight {record.weight} outside 0..{MAX_WEIGHT}")
    if record.geo is not None:
        kind, code = record.geo
        if kind == "continent" and code not in CONTINENTS:
            problems.append(f"unknown continent code {code!r}")
        if kind == "country" and not (code == "*" or (len(code) == 2 and code.isalpha() and code.isupper())):
            problems.append(f"bad country code {code!r}")
        if kind == "subdivision" and not (code[:3] == "US-" and code[3:] in US_STATES):
            problems.append(f"subdivision {code!r} is not a US state (the only subdivisions Route 53 takes)")
    if record.alias is not None:
        if record.ttl is not None or record.values:
            problems.append("alias record with TTL or values")
        zone, target, _ = record.alias
        if not zone or not target.endswith("."):
            problems.append("alias target needs a hosted zone id and an absolute DNS name")
    else:
        if record.ttl is None or not 0 <= record.ttl <= 2147483647:
            problems.append(f"TTL {record.ttl} outside 0..2147483647")
        if not record.values:
            problems.append("no values")
        for v in record.values:
            problems.extend(_value_problems(record.type, v))
    return problems


def _value_problems(rtype: str, value: str) -> list[str]:
    try:
        if rtype == "A":
            ipaddress.IPv4Address(value)
        elif rtype == "AAAA":
            ipaddress.IPv6Address(value)
    except ValueError:
        return [f"{value!r} is not a valid {rtype} value"]
    if rtype == "TXT":
        if not (value.startswith('"') and value.endswith('"') and len(value) >= 2):
            return [f"TXT value {value!r} is not quoted"]
        if len(value) - 2 > 255:
            return ["TXT string longer than 255 characters"]
    return []
