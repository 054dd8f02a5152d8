"""Older table versions read back from their chunks alone (``Store.get_table_version``, the REST API's
``GET /api/v1/tables/{version}``), against a real etcd."""

from __future__ import annotations

from steering.etcdproc import EtcdCluster
from steering.store import Store
from tests.support.store import etcd_cfg, make_table


async def test_kept_versions_read_back_and_others_are_none(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints), keep_versions=2, chunk_bytes=4096) as s:
        written = {v: make_table(v, n_sites=200) for v in range(1, 7)}  # several chunks each
        for t in written.values():
            await s.put_table(t)
        kept = await s.table_versions()
        assert kept and max(kept) == 6
        for v in kept:
            assert await s.get_table_version(v) == written[v]
        for v in set(written) - kept:
            assert await s.get_table_version(v) is None
        assert await s.get_table_version(10**6) is None


async def test_a_damaged_chunk_is_skipped_not_served(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints)) as s:
        await s.put_table(make_table(1))
        await s.put_table(make_table(2))
        prefix = s.keys.routing_version(1)
        resp = await s.kv.get(prefix, prefix + b"\xff")
        assert resp.kvs
        await s.kv.put(resp.kvs[0].key, b"not what was written")
        assert await s.get_table_version(1) is None  # checksum mismatch: logged, not returned
        assert (await s.get_table_version(2)) == make_table(2)
