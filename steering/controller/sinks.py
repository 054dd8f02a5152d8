"""The leader's sinks that live in the controller: the table in etcd, and sharing a sink's status.

``TableSink`` is the first sink the leader walks: ``routing/current``, written in
the transaction fenced by the leadership key (docs/architecture.md §4). A write
etcd cannot take now is retried while the leadership holds; a write the fence
refuses means another replica leads, and ends the term. The Route 53 sink
(``steering.route53.Route53Sink``) is the second; it shares each sync's result
through etcd (``share_status``) so every replica's ``Status`` can show it
(``read_status``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from steering import logs
from steering.controller import metrics
from steering.ports import SinkStatus, StatusReader, StatusWriter, TablePublisher
from steering.table import RoutingTable

if TYPE_CHECKING:
    from steering.store.election import Leadership

log = logs.get(__name__)


class TableSink:
    """The routing table in etcd, fenced by the leadership (a ``steering.ports.Sink``)."""

    name = "etcd"

    def __init__(self, store: TablePublisher, replica: str, *, retry_max_seconds: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.replica = replica
        self.retry_max_seconds = retry_max_seconds  # etcd.reconnect_max_seconds: the cap of every retry loop
        self._clock = clock
        self._last: SinkStatus | None = None

    async def serve(self, current: RoutingTable | None, stop: asyncio.Event) -> None:
        """Nothing to do between tables: etcd keeps what was written."""

    async def publish(self, table: RoutingTable, leadership: Leadership) -> bool:
        started, t0 = self._clock(), time.monotonic()
        backoff = 0.1
        while not leadership.lost.is_set():
            try:
                ok = await self.store.publish_table(table, leadership)
            except Exception as exc:
                metrics.ETCD_ERRORS.labels(kind="table").inc()
                log.warning("publish failed; retrying", version=table.version, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry_max_seconds)
                continue
            if not ok:
                log.warning("publish refused: no longer the leader", version=table.version, replica=self.replica)
                return False
            metrics.ETCD_WRITES.labels(kind="table").inc()
            metrics.ETCD_REQUESTS.labels(kind="table").inc()
            metrics.TABLES_PUBLISHED.inc()
            self._last = SinkStatus(sink=self.name, started_at=started, duration=time.monotonic() - t0,
                                    table_version=table.version, change_count=1, error=None)
            for note in table.notes:
                log.error("routing alarm", version=table.version, note=note)
            log.info("published routing table", version=table.version, fail_open=table.fail_open,
                     converging=table.converging,
                     serving=",".join(r for r, st in table.regions.items() if st.serving))
            return True
        return False

    def status(self) -> SinkStatus | None:
        return self._last


def share_status(store: StatusWriter) -> Callable[[SinkStatus], Awaitable[None]]:
    """A sink's ``on_status``: store each status under ``status/<sink>`` for every replica's ``Status``."""

    async def share(status: SinkStatus) -> None:
        await store.put_status(status.sink, status.to_json())

    return share


async def read_status(store: StatusReader, sink: str) -> SinkStatus | None:
    """The status the leader shared for ``sink``; None when there is none or it is unreadable (logged)."""
    blob = await store.get_status(sink)
    if not blob:
        return None
    try:
        return SinkStatus.from_json(sink, blob)
    except ValueError as exc:
        log.warning("sink status unreadable", sink=sink, error=str(exc))
        return None
