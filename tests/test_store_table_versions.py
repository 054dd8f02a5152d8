"""Older table versions read back from their chunks alone (``Store.get_table_version``, the REST API's
``GET /api/v1/tables/{version}``), against a real etcd."""

from __future__ import annotations

from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.table import RoutingTable
from tests.support import eventually
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


async def test_a_store_watching_the_tables_it_writes_does_not_decode_them(etcd: EtcdCluster, monkeypatch) -> None:
    """A controller watches ``routing/current`` (its table view) through the store it publishes with: its own
    tables come back as the objects it wrote, never decoded again (at 10,000 sites a decode is ~0.3 s of CPU).
    The watch's event can arrive before the write's answer, so the store knows the pointer before it writes."""
    import asyncio

    from steering.store import codec

    decoded: list[int] = []
    real = codec.decode_table

    def counting(pointer: codec.Pointer, chunks: list[bytes]) -> RoutingTable:
        decoded.append(pointer.version)
        return real(pointer, chunks)

    monkeypatch.setattr(codec, "decode_table", counting)
    async with Store(etcd_cfg(etcd.endpoints), chunk_bytes=4096) as s:
        await s.put_table(make_table(1, n_sites=50))
        seen: list[RoutingTable] = []
        written: dict[int, RoutingTable] = {}

        async def watch() -> None:
            async for table in s.watch_table():
                seen.append(table)
                if table.version == 8:
                    return

        task = asyncio.create_task(watch())
        for v in range(2, 7):  # one at a time: each seen before the next is written
            written[v] = make_table(v, n_sites=50)
            await s.put_table(written[v])
            await eventually(lambda v=v: bool(seen) and seen[-1].version == v, timeout=10)
        for v in (7, 8):  # two in a row: the watch may still be reading the first when the second is written
            written[v] = make_table(v, n_sites=50)
            await s.put_table(written[v])
        await asyncio.wait_for(task, 20)
        assert decoded == []  # not even the first: it was this store's too
        assert [t.version for t in seen][-1] == 8
        assert all(t is written[t.version] for t in seen if t.version in written)
