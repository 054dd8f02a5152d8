"""Every replica follows ``routing/current``: the API answers from it, Watch streams it."""

from __future__ import annotations

import asyncio
import time

from steering import logs
from steering.controller import metrics
from steering.ports import TableFeed
from steering.table import RoutingTable

log = logs.get("steering.tableview")


class TableView:
    def __init__(self, store: TableFeed) -> None:
        self.store = store
        self.current: RoutingTable | None = None
        self.received_at: float = 0.0
        # set (and replaced) at each new table: waiters hold the event they saw, so none misses a change.
        # An Event, not a Condition: a Condition's wait cancelled by wait_for's timeout could leave its lock
        # released under ``async with`` ("Lock is not acquired" at teardown).
        self._changed = asyncio.Event()

    async def run(self) -> None:
        async for table in self.store.watch_table():
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
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_newer(self, version: int, timeout: float | None = None) -> RoutingTable | None:
        """The first table newer than ``version`` (None on timeout)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.current is None or self.current.version <= version:
            changed = self._changed
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                return None
        return self.current
