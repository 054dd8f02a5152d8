"""``Store``: the project's whole view of etcd (docs/architecture.md §4), over one ``Conn``.

Records are JSON with sorted keys. Reads that find a malformed record log it
(naming the key) and skip it: one bad value written by hand must not take a
DNS server or a controller down. Connectivity failures of single calls raise
``StoreUnavailable`` after ``etcd.timeout_seconds``; the ``watch_*`` streams
never raise on connectivity loss, they re-list and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from etcd3aio import SortOrder, SortTarget

from steering import logs
from steering.config import Etcd
from steering.model import Evacuation, Overrides, Pin, Restore, Skipped, TargetHealth
from steering.store import codec
from steering.store.client import Backoff, Conn, LeaseNotFound, StoreError, StoreUnavailable
from steering.store.election import Leadership, campaign
from steering.store.keys import Keys, check_component, range_end
from steering.store.lease import LeaseKeeper
from steering.store.watch import Snapshot, watch_range
from steering.table import RoutingTable

log = logs.get(__name__)

INLINE_TXN_BYTES_DEFAULT = 1024 * 1024  # chunks up to this size go into the flip txn itself (etcd's limit is 1.5 MiB)
RESERVED = ("election/", "routing/", "requests/", "audit/", "health/", "oplog/")


class OverridesChanged(StoreError):
    """Another operator action landed between reading the overrides and writing: re-check and retry."""


def _json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _audit_id(now: float) -> str:
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:12]}"


class Store:
    """Async etcd store. ``async with Store(cfg) as store: ...`` or ``open()``/``close()``."""

    def __init__(self, cfg: Etcd, base_dir: str | Path = ".", *, chunk_bytes: int = codec.CHUNK_BYTES,
                 keep_versions: int = 3, election_ttl: float = 5.0,
                 inline_txn_bytes: int = INLINE_TXN_BYTES_DEFAULT, request_ttl: float = 7 * 86400) -> None:
        self.cfg = cfg
        self.keys = Keys(cfg.prefix)
        self.conn = Conn(cfg, base_dir)
        self.chunk_bytes = chunk_bytes
        self.keep_versions = max(1, keep_versions)
        self.election_ttl = election_ttl
        self.inline_txn_bytes = inline_txn_bytes
        # Request ids are remembered for request_ttl (a retry comes within seconds, a stale one within days),
        # on a lease shared by the requests of a tenth of that period, never kept alive: they expire.
        self.request_ttl = request_ttl
        self._request_lease: tuple[int, float] | None = None  # (lease id, monotonic time it was granted)
        self._health_leases: dict[int, LeaseKeeper] = {}
        self._health_lock = asyncio.Lock()
        self._health_written: dict[str, tuple[bytes, int]] = {}  # site -> (value, ttl), to re-put after a lost lease
        self._leaderships: set[Leadership] = set()
        # What etcd last said, with the wall-clock time it said it: for answering while it is away.
        self.last_leader: tuple[str | None, float] | None = None
        self.last_overrides: tuple[Overrides, float] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._skips_logged: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        await self.conn.open()
        log.info("etcd_store_open", endpoints=list(self.cfg.endpoints), prefix=self.cfg.prefix)

    async def close(self) -> None:
        """Stop background work. Leases are not revoked: health keys and an unresigned leadership expire
        after their TTL, as if the process had died (resign first for a clean hand-over)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for leadership in list(self._leaderships):
            await leadership.abandon()
        for keeper in list(self._health_leases.values()):
            await keeper.stop()
        self._health_leases.clear()
        await self.conn.close()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def backoff(self, first: float = 0.05) -> Backoff:
        """For callers' own retry loops: capped at ``etcd.reconnect_max_seconds``, woken when etcd reconnects."""
        return self.conn.backoff(first)

    @property
    def unreachable_since(self) -> float | None:
        """Since when (unix time) etcd has not answered; None while it answers."""
        return self.conn.unreachable_since

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ small helpers
    async def _get(self, key: bytes, end: bytes | None = None, **kw: Any) -> Any:
        return await self.conn.call("KV.Range", self.conn.kv.get, key, range_end=end, **kw)

    async def _put(self, key: bytes, value: bytes, lease: int = 0) -> None:
        await self.conn.call("KV.Put", self.conn.kv.put, key, value, lease=lease)

    async def _delete(self, key: bytes) -> None:
        await self.conn.call("KV.DeleteRange", self.conn.kv.delete, key)

    async def _txn(self, compare: list[Any], success: list[Any], failure: list[Any] | None = None) -> Any:
        return await self.conn.call("KV.Txn", self.conn.kv.txn, compare, success, failure or [])

    # ------------------------------------------------------------------ routing table
    async def get_table(self) -> RoutingTable | None:
        """The current table, or None when there is none or it is unreadable (logged)."""
        for _ in range(3):
            resp = await self._get(self.keys.routing_current)
            if not resp.kvs:
                return None
            try:
                return await self._load_table(resp.kvs[0].value)
            except _Superseded:
                continue  # cleaned up under our feet: the pointer has moved, read it again
            except ValueError as exc:
                log.warning("routing_table_unreadable", key="routing/current", error=str(exc))
                return None
        return None

    async def _load_table(self, pointer_value: bytes) -> RoutingTable:
        pointer = codec.parse_pointer(pointer_value)
        if isinstance(pointer, RoutingTable):
            return pointer
        prefix = self.keys.routing_version(pointer.version) + f"{pointer.blob}/".encode()
        # Chunk keys are content-addressed (blob = hash), so reading them at the latest revision is exact.
        resp = await self._get(prefix, range_end(prefix), sort_order=SortOrder.ASCEND, sort_target=SortTarget.KEY)
        if not resp.kvs:
            raise _Superseded(f"routing v{pointer.version} chunks are gone")
        # Decompressing and parsing a large table takes tens of ms: off the event loop, which serves agents.
        return await asyncio.to_thread(codec.decode_table, pointer, [kv.value for kv in resp.kvs])

    def _table_ops(self, table: RoutingTable, existing_versions: set[int]) -> tuple[codec.Encoded, list[Any], list[Any]]:
        """Encode; return (encoded, chunk put ops, flip+cleanup ops)."""
        kv = self.conn.kv
        enc = codec.encode_table(table, self.chunk_bytes)
        chunk_ops = [kv.txn_op_put(self.keys.routing_chunk(table.version, enc.pointer.blob, i), c)
                     for i, c in enumerate(enc.chunks)]
        flip = [kv.txn_op_put(self.keys.routing_current, enc.pointer.to_json())]
        older = sorted((v for v in existing_versions if v < table.version), reverse=True)
        if len(older) > self.keep_versions:
            cutoff = older[self.keep_versions - 1]  # keep this one and the ones above it
            flip.append(kv.txn_op_delete(self.keys.routing_versions_prefix,
                                         range_end=self.keys.routing_version(cutoff)))
        return enc, chunk_ops, flip

    async def _versions(self) -> set[int]:
        p = self.keys.routing_versions_prefix
        resp = await self._get(p, range_end(p), keys_only=True)
        found = {self.keys.version_of(kv.key) for kv in resp.kvs}
        return {v for v in found if v is not None}

    async def _write_table(self, table: RoutingTable, compare: list[Any]) -> bool:
        versions = await self._versions()
        enc, chunk_ops, flip = await asyncio.to_thread(self._table_ops, table, versions)
        if enc.total_bytes <= self.inline_txn_bytes:
            resp = await self._txn(compare, chunk_ops + flip)
            ok = bool(resp.succeeded)
        else:
            # Too big for one request: write the chunks first (invisible until the pointer names them),
            # then flip the pointer in the fenced txn. Content-addressed keys make this safe to repeat.
            for op in chunk_ops:
                await self._put(op.request_put.key, op.request_put.value)
            resp = await self._txn(compare, flip)
            ok = bool(resp.succeeded)
            if not ok:
                prefix = self.keys.routing_version(table.version) + f"{enc.pointer.blob}/".encode()
                with contextlib.suppress(StoreError):
                    current = await self._get(self.keys.routing_current)
                    if not (current.kvs and enc.pointer.blob.encode() in current.kvs[0].value):
                        await self.conn.call("KV.DeleteRange", self.conn.kv.delete, prefix, range_end(prefix))
        if ok:
            log.info("routing_table_written", version=table.version, bytes=enc.pointer.size,
                     stored_bytes=enc.total_bytes, chunks=enc.pointer.chunks)
        return ok

    async def put_table(self, table: RoutingTable) -> None:
        """Write ``table`` as current without fencing (tests and tools)."""
        await self._write_table(table, [])

    async def publish_table(self, table: RoutingTable, leadership: Leadership) -> bool:
        """Write ``table`` only if ``leadership`` still holds the leader key; False (nothing written) if not."""
        if leadership.lost.is_set():
            return False
        kv = self.conn.kv
        compare = [kv.txn_compare_value(self.keys.leader, leadership.identity.encode()),
                   kv.txn_compare_create_revision(self.keys.leader, leadership.create_revision)]
        ok = await self._write_table(table, compare)
        if not ok:
            log.warning("routing_publish_fenced", version=table.version, identity=leadership.identity)
        return ok

    async def watch_table(self) -> AsyncIterator[RoutingTable]:
        """The current table, then each newer version; never a version <= one already yielded."""
        last = -1
        async for snap in watch_range(self.conn, self.keys.routing_current, b"", "routing"):
            item = snap.items.get(self.keys.routing_current)
            if item is None:
                continue
            table = await self._load_for_watch(item.value)
            if table is None or table.version <= last:
                continue
            last = table.version
            yield table

    async def _load_for_watch(self, value: bytes) -> RoutingTable | None:
        backoff = self.conn.backoff()
        while not self.conn.closed:
            try:
                return await self._load_table(value)
            except _Superseded:
                return None  # a newer pointer exists; the watch brings it
            except ValueError as exc:
                log.warning("routing_table_unreadable", key="routing/current", error=str(exc))
                return None
            except StoreError as exc:
                log.warning("routing_table_load_retry", error=str(exc))
                await backoff.sleep()
        return None

    # ------------------------------------------------------------------ health
    async def _health_lease(self, ttl: float) -> LeaseKeeper:
        key = max(1, math.ceil(ttl))
        async with self._health_lock:
            keeper = self._health_leases.get(key)
            if keeper is not None and keeper.alive:
                return keeper
            keeper = LeaseKeeper(self.conn, key, f"health-{key}s")
            await keeper.grant()
            keeper.on_lost(lambda k: self._spawn(self._recover_health(k), f"health-recover-{key}s"))
            self._health_leases[key] = keeper
            return keeper

    async def put_health(self, site: str, health: TargetHealth, ttl: float) -> None:
        """Write ``health/<site>`` bound to a shared lease of ~``ttl`` seconds.

        The store keeps that lease alive while it is open; if the process dies (or ``close``s) the key
        expires after ``ttl``. If the lease is lost while we live (etcd down longer than ``ttl``, or revoked),
        the store takes a new lease and writes back what it last wrote, unless someone else wrote since.
        """
        key = self.keys.health(site)
        value = _json(health.to_dict())
        for _ in range(3):
            keeper = await self._health_lease(ttl)
            try:
                await self._put(key, value, lease=keeper.id)
            except LeaseNotFound:
                keeper._set_lost("lease not found on write")
                continue
            self._health_written[site] = (value, keeper.ttl)
            return
        raise StoreUnavailable(f"etcd health/{site}: could not obtain a live lease")

    async def write_health_batch(self, puts: Mapping[str, TargetHealth], deletes: list[str], ttl: float,
                                 max_ops: int = 100) -> None:
        """Many health puts and deletes in transactions of up to ``max_ops`` (etcd allows 128 by default).

        One request instead of one per site: a burst of changes (a replica starting with thousands of agents)
        must not queue behind thousands of round trips. Same lease semantics as ``put_health``.
        """
        kv = self.conn.kv
        work: list[tuple[str, bytes | None]] = [(site, _json(h.to_dict())) for site, h in puts.items()]
        work += [(site, None) for site in deletes]
        for start in range(0, len(work), max_ops):
            chunk = work[start:start + max_ops]
            for _ in range(3):
                keeper = await self._health_lease(ttl)
                ops = [kv.txn_op_put(self.keys.health(site), value, lease=keeper.id) if value is not None
                       else kv.txn_op_delete(self.keys.health(site)) for site, value in chunk]
                try:
                    await self._txn([], ops)
                except LeaseNotFound:
                    keeper._set_lost("lease not found on write")
                    continue
                for site, value in chunk:
                    if value is None:
                        self._health_written.pop(site, None)
                    else:
                        self._health_written[site] = (value, keeper.ttl)
                break
            else:
                raise StoreUnavailable("etcd health: could not obtain a live lease")

    async def refresh_health_lease(self, timeout: float = 5.0) -> bool:
        """Keep-alive every health lease now and wait for the acknowledgements; False if one is lost.

        The store already does this in the background every TTL/3; call it to confirm liveness."""
        keepers = [k for k in self._health_leases.values() if k.alive]
        results = await asyncio.gather(*(k.refresh(timeout) for k in keepers))
        return all(results)

    async def delete_health(self, site: str) -> None:
        self._health_written.pop(site, None)
        await self._delete(self.keys.health(site))

    async def _recover_health(self, lost: LeaseKeeper) -> None:
        backoff = self.conn.backoff(0.1)
        kv = self.conn.kv
        while not self.conn.closed:
            try:
                keeper = await self._health_lease(lost.ttl)
                restored = 0
                for site, (value, ttl) in list(self._health_written.items()):
                    if ttl != lost.ttl:
                        continue
                    key = self.keys.health(site)
                    # Only if the key is gone or still ours on the dead lease: another replica may own it now.
                    resp = await self._txn([kv.txn_compare_create_revision(key, 0)],
                                           [kv.txn_op_put(key, value, lease=keeper.id)])
                    if not resp.succeeded:
                        cur = await self._get(key)
                        if cur.kvs and cur.kvs[0].lease == lost.id and cur.kvs[0].value == value:
                            await self._put(key, value, lease=keeper.id)
                        else:
                            continue
                    restored += 1
                log.warning("health_lease_recovered", old_lease=lost.id, new_lease=keeper.id, restored=restored)
                return
            except StoreError as exc:
                log.warning("health_lease_recover_retry", error=str(exc))
                await backoff.sleep()

    def _decode_health_one(self, key: bytes, value: bytes) -> tuple[str, TargetHealth | None]:
        site = self.keys.strip(key)[len("health/"):]
        try:
            return site, TargetHealth.from_dict(json.loads(value))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("health_record_unreadable", site=site, error=str(exc))
            return site, None

    def _decode_health(self, values: Mapping[bytes, bytes]) -> dict[str, TargetHealth]:
        out: dict[str, TargetHealth] = {}
        for key, value in values.items():
            site, health = self._decode_health_one(key, value)
            if health is not None:
                out[site] = health
        return dict(sorted(out.items()))

    async def get_health(self) -> dict[str, TargetHealth]:
        p = self.keys.health_prefix
        resp = await self._get(p, range_end(p))
        return self._decode_health({kv.key: kv.value for kv in resp.kvs})

    async def watch_health(self) -> AsyncIterator[dict[str, TargetHealth]]:
        """The full health map now, then after every change (expiry deletes included)."""
        p = self.keys.health_prefix
        # Thousands of sites, a few changing per second: decode only records whose revision moved.
        memo: dict[bytes, tuple[int, str, TargetHealth | None]] = {}
        async for snap in watch_range(self.conn, p, range_end(p), "health"):
            fresh: dict[bytes, tuple[int, str, TargetHealth | None]] = {}
            out: dict[str, TargetHealth] = {}
            for key, item in snap.items.items():
                entry = memo.get(key)
                if entry is None or entry[0] != item.mod_revision:
                    entry = (item.mod_revision, *self._decode_health_one(key, item.value))
                fresh[key] = entry
                if entry[2] is not None:
                    out[entry[1]] = entry[2]
            memo = fresh
            yield out

    # ------------------------------------------------------------------ overrides
    def _decode_overrides(self, values: Mapping[bytes, bytes]) -> Overrides:
        overrides = decode_overrides({self._rel(k): v for k, v in values.items()})
        self.last_overrides = (overrides, time.time())
        if len(self._skips_logged) > 1000:
            self._skips_logged.clear()
        for s in overrides.skipped:
            if (s.key, s.problem) not in self._skips_logged:  # once, not on every Status call
                self._skips_logged.add((s.key, s.problem))
                log.warning("override_record_unreadable", key=s.key, kind=s.kind, error=s.problem)
        return overrides

    def _rel(self, key: bytes) -> str:
        """The key relative to the prefix; bytes that are not UTF-8 escaped (the record is then skipped)."""
        try:
            return self.keys.strip(key)
        except ValueError:
            return key.decode(errors="backslashreplace")

    async def get_overrides_versioned(self) -> tuple[Overrides, int]:
        """The overrides and the operator sequence they reflect, for ``apply_operator_action(expect_seq=)``.

        The sequence is read first: an action landing in between makes the later compare fail, never pass."""
        seq = await self._get(self.keys.operator_seq)
        version = int(seq.kvs[0].version) if seq.kvs else 0
        return await self.get_overrides(), version

    async def get_overrides(self) -> Overrides:
        p = self.keys.overrides_prefix
        resp = await self._get(p, range_end(p))
        return self._decode_overrides({kv.key: kv.value for kv in resp.kvs})

    async def watch_overrides(self) -> AsyncIterator[Overrides]:
        p = self.keys.overrides_prefix
        async for snap in watch_range(self.conn, p, range_end(p), "overrides"):
            yield self._decode_overrides(snap.values())

    async def put_evacuation(self, e: Evacuation) -> None:
        await self._put(self.keys.evacuation(e.region), _json(e.to_dict()))

    async def delete_evacuation(self, region: str) -> None:
        await self._delete(self.keys.evacuation(region))

    async def put_restore(self, r: Restore) -> None:
        await self._put(self.keys.restore(r.region), _json(r.to_dict()))

    async def delete_restore(self, region: str) -> None:
        await self._delete(self.keys.restore(region))

    async def put_pin(self, p: Pin) -> None:
        await self._put(self.keys.pin(p.service, p.geo), _json(p.to_dict()))

    async def delete_pin(self, service: str, geo: str) -> None:
        await self._delete(self.keys.pin(service, geo))

    # ------------------------------------------------------------------ operator actions and audit
    async def _request_lease_id(self) -> int:
        now = time.monotonic()
        if self._request_lease is None or now - self._request_lease[1] > self.request_ttl / 10:
            resp = await self.conn.call("Lease.Grant", self.conn.lease.grant, int(self.request_ttl))
            self._request_lease = (int(resp.ID), now)
        return self._request_lease[0]

    async def apply_operator_action(self, request_id: str, puts: Mapping[str, bytes], deletes: list[str],
                                    audit: Mapping[str, Any], expect_seq: int | None = None) -> tuple[bool, str]:
        """Apply ``puts``/``deletes`` (keys relative to the prefix) and append the audit record, in one txn,
        unless ``request_id`` was applied before. Returns (applied, audit_id of the record for this request).

        With ``expect_seq`` (from ``get_overrides_versioned``) the txn also requires that no other operator
        action landed since that read, so safety rules checked on it still hold; else ``OverridesChanged``."""
        req_key = self.keys.request(request_id)
        for rel in [*puts, *deletes]:
            if any(rel.startswith(r) for r in RESERVED):
                raise ValueError(f"key {rel!r}: operator actions cannot write under {rel.split('/')[0]}/")
        both = set(puts) & set(deletes)
        if both:
            raise ValueError(f"keys {sorted(both)}: both put and deleted in one action")
        now = time.time()
        audit_id = _audit_id(now)
        record = {"time": now, **dict(audit), "id": audit_id, "request_id": request_id}
        kv = self.conn.kv
        ops = [kv.txn_op_put(self.keys.rel(k), v) for k, v in puts.items()]
        ops += [kv.txn_op_delete(self.keys.rel(k)) for k in deletes]
        ops += [kv.txn_op_put(req_key, audit_id.encode(), lease=await self._request_lease_id()),
                kv.txn_op_put(self.keys.audit(audit_id), _json(record)),
                kv.txn_op_put(self.keys.operator_seq, audit_id.encode())]
        compare = [kv.txn_compare_create_revision(req_key, 0)]
        if expect_seq is not None:
            compare.append(kv.txn_compare_version(self.keys.operator_seq, expect_seq))
        resp = await self._txn(compare, ops, [kv.txn_op_get(req_key)])
        if resp.succeeded:
            log.info("operator_action_applied", request_id=request_id, audit_id=audit_id,
                     puts=sorted(puts), deletes=sorted(deletes))
            return True, audit_id
        kvs = resp.responses[0].response_range.kvs
        earlier = kvs[0].value.decode() if kvs else ""
        if earlier == audit_id:  # our own first attempt went through; its reply was lost
            return True, audit_id
        if not earlier:  # the request is new, so the sequence compare failed
            raise OverridesChanged("another operator action landed since the overrides were read")
        log.info("operator_action_repeated", request_id=request_id, audit_id=earlier)
        return False, earlier

    async def list_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        """Audit records, newest first."""
        p = self.keys.audit_prefix
        resp = await self._get(p, range_end(p), limit=max(0, limit), sort_order=SortOrder.DESCEND,
                               sort_target=SortTarget.KEY)
        out = []
        for kv in resp.kvs:
            try:
                rec = json.loads(kv.value)
                if isinstance(rec, dict):
                    out.append(rec)
                    continue
                raise ValueError("not a JSON object")
            except ValueError as exc:
                log.warning("audit_record_unreadable", key=self.keys.strip(kv.key), error=str(exc))
        return out

    # ------------------------------------------------------------------ status records
    async def put_status(self, name: str, value: bytes) -> None:
        """A small status record the leader shares with every replica (e.g. the last Route 53 sync)."""
        await self._put(self.keys.rel("status/" + check_component("status name", name)), value)

    async def get_status(self, name: str) -> bytes | None:
        resp = await self._get(self.keys.rel("status/" + check_component("status name", name)))
        return resp.kvs[0].value if resp.kvs else None

    # ------------------------------------------------------------------ topology
    async def put_topology(self, config_json: bytes) -> None:
        await self._put(self.keys.topology, codec.encode_blob(config_json))

    async def get_topology(self) -> bytes | None:
        resp = await self._get(self.keys.topology)
        if not resp.kvs:
            return None
        try:
            return codec.decode_blob(resp.kvs[0].value)
        except ValueError as exc:
            log.warning("topology_unreadable", error=str(exc))
            return None

    async def watch_topology(self) -> AsyncIterator[bytes]:
        """The stored topology now (if any), then after every change."""
        async for snap in watch_range(self.conn, self.keys.topology, b"", "topology"):
            item = snap.items.get(self.keys.topology)
            if item is None:
                continue
            try:
                yield codec.decode_blob(item.value)
            except ValueError as exc:
                log.warning("topology_unreadable", error=str(exc))

    # ------------------------------------------------------------------ election
    async def campaign(self, identity: str, ttl: float | None = None) -> Leadership:
        """Block until ``identity`` leads; the lease (``ttl``, default ``election_ttl``) is kept alive."""
        if not identity:
            raise ValueError("identity: empty")
        leadership = await campaign(self.conn, self.keys.leader, identity, ttl or self.election_ttl,
                                    self._stale_leases)
        self._leaderships.add(leadership)
        return leadership

    def _stale_leases(self) -> set[int]:
        """Leases of our own terms that are over (we stopped leading)."""
        return {lead.lease_id for lead in self._leaderships if lead.lost.is_set() and lead.lease_id}

    async def leader(self) -> str | None:
        resp = await self._get(self.keys.leader)
        name = resp.kvs[0].value.decode(errors="replace") if resp.kvs else None
        self.last_leader = (name, time.time())
        return name

    # ------------------------------------------------------------------ for tests and tools
    async def compact(self) -> int:
        """Compact etcd's history up to now; returns the revision."""
        resp = await self._get(self.keys.topology)
        rev = int(resp.header.revision)
        await self.conn.call("KV.Compact", self.conn.kv.compact, rev, physical=True)
        return rev

    def health_lease_ids(self) -> list[int]:
        return [k.id for k in self._health_leases.values() if k.alive]


