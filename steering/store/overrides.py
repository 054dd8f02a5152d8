"""``OverrideRecords``: evacuations, restores and pins under ``overrides/`` (docs/architecture.md §4).

A record that does not parse, or holds a value out of bounds, is never fatal:
``decode_overrides`` puts it in ``Overrides.skipped`` naming its key, and it
is logged once. The last overrides read are kept with the time they were
read, for answering ``Status`` while etcd is away.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from steering import logs
from steering.model import Evacuation, Overrides, Pin, Restore, Skipped
from steering.store.codec import record_bytes
from steering.store.keys import EVACUATIONS, PINS, RESTORES, Keys, range_end
from steering.store.kv import KV
from steering.store.watch import watch_range

log = logs.get(__name__)

_OVERRIDE_KINDS = ((EVACUATIONS, "evacuation", Evacuation.from_dict),
                   (RESTORES, "restore", Restore.from_dict),
                   (PINS, "pin", Pin.from_dict))


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


@dataclass(frozen=True)
class StoredRestore:
    """A restore record as stored: the value is what a conditional delete compares."""

    key: bytes
    value: bytes
    restore: Restore


class OverrideRecords:
    def __init__(self, kv: KV, keys: Keys) -> None:
        self.kv = kv
        self.keys = keys
        self.last: tuple[Overrides, float] | None = None  # what etcd last said, and when (unix time)
        self._skips_logged: set[tuple[str, str]] = set()

    def _decode(self, values: Mapping[bytes, bytes]) -> Overrides:
        overrides = decode_overrides({self._rel(k): v for k, v in values.items()})
        self.last = (overrides, time.time())
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

    async def get(self) -> Overrides:
        p = self.keys.overrides_prefix
        resp = await self.kv.get(p, range_end(p))
        return self._decode({kv.key: kv.value for kv in resp.kvs})

    async def watch(self) -> AsyncIterator[Overrides]:
        p = self.keys.overrides_prefix
        async for snap in watch_range(self.kv.conn, p, range_end(p), "overrides"):
            yield self._decode(snap.values())

    async def put_evacuation(self, e: Evacuation) -> None:
        await self.kv.put(self.keys.evacuation(e.region), record_bytes(e.to_dict()))

    async def delete_evacuation(self, region: str) -> None:
        await self.kv.delete(self.keys.evacuation(region))

    async def put_restore(self, r: Restore) -> None:
        await self.kv.put(self.keys.restore(r.region), record_bytes(r.to_dict()))

    async def delete_restore(self, region: str) -> None:
        await self.kv.delete(self.keys.restore(region))

    async def put_pin(self, p: Pin) -> None:
        await self.kv.put(self.keys.pin(p.service, p.geo), record_bytes(p.to_dict()))

    async def delete_pin(self, service: str, geo: str) -> None:
        await self.kv.delete(self.keys.pin(service, geo))

    async def restores(self) -> list[StoredRestore]:
        """The readable restore records with their stored bytes (unreadable ones are left out: ``get`` logs them)."""
        p = self.keys.restores_prefix
        resp = await self.kv.get(p, range_end(p))
        out = []
        for item in resp.kvs:
            try:
                out.append(StoredRestore(item.key, item.value, Restore.from_dict(json.loads(item.value))))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
        return out

    async def delete_if_unchanged(self, key: bytes, value: bytes) -> bool:
        """Delete ``key`` only if it still holds ``value`` (a newer record written meanwhile stays)."""
        ops = self.kv.ops
        txn = await self.kv.txn([ops.txn_compare_value(key, value)], [ops.txn_op_delete(key)])
        return bool(txn.succeeded)
