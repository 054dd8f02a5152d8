"""For the store tests: an etcd section, table factories, and ``Follower`` (an async iterator read in a task,
waited on for a matching item with a deadline). Moved here from tests/test_store_helpers.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from steering.config import TOTAL_WEIGHT, Etcd
from steering.table import GeoRoute, RoutingTable, ServiceRoute, TargetState

T = TypeVar("T")


def etcd_cfg(endpoints: list[str], prefix: str = "/steering/test", timeout: float = 5.0) -> Etcd:
    return Etcd(endpoints=tuple(endpoints), prefix=prefix, timeout_seconds=timeout)


def make_table(version: int, n_services: int = 2, n_geos: int = 3, n_regions: int = 3, n_sites: int = 0,
               parent: int | None = None) -> RoutingTable:
    regions = [f"region-{r}" for r in range(n_regions)]
    services = {}
    for s in range(n_services):
        geos = {}
        for g in range(n_geos):
            home = regions[(g + s + version) % n_regions]
            weights = {r: 0 for r in regions}
            weights[home] = TOTAL_WEIGHT - 100 * (n_regions - 1)
            for r in regions:
                if r != home:
                    weights[r] = 100
            reasons = {r: ("home" if r == home else f"spillover from {home}") for r in regions}
            geos[f"geo-{g:03d}"] = GeoRoute(weights=weights, reasons=reasons)
        services[f"svc{s}.example.com."] = ServiceRoute(targets="regions", geos=geos)
    states = {r: TargetState(kind="region", region=r, health="healthy", serving=True, capacity=1000.0,
                             load=100.0 + i, planned_load=120.0 + i, utilization=0.12) for i, r in enumerate(regions)}
    sites = {f"site-{i:05d}": TargetState(kind="site", region=regions[i % n_regions], health="healthy", serving=True,
                                          capacity=100.0, load=float(i % 97), planned_load=float(i % 89),
                                          utilization=(i % 89) / 100.0) for i in range(n_sites)}
    return RoutingTable(version=version, parent_version=version - 1 if parent is None else parent,
                        generated_at=1_700_000_000.0 + version, services=services, regions=states, sites=sites,
                        topology="abc123", leader="test")


class Follower:
    """Consume an async iterator in a task; tests then wait (with a deadline) for an item matching a predicate."""

    def __init__(self, it: AsyncIterator[T]) -> None:  # type: ignore[type-var]
        self.items: list[Any] = []
        self.cursor = 0  # wait_for looks only at items after the last one it matched
        self._it = it
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self._it:
            self.items.append(item)
            self._changed.set()

    async def wait_for(self, pred: Callable[[Any], bool], timeout: float = 10.0, what: str = "item") -> Any:
        end = time.monotonic() + timeout
        while True:
            while self.cursor < len(self.items):
                item = self.items[self.cursor]
                self.cursor += 1
                if pred(item):
                    return item
            if self.task.done():
                exc = self.task.exception()
                raise AssertionError(f"iterator ended before {what}: {exc!r}")
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what} not seen within {timeout}s; got {len(self.items)} items")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        aclose = getattr(self._it, "aclose", None)
        if aclose is not None:
            await aclose()
