"""``StatusRecords``: small records the leader shares with every replica under ``status/<name>``.

Today one: ``status/route53``, the last Route 53 sync, which every replica's
``Status`` reports (docs/architecture.md §8).
"""

from __future__ import annotations

from steering.store.keys import Keys
from steering.store.kv import KV


class StatusRecords:
    def __init__(self, kv: KV, keys: Keys) -> None:
        self.kv = kv
        self.keys = keys

    async def put(self, name: str, value: bytes) -> None:
        await self.kv.put(self.keys.status(name), value)

    async def get(self, name: str) -> bytes | None:
        resp = await self.kv.get(self.keys.status(name))
        return resp.kvs[0].value if resp.kvs else None
