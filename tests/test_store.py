"""The etcd store against a real single-member etcd: round trips, watches, election, leases, fencing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from steering.etcdproc import EtcdCluster
from steering.model import Evacuation, Pin, Restore, TargetHealth
from steering.store import Store
from steering.store.store import KEEP_TERMS_OVER
from tests.support import eventually
from tests.support.store import Follower, etcd_cfg, make_table


@pytest.fixture
async def store(etcd: EtcdCluster) -> AsyncIterator[Store]:
    async with Store(etcd_cfg(etcd.endpoints)) as s:
        yield s


async def test_table_round_trip(store: Store) -> None:
    assert await store.get_table() is None
    t = make_table(1)
    await store.put_table(t)
    got = await store.get_table()
    assert got == t
    assert got is not None and got.to_json() == t.to_json()
    t2 = make_table(2)
    await store.put_table(t2)
    assert await store.get_table() == t2


async def test_the_writer_reads_its_own_table_without_decoding_it_and_others_decode(etcd: EtcdCluster) -> None:
    # the leader's watch sees the table it just wrote: the written object, not a decoded copy; a table
    # written by another process (or rewritten with other content) is read from etcd as always
    async with Store(etcd_cfg(etcd.endpoints)) as writer, Store(etcd_cfg(etcd.endpoints)) as other:
        t = make_table(1)
        await writer.put_table(t)
        assert await writer.get_table() is t
        from_other = await other.get_table()
        assert from_other == t and from_other is not t
        t2 = make_table(2)
        await other.put_table(t2)
        got = await writer.get_table()
        assert got == t2 and got is not t2 and got is not t


async def test_health_round_trip(store: Store) -> None:
    a = TargetHealth(status="healthy", capacity=100.0, load=12.5, updated_at=5.0, detail="ok")
    b = TargetHealth(status="unhealthy", detail="http 503")
    await store.put_health("site-a", a, ttl=10)
    await store.put_health("site-b", b, ttl=10)
    assert await store.get_health() == {"site-a": a, "site-b": b}
    await store.delete_health("site-a")
    assert await store.get_health() == {"site-b": b}


async def test_overrides_round_trip(store: Store) -> None:
    e = Evacuation(region="us-east-1", mode="ramp", step=0.25, interval=60, started_at=10.0, reason="maint",
                   actor="alice", request_id="r1")
    r = Restore(region="eu-west-1", step=0.5, interval=30, started_at=20.0, reason="back", actor="bob")
    p = Pin(service="www.example.com.", geo="geo-1", weights={"us-east-1": 600, "eu-west-1": 400}, reason="test",
            actor="carol")
    await store.put_evacuation(e)
    await store.put_restore(r)
    await store.put_pin(p)
    o = await store.get_overrides()
    assert o.evacuations == (e,) and o.restores == (r,) and o.pins == (p,)
    await store.delete_evacuation("us-east-1")
    await store.delete_restore("eu-west-1")
    await store.delete_pin("www.example.com.", "geo-1")
    o = await store.get_overrides()
    assert o.evacuations == () and o.restores == () and o.pins == ()


async def test_topology_round_trip_small_and_large(store: Store) -> None:
    assert await store.get_topology() is None
    small = json.dumps({"regions": ["a", "b"]}).encode()
    await store.put_topology(small)
    assert await store.get_topology() == small
    big = json.dumps({"sites": [{"id": f"site-{i:05d}", "region": "r", "capacity": 100} for i in range(30000)]}).encode()
    assert len(big) > 1_500_000  # larger than etcd accepts in one request unless compressed
    await store.put_topology(big)
    assert await store.get_topology() == big


async def test_bad_key_components_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="site"):
        await store.put_health("a/b", TargetHealth(), ttl=5)
    with pytest.raises(ValueError, match="region"):
        await store.delete_evacuation("")


async def test_operator_action_applied_once(store: Store) -> None:
    e = Evacuation(region="us-east-1", reason="maint", actor="alice")
    puts = {"overrides/evacuations/us-east-1": json.dumps(e.to_dict()).encode()}
    applied, audit_id = await store.apply_operator_action("req-1", puts, [], {"action": "evacuate", "who": "alice"})
    assert applied and audit_id
    again, audit_again = await store.apply_operator_action("req-1", {"overrides/evacuations/eu-west-1": b"{}"}, [],
                                                           {"action": "evacuate", "who": "alice"})
    assert not again and audit_again == audit_id
    o = await store.get_overrides()
    assert [x.region for x in o.evacuations] == ["us-east-1"]  # the repeat wrote nothing
    applied2, audit2 = await store.apply_operator_action("req-2", {}, ["overrides/evacuations/us-east-1"],
                                                         {"action": "restore", "who": "bob"})
    assert applied2 and audit2 != audit_id
    assert (await store.get_overrides()).evacuations == ()
    audit = await store.list_audit()
    assert [a["id"] for a in audit] == [audit2, audit_id]  # newest first
    assert audit[0]["action"] == "restore" and audit[1]["request_id"] == "req-1"
    assert [a["id"] for a in await store.list_audit(limit=1)] == [audit2]
    with pytest.raises(ValueError, match="election"):
        await store.apply_operator_action("req-3", {"election/leader": b"me"}, [], {})


async def test_watch_table_yields_current_then_newer(store: Store) -> None:
    await store.put_table(make_table(1))
    f = Follower(store.watch_table())
    try:
        await f.wait_for(lambda t: t.version == 1, what="v1")
        await store.put_table(make_table(2))
        await f.wait_for(lambda t: t.version == 2, what="v2")
        # Malformed data is logged and skipped, not fatal; an older version is never yielded.
        await store.conn.kv.put(store.keys.routing_current, b"{not json")
        await store.put_table(make_table(1))
        await store.put_table(make_table(3))
        await f.wait_for(lambda t: t.version == 3, what="v3")
        assert [t.version for t in f.items] == [1, 2, 3]
    finally:
        await f.stop()


async def test_large_table_round_trip_at_benchmark_scale(etcd: EtcdCluster) -> None:
    # 250 geos x 20 services x 5 regions plus 10,000 sites: several MiB of JSON.
    big = make_table(7, n_services=20, n_geos=250, n_regions=5, n_sites=10_000)
    raw = len(big.to_json())
    assert raw > 1_500_000
    for inline in (1024 * 1024, 64 * 1024):  # one txn; and chunks written ahead of the flip
        async with Store(etcd_cfg(etcd.endpoints, prefix=f"/big{inline}"), chunk_bytes=128 * 1024,
                         inline_txn_bytes=inline) as s:
            await s.put_table(big)
            got = await s.get_table()
            assert got is not None and got.to_json() == big.to_json()
            f = Follower(s.watch_table())
            try:
                await f.wait_for(lambda t: t.version == 7, what="big table via watch")
            finally:
                await f.stop()


async def test_old_versions_cleaned_up(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints), keep_versions=2) as s:
        for v in range(1, 7):
            await s.put_table(make_table(v))
        versions = await s.table_versions()
        assert max(versions) == 6 and len(versions) <= 3  # the current one and two before it
        assert (await s.get_table()).version == 6  # type: ignore[union-attr]


async def test_watch_health_sees_changes_and_expiry(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints)) as reader:
        f = Follower(reader.watch_health())
        try:
            writer = Store(etcd_cfg(etcd.endpoints))
            await writer.open()
            await writer.put_health("site-a", TargetHealth(status="healthy"), ttl=1)
            await f.wait_for(lambda h: h.get("site-a", TargetHealth()).status == "healthy", what="site-a healthy")
            await writer.put_health("site-a", TargetHealth(status="unhealthy"), ttl=1)
            await f.wait_for(lambda h: h.get("site-a", TargetHealth()).status == "unhealthy", what="unhealthy")
            # The process "dies": no more keepalives; the key must expire by itself.
            await writer.close()
            await f.wait_for(lambda h: "site-a" not in h, timeout=15, what="site-a expired")
        finally:
            await f.stop()


async def test_revoked_health_lease_deletes_then_store_restores(store: Store, etcd: EtcdCluster) -> None:
    await store.put_health("site-a", TargetHealth(status="healthy", load=3.0), ttl=5)
    f = Follower(store.watch_health())
    try:
        await f.wait_for(lambda h: "site-a" in h, what="site-a present")
        (lease_id,) = store.health_lease_ids()
        async with Store(etcd_cfg(etcd.endpoints)) as other:
            await other.conn.kv.put(b"/x", b"y")
            await other.conn.lease.revoke(lease_id)
        await f.wait_for(lambda h: "site-a" not in h, what="site-a deleted by the revoke")
        back = await f.wait_for(lambda h: "site-a" in h, what="site-a restored on a new lease")
        assert back["site-a"].load == 3.0
        assert store.health_lease_ids() != [lease_id]
    finally:
        await f.stop()


async def test_overrides_watch(store: Store) -> None:
    f = Follower(store.watch_overrides())
    try:
        await f.wait_for(lambda o: o.evacuations == (), what="empty overrides")
        await store.put_evacuation(Evacuation(region="r1"))
        await f.wait_for(lambda o: [e.region for e in o.evacuations] == ["r1"], what="evacuation")
        await store.conn.kv.put(store.keys.evacuation("bad"), b"[1,2]")  # malformed: skipped
        await store.put_pin(Pin(service="s.example.com.", geo="g", weights={"r1": 1000}))
        o = await f.wait_for(lambda o: len(o.pins) == 1, what="pin")
        assert [e.region for e in o.evacuations] == ["r1"]
        await store.delete_evacuation("r1")
        await f.wait_for(lambda o: o.evacuations == (), what="evacuation removed")
    finally:
        await f.stop()


async def test_two_campaigners_one_leader_at_a_time(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints), election_ttl=2) as a, \
               Store(etcd_cfg(etcd.endpoints), election_ttl=2) as b:
        la = await a.campaign("a")
        assert await a.leader() == "a"
        second = asyncio.create_task(b.campaign("b"))

        async def b_has_lease() -> bool:  # b has started campaigning (granted its lease), and must now wait
            return len((await b.conn.lease.leases()).leases) >= 2

        await eventually(b_has_lease, what="second campaigner started")
        assert not second.done() and await b.leader() == "a"
        await la.resign()
        assert la.lost.is_set()
        lb = await asyncio.wait_for(second, 10)
        assert await b.leader() == "b" and not lb.lost.is_set()
        # The leader dies without resigning: its lease expires, and "a" takes over again.
        third = asyncio.create_task(a.campaign("a2"))
        await lb.abandon()
        la2 = await asyncio.wait_for(third, 15)
        assert await a.leader() == "a2" and not la2.lost.is_set()
        await la2.resign()


async def test_fencing_old_leader_cannot_publish(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints), election_ttl=2) as a, \
               Store(etcd_cfg(etcd.endpoints), election_ttl=2) as b:
        la = await a.campaign("a")
        assert await a.publish_table(make_table(1), la)
        # Partition "a" from etcd's point of view: revoke its lease behind its back.
        await b.conn.lease.revoke(la.lease_id)
        lb = await asyncio.wait_for(b.campaign("b"), 10)
        await asyncio.wait_for(la.lost.wait(), 10)
        # Even ignoring "lost", the txn itself refuses the old leader.
        la.lost.clear()
        assert not await a.publish_table(make_table(2), la)
        assert (await b.get_table()).version == 1  # type: ignore[union-attr]
        assert await b.publish_table(make_table(3), lb)
        assert (await a.get_table()).version == 3  # type: ignore[union-attr]
        # A large (pre-written chunks) publish from the fenced leader also leaves nothing current.
        a.inline_txn_bytes = 1
        assert not await a.publish_table(make_table(4), la)
        assert (await b.get_table()).version == 3  # type: ignore[union-attr]
        await lb.resign()


async def test_revoked_election_lease_sets_lost(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints), election_ttl=3) as a:
        la = await a.campaign("a")
        assert not la.lost.is_set()
        await a.conn.lease.revoke(la.lease_id)
        await asyncio.wait_for(la.lost.wait(), 10)
        assert await a.leader() is None
        assert not await a.publish_table(make_table(1), la)


async def test_a_replica_keeps_only_its_last_few_terms_that_are_over(etcd: EtcdCluster) -> None:
    # terms that are over are kept so that a later campaign can resume one whose lease etcd still has; a
    # replica whose terms come and go for months must not keep them all
    async with Store(etcd_cfg(etcd.endpoints), election_ttl=3) as a:
        terms = []
        for _ in range(KEEP_TERMS_OVER + 3):
            lead = await a.campaign("a")
            terms.append(lead)
            await lead.resign()
        kept = a._leaderships
        assert kept == terms[-KEEP_TERMS_OVER - 1:]  # the last few, oldest first
        assert all(lead.lost.is_set() for lead in kept)
        last = await a.campaign("a")
        assert a._leaderships[-1] is last and len(a._leaderships) == KEEP_TERMS_OVER + 1
        await last.resign()


async def test_compaction_under_watch(store: Store) -> None:
    await store.put_table(make_table(1))
    f = Follower(store.watch_table())
    h = Follower(store.watch_health())
    try:
        await f.wait_for(lambda t: t.version == 1, what="v1")
        for v in range(2, 5):
            await store.put_table(make_table(v))
        await f.wait_for(lambda t: t.version == 4, what="v4")
        await store.compact()
        await store.put_table(make_table(5))
        await store.put_health("s", TargetHealth(status="healthy"), ttl=5)
        await f.wait_for(lambda t: t.version == 5, what="v5 after compaction")
        await h.wait_for(lambda m: "s" in m, what="health after compaction")
        versions = [t.version for t in f.items]
        assert versions == sorted(set(versions)) and versions[-1] == 5
    finally:
        await f.stop()
        await h.stop()


async def test_watch_from_compacted_revision_resyncs(store: Store) -> None:
    # The raw situation the adapter exists for: a watch asked to start below the compaction point.
    from steering.store.watch import Resync, _events

    for i in range(5):
        await store.conn.kv.put(store.keys.rel(f"scratch/{i}"), b"x")
    await store.compact()
    with pytest.raises(Resync, match="compact"):
        async for _ in _events(store.conn, store.keys.rel("scratch/0"), b"", 1):
            pass


async def test_request_ids_expire_after_their_ttl(etcd: EtcdCluster) -> None:
    """A request id is remembered long enough for retries, then forgotten (keys do not pile up forever)."""
    import asyncio
    import time

    from steering.config import Etcd

    store = Store(Etcd(endpoints=tuple(etcd.endpoints), prefix="/reqttl"), request_ttl=2)
    await store.open()
    try:
        applied, first = await store.apply_operator_action("req-1", {}, [], {"action": "test"})
        again, same = await store.apply_operator_action("req-1", {}, [], {"action": "test"})
        assert applied and not again and same == first
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            resp = await store.kv.get(store.keys.request("req-1"))
            if not resp.kvs:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("request id never expired")
        applied, later = await store.apply_operator_action("req-1", {}, [], {"action": "test"})
        assert applied and later != first
        assert len(await store.list_audit()) == 2  # the audit trail itself is append-only and kept
    finally:
        await store.close()
