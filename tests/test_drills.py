"""Chaos drills against real etcd and real controllers (docs/drills.md): one completes, a guard aborts one, one
survives its leader, preflight refuses one and bad input stores nothing (steerctl as an operator runs it)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from steering.config import Config
from steering.drill import Drill
from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc
from tests.support import eventually
from tests.support.cli import steerctl
from tests.support.controller import make_config, refused, region_share, start_controller, write_config
from tests.support.paths import STEERING
from tests.support.ports import free_port

FAST = pb.Ramp(step=0.5, interval_seconds=0.3)


def drill_stub(ch: grpc.aio.Channel) -> Any:
    return pb_grpc.DrillServiceStub(ch)  # type: ignore[no-untyped-call]  # grpcio-tools writes no annotations


async def _drill(stub: Any, drill_id: str) -> Drill:
    resp = await stub.GetDrill(pb.GetDrillRequest(id=drill_id))
    return Drill.from_dict(json.loads(resp.drill_json))


async def _phase(stub: Any, drill_id: str, *phases: str) -> Drill | None:
    d = await _drill(stub, drill_id)
    return d if d.phase in phases else None


def _config(etcd: EtcdCluster) -> Config:
    return make_config(etcd.endpoints)


async def test_drill_drains_holds_restores_and_reports(etcd: EtcdCluster) -> None:
    config = _config(etcd)
    c1 = await start_controller(config, "c1")
    store = Store(config.etcd)
    await store.open()
    ch = grpc.aio.insecure_channel(c1.target)
    drills = drill_stub(ch)
    try:
        before = region_share(await store.get_table(), "eu-west-1")
        assert before > 0
        started = await drills.StartDrill(pb.StartDrillRequest(
            region="eu-west-1", reason="practice", ramp=FAST, hold_seconds=1.0, restore_ramp=FAST,
            abort_if=["max_utilization > 0.99", "unhealthy_regions >= 1"]))
        assert started.phase == "preflight" and started.id
        done = await eventually(lambda: _phase(drills, started.id, "done", "aborted"), timeout=30,
                                what="the drill to finish")
        assert done.phase == "done", done
        phases = [t["phase"] for t in done.timeline]
        assert phases == ["preflight", "draining", "holding", "restoring", "done"]
        assert done.drained_at > 0 and done.returned_at >= done.drained_at + 1.0
        assert set(done.peak) == {"us-east-1", "us-west-2"}
        assert done.samples and "max_utilization > 0.99" in done.samples[-1]["values"]
        assert region_share(await store.get_table(), "eu-west-1") > 0
        assert await store.drills.active() is None
        # Audited like an evacuation: the evacuate and restore name the drill, and the runner as the actor.
        audit = await store.list_audit(20)
        mine = [a for a in audit if started.id in str(a.get("reason", ""))]
        assert {a["action"] for a in mine} >= {"drill_start", "evacuate", "restore"}
        assert any(a["actor"] == f"drill:{started.id}" for a in mine)
        page = await store.list_events(limit=100)
        assert [e.details["phase"] for e in page.events if e.subject == f"drill/{started.id}"][-1] == "done"
        # steerctl's report and list read it back.
        code, out, err = await steerctl("drill", "report", started.id, "--json", "--server", c1.target)
        assert code == 0, err
        rep = json.loads(out)
        assert rep["result"] == "done" and rep["drain_seconds"] is not None and rep["abort"] is None
        assert [r["region"] for r in rep["receivers"]] == ["us-east-1", "us-west-2"]
        code, out, err = await steerctl("drill", "list", "--server", c1.target)
        assert code == 0 and started.id in out and "done" in out, (out, err)
    finally:
        await ch.close()
        await store.close()
        await c1.stop()


async def test_a_guard_trips_and_the_region_comes_back_at_once(etcd: EtcdCluster) -> None:
    config = _config(etcd)
    c1 = await start_controller(config, "c1")
    store = Store(config.etcd)
    await store.open()
    ch = grpc.aio.insecure_channel(c1.target)
    drills = drill_stub(ch)
    seen: list[tuple[int, int, str]] = []  # every table followed: (version, eu-west-1's share, its evacuation)

    async def follow() -> None:
        async for t in store.watch_table():
            seen.append((t.version, region_share(t, "eu-west-1"), t.regions["eu-west-1"].evacuation))

    follower = asyncio.create_task(follow())
    try:
        started = await drills.StartDrill(pb.StartDrillRequest(
            region="eu-west-1", reason="guarded", ramp=FAST, hold_seconds=600.0, restore_ramp=FAST,
            abort_if=["utilization(us-east-1) > 0.5"]))
        await eventually(lambda: _phase(drills, started.id, "holding"), timeout=20, what="the drill to hold")
        out_at = len(seen)
        c1.agents["us-east-1"].set(load=9000.0)  # a receiver suffers: 90 % of its 10000
        d = await eventually(lambda: _phase(drills, started.id, "aborted"), timeout=20, what="the guard to abort")
        assert d.abort_cause == "guard" and "utilization(us-east-1) > 0.5" in d.abort_detail, d
        notes = [t["note"] for t in d.timeline]
        assert any("restoring at once" in n for n in notes)
        # At once: the evacuation was removed without a ramped restore in its place.
        overrides = await store.get_overrides()
        assert not overrides.evacuations and not overrides.restores
        # The first table planned without the evacuation already gives the region traffic: back in one step
        # (its full share returns at the planner's pace, policy.max_shift per step, as any move does).
        after = [(v, share) for v, share, label in seen[out_at:] if not label]
        assert after and after[0][1] > 0, seen
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await ch.close()
        await store.close()
        await c1.stop()


async def test_the_drill_goes_on_when_its_leader_stops(etcd: EtcdCluster) -> None:
    config = _config(etcd)
    c1 = await start_controller(config, "c1", agents=False)
    c2 = await start_controller(config, "c2", lead=False)  # the agents report to c2: stopping c1 loses none
    ch = grpc.aio.insecure_channel(c2.target)
    drills = drill_stub(ch)
    c1_stopped = False
    try:
        started = await drills.StartDrill(pb.StartDrillRequest(
            region="eu-west-1", reason="failover", ramp=FAST, hold_seconds=2.0, restore_ramp=FAST))
        await eventually(lambda: _phase(drills, started.id, "holding"), timeout=20, what="c1 to drain")
        await c1.ctl.stop()
        c1_stopped = True
        d = await eventually(lambda: _phase(drills, started.id, "done", "aborted"), timeout=30,
                             what="c2 to finish the drill")
        assert d.phase == "done", d
        assert d.leaders[0] == "c1" and d.leaders[-1] == "c2", d.leaders
    finally:
        await ch.close()
        if not c1_stopped:
            await c1.stop()
        await c2.stop()


async def test_preflight_refusals_and_bad_input_store_nothing(etcd: EtcdCluster) -> None:
    config = _config(etcd)
    c1 = await start_controller(config, "c1")
    store = Store(config.etcd)
    await store.open()
    ch = grpc.aio.insecure_channel(c1.target)
    op = pb_grpc.OperatorServiceStub(ch)  # type: ignore[no-untyped-call]
    server = ("--server", c1.target)
    try:
        seq = (await store.get_overrides_versioned())[1]
        bad = ((("nowhere-1",), "region"), (("eu-west-1", "--ramp", "fast"), "--ramp"),
               (("eu-west-1", "--hold", "-3"), "--hold"),
               (("eu-west-1", "--abort-if", "max_utilization >> 1"), "--abort-if"),
               (("eu-west-1", "--abort-if", "utilization(nowhere-1) > 0.5"), "abort_if[0]"))
        runs = await asyncio.gather(
            *(steerctl("drill", "start", *args, "--reason", "r", "--yes", *server) for args, _ in bad),
            # a guard already true: refused, with its value; --dry-run passes preflight and stores nothing
            steerctl("drill", "start", "eu-west-1", "--reason", "r", "--yes", "--abort-if", "max_utilization >= 0",
                     *server),
            steerctl("drill", "start", "eu-west-1", "--reason", "r", "--dry-run", *server))
        for ((args, field), (code, out, err)) in zip(bad, runs, strict=False):
            assert code == 2, (args, code, out, err)
            assert len(err.strip().splitlines()) == 1 and field in err, (args, err)
        code, out, err = runs[-2]
        assert code == 1 and "preflight refused" in err and "already true" in err, err
        code, out, err = runs[-1]
        assert code == 0 and "preflight passed" in out, (out, err)
        # An evacuation in flight: refused, naming it.
        await op.Evacuate(pb.EvacuateRequest(region="us-west-2", mode=pb.EVACUATION_MODE_NOW, reason="by hand"))
        seq = (await store.get_overrides_versioned())[1]
        code, out, err = await steerctl("drill", "start", "eu-west-1", "--reason", "r", "--yes", *server)
        assert code == 1 and "evacuation or restore is in flight: us-west-2" in err, err
        assert await store.drills.items() == [] and await store.drills.active() is None
        overrides, now_seq = await store.get_overrides_versioned()
        assert now_seq == seq and [e.region for e in overrides.evacuations] == ["us-west-2"]
    finally:
        await ch.close()
        await store.close()
        await c1.stop()


async def test_a_schedule_starts_its_drill_in_its_window_and_an_operator_aborts_it(etcd: EtcdCluster) -> None:
    config = _config(etcd)
    c1 = await start_controller(config, "c1")
    store = Store(config.etcd)
    await store.open()
    ch = grpc.aio.insecure_channel(c1.target)
    drills = drill_stub(ch)
    server = ("--server", c1.target)
    try:
        bad = ((("--every", "7d", "--window", "Tue 14:00-16:00 CET"), "--window"),
               (("--every", "7d", "--window", "daily 00:00-24:00 UTC", "--blackout", "2026-12-40..2027-01-03"),
                "--blackout"),
               (("--window", "daily 00:00-24:00 UTC", "--every", "often"), "--every"))
        runs = await asyncio.gather(*(steerctl("drill", "schedule", "add", "eu-west-1", "--reason", "r", *args,
                                               *server) for args, _ in bad))
        for (args, field), (code, _, err) in zip(bad, runs, strict=True):
            assert code == 2 and len(err.strip().splitlines()) == 1 and field in err, (args, err)
        assert await store.drills.schedules() == []
        today = datetime.now(UTC).date()
        blackout = f"{today - timedelta(days=1)}..{today + timedelta(days=1)}"
        fast = ("--ramp", "50%/0.3s", "--restore-ramp", "50%/0.3s", "--hold", "10m")
        code, out, err = await steerctl("drill", "schedule", "add", "us-west-2", "--reason", "in a blackout",
                                        "--every", "7d", "--window", "daily 00:00-24:00 UTC", "--blackout", blackout,
                                        *fast, *server)
        assert code == 0, err
        code, out, err = await steerctl("drill", "schedule", "add", "eu-west-1", "--reason", "weekly", "--every",
                                        "7d", "--window", "daily 00:00-24:00 UTC", "--json", *fast, *server)
        assert code == 0, err
        sid = json.loads(out)["id"]

        async def started() -> str:
            listed = await drills.ListSchedules(pb.ListDrillSchedulesRequest())
            mine = {s.id: json.loads(s.schedule_json) for s in listed.schedules}
            return str(mine[sid]["last_drill"])

        drill_id = await eventually(started, timeout=20, what="the schedule to start its drill")
        d = await eventually(lambda: _phase(drills, drill_id, "holding"), timeout=20, what="the drill to hold")
        assert d.schedule == sid and d.region == "eu-west-1"
        code, out, err = await steerctl("drill", "abort", drill_id, "--reason", "enough", *server)
        assert code == 0, err
        d = await eventually(lambda: _phase(drills, drill_id, "aborted"), timeout=20, what="the abort")
        assert d.abort_cause == "operator" and "enough" in d.abort_detail
        # The blackout schedule never fired; the weekly one does not fire twice in its window.
        code, out, err = await steerctl("drill", "schedule", "list", "--json", *server)
        listed = {s["region"]: s for s in json.loads(out)["schedules"]}
        assert listed["us-west-2"]["last_started_at"] == 0 and listed["us-west-2"]["last_attempt_at"] == 0
        assert listed["eu-west-1"]["last_drill"] == drill_id
        assert len((await drills.ListDrills(pb.ListDrillsRequest())).drills) == 1
        code, out, err = await steerctl("drill", "schedule", "remove", sid, *server)
        assert code == 0 and [s.id for s in await store.drills.schedules()] != [sid]
    finally:
        await ch.close()
        await store.close()
        await c1.stop()


class FakePrometheus:
    """A tiny Prometheus HTTP API on loopback: ``/api/v1/query`` answers with the series set here (or a 500)."""

    def __init__(self) -> None:
        self.firing: set[str] = set()  # alert names
        self.broken = False
        self.queries: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/query", self._query)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def _query(self, request: web.Request) -> web.Response:
        q = request.query.get("query", "")
        self.queries.append(q)
        if self.broken:
            return web.json_response({"status": "error", "error": "overloaded"}, status=500)
        hit = [n for n in self.firing if f'alertname="{n}"' in q]
        result = [{"metric": {"alertname": n}, "value": [time.time(), "1"]} for n in hit]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_prometheus_guards_abort_on_a_firing_alert_and_on_silence(etcd: EtcdCluster) -> None:
    prom = FakePrometheus()
    await prom.start()
    config = make_config(etcd.endpoints, {"drill": {"prometheus_url": prom.url,
                                                    "prometheus_unreachable_seconds": 1.0}})
    c1 = await start_controller(config, "c1")
    ch = grpc.aio.insecure_channel(c1.target)
    drills = drill_stub(ch)
    try:
        req = pb.StartDrillRequest(region="eu-west-1", reason="alerts", ramp=FAST, hold_seconds=600.0,
                                   restore_ramp=FAST, abort_on_alert=["DrillPain"])
        prom.firing = {"DrillPain"}  # already firing: preflight refuses
        err = await refused(drills.StartDrill, req)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "alert:DrillPain is already true" in str(err.details())
        prom.firing = set()
        first = await drills.StartDrill(req)
        await eventually(lambda: _phase(drills, first.id, "holding"), timeout=20, what="the drill to hold")
        prom.firing = {"DrillPain"}
        d = await eventually(lambda: _phase(drills, first.id, "aborted"), timeout=20, what="the alert to abort")
        assert d.abort_cause == "prometheus" and "alert:DrillPain" in d.abort_detail, d
        assert 'ALERTS{alertname="DrillPain",alertstate="firing"}' in prom.queries
        prom.firing = set()
        second = await drills.StartDrill(with_fields(req, abort_on_alert=[], abort_query=["up == 0"]))
        await eventually(lambda: _phase(drills, second.id, "draining", "holding"), timeout=20, what="a drain")
        prom.broken = True  # unanswered for longer than drill.prometheus_unreachable_seconds: aborts too
        d = await eventually(lambda: _phase(drills, second.id, "aborted"), timeout=20, what="silence to abort")
        assert d.abort_cause == "prometheus" and "unanswered" in d.abort_detail, d
        bad = await refused(drills.StartDrill, with_fields(req, abort_on_alert=["no spaces"]))
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and str(bad.details()).startswith("abort_on_alert[0]")
    finally:
        await ch.close()
        await c1.stop()
        await prom.stop()


def with_fields(req: pb.StartDrillRequest, **fields: Any) -> pb.StartDrillRequest:
    """A copy of ``req`` with ``fields`` replaced."""
    out = pb.StartDrillRequest()
    out.CopyFrom(req)
    for name, value in fields.items():
        out.ClearField(name)
        getattr(out, name).extend(value)
    return out


def test_a_prometheus_url_that_does_not_parse_stops_the_controller_at_start(tmp_path: Path) -> None:
    path = write_config(tmp_path / "steering.yaml", ["http://127.0.0.1:1"],
                        {"drill": {"prometheus_url": "http://prometheus:99999"}})
    done = subprocess.run([STEERING, "controller", "--config", str(path), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "drill.prometheus_url" in lines[0], done.stderr
