"""Controller replicas on a real etcd, fed by agent streams over real gRPC sockets.

Agents here are plain gRPC clients streaming HealthReports (the real agent
process has its own tests and the end-to-end suite); everything else is
real: etcd, the controller's server, election, planning and publishing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client import REGISTRY

from steering.config import Config, parse_config
from steering.controller.server import Controller
from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb
from tests.support import EXAMPLE_CONFIG, eventually
from tests.support.reporters import REGIONS, FakeAgent, exchange, send_refused, start_agents


def make_config(endpoints: list[str], **policy: Any) -> Config:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["etcd"] = {"endpoints": endpoints, "prefix": "/test/steering"}
    data["policy"].update({"silence_seconds": 2.0, "step_seconds": 0.3, "max_shift": 0.5, **policy})
    data["controller"] = {"listen": "127.0.0.1:0", "debounce_seconds": 0.05}
    return parse_config(data, "test", EXAMPLE_CONFIG.parent)


async def table_of(store: Store) -> RoutingTable | None:
    return await store.get_table()


def weight(table: RoutingTable | None, geo: str, target: str, service: str = "api.example.test.") -> int | None:
    if table is None:
        return None
    route = table.route(service, geo)
    return None if route is None else route.weights.get(target)


@contextlib.asynccontextmanager
async def running(config: Config, name: str = "c1") -> AsyncIterator[tuple[Controller, dict[str, FakeAgent]]]:
    """A controller replica with a fake agent per region and site streaming to it; both stopped after."""
    ctl = Controller(config, name, "127.0.0.1:0")
    port = await ctl.start()
    agents = await start_agents(port)
    try:
        yield ctl, agents
    finally:
        for a in agents.values():
            await a.stop()
        await ctl.stop()


async def all_healthy_table(store: Store) -> RoutingTable | None:
    t = await store.get_table()
    return t if t is not None and all(t.regions[r].health == "healthy" for r in REGIONS) else None


@pytest.fixture
async def cluster(etcd: EtcdCluster) -> AsyncIterator[tuple[Config, Store]]:
    config = make_config(etcd.endpoints)
    store = Store(config.etcd)
    await store.open()
    try:
        yield config, store
    finally:
        await store.close()


async def test_reports_drive_the_table_and_unhealthy_region_leaves(cluster: tuple[Config, Store]) -> None:
    config, store = cluster
    async with running(config) as (ctl, agents):
        await eventually(lambda: ctl.leader.is_leader, what="c1 to lead")

        await eventually(lambda: all_healthy_table(store), what="all regions healthy in routing/current")
        t = await store.get_table()
        assert t is not None and weight(t, "na-east", "us-east-1") == 1000
        assert t.leader == "c1"

        agents["us-east-1"].set(status=pb.HEALTH_STATUS_UNHEALTHY)

        async def east_out() -> RoutingTable | None:
            t = await store.get_table()
            return t if t and weight(t, "na-east", "us-east-1") == 0 else None

        t = await eventually(east_out, what="us-east-1 to leave na-east")
        assert t.regions["us-east-1"].health == "unhealthy" and not t.regions["us-east-1"].serving
        for geo in ("na-east", "south-america", "world"):
            assert weight(t, geo, "us-east-1") == 0, geo
        assert t.route("video.example.test.", "na-east").weights["us-east-1"] == 0  # type: ignore[union-attr]

        # Back to healthy: it returns, ramped (max_shift 0.5 per step here).
        agents["us-east-1"].set(status=pb.HEALTH_STATUS_HEALTHY)
        seen: list[int] = []

        async def east_back() -> bool:
            t = await store.get_table()
            w = weight(t, "na-east", "us-east-1") or 0
            if not seen or seen[-1] != w:
                seen.append(w)
            return w == 1000

        await eventually(east_back, what="us-east-1 back in na-east")
        assert any(0 < w < 1000 for w in seen), f"restore was not ramped: {seen}"


async def test_bad_reports_are_rejected_and_not_stored(cluster: tuple[Config, Store]) -> None:
    config, store = cluster
    ctl = Controller(config, "c1", "127.0.0.1:0")
    port = await ctl.start()
    try:
        cases = [
            (pb.HealthReport(site="mars-1", region="mars-1", kind=pb.SITE_KIND_REGION,
                             status=pb.HEALTH_STATUS_HEALTHY, sequence=1), "site"),
            (pb.HealthReport(site="oc-nyc-1", region="eu-west-1", kind=pb.SITE_KIND_CACHE,
                             status=pb.HEALTH_STATUS_HEALTHY, sequence=1), "region"),
            (pb.HealthReport(site="us-east-1", region="us-east-1", kind=pb.SITE_KIND_REGION,
                             status=pb.HEALTH_STATUS_HEALTHY, load=-1, sequence=1), "load"),
            (pb.HealthReport(site="us-east-1", region="us-east-1", kind=pb.SITE_KIND_CACHE,
                             status=pb.HEALTH_STATUS_HEALTHY, sequence=1), "site"),
            (pb.HealthReport(site="us-east-1", region="us-east-1", kind=pb.SITE_KIND_REGION, sequence=1), "status"),
            (pb.HealthReport(site="us-east-1", region="us-east-1", kind=pb.SITE_KIND_REGION,
                             status=pb.HEALTH_STATUS_HEALTHY), "sequence"),
        ]
        target = f"127.0.0.1:{port}"
        for report, field in cases:
            err = await send_refused(target, [report])
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (err.details() or "").startswith(field + ":"), err.details()
        # A sequence that goes backwards on one agent is refused too.
        good = dict(site="us-west-2", region="us-west-2", kind=pb.SITE_KIND_REGION,
                    status=pb.HEALTH_STATUS_HEALTHY, agent_id="a1")
        acks, refusal = await exchange(target, [pb.HealthReport(sequence=5, **good),
                                                pb.HealthReport(sequence=4, **good)])
        assert [a.sequence for a in acks] == [5]
        assert refusal is not None and "sequence: 4" in (refusal.details() or "")
        async def good_one_stored() -> dict[str, Any] | None:
            # Once the valid report's record is in etcd, the writer has handled everything before it.
            found = await store.get_health()
            return found if any(k.startswith("us-west-2@") for k in found) else None

        stored = await eventually(good_one_stored, what="the valid report's record")
        sites = {k.split("@")[0] for k in stored}
        assert sites <= {"us-west-2"}, stored
        assert ctl.ingest.view.latest("mars-1") is None
    finally:
        await ctl.stop()


async def test_steady_reports_cause_no_etcd_writes(cluster: tuple[Config, Store]) -> None:
    config, _store = cluster
    async with running(config) as (_ctl, agents):
        await eventually(lambda: all(len(a.acks) >= 3 for a in agents.values()), what="reports flowing")

        def writes() -> float:
            return REGISTRY.get_sample_value("steering_etcd_writes_total", {"kind": "health"}) or 0.0

        before = writes()
        acks_before = sum(len(a.acks) for a in agents.values())
        await eventually(lambda: sum(len(a.acks) for a in agents.values()) >= acks_before + 25,
                         what="25 more reports")
        assert writes() == before, "unchanged reports must not be written"
        agents["us-west-2"].set(load=5000.0)  # beyond the 5 % band: one write
        await eventually(lambda: writes() >= before + 1, what="a write for a real change")


async def test_silent_site_expires_and_is_distinct_from_unhealthy(cluster: tuple[Config, Store]) -> None:
    config, store = cluster
    async with running(config) as (_ctl, agents):
        await eventually(lambda: all_healthy_table(store), what="all healthy")
        await agents["eu-west-1"].stop()
        agents["us-west-2"].set(status=pb.HEALTH_STATUS_UNHEALTHY)

        async def states() -> RoutingTable | None:
            t = await store.get_table()
            ok = t and t.regions["eu-west-1"].health == "silent" and t.regions["us-west-2"].health == "unhealthy"
            return t if ok else None

        t = await eventually(states, timeout=15, what="eu-west-1 silent, us-west-2 unhealthy")
        assert not t.regions["eu-west-1"].serving and not t.regions["us-west-2"].serving
        assert weight(t, "europe", "eu-west-1") == 0 and weight(t, "europe", "us-east-1") == 1000


async def test_leader_failover_and_fencing(cluster: tuple[Config, Store]) -> None:
    config, store = cluster
    c1 = Controller(config, "c1", "127.0.0.1:0")
    c2 = Controller(config, "c2", "127.0.0.1:0")
    p1 = await c1.start()
    await eventually(lambda: c1.leader.is_leader, what="c1 leads")
    p2 = await c2.start()
    agents = await start_agents(p1)
    stopped = False
    try:
        async def version() -> int:
            t = await store.get_table()
            return t.version if t else 0

        await eventually(version, what="a first table")
        assert not c2.leader.is_leader
        old_leadership = c1.leader.leadership
        await c1.stop()
        stopped = True
        await eventually(lambda: c2.leader.is_leader, what="c2 takes over")
        # The resigned leadership is fenced: it cannot publish any more.
        t = await store.get_table()
        assert t is not None
        forged = RoutingTable(version=t.version + 100, parent_version=t.version, generated_at=time.time(),
                              services=t.services, regions=t.regions, sites=t.sites, leader="c1")
        assert await store.publish_table(forged, old_leadership) is False  # type: ignore[arg-type]
        # Agents fail over to c2 and a later change still converges under the new leader.
        for a in agents.values():
            await a.stop()
        agents = await start_agents(p2)
        agents["eu-west-1"].set(status=pb.HEALTH_STATUS_UNHEALTHY)

        async def converged() -> RoutingTable | None:
            t = await store.get_table()
            return t if t and t.leader == "c2" and weight(t, "europe", "eu-west-1") == 0 else None

        t2 = await eventually(converged, what="c2 publishes eu-west-1 out")
        assert t2.version < forged.version
    finally:
        for a in agents.values():
            await a.stop()
        if not stopped:
            await c1.stop()
        await c2.stop()


async def test_controller_survives_losing_an_etcd_member(etcd3: EtcdCluster) -> None:
    config = make_config(etcd3.endpoints)
    store = Store(config.etcd)
    await store.open()
    try:
        async with running(config) as (ctl, agents):
            await eventually(lambda: all_healthy_table(store), timeout=15, what="all healthy on the 3-member cluster")
            etcd3.members[0].kill()  # the member most clients talk to first
            agents["eu-west-1"].set(status=pb.HEALTH_STATUS_UNHEALTHY)

            async def europe_moved() -> bool:
                t = await store.get_table()
                return weight(t, "europe", "eu-west-1") == 0

            await eventually(europe_moved, timeout=20, what="a change to flow with one etcd member down")
            assert ctl.leader.is_leader
    finally:
        await store.close()
