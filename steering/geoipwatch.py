"""Keeping a GeoIP map current: the database file looked at every few seconds, recompiled when it changed.

``GeoIpReloader.run`` polls the file's (mtime, size, inode) every
``geoip.reload_seconds``. A new stamp is compiled once it has held for one
poll (a file still being written is not read half-way), in a thread
(``prepare``: ``steering.geoip.load`` and whatever the caller builds from the
map, off the event loop and off the query path), and the result goes to
``apply`` on the loop, which swaps it in with reference assignments. A file
that is gone, unreadable or not a database is one warning
(``geoip.reload.failed``, naming ``geoip.database``) and the map in use
stays; the same broken stamp is not compiled again, a newer one is.

``GeoIpState`` is what status and metrics read (``GeoIpCollector``:
``steering_geoip_build_timestamp_seconds``, ``steering_geoip_reloads_total
{result}``, ``steering_geoip_networks``, ``steering_geoip_prefixes``), one per
process that places clients: the DNS server (each worker) and the
controller (``RoutingService.Resolve``). Used by ``dnsserver.server``,
``steering.controller.server`` and ``steering.client``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from steering import logs
from steering.config import Config, Geo
from steering.geoip import GeoIpError, GeoIpMap, file_stamp, load
from steering.topology import Topology

log = logs.get(__name__)

T = TypeVar("T")
RESULTS = ("ok", "error")


@dataclass
class GeoIpState:
    """The database a process places clients with, and how its reloads went (status, metrics)."""

    map: GeoIpMap | None = None
    reloads: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reloads": dict(self.reloads), "last_error": self.last_error}
        if self.map is not None:
            out.update(self.map.info.to_dict(), prefixes=self.map.count())
        return out


def load_for(config: Config) -> GeoIpMap | None:
    """The configured database compiled for the config's geos (None without ``geoip``); GeoIpError if not."""
    if config.geoip is None:
        return None
    return load(config.resolve_path(config.geoip.database), config.geos, config.default_geo.id)


class GeoIpReloader(Generic[T]):
    """Polls one database file and swaps in its recompiled map (see the module doc)."""

    def __init__(self, path: Path, geos: list[Geo] | tuple[Geo, ...], default_id: str, state: GeoIpState,
                 prepare: Callable[[GeoIpMap], T], apply: Callable[[T], None], *, interval: float,
                 component: str, keep_prefixes: bool = False) -> None:
        self.path = path
        self.geos = tuple(geos)
        self.default_id = default_id
        self.state = state
        self.prepare = prepare
        self.apply = apply
        self.interval = interval
        self.component = component
        self.keep_prefixes = keep_prefixes  # else the state keeps a summary: what apply built holds them
        self._pending: tuple[int, int, int] | None = None  # a new stamp seen once: compiled when it holds
        self._failed: tuple[int, int, int] | None = None  # a stamp that did not compile: not tried again
        self._unreadable = ""  # the last stat error said, so a missing file is one warning, not one a poll

    @classmethod
    def for_config(cls, config: Config, state: GeoIpState, prepare: Callable[[GeoIpMap], T],
                   apply: Callable[[T], None], component: str) -> GeoIpReloader[T]:
        assert config.geoip is not None
        return cls(config.resolve_path(config.geoip.database), config.geos, config.default_geo.id, state,
                   prepare, apply, interval=config.geoip.reload_seconds, component=component)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not end the polling: the map in use stays
                self._fail(f"{type(exc).__name__}: {exc}")

    async def poll(self) -> bool:
        """One look at the file; True when a new map was swapped in."""
        try:
            stamp = file_stamp(self.path)
        except OSError as exc:
            error = f"geoip.database: {self.path}: {exc.strerror or exc}"
            if error != self._unreadable:
                self._unreadable = error
                self._fail(error)
            self._pending = None
            return False
        self._unreadable = ""
        current = self.state.map.info.stamp if self.state.map is not None else None
        if stamp in (current, self._failed):
            self._pending = None
            return False
        if stamp != self._pending:
            self._pending = stamp  # changed since the last look: wait for it to hold still
            return False
        self._pending = None
        try:
            built = await asyncio.to_thread(self._build)
        except GeoIpError as exc:
            self._failed = stamp
            self._fail(str(exc))
            return False
        geomap, prepared = built
        self.apply(prepared)
        previous = self.state.map
        self.state.map = geomap if self.keep_prefixes else geomap.summary()
        self.state.reloads["ok"] += 1
        self.state.last_error = ""
        log.info("geoip.reload.ok", component=self.component, path=str(self.path),
                 database_type=geomap.info.database_type, build_epoch=geomap.info.build_epoch,
                 previous_build_epoch=previous.info.build_epoch if previous is not None else None,
                 networks=geomap.info.networks, prefixes=geomap.count(),
                 compile_seconds=round(geomap.compile_seconds, 2))
        return True

    def _build(self) -> tuple[GeoIpMap, T]:
        geomap = load(self.path, self.geos, self.default_id)
        return geomap, self.prepare(geomap)

    def _fail(self, error: str) -> None:
        self.state.reloads["error"] += 1
        self.state.last_error = error
        kept = self.state.map.info.build_epoch if self.state.map is not None else None
        log.warning("geoip.reload.failed", component=self.component, error=error, kept_build_epoch=kept)


class GeoIpCollector(Collector):
    """The GeoIP families of one process, read from its ``GeoIpState`` at each scrape."""

    def __init__(self, state: GeoIpState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.state.map
        if m is not None:
            yield GaugeMetricFamily("steering_geoip_build_timestamp_seconds",
                                    "Build time of the GeoIP database in use (its metadata's build_epoch)",
                                    value=m.info.build_epoch)
            yield GaugeMetricFamily("steering_geoip_networks", "Networks in the GeoIP database in use",
                                    value=m.info.networks)
            yield GaugeMetricFamily("steering_geoip_prefixes", "Prefixes the GeoIP database compiled to",
                                    value=m.count())
        reloads = CounterMetricFamily("steering_geoip_reloads", "GeoIP database reloads, by result",
                                      labels=["result"])
        for result in RESULTS:
            reloads.add_metric([result], self.state.reloads[result])
        yield reloads


class Placement:
    """The topology a controller answers ``Resolve`` with, placing clients with the GeoIP map in use; a
    reload swaps in a new topology (built in the reloader's thread), so a call holds one consistent view."""

    def __init__(self, config: Config, geoip: GeoIpMap | None = None) -> None:
        self.config = config
        geoip = geoip if geoip is not None else load_for(config)
        self.topology = Topology.from_config(config, geoip)
        self.state = GeoIpState(geoip.summary() if geoip is not None else None)

    def reloader(self) -> GeoIpReloader[Topology]:
        def swap(topology: Topology) -> None:
            self.topology = topology

        return GeoIpReloader.for_config(self.config, self.state, self.topology.with_geoip, swap, "controller")
