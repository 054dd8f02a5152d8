"""Geographic codes a geo may name, checked here: continents, ISO 3166-1 alpha-2 countries, subdivisions.

Pure data and checks, no I/O (docs/geoip.md). ``geos[].continents`` take the
seven codes GeoIP databases and Route 53 share; ``geos[].countries`` take
ISO 3166-1 alpha-2 codes (the 249 assigned ones, and ``XK`` for Kosovo,
which MaxMind, DB-IP and Route 53 use); ``geos[].subdivisions`` take ISO
3166-2 codes, ``CC-SUB`` (``US-CA``, ``GB-ENG``, ``DE-BY``), checked for
shape and a known country (the US ones against the list of states, since
those are what Route 53 can publish).

Each country's continent follows GeoNames, as MaxMind and DB-IP do (Turkey
and the Caucasus in Asia, Russia in Europe, Egypt in Africa): it fills in
the continent of a database record that names only a country (IPinfo's
country-only layouts) and lets ``shadowing`` see which countries a
continent holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONTINENTS: Mapping[str, str] = {
    "AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe", "NA": "North America",
    "OC": "Oceania", "SA": "South America",
}

_BY_CONTINENT = {
    "AF": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML MR "
          "MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
    "AN": "AQ BV GS HM TF",
    "AS": "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA LB LK MM MN "
          "MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
    "EU": "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU "
          "LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
    "NA": "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX NI PA PM "
          "PR SV SX TC TT US VC VG VI",
    "OC": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
    "SA": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
}

COUNTRY_CONTINENT: Mapping[str, str] = {c: k for k, codes in _BY_CONTINENT.items() for c in codes.split()}
"""ISO 3166-1 alpha-2 (and XK) -> continent code."""

_US = ("AK AL AR AZ CA CO CT DC DE FL GA HI IA ID IL IN KS KY LA MA MD ME MI MN MO MS MT NC ND NE NH NJ NM NV NY "
       "OH OK OR PA RI SC SD TN TX UT VA VT WA WI WV WY")
US_STATES = frozenset(_US.split())
"""The US subdivisions Route 53 geolocation takes (its only subdivisions): the states and DC."""

_SUBDIVISION = re.compile(r"^([A-Z]{2})-([A-Z0-9]{1,3})$")


def check_continent(code: str) -> str:
    """The code, or ValueError naming the seven that exist."""
    if code not in CONTINENTS:
        raise ValueError(f"{code!r} is not a continent code ({', '.join(CONTINENTS)})")
    return code


def check_country(code: str) -> str:
    """The code, or ValueError: not an ISO 3166-1 alpha-2 country code."""
    if code not in COUNTRY_CONTINENT:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def check_subdivision(code: str) -> str:
    """``CC-SUB`` with CC a known country (and SUB a state for US), or ValueError."""
    m = _SUBDIVISION.match(code)
    if m is None:
        raise ValueError(f"{code!r} is not an ISO 3166-2 subdivision code (country-subdivision, e.g. US-CA)")
    country, sub = m.groups()
    if country not in COUNTRY_CONTINENT:
        raise ValueError(f"{code!r}: {country!r} is not an ISO 3166-1 alpha-2 country code")
    if country == "US" and sub not in US_STATES:
        raise ValueError(f"{code!r} is not a US state (US-CA, US-NY, ... or US-DC)")
    return code


def subdivision_country(code: str) -> str:
    return code.split("-", 1)[0]


# ---------------------------------------------------------------- codes shared or hidden between geos


@dataclass(frozen=True)
class GeoCodes:
    """One geo's codes, as the checks below need them (``path`` is the geo's place in the file)."""

    id: str
    path: str
    continents: tuple[str, ...]
    countries: tuple[str, ...]
    subdivisions: tuple[str, ...]


def duplicates(geos: Sequence[GeoCodes]) -> list[str]:
    """One line per code listed by two geos: a client can be in one geo only."""
    problems: list[str] = []
    for field in ("continents", "countries", "subdivisions"):
        owner: dict[str, str] = {}
        for g in geos:
            for j, code in enumerate(getattr(g, field)):
                if code in owner and owner[code] != g.id:
                    problems.append(f"{g.path}.{field}[{j}]: {code} already belongs to geo {owner[code]!r}")
                owner.setdefault(code, g.id)
    return problems


def shadowing(geos: Sequence[GeoCodes]) -> tuple[list[str], list[str]]:
    """(problems, warnings) about more specific codes of one geo inside broader codes of another.

    The most specific location wins, in our GeoIP map and in Route 53 alike (subdivision, then country,
    then continent), so a geo's country inside another geo's continent takes that whole country from it:
    the trap of ``country: US`` beside ``continent: NA``, where the continent's geo gets no US client.
    A warning for each such country (it is also how a country is carved out on purpose); a problem when
    the broader geo is left with nothing: every country of its continents taken by other geos."""
    problems: list[str] = []
    warnings: list[str] = []
    country_owner = {c: g for g in geos for c in g.countries}
    for g in geos:
        for j, code in enumerate(g.countries):
            for other in geos:
                if other.id != g.id and COUNTRY_CONTINENT.get(code) in other.continents:
                    warnings.append(
                        f"{g.path}.countries[{j}]: {code} takes every {code} client from geo {other.id!r} "
                        f"(continent {COUNTRY_CONTINENT[code]}): the most specific location wins, here and in "
                        f"Route 53; to split {code} between them, list subdivisions ({code}-...) instead")
        for j, code in enumerate(g.subdivisions):
            owner = country_owner.get(subdivision_country(code))
            if owner is not None and owner.id != g.id:
                warnings.append(f"{g.path}.subdivisions[{j}]: {code} is taken out of geo {owner.id!r} "
                                f"(country {subdivision_country(code)}): the most specific location wins")
        for j, cont in enumerate(g.continents):
            left = [c for c, k in COUNTRY_CONTINENT.items() if k == cont and country_owner.get(c, g).id == g.id]
            if not left:
                problems.append(f"{g.path}.continents[{j}]: every country of {cont} belongs to another geo's "
                                f"countries, so geo {g.id!r} gets no client from it")
    return problems, warnings
