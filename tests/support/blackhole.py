"""A TCP proxy on loopback that can go silent: the packets-dropped partition of the lab, without root.

Until ``silence()`` it forwards both ways to ``target``. After it, every open connection and every new one is
accepted and read, but nothing is forwarded and nothing is closed: the kernel still acknowledges the bytes, so
neither an RST nor a TCP timeout tells the client anything. Only the client's own deadlines and HTTP/2 pings can
find that the peer is gone, which is what the lab's cut member (its packets dropped) needs of the store.
"""

from __future__ import annotations

import asyncio
import contextlib


class Blackhole:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.silent = False
        self.swallowed = 0  # bytes clients sent after ``silence()`` that went nowhere
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

    def silence(self) -> None:
        self.silent = True

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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.silent:
            await self._swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
