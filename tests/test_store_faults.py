"""The store survives what etcd does in production: a restart, the loss of one member of three."""

from __future__ import annotations

import asyncio

from steering.etcdproc import EtcdCluster
from steering.model import TargetHealth
from steering.store import Store, StoreError
from steering.table import RoutingTable
from tests.support import eventually
from tests.support.slowlink import SlowLink
from tests.support.store import Follower, etcd_cfg, make_table


async def _retry_put(store: Store, table: RoutingTable, timeout: float = 20.0) -> None:
    """Writes may fail while etcd elects a leader; the caller (like the controller) retries."""
    end = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await store.put_table(table)
            return
        except StoreError:
            if asyncio.get_running_loop().time() > end:
                raise
            await asyncio.sleep(0.1)


async def test_watch_survives_etcd_restart(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints, timeout=2.0), election_ttl=5) as store:
        await store.put_table(make_table(1))
        tables = Follower(store.watch_table())
        health = Follower(store.watch_health())
        try:
            await tables.wait_for(lambda t: t.version == 1, what="v1")
            await health.wait_for(lambda h: h == {}, what="empty health")
            member = etcd.members[0]
            member.stop()
            # While etcd is down the watches neither raise nor end; calls fail with a clear error.
            try:
                await store.get_table()
                raise AssertionError("get_table succeeded with etcd down")
            except StoreError as exc:
                assert "unavailable" in str(exc)
            assert not tables.task.done() and not health.task.done()
            member.start()
            etcd.wait_healthy()
            await _retry_put(store, make_table(2))
            await tables.wait_for(lambda t: t.version == 2, timeout=20, what="v2 after restart")
            await store.put_health("site-a", TargetHealth(status="healthy"), ttl=5)
            await health.wait_for(lambda h: "site-a" in h, timeout=20, what="health after restart")
            assert [t.version for t in tables.items] == [1, 2]
            # Election still works after the restart.
            lead = await asyncio.wait_for(store.campaign("after-restart"), 20)
            assert await store.publish_table(make_table(3), lead)
            await tables.wait_for(lambda t: t.version == 3, timeout=20, what="v3 published")
            await lead.resign()
        finally:
            await tables.stop()
            await health.stop()


async def test_one_member_of_three_lost(etcd3: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd3.endpoints, timeout=3.0), election_ttl=3) as store, \
               Store(etcd_cfg(etcd3.endpoints, timeout=3.0), election_ttl=3) as reader:
        await store.put_table(make_table(1))
        tables = Follower(reader.watch_table())
        health = Follower(reader.watch_health())
        lead = await store.campaign("leader")
        version = 1
        try:
            await tables.wait_for(lambda t: t.version == 1, what="v1")
            # Kill each member in turn, so whichever member a watch or keepalive stream is on gets killed once.
            for member in etcd3.members:
                member.kill()
                version += 1
                assert await _publish_retrying(store, make_table(version), lead)
                await tables.wait_for(lambda t, v=version: t.version == v, timeout=20, what=f"v{version}")
                got = await reader.get_table()
                assert got is not None and got.version == version
                site = f"site-{member.name}"
                await store.put_health(site, TargetHealth(status="healthy"), ttl=10)
                await health.wait_for(lambda h, s=site: s in h, timeout=20, what=f"health {site}")
                member.start()
                etcd3.wait_healthy()
            assert [t.version for t in tables.items] == list(range(1, version + 1))
            assert not lead.lost.is_set()  # the lease was kept alive through every member loss
            assert await reader.leader() == "leader"
        finally:
            await tables.stop()
            await health.stop()
            await lead.resign()


async def _publish_retrying(store: Store, table: RoutingTable, lead: object, timeout: float = 20.0) -> bool:
    end = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await store.publish_table(table, lead)  # type: ignore[arg-type]
        except StoreError:
            if asyncio.get_running_loop().time() > end:
                raise
            await asyncio.sleep(0.1)