_OVERRIDE_KINDS = (("overrides/evacuations/", "evacuation", Evacuation.from_dict),
                   ("overrides/restores/", "restore", Restore.from_dict),
                   ("overrides/weights/", "pin", Pin.from_dict))


def decode_overrides(values: Mapping[str, bytes]) -> Overrides:
    """The override records under their keys (relative to the prefix); any record that does not parse, or
    holds a value out of bounds, lands in ``skipped`` naming its key and the problem, never raises."""
    evacs: list[Evacuation] = []
    restores: list[Restore] = []
    pins: list[Pin] = []
    skipped: list[Skipped] = []
    out: dict[str, list[Any]] = {"evacuation": evacs, "restore": restores, "pin": pins}
    for rel, value in sorted(values.items()):
        kind, parse = next(((k, p) for prefix, k, p in _OVERRIDE_KINDS if rel.startswith(prefix)), ("unknown", None))
        try:
            if parse is None:
                raise ValueError("not an override key (overrides/evacuations|restores|weights/...)")
            data = json.loads(value)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            out[kind].append(parse(data))
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError) as exc:
            problem = str(exc) or type(exc).__name__
            skipped.append(Skipped(rel, kind, problem if len(problem) <= 300 else problem[:299] + "…"))
    return Overrides(evacuations=tuple(evacs), restores=tuple(restores), pins=tuple(pins), skipped=tuple(skipped))


class _Superseded(Exception):
    """The pointer we read names chunks that have since been cleaned up."""


__all__ = ["Store", "Leadership", "StoreError", "StoreUnavailable", "Snapshot", "decode_overrides"]
