"""Every replica follows ``routing/current``: the API answers from it, Watch streams it."""

from __future__ import annotations

import asyncio
import time

from steering import logs
from steering.controller import metrics
from steering.table import RoutingTable

log = logs.get("steering.tableview")


class TableView:
    def __init__(self, store: object) -> None:
        self.store = store
        self.current: RoutingTable | None = None
        self.received_at: float = 0.0
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        async for table in self.store.watch_table():  # type: ignore[attr-defined]
            self.update(table)

    def update(self, table: RoutingTable) -> None:
        if self.current is not None and table.version <= self.current.version:
            return
        self.current = table
        self.received_at = time.time()
        metrics.TABLE_VERSION.set(table.version)
        metrics.TABLE_GENERATED.set(table.generated_at)
        metrics.FAIL_OPEN.set(1 if table.fail_open else 0)
        for region, st in table.regions.items():
            metrics.REGION_SERVING.labels(region=region).set(1 if st.serving else 0)
            metrics.REGION_UTILIZATION.labels(region=region).set(st.utilization or 0.0)
            metrics.EVACUATIONS.labels(region=region).set(1 if st.evacuation else 0)
        log.info("routing table", version=table.version, fail_open=table.fail_open, converging=table.converging)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_newer(self, version: int, timeout: float | None = None) -> RoutingTable | None:
        """The first table newer than ``version`` (None on timeout)."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.current is not None and self.current.version > version),
                    timeout)
            except TimeoutError:
                return None
        return self.current
