"""The drill runner: on the leading replica, advance the drill in flight one step per tick. I/O only.

Each tick: read ``drills/active`` and the drill; ``drillstep.advance`` decides (pure); carry out its effect
through the operator service (the same evacuation and restores an operator submits, safety rules and audit
included, with request ids derived from the drill id so a repeat is applied once); write the drill back,
comparing what was read. A replica that stops leading stops ticking; the next leader reads the last written
step and goes on. A tick that fails (etcd away) is retried on the next one; a drill record that cannot be
read is reported and released, never fatal to the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from prometheus_client import Counter, Gauge

from steering import auth, logs, promquery
from steering.controller import actions, drillstep
from steering.controller.drillapi import DrillService, decode
from steering.controller.operator import ActionError, OperatorService
from steering.drill import ABORTED, PHASES, Drill
from steering.event import Event, Severity, subject
from steering.ports import DrillStore, FollowedTable
from steering.store import keys
from steering.store.codec import record_bytes
from steering.v1 import steering_pb2 as pb

log = logs.get("steering.drills")

DRILLS = Counter("steering_drills_total", "Drills this replica finished as leader, by result", ["result"])
PHASE = Gauge("steering_drill_phase", "1 for the phase of the drill in flight (as this replica last ran it)",
              ["phase"])
TICK_SECONDS = 0.5


def _show_phase(phase: str) -> None:
    for p in PHASES:
        PHASE.labels(phase=p).set(1.0 if p == phase else 0.0)


class DrillRunner:
    def __init__(self, store: DrillStore, operator: OperatorService, tables: FollowedTable, replica: str,
                 is_leader: Callable[[], bool], tick: float = TICK_SECONDS, drills: DrillService | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``drills``: the service scheduled drills are started through (None: schedules are not run)."""
        self.store, self.operator, self.tables = store, operator, tables
        self.replica, self.is_leader, self.tick_seconds = replica, is_leader, tick
        self.drills, self.clock = drills, clock
        self._unanswered_since: float | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            if not self.is_leader():
                continue
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd away, a refused call: the next tick reads again
                log.warning("drill tick failed; retrying", replica=self.replica,
                            error=f"{type(exc).__name__}: {exc}")

    async def tick(self) -> Drill | None:
        active = await self.store.drills.active()
        if not active:
            _show_phase("")
            if self.drills is not None:
                await self._scheduled(self.clock())
            return None
        stored = await self.store.drills.get(active)
        d = decode(stored.value) if stored is not None else None
        if stored is None or d is None:
            log.error("drill record missing or unreadable; released", drill=active, replica=self.replica)
            await self.store.drills.release(active)
            return None
        if d.finished:
            await self.store.drills.release(d.id)
            return d
        table = self.tables.current or await self.store.get_table()
        if table is None:
            return d
        now = time.time()
        external, unanswered = await self._prometheus(d)
        step = drillstep.advance(d, drillstep.View(
            table, now, self.replica, drillstep.weights_text(table), external, unanswered,
            self.drills.config.drill.prometheus_unreachable_seconds if self.drills is not None else 30.0))
        new = step.drill
        if step.effect:
            problem = await self._effect(new, step.effect, now)
            if problem:
                new = drillstep.refused(new, step.effect, problem, now)
        if new == d:
            return d
        if not await self.store.drills.update(d.id, stored.value, record_bytes(new.to_dict()), new.finished):
            return d  # an abort or another replica wrote meanwhile: the next tick decides again
        _show_phase("" if new.finished else new.phase)
        if new.phase != d.phase or new.abort_cause != d.abort_cause:
            await self._announce(new)
        if new.finished:
            DRILLS.labels(result=new.phase).inc()
        return new

    async def _prometheus(self, d: Drill) -> tuple[dict[str, tuple[float, bool]], float]:
        """The drill's Prometheus guards, and for how long (this replica's monotonic clock) they have gone
        unanswered: a new leader starts counting afresh."""
        if self.drills is None or not (d.alerts or d.queries) or d.finished:
            return {}, 0.0
        try:
            found = await self.drills.prometheus(d)
        except promquery.PrometheusError as exc:
            now = time.monotonic()
            if self._unanswered_since is None:
                self._unanswered_since = now
                log.warning("prometheus guard unanswered", drill=d.id, region=d.region, error=str(exc))
            return {}, now - self._unanswered_since
        self._unanswered_since = None
        return found, 0.0

    async def _scheduled(self, now: float) -> None:
        """Start the first due schedule's drill, through the same preflight as an operator's. The schedule is
        marked started before the drill is, so a leader dying in between cannot start it twice in a window."""
        assert self.drills is not None
        found, _ = await self.drills.schedules()
        for s, raw in found:
            if not s.due(now):
                continue
            marked = replace(s, last_started_at=now, last_attempt_at=now, last_refusal="")
            if not await self.store.drills.update_schedule(s.id, raw, record_bytes(marked.to_dict())):
                return
            auth.act_as(f"schedule:{s.id}")
            req = pb.StartDrillRequest(
                region=s.region, reason=s.reason, ramp=pb.Ramp(step=s.step, interval_seconds=s.interval),
                hold_seconds=s.hold, restore_ramp=pb.Ramp(step=s.restore_step, interval_seconds=s.restore_interval),
                abort_if=list(s.guards))
            try:
                resp = await self.drills.start(req, schedule=s.id)
                after = replace(marked, last_drill=resp.id)
                log.info("scheduled drill started", schedule=s.id, drill=resp.id, region=s.region)
            except ActionError as exc:
                after = replace(marked, last_started_at=s.last_started_at, last_refusal=exc.message)
                log.warning("scheduled drill refused", schedule=s.id, region=s.region, refusal=exc.message)
            await self.store.drills.update_schedule(s.id, record_bytes(marked.to_dict()), record_bytes(after.to_dict()))
            return  # one drill at a time

    async def _effect(self, d: Drill, effect: drillstep.Effect, now: float) -> str:
        """Carry out ``effect`` as the operator service would for an operator; a refusal's message, or ''."""
        auth.act_as(f"drill:{d.id}")
        reason = f"drill {d.id}: {d.reason}"
        try:
            if effect == "evacuate":
                mode = pb.EVACUATION_MODE_NOW if d.step >= 1.0 else pb.EVACUATION_MODE_RAMP
                await self.operator.evacuate(pb.EvacuateRequest(
                    region=d.region, mode=mode, ramp=pb.Ramp(step=d.step, interval_seconds=d.interval),
                    reason=reason, request_id=f"{d.id}-evacuate"))
            elif effect == "restore":
                await self.operator.restore(pb.RestoreRequest(
                    region=d.region, mode=pb.EVACUATION_MODE_RAMP,
                    ramp=pb.Ramp(step=d.restore_step, interval_seconds=d.restore_interval),
                    reason=reason, request_id=f"{d.id}-restore"))
            else:
                await self._restore_now(d, f"drill {d.id} aborted ({d.abort_cause}: {d.abort_detail})"[:1000])
        except ActionError as exc:
            log.warning("drill step refused", drill=d.id, region=d.region, effect=effect, refusal=exc.message)
            return exc.message
        return ""

    async def _restore_now(self, d: Drill, reason: str) -> None:
        """At once: the evacuation removed, or, once a ramped restore has replaced it, that restore removed."""
        overrides = await self.store.get_overrides()
        if any(e.region == d.region for e in overrides.evacuations):
            await self.operator.restore(pb.RestoreRequest(region=d.region, mode=pb.EVACUATION_MODE_NOW,
                                                          reason=reason, request_id=f"{d.id}-abort"))
            return
        if actions.has_restore(overrides, d.region):
            await self.store.apply_operator_action(
                f"{d.id}-abort-restore", {}, [keys.restore_path(d.region)],
                {"action": "restore", "region": d.region, "reason": reason, "forced": False,
                 "actor": auth.actor(), "before": "", "after": "", "details": {"mode": "now", "drill": d.id}})

    async def _announce(self, d: Drill) -> None:
        last = d.timeline[-1] if d.timeline else {}
        severity: Severity = "warning" if d.aborted or d.phase == ABORTED else "info"
        message = f"drill {d.id} of {d.region}: {d.phase}" + (f" ({last.get('note')})" if last.get("note") else "")
        log.info("drill phase", drill=d.id, region=d.region, phase=d.phase, cause=d.abort_cause,
                 detail=d.abort_detail, replica=self.replica)
        await self.store.put_events([Event(
            time=time.time(), kind="drill", severity=severity, subject=subject("drill", d.id), message=message,
            details={"region": d.region, "phase": d.phase, "cause": d.abort_cause, "detail": d.abort_detail},
            replica=self.replica)])
