"""The live status the console follows (``GET /api/v1/stream``): one producer per replica, any number of readers.

Each open stream would otherwise build the status itself once a second, and
the status reads etcd (evacuations, health records, events): ten browser tabs
would be ten times the reads. One task builds it while somebody listens: at
once when the followed table changes (a new table shows in the console within
moments of being published), otherwise every ``poll`` seconds (health,
evacuations and events change without a new table). Readers get the newest
JSON only, never a backlog: a slow reader skips states, it does not queue them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from steering import logs
from steering.ports import FollowedTable

log = logs.get(__name__)


class StatusFeed:
    """The newest status JSON, rebuilt while at least one reader follows it."""

    def __init__(self, build: Callable[[], Awaitable[Any]], tables: FollowedTable, poll: float = 1.0) -> None:
        self._build = build
        self._tables = tables
        self._poll = poll
        self._latest: bytes | None = None
        self._seq = 0
        self._changed = asyncio.Event()
        self._readers = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def readers(self) -> int:
        return self._readers

    async def follow(self) -> AsyncGenerator[bytes, None]:
        """The current status, then each different one (the newest when the reader was busy)."""
        self._readers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._produce(), name="status-feed")
        seen = 0
        try:
            while True:
                while self._seq == seen:
                    changed = self._changed
                    await changed.wait()
                seen = self._seq
                assert self._latest is not None
                yield self._latest
        finally:
            self._readers -= 1
            if self._readers == 0 and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
                self._latest, self._seq = None, 0  # a later reader starts from a fresh build

    async def _produce(self) -> None:
        version = -1
        while True:
            try:
                body = json.dumps(await self._build(), ensure_ascii=False, allow_nan=False,
                                  separators=(",", ":")).encode()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd away, say: keep the last status, try again at the next poll
                log.warning("status feed: could not build the status", error=f"{type(exc).__name__}: {exc}")
            else:
                if body != self._latest:
                    self._latest = body
                    self._seq += 1
                    changed, self._changed = self._changed, asyncio.Event()
                    changed.set()
            table = self._tables.current
            if table is not None:
                version = max(version, table.version)
            newer = await self._tables.wait_newer(version, timeout=self._poll)
            if newer is not None:
                version = newer.version


def sse(event: str, data: bytes) -> bytes:
    """One server-sent event. ``data`` is one line of JSON (json.dumps never writes a raw newline)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
