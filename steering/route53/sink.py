"""The Route 53 sink the leader runs: reconcile Route 53 to the routing table.

``await sink.sync(table)`` reads the zone, plans, applies the batches in order
(each must reach INSYNC before the next is sent) and returns a ``SyncResult``;
it never raises. ``sink.plan(table)`` only reads and plans (for ``steerctl
route53 plan``). ``sink.notify(table)`` + ``await sink.run(stop)`` is the
leader's loop: sync after every new table, and every ``sync_interval`` anyway,
which is the periodic full compare that finds and repairs drift. As one of the
leader's sinks (``steering.ports.Sink``) that is ``serve(current, stop)`` and
``publish(table, leadership)``; ``on_status`` shares each result
(``steering.controller.sinks.share_status``).

A rejected batch stops the sync there (the batches before it are applied and
INSYNC; Route 53 applies a batch all or nothing, so the rejected one left the
old records in place). The same batch is not sent again until a hold-down
passes (``sync_interval`` doubling per repeat, at most an hour) or the table
changes what it would contain: a bad batch is not retried blindly forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steering import logs
from steering.config import Config
from steering.ports import SinkStatus
from steering.route53 import metrics
from steering.route53.client import ChangeRejected, RetryPolicy, Route53Client
from steering.route53.plan import ACTIONS, Change, ChangePlan, compute_plan
from steering.route53.records import Record, desired_records
from steering.table import RoutingTable

if TYPE_CHECKING:
    from steering.store.election import Leadership

log = logs.get(__name__)

MAX_HOLD_SECONDS = 3600.0


@dataclass(frozen=True)
class SyncResult:
    """What one sync did; ``steerctl status`` shows it."""

    started_at: float
    duration: float
    table_version: int
    changes: dict[str, int]  # applied and INSYNC, by action
    planned: dict[str, int]
    batches: int  # batches applied
    error: str | None = None
    rejected: bool = False
    held: bool = False
    conflicts: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def change_count(self) -> int:
        return sum(self.changes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "duration": round(self.duration, 6),
                "table_version": self.table_version, "changes": dict(self.changes), "planned": dict(self.planned),
                "change_count": self.change_count, "batches": self.batches, "error": self.error,
                "rejected": self.rejected, "held": self.held, "conflicts": list(self.conflicts),
                "invalid": list(self.invalid)}


@dataclass
class _Hold:
    fingerprint: str
    until: float
    times: int
    error: str


def _fingerprint(batch: tuple[Change, ...]) -> str:
    blob = json.dumps([c.to_api() for c in batch], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def retry_policy(config: Config) -> RetryPolicy:
    s = config.route53
    if s is None:
        return RetryPolicy()
    return RetryPolicy(attempts=s.max_attempts, base_seconds=s.backoff_base_seconds,
                       max_seconds=s.backoff_max_seconds, insync_timeout_seconds=s.insync_timeout_seconds,
                       poll_seconds=s.insync_poll_seconds)


class Route53Sink:
    name = "route53"

    def __init__(self, config: Config, client: Route53Client | None = None, *, retry: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if config.route53 is None:
            raise ValueError("route53: section missing from the config; the Route 53 sink needs hosted_zone_id")
        self.config = config
        self.settings = config.route53
        self.client = client or Route53Client(
            self.settings.hosted_zone_id, region=self.settings.region, endpoint_url=self.settings.endpoint_url,
            max_requests_per_second=self.settings.max_requests_per_second, retry=retry or retry_policy(config))
        self.owner = self.settings.owner_id
        self._clock = clock
        self._lock = asyncio.Lock()
        self._hold: _Hold | None = None
        self._latest: RoutingTable | None = None
        self._wake: asyncio.Event | None = None
        self.last_result: SyncResult | None = None
        # Called after every sync (the leader shares the result through etcd for every replica's status).
        self.on_status: Callable[[SinkStatus], Awaitable[None]] | None = None

    # ---- planning (reads only)

    def plan(self, table: RoutingTable) -> ChangePlan:
        """What a sync would change now; reads Route 53, writes nothing. Blocking (call in a thread)."""
        zone_name = self.client.zone_name()
        current = [Record.from_api(r) for r in self.client.list_records()]
        desired = desired_records(self.config, table, self.client.zone_id)
        return compute_plan(desired, current, self.owner, zone_name)

    # ---- applying

    async def sync(self, table: RoutingTable) -> SyncResult:
        async with self._lock:
            result = await asyncio.to_thread(self.sync_blocking, table)
        self.last_result = result
        if self.on_status is not None:
            try:
                await self.on_status(SinkStatus.from_record(self.name, result.to_dict()))
            except Exception as exc:  # sharing the status must never break syncing
                log.warning("route53 status not shared", error=str(exc) or type(exc).__name__)
        return result

    def sync_blocking(self, table: RoutingTable) -> SyncResult:
        started = self._clock()
        t0 = time.monotonic()
        applied = dict.fromkeys(ACTIONS, 0)
        planned = dict.fromkeys(ACTIONS, 0)
        batches_done = 0
        error: str | None = None
        rejected = held = False
        plan: ChangePlan | None = None
        try:
            plan = self.plan(table)
            planned = plan.counts()
            for conflict in plan.conflicts:
                log.warning("route53.conflict", detail=conflict, zone=self.client.zone_id)
            for i, batch in enumerate(plan.batches):
                fp = _fingerprint(batch)
                hold = self._hold
                if hold is not None and hold.fingerprint == fp and self._clock() < hold.until:
                    held = True
                    error = (f"batch {i + 1} was rejected {hold.times} time(s) ({hold.error}); "
                             f"not resent before {time.strftime('%H:%M:%S', time.gmtime(hold.until))} UTC "
                             "unless the routing table changes it")
                    break
                try:
                    change_id = self.client.change([c.to_api() for c in batch],
                                                   comment=f"steering {self.owner} table v{table.version}")
                except ChangeRejected as exc:
                    rejected = True
                    times = hold.times + 1 if hold is not None and hold.fingerprint == fp else 1
                    wait = min(MAX_HOLD_SECONDS, self.settings.sync_interval * 2 ** (times - 1))
                    self._hold = _Hold(fp, self._clock() + wait, times, str(exc))
                    metrics.REJECTED.inc()
                    metrics.ERRORS.labels("rejected").inc()
                    error = f"batch {i + 1} of {len(plan.batches)} rejected: {exc}"
                    log.error("route53.batch_rejected", batch=i + 1, changes=len(batch), code=exc.code,
                              message=exc.message, first=str(batch[0].record.key), hold_seconds=wait,
                              zone=self.client.zone_id, version=table.version)
                    break
                self.client.wait_insync(change_id)
                batches_done += 1
                for c in batch:
                    applied[c.action] += 1
                    metrics.CHANGES.labels(c.action).inc()
            else:
                self._hold = None
            if error is None and plan.invalid:
                error = f"{len(plan.invalid)} invalid record(s) not sent: {plan.invalid[0]}"
                metrics.ERRORS.labels("invalid").inc()
        except Exception as exc:  # a daemon's sink must report, never crash the leader
            error = f"{type(exc).__name__}: {exc}"
            log.error("route53.sync_failed", error=error, zone=self.client.zone_id, version=table.version)
        duration = time.monotonic() - t0
        outcome = "ok" if error is None else ("rejected" if rejected else "held" if held else "error")
        metrics.SYNCS.labels(outcome).inc()
        metrics.SYNC_SECONDS.observe(duration)
        metrics.LAST_SYNC.set(self._clock())
        result = SyncResult(started_at=started, duration=duration, table_version=table.version, changes=applied,
                            planned=planned, batches=batches_done, error=error, rejected=rejected, held=held,
                            conflicts=plan.conflicts if plan else (), invalid=plan.invalid if plan else ())
        log.info("route53.sync", outcome=outcome, version=table.version, duration=round(duration, 3),
                 batches=batches_done, **{a.lower(): n for a, n in applied.items()}, zone=self.client.zone_id)
        return result

    # ---- the leader's sink (steering.ports.Sink)

    async def serve(self, current: RoutingTable | None, stop: asyncio.Event) -> None:
        """While leading: bring Route 53 to ``current`` at once, then ``run``."""
        if current is not None:
            self.notify(current)
        await self.run(stop)

    async def publish(self, table: RoutingTable, leadership: Leadership) -> bool:
        """Sync soon (the loop in ``serve`` does it); Route 53 never refuses a table."""
        self.notify(table)
        return True

    def status(self) -> SinkStatus | None:
        result = self.last_result
        return None if result is None else SinkStatus.from_record(self.name, result.to_dict())

    # ---- the leader's loop

    def notify(self, table: RoutingTable) -> None:
        """A new routing table: sync soon. Only the latest table counts."""
        self._latest = table
        if self._wake is not None:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Sync after each ``notify`` and every ``sync_interval`` (drift repair) until ``stop`` is set."""
        self._wake = asyncio.Event()
        if self._latest is not None:
            self._wake.set()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({waker, stopper}, timeout=self.settings.sync_interval,
                                   return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                self._wake.clear()
                if stop.is_set():
                    break
                if self._latest is not None:
                    await self.sync(self._latest)
        finally:
            stopper.cancel()
