"""The leader's loop: win the election, then plan and publish until leadership is lost.

This is the I/O shell around ``leaderstate.LeaderState``, which decides when
to plan and when to publish (debounce, steps, emergencies, the start-up grace,
the seconds each plan is told have passed: docs/architecture.md §9). The shell
campaigns, reads the table in force, follows health and overrides in etcd and
feeds each snapshot to the state machine, sleeps until it says, plans off the
event loop and hands each table to the sinks in order: the table in etcd,
fenced by the leadership key (``sinks.TableSink``), then Route 53 when
configured, then the event timeline (``sinks.EventSink``: it also hears the
health each plan is made with, and how each term ends). The moment the lease
is lost (``leadership.lost``), or a sink refuses, the term is over; the
replica then campaigns again.

Overrides the planner cannot use are left out, noted in the table and
reported once each (``steering_controller_skipped_records_total``); one
stored record never stops the leader publishing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING

from steering import logs
from steering.config import Config
from steering.controller import metrics, vantagemetrics
from steering.controller.leaderstate import LeaderState, Plan, Publish, Resign, Timing, Wait
from steering.controller.sinks import EventSink
from steering.controller.vantage import Vantage
from steering.model import Evacuation, Observed, Overrides, Pin, Restore, Skipped, TargetHealth
from steering.overridecheck import usable
from steering.planner import plan
from steering.ports import LeaderStore, Sink
from steering.replan import Replanner
from steering.table import RoutingTable

if TYPE_CHECKING:
    from steering.store.election import Leadership

_STATUS = attrgetter("status")

log = logs.get("steering.leader")


class Leader:
    def __init__(self, config: Config, store: LeaderStore, replica: str, clock: Callable[[], float] = time.time,
                 *, sinks: Sequence[Sink] = (), monotonic: Callable[[], float] = time.monotonic,
                 events: EventSink | None = None) -> None:
        """``sinks``: where each table goes, in order, the table in etcd first (``sinks.TableSink``); each
        runs only while this replica leads. ``store``: what the leader reads; it writes through its sinks.
        ``events``: the event timeline, walked after the other sinks."""
        self.config = config
        self.store = store
        self.replica = replica
        self.clock = clock  # wall time, for generated_at only
        self.monotonic = monotonic  # for every interval
        self.events = events
        self.sinks = (*sinks, events) if events is not None else tuple(sinks)
        self.leadership: Leadership | None = None
        self.known = [r.id for r in config.regions] + [s.id for s in config.sites]
        self._stopping = False
        self._skipped: set[Skipped] = set()  # records left out of the last plan, to report each once
        # Most plans follow one site's health change: the replanner redoes only what it reaches, and
        # returns exactly what planner.plan would (docs/architecture.md, "Incremental planning").
        self._replanner = Replanner()

    @property
    def is_leader(self) -> bool:
        lead = self.leadership
        return lead is not None and not lead.lost.is_set()

    async def run(self) -> None:
        if not self.sinks:
            raise ValueError("the leader has no sinks: its tables would go nowhere")
        backoff = 0.2
        while not self._stopping:
            try:
                leadership = await self.store.campaign(self.replica)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("campaign failed; retrying", replica=self.replica, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.etcd.reconnect_max_seconds)
                continue
            backoff = 0.2
            self.leadership = leadership
            metrics.LEADER.set(1)
            log.info("became leader", replica=self.replica)
            failed = ""
            try:
                await self._lead(leadership)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("leader loop failed; resigning", replica=self.replica)
                failed = f"the leader loop failed: {type(exc).__name__}: {exc}"
                await self._resign(leadership)
            finally:
                metrics.LEADER.set(0)
                vantagemetrics.clear()
                self.leadership = None
            log.warning("leadership lost", replica=self.replica)
            if self.events is not None and not self._stopping:  # a stop says "resigned" itself (``stop``)
                self.events.leadership_ended(False, failed or leadership.lost_reason or "leadership lost")

    async def stop(self) -> None:
        """Resign (so another replica takes over at once) and stop campaigning."""
        self._stopping = True
        if self.leadership is not None:
            if self.events is not None:  # written while still leading: the next leader's follows it
                self.events.leadership_ended(True, "this replica is stopping")
                await self.events.drain()
            await self._resign(self.leadership)
        if self.events is not None:
            await self.events.close()

    async def _resign(self, leadership: Leadership) -> None:
        try:
            await asyncio.wait_for(leadership.resign(), 3.0)
        except Exception as exc:
            log.warning("resign failed (the lease will expire)", replica=self.replica, error=str(exc))

    async def _lead(self, leadership: Leadership) -> None:
        """One term: I/O only; ``LeaderState`` decides."""
        lost = leadership.lost
        state = LeaderState(Timing.of(self.config), self.known, gained_at=self.monotonic(),
                            vantage=Vantage.of(self.config))
        previous = await self._read_previous(lost)
        state.table_observed(previous, self.monotonic())
        wake = asyncio.Event()  # set after each event fed to ``state``
        records: Mapping[str, TargetHealth] = {}  # the latest health records: who reported what (events)

        async def follow_health() -> None:
            nonlocal records
            async for snap in self.store.watch_health():
                state.health_changed(snap)
                records = snap
                wake.set()

        async def follow_overrides() -> None:
            async for snap in self.store.watch_overrides():
                state.overrides_changed(snap)
                wake.set()

        stop = asyncio.Event()
        if self.events is not None:
            self.events.term_resumed = leadership.resumed  # its leader_elected says so
        tasks = [asyncio.create_task(follow_health(), name="leader-health"),
                 asyncio.create_task(follow_overrides(), name="leader-overrides"),
                 *(asyncio.create_task(sink.serve(previous, stop), name=f"sink-{sink.name}") for sink in self.sinks)]
        lost_wait = asyncio.create_task(lost.wait(), name="leader-lost")
        try:
            while True:
                if lost.is_set():
                    state.leadership_lost(leadership.lost_reason or "leadership lost")
                decision = state.next(self.clock(), self.monotonic())
                if isinstance(decision, Resign):
                    break
                if isinstance(decision, Wait):
                    # Every event has been fed to ``state`` before ``next``: clearing here loses none.
                    wake.clear()
                    wake_wait = asyncio.create_task(wake.wait())
                    await asyncio.wait({wake_wait, lost_wait}, timeout=max(0.0, decision.until - self.monotonic()),
                                       return_when=asyncio.FIRST_COMPLETED)
                    wake_wait.cancel()
                    continue
                if self.events is not None:
                    self.events.health_seen(decision.health, records)
                outcome = state.planned(*await self._plan_off_loop(decision))
                if isinstance(outcome, Publish) and state.published(await self._deliver(outcome.table, leadership)):
                    break
        finally:
            stop.set()
            for t in (*tasks, lost_wait):
                t.cancel()
            await asyncio.gather(*tasks, lost_wait, return_exceptions=True)

    async def _plan_off_loop(self, step: Plan) -> tuple[RoutingTable, bool]:
        t0 = time.perf_counter()
        # Planning a large topology takes tens of ms: in a thread, so agent streams keep flowing.
        result = await asyncio.to_thread(self._plan, step.health, step.overrides, step.previous, step.now,
                                         step.elapsed)
        metrics.PLAN_SECONDS.observe(time.perf_counter() - t0)
        metrics.SILENT_SITES.set(list(map(_STATUS, step.health.values())).count("silent"))  # in C
        vantagemetrics.export(step.health)
        return result

    async def _deliver(self, table: RoutingTable, leadership: Leadership) -> bool:
        """Every sink in order; False as soon as one refuses (this replica no longer leads)."""
        for sink in self.sinks:
            if not await sink.publish(table, leadership):
                return False
        return True

    def _plan(self, health: dict[str, TargetHealth], overrides: Overrides, previous: RoutingTable | None,
              now: float, elapsed: float | None = None) -> tuple[RoutingTable, bool]:
        """``elapsed``: monotonic seconds since ``previous`` was planned (None: ``now`` is trusted for it)."""
        observed = Observed(health=health)
        overrides = usable(self.config, overrides)
        try:
            table = self._replanner.plan(self.config, observed, overrides, previous, now, leader=self.replica,
                                         elapsed=elapsed)
        except Exception:
            # No known record does this (``usable`` sets them aside); should one, it must not stop every
            # plan: find the records that fail on their own and plan without them. Raises if that fails too.
            log.exception("planning failed; looking for the override record that breaks it", replica=self.replica)
            overrides = self._isolate(observed, overrides, previous, now, elapsed)
            table = plan(self.config, observed, overrides, previous, now, leader=self.replica, elapsed=elapsed)
        self._report_skipped(overrides.skipped)
        return table, previous is not None and table.same_routing(previous)

    def _isolate(self, observed: Observed, overrides: Overrides, previous: RoutingTable | None,
                 now: float, elapsed: float | None = None) -> Overrides:
        """``overrides`` without each record that makes the planner raise when planned alone (skipped)."""
        def fails(alone: Overrides) -> str | None:
            try:
                plan(self.config, observed, alone, previous, now, elapsed=elapsed)
            except Exception as exc:
                return f"the planner fails with it: {type(exc).__name__}: {exc}"
            return None

        skipped = list(overrides.skipped)
        evacuations: list[Evacuation] = []
        for e in overrides.evacuations:
            why = fails(Overrides(evacuations=(e,)))
            if why is None:
                evacuations.append(e)
            else:
                skipped.append(Skipped(f"overrides/evacuations/{e.region}", "evacuation", why[:300]))
        restores: list[Restore] = []
        for r in overrides.restores:
            why = fails(Overrides(restores=(r,)))
            if why is None:
                restores.append(r)
            else:
                skipped.append(Skipped(f"overrides/restores/{r.region}", "restore", why[:300]))
        pins: list[Pin] = []
        for p in overrides.pins:
            why = fails(Overrides(pins=(p,)))
            if why is None:
                pins.append(p)
            else:
                skipped.append(Skipped(f"overrides/weights/{p.service}/{p.geo}", "pin", why[:300]))
        return Overrides(evacuations=tuple(evacuations), restores=tuple(restores), pins=tuple(pins),
                         skipped=tuple(skipped))

    def _report_skipped(self, skipped: tuple[Skipped, ...]) -> None:
        """A log line and a count for each record newly left out of the plan (the table notes it too)."""
        now = set(skipped)
        for s in sorted(now - self._skipped, key=lambda s: s.key):
            metrics.SKIPPED_RECORDS.labels(kind=s.kind).inc()
            log.error("override record skipped: the plan leaves it out", key=s.key, kind=s.kind, problem=s.problem,
                      replica=self.replica)
        self._skipped = now

    async def _read_previous(self, lost: asyncio.Event) -> RoutingTable | None:
        backoff = 0.1
        while not lost.is_set():
            try:
                return await self.store.get_table()
            except Exception as exc:
                log.warning("cannot read the current table; retrying", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.etcd.reconnect_max_seconds)
        return None
