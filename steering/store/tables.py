"""``TableRecords``: the routing table in etcd (docs/architecture.md §4): read, watch, write, fenced publish.

``routing/current`` holds a pointer to content-addressed chunks under
``routing/v<N>/<blob>/<i>`` (``codec.py``); a flip of the pointer is one txn
that also deletes all but the newest ``keep_versions`` older versions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from etcd3aio import SortOrder, SortTarget

from steering import logs
from steering.store import codec
from steering.store.client import StoreError
from steering.store.election import Leadership
from steering.store.keys import Keys, range_end
from steering.store.kv import KV
from steering.store.watch import watch_range
from steering.table import RoutingTable

log = logs.get(__name__)

INLINE_TXN_BYTES_DEFAULT = 1024 * 1024  # chunks up to this size go into the flip txn itself (etcd's limit is 1.5 MiB)


class Superseded(Exception):
    """The pointer we read names chunks that have since been cleaned up."""


WRITTEN_KEPT = 2  # tables this store wrote that its own watch takes back without decoding (see __init__)


class TableRecords:
    def __init__(self, kv: KV, keys: Keys, *, chunk_bytes: int = codec.CHUNK_BYTES, keep_versions: int = 3,
                 inline_txn_bytes: int = INLINE_TXN_BYTES_DEFAULT, serving_only: bool = False) -> None:
        self.kv = kv
        self.keys = keys
        self.chunk_bytes = chunk_bytes
        self.keep_versions = max(1, keep_versions)
        self.inline_txn_bytes = inline_txn_bytes
        self.serving_only = serving_only  # tables read without their sites' states (codec.decode_table)
        self.decoding = 0  # decodes in flight (a DNS server holds its garbage collection meanwhile)
        # The pointers this process last wrote (WRITTEN_KEPT, newest last), with the tables they encode: the
        # leader's own watch (and its API's table view) reads each back at once, and decoding it again was
        # ~18 % of a busy leader's CPU (issue 18). Same pointer bytes = same content hash, so the object
        # stands in for the decoded copy (the codec round-trips exactly: tests/test_store_codec.py). More
        # than one: the watch may still be reading one table when the next is written.
        self._written: dict[bytes, RoutingTable] = {}

    async def get(self) -> RoutingTable | None:
        """The current table, or None when there is none or it is unreadable (logged)."""
        for _ in range(3):
            resp = await self.kv.get(self.keys.routing_current)
            if not resp.kvs:
                return None
            try:
                return await self._load(resp.kvs[0].value)
            except Superseded:
                continue  # cleaned up under our feet: the pointer has moved, read it again
            except ValueError as exc:
                log.warning("routing_table_unreadable", key="routing/current", error=str(exc))
                return None
        return None

    async def _load(self, pointer_value: bytes) -> RoutingTable:
        written = self._written.get(pointer_value)
        if written is not None:
            return written
        pointer = codec.parse_pointer(pointer_value)
        if isinstance(pointer, RoutingTable):
            return pointer
        prefix = self.keys.routing_version(pointer.version) + f"{pointer.blob}/".encode()
        # Chunk keys are content-addressed (blob = hash), so reading them at the latest revision is exact.
        resp = await self.kv.get(prefix, range_end(prefix), sort_order=SortOrder.ASCEND, sort_target=SortTarget.KEY)
        if not resp.kvs:
            raise Superseded(f"routing v{pointer.version} chunks are gone")
        # Decompressing and parsing a large table takes tens of ms: off the event loop, which serves agents.
        self.decoding += 1
        try:
            return await asyncio.to_thread(codec.decode_table, pointer, [kv.value for kv in resp.kvs],
                                           self.serving_only)
        finally:
            self.decoding -= 1

    def _ops(self, table: RoutingTable, existing_versions: set[int]) -> tuple[codec.Encoded, list[Any], list[Any]]:
        """Encode; return (encoded, chunk put ops, flip+cleanup ops)."""
        ops = self.kv.ops
        enc = codec.encode_table(table, self.chunk_bytes)
        chunk_ops = [ops.txn_op_put(self.keys.routing_chunk(table.version, enc.pointer.blob, i), c)
                     for i, c in enumerate(enc.chunks)]
        flip = [ops.txn_op_put(self.keys.routing_current, enc.pointer.to_json())]
        older = sorted((v for v in existing_versions if v < table.version), reverse=True)
        if len(older) > self.keep_versions:
            cutoff = older[self.keep_versions - 1]  # keep this one and the ones above it
            flip.append(ops.txn_op_delete(self.keys.routing_versions_prefix,
                                          range_end=self.keys.routing_version(cutoff)))
        return enc, chunk_ops, flip

    async def get_version(self, version: int) -> RoutingTable | None:
        """A version still kept in etcd (the newest and ``keep_versions`` older), or None: not kept, or
        unreadable (logged). Chunks of a publish that never became current are passed over."""
        prefix = self.keys.routing_version(version)
        resp = await self.kv.get(prefix, range_end(prefix), sort_order=SortOrder.ASCEND, sort_target=SortTarget.KEY)
        blobs: dict[str, list[bytes]] = {}
        for kv in resp.kvs:
            blob, _, _ = kv.key[len(prefix):].decode(errors="replace").partition("/")
            blobs.setdefault(blob, []).append(kv.value)
        for blob, chunks in blobs.items():
            try:
                return await asyncio.to_thread(codec.decode_kept, version, blob, chunks)
            except ValueError as exc:
                log.warning("routing_table_unreadable", key=f"routing/v{version}/{blob}", error=str(exc))
        return None

    async def versions(self) -> set[int]:
        """The versions that have chunks in etcd."""
        p = self.keys.routing_versions_prefix
        resp = await self.kv.get(p, range_end(p), keys_only=True)
        found = {self.keys.version_of(kv.key) for kv in resp.kvs}
        return {v for v in found if v is not None}

    async def _write(self, table: RoutingTable, compare: list[Any]) -> bool:
        versions = await self.versions()
        enc, chunk_ops, flip = await asyncio.to_thread(self._ops, table, versions)
        # Known before it is written: this process's own watch of routing/current (a controller's table view)
        # can hear of the pointer before this write's answer, and would decode what it holds (~0.3 s of CPU at
        # 10,000 sites). The pointer names its content (version, sha256), so should this write fail, a pointer
        # with these bytes is still this table.
        self._written[enc.pointer.to_json()] = table
        while len(self._written) > WRITTEN_KEPT:
            del self._written[next(iter(self._written))]
        if enc.total_bytes <= self.inline_txn_bytes:
            resp = await self.kv.txn(compare, chunk_ops + flip)
            ok = bool(resp.succeeded)
        else:
            # Too big for one request: write the chunks first (invisible until the pointer names them),
            # then flip the pointer in the fenced txn. Content-addressed keys make this safe to repeat.
            for op in chunk_ops:
                await self.kv.put(op.request_put.key, op.request_put.value)
            resp = await self.kv.txn(compare, flip)
            ok = bool(resp.succeeded)
            if not ok:
                prefix = self.keys.routing_version(table.version) + f"{enc.pointer.blob}/".encode()
                with contextlib.suppress(StoreError):
                    current = await self.kv.get(self.keys.routing_current)
                    if not (current.kvs and enc.pointer.blob.encode() in current.kvs[0].value):
                        await self.kv.delete_range(prefix, range_end(prefix))
        if ok:
            log.info("routing_table_written", version=table.version, bytes=enc.pointer.size,
                     stored_bytes=enc.total_bytes, chunks=enc.pointer.chunks)
        return ok

    async def put(self, table: RoutingTable) -> None:
        """Write ``table`` as current without fencing (tests and tools)."""
        await self._write(table, [])

    async def publish(self, table: RoutingTable, leadership: Leadership) -> bool:
        """Write ``table`` only if ``leadership`` still holds the leader key; False (nothing written) if not."""
        if leadership.lost.is_set():
            return False
        ops = self.kv.ops
        compare = [ops.txn_compare_value(self.keys.leader, leadership.identity.encode()),
                   ops.txn_compare_create_revision(self.keys.leader, leadership.create_revision)]
        ok = await self._write(table, compare)
        if not ok:
            log.warning("routing_publish_fenced", version=table.version, identity=leadership.identity)
        return ok

    async def watch(self) -> AsyncIterator[RoutingTable]:
        """The current table, then each newer version; never a version <= one already yielded."""
        last = -1
        async for snap in watch_range(self.kv.conn, self.keys.routing_current, b"", "routing"):
            item = snap.items.get(self.keys.routing_current)
            if item is None:
                continue
            table = await self._load_for_watch(item.value)
            if table is None or table.version <= last:
                continue
            last = table.version
            yield table

    async def _load_for_watch(self, value: bytes) -> RoutingTable | None:
        conn = self.kv.conn
        backoff = conn.backoff()
        lagging = 0
        while not conn.closed:
            try:
                return await self._load(value)
            except Superseded:
                # no chunks for this pointer: a newer pointer cleaned them up (the watch brings it), or the
                # member read is still catching up with the txn that wrote them; only the first may skip
                try:
                    current = await self.kv.get(self.keys.routing_current)
                except StoreError as exc:
                    log.warning("routing_table_load_retry", error=str(exc))
                    await backoff.sleep()
                    continue
                lagging += 1
                if not current.kvs or current.kvs[0].value != value or lagging > 5:
                    return None  # superseded, or a pointer without chunks (never fatal: the next one is read)
                log.info("routing_table_load_retry", error="chunks not readable yet for the current pointer")
                await backoff.sleep()
            except ValueError as exc:
                log.warning("routing_table_unreadable", key="routing/current", error=str(exc))
                return None
            except StoreError as exc:
                log.warning("routing_table_load_retry", error=str(exc))
                await backoff.sleep()
        return None
