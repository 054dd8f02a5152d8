"""Hostile and broken agent reports: spoofed sequences, oversized fields, many agent ids, records etcd refuses.

The controller runs as ``steering controller`` (a real process, no auth, on loopback: the demo's setup)
or in-process where the test looks at its memory; etcd is real everywhere.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from steering import limits
from steering.controller.ingest import Ingest
from steering.etcdproc import EtcdCluster
from steering.model import Check, TargetHealth
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc
from tests.support import eventually
from tests.support.controller import ControllerProcess, make_config, start_controller, write_config
from tests.support.reporters import FakeAgent, report, send, send_refused, start_agents

SITES = ("us-east-1", "us-west-2", "eu-west-1", "oc-nyc-1", "oc-lon-1")


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("steering_controller_health_write_rejected_total", {"reason": reason}) or 0.0


async def test_a_spoofed_huge_sequence_does_not_lock_out_the_agent(etcd: EtcdCluster, tmp_path: Path) -> None:
    ctl = ControllerProcess(tmp_path, write_config(tmp_path / "steering.yaml", etcd.endpoints))
    real = FakeAgent(0, "us-east-1", "us-east-1", pb.SITE_KIND_REGION)
    restarted: FakeAgent | None = None
    try:
        await ctl.ready()
        real.port = ctl.port
        real.start()
        await eventually(lambda: len(real.acks) >= 2, what="the real agent's acks")
        # Someone else claims the real agent's id with a sequence just below 2^64: accepted on its own stream.
        acks = await send(ctl.target, [report("us-east-1", sequence=2**64 - 2, agent="agent-us-east-1")])
        assert acks[0].sequence == 2**64 - 2
        # The real agent's stream goes on, and a restarted agent (a new stream from sequence 1) is heard.
        seen = len(real.acks)
        await eventually(lambda: len(real.acks) >= seen + 3, what="acks after the spoof")
        assert real.error is None
        restarted = FakeAgent(ctl.port, "us-east-1", "us-east-1", pb.SITE_KIND_REGION)
        restarted.start()
        await eventually(lambda: restarted.acks, what="the restarted agent's first ack")
        assert restarted.acks[0].sequence == 1 and restarted.error is None
    finally:
        for a in (real, restarted):
            if a is not None:
                await a.stop()
        ctl.stop()


async def test_oversized_fields_are_refused_and_other_sites_still_written(etcd: EtcdCluster,
                                                                          tmp_path: Path) -> None:
    ctl = ControllerProcess(tmp_path, write_config(tmp_path / "steering.yaml", etcd.endpoints))
    store = Store(make_config(etcd.endpoints).etcd)
    await store.open()
    agents: dict[str, FakeAgent] = {}
    try:
        await ctl.ready()
        agents = await start_agents(ctl.port)

        async def table_has(site: str, health: str) -> bool:
            t = await store.get_table()
            return t is not None and t.sites[site].health == health

        await eventually(lambda: table_has("oc-nyc-1", "healthy"), timeout=20, what="a first table")
        huge = "n" * (3 << 20)
        cases = [
            ([pb.CheckResult(name=huge, kind="http", ok=False, detail="down")], {}, "checks[0].name: 3145728 "
             f"characters; at most {limits.MAX_CHECK_NAME}"),
            ([pb.CheckResult(name="db", kind="x" * 17, ok=False)], {}, "checks[0].kind"),
            ([pb.CheckResult(name="db", ok=False, detail="d" * (limits.MAX_CHECK_DETAIL + 1))], {},
             "checks[0].detail"),
            ([pb.CheckResult(name=f"c{i}", ok=True) for i in range(limits.MAX_CHECKS + 1)], {}, "checks: 65 checks"),
        ]
        for checks, extra, expected in cases:
            err = await send_refused(ctl.target, [report("oc-lon-1", "eu-west-1", status=pb.HEALTH_STATUS_UNHEALTHY,
                                                         checks=checks, **extra)])
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (err.details() or "").startswith(expected), err.details()
        for bad, field in ((report("us-east-1", agent="a" * (1 << 20)), "agent_id"),
                           (report("x" * 1000), "site"),
                           (report("us-east-1", geo_load={f"g{i}": 1.0 for i in range(300)}), "geo_load"),
                           (report("us-east-1", load=1e300), "load")):
            err = await send_refused(ctl.target, [bad])
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and (err.details() or "").startswith(f"{field}: ")
            assert len(err.details() or "") < 200, "the refusal echoed the oversized value"

        # Meanwhile another site's change still reaches etcd and the table, and the refused site stays as it was.
        agents["oc-nyc-1"].set(status=pb.HEALTH_STATUS_UNHEALTHY)
        await eventually(lambda: table_has("oc-nyc-1", "unhealthy"), what="oc-nyc-1 unhealthy in the table")
        t = await store.get_table()
        assert t is not None and not t.sites["oc-nyc-1"].serving and t.sites["oc-lon-1"].health == "healthy"
        assert len(ctl.log_path.read_text()) < 1 << 20, "an oversized value reached the log"
    finally:
        for a in agents.values():
            await a.stop()
        await store.close()
        ctl.stop()


async def test_sequence_state_lives_with_the_stream(etcd: EtcdCluster) -> None:
    run = await start_controller(make_config(etcd.endpoints), agents=False)
    ingest = run.ctl.ingest
    try:
        # 600 made-up agent ids, 30 open streams at a time: one session per open stream, none once closed.
        async with grpc.aio.insecure_channel(run.target) as ch:
            stub = pb_grpc.HealthServiceStub(ch)
            for start in range(0, 600, 30):
                calls = [stub.Report() for _ in range(30)]
                for i, call in enumerate(calls):
                    await call.write(report("us-east-1", sequence=2**64 - 2, agent=f"made-up-{start + i}"))
                assert all([(await call.read()).sequence == 2**64 - 2 for call in calls])
                assert len(ingest.sessions) == 30
                for call in calls:
                    await call.done_writing()
                    assert await call.code() == grpc.StatusCode.OK
                await eventually(lambda: not ingest.sessions, what="every session gone with its stream")
        assert set(ingest.view.sites) == {"us-east-1"}  # keyed by configured site, not by agent

        # Within one stream the sequence must climb, and the agent may not change.
        err = await send_refused(run.target, [report("us-east-1", sequence=5), report("us-east-1", sequence=5)])
        assert (err.details() or "") == "sequence: 5 is not above the previous 5 on this stream"
        err = await send_refused(run.target, [report("us-east-1", sequence=1),
                                              report("us-east-1", sequence=2, agent="b")])
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "one agent per stream" in (err.details() or "")

        # A stream that stops reporting is closed and its session pruned.
        ingest.idle_seconds = 0.5
        async with grpc.aio.insecure_channel(run.target) as ch:
            call = pb_grpc.HealthServiceStub(ch).Report()
            await call.write(report("us-west-2"))
            assert (await call.read()).sequence == 1
            await eventually(lambda: ingest.sessions, what="the idle stream's session")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: not ingest.sessions, what="the idle session pruned")
    finally:
        await run.stop()


def _queue(ingest: Ingest, records: dict[str, TargetHealth]) -> None:
    # The writer's input, as reports and the silence timer hand it over (no valid report can carry a
    # record this large, which is the point: the writer must cope on its own).
    for site, health in records.items():
        ingest.submit(site, health)


async def test_a_record_etcd_refuses_does_not_block_the_others(etcd: EtcdCluster,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(etcd.endpoints, {"etcd": {"endpoints": etcd.endpoints, "prefix": "/test/steering",
                                                   "timeout_seconds": 1.0}})
    store = Store(config.etcd)
    await store.open()
    ingest = Ingest(config, store, "r1", lambda: False)
    ingest.start()
    try:
        async def records() -> dict[str, TargetHealth]:
            return {k.partition("@")[0]: h for k, h in (await store.get_health()).items()}

        async def every_site() -> dict[str, TargetHealth] | None:
            got = await records()
            return got if set(got) == set(SITES) else None

        def batch(culprit: TargetHealth) -> dict[str, TargetHealth]:
            out = {s: TargetHealth(status="healthy", load=float(i), updated_at=1.0) for i, s in enumerate(SITES)}
            out["eu-west-1"] = culprit
            return out

        # Too large for the bound: written at once without its details, the status kept.
        before = rejected("too_large")
        big = TargetHealth(status="unhealthy", updated_at=1.0, detail="x" * 100_000,
                           checks=(Check(name="db", detail="y" * 100),))
        _queue(ingest, batch(big))
        got = await eventually(every_site, what="every site's record")
        assert got["eu-west-1"].status == "unhealthy" and got["eu-west-1"].checks == ()
        assert got["eu-west-1"].detail == "details dropped: the record was too large"
        assert rejected("too_large") == before + 1

        # With the bound lifted, etcd itself refuses the batch: 1.7 MiB is over its request limit
        # (INVALID_ARGUMENT), 3 MiB over its gRPC message limit (RESOURCE_EXHAUSTED, retried as transient).
        # The batch is split until the culprit is alone; the others are written meanwhile.
        monkeypatch.setattr(limits, "MAX_HEALTH_RECORD_BYTES", 1 << 30)
        for n, size in enumerate((1_700_000, 3 << 20), start=2):
            before = rejected("refused")
            culprit = TargetHealth(status="unhealthy", updated_at=float(n), detail="z" * size)
            others = batch(culprit)
            others["oc-lon-1"] = TargetHealth(status="unhealthy", load=float(n), updated_at=float(n))
            _queue(ingest, others)

            async def written(n: int = n) -> dict[str, TargetHealth] | None:
                got = await records()
                ok = got["eu-west-1"].updated_at == n and got["oc-lon-1"].updated_at == n
                return got if ok else None

            got = await eventually(written, timeout=30, what=f"the batch with a {size}-byte record")
            assert got["oc-lon-1"].status == "unhealthy" and got["oc-lon-1"].load == n
            assert got["eu-west-1"].status == "unhealthy"
            assert got["eu-west-1"].detail == "details dropped: etcd refused the record"
            assert rejected("refused") == before + 1
    finally:
        await ingest.close()
        await store.close()

