"""``OperatorService``: Status, Evacuate, Restore, Pin/Unpin, History and Plan on any replica.

Every replica answers: reads come from etcd and the table this replica
follows; writes go to etcd through ``Store.apply_operator_action`` (one txn
with the audit record, applied once per request id), and the leader —
whichever replica it is — picks the change up from its overrides watch.
While etcd cannot be reached, Status still answers, from what this replica
knows (its table, the health records, leader and overrides it last read,
its own agents), marked ``stale`` with the time etcd stopped answering.

Order of an action: validate the request (INVALID_ARGUMENT naming the
field); a request id seen before returns the earlier result (``duplicate``);
preview on the live state; the safety rules (FAILED_PRECONDITION naming the
rule and the numbers, unless ``force``); then, unless ``dry_run``, write.
A refused call carries its preview in the trailing metadata
``steering-preview-bin`` (a serialized ``Preview``), so a client can still
show what would have happened.

The rules are checked on a read and the write compares the operator sequence
(``oplog/seq``) of that read: if another action landed in between, the whole
action is re-read, re-checked and retried, so two operators acting at the
same moment cannot both pass a rule only one of them may pass. The planner
also refuses (and flags) any unforced evacuation that would leave fewer than
``min_serving_regions``.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc

from steering import auth, limits, logs
from steering.config import TOTAL_WEIGHT
from steering.controller import safety, sitestatus
from steering.controller.convert import (
    evacuation_to_pb,
    preview_to_pb,
    restore_to_pb,
    table_to_pb,
    timestamp,
)
from steering.model import Evacuation, Overrides, Pin, Restore, TargetHealth
from steering.store.client import StoreError, StoreUnavailable
from steering.store.store import OverridesChanged
from steering.store.keys import check_component
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc
from steering.weights import apportion

log = logs.get("steering.operator")

PREVIEW_TRAILER = "steering-preview-bin"


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, preview: pb.Preview | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.preview = code, message, preview


def _bad(field: str, message: str) -> NoReturn:
    raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}")


def _json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def summary(table: RoutingTable) -> str:
    """One line: each region's planned utilization, or why it does not serve."""
    parts = []
    for rid, st in table.regions.items():
        if st.serving:
            parts.append(f"{rid} {st.utilization or 0:.0%}")
        else:
            parts.append(f"{rid} out (" + ("evacuated" if st.evacuation else st.health) + ")")
    return ", ".join(parts) + (" FAIL-OPEN" if table.fail_open else "")


_SEQ: contextvars.ContextVar[int] = contextvars.ContextVar("operator_seq")
_ATTEMPTS = 5
# With etcd known to be away, Status tries it this long before answering from memory (etcd may be back).
STALE_READ_SECONDS = 1.0


async def _retrying(action: Callable[[], Awaitable[Any]]) -> Any:
    """Run a read-check-write action again when another operator action landed in between.

    Each attempt re-reads the live state and re-checks the safety rules, so two concurrent evacuations
    cannot both pass a rule that only one of them may pass."""
    for attempt in range(_ATTEMPTS):
        try:
            return await action()
        except OverridesChanged:
            if attempt == _ATTEMPTS - 1:
                raise _Abort(grpc.StatusCode.ABORTED,
                             "other operator actions kept landing at the same time; retry") from None
            log.info("operator action raced another; re-checking", attempt=attempt + 1)
    raise AssertionError("unreachable")


async def _guard(context: grpc.aio.ServicerContext, coro: Any) -> Any:
    """Turn our refusals and etcd failures into status codes with a one-line message."""
    try:
        return await coro
    except _Abort as exc:
        if exc.preview is not None:
            context.set_trailing_metadata(((PREVIEW_TRAILER, exc.preview.SerializeToString()),))
        await context.abort(exc.code, exc.message)
    except StoreError as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcd: {exc}")
    except ValueError as exc:  # a value outside ``steering.limits``, or a key component the store refuses
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


