"""Helpers for tests and the benchmark: a config on disk, hand-made tables, a server on a free port."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from dnsserver.server import DnsServer
from steering.config import Config, load_config
from steering.table import GeoRoute, RoutingTable, ServiceRoute

EXAMPLES = Path(__file__).resolve().parent.parent / "deploy" / "examples"


def write_config(directory: Path, dns: Mapping[str, Any] | None = None, extra_zone: str = "",
                 etcd_endpoints: list[str] | None = None, extra_zones: list[dict[str, Any]] | None = None) -> Path:
    """The example config with its zone file copied into ``directory``; ``extra_zone`` lines appended."""
    directory.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((EXAMPLES / "steering.yaml").read_text())
    data["dns"] = {"listen": ["127.0.0.1:0"], "state_file": str(directory / "dns-table.json"), **(dns or {})}
    if etcd_endpoints is not None:
        data["etcd"] = {"endpoints": etcd_endpoints, "prefix": "/steering/v1", "timeout_seconds": 2.0}
    data["zones"] = list(data["zones"]) + list(extra_zones or [])
    shutil.copy(EXAMPLES / "example.test.zone", directory / "example.test.zone")
    if extra_zone:
        with open(directory / "example.test.zone", "a") as f:
            f.write("\n" + extra_zone + "\n")
    path = directory / "steering.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(directory: Path, **kw: Any) -> Config:
    return load_config(write_config(directory, **kw))


def table_with(cfg: Config, version: int, weights: Mapping[str, Mapping[str, Mapping[str, int]]],
               generated_at: float = 1_000_000.0) -> RoutingTable:
    """A table from ``{service: {geo: {target: weight}}}``; geos not given get their first preference."""
    services = {}
    for svc in cfg.services:
        geos = {}
        for geo in cfg.geos:
            w = dict(weights.get(svc.name, {}).get(geo.id, {}))
            if not w:
                first = next(t for t in (*geo.prefer, *geo.prefer_sites) if t in svc.answers)
                w = {first: 1000}
            geos[geo.id] = GeoRoute(weights=w, reasons={t: "test" for t in w})
        services[svc.name] = ServiceRoute(targets=svc.targets, geos=geos)
    return RoutingTable(version=version, parent_version=version - 1, generated_at=generated_at,
                        services=services, regions={}, topology=cfg.fingerprint())


@contextlib.asynccontextmanager
async def serving(cfg: Config, table: RoutingTable | None = None,
                  state_file: str | None = None) -> AsyncIterator[tuple[DnsServer, int]]:
    server = DnsServer(cfg, table, state_file=state_file)
    await server.start(["127.0.0.1:0"])
    try:
        yield server, server.addresses[0][1]
    finally:
        await server.close()
