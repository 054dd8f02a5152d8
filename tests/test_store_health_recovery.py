"""A lost health lease is recovered without putting back records deleted meanwhile.

In the lab (docs/lab.md, Findings) a replica's health lease was lost while the region it heard
from went silent: the recovery had read the records just before the silent site's delete went
through, and put it back, healthy and on the new lease, so the cut region stayed in traffic.
"""

from __future__ import annotations

from typing import Any

from steering.etcdproc import EtcdCluster
from steering.model import TargetHealth
from steering.store import Store
from tests.support import eventually
from tests.support.store import Follower, etcd_cfg

SITES = 40  # the recovery puts them back one by one: a delete lands between those puts


async def test_sites_deleted_while_their_lease_is_recovered_stay_deleted(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints)) as store, Store(etcd_cfg(etcd.endpoints)) as other:
        healthy = TargetHealth(status="healthy")
        await store.write_health_batch({f"s{i:02d}": healthy for i in range(SITES)}, [], ttl=3)
        f = Follower(store.watch_health())
        try:
            await f.wait_for(lambda h: len(h) == SITES, what="every site written")
            (lease_id,) = store.health_lease_ids()
            await other.conn.lease.revoke(lease_id)  # lost behind its back: the store recovers it
            # The moment the new lease exists the recovery starts putting the sites back: every site but one
            # goes silent here then, in one delete, while it does.
            await eventually(lambda: store.health_lease_ids() not in ([], [lease_id]), what="a new lease",
                             interval=0.001)
            await store.write_health_batch({}, [f"s{i:02d}" for i in range(1, SITES)], ttl=3)
            await f.wait_for(lambda h: set(h) == {"s00"}, what="s00 alone, on the new lease")
            # The recovery is over (it logs once done) and did not put a deleted site back after the delete.
            await eventually(lambda: not store._health._tasks, what="the recovery finished")
            assert set(await store.get_health()) == {"s00"}
        finally:
            await f.stop()


async def test_a_record_whose_dead_lease_expires_during_its_put_back_is_still_put_back(etcd: EtcdCluster) -> None:
    # In the lab (the leader's region cut off) the dead lease expired between the put-back's "is the key
    # gone?" and "is it still ours?": the key was then neither, and the record stayed away until the next
    # lease loss, 12 s in which the leader saw a healthy region silent. Here the lease is revoked at exactly
    # that moment, on a real etcd.
    async with Store(etcd_cfg(etcd.endpoints)) as store, Store(etcd_cfg(etcd.endpoints)) as other:
        await store.write_health_batch({"s0": TargetHealth(status="healthy")}, [], ttl=3)
        records = store._health
        (lost,) = store.health_lease_ids()
        await records._leases[3].stop()  # so its own recovery does not race the one driven here
        key = records.keys.health("s0")
        value = records._written["s0"][0]
        target = int((await other.conn.lease.grant(30)).ID)
        real_txn = records.kv.txn
        calls: list[bool] = []

        async def txn(compare: Any, success: Any, failure: Any = None) -> Any:
            resp = await real_txn(compare, success, failure)
            calls.append(bool(resp.succeeded))
            if len(calls) == 1:
                assert not resp.succeeded  # the key was there, on the dead lease
                await other.conn.lease.revoke(lost)  # ... and now it expires
            return resp

        records.kv.txn = txn  # type: ignore[method-assign]
        assert await records._put_back(key, value, lost, target)
        assert calls[-1] is True and len(calls) >= 3
        cur = await other.kv.get(key)
        assert cur.kvs and cur.kvs[0].lease == target and cur.kvs[0].value == value
