"""The leader's sinks that live in the controller: the table in etcd, and sharing a sink's status.

``TableSink`` is the first sink the leader walks: ``routing/current``, written in
the transaction fenced by the leadership key (docs/architecture.md §4). A write
etcd cannot take now is retried while the leadership holds; a write the fence
refuses means another replica leads, and ends the term. The Route 53 sink
(``steering.route53.Route53Sink``) is the second; it shares each sync's result
through etcd (``share_status``) so every replica's ``Status`` can show it
(``read_status``).

``EventSink`` is the last: it turns what the leader sees into the event
timeline (``eventdiff``: health flips at each plan, service, spill and
fail-open changes between published tables, leadership changes, sink
errors), passes them through a per-subject budget (``eventlimit``) and writes
them to ``events/`` from its own task, so etcd being slow or away never holds
up a plan or a publish; it also prunes the timeline while leading.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from steering import event as ev
from steering import logs
from steering.config import Config
from steering.controller import eventdiff, metrics
from steering.controller.eventlimit import RateLimiter
from steering.event import Event
from steering.model import TargetHealth
from steering.ports import EventWriter, SinkStatus, StatusReader, StatusWriter, TablePublisher
from steering.store.events import new_id
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


def share_status(store: StatusWriter, events: EventSink | None = None) -> Callable[[SinkStatus], Awaitable[None]]:
    """A sink's ``on_status``: store each status under ``status/<sink>`` for every replica's ``Status``, and
    tell ``events`` (a sync turning to an error, or back, is an event)."""

    async def share(status: SinkStatus) -> None:
        if events is not None:
            events.sink_status(status)
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


class EventSink:
    """The event timeline (a ``steering.ports.Sink``, the leader's last; docs/architecture.md §9, "Events").

    Fed without waiting: ``health_seen`` at each plan, ``publish`` with each published table,
    ``sink_status`` with each sync of another sink, ``leadership_ended`` when a term ends. Events are
    derived by ``eventdiff``, limited per subject by ``eventlimit`` and queued; ``serve`` (while leading)
    writes the queue and prunes the timeline, ``drain`` writes what is left when a term ends. A write
    etcd refuses is retried; at most ``MAX_PENDING`` events wait (the oldest are dropped, counted)."""

    name = "events"
    MAX_PENDING = 1000
    PRUNE_SECONDS = 60.0  # pruning also follows every write
    WINDOW_SECONDS = 60.0
    LOST_DRAIN_SECONDS = 60.0

    def __init__(self, config: Config, store: EventWriter, replica: str, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.replica = replica
        self.policy = config.controller.events
        self.retry_max_seconds = config.etcd.reconnect_max_seconds
        self.term_resumed = False  # set by the leader before each term: its leader_elected event says so
        self.known = eventdiff.targets_of(config)
        self.limiter = RateLimiter(self.policy.per_subject_per_minute, self.WINDOW_SECONDS)
        self._clock, self._monotonic = clock, monotonic
        self._pending: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one writer at a time: ``serve`` and ``drain`` may overlap at a resign
        self._baseline: dict[str, str] = {}  # each target's last known health status
        self._seen: Mapping[str, TargetHealth] | None = None  # the merged health the baseline was last fed
        self._table: RoutingTable | None = None  # the last table published (or in force at the term's start)
        self._sinks: dict[str, SinkStatus] = {}  # each other sink's last status
        self._last_time = 0.0
        self._suppressed_seen = 0
        self._last: SinkStatus | None = None
        self._drainer: asyncio.Task[bool] | None = None

    # ---- fed by the leader (no waiting)

    def _emit(self, events: Iterable[Event]) -> None:
        admitted = self.limiter.admit(events, self._monotonic())
        self._queue(admitted)
        suppressed = self.limiter.suppressed_total - self._suppressed_seen
        if suppressed:
            metrics.EVENTS_SUPPRESSED.inc(suppressed)
            self._suppressed_seen = self.limiter.suppressed_total

    def _queue(self, events: Iterable[Event]) -> None:
        queued = False
        for e in events:
            # Strictly increasing times: ids sort in the order the events happened, and a follower paging
            # on from the last id it saw misses none of this writer's.
            when = max(e.time, self._last_time + 1e-6)
            self._last_time = when
            # The id is the event's from now on: a write retried after a lost answer rewrites the same key.
            e = dataclasses.replace(e, time=when, replica=e.replica or self.replica, id=new_id(when))
            metrics.EVENTS.labels(kind=e.kind).inc()
            log.info("event", kind=e.kind, severity=e.severity, subject=e.subject, message=e.message,
                     replica=self.replica)
            self._pending.append(e)
            if len(self._pending) > self.MAX_PENDING:
                dropped = self._pending.popleft()
                metrics.EVENTS_DROPPED.inc()
                log.warning("event dropped unwritten: too many waiting for etcd", kind=dropped.kind,
                            subject=dropped.subject)
            queued = True
        if queued:
            self._wake.set()

    def health_seen(self, health: Mapping[str, TargetHealth], records: Mapping[str, TargetHealth]) -> None:
        """The merged health a plan is made with, and the ``site@replica`` records it was merged from."""
        events, self._baseline = eventdiff.health_events(self._baseline, health, records, self.known, self._clock(),
                                                         self._seen)
        self._seen = health
        if events:
            self._emit(events)

    def sink_status(self, status: SinkStatus) -> None:
        """Another sink's latest status (Route 53's sync result)."""
        before = self._sinks.get(status.sink)
        self._sinks[status.sink] = status
        events = eventdiff.sink_events(before, status, self._clock())
        if events:
            self._emit(events)

    def leadership_ended(self, resigned: bool, reason: str) -> None:
        """This replica's term is over: resigned (a clean stop: the caller ``drain``s before letting go, so the
        next leader's events follow it) or lost (lease, fence, failure: etcd is often away then, so what waits
        is written in the background for up to ``LOST_DRAIN_SECONDS`` while the replica campaigns again)."""
        kind = ev.LEADER_RESIGNED if resigned else ev.LEADER_LOST
        self._emit([eventdiff.leader_event(kind, self.replica, self._clock(), reason=reason)])
        if not resigned and (self._drainer is None or self._drainer.done()):
            self._drainer = asyncio.create_task(self.drain(self.LOST_DRAIN_SECONDS), name="events-drain")

    async def close(self) -> None:
        """Stop writing in the background (the process is stopping)."""
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)

    # ---- the sink

    async def serve(self, current: RoutingTable | None, stop: asyncio.Event) -> None:
        """One term: start from the table in force, say who leads, then write and prune until ``stop``."""
        self._table = current
        self._baseline = eventdiff.baseline_of(current)
        self._seen = None
        self._emit([eventdiff.leader_event(ev.LEADER_ELECTED, self.replica, self._clock(),
                                           previous=current.leader if current is not None else "",
                                           resumed=self.term_resumed)])
        next_prune = self._monotonic()  # at once: a new leader starts from a pruned timeline
        backoff = 0.1
        while not stop.is_set():
            self._wake.clear()
            written = await self._write()
            now = self._monotonic()
            if written is not None and (written or now >= next_prune):
                await self._prune()
                next_prune = now + self.PRUNE_SECONDS
            # Summaries of suppressed events, once their subject has room again.
            self._queue(self.limiter.flush(now))
            backoff = 0.1 if written is not None else min(backoff * 2, self.retry_max_seconds)
            wait = backoff if written is None else max(0.05, min(next_prune - now, self.WINDOW_SECONDS / 4))
            if self._pending and written is not None:
                wait = 0.0  # queued while this round wrote or pruned: write them now, whatever woke us or not
            log.debug("events round", written=written, waiting=len(self._pending), sleep=round(wait, 3),
                      replica=self.replica)
            waiters = {asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())}
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    async def publish(self, table: RoutingTable, leadership: Leadership) -> bool:
        """Events between the last table and this one; never refuses (the timeline is no reason to resign)."""
        events = eventdiff.table_events(self._table, table, self.known, self.policy.spill_threshold, self._clock())
        self._table = table
        if events:
            self._emit(events)
        return True

    def status(self) -> SinkStatus | None:
        return self._last

    async def drain(self, timeout: float = 2.0) -> bool:
        """Write what is waiting now, giving up after ``timeout`` seconds; True when nothing is left."""
        try:
            async with asyncio.timeout(timeout):
                while self._pending:
                    if await self._write() is None:
                        await asyncio.sleep(0.1)
        except TimeoutError:
            log.warning("events left unwritten", count=len(self._pending), replica=self.replica)
        return not self._pending

    # ---- I/O

    async def _write(self) -> int | None:
        """Write every waiting event; how many were written, or None when etcd refused (they wait on)."""
        async with self._lock:
            written = 0
            while self._pending:
                batch = list(self._pending)[:64]
                started, t0 = self._clock(), time.monotonic()
                try:
                    await self.store.put_events(batch)
                except Exception as exc:
                    metrics.ETCD_ERRORS.labels(kind="events").inc()
                    log.warning("writing events failed; retrying", count=len(batch),
                                error=str(exc) or type(exc).__name__)
                    self._last = SinkStatus(sink=self.name, started_at=started, duration=time.monotonic() - t0,
                                            table_version=self._table.version if self._table else 0,
                                            change_count=0, error=str(exc) or type(exc).__name__)
                    return None
                for _ in batch:
                    self._pending.popleft()
                metrics.ETCD_WRITES.labels(kind="events").inc(len(batch))
                metrics.ETCD_REQUESTS.labels(kind="events").inc()
                written += len(batch)
                self._last = SinkStatus(sink=self.name, started_at=started, duration=time.monotonic() - t0,
                                        table_version=self._table.version if self._table else 0,
                                        change_count=len(batch), error=None)
            return written

    async def _prune(self) -> None:
        try:
            deleted = await self.store.prune_events(self.policy.max_count, self.policy.max_age_seconds, self._clock())
        except Exception as exc:
            log.warning("pruning events failed; next time", error=str(exc) or type(exc).__name__)
            return
        if deleted:
            log.info("events pruned", count=deleted, max_count=self.policy.max_count,
                     max_age_seconds=self.policy.max_age_seconds)
