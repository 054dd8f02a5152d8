"""``EventRecords``: the event timeline under ``events/<UTC time>-<hex>`` (docs/architecture.md §4).

The leader writes events (``steering.event.Event``) in transactions of up to
``MAX_OPS`` puts and prunes them: older than ``max_age_seconds`` first, then
the oldest beyond ``max_count``. Keys sort by the writer's wall clock, so a
range read is a time range: ``since`` starts the range at a time, ``after``
just past an event id (``steerctl events --follow`` pages on from the last
event it printed). A record that does not decode is skipped and counted in
the page (and logged once), never fatal to the reader.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from etcd3aio import SortOrder, SortTarget

from steering import limits, logs
from steering.event import Event
from steering.store.codec import record_bytes
from steering.store.keys import EVENTS, Keys, range_end
from steering.store.kv import KV

log = logs.get(__name__)

MAX_OPS = 64  # puts per transaction (etcd allows 128 by default)
MAX_LIST = 1000  # events in one page


def stamp(when: float) -> str:
    """``20250102T030405.123456Z``: the sortable time part of an event id."""
    t = limits.number("time", when, limits.STARTED_AT)
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def new_id(when: float) -> str:
    return f"{stamp(when)}-{uuid.uuid4().hex[:8]}"


_ID = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}")


@dataclass(frozen=True)
class EventPage:
    events: list[Event]  # oldest first
    skipped: int  # stored records in the range that could not be decoded
    more: bool  # the range holds more than was returned


class EventRecords:
    def __init__(self, kv: KV, keys: Keys) -> None:
        self.kv = kv
        self.keys = keys
        self._logged: set[bytes] = set()  # unreadable keys already logged

    async def put(self, events: Sequence[Event]) -> list[str]:
        """Write ``events``; their ids, in order. An event keeps the id it has (``new_id``'s form), so a write
        retried after an answer that never came, which etcd may have applied, puts the same keys again
        instead of a second copy; one without gets a new id from its time."""
        ids = [e.id if e.id and _ID.fullmatch(e.id) else new_id(e.time) for e in events]
        ops = self.kv.ops
        puts = [ops.txn_op_put(self.keys.event(i), record_bytes(e.to_dict())) for i, e in zip(ids, events, strict=True)]
        for start in range(0, len(puts), MAX_OPS):
            await self.kv.txn([], puts[start:start + MAX_OPS])
        return ids

    def _decode(self, key: bytes, value: bytes) -> Event | None:
        try:
            rel = self.keys.strip(key)
            return Event.from_dict(json.loads(value), id=rel.removeprefix(EVENTS))
        except (ValueError, TypeError, RecursionError) as exc:
            if key not in self._logged:
                if len(self._logged) > 1000:
                    self._logged.clear()
                self._logged.add(key)
                log.warning("event_record_unreadable", key=key.decode(errors="backslashreplace"),
                            error=str(exc) or type(exc).__name__)
            return None

    async def list(self, *, since: float | None = None, after: str | None = None, limit: int = 50) -> EventPage:
        """Events from ``since`` (unix time) and/or after the event id ``after``: with ``after``, the oldest
        ``limit`` of them (a follower pages forward without gaps), else the newest ``limit``."""
        limit = max(1, min(limit, MAX_LIST))
        p = self.keys.events_prefix
        start = p
        if since is not None:
            start = max(start, p + stamp(max(since, 0.0)).encode())
        if after:
            start = max(start, self.keys.event(after) + b"\x00")
        order = SortOrder.ASCEND if after else SortOrder.DESCEND
        resp = await self.kv.get(start, range_end(p), limit=limit, sort_order=order, sort_target=SortTarget.KEY)
        kvs = list(resp.kvs)
        if order == SortOrder.DESCEND:
            kvs.reverse()
        decoded = [self._decode(kv.key, kv.value) for kv in kvs]
        events = [e for e in decoded if e is not None]
        return EventPage(events=events, skipped=len(decoded) - len(events), more=bool(resp.more))

    async def count(self) -> int:
        p = self.keys.events_prefix
        resp = await self.kv.get(p, range_end(p), count_only=True)
        return int(resp.count)

    async def prune(self, max_count: int, max_age: float, now: float) -> int:
        """Delete events older than ``max_age`` seconds before ``now``, then the oldest beyond ``max_count``;
        how many were deleted."""
        p = self.keys.events_prefix
        deleted = 0
        cutoff = p + stamp(max(0.0, now - max_age)).encode()
        old = await self.kv.get(p, cutoff, count_only=True)
        if int(old.count):
            await self.kv.delete_range(p, cutoff)
            deleted += int(old.count)
        excess = await self.count() - max_count
        if excess > 0:
            oldest = await self.kv.get(p, range_end(p), limit=excess, keys_only=True, sort_order=SortOrder.ASCEND,
                                       sort_target=SortTarget.KEY)
            if oldest.kvs:
                await self.kv.delete_range(p, oldest.kvs[-1].key + b"\x00")
                deleted += len(oldest.kvs)
        return deleted
