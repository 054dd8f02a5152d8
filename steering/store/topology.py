"""``TopologyRecord``: the config under ``topology``, compressed over 512 KiB.

Nothing in the running system writes or reads it (every process reads the
config file, docs/architecture.md §12); the methods stay for tools.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from steering import logs
from steering.store import codec
from steering.store.keys import Keys
from steering.store.kv import KV
from steering.store.watch import watch_range

log = logs.get(__name__)


class TopologyRecord:
    def __init__(self, kv: KV, keys: Keys) -> None:
        self.kv = kv
        self.keys = keys

    async def put(self, config_json: bytes) -> None:
        await self.kv.put(self.keys.topology, codec.encode_blob(config_json))

    async def get(self) -> bytes | None:
        resp = await self.kv.get(self.keys.topology)
        if not resp.kvs:
            return None
        try:
            return codec.decode_blob(resp.kvs[0].value)
        except ValueError as exc:
            log.warning("topology_unreadable", error=str(exc))
            return None

    async def watch(self) -> AsyncIterator[bytes]:
        """The stored topology now (if any), then after every change."""
        async for snap in watch_range(self.kv.conn, self.keys.topology, b"", "topology"):
            item = snap.items.get(self.keys.topology)
            if item is None:
                continue
            try:
                yield codec.decode_blob(item.value)
            except ValueError as exc:
                log.warning("topology_unreadable", error=str(exc))
