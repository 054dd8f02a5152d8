"""A TCP proxy on loopback that can go silent: the packets-dropped partition of the lab, without root.

Until ``silence()`` it forwards both ways to ``target``. After it, every open connection and every new one is
accepted and read, but nothing is forwarded and nothing is closed: the kernel still acknowledges the bytes, so
neither an RST nor a TCP timeout tells the client anything. Only the client's own deadlines and HTTP/2 pings can
find that the peer is gone, which is what the lab's cut member (its packets dropped) needs of the store.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.proxy import LoopbackProxy


class Blackhole(LoopbackProxy):
    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self.silent = False
        self.swallowed = 0  # bytes clients sent after ``silence()`` that went nowhere

    def silence(self) -> None:
        self.silent = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            self._writers.append(writer)
            await self._swallow(reader)
            return
        up = await self._upstream(writer)
        if up is None:
            return
        for src, dst in ((reader, up[1]), (up[0], writer)):
            self._spawn(self._pipe(src, dst))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while not self.silent:
                data = await src.read(65536)
                if not data:
                    dst.close()  # a clean close is passed on while the proxy still forwards
                    return
                if self.silent:
                    break
                dst.write(data)
                await dst.drain()
            await self._swallow(src)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        """Read and drop everything, never answer, never close: the peer's bytes vanish."""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.swallowed += len(data)
            await asyncio.Event().wait()  # the peer closed: stay silent anyway, as a dropped link would
