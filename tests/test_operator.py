"""OperatorService over real gRPC on a controller backed by a real etcd: the evacuation cycle and its rules."""

from __future__ import annotations

import grpc

from steering.controller.operator import PREVIEW_TRAILER
from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.controller import API, make_config, refused, region_share, start_controller, stubs


async def test_evacuate_ramp_done_restore_cycle_in_routing_current(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    store = Store(config.etcd)
    await store.open()
    ch, op, _, md = stubs(run.target)
    try:
        t0 = await store.get_table()
        assert t0 is not None and region_share(t0, "eu-west-1") > 0
        resp = await op.Evacuate(pb.EvacuateRequest(
            region="eu-west-1", mode=pb.EVACUATION_MODE_RAMP, ramp=pb.Ramp(step=0.25, interval_seconds=0.4),
            reason="kernel upgrade", request_id="evac-1"), metadata=md)
        assert resp.applied and not resp.duplicate and resp.audit_id
        # The preview names the moves: europe leaves eu-west-1.
        europe = [c for c in resp.preview.changes if c.service == API and c.geo == "europe"]
        assert europe and europe[0].before["eu-west-1"] == 1000 and europe[0].after["eu-west-1"] == 0
        assert {r.region for r in resp.preview.regions} == {"us-east-1", "us-west-2", "eu-west-1"}

        seen: list[int] = []

        async def evacuated() -> bool:
            t = await store.get_table()
            share = region_share(t, "eu-west-1")
            if not seen or seen[-1] != share:
                seen.append(share)
            return share == 0 and t is not None and not t.regions["eu-west-1"].serving

        await eventually(evacuated, timeout=15, what="eu-west-1 evacuated in routing/current")
        assert any(0 < s < seen[0] for s in seen), f"the ramp went in one step: {seen}"
        st = await op.Status(pb.StatusRequest(), metadata=md)
        assert [e.region for e in st.evacuations] == ["eu-west-1"] and st.evacuations[0].reason == "kernel upgrade"
        assert st.leader == "c1" and st.table.version >= t0.version

        r = await op.Restore(pb.RestoreRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_RAMP,
                                               ramp=pb.Ramp(step=0.5, interval_seconds=0.3), request_id="rest-1"),
                             metadata=md)
        assert r.applied

        async def restored() -> bool:
            t = await store.get_table()
            ov = await store.get_overrides()
            return (t is not None and t.route(API, "europe").weights["eu-west-1"] == 1000  # type: ignore[union-attr]
                    and not ov.evacuations and not ov.restores)

        await eventually(restored, timeout=15, what="eu-west-1 back and the restore record cleaned up")
        hist = await op.History(pb.HistoryRequest(limit=10), metadata=md)
        assert [h.action for h in hist.records] == ["restore", "evacuate"]
        assert hist.records[1].reason == "kernel upgrade" and hist.records[1].actor == "anonymous"
        assert "eu-west-1" in hist.records[1].before and "eu-west-1 out" in hist.records[1].after
    finally:
        await ch.close()
        await store.close()
        await run.stop()


async def test_safety_rules_refuse_and_write_nothing_and_force_is_audited(etcd: EtcdCluster) -> None:
    # Three regions, min 3 serving: any evacuation leaves too few.
    config = make_config(etcd.endpoints, min_serving_regions=3)
    run = await start_controller(config)
    store = Store(config.etcd)
    await store.open()
    ch, op, _, md = stubs(run.target)
    try:
        err = await refused(op.Evacuate, pb.EvacuateRequest(region="us-west-2", mode=pb.EVACUATION_MODE_NOW,
                                                             reason="test"), metadata=md)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "min_serving_regions" in err.details() and "leave 2 region(s)" in err.details()
        assert "at least 3" in err.details()
        trailer = dict(err.trailing_metadata() or ())
        preview = pb.Preview.FromString(trailer[PREVIEW_TRAILER])
        assert any(c.geo == "na-west" for c in preview.changes)
        assert (await store.get_overrides()).evacuations == () and await store.list_audit() == []

        # Forced: applied and audited as such.
        ok = await op.Evacuate(pb.EvacuateRequest(region="us-west-2", mode=pb.EVACUATION_MODE_NOW, reason="test",
                                                  force=True), metadata=md)
        assert ok.applied and any("min_serving_regions" in w for w in ok.warnings)
        audit = await store.list_audit()
        assert audit[0]["forced"] is True and audit[0]["action"] == "evacuate"
        ev = (await store.get_overrides()).evacuations
        assert len(ev) == 1 and ev[0].forced

        # A second evacuation of the same region conflicts.
        err = await refused(op.Evacuate, pb.EvacuateRequest(region="us-west-2", reason="again"), metadata=md)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "conflicting_evacuation" in err.details()
        assert len(await store.list_audit()) == 1
    finally:
        await ch.close()
        await store.close()
        await run.stop()


