"""Bad GeoIP input through the commands an operator runs: one line naming the field, exit 2, nothing
started; the Route 53 trap (a country beside another geo's continent) is a warning (docs/geoip.md)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from steering.config import ConfigError, geo_code_warnings, parse_config
from tests.support.dns_server import write_config
from tests.support.geoipdb import city, country, write_db
from tests.support.paths import EXAMPLE_CONFIG, STEERING


def steering(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STEERING, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def config(tmp_path: Path, change: Callable[[dict[str, Any]], None], db: bool = True) -> Path:
    """The example config, with a City database unless ``db`` is False, changed by ``change``."""
    path = write_config(tmp_path, dns={"listen": ["127.0.0.1:0"]})
    data = yaml.safe_load(path.read_text())
    if db:
        write_db(tmp_path / "city.mmdb", [("20.0.0.0/8", city("NA", "US", "CA"))])
        data["geoip"] = {"database": "city.mmdb"}
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


def geo(data: dict[str, Any], geo_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(g for g in data["geos"] if g["id"] == geo_id)
    return found


def refused(path: Path, *fields: str) -> str:
    """``steering config check`` exits 2 with one line per problem, naming each of ``fields``."""
    r = steering("config", "check", "--config", str(path))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln and "warning:" not in ln]
    for f in fields:
        assert any(f in ln for ln in lines), (f, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stderr


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown country", lambda d: geo(d, "europe").update(countries=["XX"]),
     "geos[2].countries: entry 0: 'XX' is not an ISO 3166-1 alpha-2 country code"),
    ("unknown country, older field", lambda d: geo(d, "europe").update(country="ZZ"),
     "geos[2].country: 'ZZ' is not an ISO 3166-1 alpha-2 country code"),
    ("unknown continent", lambda d: geo(d, "europe").update(continents=["EU", "XY"]),
     "geos[2].continents: entry 1: 'XY' is not a continent code"),
    ("not a US state", lambda d: geo(d, "na-west").update(subdivisions=["US-ZZ"]),
     "geos[1].subdivisions: entry 0: 'US-ZZ' is not a US state"),
    ("not a subdivision", lambda d: geo(d, "na-west").update(subdivisions=["California"]),
     "geos[1].subdivisions: entry 0: 'California' is not an ISO 3166-2 subdivision code"),
    ("a code in two geos (with a database)", lambda d: geo(d, "asia-pacific").update(continents=["AS", "EU"]),
     "geos[4].continents[1]: EU already belongs to geo 'europe'"),
    ("neither prefixes nor codes", lambda d: geo(d, "europe").update(prefixes=[], continents=[]),
     "geos[2]: no prefixes and no countries, continents or subdivisions"),
    ("a continent every country of which is taken",
     lambda d: d["geos"].insert(0, {"id": "antarctica", "continents": ["AN"], "demand": 0.01, "prefer": ["us-east-1"]})
     or geo(d, "world").update(countries=["AQ", "BV", "GS", "HM", "TF"]),
     "geos[0].continents[0]: every country of AN belongs to another geo's countries"),
    ("database missing", lambda d: d["geoip"].update(database="nowhere.mmdb"),
     "geoip.database: "),
]


@pytest.mark.parametrize("case,change,line", CASES, ids=[c[0] for c in CASES])
def test_config_check_refuses_with_one_line_naming_the_field(tmp_path: Path, case: str,
                                                             change: Callable[[dict[str, Any]], None],
                                                             line: str) -> None:
    out = refused(config(tmp_path, change), line)
    if case == "database missing":
        assert "nowhere.mmdb does not exist" in out


def test_codes_without_a_database_need_prefixes(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        geo(d, "europe")["prefixes"] = []

    refused(config(tmp_path, change, db=False), "geos[2]: countries, continents and subdivisions need geoip.database")
    # with a route53 section they place clients there: a warning that our DNS gives them the default geo
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    geo(data, "europe")["prefixes"] = []
    data["route53"] = {"hosted_zone_id": "ZTEST"}
    warnings = geo_code_warnings(parse_config(data, "t", EXAMPLE_CONFIG.parent))
    assert warnings == ["geos[2]: placed by its codes in Route 53 only: without geoip.database, steering dns and "
                        "Resolve give its clients the default geo"]
    # the example as shipped (prefixes beside its codes, no database) is fine: Route 53 uses the codes
    r = steering("config", "check", "--config", str(EXAMPLE_CONFIG))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("command", [["config", "check"], ["dns", "--no-etcd"], ["controller"]])
def test_an_unusable_database_stops_every_start_with_one_line(tmp_path: Path, command: list[str]) -> None:
    path = config(tmp_path, lambda d: None)
    (tmp_path / "city.mmdb").write_bytes(b"<html>not found</html>" * 50)
    r = steering(*command, "--config", str(path))
    assert r.returncode == 2, r.stderr
    problem = [ln for ln in r.stderr.splitlines() if "geoip.database" in ln]
    assert len(problem) == 1 and "city.mmdb: not a MaxMind DB file" in problem[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_country_database_cannot_serve_subdivisions(tmp_path: Path) -> None:
    path = config(tmp_path, lambda d: None)
    write_db(tmp_path / "city.mmdb", [("20.0.0.0/8", country("NA", "US"))], database_type="GeoLite2-Country")
    refused(path, "geoip.database: ", "GeoLite2-Country names no subdivisions, so geos[1].subdivisions")


def test_the_route53_trap_is_a_warning(tmp_path: Path) -> None:
    def trap(d: dict[str, Any]) -> None:  # the example as it was: na-west by country, na-east by continent
        geo(d, "na-west").pop("subdivisions")
        geo(d, "na-west")["country"] = "US"

    path = config(tmp_path, trap)
    r = steering("config", "check", "--config", str(path))
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if "warning:" in ln]
    assert len(warnings) == 1 and "geos[1].countries[0]: US takes every US client from geo 'na-east'" in warnings[0]


def test_subdivisions_route53_cannot_publish_are_a_warning() -> None:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    geo(data, "europe")["subdivisions"] = ["DE-BY"]
    data["route53"] = {"hosted_zone_id": "ZTEST"}
    cfg = parse_config(data, "t", EXAMPLE_CONFIG.parent)
    assert geo_code_warnings(cfg) == ["geos[2].subdivisions[0]: Route 53 takes US states only; DE-BY is not "
                                      "published there (its clients get the country, continent or default location)"]
    # without a database a code in two geos is Route 53's business only: the first keeps it, as before
    geo(data, "na-east")["subdivisions"] = ["US-CA"]
    parse_config(data, "t", EXAMPLE_CONFIG.parent)
    with pytest.raises(ConfigError, match=r"geos\[1\].subdivisions\[\d+\]: US-CA already belongs to geo 'na-east'"):
        parse_config({**data, "geoip": {"database": str(EXAMPLE_CONFIG)}}, "t", EXAMPLE_CONFIG.parent)
