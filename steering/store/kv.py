"""``KV``: the handful of etcd key-value calls the record modules make, each through ``Conn.call``.

One place where a record module reaches etcd, so every call gets the same
bounded retry, deadline and error mapping (``StoreUnavailable``,
``StoreError``), and no module outside ``steering/store`` needs the client.
"""

from __future__ import annotations

from typing import Any

from steering.store.client import Conn


class KV:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    @property
    def ops(self) -> Any:
        """etcd3aio's KV client, for building txn compares and ops (``txn_op_put``, ``txn_compare_value``...)."""
        return self.conn.kv

    async def get(self, key: bytes, end: bytes | None = None, **kw: Any) -> Any:
        return await self.conn.call("KV.Range", self.conn.kv.get, key, range_end=end, **kw)

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> None:
        await self.conn.call("KV.Put", self.conn.kv.put, key, value, lease=lease)

    async def delete(self, key: bytes) -> None:
        await self.conn.call("KV.DeleteRange", self.conn.kv.delete, key)

    async def delete_range(self, start: bytes, end: bytes) -> None:
        await self.conn.call("KV.DeleteRange", self.conn.kv.delete, start, end)

    async def txn(self, compare: list[Any], success: list[Any], failure: list[Any] | None = None) -> Any:
        return await self.conn.call("KV.Txn", self.conn.kv.txn, compare, success, failure or [])

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds that nothing keeps alive; its id."""
        resp = await self.conn.call("Lease.Grant", self.conn.lease.grant, ttl)
        return int(resp.ID)

    async def compact(self, revision: int) -> None:
        await self.conn.call("KV.Compact", self.conn.kv.compact, revision, physical=True)
