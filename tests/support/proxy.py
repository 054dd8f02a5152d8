"""A TCP proxy on loopback: the listening socket, the tasks and writers it must close, and its endpoint.

Subclasses say what happens to each accepted connection (``_accept``): forwarded as is until silenced
(``blackhole.Blackhole``), forwarded late (``slowlink.SlowLink``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class LoopbackProxy(abc.ABC):
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upstream(self, writer: asyncio.StreamWriter) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the target for one accepted client (None, the client closed, if it refuses)."""
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return None
        self._writers.append(up_writer)
        return up_reader, up_writer

    @abc.abstractmethod
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handle one accepted client connection (each subclass its own way)."""
