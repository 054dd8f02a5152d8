"""The DNS daemon's own garbage collection waits while a table is on its way.

With the collector off (``tune_interpreter``), ``collect_garbage`` collects what is not frozen every 30 s; a
collection walks every object not frozen in one call no thread switch interrupts, and a table being decoded
(the store's watch, in a thread) is ~50,000 new objects at 10,000 sites: bench/dns_swap.py saw 9-11 ms
gaps between answers when a collection met a decode. So it waits while the store decodes or a table is
swapped in.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dnsserver.server import DnsServer
from steering.etcdproc import EtcdCluster
from steering.store import Store, codec
from tests.support import eventually
from tests.support.dns_server import load
from tests.support.store import etcd_cfg, make_table


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection that starts, with the automatic ones off meanwhile."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    was = gc.isenabled()
    gc.disable()
    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)
        if was:
            gc.enable()


async def test_the_collection_waits_while_a_table_arrives_or_swaps_in(tmp_path: Path,
                                                                        collections: list[int]) -> None:
    server = DnsServer(load(tmp_path), None)
    arriving = [True]
    server.table_arriving = lambda: arriving[0]
    task = asyncio.create_task(server.collect_garbage(every=0.02))
    try:
        await asyncio.sleep(0.3)  # fifteen turns, each one finding a table on its way
        assert collections == []
        async with server._install_lock:  # a swap in progress holds it
            arriving[0] = False
            await asyncio.sleep(0.3)
            assert collections == []
        await eventually(lambda: 2 in collections, 5, "a full collection once nothing arrives")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_store_says_when_it_is_decoding_a_table(etcd: EtcdCluster,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the decode is held in its thread until the test has looked: no race with how long a decode takes
    entered, release = threading.Event(), threading.Event()
    real = codec.decode_table

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(20), "the test never let the decode go on"
        return real(*args, **kwargs)

    async with Store(etcd_cfg(etcd.endpoints)) as writer, \
               Store(etcd_cfg(etcd.endpoints), serving_only=True) as reader:
        await writer.put_table(make_table(1, n_sites=2_000))
        assert not reader.decoding()
        monkeypatch.setattr(codec, "decode_table", held)
        read = asyncio.create_task(reader.get_table())
        try:
            await eventually(entered.is_set, 10, "the store to start decoding")
            assert reader.decoding()
        finally:
            release.set()
        table = await read
        assert not reader.decoding()
        assert table is not None and table.version == 1 and table.sites == {}  # served without the states
