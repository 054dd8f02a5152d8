"""``DrillService``: start, read, abort and list chaos drills on any replica (docs/drills.md).

Start validates every field (INVALID_ARGUMENT naming it: nothing stored), runs the preflight on the live
state (the operator service's own read, and its evacuation decision with the drill's ramp: the safety rules)
and, unless ``dry_run``, stores the drill in phase ``preflight`` as the one in flight. The leader's runner
(``drillrunner.py``) takes it from there. Abort stores the operator's reason on the drill; the runner
restores at once on its next tick. Start and abort are audited (``steerctl history``), and so are the
evacuation and restores the runner submits (their reason names the drill).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import replace
from typing import Any, NoReturn

import grpc

from steering import auth, drillguard, drillschedule, limits, logs, promquery
from steering.config import Config
from steering.controller import actions
from steering.controller.convert import preview_to_pb
from steering.controller.drillstep import preflight, weights_text
from steering.controller.operator import ActionError, Context, OperatorService, _guard
from steering.drill import FINISHED, HOLD_SECONDS, PREFLIGHT, Drill, check_id
from steering.ports import DrillStore
from steering.store.client import StoreError
from steering.store.codec import record_bytes
from steering.store.keys import check_component
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.drills")

DEFAULT_HOLD = 600.0
MAX_LIST = 200
_ATTEMPTS = 5


def _bad(field: str, message: str) -> NoReturn:
    raise ActionError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}", field=field)


def new_id(now: float) -> str:
    """``d-<seconds in base 36><random>``: sorts by start time, unique without coordination."""
    n, digits = int(now), ""
    while True:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if n == 0:
            break
    return f"d-{digits}{secrets.token_hex(3)}"


def decode(value: bytes) -> Drill | None:
    try:
        return Drill.from_dict(json.loads(value))
    except (ValueError, TypeError):
        return None


def drill_pb(d: Drill) -> pb.DrillResponse:
    return pb.DrillResponse(id=d.id, phase=d.phase, drill_json=json.dumps(d.to_dict(), sort_keys=True))


class DrillService(pb_grpc.DrillServiceServicer):
    def __init__(self, config: Config, store: DrillStore, operator: OperatorService) -> None:
        self.config = config
        self.store = store
        self.operator = operator

    # ------------------------------------------------------------------ validation

    def _ramp(self, field: str, ramp: pb.Ramp) -> tuple[float, float]:
        policy = self.config.policy
        step = (limits.number(f"{field}.step", ramp.step, limits.RAMP_STEP) if ramp.step != 0
                else min(max(policy.max_shift, limits.RAMP_STEP[0]), 1.0))
        interval = (limits.number(f"{field}.interval_seconds", ramp.interval_seconds, limits.RAMP_INTERVAL)
                    if ramp.interval_seconds != 0 else min(max(policy.step_seconds, 0.1), 86400.0))
        return step, interval

    def _prometheus_guards(self, req: pb.StartDrillRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
        for name, items in (("abort_on_alert", req.abort_on_alert), ("abort_query", req.abort_query)):
            if len(items) > drillguard.MAX_GUARDS:
                _bad(name, f"{len(items)} entries; at most {drillguard.MAX_GUARDS}")
            if items and self.config.drill.prometheus_url is None:
                _bad(name, "needs drill.prometheus_url in the controller's config")
        try:
            alerts = tuple(promquery.check_alert(f"abort_on_alert[{i}]", a) for i, a in enumerate(req.abort_on_alert))
            queries = tuple(promquery.check_query(f"abort_query[{i}]", q) for i, q in enumerate(req.abort_query))
        except ValueError as exc:
            field = str(exc).split(":", 1)[0]
            raise ActionError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), field=field) from None
        return alerts, queries

    async def prometheus(self, d: Drill) -> dict[str, tuple[float, bool]]:
        """The drill's Prometheus guards now (``promquery.PrometheusError`` when Prometheus does not answer)."""
        s = self.config.drill
        if not (d.alerts or d.queries) or s.prometheus_url is None:
            return {}
        return await promquery.evaluate(s.prometheus_url, s.prometheus_timeout_seconds, d.alerts, d.queries)

    def _validated(self, req: pb.StartDrillRequest, now: float) -> tuple[Drill, tuple[drillguard.Guard, ...]]:
        regions = [r.id for r in self.config.regions]
        if not req.region:
            _bad("region", "missing")
        limits.text("region", req.region, limits.MAX_ID)
        if req.region not in regions:
            _bad("region", f"unknown region {req.region!r} (known: {', '.join(regions)})")
        reason = limits.text("reason", req.reason, limits.MAX_REASON).strip()
        if not reason:
            _bad("reason", "required: say why this drill runs")
        step, interval = self._ramp("ramp", req.ramp)
        restore_step, restore_interval = self._ramp("restore_ramp", req.restore_ramp)
        hold = limits.number("hold_seconds", req.hold_seconds, HOLD_SECONDS) if req.hold_seconds != 0 else DEFAULT_HOLD
        if len(req.abort_if) > drillguard.MAX_GUARDS:
            _bad("abort_if", f"{len(req.abort_if)} guards; at most {drillguard.MAX_GUARDS}")
        guards = []
        for i, text in enumerate(req.abort_if):
            try:
                guards.append(drillguard.parse(text, set(regions)))
            except drillguard.GuardError as exc:
                _bad(f"abort_if[{i}]", str(exc))
        alerts, queries = self._prometheus_guards(req)
        d = Drill(id=new_id(now), region=req.region, reason=reason, actor=auth.actor(), step=step, interval=interval,
                  hold=hold, restore_step=restore_step, restore_interval=restore_interval,
                  guards=tuple(str(g) for g in guards), alerts=alerts, queries=queries, created_at=now,
                  phase_since=now, hard_limit=self.config.policy.hard_limit)
        return d.moved(PREFLIGHT, now, "preflight passed"), tuple(guards)

    # ------------------------------------------------------------------ one implementation (gRPC below; no REST yet)

    async def start(self, req: pb.StartDrillRequest, schedule: str = "") -> pb.DrillResponse:
        """``schedule``: the schedule starting it (the leader's runner), named on the drill and in its audit."""
        now = time.time()
        d, guards = self._validated(req, now)
        if schedule:
            d = replace(d, schedule=schedule, actor=f"schedule:{schedule}")
        table = await self.operator._table()
        if table is None:
            raise ActionError(grpc.StatusCode.UNAVAILABLE, "no routing table yet: the leader has not planned")
        live = await self.operator._live(now)
        decision = actions.decide_evacuate(self.config, actions.EvacuateRequest(
            region=d.region, mode="ramp", step=d.step, interval=d.interval, reason=f"drill {d.id}: {d.reason}",
            actor=d.actor, request_id=f"{d.id}-evacuate"), live)
        active = await self.store.drills.active()
        why = preflight(d.region, table, live.overrides, active, guards,
                        decision.message.removeprefix("refused by ") if decision.refused else "")
        try:
            why += [f"{label} is already true (value {v:.4g})" for label, (v, hit) in (await self.prometheus(d)).items()
                    if hit]
        except promquery.PrometheusError as exc:
            why.append(f"Prometheus does not answer: {exc}")
        preview = preview_to_pb(decision.preview) if decision.preview is not None else None
        if why:
            log.warning("drill refused by preflight", region=d.region, refusal="; ".join(why), actor=d.actor)
            raise ActionError(grpc.StatusCode.FAILED_PRECONDITION, "preflight refused: " + "; ".join(why), preview)
        d = replace(d, weights_before=weights_text(table))
        if req.dry_run:
            resp = drill_pb(d)
            resp.dry_run = True
            if preview is not None:
                resp.preview.CopyFrom(preview)
            return resp
        other = await self.store.drills.create(d.id, record_bytes(d.to_dict()))
        if other is not None:
            raise ActionError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"preflight refused: another drill is in flight: {other}")
        await self._audit(f"{d.id}-start", {
            "action": "drill_start", "region": d.region, "reason": f"drill {d.id}: {d.reason}", "forced": False,
            "actor": d.actor, "before": actions.summary(table), "after": "",
            "details": {"drill": d.id, "guards": list(d.guards), "hold": d.hold, "ramp": [d.step, d.interval],
                        "schedule": d.schedule}})
        log.info("drill started", drill=d.id, region=d.region, actor=d.actor)
        resp = drill_pb(d)
        if preview is not None:
            resp.preview.CopyFrom(preview)
        return resp

    async def _audit(self, request_id: str, record: dict[str, Any]) -> None:
        """The audit of a drill action already stored: etcd failing now must not report the action as failed."""
        try:
            await self.store.apply_operator_action(request_id, {}, [], record)
        except StoreError as exc:
            log.warning("drill action not audited", request_id=request_id, error=str(exc))

    async def _find(self, drill_id: str) -> Drill:
        if drill_id:
            try:
                check_id(drill_id)
            except ValueError as exc:
                _bad("id", str(exc).split(": ", 1)[-1])
            stored = await self.store.drills.get(drill_id)
            if stored is None:
                raise ActionError(grpc.StatusCode.NOT_FOUND, f"id: no drill {drill_id!r}", field="id")
            d = decode(stored.value)
            if d is None:
                raise ActionError(grpc.StatusCode.DATA_LOSS, f"drill {drill_id}: the stored record cannot be read")
            return d
        active = await self.store.drills.active()
        if active:
            return await self._find(active)
        drills, _ = await self._all()
        if not drills:
            raise ActionError(grpc.StatusCode.NOT_FOUND, "no drill has run yet")
        return drills[0]

    async def _all(self) -> tuple[list[Drill], int]:
        out, skipped = [], 0
        for s in await self.store.drills.items():
            d = decode(s.value)
            if d is None:
                skipped += 1
                log.warning("drill record unreadable; skipped", drill=s.id)
                continue
            out.append(d)
        out.sort(key=lambda d: d.created_at, reverse=True)
        return out, skipped

    async def get(self, req: pb.GetDrillRequest) -> pb.DrillResponse:
        return drill_pb(await self._find(req.id))

    async def list_drills(self, req: pb.ListDrillsRequest) -> pb.ListDrillsResponse:
        limit = limits.integer("limit", req.limit or 50, (1, MAX_LIST))
        drills, skipped = await self._all()
        return pb.ListDrillsResponse(drills=[drill_pb(d) for d in drills[:limit]], skipped=skipped)

    async def abort(self, req: pb.AbortDrillRequest) -> pb.DrillResponse:
        if not req.id:
            _bad("id", "missing")
        reason = limits.text("reason", req.reason, limits.MAX_REASON).strip()
        if not reason:
            _bad("reason", "required: say why the drill stops")
        for _ in range(_ATTEMPTS):
            d = await self._find(req.id)
            if d.phase in FINISHED:
                raise ActionError(grpc.StatusCode.FAILED_PRECONDITION, f"drill {d.id} is already {d.phase}")
            if d.abort_requested or d.aborted:
                return drill_pb(d)
            stored = await self.store.drills.get(d.id)
            if stored is None:
                continue
            new = replace(d, abort_requested=f"{auth.actor()}: {reason}")
            if await self.store.drills.update(d.id, stored.value, record_bytes(new.to_dict())):
                await self._audit(f"{d.id}-abort-request", {
                    "action": "drill_abort", "region": d.region, "reason": f"drill {d.id}: {reason}", "forced": False,
                    "actor": auth.actor(), "before": "", "after": "", "details": {"drill": d.id}})
                log.warning("drill abort requested", drill=d.id, region=d.region, actor=auth.actor())
                return drill_pb(new)
        raise ActionError(grpc.StatusCode.ABORTED, "the drill kept changing; retry")

    # ------------------------------------------------------------------ schedules

    async def add_schedule(self, req: pb.AddDrillScheduleRequest) -> pb.DrillScheduleResponse:
        now = time.time()
        d, _ = self._validated(req.drill, now)  # the drill's own fields, named as in StartDrill
        every = limits.number("every_seconds", req.every_seconds, drillschedule.EVERY)
        try:
            window = drillschedule.parse_window("window", req.window)
            if len(req.blackouts) > drillschedule.MAX_BLACKOUTS:
                _bad("blackouts", f"{len(req.blackouts)} ranges; at most {drillschedule.MAX_BLACKOUTS}")
            blackouts = tuple(drillschedule.parse_blackout(f"blackouts[{i}]", b) for i, b in enumerate(req.blackouts))
        except ValueError as exc:
            if isinstance(exc, ActionError):
                raise
            field = str(exc).split(":", 1)[0]
            raise ActionError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), field=field) from None
        if every < window.minutes * 60:
            _bad("every_seconds", f"{every:g}s is shorter than the window ({window.minutes} minutes)")
        s = drillschedule.Schedule(
            id="s-" + new_id(now).removeprefix("d-"), region=d.region, every=every, window=str(window), reason=d.reason,
            blackouts=blackouts, step=d.step, interval=d.interval, hold=d.hold, restore_step=d.restore_step,
            restore_interval=d.restore_interval, guards=d.guards, actor=auth.actor(), created_at=now)
        if not await self.store.drills.add_schedule(s.id, record_bytes(s.to_dict())):
            raise ActionError(grpc.StatusCode.ABORTED, "a schedule with this id exists; retry")
        await self._audit(
            f"{s.id}-add", {"action": "drill_schedule_add", "region": s.region, "reason": s.reason,
                                    "forced": False, "actor": s.actor, "before": "", "after": "",
                                    "details": {"schedule": s.id, "every": every, "window": s.window,
                                                "blackouts": [list(b) for b in blackouts]}})
        log.info("drill schedule added", schedule=s.id, region=s.region, window=s.window, actor=s.actor)
        return pb.DrillScheduleResponse(id=s.id, schedule_json=json.dumps(s.to_dict(), sort_keys=True))

    async def schedules(self) -> tuple[list[tuple[drillschedule.Schedule, bytes]], int]:
        out, skipped = [], 0
        for stored in await self.store.drills.schedules():
            try:
                out.append((drillschedule.Schedule.from_dict(json.loads(stored.value)), stored.value))
            except (ValueError, TypeError) as exc:
                skipped += 1
                log.warning("drill schedule unreadable; skipped", schedule=stored.id, error=str(exc))
        return out, skipped

    async def list_schedules(self, req: pb.ListDrillSchedulesRequest) -> pb.ListDrillSchedulesResponse:
        found, skipped = await self.schedules()
        return pb.ListDrillSchedulesResponse(
            schedules=[pb.DrillScheduleResponse(id=s.id, schedule_json=json.dumps(s.to_dict(), sort_keys=True))
                       for s, _ in sorted(found, key=lambda x: x[0].created_at)], skipped=skipped)

    async def remove_schedule(self, req: pb.RemoveDrillScheduleRequest) -> pb.DrillScheduleResponse:
        if not req.id:
            _bad("id", "missing")
        limits.text("id", req.id, 64)
        try:
            check_component("id", req.id)
        except ValueError as exc:
            _bad("id", str(exc).split(": ", 1)[-1])
        if not await self.store.drills.remove_schedule(req.id):
            raise ActionError(grpc.StatusCode.NOT_FOUND, f"id: no schedule {req.id!r}", field="id")
        await self._audit(
            f"{req.id}-remove-{secrets.token_hex(3)}",
            {"action": "drill_schedule_remove", "region": "", "reason": "", "forced": False, "actor": auth.actor(),
             "before": "", "after": "", "details": {"schedule": req.id}})
        return pb.DrillScheduleResponse(id=req.id)

    # ------------------------------------------------------------------ gRPC

    async def StartDrill(self, request: pb.StartDrillRequest, context: Context) -> pb.DrillResponse:
        return await _guard(context, self.start(request))

    async def GetDrill(self, request: pb.GetDrillRequest, context: Context) -> pb.DrillResponse:
        return await _guard(context, self.get(request))

    async def AbortDrill(self, request: pb.AbortDrillRequest, context: Context) -> pb.DrillResponse:
        return await _guard(context, self.abort(request))

    async def ListDrills(self, request: pb.ListDrillsRequest, context: Context) -> pb.ListDrillsResponse:
        return await _guard(context, self.list_drills(request))


    async def AddSchedule(self, request: pb.AddDrillScheduleRequest, context: Context) -> pb.DrillScheduleResponse:
        return await _guard(context, self.add_schedule(request))

    async def ListSchedules(self, request: pb.ListDrillSchedulesRequest,
                            context: Context) -> pb.ListDrillSchedulesResponse:
        return await _guard(context, self.list_schedules(request))

    async def RemoveSchedule(self, request: pb.RemoveDrillScheduleRequest,
                             context: Context) -> pb.DrillScheduleResponse:
        return await _guard(context, self.remove_schedule(request))
