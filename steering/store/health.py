"""``HealthRecords``: ``health/<site>@<replica>`` records on this process's leases (docs/architecture.md §4).

One lease per TTL (rounded up to whole seconds), kept alive while the store
is open; if the process dies the keys expire with it. If a lease is lost
while we live, a new one is taken and what we last wrote is put back where
the key is gone or still ours (never over another replica's newer write).

Writes and that putting back take turns (``_write_lock``), and a record is
put back only while it is still what we last wrote: a recovery that read the
records just before a site's delete went through used to put the deleted
record back, healthy and on a live lease, so a region cut off stayed in
traffic for as long as the replica lived (docs/lab.md, Findings).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

from etcd3aio._protobuf import Compare

from steering import logs
from steering.model import TargetHealth
from steering.store.client import LeaseNotFound, StoreError, StoreUnavailable
from steering.store.codec import record_bytes
from steering.store.decoded import Decoded
from steering.store.keys import Keys, range_end
from steering.store.kv import KV
from steering.store.lease import LeaseKeeper
from steering.store.watch import watch_range

log = logs.get(__name__)

PUT_BACK_TRIES = 3  # rounds of "gone? ours?" for one key while it changes under us (_put_back)
CHUNKS_IN_FLIGHT = 4  # health write transactions sent at once (write_batch; bench/ingest.py at 10,000 sites)


class HealthRecords:
    def __init__(self, kv: KV, keys: Keys) -> None:
        self.kv = kv
        self.keys = keys
        self._leases: dict[int, LeaseKeeper] = {}
        self._lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()  # our writes and a recovery's put-backs, one at a time
        self._written: dict[str, tuple[bytes, int]] = {}  # site -> (value, ttl), to re-put after a lost lease
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop the recoveries and keepalives; the leases are not revoked (the keys expire after their TTL)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for keeper in list(self._leases.values()):
            await keeper.stop()
        self._leases.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lease(self, ttl: float) -> LeaseKeeper:
        key = max(1, math.ceil(ttl))
        async with self._lock:
            keeper = self._leases.get(key)
            if keeper is not None and keeper.alive:
                return keeper
            keeper = LeaseKeeper(self.kv.conn, key, f"health-{key}s", strict=False)
            await keeper.grant()
            keeper.on_lost(lambda k: self._spawn(self._recover(k), f"health-recover-{key}s"))
            self._leases[key] = keeper
            return keeper

    async def put(self, site: str, health: TargetHealth, ttl: float) -> None:
        """Write ``health/<site>`` bound to a shared lease of ~``ttl`` seconds (see ``Store.put_health``)."""
        key = self.keys.health(site)
        value = record_bytes(health.to_dict())
        async with self._write_lock:
            for _ in range(3):
                keeper = await self._lease(ttl)
                try:
                    await self.kv.put(key, value, lease=keeper.id)
                except LeaseNotFound:
                    keeper._set_lost("lease not found on write")
                    continue
                self._written[site] = (value, keeper.ttl)
                return
        raise StoreUnavailable(f"etcd health/{site}: could not obtain a live lease")

    async def write_batch(self, puts: Mapping[str, TargetHealth], deletes: list[str], ttl: float,
                          max_ops: int = 100) -> None:
        """Many puts and deletes in transactions of up to ``max_ops`` (see ``Store.write_health_batch``)."""
        work: list[tuple[str, bytes | None]] = [(site, record_bytes(h.to_dict())) for site, h in puts.items()]
        work += [(site, None) for site in deletes]
        async with self._write_lock:
            await self._write_chunks(work, ttl, max_ops)

    async def _write_chunks(self, work: list[tuple[str, bytes | None]], ttl: float, max_ops: int) -> None:
        # Up to CHUNKS_IN_FLIGHT transactions at once: etcd commits concurrent ones in one fsync, so a burst
        # (10,000 agents' first reports after a start) drains several times faster than one round trip at
        # a time on a busy machine. A batch has each site once, so chunks never touch the same key.
        chunks = [work[start:start + max_ops] for start in range(0, len(work), max_ops)]
        gate = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

        async def one(chunk: list[tuple[str, bytes | None]]) -> None:
            async with gate:
                await self._write_chunk(chunk, ttl)

        results = await asyncio.gather(*(one(c) for c in chunks), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _write_chunk(self, chunk: list[tuple[str, bytes | None]], ttl: float) -> None:
        ops = self.kv.ops
        for _ in range(3):
            keeper = await self._lease(ttl)
            txn = [ops.txn_op_put(self.keys.health(site), value, lease=keeper.id) if value is not None
                   else ops.txn_op_delete(self.keys.health(site)) for site, value in chunk]
            try:
                await self.kv.txn([], txn)
            except LeaseNotFound:
                keeper._set_lost("lease not found on write")
                continue
            for site, value in chunk:
                if value is None:
                    self._written.pop(site, None)
                else:
                    self._written[site] = (value, keeper.ttl)
            break
        else:
            raise StoreUnavailable("etcd health: could not obtain a live lease")

    async def refresh_lease(self, timeout: float = 5.0) -> bool:
        """Keep-alive every lease now and wait for the acknowledgements; False if one is lost."""
        keepers = [k for k in self._leases.values() if k.alive]
        results = await asyncio.gather(*(k.refresh(timeout) for k in keepers))
        return all(results)

    async def delete(self, site: str) -> None:
        async with self._write_lock:
            self._written.pop(site, None)
            await self.kv.delete(self.keys.health(site))

    async def _recover(self, lost: LeaseKeeper) -> None:
        conn = self.kv.conn
        backoff = conn.backoff(0.1)
        while not conn.closed:
            try:
                keeper = await self._lease(lost.ttl)
                restored = 0
                for site, (value, ttl) in list(self._written.items()):
                    if ttl != lost.ttl:
                        continue
                    async with self._write_lock:
                        # Deleted or rewritten since the list was taken (a site gone silent): not ours to put back.
                        if self._written.get(site) != (value, ttl):
                            continue
                        if not await self._put_back(self.keys.health(site), value, lost.id, keeper.id):
                            continue
                    restored += 1
                log.warning("health_lease_recovered", old_lease=lost.id, new_lease=keeper.id, restored=restored)
                return
            except StoreError as exc:
                log.warning("health_lease_recover_retry", error=str(exc))
                await backoff.sleep()

    async def _put_back(self, key: bytes, value: bytes, lost: int, lease: int) -> bool:
        """Only if the key is gone or still ours on the dead lease: another replica may own it now.

        Each case is one compare-and-put, and both are tried again while neither held: the dead lease may
        expire, deleting the key, between the two (a unary call can spend a third of its budget on a member
        that went silent). A read in between used to take the key's absence then for "not ours" and left it
        unwritten: a healthy region stayed silent for the leader until its next lease loss (the lab, the
        leader's region cut off: 12 s).
        """
        ops = self.kv.ops
        ours = [ops.txn_compare_value(key, value),
                Compare(result=Compare.EQUAL, target=Compare.LEASE, key=key, lease=lost)]
        for _ in range(PUT_BACK_TRIES):
            resp = await self.kv.txn([ops.txn_compare_create_revision(key, 0)],
                                     [ops.txn_op_put(key, value, lease=lease)])
            if resp.succeeded:
                return True
            resp = await self.kv.txn(ours, [ops.txn_op_put(key, value, lease=lease)])
            if resp.succeeded:
                return True
            cur = await self.kv.get(key)
            if cur.kvs:
                return False  # there, and not ours on the dead lease: someone else's now
        return False

    def _decode_one(self, key: bytes, value: bytes) -> tuple[str, TargetHealth | None]:
        site = self.keys.strip(key)[len("health/"):]
        try:
            return site, TargetHealth.from_dict(json.loads(value))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("health_record_unreadable", site=site, error=str(exc))
            return site, None

    async def get(self) -> dict[str, TargetHealth]:
        p = self.keys.health_prefix
        resp = await self.kv.get(p, range_end(p))
        out: dict[str, TargetHealth] = {}
        for kv in resp.kvs:
            site, health = self._decode_one(kv.key, kv.value)
            if health is not None:
                out[site] = health
        return dict(sorted(out.items()))

    async def watch(self) -> AsyncIterator[dict[str, TargetHealth]]:
        """The full health map now, then after every change (expiry deletes included)."""
        p = self.keys.health_prefix
        # Thousands of sites, a few changing per second: only the records whose keys changed are looked at.
        decoded: Decoded[TargetHealth] = Decoded(self._decode_one)
        async for snap in watch_range(self.kv.conn, p, range_end(p), "health"):
            yield decoded.update(snap.items, snap.changed)

    def lease_ids(self) -> list[int]:
        return [k.id for k in self._leases.values() if k.alive]
