"""``DrillRecords``: chaos drills under ``drills/items/<id>``, the one in flight under ``drills/active``, and
drill schedules under ``drills/schedules/<id>``.

A drill is started by creating ``drills/active`` (only if absent) in the txn that writes the drill, so two
drills never run at once, whichever replicas the two starts reached. Every later write compares the bytes
it read (the leader's step, an operator's abort), so a write based on a stale read is refused and redone;
the write that ends a drill also frees ``drills/active``. Records that do not decode are skipped and
reported by the caller (``steering.drill.Drill.from_dict`` names the field).
"""

from __future__ import annotations

from dataclasses import dataclass

from steering.store.keys import Keys, check_component, range_end
from steering.store.kv import KV

ITEMS = "drills/items/"
ACTIVE = "drills/active"
SCHEDULES = "drills/schedules/"


@dataclass(frozen=True)
class StoredDrill:
    id: str
    value: bytes  # as stored: the compare of the next write


class DrillRecords:
    def __init__(self, kv: KV, keys: Keys) -> None:
        self.kv = kv
        self.keys = keys

    def _item(self, drill_id: str) -> bytes:
        return self.keys.rel(ITEMS + check_component("drill id", drill_id))

    async def create(self, drill_id: str, value: bytes) -> str | None:
        """Write a new drill as the one in flight; None when done, else the id of the drill already in flight."""
        ops, active = self.kv.ops, self.keys.rel(ACTIVE)
        resp = await self.kv.txn([ops.txn_compare_create_revision(active, 0)],
                                 [ops.txn_op_put(active, drill_id.encode()),
                                  ops.txn_op_put(self._item(drill_id), value)],
                                 [ops.txn_op_get(active)])
        if resp.succeeded:
            return None
        kvs = resp.responses[0].response_range.kvs
        return kvs[0].value.decode(errors="replace") if kvs else "?"

    async def active(self) -> str | None:
        resp = await self.kv.get(self.keys.rel(ACTIVE))
        return resp.kvs[0].value.decode(errors="replace") if resp.kvs else None

    async def get(self, drill_id: str) -> StoredDrill | None:
        resp = await self.kv.get(self._item(drill_id))
        return StoredDrill(drill_id, resp.kvs[0].value) if resp.kvs else None

    async def items(self) -> list[StoredDrill]:
        p = self.keys.rel(ITEMS.rstrip("/")) + b"/"
        resp = await self.kv.get(p, range_end(p))
        return [StoredDrill(self.keys.strip(kv.key).removeprefix(ITEMS), kv.value) for kv in resp.kvs]

    async def update(self, drill_id: str, old: bytes, new: bytes, finished: bool = False) -> bool:
        """Replace the drill if it still holds ``old``; ``finished`` also frees ``drills/active`` (if it is ours)."""
        ops, item, active = self.kv.ops, self._item(drill_id), self.keys.rel(ACTIVE)
        resp = await self.kv.txn([ops.txn_compare_value(item, old)], [ops.txn_op_put(item, new)])
        if resp.succeeded and finished:
            await self.kv.txn([ops.txn_compare_value(active, drill_id.encode())], [ops.txn_op_delete(active)])
        return bool(resp.succeeded)

    async def release(self, drill_id: str) -> None:
        """Free ``drills/active`` if it still names this (finished) drill."""
        ops, active = self.kv.ops, self.keys.rel(ACTIVE)
        await self.kv.txn([ops.txn_compare_value(active, drill_id.encode())], [ops.txn_op_delete(active)])

    # ---- schedules (``steering.drillschedule``)

    def _schedule(self, schedule_id: str) -> bytes:
        return self.keys.rel(SCHEDULES + check_component("schedule id", schedule_id))

    async def add_schedule(self, schedule_id: str, value: bytes) -> bool:
        """Write a new schedule; False if one with this id exists."""
        ops, key = self.kv.ops, self._schedule(schedule_id)
        resp = await self.kv.txn([ops.txn_compare_create_revision(key, 0)], [ops.txn_op_put(key, value)])
        return bool(resp.succeeded)

    async def schedules(self) -> list[StoredDrill]:
        p = self.keys.rel(SCHEDULES.rstrip("/")) + b"/"
        resp = await self.kv.get(p, range_end(p))
        return [StoredDrill(self.keys.strip(kv.key).removeprefix(SCHEDULES), kv.value) for kv in resp.kvs]

    async def update_schedule(self, schedule_id: str, old: bytes, new: bytes) -> bool:
        ops, key = self.kv.ops, self._schedule(schedule_id)
        resp = await self.kv.txn([ops.txn_compare_value(key, old)], [ops.txn_op_put(key, new)])
        return bool(resp.succeeded)

    async def remove_schedule(self, schedule_id: str) -> bool:
        ops, key = self.kv.ops, self._schedule(schedule_id)
        resp = await self.kv.txn([ops.txn_compare_create_revision(key, 0)], [], [ops.txn_op_delete(key)])
        return not resp.succeeded  # the key existed: it is deleted now