async def test_password_auth_covers_watches_and_leases(etcd: EtcdCluster) -> None:
    import subprocess
    import sys
    from pathlib import Path

    etcdctl = str(Path(sys.executable).parent / "etcdctl")
    ep = ["--endpoints", etcd.endpoints[0]]
    for args in (["user", "add", "root", "--new-user-password=s3cret"], ["auth", "enable"]):
        subprocess.run(["timeout", "10", etcdctl, *ep, *args], check=True, capture_output=True)
    cfg = etcd_cfg(etcd.endpoints, timeout=2.0).model_copy(update={"username": "root", "password": "s3cret"})
    async with Store(cfg) as store:
        await store.put_table(make_table(1))
        tables = Follower(store.watch_table())
        try:
            await tables.wait_for(lambda t: t.version == 1, what="v1 with auth")
            await store.put_table(make_table(2))
            await tables.wait_for(lambda t: t.version == 2, what="v2 with auth")  # the raw watch stream sends the token
            await store.put_health("s", TargetHealth(status="healthy"), ttl=2)
            assert await store.refresh_health_lease()  # the raw keepalive stream sends the token
            lead = await store.campaign("authed")
            assert await store.publish_table(make_table(3), lead)
            await lead.resign()
        finally:
            await tables.stop()
    bad = cfg.model_copy(update={"password": "wrong"})
    store = Store(bad)
    try:
        await store.open()
        raise AssertionError("opened with a wrong password")
    except StoreError as exc:
        assert "authenticat" in str(exc).lower()
    finally:
        await store.close()


async def test_outage_longer_than_ttl_loses_leadership_and_health_comes_back(etcd: EtcdCluster) -> None:

    async with Store(etcd_cfg(etcd.endpoints, timeout=1.0), election_ttl=2) as store:
        await store.put_health("site-a", TargetHealth(status="healthy", load=7.0), ttl=2)
        assert len(store.health_lease_ids()) == 1
        lead = await store.campaign("old")
        etcd.members[0].stop()
        # Cut off for longer than the TTL: the leader must assume it lost, without any help from etcd.
        await asyncio.wait_for(lead.lost.wait(), 15)
        etcd.members[0].start()
        etcd.wait_healthy()

        async def health_on_live_lease() -> bool:
            # On the old lease if etcd still had it when it came back (it extends leases on start, and a
            # health lease is lost only when etcd says so or after two TTLs unanswered), else on a new one.
            try:
                resp = await store.conn.kv.get(store.keys.health("site-a"))
                if not resp.kvs or resp.kvs[0].lease not in store.health_lease_ids():
                    return False
                ttl = await store.conn.lease.time_to_live(resp.kvs[0].lease)
            except Exception:
                return False
            return int(ttl.TTL) > 0

        await eventually(health_on_live_lease, timeout=20, what="health on a lease etcd keeps alive")
        assert not await store.publish_table(make_table(1), lead)  # the lost leadership stays fenced
        new = await asyncio.wait_for(store.campaign("new"), 20)
        assert await store.publish_table(make_table(2), new)
        assert (await store.get_health())["site-a"].load == 7.0
        await new.resign()


async def test_a_leader_that_gave_up_a_lease_etcd_kept_leads_again_under_the_same_key(etcd: EtcdCluster) -> None:
    # etcd's own election holds every keepalive (a cut of the member that led etcd: seconds, longer than the
    # lease when a vote splits). The leader cannot prove its lease and stops, but etcd renewed it all along
    # (the requests got through): campaigning again, it renews that lease and leads under the same key, and
    # the replica waiting for the key never saw it go (docs/lab.md, Findings).
    host, port = etcd.endpoints[0].rsplit(":", 1)
    link = SlowLink((host, int(port)), delay=0.0)
    await link.start()
    try:
        async with Store(etcd_cfg([link.endpoint], timeout=6.0), election_ttl=3) as store, \
                   Store(etcd_cfg(etcd.endpoints), election_ttl=3) as other:
            lead = await store.campaign("leader")
            waiting = asyncio.create_task(other.campaign("other"))

            async def other_campaigning() -> bool:  # its lease granted: it is waiting for the key from now on
                return len((await other.conn.lease.leases()).leases) >= 2

            await eventually(other_campaigning, what="the other replica campaigning")
            link.hold_answers(4.5)
            await asyncio.wait_for(lead.lost.wait(), 10)
            assert "within the TTL" in lead.lost_reason
            assert not await store.publish_table(make_table(1), lead)  # the term that gave up stays over
            again = await asyncio.wait_for(store.campaign("leader"), 20)
            assert again.create_revision == lead.create_revision and again.lease_id == lead.lease_id
            assert again.resumed and not lead.resumed  # what its leader_elected event says
            assert await store.publish_table(make_table(2), again)
            resp = await other.conn.kv.get(other.keys.leader)
            assert resp.kvs[0].value == b"leader" and resp.kvs[0].create_revision == lead.create_revision
            assert not waiting.done()  # the key never went: the other replica is still waiting for it
            ttl = await other.conn.call("Lease.TimeToLive", other.conn.lease.time_to_live, again.lease_id)
            assert int(ttl.TTL) > 0
            await again.resign()
            handed = await asyncio.wait_for(waiting, 20)  # and once it goes, the other takes over
            assert not handed.resumed
            assert await other.publish_table(make_table(3), handed)
            await handed.resign()
    finally:
        await link.close()
