"""A watch that survives what etcd does in production, as a stream of full snapshots of a key range.

Why not etcd3aio's ``watch``: after a compaction it yields a cancelled
response and then hangs, and after a reconnect it resumes from the last
*header* revision, which can skip events that were still being replayed.
Here every (re)connect starts with a fresh list of the range at revision R
and a watch from R+1, and anything unexpected (a cancelled or compacted
watch, a broken stream, a member that lost its leader) throws the watch
away and re-lists. The consumer sees snapshots of the whole range, so a
re-list can never replay an old change as if it were new: at worst it sees
the same state again, and it is not even yielded then.

A watch is also thrown away when it goes quiet on a member that no longer
answers. The client balances over every member, so a watch can be opened on
a member whose packets are dropped (a partitioned region: no RST, no error);
etcd sends nothing on a quiet range, so that silence looked like no change
while the rest of the cluster moved on (docs/lab.md, Findings). So: the
create must be acknowledged within ``etcd.timeout_seconds``, and after
``QUIET_SECONDS`` without a message the watch asks etcd for a progress
report, which must come within the same bound; otherwise it is ``Stalled``,
and the re-list and the new stream go to another member.

And a quiet watch is checked, not trusted. etcd 3.5.1 (the test server, and
still met in production) has watch bugs that lose an event on a member that
was just restarted: the stream stays open, answers progress requests, and
never sends the change (seen here: a three-member test, the third member
killed, the reader's watch on a restarted one). So each progress report
(revision P) is followed by one small read at P: the range's key count and
its newest mod revision (keys only, limit 1). If either differs from the
snapshot the watch has built, an event was lost: ``Resync``, re-list. Cost:
one tiny read per quiet watch every ``QUIET_SECONDS``; a busy watch, which
never asks for progress, costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc.aio
from etcd3aio import SortOrder, SortTarget
from etcd3aio._protobuf import WatchCreateRequest, WatchRequest

from steering import logs
from steering.store.client import Conn, StoreError, describe, is_transient

log = logs.get(__name__)

PUT, DELETE = 0, 1
# A watch this long without a message asks etcd for a progress report (one header, cheap). Short: the leader
# acts on a quiet health range, so a stalled watch must be found in seconds; it costs one small request.
QUIET_SECONDS = 3.0


@dataclass(frozen=True)
class Item:
    value: bytes
    mod_revision: int
    create_revision: int = 0
    lease: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The range's keys and values as of ``revision``."""

    revision: int
    items: dict[bytes, Item]
    # The keys put or deleted since the snapshot before this one, in no particular order; None after a fresh
    # listing (the first snapshot, a resync, a reconnect): anything may have changed.
    changed: frozenset[bytes] | None = None

    def values(self) -> dict[bytes, bytes]:
        return {k: i.value for k, i in self.items.items()}


def _item(kv: object) -> Item:
    # etcd3aio ships no types for its protobuf messages (KeyValue, WatchResponse): attributes unchecked here
    return Item(kv.value, int(kv.mod_revision), int(kv.create_revision), int(kv.lease))  # type: ignore[attr-defined]


class Resync(Exception):
    """The watch can no longer be trusted to be complete: list again."""


class Stalled(Exception):
    """The member behind the watch did not answer within the bound: list again, on another member."""


def _progress_request() -> WatchRequest:
    req = WatchRequest()
    req.progress_request.SetInParent()  # an empty WatchProgressRequest: etcd answers with a header
    return req


async def _pump(call: Any, inbox: asyncio.Queue[object]) -> None:
    """Read the stream into ``inbox`` from its own task: cancelling a grpc.aio ``read`` cancels the whole call,
    so the deadlines are kept on the queue, never on the read. Ends with EOF or the exception that ended it."""
    try:
        while True:
            resp = await call.read()
            await inbox.put(resp)
            if resp is grpc.aio.EOF:
                return
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await inbox.put(exc)