class OperatorService(pb_grpc.OperatorServiceServicer):
    def __init__(self, controller: Any) -> None:
        self.ctl = controller
        self.config = controller.config
        self.store = controller.store
        self._records_cache: tuple[float, dict[str, TargetHealth]] | None = None

    # ------------------------------------------------------------------ shared

    async def _table(self) -> RoutingTable | None:
        return self.ctl.tables.current or await self.store.get_table()

    async def _live(self) -> tuple[dict[str, TargetHealth], Overrides, RoutingTable | None]:
        table = await self._table()
        overrides, seq = await self.store.get_overrides_versioned()
        _SEQ.set(seq)  # the write compares it: rules checked on this read still hold when it lands
        return safety.live_health(table), overrides, table

    def _region(self, region: str, field: str = "region") -> str:
        if not region:
            _bad(field, "missing")
        limits.text(field, region, limits.MAX_ID)
        if region not in {r.id for r in self.config.regions}:
            _bad(field, f"unknown region {region!r} (known: {', '.join(r.id for r in self.config.regions)})")
        return region

    def _ramp(self, mode: int, ramp: pb.Ramp, field: str = "ramp") -> tuple[str, float, float]:
        """(mode, step, interval); unspecified means a ramp at the policy's pace.

        Numbers that are set are checked against ``limits`` in every mode (NaN, inf, 1e-9 and 1e12 are
        refused, never stored: one stored NaN once stopped every plan); unset ones take the policy's pace,
        brought within the same bounds so that what is stored always reads back."""
        policy = self.config.policy
        if mode not in (pb.EVACUATION_MODE_NOW, pb.EVACUATION_MODE_RAMP, pb.EVACUATION_MODE_UNSPECIFIED):
            _bad("mode", f"unknown mode {mode}")
        # ``!= 0`` rather than truthiness: NaN is truthy but -0.0 is not, and both must be judged, not defaulted.
        step = (limits.number(f"{field}.step", ramp.step, limits.RAMP_STEP) if ramp.step != 0
                else _within(policy.max_shift, limits.RAMP_STEP))
        interval = (limits.number(f"{field}.interval_seconds", ramp.interval_seconds, limits.RAMP_INTERVAL)
                    if ramp.interval_seconds != 0 else _within(policy.step_seconds, limits.RAMP_INTERVAL))
        if mode == pb.EVACUATION_MODE_NOW:
            return "now", 1.0, interval
        return "ramp", step, interval

    @staticmethod
    def _reason(reason: str, field: str = "reason") -> str:
        return limits.text(field, reason, limits.MAX_REASON).strip()

    def _request_id(self, rid: str) -> str:
        if not rid:
            return uuid.uuid4().hex
        limits.text("request_id", rid, limits.MAX_REQUEST_ID)
        try:
            return check_component("request_id", rid)
        except ValueError as exc:
            _bad("request_id", str(exc).split(": ", 1)[-1])

    async def _seen(self, rid: str) -> str | None:
        """The audit id of an earlier action with this request id, if any."""
        resp = await self.store._get(self.store.keys.request(rid))
        return resp.kvs[0].value.decode() if resp.kvs else None

    async def _apply(self, rid: str, puts: dict[str, bytes], deletes: list[str], audit: dict[str, Any]) -> tuple[bool, str]:
        audit = {**audit, "actor": auth.actor()}
        applied, audit_id = await self.store.apply_operator_action(rid, puts, deletes, audit,
                                                                   expect_seq=_SEQ.get(None))
        log.info("operator action", action=audit["action"], region=audit.get("region", ""),
                 service=audit.get("service", ""), geo=audit.get("geo", ""), actor=audit["actor"],
                 forced=audit.get("forced", False), request_id=rid, audit_id=audit_id, applied=applied)
        return applied, audit_id

    def _refuse(self, refusals: list[safety.Refusal], preview: safety.Preview, force: bool,
                what: str) -> list[str]:
        """Raise FAILED_PRECONDITION for refusals unless forced; forced ones come back as warnings."""
        if not refusals:
            return []
        text = "; ".join(str(r) for r in refusals)
        if not force:
            log.warning("operator action refused", action=what, refusal=text, actor=auth.actor())
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused by {text}", preview_to_pb(preview))
        return [f"forced past {r}" for r in refusals]

    # ------------------------------------------------------------------ Status / History

    async def _health_records(self) -> dict[str, TargetHealth]:
        """The ``health/`` records, read at most once a second: ``steerctl evacuate`` polls Status while it
        follows a ramp, and with thousands of sites each read is megabytes."""
        now = time.monotonic()
        cached = self._records_cache
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        records = await self.store.get_health()
        self._records_cache = (now, records)
        return records

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        return await _guard(context, self._status())

    async def _status(self) -> pb.StatusResponse:
        """From etcd; if it cannot be reached, from what this replica knows, marked stale."""
        try:
            if getattr(self.store, "unreachable_since", None) is None:
                return await self._status_live()  # each read gives up after etcd.timeout_seconds
            async with asyncio.timeout(STALE_READ_SECONDS):
                return await self._status_live()
        except (StoreUnavailable, TimeoutError):
            pass
        since = getattr(self.store, "unreachable_since", None) or time.time()
        log.warning("etcd unreachable: status answered from this replica's last known state",
                    replica=self.ctl.replica, unreachable_since=since)
        return self._status_known(since)

    async def _status_live(self) -> pb.StatusResponse:
        leader = await self.store.leader() or ""
        table = await self._table()
        records = await self._health_records() if table is not None else {}
        overrides = await self.store.get_overrides()
        resp = self._status_response(leader, table, records, overrides)
        if resp.route53.enabled and hasattr(self.store, "get_status"):
            await self._route53_status(resp.route53)
        return resp

    def _status_known(self, since: float) -> pb.StatusResponse:
        """Status without etcd: the table this replica follows, the health records and overrides it last
        read, the leader it last saw (or the one that published its table, whichever it learnt later)."""
        table = self.ctl.tables.current
        leader = table.leader if table is not None else ""
        seen = getattr(self.store, "last_leader", None)
        if seen is not None and (table is None or seen[1] >= self.ctl.tables.received_at):
            leader = seen[0] or ""
        if self.ctl.leader.is_leader:
            leader = self.ctl.replica
        records = self._records_cache[1] if self._records_cache is not None else {}
        known = getattr(self.store, "last_overrides", None)
        resp = self._status_response(leader, table, records, known[0] if known is not None else Overrides())
        resp.stale = True
        resp.etcd_unreachable_since.CopyFrom(timestamp(since))
        return resp

    def _status_response(self, leader: str, table: RoutingTable | None, records: dict[str, TargetHealth],
                         overrides: Overrides) -> pb.StatusResponse:
        resp = pb.StatusResponse(replica=self.ctl.replica, connected_agents=self.ctl.ingest.connected_agents,
                                 leader=leader)
        if table is not None:
            resp.table.CopyFrom(table_to_pb(table, with_json=True))
            resp.table_age_seconds = max(0.0, time.time() - table.generated_at)
            newest = sitestatus.newest_records(records)
            silence = self.config.policy.silence_seconds
            for tid, st in [*table.regions.items(), *table.sites.items()]:
                kind = pb.SITE_KIND_REGION if st.kind == "region" else pb.SITE_KIND_CACHE
                why = sitestatus.site_why(st.health, newest.get(tid), self.ctl.ingest.last_heard(tid),
                                          self.ctl.replica, silence)
                site = resp.sites.add(site=tid, region=st.region, kind=kind, status=table_to_pb_health(st.health),
                                      capacity=st.capacity, load=st.load, heard_by=why.heard_by,
                                      last_report_local=why.last_report_local, detail=why.detail)
                if why.last_report is not None:
                    site.last_report.CopyFrom(timestamp(why.last_report))
                if why.last_change is not None:
                    site.last_change.CopyFrom(timestamp(why.last_change))
                for c in why.checks:
                    site.checks.add(name=c.name, kind=c.kind, ok=False, detail=c.detail)
        for e in overrides.evacuations:
            resp.evacuations.append(evacuation_to_pb(e))
        for r in overrides.restores:
            resp.evacuations.append(restore_to_pb(r))
        resp.route53.enabled = self.config.route53 is not None
        return resp

    async def _route53_status(self, out: pb.Route53Status) -> None:
        """The leader's last Route 53 sync, as it shares it under ``status/route53``."""
        blob = await self.store.get_status("route53")
        if not blob:
            return
        try:
            data = json.loads(blob)
            started, duration = float(data.get("started_at", 0.0)), float(data.get("duration", 0.0))
            out.last_sync.CopyFrom(timestamp(started + duration))
            out.last_duration_seconds = duration
            out.last_changes = int(data.get("change_count", 0))
            out.last_error = str(data.get("error") or "")
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("route53 status unreadable", error=str(exc))

    async def History(self, request: pb.HistoryRequest, context: grpc.aio.ServicerContext) -> pb.HistoryResponse:
        return await _guard(context, self._history(request))

    async def _history(self, request: pb.HistoryRequest) -> pb.HistoryResponse:
        resp = pb.HistoryResponse()
        for rec in await self.store.list_audit(min(request.limit or 50, 1000)):
            details = rec.get("details", {})
            resp.records.add(
                id=str(rec.get("id", "")), time=timestamp(float(rec.get("time", 0.0))), actor=str(rec.get("actor", "")),
                action=str(rec.get("action", "")), region=str(rec.get("region", "")),
                service=str(rec.get("service", "")), geo=str(rec.get("geo", "")), reason=str(rec.get("reason", "")),
                request_id=str(rec.get("request_id", "")), forced=bool(rec.get("forced", False)),
                before=str(rec.get("before", "")), after=str(rec.get("after", "")),
                details_json=json.dumps(details, sort_keys=True))
        return resp

    # ------------------------------------------------------------------ Evacuate / Restore

    async def Evacuate(self, request: pb.EvacuateRequest, context: grpc.aio.ServicerContext) -> pb.EvacuateResponse:
        return await _guard(context, _retrying(lambda: self._evacuate(request)))

    async def _evacuate(self, req: pb.EvacuateRequest) -> pb.EvacuateResponse:
        region = self._region(req.region)
        if not self._reason(req.reason):
            _bad("reason", "required: say why traffic leaves the region")
        mode, step, interval = self._ramp(req.mode, req.ramp)
        rid = self._request_id(req.request_id)
        if not req.dry_run:
            earlier = await self._seen(rid)
            if earlier is not None:
                return pb.EvacuateResponse(applied=True, duplicate=True, request_id=rid, audit_id=earlier)
        now = time.time()
        health, overrides, _ = await self._live()
        evac = Evacuation(region=region, mode=mode, step=step, interval=interval, started_at=now,  # type: ignore[arg-type]
                          reason=req.reason.strip(), actor=auth.actor(), forced=req.force, request_id=rid)
        # Previewed as forced: the planner would block it on min_serving_regions, and the preview must show
        # what the evacuation does (the rules below decide whether it may).
        p = safety.preview(self.config, health, overrides,
                           safety.with_evacuation(overrides, dataclasses.replace(evac, forced=True)), now)
        warnings = self._refuse(safety.evacuation_refusals(self.config, health, overrides, evac, p, now), p,
                                req.force, "evacuate")
        if health.get(region, TargetHealth()).status in ("unhealthy", "silent"):
            warnings.append(f"{region} is {health[region].status}: it already receives no traffic")
        resp = pb.EvacuateResponse(dry_run=req.dry_run, preview=preview_to_pb(p), request_id=rid, warnings=warnings)
        if req.dry_run:
            return resp
        restores = [f"overrides/restores/{region}"] if _has_restore(overrides, region) else []
        applied, audit_id = await self._apply(
            rid, {f"overrides/evacuations/{region}": _json(evac.to_dict())}, restores,
            {"action": "evacuate", "region": region, "reason": evac.reason, "forced": req.force,
             "before": summary(p.before), "after": summary(p.after),
             "details": {"mode": mode, "step": step, "interval": interval, "warnings": warnings}})
        resp.applied, resp.duplicate, resp.audit_id = True, not applied, audit_id
        return resp

    async def Restore(self, request: pb.RestoreRequest, context: grpc.aio.ServicerContext) -> pb.RestoreResponse:
        return await _guard(context, _retrying(lambda: self._restore(request)))

    async def _restore(self, req: pb.RestoreRequest) -> pb.RestoreResponse:
        region = self._region(req.region)
        reason = self._reason(req.reason) or "restore"
        mode, step, interval = self._ramp(req.mode, req.ramp)
        rid = self._request_id(req.request_id)
        if not req.dry_run:
            earlier = await self._seen(rid)
            if earlier is not None:
                return pb.RestoreResponse(applied=True, duplicate=True, request_id=rid, audit_id=earlier)
        now = time.time()
        health, overrides, _ = await self._live()
        evac_key = f"overrides/evacuations/{region}"
        unusable = any(s.key == evac_key for s in overrides.skipped)
        if not any(e.region == region for e in overrides.evacuations) and not unusable:
            conflict = safety.check_conflicts(overrides, region, now, action="restore")
            if conflict is not None:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused by {conflict}")
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"refused by not_evacuated: {region} has no evacuation to restore")
        if not any(e.region == region for e in overrides.evacuations):
            # Only an evacuation record the planner skips (it never took effect): removing it is the restore.
            mode = "now"
        after = safety.without_evacuation(overrides, region)
        puts: dict[str, bytes] = {}
        if mode == "ramp":
            restore = Restore(region=region, step=step, interval=interval, started_at=now, reason=reason,
                              actor=auth.actor())
            after = Overrides(evacuations=after.evacuations, restores=(*after.restores, restore), pins=after.pins)
            puts[f"overrides/restores/{region}"] = _json(restore.to_dict())
        p = safety.preview(self.config, health, overrides, after, now)
        resp = pb.RestoreResponse(dry_run=req.dry_run, preview=preview_to_pb(p), request_id=rid)
        if req.dry_run:
            return resp
        deletes = [evac_key]
        if mode == "now" and _has_restore(overrides, region):
            deletes.append(f"overrides/restores/{region}")
        applied, audit_id = await self._apply(
            rid, puts, deletes,
            {"action": "restore", "region": region, "reason": reason, "forced": False,
             "before": summary(p.before), "after": summary(p.after),
             "details": {"mode": mode, "step": step, "interval": interval, "removed_unusable_record": unusable}})
        resp.applied, resp.duplicate, resp.audit_id = True, not applied, audit_id
        return resp

    # ------------------------------------------------------------------ pins

    def _service_geo(self, service: str, geo: str) -> tuple[str, str, list[str]]:
        limits.text("service", service, limits.MAX_ID)
        limits.text("geo", geo, limits.MAX_ID)
        try:
            svc = self.config.service(service)
        except (KeyError, ValueError):
            _bad("service", f"unknown service {service!r}")
        try:
            g = self.config.geo(geo)
        except KeyError:
            _bad("geo", f"unknown geo {geo!r}")
        return svc.name, g.id, safety.pin_candidates(self.config, svc.name, g.id)

    async def PinWeights(self, request: pb.PinWeightsRequest,
                         context: grpc.aio.ServicerContext) -> pb.PinWeightsResponse:
        return await _guard(context, _retrying(lambda: self._pin(request)))

    async def _pin(self, req: pb.PinWeightsRequest) -> pb.PinWeightsResponse:
        """Same order as an evacuation: validate, request id, preview, the rules (force), write with the audit."""
        service, geo, cands = self._service_geo(req.service, req.geo)
        if not req.weights:
            _bad("weights", "missing")
        if len(req.weights) > limits.MAX_PIN_TARGETS:
            _bad("weights", f"{len(req.weights)} targets; at most {limits.MAX_PIN_TARGETS}")
        known = {r.id for r in self.config.regions} | {s.id for s in self.config.sites}
        for target, w in req.weights.items():
            limits.text("weights", target, limits.MAX_ID)
            if target not in known:
                _bad(f"weights.{target}", f"unknown region or site {target!r}")
            # uint32 on the wire, so never negative here; each is still bounded, and they are normalised below.
            limits.integer(f"weights.{target}", w, limits.PIN_WEIGHT)
        if sum(req.weights.values()) <= 0:
            _bad("weights", "all zero")
        reason = self._reason(req.reason)
        if not reason:
            _bad("reason", "required: say why these weights are pinned")
        rid = self._request_id(req.request_id)
        if not req.dry_run:
            earlier = await self._seen(rid)
            if earlier is not None:
                return pb.PinWeightsResponse(applied=True, duplicate=True, request_id=rid, audit_id=earlier)
        # A weight the planner would ignore is refused even when forced: forcing could not make it happen.
        ignored = safety.check_pin_targets(self.config, service, geo, dict(req.weights))
        if ignored is not None:
            log.warning("operator action refused", action="pin", service=service, geo=geo, refusal=str(ignored),
                        actor=auth.actor())
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused by {ignored}")
        order = [t for t in cands if t in req.weights]
        weights = apportion({t: float(req.weights[t]) for t in order}, TOTAL_WEIGHT, order)
        pin = Pin(service=service, geo=geo, weights=weights, reason=reason, actor=auth.actor())
        now = time.time()
        health, overrides, _ = await self._live()
        after = Overrides(evacuations=overrides.evacuations, restores=overrides.restores,
                          pins=tuple(p for p in overrides.pins if (p.service, p.geo) != (service, geo)) + (pin,))
        p = safety.preview(self.config, health, overrides, after, now)
        warnings = self._refuse(safety.pin_refusals(self.config, health, overrides, service, geo, weights, p), p,
                                req.force, "pin")
        resp = pb.PinWeightsResponse(dry_run=req.dry_run, preview=preview_to_pb(p), request_id=rid,
                                     warnings=warnings)
        if req.dry_run:
            return resp
        applied, audit_id = await self._apply(
            rid, {f"overrides/weights/{service}/{geo}": _json(pin.to_dict())}, [],
            {"action": "pin", "service": service, "geo": geo, "reason": reason, "forced": req.force,
             "before": summary(p.before), "after": summary(p.after),
             "details": {"weights": weights, "warnings": warnings}})
        resp.applied, resp.duplicate, resp.audit_id = True, not applied, audit_id
        return resp

    async def UnpinWeights(self, request: pb.UnpinWeightsRequest,
                           context: grpc.aio.ServicerContext) -> pb.UnpinWeightsResponse:
        return await _guard(context, _retrying(lambda: self._unpin(request)))

    async def _unpin(self, req: pb.UnpinWeightsRequest) -> pb.UnpinWeightsResponse:
        service, geo, _ = self._service_geo(req.service, req.geo)
        reason = self._reason(req.reason) or "unpin"
        rid = self._request_id(req.request_id)
        earlier = await self._seen(rid)
        if earlier is not None:
            return pb.UnpinWeightsResponse(applied=True, duplicate=True, audit_id=earlier)
        health, overrides, _ = await self._live()
        pin_key = f"overrides/weights/{service}/{geo}"
        if (not any((p.service, p.geo) == (service, geo) for p in overrides.pins)
                and not any(s.key == pin_key for s in overrides.skipped)):  # an unusable pin record may go too
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused by not_pinned: {service} {geo} has no pin")
        after = Overrides(evacuations=overrides.evacuations, restores=overrides.restores,
                          pins=tuple(p for p in overrides.pins if (p.service, p.geo) != (service, geo)))
        p = safety.preview(self.config, health, overrides, after, time.time())
        applied, audit_id = await self._apply(
            rid, {}, [f"overrides/weights/{service}/{geo}"],
            {"action": "unpin", "service": service, "geo": geo, "reason": reason,
             "forced": False, "before": summary(p.before), "after": summary(p.after), "details": {}})
        return pb.UnpinWeightsResponse(applied=True, duplicate=not applied, audit_id=audit_id)

    # ------------------------------------------------------------------ Plan (what-if)

    async def Plan(self, request: pb.PlanRequest, context: grpc.aio.ServicerContext) -> pb.PlanResponse:
        return await _guard(context, self._plan(request))

    async def _plan(self, req: pb.PlanRequest) -> pb.PlanResponse:
        for name, count in (("evacuations", len(req.evacuations)), ("restore", len(req.restore)),
                            ("healthy", len(req.healthy))):
            if count > limits.MAX_WHAT_IF:
                _bad(name, f"{count} entries; at most {limits.MAX_WHAT_IF}")
        for i, e in enumerate(req.evacuations):  # every field is checked, even those a what-if ignores
            self._region(e.region, f"evacuations[{i}].region")
            self._ramp(e.mode, e.ramp, f"evacuations[{i}].ramp")
            self._reason(e.reason, f"evacuations[{i}].reason")
            limits.text(f"evacuations[{i}].actor", e.actor, limits.MAX_ACTOR)
            limits.text(f"evacuations[{i}].request_id", e.request_id, limits.MAX_REQUEST_ID)
        for i, region in enumerate(req.restore):
            self._region(region, f"restore[{i}]")
        known = {r.id for r in self.config.regions} | {s.id for s in self.config.sites}
        for site in req.healthy:
            limits.text("healthy", site, limits.MAX_ID)
        now = time.time()
        health, overrides, _ = await self._live()
        after = overrides
        for e in req.evacuations:
            after = safety.with_evacuation(after, Evacuation(region=e.region, started_at=now, reason=e.reason,
                                                             forced=True))
        for region in req.restore:
            after = safety.without_evacuation(after, region)
        what_if = dict(health)
        for site, ok in req.healthy.items():
            if site not in known:
                _bad(f"healthy.{site}", f"unknown region or site {site!r}")
            base = what_if.get(site, TargetHealth())
            what_if[site] = TargetHealth(status="healthy" if ok else "unhealthy", capacity=base.capacity,
                                         load=base.load, detail="what-if")
        p = safety.preview(self.config, health, overrides, after, now)
        if req.healthy:
            p2 = safety.preview(self.config, what_if, after, after, now)
            p = safety.Preview(*_merge_changes(p, p2))
        return pb.PlanResponse(table=table_to_pb(p.after), preview=preview_to_pb(p))