async def test_hard_limit_and_ramp_in_flight_refusals(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints, min_serving_regions=1)
    # 7000 req/s in each region: 21000 would not fit in the other two (18000).
    run = await start_controller(config, load=7000.0)
    store = Store(config.etcd)
    await store.open()
    ch, op, _, md = stubs(run.target)
    try:
        err = await refused(op.Evacuate, pb.EvacuateRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_NOW,
                                                             reason="test", dry_run=True), metadata=md)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "hard_limit" in err.details()
        assert "capacity" in err.details() and "hard limit 100%" in err.details()
        assert (await store.get_overrides()).evacuations == ()

        for a in run.agents.values():
            a.set(load=100.0)

        async def light() -> bool:
            t = await store.get_table()
            return t is not None and all(t.regions[r].load < 1000 for r in ("us-east-1", "us-west-2", "eu-west-1"))

        await eventually(light, what="loads to drop")
        # A slow ramp in flight on one region blocks evacuating another.
        ok = await op.Evacuate(pb.EvacuateRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_RAMP, reason="slow",
                                                  ramp=pb.Ramp(step=0.1, interval_seconds=60)), metadata=md)
        assert ok.applied
        err = await refused(op.Evacuate, pb.EvacuateRequest(region="us-west-2", reason="second"), metadata=md)
        assert "conflicting_evacuation" in err.details() and "eu-west-1 is still ramping out" in err.details()
        assert [e.region for e in (await store.get_overrides()).evacuations] == ["eu-west-1"]
    finally:
        await ch.close()
        await store.close()
        await run.stop()


async def test_dry_run_writes_nothing_and_retried_request_applies_once(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    store = Store(config.etcd)
    await store.open()
    ch, op, _, md = stubs(run.target)
    try:
        before = await store.get_table()
        dry = await op.Evacuate(pb.EvacuateRequest(region="us-east-1", mode=pb.EVACUATION_MODE_NOW, reason="dry",
                                                   dry_run=True, request_id="same"), metadata=md)
        assert dry.dry_run and not dry.applied and dry.preview.changes
        assert (await store.get_overrides()).evacuations == () and await store.list_audit() == []
        t = await store.get_table()
        assert t is not None and before is not None and region_share(t, "us-east-1") == region_share(before, "us-east-1")

        req = pb.EvacuateRequest(region="us-east-1", mode=pb.EVACUATION_MODE_NOW, reason="real", request_id="same")
        first = await op.Evacuate(req, metadata=md)
        again = await op.Evacuate(req, metadata=md)
        assert first.applied and not first.duplicate
        assert again.duplicate and again.audit_id == first.audit_id
        assert len(await store.list_audit()) == 1

        # Bad input names the field.
        for bad, field in ((pb.EvacuateRequest(region="mars-1", reason="x"), "region"),
                           (pb.EvacuateRequest(region="us-west-2"), "reason"),
                           (pb.EvacuateRequest(region="us-west-2", reason="x", mode=pb.EVACUATION_MODE_RAMP,
                                               ramp=pb.Ramp(step=1.5)), "ramp.step"),
                           (pb.EvacuateRequest(region="us-west-2", reason="x", request_id="a/b"), "request_id")):
            err = await refused(op.Evacuate, bad, metadata=md)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field + ":"), err.details()
        err = await refused(op.Restore, pb.RestoreRequest(region="us-west-2"), metadata=md)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "not_evacuated" in err.details()
    finally:
        await ch.close()
        await store.close()
        await run.stop()



async def test_concurrent_evacuations_cannot_both_pass_min_serving(etcd: EtcdCluster) -> None:
    """Two operators evacuate two different regions at the same moment, on two replicas; with
    min_serving_regions=2 of 3 only one may win: the write compares the operator sequence it read,
    and the loser re-checks the rules against the winner's evacuation."""
    import asyncio

    config = make_config(etcd.endpoints)
    run1 = await start_controller(config)
    run2 = await start_controller(config, name="c2", agents=False, lead=False)
    store = Store(config.etcd)
    await store.open()
    ch1, op1, _, md = stubs(run1.target)
    ch2, op2, _, _ = stubs(run2.target)
    try:
        for attempt in range(5):  # the race is real only when both reads precede both writes; try a few times
            calls = [op.Evacuate(pb.EvacuateRequest(region=r, mode=pb.EVACUATION_MODE_NOW, reason="race",
                                                    request_id=f"race-{attempt}-{r}"), metadata=md)
                     for op, r in ((op1, "us-west-2"), (op2, "eu-west-1"))]
            results = await asyncio.gather(*calls, return_exceptions=True)
            ok = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
            assert len(ok) == 1 and len(refused) == 1, results
            assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "min_serving_regions" in (refused[0].details() or "")
            overrides = await store.get_overrides()
            assert len(overrides.evacuations) == 1, overrides
            region = overrides.evacuations[0].region
            await op1.Restore(pb.RestoreRequest(region=region, mode=pb.EVACUATION_MODE_NOW,
                                                request_id=f"race-restore-{attempt}"), metadata=md)
            await eventually(lambda: _no_evacuations(store), what="the restore to land")
    finally:
        await ch1.close()
        await ch2.close()
        await store.close()
        await run2.stop()
        await run1.stop()


async def _no_evacuations(store: Store) -> bool:
    return not (await store.get_overrides()).evacuations
