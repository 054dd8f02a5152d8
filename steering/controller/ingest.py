"""``HealthService.Report``: every replica takes agent streams and keeps etcd up to date, on change only.

Reports are validated and folded into the replica's ``HealthView`` on the
stream's own task; the etcd writes happen on one writer task that keeps only
the latest pending value per site. So a slow or absent etcd never stalls an
agent's stream, a burst of reports for one site becomes one write, and a
failed write is retried with the newest value, not a stale one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc

from steering import logs
from steering.config import Config
from steering.controller import metrics
from steering.controller.healthmerge import record_key
from steering.controller.healthview import HealthView
from steering.controller.reports import ReportError, validate
from steering.model import TargetHealth
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.ingest")

_DELETE = None  # a pending value meaning "remove our record"


class Ingest(pb_grpc.HealthServiceServicer):
    def __init__(self, config: Config, store: object, replica: str, is_leader: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.replica = replica
        self.is_leader = is_leader
        self.clock = clock
        self.view = HealthView(band=config.policy.report_band, silence_seconds=config.policy.silence_seconds)
        self._pending: dict[str, TargetHealth | None] = {}
        # When this replica last heard from each site that went silent here (the view forgets them); one
        # entry per configured site at most. Lets Status say "silent, last heard at ..." on this replica.
        self.silenced_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._streams = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._writer(), name="health-writer"),
                       asyncio.create_task(self._silence(), name="health-silence")]

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Stop taking work, flush what is pending (bounded), stop the tasks."""
        self._closing = True
        deadline = time.monotonic() + flush_timeout
        while self._pending and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.02)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---------------------------------------------------------------- the RPC

    async def Report(self, request_iterator: AsyncIterator[pb.HealthReport],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ReportAck]:
        self._streams += 1
        metrics.CONNECTED_AGENTS.set(self._streams)
        peer = context.peer()
        site = ""
        try:
            async for report in request_iterator:
                metrics.REPORTS.inc()
                now = self.clock()
                try:
                    r = validate(report, self.config, self.view.sequences.get(report.agent_id or ""), now)
                except ReportError as exc:
                    metrics.REJECTED.labels(reason=exc.field).inc()
                    log.warning("report rejected", site=report.site, region=report.region, peer=peer, error=str(exc))
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    return
                if site and r.site != site:
                    metrics.REJECTED.labels(reason="site").inc()
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"site: {r.site!r} on a stream that reported {site!r}; one site per stream")
                    return
                if not site:
                    site = r.site
                    log.info("agent connected", site=r.site, region=r.region, agent=r.agent, peer=peer)
                self.view.sequences[report.agent_id or ""] = r.sequence
                change = self.view.observe(r.site, r.health, now)
                if change is not None:
                    if not self._closing:
                        self._pending[r.site] = change
                        self._wake.set()
                    if change.status != "healthy":
                        log.warning("site reported unhealthy", site=r.site, region=r.region, detail=change.detail)
                yield pb.ReportAck(sequence=r.sequence, controller_id=self.replica, leader=self.is_leader())
        finally:
            self._streams -= 1
            metrics.CONNECTED_AGENTS.set(self._streams)
            if site:
                log.info("agent stream closed", site=site, peer=peer)

    @property
    def connected_agents(self) -> int:
        return self._streams

    def last_heard(self, site: str) -> tuple[float, TargetHealth | None] | None:
        """(when this replica last had a report for ``site``, that report's health), from memory; None if never.

        Exact for agents that report here; the health is None once the site went silent here.
        """
        entry = self.view.sites.get(site)
        if entry is not None:
            return entry.last_report, entry.latest
        if site in self.silenced_at:
            return self.silenced_at[site], None
        return None

    # ---------------------------------------------------------------- background

    async def _writer(self) -> None:
        backoff = 0.05
        ttl = self.config.policy.silence_seconds
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            puts = {record_key(site, self.replica): h for site, h in batch.items() if h is not _DELETE}
            deletes = [record_key(site, self.replica) for site, h in batch.items() if h is _DELETE]
            try:
                await self.store.write_health_batch(puts, deletes, ttl=ttl)  # type: ignore[attr-defined]
            except Exception as exc:  # etcd down or slow: keep the values, retry later
                metrics.ETCD_ERRORS.labels(kind="health").inc()
                log.warning("health write failed; will retry", sites=len(batch),
                            error=str(exc) or type(exc).__name__)
                for site, health in batch.items():
                    self._pending.setdefault(site, health)  # a newer value that arrived meanwhile wins
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()
                continue
            backoff = 0.05
            metrics.ETCD_WRITES.labels(kind="health").inc(len(puts))
            metrics.ETCD_WRITES.labels(kind="health_delete").inc(len(deletes))
            metrics.ETCD_REQUESTS.labels(kind="health").inc(-(-(len(puts) + len(deletes)) // 100))

    async def _silence(self) -> None:
        interval = min(1.0, self.config.policy.silence_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            heard = {s: e.last_report for s, e in self.view.sites.items()}
            for site in self.view.silent(self.clock()):
                self.silenced_at[site] = heard.get(site, 0.0)
                log.warning("site silent: no report within the silence timeout", site=site,
                            silence_seconds=self.config.policy.silence_seconds)
                self._pending[site] = _DELETE
                self._wake.set()
