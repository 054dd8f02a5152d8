"""A lost health lease is recovered without putting back records deleted meanwhile.

In the lab (docs/lab.md, Findings) a replica's health lease was lost while the region it heard
from went silent: the recovery had read the records just before the silent site's delete went
through, and put it back, healthy and on the new lease, so the cut region stayed in traffic.
"""

from __future__ import annotations

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
