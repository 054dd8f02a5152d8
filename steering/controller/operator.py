"""``OperatorService``: Status, Evacuate, Restore, Pin/Unpin, History, Events and Plan on any replica.

Every replica answers: reads come from etcd and the table this replica
follows; writes go to etcd through ``Store.apply_operator_action`` (one txn
with the audit record, applied once per request id), and the leader —
whichever replica it is — picks the change up from its overrides watch.
While etcd cannot be reached, Status still answers, from what this replica
knows (its table, the health records, leader and overrides it last read,
its own agents), marked ``stale`` with the time etcd stopped answering.

Order of an action: validate the request (INVALID_ARGUMENT naming the
field); a request id seen before returns the earlier result (``duplicate``);
read the live state; decide (``steering.controller.actions``, pure: the
preview, the safety rules, the change set); a refusal is FAILED_PRECONDITION
naming the rule and the numbers, unless ``force`` passes it; then, unless
``dry_run``, apply the change set. A refused call carries its preview in the
trailing metadata ``steering-preview-bin`` (a serialized ``Preview``), so a
client can still show what would have happened.

The rules are checked on a read and the write compares the operator sequence
(``oplog/seq``) of that read (``Live.sequence``): if another action landed in
between, the whole action is re-read, re-decided and retried, so two
operators acting at the same moment cannot both pass a rule only one of them
may pass. The planner also refuses (and flags) any unforced evacuation that
would leave fewer than ``min_serving_regions``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from steering import auth, limits, logs
from steering.config import Config
from steering.controller import actions, metrics, safety, sitestatus
from steering.controller.convert import (
    HEALTH,
    evacuation_to_pb,
    preview_to_pb,
    restore_to_pb,
    table_to_pb,
    timestamp,
)
from steering.controller.sinks import read_status
from steering.controller.vantage import Vantage
from steering.event import Event
from steering.geoipwatch import GeoIpState
from steering.model import Overrides, TargetHealth
from steering.ports import AgentSessions, FollowedTable, OperatorStore
from steering.store.client import StoreError, StoreUnavailable
from steering.store.keys import check_component
from steering.store.oplog import OverridesChanged
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.operator")

PREVIEW_TRAILER = "steering-preview-bin"

_ATTEMPTS = 5
# With etcd known to be away, Status tries it this long before answering from memory (etcd may be back).
STALE_READ_SECONDS = 1.0
RECENT_EVENTS = 5  # events Status shows
MAX_EVENTS = 1000  # events one Events call returns

R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]


class ActionError(Exception):
    """A call refused: the status code, one line naming the field or the rules, the preview of a refused
    action, the rules (``safety.Refusal``) and the field (INVALID_ARGUMENT). gRPC sends code and message
    (``_guard``); the REST API (``steering.http``) maps the code to an HTTP status and sends the rest as JSON."""

    def __init__(self, code: grpc.StatusCode, message: str, preview: pb.Preview | None = None,
                 refusals: tuple[safety.Refusal, ...] = (), field: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.preview = code, message, preview
        self.refusals, self.field = refusals, field


def _bad(field: str, message: str) -> NoReturn:
    raise ActionError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}", field=field)


async def _retrying(action: Callable[[], Awaitable[R]]) -> R:
    """Run a read-decide-write action again when another operator action landed in between.

    Each attempt re-reads the live state and decides again, so two concurrent evacuations cannot both pass a
    rule that only one of them may pass."""
    for attempt in range(_ATTEMPTS):
        try:
            return await action()
        except OverridesChanged:
            if attempt == _ATTEMPTS - 1:
                raise ActionError(grpc.StatusCode.ABORTED,
                             "other operator actions kept landing at the same time; retry") from None
            log.info("operator action raced another; re-checking", attempt=attempt + 1)
    raise AssertionError("unreachable")


async def _guard(context: Context, coro: Awaitable[R]) -> R:
    """Turn our refusals and etcd failures into status codes with a one-line message."""
    try:
        return await coro
    except ActionError as exc:
        if exc.preview is not None:
            context.set_trailing_metadata(((PREVIEW_TRAILER, exc.preview.SerializeToString()),))
        await context.abort(exc.code, exc.message)
    except StoreError as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcd: {exc}")
    except ValueError as exc:  # a value outside ``steering.limits``, or a key component the store refuses
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    raise AssertionError("unreachable: context.abort raises")


class OperatorService(pb_grpc.OperatorServiceServicer):
    def __init__(self, config: Config, store: OperatorStore, tables: FollowedTable, agents: AgentSessions,
                 replica: str, is_leader: Callable[[], bool], geoip: GeoIpState | None = None) -> None:
        self.config = config
        self.geoip = geoip  # this replica's GeoIP database, for Status (docs/geoip.md)
        self.store = store
        self.tables = tables
        self.agents = agents
        self.replica = replica
        self.is_leader = is_leader
        self._records_cache: tuple[float, dict[str, TargetHealth]] | None = None
        self._recent_events: list[Event] = []

    # ------------------------------------------------------------------ shared

    async def _table(self) -> RoutingTable | None:
        return self.tables.current or await self.store.get_table()

    async def _live(self, now: float) -> actions.Live:
        """The state an action is decided on; the write compares the operator sequence read here."""
        table = await self._table()
        overrides, seq = await self.store.get_overrides_versioned()
        return actions.Live(safety.live_health(table), overrides, seq, now, dict(table.ramps or {}) if table else {})

    def _region(self, region: str, field: str = "region") -> str:
        if not region:
            _bad(field, "missing")
        limits.text(field, region, limits.MAX_ID)
        if region not in {r.id for r in self.config.regions}:
            _bad(field, f"unknown region {region!r} (known: {', '.join(r.id for r in self.config.regions)})")
        return region

    def _ramp(self, mode: int, ramp: pb.Ramp, field: str = "ramp") -> tuple[actions.Mode, float, float]:
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

    def _refuse(self, d: actions.Decision, **about: str) -> None:
        """FAILED_PRECONDITION naming the rules, with the preview (when there is one) in the trailer."""
        if not d.refused:
            return
        log.warning("operator action refused", action=d.action, refusal=d.message.removeprefix("refused by "),
                    actor=auth.actor(), **about)
        raise ActionError(grpc.StatusCode.FAILED_PRECONDITION, d.message,
                          preview_to_pb(d.preview) if d.preview is not None else None, refusals=d.refusals)

    async def _apply(self, rid: str, d: actions.Decision, live: actions.Live) -> tuple[bool, str]:
        """Write the decision's change set, comparing the operator sequence it was decided on."""
        changes = d.changes
        if changes is None:
            raise AssertionError("a decision that is not refused has changes")
        audit = changes.audit
        applied, audit_id = await self.store.apply_operator_action(rid, changes.puts, list(changes.deletes), audit,
                                                                   expect_seq=live.sequence)
        log.info("operator action", action=audit["action"], region=audit.get("region", ""),
                 service=audit.get("service", ""), geo=audit.get("geo", ""), actor=audit["actor"],
                 forced=audit.get("forced", False), request_id=rid, audit_id=audit_id, applied=applied)
        return applied, audit_id

    # ------------------------------------------------------------------ one implementation, two transports
    # The gRPC methods below and the REST API (steering/http) call these. What comes out besides the
    # response: ActionError, StoreError (etcd) or ValueError (a bound of steering.limits, a key component);
    # each transport words them its own way (``_guard`` here).

    async def status(self) -> pb.StatusResponse:
        return await self._status()

    async def history(self, req: pb.HistoryRequest) -> pb.HistoryResponse:
        return await self._history(req)

    async def events(self, req: pb.EventsRequest) -> pb.EventsResponse:
        return await self._events(req)

    async def evacuate(self, req: pb.EvacuateRequest) -> pb.EvacuateResponse:
        return await _retrying(lambda: self._evacuate(req))

    async def restore(self, req: pb.RestoreRequest) -> pb.RestoreResponse:
        return await _retrying(lambda: self._restore(req))

    async def pin(self, req: pb.PinWeightsRequest) -> pb.PinWeightsResponse:
        return await _retrying(lambda: self._pin(req))

    async def unpin(self, req: pb.UnpinWeightsRequest) -> pb.UnpinWeightsResponse:
        return await _retrying(lambda: self._unpin(req))

    async def plan(self, req: pb.PlanRequest) -> pb.PlanResponse:
        return await self._plan(req)

    async def overrides(self) -> Overrides:
        """The evacuations, restores and pins in etcd (the REST API lists them)."""
        return await self.store.get_overrides()

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

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusResponse:
        return await _guard(context, self.status())

    async def _status(self) -> pb.StatusResponse:
        """From etcd; if it cannot be reached, from what this replica knows, marked stale."""
        try:
            if self.store.unreachable_since is None:
                return await self._status_live()  # each read gives up after etcd.timeout_seconds
            async with asyncio.timeout(STALE_READ_SECONDS):
                return await self._status_live()
        except (StoreUnavailable, TimeoutError):
            pass
        since = self.store.unreachable_since or time.time()
        log.warning("etcd unreachable: status answered from this replica's last known state",
                    replica=self.replica, unreachable_since=since)
        return self._status_known(since)

    async def _status_live(self) -> pb.StatusResponse:
        leader = await self.store.leader() or ""
        table = await self._table()
        records = await self._health_records() if table is not None else {}
        overrides = await self.store.get_overrides()
        page = await self.store.list_events(limit=RECENT_EVENTS)
        if page.skipped:
            metrics.EVENTS_UNREADABLE.inc(page.skipped)
        self._recent_events = page.events
        resp = self._status_response(leader, table, records, overrides)
        if resp.route53.enabled:
            await self._route53_status(resp.route53)
        return resp

    def _status_known(self, since: float) -> pb.StatusResponse:
        """Status without etcd: the table this replica follows, the health records and overrides it last
        read, the leader it last saw (or the one that published its table, whichever it learnt later)."""
        table = self.tables.current
        leader = table.leader if table is not None else ""
        seen = self.store.last_leader
        if seen is not None and (table is None or seen[1] >= self.tables.received_at):
            leader = seen[0] or ""
        if self.is_leader():
            leader = self.replica
        records = self._records_cache[1] if self._records_cache is not None else {}
        known = self.store.last_overrides
        resp = self._status_response(leader, table, records, known[0] if known is not None else Overrides())
        resp.stale = True
        resp.etcd_unreachable_since.CopyFrom(timestamp(since))
        return resp

    def _status_response(self, leader: str, table: RoutingTable | None, records: dict[str, TargetHealth],
                         overrides: Overrides) -> pb.StatusResponse:
        resp = pb.StatusResponse(replica=self.replica, connected_agents=self.agents.connected_agents,
                                 leader=leader)
        if self.geoip is not None and self.geoip.map is not None:
            info = self.geoip.map.info
            resp.geoip.CopyFrom(pb.GeoIpStatus(
                database_type=info.database_type, build_time=timestamp(info.build_epoch), networks=info.networks,
                prefixes=self.geoip.map.count(), reloads_ok=self.geoip.reloads["ok"],
                reloads_failed=self.geoip.reloads["error"], last_error=self.geoip.last_error, path=info.path))
        if table is not None:
            resp.table.CopyFrom(table_to_pb(table, with_json=True))
            resp.table_age_seconds = max(0.0, time.time() - table.generated_at)
            newest = sitestatus.newest_records(records)
            silence = self.config.policy.silence_seconds
            for tid, st in [*table.regions.items(), *table.sites.items()]:
                kind = pb.SITE_KIND_REGION if st.kind == "region" else pb.SITE_KIND_CACHE
                why = sitestatus.site_why(st.health, newest.get(tid), self.agents.last_heard(tid),
                                          self.replica, silence)
                site = resp.sites.add(site=tid, region=st.region, kind=kind, status=table_to_pb_health(st.health),
                                      capacity=st.capacity, load=st.load, heard_by=why.heard_by,
                                      last_report_local=why.last_report_local, detail=why.detail)
                if why.last_report is not None:
                    site.last_report.CopyFrom(timestamp(why.last_report))
                if why.last_change is not None:
                    site.last_change.CopyFrom(timestamp(why.last_change))
                for c in why.checks:
                    site.checks.add(name=c.name, kind=c.kind, ok=False, detail=c.detail)
                self._reporters(site, tid, records)
        for e in overrides.evacuations:
            resp.evacuations.append(evacuation_to_pb(e))
        for r in overrides.restores:
            resp.evacuations.append(restore_to_pb(r))
        resp.route53.enabled = self.config.route53 is not None
        resp.recent_events.extend(event_to_pb(e) for e in self._recent_events)  # as last read while etcd is away
        return resp

    def _reporters(self, site: pb.SiteHealth, target: str, records: dict[str, TargetHealth]) -> None:
        """A target's reporters and the quorum's reading of them (docs/health.md); nothing without observers."""
        seen = sitestatus.reporters_why(target, records, Vantage.of(self.config), self.agents.last_heard,
                                        self.agents.streams)
        if seen is None:
            return
        site.verdict = seen.verdict.text
        site.unreachable_geos.extend(seen.verdict.unreachable_from)
        if seen.verdict.status == "unhealthy" or (seen.verdict.text and site.status == pb.HEALTH_STATUS_HEALTHY):
            site.detail = seen.verdict.text
        if seen.verdict.status == "unhealthy" and seen.checks:
            del site.checks[:]
            for c in seen.checks:
                site.checks.add(name=c.name, kind=c.kind, ok=False, detail=c.detail)
        for r in seen.reporters:
            v = r.view
            out = site.reporters.add(reporter=v.reporter, role=v.role, status=table_to_pb_health(v.status),
                                     geos=v.geos, last_report_local=r.last_report_local, heard_by=v.heard_by,
                                     counted=v.counted, detail=v.detail, streams=r.streams)
            if r.last_report is not None:
                out.last_report.CopyFrom(timestamp(r.last_report))

    async def _route53_status(self, out: pb.Route53Status) -> None:
        """The leader's last Route 53 sync, as it shares it under ``status/route53``."""
        status = await read_status(self.store, "route53")
        if status is None:
            return
        out.last_sync.CopyFrom(timestamp(status.finished_at))
        out.last_duration_seconds = status.duration
        out.last_changes = status.change_count
        out.last_error = status.error or ""

    async def History(self, request: pb.HistoryRequest, context: Context) -> pb.HistoryResponse:
        return await _guard(context, self.history(request))

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

    # ------------------------------------------------------------------ Events

    async def Events(self, request: pb.EventsRequest, context: Context) -> pb.EventsResponse:
        return await _guard(context, self.events(request))

    async def _events(self, req: pb.EventsRequest) -> pb.EventsResponse:
        limit = limits.integer("limit", req.limit or 50, (1, MAX_EVENTS))
        since = None
        if req.HasField("since"):
            since = limits.number("since", req.since.seconds + req.since.nanos / 1e9, limits.STARTED_AT)
        after = None
        if req.after_id:
            limits.text("after_id", req.after_id, 64)
            try:
                after = check_component("after_id", req.after_id)
            except ValueError as exc:
                _bad("after_id", str(exc).split(": ", 1)[-1])
        page = await self.store.list_events(since=since, after=after, limit=limit)
        if page.skipped:
            metrics.EVENTS_UNREADABLE.inc(page.skipped)
        return pb.EventsResponse(events=[event_to_pb(e) for e in page.events], skipped=page.skipped, more=page.more)

    # ------------------------------------------------------------------ Evacuate / Restore

    async def Evacuate(self, request: pb.EvacuateRequest, context: Context) -> pb.EvacuateResponse:
        return await _guard(context, self.evacuate(request))

    async def _evacuate(self, req: pb.EvacuateRequest) -> pb.EvacuateResponse:
        region = self._region(req.region)
        reason = self._reason(req.reason)
        if not reason:
            _bad("reason", "required: say why traffic leaves the region")
        mode, step, interval = self._ramp(req.mode, req.ramp)
        rid = self._request_id(req.request_id)
        if not req.dry_run:
            earlier = await self.store.request_audit_id(rid)
            if earlier is not None:
                return pb.EvacuateResponse(applied=True, duplicate=True, request_id=rid, audit_id=earlier)
        live = await self._live(time.time())
        d = actions.decide_evacuate(self.config, actions.EvacuateRequest(
            region=region, mode=mode, step=step, interval=interval, reason=reason, actor=auth.actor(),
            request_id=rid, force=req.force), live)
        self._refuse(d, region=region)
        resp = pb.EvacuateResponse(dry_run=req.dry_run, preview=_preview(d), request_id=rid, warnings=d.warnings)
        if req.dry_run:
            return resp
        applied, audit_id = await self._apply(rid, d, live)
        resp.applied, resp.duplicate, resp.audit_id = True, not applied, audit_id
        return resp

    async def Restore(self, request: pb.RestoreRequest, context: Context) -> pb.RestoreResponse:
        return await _guard(context, self.restore(request))

    async def _restore(self, req: pb.RestoreRequest) -> pb.RestoreResponse:
        region = self._region(req.region)
        reason = self._reason(req.reason) or "restore"
        mode, step, interval = self._ramp(req.mode, req.ramp)
        rid = self._request_id(req.request_id)
        if not req.dry_run:
            earlier = await self.store.request_audit_id(rid)
            if earlier is not None:
                return pb.RestoreResponse(applied=True, duplicate=True, request_id=rid, audit_id=earlier)
        live = await self._live(time.time())
        d = actions.decide_restore(self.config, actions.RestoreRequest(
            region=region, mode=mode, step=step, interval=interval, reason=reason, actor=auth.actor()), live)
        self._refuse(d, region=region)
        resp = pb.RestoreResponse(dry_run=req.dry_run, preview=_preview(d), request_id=rid)
        if req.dry_run:
            return resp
        applied, audit_id = await self._apply(rid, d, live)
        resp.applied, resp.duplicate, resp.audit_id = True, not applied, audit_id
        return resp

    # ------------------------------------------------------------------ pins

    def _service_geo(self, service: str, geo: str) -> tuple[str, str]:
        limits.text("service", service, limits.MAX_ID)
        limits.text("geo", geo, limits.MAX_ID)
        try:
            svc = self.config.service(service)
        except (KeyError, ValueError):
            known = ", ".join(s.name for s in self.config.services)
            _bad("service", f"unknown service {service!r} (known: {known})")
        try:
            g = self.config.geo(geo)
        except KeyError:
            _bad("geo", f"unknown geo {geo!r} (known: {', '.join(g.id for g in self.config.geos)})")
        return svc.name, g.id

    async def PinWeights(self, request: pb.PinWeightsRequest, context: Context) -> pb.PinWeightsResponse:
        return await _guard(context, self.pin(request))

    async def _pin(self, req: pb.PinWeightsRequest) -> pb.PinWeightsResponse:
        """Same order as an evacuation: validate, request id, read, decide (force), write with the audit."""
        service, geo = self._service_geo(req.service, req.geo)
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
            earlier = await self.store.request_audit_id(rid)
            if earlier is not None:
                return pb.PinWeightsResponse(applied=True, duplicate=True, request_id=rid, audit_id=earlier)
        ask = actions.PinRequest(service=service, geo=geo, weights=dict(req.weights), reason=reason,
                                 actor=auth.actor(), force=req.force)
        # Targets the planner would ignore need only the config: refused before reading anything.
        ignored = actions.pin_target_refusal(self.config, ask)
        if ignored is not None:
            self._refuse(actions.Decision("pin", refusals=(ignored,)), service=service, geo=geo)
        live = await self._live(time.time())
        d = actions.decide_pin(self.config, ask, live)
        self._refuse(d, service=service, geo=geo)
        resp = pb.PinWeightsResponse(dry_run=req.dry_run, preview=_preview(d), request_id=rid, warnings=d.warnings)
        if req.dry_run:
            return resp
        applied, audit_id = await self._apply(rid, d, live)
        resp.applied, resp.duplicate, resp.audit_id = True, not applied, audit_id
        return resp

    async def UnpinWeights(self, request: pb.UnpinWeightsRequest, context: Context) -> pb.UnpinWeightsResponse:
        return await _guard(context, self.unpin(request))

    async def _unpin(self, req: pb.UnpinWeightsRequest) -> pb.UnpinWeightsResponse:
        service, geo = self._service_geo(req.service, req.geo)
        reason = self._reason(req.reason) or "unpin"
        rid = self._request_id(req.request_id)
        if not req.dry_run:
            earlier = await self.store.request_audit_id(rid)
            if earlier is not None:
                return pb.UnpinWeightsResponse(applied=True, duplicate=True, audit_id=earlier, request_id=rid)
        live = await self._live(time.time())
        d = actions.decide_unpin(self.config, actions.UnpinRequest(service=service, geo=geo, reason=reason,
                                                                   actor=auth.actor()), live)
        self._refuse(d, service=service, geo=geo)
        resp = pb.UnpinWeightsResponse(dry_run=req.dry_run, preview=_preview(d), request_id=rid)
        if req.dry_run:  # the preview, as for pin: nothing written
            return resp
        applied, audit_id = await self._apply(rid, d, live)
        resp.applied, resp.duplicate, resp.audit_id = True, not applied, audit_id
        return resp

    # ------------------------------------------------------------------ Plan (what-if)

    async def Plan(self, request: pb.PlanRequest, context: Context) -> pb.PlanResponse:
        return await _guard(context, self.plan(request))

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
        for site in req.healthy:
            if site not in known:
                _bad(f"healthy.{site}", f"unknown region or site {site!r}")
        live = await self._live(time.time())
        p = actions.what_if(self.config, live, [(e.region, e.reason) for e in req.evacuations], list(req.restore),
                            dict(req.healthy))
        return pb.PlanResponse(table=table_to_pb(p.after), preview=preview_to_pb(p))


def _preview(d: actions.Decision) -> pb.Preview:
    if d.preview is None:
        raise AssertionError("a decision that is not refused has a preview")
    return preview_to_pb(d.preview)


def _within(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def event_to_pb(e: Event) -> pb.Event:
    return pb.Event(id=e.id, time=timestamp(e.time), kind=e.kind, severity=e.severity, subject=e.subject,
                    message=e.message, details_json=json.dumps(dict(e.details), sort_keys=True), replica=e.replica)


def table_to_pb_health(status: str) -> int:
    return HEALTH.get(status, pb.HEALTH_STATUS_UNSPECIFIED)
