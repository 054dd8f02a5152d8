"""A ramped evacuation keeps going when the leader dies halfway: the next leader continues the table's progress."""

from __future__ import annotations

from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.controller import make_config, region_share, start_controller, stubs


async def test_ramp_survives_a_leader_change(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    c1 = await start_controller(config, "c1", agents=False)
    # Agents report to c2, so stopping the leader c1 loses no health.
    c2 = await start_controller(config, "c2", lead=False)
    store = Store(config.etcd)
    await store.open()
    ch, op, _, md = stubs(c2.target)  # a follower takes the operator call
    c1_stopped = False
    try:
        assert c1.ctl.leader.is_leader and not c2.ctl.leader.is_leader
        start = region_share(await store.get_table(), "eu-west-1")
        assert start > 0
        resp = await op.Evacuate(pb.EvacuateRequest(region="eu-west-1", mode=pb.EVACUATION_MODE_RAMP,
                                                    ramp=pb.Ramp(step=0.25, interval_seconds=1.0),
                                                    reason="failover test"), metadata=md)
        assert resp.applied
        shares: list[tuple[str, int]] = []

        async def record() -> tuple[str, int]:
            t = await store.get_table()
            assert t is not None
            s = (t.leader, region_share(t, "eu-west-1"))
            if not shares or shares[-1] != s:
                shares.append(s)
            return s

        async def halfway() -> bool:
            leader, share = await record()
            return leader == "c1" and 0 < share < start

        await eventually(halfway, timeout=10, what="the ramp to be under way on c1")
        await c1.ctl.stop()
        c1_stopped = True
        await eventually(lambda: c2.ctl.leader.is_leader, what="c2 to lead")

        async def done() -> bool:
            leader, share = await record()
            return leader == "c2" and share == 0

        await eventually(done, timeout=15, what="c2 to finish the ramp")
        values = [s for _, s in shares]
        assert values == sorted(values, reverse=True), f"the ramp went backwards: {shares}"
        assert any(leader == "c2" and 0 < s < start for leader, s in shares) or values[-1] == 0
    finally:
        await ch.close()
        await store.close()
        if not c1_stopped:
            await c1.stop()
        await c2.stop()
