"""``HealthService.Report``: every replica takes agent streams and keeps etcd up to date, on change only.

Reports are validated and folded into the replica's ``HealthView`` on the
stream's own task; the etcd writes happen on one writer task that keeps only
the latest pending value per site. So a slow or absent etcd never stalls an
agent's stream, a burst of reports for one site becomes one write, and a
failed write is retried with the newest value, not a stale one.

Each stream is a session: it carries one agent for one site, which the
caller's credentials must allow (``agentauth``), and its sequence numbers
are checked on that stream only. Nothing is keyed by what a client claims:
a restarted agent opens a new stream and starts afresh, a spoofed sequence
ends with the spoofer's stream, and the state of a stream (one small
``Session``) goes when it closes or has been idle too long.

One site's record never blocks the others' writes (``healthwrite``).

Several agents may report on one site: its own agent and observers that
probe it from elsewhere (docs/health.md). Each reporter has a slot of its
own (``vantage.slot``: the site, or ``site~observer``): the view, the silence
timer and the record (``health/<slot>@<replica>``) are per slot, and the
leader decides the site from the quorum of its slots. Two streams carrying
the same agent_id for one slot at once are flagged: a log line naming it,
``steering_controller_duplicate_agent_ids``, and ``streams`` in Status.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from steering import limits, logs
from steering.config import Config
from steering.controller import agentauth, healthwrite, metrics, vantagemetrics
from steering.controller.healthmerge import record_key
from steering.controller.healthview import HealthView
from steering.controller.reports import Report as ValidReport  # inside Ingest, `Report` is the RPC method
from steering.controller.reports import ReportError, ReportRefused, validate
from steering.controller.vantage import LOCAL, split_slot
from steering.model import TargetHealth
from steering.ports import HealthWriter
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.ingest")

_DELETE = None  # a pending value meaning "remove our record"
_IDS = itertools.count(1)


@dataclass
class Session:
    """One open Report stream: who it is and the last sequence it carried (all of its state)."""

    peer: str
    credential: str
    agent: str = ""
    site: str = ""
    slot: str = ""  # the site, or ``site~observer`` for an observer (``vantage.slot``)
    sequence: int | None = None
    last_report: float = 0.0  # monotonic
    grant: agentauth.Grant = agentauth.OPEN
    key: int = 0  # in ``Ingest.sessions``


class Refused(Exception):
    """A report the stream ends on: ``code`` and ``message`` are the stream's status."""

    def __init__(self, code: grpc.StatusCode, field: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message


def _reason(field: str) -> str:
    """A metric label from a field name: bounded (no list index, no client-chosen map key)."""
    return "geo_load" if field.startswith("geo_load") else re.sub(r"\[\d+\]", "", field)


def _message(code: grpc.StatusCode, field: str) -> str:
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return "report rejected"
    if field == "observer":
        return "report refused: not an observer of this site"
    return "report refused: the credential does not name this site"


def _clip(text: str, most: int = limits.MAX_ID) -> str:
    """A client-given string as a log field: a rejected report's strings are not bounded yet."""
    return text if len(text) <= most else f"{text[:most]}...({len(text)} characters)"


class _IdleWatch:
    """Cancels the stream's task when one wait for a report lasts ``seconds``: one timer per stream, moved
    only when it fires, instead of an ``asyncio.timeout`` (a timer armed and cancelled) around every report.

    ``expired`` tells the task's CancelledError apart: True when it was this watch's alone, which it then
    takes back (as ``asyncio.timeout`` does), so a cancellation from elsewhere still ends the stream.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.since: float | None = None  # loop time the current wait began; None while not waiting
        self.fired = False
        self.handle = self.loop.call_at(self.loop.time() + seconds, self._check)

    def waiting(self) -> None:
        self.since = self.loop.time()

    def received(self) -> None:
        self.since = None

    def _check(self) -> None:
        now = self.loop.time()
        since = self.since
        if since is not None and now - since >= self.seconds and self.task is not None:
            self.fired = True
            self.task.cancel()
            return
        # Not waiting for that long: look again when the current wait (or one starting now) could expire.
        self.handle = self.loop.call_at((now if since is None else since) + self.seconds, self._check)

    def expired(self) -> bool:
        if not self.fired or self.task is None:
            return False
        self.fired = False
        return self.task.uncancel() == 0

    def close(self) -> None:
        self.handle.cancel()


def _varint(n: int) -> bytes:
    """``n`` (>= 0, < 2**64: a validated sequence) as a protobuf varint."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes([i]) for i in range(0x80)]


class Ingest(pb_grpc.HealthServiceServicer):
    def __init__(self, config: Config, store: HealthWriter, replica: str, is_leader: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.replica = replica
        self.is_leader = is_leader
        self.clock = clock
        self.view = HealthView(band=config.policy.report_band, silence_seconds=config.policy.silence_seconds)
        # An ack's fields after its sequence (field 1, serialized first), as protobuf writes them: take_wire
        self._ack_tails = {lead: pb.ReportAck(controller_id=replica, leader=lead).SerializeToString()
                           for lead in (False, True)}
        self._pending: dict[str, TargetHealth | None] = {}
        # When this replica last heard from each site that went silent here (the view forgets them); one
        # entry per configured site at most. Lets Status say "silent, last heard at ..." on this replica.
        self.silenced_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        # The open streams (one Session each): the only per-agent state, gone when a stream closes.
        self.sessions: dict[int, Session] = {}
        # Open streams per (slot, agent_id) and per slot, kept as streams open and close (not recounted:
        # thousands of agents connect at once after a restart).
        self._per_agent: dict[tuple[str, str], int] = {}
        self._per_slot: dict[str, int] = {}
        self._conflicts = 0
        # A stream with no report for this long is closed (its site went silent here long before).
        self.idle_seconds = max(2 * config.policy.silence_seconds, 30.0)
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
                     context: grpc.aio.ServicerContext[pb.HealthReport, pb.ReportAck]) -> AsyncIterator[pb.ReportAck]:
        session = self.open_stream(context.peer(), agentauth.grant_for(self.config, context))
        reports = request_iterator.__aiter__()
        idle = _IdleWatch(self.idle_seconds)
        try:
            # Headers now, not with the first ack: they tell the agent its credential was accepted, so it
            # writes only to a stream that is not about to be refused. A refusal racing a client's write loses
            # its status in grpc.aio (the client sees INTERNAL "execute_batch", not UNAUTHENTICATED).
            await context.send_initial_metadata(())
            while True:
                idle.waiting()
                try:
                    report = await reports.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not idle.expired():
                        raise
                    self.log_idle(session)
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self.idle_message())
                    return
                idle.received()
                try:
                    ack = self.take(session, report)
                except Refused as exc:
                    await context.abort(exc.code, exc.message)
                    return
                yield ack
        finally:
            idle.close()
            self.close_stream(session)

    # ------------------------------------------------- one stream, whatever carries it (gRPC, h2ingest)

    def open_stream(self, peer: str, grant: agentauth.Grant) -> Session:
        """A new Report stream from ``peer`` whose credentials allow ``grant``; ``close_stream`` ends it."""
        self._streams += 1
        metrics.CONNECTED_AGENTS.set(self._streams)
        session = Session(peer=peer, credential=grant.who, grant=grant, key=next(_IDS),
                          last_report=time.monotonic())
        self.sessions[session.key] = session
        return session

    def take(self, session: Session, report: pb.HealthReport) -> pb.ReportAck:
        """One report of ``session``'s stream: its ack, or Refused (logged and counted: the stream ends with
        its status)."""
        return pb.ReportAck(sequence=self._take(session, report), controller_id=self.replica,
                            leader=self.is_leader())

    def take_wire(self, session: Session, report: pb.HealthReport) -> bytes:
        """``take``, with the ack serialized: its bytes are what ``SerializeToString`` writes, put together from
        the sequence's varint and the rest, serialized once for each leader flag (a message built and serialized
        for every report was ~2 µs of the ingest listener's ~60)."""
        sequence = self._take(session, report)
        return b"\x08" + _varint(sequence) + self._ack_tails[self.is_leader()]

    def _take(self, session: Session, report: pb.HealthReport) -> int:
        """The report's sequence once taken; Refused as ``take``."""
        metrics.REPORTS.inc()
        now = self.clock()
        try:
            r = self._accept(report, session, session.grant, now)
        except Refused as exc:
            metrics.REJECTED.labels(reason=_reason(exc.field)).inc()
            log.warning(_message(exc.code, exc.field),
                        site=_clip(report.site), region=_clip(report.region),
                        agent=_clip(report.agent_id, limits.MAX_AGENT_ID), peer=session.peer,
                        credential=session.credential, error=exc.message)
            raise
        if not session.site:
            session.site, session.agent, session.slot = r.site, report.agent_id, r.slot
            log.info("agent connected", site=r.site, region=r.region, agent=r.agent, peer=session.peer,
                     credential=session.credential, reporter=r.reporter)
            self._opened(session)
        session.sequence, session.last_report = r.sequence, time.monotonic()
        change = self.view.observe(r.slot, r.health, now)
        if change is not None:
            if not self._closing:
                self._queue(r.slot, change)
            if change.status != "healthy":
                log.warning("site reported unhealthy", site=r.site, region=r.region, detail=change.detail,
                            reporter=r.reporter)
        return r.sequence

    def close_stream(self, session: Session) -> None:
        """``session``'s stream ended (any way); idempotent."""
        if self.sessions.pop(session.key, None) is None:
            return
        self._streams -= 1
        metrics.CONNECTED_AGENTS.set(self._streams)
        if session.site:
            log.info("agent stream closed", site=session.site, peer=session.peer, agent=session.agent)
            self._closed(session)

    def log_idle(self, session: Session) -> None:
        log.info("agent stream idle; closed", site=session.site, agent=session.agent,
                 peer=session.peer, idle_seconds=self.idle_seconds)

    def idle_message(self) -> str:
        return f"no report for {self.idle_seconds:g}s; open a new stream"

    def _accept(self, report: pb.HealthReport, session: Session, grant: agentauth.Grant, now: float) -> ValidReport:
        """The validated report, or Refused: the stream ends with its status."""
        try:
            r = validate(report, self.config, session.sequence, now)
        except ReportRefused as exc:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "observer", str(exc)) from None
        except ReportError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, exc.field, str(exc)) from None
        if session.site and r.site != session.site:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "site",
                           f"site: {r.site!r} on a stream that reported {session.site!r}; one site per stream")
        if session.site and report.agent_id != session.agent:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "agent_id",
                           f"agent_id: {report.agent_id!r} on a stream that reported {session.agent!r}; "
                           "one agent per stream")
        if r.reporter == LOCAL and not grant.allows(r.site):
            why = f" ({grant.why})" if grant.why else ""
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "permission",
                           f"site: {grant.who} may not report {r.site!r}{why}")
        if r.reporter != LOCAL and not grant.allows_observer(r.reporter):
            why = f" ({grant.why})" if grant.why else ""
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "permission",
                           f"agent_id: {grant.who} may not report as observer {r.reporter!r}{why}")
        return r

    # ---------------------------------------------------------------- one agent_id, one stream

    def _opened(self, session: Session) -> None:
        """A stream's first report: flag another open stream with its agent_id for its slot (two agents
        sharing one id would speak as one reporter)."""
        self._per_slot[session.slot] = self._per_slot.get(session.slot, 0) + 1
        if not session.agent:
            return
        key = (session.slot, session.agent)
        n = self._per_agent[key] = self._per_agent.get(key, 0) + 1
        if n > 1:
            if n == 2:
                self._conflicts += 1
                vantagemetrics.AGENT_ID_CONFLICTS.set(self._conflicts)
            vantagemetrics.AGENT_ID_CONFLICTS_TOTAL.inc()
            peers = [s.peer for s in self.sessions.values() if s.slot == session.slot and s.agent == session.agent]
            _, reporter = split_slot(session.slot)
            log.warning("two agents report with the same agent_id at once", agent=session.agent,
                        site=session.site, reporter=reporter, streams=n, peers=peers)

    def _closed(self, session: Session) -> None:
        left = self._per_slot.get(session.slot, 0) - 1
        if left > 0:
            self._per_slot[session.slot] = left
        else:
            self._per_slot.pop(session.slot, None)
        if not session.agent:
            return
        key = (session.slot, session.agent)
        n = self._per_agent.get(key, 0) - 1
        if n > 0:
            self._per_agent[key] = n
        else:
            self._per_agent.pop(key, None)
        if n == 1:
            self._conflicts -= 1
            vantagemetrics.AGENT_ID_CONFLICTS.set(self._conflicts)

    def streams(self, slot: str) -> int:
        """Streams open here reporting ``slot`` (a site, or ``site~observer``)."""
        return self._per_slot.get(slot, 0)

    @property
    def connected_agents(self) -> int:
        return self._streams

    def last_heard(self, site: str) -> tuple[float, TargetHealth | None] | None:
        """(when this replica last had a report for ``site``, that report's health), from memory; None if never.

        Exact for agents that report here; the health is None once the site went silent here. ``site`` may
        be an observer's slot (``site~observer``).
        """
        entry = self.view.sites.get(site)
        if entry is not None:
            return entry.last_report, entry.latest
        if site in self.silenced_at:
            return self.silenced_at[site], None
        return None

    # ---------------------------------------------------------------- background

    def submit(self, site: str, health: TargetHealth) -> None:
        """Hand ``health`` to the health writer as a report or the silence timer does: what is bounded from
        here on is the writer's (record size, splitting batches etcd refuses), not a report's validation."""
        self._queue(site, health)

    def _queue(self, site: str, value: TargetHealth | None) -> None:
        """Hand ``value`` (or _DELETE) to the writer; it replaces an older one not yet written."""
        self._pending[site] = value
        self._wake.set()

    async def _writer(self) -> None:
        # Capped at etcd.reconnect_max_seconds and woken when etcd reconnects: what agents reported during
        # an outage reaches etcd as soon as it is back.
        backoff = self.store.backoff()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            batch = {site: self._sized(site, h) for site, h in batch.items()}
            unwritten, error = await self._write(batch)
            if unwritten:  # etcd down or slow: keep the values, retry later
                metrics.ETCD_ERRORS.labels(kind="health").inc()
                log.warning("health write failed; will retry", sites=len(unwritten),
                            error=str(error) or type(error).__name__)
                for site, health in unwritten.items():
                    self._pending.setdefault(site, health)  # a newer value that arrived meanwhile wins
                await backoff.sleep()
                self._wake.set()
                continue
            backoff.reset()

    def _sized(self, site: str, health: TargetHealth | None) -> TargetHealth | None:
        """The record to write: one etcd would refuse for its size goes without its free text."""
        if health is _DELETE or not healthwrite.too_large(health):
            return health
        metrics.HEALTH_WRITE_REJECTED.labels(reason="too_large").inc()
        log.error("health record too large; writing it without its details", site=site,
                  bytes=healthwrite.record_bytes(health), limit=limits.MAX_HEALTH_RECORD_BYTES)
        return healthwrite.stripped(health, "details dropped: the record was too large")

    async def _write(self, batch: dict[str, TargetHealth | None],
                     ) -> tuple[dict[str, TargetHealth | None], BaseException | None]:
        """Write ``batch``; return what is left to retry (etcd unreachable) and why.

        A batch etcd refuses for its content is split in halves until the culprit is alone, so the
        other sites' records are written; the culprit is written without its details, or dropped.
        """
        if not batch:
            return {}, None
        ttl = self.config.policy.silence_seconds
        puts = {record_key(site, self.replica): h for site, h in batch.items() if h is not _DELETE}
        deletes = [record_key(site, self.replica) for site, h in batch.items() if h is _DELETE]
        try:
            await self.store.write_health_batch(puts, deletes, ttl=ttl)
        except Exception as exc:
            if not healthwrite.refused_for_content(exc):
                return batch, exc
            if len(batch) > 1:
                first, second = healthwrite.halves(batch)
                left, error = await self._write(first)
                if left:  # etcd went away meanwhile: do not wait on the second half too
                    return {**left, **second}, error
                return await self._write(second)
            site, health = next(iter(batch.items()))
            return await self._refused(site, health, exc)
        metrics.ETCD_WRITES.labels(kind="health").inc(len(puts))
        metrics.ETCD_WRITES.labels(kind="health_delete").inc(len(deletes))
        metrics.ETCD_REQUESTS.labels(kind="health").inc(-(-(len(puts) + len(deletes)) // 100))
        return {}, None

    async def _refused(self, site: str, health: TargetHealth | None, exc: BaseException,
                       ) -> tuple[dict[str, TargetHealth | None], BaseException | None]:
        """etcd refused this one record: write it without its details, else drop it (both reported)."""
        if health is not _DELETE:
            bare = healthwrite.stripped(health, "details dropped: etcd refused the record")
            if bare != health:
                metrics.HEALTH_WRITE_REJECTED.labels(reason="refused").inc()
                log.error("etcd refused a health record; writing it without its details", site=site,
                          bytes=healthwrite.record_bytes(health), error=str(exc))
                try:
                    await self.store.write_health_batch(
                        {record_key(site, self.replica): bare}, [], ttl=self.config.policy.silence_seconds)
                except Exception as again:
                    if not healthwrite.refused_for_content(again):
                        return {site: bare}, again
                    exc = again
                else:
                    metrics.ETCD_WRITES.labels(kind="health").inc()
                    metrics.ETCD_REQUESTS.labels(kind="health").inc()
                    return {}, None
        metrics.HEALTH_WRITE_REJECTED.labels(reason="dropped").inc()
        log.error("etcd refused a health record; dropped", site=site, error=str(exc))
        entry = self.view.sites.get(site)
        if entry is not None:
            entry.queued = None  # the next report is written again, not compared with what never was
        return {}, None

    async def _silence(self) -> None:
        interval = min(1.0, self.config.policy.silence_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            heard = {s: e.last_report for s, e in self.view.sites.items()}
            for site in self.view.silent(self.clock()):
                self.silenced_at[site] = heard.get(site, 0.0)
                target, reporter = split_slot(site)  # a site, or an observer's slot of it
                log.warning("site silent: no report within the silence timeout", site=target, reporter=reporter,
                            silence_seconds=self.config.policy.silence_seconds)
                self._queue(site, _DELETE)
