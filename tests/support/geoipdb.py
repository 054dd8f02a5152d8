"""Small MaxMind DB files for tests, written with ``mmdb-writer`` in a temp dir: nothing downloads.

``write_db(path, [(cidr, record), ...])`` writes a database (IPv6 tree, IPv4 under ``::/96`` as MaxMind
lays it out, or an IPv4-only tree) atomically, as ``geoipupdate`` does: a temp file renamed over the old
one. Records in the layouts ``steering.geoip`` reads: ``city`` (MaxMind/DB-IP, with subdivisions),
``country`` (MaxMind/DB-IP Country), ``ipinfo_lite`` and ``ipinfo_country`` (IPinfo's flat codes).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPNetwork, IPSet  # type: ignore[import-untyped]


def city(continent: str, country: str, *subdivisions: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"continent": {"code": continent, "names": {"en": continent}},
                           "country": {"iso_code": country, "names": {"en": country}},
                           "registered_country": {"iso_code": country}}
    if subdivisions:
        rec["subdivisions"] = [{"iso_code": s, "names": {"en": s}} for s in subdivisions]
    return rec


def country(continent: str, code: str) -> dict[str, Any]:
    return {"continent": {"code": continent}, "country": {"iso_code": code}}


def ipinfo_lite(code: str, continent: str) -> dict[str, Any]:
    return {"country_code": code, "country": f"name of {code}", "continent_code": continent,
            "continent": f"name of {continent}", "asn": "AS64500"}


def ipinfo_country(code: str, continent: str) -> dict[str, Any]:
    return {"country": code, "country_name": f"name of {code}", "continent": continent,
            "continent_name": f"name of {continent}"}


class _Writer(MMDBWriter):
    """mmdb-writer stamps the time of writing; tests choose the build epoch to tell databases apart."""

    def __init__(self, build_epoch: int | None, **kw: Any) -> None:
        super().__init__(**kw)
        self._epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        if self._epoch is not None:
            meta["build_epoch"] = self._epoch
        return meta


def write_db(path: Path, networks: Iterable[tuple[str, dict[str, Any]]], *, database_type: str = "GeoLite2-City",
             ip_version: int = 6, build_epoch: int | None = None) -> Path:
    """The database at ``path`` (replaced atomically), networks inserted in the order given (a later one
    inside an earlier one splits it, as mmdb-writer does)."""
    writer = _Writer(build_epoch, ip_version=ip_version, ipv4_compatible=ip_version == 6,
                     database_type=database_type, languages=["en"], description="steering tests")
    for cidr, record in networks:
        net = ipaddress.ip_network(cidr)
        writer.insert_network(IPSet([IPNetwork(str(net))]), record)
    tmp = path.with_name(f".{path.name}.tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)
    return path