def _within(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _has_restore(overrides: Overrides, region: str) -> bool:
    """A restore record for ``region``, usable or not (an unusable one is replaced or removed with it)."""
    key = f"overrides/restores/{region}"
    return any(r.region == region for r in overrides.restores) or any(s.key == key for s in overrides.skipped)


def _merge_changes(p: safety.Preview, what_if: safety.Preview) -> tuple[Any, ...]:
    """A preview from the live state (before) to the what-if health and overrides (after)."""
    before, after = p.before, what_if.after
    changes = []
    for name, svc in after.services.items():
        for geo, route in svc.geos.items():
            old = before.route(name, geo)
            b = dict(old.weights) if old else {}
            if b != dict(route.weights):
                changes.append(safety.GeoChange(name, geo, b, dict(route.weights)))
    regions = []
    for rid, st in after.regions.items():
        old = before.regions[rid]
        cap = st.capacity
        regions.append(safety.RegionProjection(rid, cap, old.planned_load, st.planned_load,
                                               old.planned_load / cap if cap > 0 else 0.0,
                                               st.planned_load / cap if cap > 0 else 0.0,
                                               p.regions[0].hard_limit if p.regions else 1.0))
    return tuple(changes), tuple(regions), after.fail_open, before, after


def table_to_pb_health(status: str) -> int:
    from steering.controller.convert import HEALTH

    return HEALTH.get(status, pb.HEALTH_STATUS_UNSPECIFIED)
