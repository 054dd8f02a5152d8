"""A lease lives through a slow link (docs/failure-modes.md, the 300 ms finding).

Through a member that does not lead, a keepalive takes a round trip to the leader and the leader's own
confirmation; at 300 ms one-way in the lab that was over 1.2 s, while each keepalive was given a third of a
3 s TTL to be answered and then sent again: every try timed out and the lease lapsed, taking a healthy
region's records with it. Now a keepalive may take until the lease's expiry, and one slower than a third of
the TTL is also sent on a second stream. Real etcd; the link is a loopback proxy adding a fixed delay.
"""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.store.lease import LeaseKeeper
from tests.support.slowlink import SlowLink
from tests.support.store import etcd_cfg

TTL = 3


async def _hold(keeper: LeaseKeeper, seconds: float) -> None:
    """Wait ``seconds`` unless the lease is lost first."""
    try:
        await asyncio.wait_for(keeper.lost.wait(), seconds)
    except TimeoutError:
        return


async def test_a_lease_lives_through_a_link_whose_round_trip_is_half_its_ttl(etcd: EtcdCluster) -> None:
    host, port = etcd.endpoints[0].rsplit(":", 1)
    link = SlowLink((host, int(port)), delay=0.7)  # 1.4 s round trip: more than a third of the TTL
    await link.start()
    try:
        # unary calls need a budget above the round trip too (each try gets a third of it)
        async with Store(etcd_cfg([link.endpoint], timeout=6.0)) as store:
            keeper = LeaseKeeper(store.conn, TTL, "slow-link")
            with capture_logs() as logs:
                await keeper.grant(deadline=6.0)
                await _hold(keeper, 4 * TTL)
            assert not keeper.lost.is_set(), keeper.lost_reason
            assert any(e["event"] == "lease_keepalive_slow" for e in logs)  # the slow path was taken
            ttl = await store.conn.call("Lease.TimeToLive", store.conn.lease.time_to_live, keeper.id, deadline=6.0)
            assert int(ttl.TTL) > 0  # etcd agrees: alive
            await keeper.revoke()
    finally:
        await link.close()


async def test_a_records_lease_is_kept_while_etcd_still_has_it_though_its_answers_come_late(
        etcd: EtcdCluster) -> None:
    # Answers 2.15 s late (requests on time): etcd renews the lease every round trip, well within its TTL, but
    # each answer comes back after the local deadline of a keepalive sent when the last one came back. The
    # election's lease (strict) must count that as lost: a leader that cannot prove its lease must stop. A health
    # lease only carries records, which etcd still has: it is kept (the 300 ms spike lost one in CI that way,
    # and the recovery then put every record back on a new lease).
    host, port = etcd.endpoints[0].rsplit(":", 1)
    link = SlowLink((host, int(port)), delay=0.05, back=2.15)
    await link.start()
    try:
        # a connection's handshake waits for the late answers too: give an attempt longer than them
        slow = etcd_cfg([link.endpoint], timeout=12.0).model_copy(update={"reconnect_max_seconds": 5.0})
        async with Store(slow) as store, Store(etcd_cfg(etcd.endpoints)) as direct:
            strict = LeaseKeeper(store.conn, TTL, "slow-answers-strict")
            records = LeaseKeeper(store.conn, TTL, "slow-answers-records", strict=False)
            await asyncio.gather(strict.grant(deadline=12.0), records.grant(deadline=12.0))
            await _hold(records, 4 * TTL)
            assert strict.lost.is_set() and "within the TTL" in strict.lost_reason
            assert not records.lost.is_set(), records.lost_reason
            ttl = await direct.conn.call("Lease.TimeToLive", direct.conn.lease.time_to_live, records.id)
            assert int(ttl.TTL) > 0  # etcd agrees: alive all along
            await records.revoke()
    finally:
        await link.close()


async def test_a_leaders_lease_outlives_an_etcd_election_that_begins_just_before_a_keepalive(
        etcd: EtcdCluster) -> None:
    # Cutting the member that leads etcd holds every call for the majority's election: up to twice etcd's
    # election timeout, 4 s in the lab against the leader's 5 s lease. A strict lease is lost here at its
    # last acknowledged send plus the TTL, so all the time since that send is headroom gone: renewed every
    # third of the TTL, an election that began just before the next keepalive left less than two thirds of
    # it, and the lab's leader lost its term for the partition of a region that did not lead (docs/lab.md,
    # Findings). Here the answers are held for 80 % of the TTL (the requests get through: etcd renews), from
    # just before a keepalive a third of the TTL after the one last seen; the lease must be proven throughout.
    host, port = etcd.endpoints[0].rsplit(":", 1)
    link = SlowLink((host, int(port)), delay=0.0)
    await link.start()
    loop = asyncio.get_running_loop()
    try:
        async with Store(etcd_cfg([link.endpoint], timeout=6.0)) as store:
            keeper = LeaseKeeper(store.conn, TTL, "leader-through-an-election")
            await keeper.grant(deadline=6.0)
            for _ in range(2):
                await _hold(keeper, 1.0)
                seen = link.requested

                async def next_request(seen: float = seen) -> None:  # the next request out: a keepalive's send
                    while link.requested == seen:
                        await asyncio.sleep(0.005)

                await asyncio.wait_for(next_request(), TTL)
                await asyncio.sleep(max(0.0, link.requested + 0.95 * TTL / 3 - loop.time()))
                link.hold_answers(0.8 * TTL)
                await _hold(keeper, 0.8 * TTL + 0.5)
                assert not keeper.lost.is_set(), keeper.lost_reason
            ttl = await store.conn.call("Lease.TimeToLive", store.conn.lease.time_to_live, keeper.id, deadline=6.0)
            assert int(ttl.TTL) > 0
            await keeper.revoke()
    finally:
        await link.close()
