"""Leader election on one key, ``election/leader``, bound to a lease that we keep alive.

Whoever creates the key (a txn: create_revision == 0) leads until the key is
gone: resigned, or its lease expired because the leader died or was cut off.
The others watch the key and try again when it is deleted. A ``Leadership``
remembers the key's create_revision; the store's fenced writes compare it, so
a leader that has lost the key can never write even before it notices.

The key may still be held by our own earlier term: the leader gave up when
no keepalive was acknowledged within the TTL, but etcd had not let the lease
go. Elections of etcd's own leader hold every keepalive (a cut of the member
that led etcd: seconds, more than the lease when a vote splits), and etcd
restarts the countdown of every lease it reloads after an outage. A campaign
that finds the key on a lease this process has given up (``stale_leases``)
renews that lease: if etcd still has it, nobody else can have led meanwhile
(the key's create_revision is the one of our term), so this replica leads
again under the same key, a new term, and the others never saw it go. A lease
etcd no longer has is revoked (its key goes with it) and the campaign goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from typing import Any

from steering import logs
from steering.store.client import Conn, LeaseNotFound, StoreError
from steering.store.lease import LeaseKeeper
from steering.store.watch import watch_range

log = logs.get(__name__)


class Leadership:
    """Proof of leading, for as long as ``lost`` is not set."""

    def __init__(self, conn: Conn, key: bytes, identity: str, create_revision: int, keeper: LeaseKeeper) -> None:
        self.conn = conn
        self.key = key
        self.identity = identity
        self.create_revision = create_revision
        self.keeper = keeper
        self.lost = asyncio.Event()
        self.lost_reason = ""
        # the term this replica gave up, led again under the same key (etcd kept its lease, nobody led
        # meanwhile: the other replicas never saw the key change)
        self.resumed = False
        self._monitor: asyncio.Task[None] | None = None

    @property
    def lease_id(self) -> int:
        return self.keeper.id

    @property
    def is_leader(self) -> bool:
        return not self.lost.is_set()

    def _start(self) -> None:
        self.keeper.on_lost(lambda k: self._set_lost(f"lease lost: {k.lost_reason}"))
        if self.keeper.lost.is_set():
            self._set_lost(f"lease lost: {self.keeper.lost_reason}")
        self._monitor = asyncio.create_task(self._watch_key(), name=f"leadership-{self.identity}")

    def _set_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        log.warning("leadership_lost", identity=self.identity, reason=reason)

    async def _watch_key(self) -> None:
        async for snap in watch_range(self.conn, self.key, b"", f"leadership-{self.identity}"):
            item = snap.items.get(self.key)
            if item is None:
                self._set_lost("leader key deleted")
                return
            if item.create_revision != self.create_revision or item.value != self.identity.encode():
                self._set_lost(f"leader key now held by {item.value.decode(errors='replace')!r}")
                return
            if self.lost.is_set():
                return

    async def _stop_monitor(self) -> None:
        task, self._monitor = self._monitor, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def resign(self) -> None:
        """Give up leading: delete our key (if still ours) and revoke the lease. Safe to call twice."""
        was_leader = not self.lost.is_set()
        self._set_lost("resigned")
        await self._stop_monitor()
        if was_leader:
            kv = self.conn.kv
            with contextlib.suppress(StoreError):
                await self.conn.call("KV.Txn", kv.txn,
                                     [kv.txn_compare_create_revision(self.key, self.create_revision)],
                                     [kv.txn_op_delete(self.key)], [])
        await self.keeper.revoke()
        log.info("leadership_resigned", identity=self.identity)

    async def abandon(self) -> None:
        """Stop keeping the lease alive without deleting anything, as if the process had died."""
        await self._stop_monitor()
        await self.keeper.stop()


async def campaign(conn: Conn, key: bytes, identity: str, ttl: float,
                   stale_leases: Callable[[], Collection[int]] = frozenset) -> Leadership:
    """Block until ``identity`` holds ``key``; the lease is kept alive in the background.

    ``stale_leases``: ids of leases this process held for earlier terms and has given up; a key found on
    one of them is ours from before and is released at once rather than left to expire."""
    backoff = conn.backoff()
    keeper: LeaseKeeper | None = None
    kv = conn.kv
    try:
        while True:
            if keeper is None or keeper.lost.is_set():
                if keeper is not None:
                    await keeper.stop()
                keeper = LeaseKeeper(conn, ttl, f"election-{identity}")
                try:
                    await keeper.grant()
                except StoreError as exc:
                    log.warning("campaign_grant_failed", identity=identity, error=str(exc))
                    keeper = None
                    await backoff.sleep()
                    continue
            try:
                resp = await conn.call("KV.Txn", kv.txn, [kv.txn_compare_create_revision(key, 0)],
                                       [kv.txn_op_put(key, identity.encode(), lease=keeper.id)],
                                       [kv.txn_op_get(key)])
            except LeaseNotFound:
                await keeper.stop()
                keeper = None
                continue
            except StoreError as exc:
                log.warning("campaign_txn_failed", identity=identity, error=str(exc))
                await backoff.sleep()
                continue
            backoff.reset()
            if resp.succeeded:
                create_revision = int(resp.header.revision)
            else:
                kvs = resp.responses[0].response_range.kvs
                holder = kvs[0] if kvs else None
                if holder is not None and holder.lease == keeper.id:
                    # An earlier attempt of ours went through although its reply was lost.
                    create_revision = int(holder.create_revision)
                else:
                    if holder is not None and holder.lease and holder.lease in stale_leases():
                        try:
                            resumed = await _resume_stale(conn, holder, ttl, identity)
                        except StoreError as exc:
                            log.warning("campaign_release_failed", identity=identity, error=str(exc))
                            await backoff.sleep()
                            continue
                        if resumed is not None:  # the fresh keeper is revoked on the way out (``finally``)
                            leadership = Leadership(conn, key, identity, int(holder.create_revision), resumed)
                            leadership.resumed = True
                            leadership._start()
                            log.info("leadership_resumed", identity=identity, lease=resumed.id,
                                     revision=int(holder.create_revision))
                            return leadership
                    elif holder is not None:
                        log.info("campaign_waiting", identity=identity, leader=holder.value.decode(errors="replace"))
                        await _wait_until_gone(conn, key, keeper)
                    continue
            leadership = Leadership(conn, key, identity, create_revision, keeper)
            leadership._start()
            log.info("leadership_acquired", identity=identity, lease=keeper.id, revision=create_revision)
            keeper = None  # now owned by the leadership
            return leadership
    finally:
        if keeper is not None:  # cancelled while campaigning: let our lease go at once
            with contextlib.suppress(Exception):
                await asyncio.shield(keeper.revoke())


async def _resume_stale(conn: Conn, holder: Any, ttl: float, identity: str) -> LeaseKeeper | None:
    """The lease of our own earlier term that holds the key (``holder``) kept alive again, if that term was
    under ``identity`` and etcd still has the lease; else the lease revoked (the key goes with it) and None.
    We stopped leading when we gave it up."""
    lease = int(holder.lease)
    if holder.value == identity.encode():
        keeper = LeaseKeeper(conn, ttl, f"election-{identity}")
        try:
            if await keeper.adopt(lease):
                return keeper
        except LeaseNotFound:
            pass
    log.info("campaign_releasing_own_stale_term", identity=identity, lease=lease)
    with contextlib.suppress(LeaseNotFound):  # expired meanwhile: the key is gone already
        await conn.call("Lease.Revoke", conn.lease.revoke, lease)
    return None


async def _wait_until_gone(conn: Conn, key: bytes, keeper: LeaseKeeper) -> None:
    async for snap in watch_range(conn, key, b"", "campaign"):
        if key not in snap.items or keeper.lost.is_set():
            return
