"""The leader's loop: win the election, then plan and publish until leadership is lost.

While leading it follows health and overrides in etcd, debounces bursts of
changes, plans with the previous table (so ramps and hysteresis work) and
publishes in a transaction fenced by its leadership key. The moment the
lease is lost (``leadership.lost``), planning stops and publishing would be
refused by etcd anyway; the replica then campaigns again.

A table is published when the routing changes, and after every operator
action even if it does not (so steerctl can tell a leader has planned with
it). Overrides the planner cannot use are left out, noted in the table and
reported once each (``steering_controller_skipped_records_total``); one
stored record never stops the leader publishing.

Time: intervals (ramp steps, step_seconds, the start-up grace) are measured on
the monotonic clock, never the wall clock, whose only use is ``generated_at``
(the planner keeps that from going backwards). Each plan is told the seconds
since the previous table was planned, or since this leader read it if another
leader wrote it: a leader whose clock is off neither steps a ramp back nor
finishes it early (``steering.ramps``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from steering import logs
from steering.config import Config
from steering.controller import metrics
from steering.controller.healthmerge import merge
from steering.model import Observed, Overrides, Skipped, TargetHealth
from steering.overridecheck import usable
from steering.planner import plan
from steering.table import RoutingTable

log = logs.get("steering.leader")


class Leader:
    def __init__(self, config: Config, store: object, replica: str, clock: Callable[[], float] = time.time,
                 route53: object | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.route53 = route53  # a Route53Sink when the config has a route53 section; it runs only while leading
        self.store = store
        self.replica = replica
        self.clock = clock  # wall time, for generated_at only
        self.monotonic = monotonic  # for every interval
        self.leadership: object | None = None
        self.known = [r.id for r in config.regions] + [s.id for s in config.sites]
        self._stopping = False
        self._skipped: set[Skipped] = set()  # records left out of the last plan, to report each once

    @property
    def is_leader(self) -> bool:
        lead = self.leadership
        return lead is not None and not lead.lost.is_set()  # type: ignore[attr-defined]

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                leadership = await self.store.campaign(self.replica)  # type: ignore[attr-defined]
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
            try:
                await self._lead(leadership)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leader loop failed; resigning", replica=self.replica)
                await self._resign(leadership)
            finally:
                metrics.LEADER.set(0)
                self.leadership = None
            log.warning("leadership lost", replica=self.replica)

    async def stop(self) -> None:
        """Resign (so another replica takes over at once) and stop campaigning."""
        self._stopping = True
        if self.leadership is not None:
            await self._resign(self.leadership)

    async def _resign(self, leadership: object) -> None:
        try:
            await asyncio.wait_for(leadership.resign(), 3.0)  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("resign failed (the lease will expire)", replica=self.replica, error=str(exc))

    async def _lead(self, leadership: object) -> None:
        lost: asyncio.Event = leadership.lost  # type: ignore[attr-defined]
        started = self.monotonic()
        previous = await self._read_previous(lost)
        # Another leader's table counts as planned when read: the time before is not this leader's to measure.
        planned_at = self.monotonic()
        records: dict[str, TargetHealth] = {}
        overrides = Overrides()
        ready = {"health": False, "overrides": False}
        dirty = asyncio.Event()

        async def follow_health() -> None:
            nonlocal records
            async for snap in self.store.watch_health():  # type: ignore[attr-defined]
                records = snap
                ready["health"] = True
                dirty.set()

        operator_change = False

        async def follow_overrides() -> None:
            nonlocal overrides, operator_change
            async for snap in self.store.watch_overrides():  # type: ignore[attr-defined]
                operator_change = ready["overrides"]
                overrides = snap
                ready["overrides"] = True
                dirty.set()

        followers = [asyncio.create_task(follow_health(), name="leader-health"),
                     asyncio.create_task(follow_overrides(), name="leader-overrides")]
        sink_stop = asyncio.Event()
        if self.route53 is not None:
            if previous is not None:
                self.route53.notify(previous)  # type: ignore[attr-defined]
            followers.append(asyncio.create_task(self.route53.run(sink_stop), name="route53"))  # type: ignore[attr-defined]
        lost_wait = asyncio.create_task(lost.wait(), name="leader-lost")
        policy = self.config.policy
        last_step = 0.0
        due = 0.0  # a deferred step is due then
        try:
            while not lost.is_set():
                dirty_wait = asyncio.create_task(dirty.wait())
                await asyncio.wait({dirty_wait, lost_wait}, timeout=self._tick(started, due),
                                   return_when=asyncio.FIRST_COMPLETED)
                dirty_wait.cancel()
                if lost.is_set():
                    break
                if dirty.is_set() and self.config.controller.debounce_seconds:
                    await asyncio.sleep(self.config.controller.debounce_seconds)
                dirty.clear()
                if not all(ready.values()):
                    continue  # never plan from a half-read state
                now, mono = self.clock(), self.monotonic()
                prev_health = {t: st.health for t, st in
                               [*(previous.regions.items() if previous else ()),
                                *(previous.sites.items() if previous else ())]}
                health = merge(records, self.known, mono - started >= policy.silence_seconds, prev_health)
                t0 = time.perf_counter()
                # Planning a large topology takes tens of ms: in a thread, so agent streams keep flowing.
                table, unchanged = await asyncio.to_thread(self._plan, health, overrides, previous, now,
                                                           mono - planned_at)
                metrics.PLAN_SECONDS.observe(time.perf_counter() - t0)
                metrics.SILENT_SITES.set(sum(1 for h in health.values() if h.status == "silent"))
                if unchanged and not operator_change:
                    # An operator action that changes no routing still gets a new version: it is how
                    # steerctl knows a leader has planned with it (and does not say "done" otherwise).
                    continue
                urgent = previous is None or operator_change or _has_emergency(previous, table)
                if not urgent and mono - last_step < policy.step_seconds:
                    # Non-emergency moves (ramps, spill, recovery) go one step per step_seconds.
                    due = last_step + policy.step_seconds
                    continue
                ok = await self._publish(table, leadership, lost)
                if not ok:
                    break
                operator_change = False
                if self.route53 is not None:
                    self.route53.notify(table)  # type: ignore[attr-defined]
                previous = table
                last_step = planned_at = mono
                due = 0.0
        finally:
            sink_stop.set()
            for t in (*followers, lost_wait):
                t.cancel()
            await asyncio.gather(*followers, lost_wait, return_exceptions=True)

    def _plan(self, health: dict[str, TargetHealth], overrides: Overrides, previous: RoutingTable | None,
              now: float, elapsed: float | None = None) -> tuple[RoutingTable, bool]:
        """``elapsed``: monotonic seconds since ``previous`` was planned (None: ``now`` is trusted for it)."""
        observed = Observed(health=health)
        overrides = usable(self.config, overrides)
        try:
            table = plan(self.config, observed, overrides, previous, now, leader=self.replica, elapsed=elapsed)
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

        kept: dict[str, list[object]] = {"evacuations": [], "restores": [], "pins": []}
        skipped = list(overrides.skipped)
        for field, kind, key in (("evacuations", "evacuation", lambda r: f"overrides/evacuations/{r.region}"),
                                 ("restores", "restore", lambda r: f"overrides/restores/{r.region}"),
                                 ("pins", "pin", lambda r: f"overrides/weights/{r.service}/{r.geo}")):
            for record in getattr(overrides, field):
                why = fails(Overrides(**{field: (record,)}))
                if why is None:
                    kept[field].append(record)
                else:
                    skipped.append(Skipped(key(record), kind, why[:300]))
        return Overrides(evacuations=tuple(kept["evacuations"]), restores=tuple(kept["restores"]),  # type: ignore[arg-type]
                         pins=tuple(kept["pins"]), skipped=tuple(skipped))  # type: ignore[arg-type]

    def _report_skipped(self, skipped: tuple[Skipped, ...]) -> None:
        """A log line and a count for each record newly left out of the plan (the table notes it too)."""
        now = set(skipped)
        for s in sorted(now - self._skipped, key=lambda s: s.key):
            metrics.SKIPPED_RECORDS.labels(kind=s.kind).inc()
            log.error("override record skipped: the plan leaves it out", key=s.key, kind=s.kind, problem=s.problem,
                      replica=self.replica)
        self._skipped = now

    def _tick(self, started: float, due: float) -> float:
        """How long to sleep without events: ramps, deferred steps and the start-up grace end on the clock."""
        policy = self.config.policy
        now = self.monotonic()
        tick = policy.step_seconds
        grace_left = started + policy.silence_seconds - now
        if grace_left > 0:
            tick = min(tick, grace_left + 0.05)
        if due:
            tick = min(tick, due - now + 0.01)
        return max(0.05, tick)

    async def _read_previous(self, lost: asyncio.Event) -> RoutingTable | None:
        backoff = 0.1
        while not lost.is_set():
            try:
                return await self.store.get_table()  # type: ignore[attr-defined,no-any-return]
            except Exception as exc:
                log.warning("cannot read the current table; retrying", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.etcd.reconnect_max_seconds)
        return None

    async def _publish(self, table: RoutingTable, leadership: object, lost: asyncio.Event) -> bool:
        backoff = 0.1
        while not lost.is_set():
            try:
                ok = await self.store.publish_table(table, leadership)  # type: ignore[attr-defined]
            except Exception as exc:
                metrics.ETCD_ERRORS.labels(kind="table").inc()
                log.warning("publish failed; retrying", version=table.version, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.etcd.reconnect_max_seconds)
                continue
            if not ok:
                log.warning("publish refused: no longer the leader", version=table.version, replica=self.replica)
                return False
            metrics.ETCD_WRITES.labels(kind="table").inc()
            metrics.ETCD_REQUESTS.labels(kind="table").inc()
            metrics.TABLES_PUBLISHED.inc()
            for note in table.notes:
                log.error("routing alarm", version=table.version, note=note)
            log.info("published routing table", version=table.version, fail_open=table.fail_open,
                     converging=table.converging,
                     serving=",".join(r for r, st in table.regions.items() if st.serving))
            return True
        return False


def _has_emergency(before: RoutingTable, after: RoutingTable) -> bool:
    """A target stopped serving (health or evacuation): that change must not wait for the step timer."""
    for kind in ("regions", "sites"):
        old, new = getattr(before, kind), getattr(after, kind)
        for t, st in new.items():
            if t in old and old[t].serving and not st.serving:
                return True
    return before.fail_open != after.fail_open
