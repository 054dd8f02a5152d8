"""A TCP proxy on loopback that delays every byte by a fixed time each way: a slow link, without root.

Each chunk read from one side is written to the other ``delay`` seconds after it was read, in order, so the
round trip through it grows by ``2 * delay`` and nothing else changes (no loss, no reordering). The lab makes
the same kind of link between network namespaces (steering/lab/relay.py); this one needs no privileges.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.proxy import LoopbackProxy


class SlowLink(LoopbackProxy):
    """``back``: the delay of what the target sends (answers), when it differs from ``delay`` (requests)."""

    def __init__(self, target: tuple[str, int], delay: float, back: float | None = None) -> None:
        super().__init__(target)
        self.delay = delay
        self.back = delay if back is None else back
        self.requested = 0.0  # loop time of the last chunk read from the client
        self._answers_held_until = 0.0

    def hold_answers(self, seconds: float) -> None:
        """Release nothing the target sends for ``seconds`` (requests still go through): what a client sees
        while etcd holds its calls for an election."""
        self._answers_held_until = asyncio.get_running_loop().time() + seconds

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up = await self._upstream(writer)
        if up is None:
            return
        for src, dst, delay, answers in ((reader, up[1], self.delay, False), (up[0], writer, self.back, True)):
            line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            self._spawn(self._read(src, line, delay, answers))
            self._spawn(self._write(line, dst, answers))

    async def _read(self, src: asyncio.StreamReader, line: asyncio.Queue[tuple[float, bytes]], delay: float,
                    answers: bool) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if not answers:
                    self.requested = loop.time()
                await line.put((loop.time() + delay, data))
        await line.put((loop.time() + delay, b""))

    async def _write(self, line: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter,
                     answers: bool) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError):
            while True:
                due, data = await line.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                while answers and loop.time() < self._answers_held_until:
                    await asyncio.sleep(self._answers_held_until - loop.time())
                if not data:
                    dst.close()
                    return
                dst.write(data)
                await dst.drain()
