"""``Store``: the project's whole view of etcd (docs/architecture.md §4), over one ``Conn``.

A facade: each concept lives in its own module and the ``Store`` hands every
call to it, so callers keep one object and one API:

- ``tables.py``: the routing table (chunks, pointer, fenced publish, watch);
- ``health.py``: ``health/`` records on this process's leases;
- ``overrides.py``: evacuations, restores and pins (``decode_overrides``);
- ``oplog.py``: operator actions applied once, the audit log, the operator sequence;
- ``events.py``: the leader's event timeline (automatic changes), pruned by count and age;
- ``status.py``, ``topology.py``: shared status records, the stored topology;
- ``election.py``: the leader key; ``kv.py``: the etcd calls they all make.

Records are JSON with sorted keys. Reads that find a malformed record log it
(naming the key) and skip it: one bad value written by hand must not take a
DNS server or a controller down. Connectivity failures of single calls raise
``StoreUnavailable`` after ``etcd.timeout_seconds``; the ``watch_*`` streams
never raise on connectivity loss, they re-list and carry on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from steering import logs
from steering.config import Etcd
from steering.event import Event
from steering.model import Evacuation, Overrides, Pin, Restore, TargetHealth
from steering.store import codec
from steering.store.client import Backoff, Conn, StoreError, StoreUnavailable
from steering.store.drills import DrillRecords
from steering.store.election import Leadership, campaign
from steering.store.events import EventPage, EventRecords
from steering.store.health import HealthRecords
from steering.store.keys import RESERVED, Keys
from steering.store.kv import KV
from steering.store.oplog import OperatorLog, OverridesChanged
from steering.store.overrides import OverrideRecords, StoredRestore, decode_overrides
from steering.store.status import StatusRecords
from steering.store.tables import INLINE_TXN_BYTES_DEFAULT, TableRecords
from steering.store.topology import TopologyRecord
from steering.store.watch import Snapshot
from steering.table import RoutingTable

# Terms of this process that are over, kept for a later campaign to resume (``_stale_leases``).
KEEP_TERMS_OVER = 4

log = logs.get(__name__)


class Store:
    """Async etcd store. ``async with Store(cfg) as store: ...`` or ``open()``/``close()``."""

    def __init__(self, cfg: Etcd, base_dir: str | Path = ".", *, chunk_bytes: int = codec.CHUNK_BYTES,
                 keep_versions: int = 3, election_ttl: float = 5.0,
                 inline_txn_bytes: int = INLINE_TXN_BYTES_DEFAULT, request_ttl: float = 7 * 86400,
                 serving_only: bool = False) -> None:
        """``serving_only``: tables are read without their sites' states (a DNS server serves none of them;
        ``codec.decode_table``)."""
        self.cfg = cfg
        self.keys = Keys(cfg.prefix)
        self.conn = Conn(cfg, base_dir)
        self.kv = KV(self.conn)  # raw key-value access, for tests and tools
        self.election_ttl = election_ttl
        self._tables = TableRecords(self.kv, self.keys, chunk_bytes=chunk_bytes, keep_versions=keep_versions,
                                    inline_txn_bytes=inline_txn_bytes, serving_only=serving_only)
        self._health = HealthRecords(self.kv, self.keys)
        self._overrides = OverrideRecords(self.kv, self.keys)
        self._oplog = OperatorLog(self.kv, self.keys, request_ttl)
        self._status = StatusRecords(self.kv, self.keys)
        self._events = EventRecords(self.kv, self.keys)
        self._topology = TopologyRecord(self.kv, self.keys)
        self.drills = DrillRecords(self.kv, self.keys)  # chaos drills (docs/drills.md): used as is, no wrappers
        self._leaderships: list[Leadership] = []  # this process's terms, oldest first
        # What etcd last said of the leader, with the wall-clock time it said it: for answering while it is away.
        self.last_leader: tuple[str | None, float] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        await self.conn.open()
        log.info("etcd_store_open", endpoints=list(self.cfg.endpoints), prefix=self.cfg.prefix)

    async def close(self) -> None:
        """Stop background work. Leases are not revoked: health keys and an unresigned leadership expire
        after their TTL, as if the process had died (resign first for a clean hand-over)."""
        await self._health.close()
        for leadership in list(self._leaderships):
            await leadership.abandon()
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

    # ------------------------------------------------------------------ routing table (tables.py)
    @property
    def inline_txn_bytes(self) -> int:
        """Chunks up to this size are written in the txn that flips the pointer; larger ones ahead of it."""
        return self._tables.inline_txn_bytes

    @inline_txn_bytes.setter
    def inline_txn_bytes(self, value: int) -> None:
        self._tables.inline_txn_bytes = value

    async def get_table(self) -> RoutingTable | None:
        """The current table, or None when there is none or it is unreadable (logged)."""
        return await self._tables.get()

    async def put_table(self, table: RoutingTable) -> None:
        """Write ``table`` as current without fencing (tests and tools)."""
        await self._tables.put(table)

    async def publish_table(self, table: RoutingTable, leadership: Leadership) -> bool:
        """Write ``table`` only if ``leadership`` still holds the leader key; False (nothing written) if not."""
        return await self._tables.publish(table, leadership)

    def decoding(self) -> bool:
        """True while a table read from etcd is being decoded (in a thread)."""
        return self._tables.decoding > 0

    def watch_table(self) -> AsyncIterator[RoutingTable]:
        """The current table, then each newer version; never a version <= one already yielded."""
        return self._tables.watch()

    async def get_table_version(self, version: int) -> RoutingTable | None:
        """A table version still kept in etcd (the current one and up to ``keep_versions`` older), else None."""
        return await self._tables.get_version(version)

    async def table_versions(self) -> set[int]:
        """The table versions that still have chunks in etcd (the current one and up to ``keep_versions``)."""
        return await self._tables.versions()

    # ------------------------------------------------------------------ health (health.py)
    async def put_health(self, site: str, health: TargetHealth, ttl: float) -> None:
        """Write ``health/<site>`` bound to a shared lease of ~``ttl`` seconds.

        The store keeps that lease alive while it is open; if the process dies (or ``close``s) the key
        expires after ``ttl``. If the lease is lost while we live (etcd down longer than ``ttl``, or revoked),
        the store takes a new lease and writes back what it last wrote, unless someone else wrote since.
        """
        await self._health.put(site, health, ttl)

    async def write_health_batch(self, puts: Mapping[str, TargetHealth], deletes: list[str], ttl: float,
                                 max_ops: int = 100) -> None:
        """Many health puts and deletes in transactions of up to ``max_ops`` (etcd allows 128 by default).

        One request instead of one per site: a burst of changes (a replica starting with thousands of agents)
        must not queue behind thousands of round trips. Same lease semantics as ``put_health``.
        """
        await self._health.write_batch(puts, deletes, ttl, max_ops)

    async def refresh_health_lease(self, timeout: float = 5.0) -> bool:
        """Keep-alive every health lease now and wait for the acknowledgements; False if one is lost.

        The store already does this in the background every TTL/3; call it to confirm liveness."""
        return await self._health.refresh_lease(timeout)

    async def delete_health(self, site: str) -> None:
        await self._health.delete(site)

    async def get_health(self) -> dict[str, TargetHealth]:
        return await self._health.get()

    def watch_health(self) -> AsyncIterator[dict[str, TargetHealth]]:
        """The full health map now, then after every change (expiry deletes included)."""
        return self._health.watch()

    def health_lease_ids(self) -> list[int]:
        return self._health.lease_ids()

    # ------------------------------------------------------------------ overrides (overrides.py)
    @property
    def last_overrides(self) -> tuple[Overrides, float] | None:
        """The overrides etcd last gave, with the wall-clock time it gave them: for answering while it is away."""
        return self._overrides.last

    async def get_overrides(self) -> Overrides:
        return await self._overrides.get()

    async def get_overrides_versioned(self) -> tuple[Overrides, int]:
        """The overrides and the operator sequence they reflect, for ``apply_operator_action(expect_seq=)``.

        The sequence is read first: an action landing in between makes the later compare fail, never pass."""
        version = await self._oplog.sequence()
        return await self._overrides.get(), version

    def watch_overrides(self) -> AsyncIterator[Overrides]:
        return self._overrides.watch()

    async def put_evacuation(self, e: Evacuation) -> None:
        await self._overrides.put_evacuation(e)

    async def delete_evacuation(self, region: str) -> None:
        await self._overrides.delete_evacuation(region)

    async def put_restore(self, r: Restore) -> None:
        await self._overrides.put_restore(r)

    async def delete_restore(self, region: str) -> None:
        await self._overrides.delete_restore(region)

    async def put_pin(self, p: Pin) -> None:
        await self._overrides.put_pin(p)

    async def delete_pin(self, service: str, geo: str) -> None:
        await self._overrides.delete_pin(service, geo)

    async def get_restores(self) -> list[StoredRestore]:
        """The readable restore records, each with the bytes ``delete_restore_if_unchanged`` compares."""
        return await self._overrides.restores()

    async def delete_restore_if_unchanged(self, stored: StoredRestore) -> bool:
        """Delete a restore record only if it is still the one read (a newer restore written meanwhile stays)."""
        return await self._overrides.delete_if_unchanged(stored.key, stored.value)

    # ------------------------------------------------------------------ operator actions and audit (oplog.py)
    async def apply_operator_action(self, request_id: str, puts: Mapping[str, bytes], deletes: list[str],
                                    audit: Mapping[str, Any], expect_seq: int | None = None) -> tuple[bool, str]:
        """Apply ``puts``/``deletes`` (keys relative to the prefix) and append the audit record, in one txn,
        unless ``request_id`` was applied before. Returns (applied, audit_id of the record for this request).

        With ``expect_seq`` (from ``get_overrides_versioned``) the txn also requires that no other operator
        action landed since that read, so safety rules checked on it still hold; else ``OverridesChanged``."""
        return await self._oplog.apply(request_id, puts, deletes, audit, expect_seq)

    async def request_audit_id(self, request_id: str) -> str | None:
        """The audit id of an earlier action with ``request_id``, if any (request ids expire after a week)."""
        return await self._oplog.request_audit_id(request_id)

    async def list_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        """Audit records, newest first."""
        return await self._oplog.list_audit(limit)

    # ------------------------------------------------------------------ status records (status.py)
    async def put_status(self, name: str, value: bytes) -> None:
        """A small status record the leader shares with every replica (e.g. the last Route 53 sync)."""
        await self._status.put(name, value)

    async def get_status(self, name: str) -> bytes | None:
        return await self._status.get(name)

    # ------------------------------------------------------------------ events (events.py)
    async def put_events(self, events: Sequence[Event]) -> list[str]:
        """Append events to the timeline (each keyed by its time); their ids."""
        return await self._events.put(events)

    async def list_events(self, *, since: float | None = None, after: str | None = None,
                          limit: int = 50) -> EventPage:
        """Events oldest first: the newest ``limit`` from ``since``, or the oldest ``limit`` after the id
        ``after``; records that do not decode are skipped and counted."""
        return await self._events.list(since=since, after=after, limit=limit)

    async def prune_events(self, max_count: int, max_age: float, now: float) -> int:
        """Delete events older than ``max_age`` seconds, then the oldest beyond ``max_count``; how many."""
        return await self._events.prune(max_count, max_age, now)

    async def count_events(self) -> int:
        return await self._events.count()

    # ------------------------------------------------------------------ topology (topology.py)
    async def put_topology(self, config_json: bytes) -> None:
        await self._topology.put(config_json)

    async def get_topology(self) -> bytes | None:
        return await self._topology.get()

    def watch_topology(self) -> AsyncIterator[bytes]:
        """The stored topology now (if any), then after every change."""
        return self._topology.watch()

    # ------------------------------------------------------------------ election (election.py)
    async def campaign(self, identity: str, ttl: float | None = None) -> Leadership:
        """Block until ``identity`` leads; the lease (``ttl``, default ``election_ttl``) is kept alive."""
        if not identity:
            raise ValueError("identity: empty")
        leadership = await campaign(self.conn, self.keys.leader, identity, ttl or self.election_ttl,
                                    self._stale_leases)
        # Terms that are over are kept only while their lease may still hold the key (a later campaign may
        # resume it): a term's lease outlives it by at most its TTL, so the last few are plenty, and a replica
        # whose terms come and go for months does not keep every one.
        over = [lead for lead in self._leaderships if lead.lost.is_set()]
        dropped = set(map(id, over[:-KEEP_TERMS_OVER]))
        self._leaderships = [lead for lead in self._leaderships if id(lead) not in dropped] + [leadership]
        return leadership

    def _stale_leases(self) -> set[int]:
        """Leases of our own terms that are over (we stopped leading), unless a later term resumed one."""
        over = {lead.lease_id for lead in self._leaderships if lead.lost.is_set() and lead.lease_id}
        return over - {lead.lease_id for lead in self._leaderships if not lead.lost.is_set()}

    async def leader(self) -> str | None:
        resp = await self.kv.get(self.keys.leader)
        name = resp.kvs[0].value.decode(errors="replace") if resp.kvs else None
        self.last_leader = (name, time.time())
        return name

    # ------------------------------------------------------------------ for tests and tools
    async def compact(self) -> int:
        """Compact etcd's history up to now; returns the revision."""
        resp = await self.kv.get(self.keys.topology)
        rev = int(resp.header.revision)
        await self.kv.compact(rev)
        return rev


__all__ = [
    "INLINE_TXN_BYTES_DEFAULT",
    "RESERVED",
    "EventPage",
    "Leadership",
    "OverridesChanged",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredRestore",
    "decode_overrides",
]