async def _next(inbox: asyncio.Queue[object], timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        item = await inbox.get()
    if isinstance(item, BaseException):
        raise item
    return item


async def _prove_alive(call: Any, inbox: asyncio.Queue[object], bound: float) -> Any:
    """Ask for a progress report on a quiet watch; the next message (that report, or events) within ``bound``."""
    try:
        async with asyncio.timeout(bound):
            await call.write(_progress_request())
        return await _next(inbox, bound)
    except TimeoutError:
        raise Stalled(f"quiet for {QUIET_SECONDS:g}s and no progress report within {bound:g}s") from None


async def _events(conn: Conn, key: bytes, end: bytes, start_revision: int) -> AsyncIterator[Any]:
    bound = conn.cfg.timeout_seconds
    call = conn.watch_stub().Watch(metadata=conn.metadata(require_leader=True))
    inbox: asyncio.Queue[object] = asyncio.Queue()
    pump = asyncio.create_task(_pump(call, inbox), name="etcd-watch-read")
    try:
        try:
            async with asyncio.timeout(bound):
                await call.write(WatchRequest(create_request=WatchCreateRequest(key=key, range_end=end,
                                                                                 start_revision=start_revision)))
            resp = await _next(inbox, bound)
        except TimeoutError:
            raise Stalled(f"watch not created within {bound:g}s") from None
        while True:
            if resp is grpc.aio.EOF:
                raise Resync("watch stream closed by the server")
            if resp.canceled or resp.compact_revision:
                raise Resync(f"watch cancelled (compact_revision={resp.compact_revision}, "
                             f"reason={resp.cancel_reason!r})")
            if resp.events:
                yield resp
            try:
                resp = await _next(inbox, QUIET_SECONDS)
            except TimeoutError:
                resp = await _prove_alive(call, inbox, bound)
                if not resp.events and resp is not grpc.aio.EOF and not resp.canceled:
                    yield resp  # a progress report: the consumer checks its snapshot against it
    finally:
        call.cancel()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def _check(conn: Conn, key: bytes, end: bytes, items: dict[bytes, Item], revision: int, name: str) -> None:
    """Raise ``Resync`` if ``items`` (built from a list and the events since) is not the range at ``revision``,
    as far as its key count and newest mod revision tell: a lost put raises the newest mod revision, a lost
    delete changes the count (a lost delete and create together also raise the mod revision)."""
    try:
        resp = await conn.call("KV.Range", conn.kv.get, key, range_end=end or None, revision=revision,
                               keys_only=True, limit=1, sort_order=SortOrder.DESCEND, sort_target=SortTarget.MOD)
    except StoreError as exc:
        raise Resync(f"could not check the quiet watch at revision {revision}: {exc}") from None
    newest = int(resp.kvs[0].mod_revision) if resp.kvs else 0
    ours = max((i.mod_revision for i in items.values()), default=0)
    if int(resp.count) != len(items) or newest != ours:
        # a watch that dropped an event while answering progress requests: seen with etcd 3.5.1
        log.warning("etcd_watch_missed_events", watch=name, revision=revision, keys=int(resp.count), keys_seen=len(items),
                    newest_mod_revision=newest, newest_seen=ours)
        raise Resync(f"the watch missed events before revision {revision}")
    log.debug("etcd_watch_checked", watch=name, revision=revision, keys=len(items))


async def watch_range(conn: Conn, key: bytes, end: bytes, name: str) -> AsyncIterator[Snapshot]:
    """Snapshots of ``[key, end)`` (``end`` empty: the single key): the current one, then one after each change.

    Never raises on connectivity loss: it logs, backs off and re-lists. Ends only when the consumer stops.
    """
    backoff = conn.backoff()
    last: dict[bytes, bytes] | None = None
    pending: set[bytes] | None = None  # the keys events touched since the last yield; None: listed since
    while not conn.closed:
        try:
            resp = await conn.call("KV.Range", conn.kv.get, key, range_end=end or None)
        except StoreError as exc:
            if conn.closed:
                return
            log.warning("etcd_watch_list_failed", watch=name, error=str(exc))
            await backoff.sleep()
            continue
        revision = int(resp.header.revision)
        items = {kv.key: _item(kv) for kv in resp.kvs}
        values = {k: i.value for k, i in items.items()}
        pending = None
        if values != last:
            last = dict(values)
            yield Snapshot(revision, dict(items), None)
        try:
            async for batch in _events(conn, key, end, revision + 1):
                conn.answered()
                backoff.reset()
                if not batch.events:
                    await _check(conn, key, end, items, int(batch.header.revision), name)
                    continue
                for ev in batch.events:
                    if ev.type == DELETE:
                        items.pop(ev.kv.key, None)
                        values.pop(ev.kv.key, None)
                    else:
                        items[ev.kv.key] = _item(ev.kv)
                        values[ev.kv.key] = ev.kv.value
                    if pending is not None:
                        pending.add(ev.kv.key)
                if values != last:
                    last = dict(values)
                    yield Snapshot(int(batch.header.revision), dict(items),
                                   None if pending is None else frozenset(pending))
                    pending = set()
        except Resync as exc:
            log.info("etcd_watch_resync", watch=name, reason=str(exc))
            await backoff.sleep()
        except Stalled as exc:
            if conn.closed:
                return
            conn.failed(exc)
            log.warning("etcd_watch_stalled", watch=name, error=str(exc))
            await backoff.sleep()
        except (grpc.aio.AioRpcError, StoreError, TimeoutError, ConnectionError, asyncio.InvalidStateError) as exc:
            if conn.closed:
                return
            if not isinstance(exc, (grpc.aio.AioRpcError, StoreError)) or (
                    isinstance(exc, grpc.aio.AioRpcError) and is_transient(exc)):
                conn.failed(exc)
            log.warning("etcd_watch_broken", watch=name, error=describe(exc))
            await backoff.sleep()
        except Exception:  # a bug or a surprise from the client must not end a daemon's watch
            log.exception("etcd_watch_error", watch=name)
            await backoff.sleep()
