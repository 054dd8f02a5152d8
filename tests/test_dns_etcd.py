"""The DNS server follows the routing table in a real etcd, and stays up without it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import pytest

from dnsserver.feed import follow
from dnsserver.persist import load_table
from dnsserver.server import DnsServer
from steering.config import load_config
from steering.etcdproc import EtcdCluster
from steering.store import Store
from tests.support import eventually, free_port
from tests.support.dns_server import DnsProcess, load, table_with, write_config

ADDR = {"us-east-1": {"192.0.2.10", "192.0.2.11"}, "us-west-2": {"192.0.2.20"}, "eu-west-1": {"192.0.2.30"}}


def world_to(cfg, version: int, region: str):
    return table_with(cfg, version, {"api.example.test.": {"world": {region: 1000}}}, generated_at=time.time())


def region_sync(port: int, timeout: float = 0.5) -> str | None:
    q = dns.message.make_query("api.example.test", "A", use_edns=0, options=[dns.edns.ECSOption("10.0.0.0", 24)])
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return None
    got = {rd.address for rd in r.answer[0]} if r.answer else set()
    return next((k for k, v in ADDR.items() if v == got), None)


async def region(port: int, timeout: float = 0.5) -> str | None:
    """The region answering a client in the world geo; None without an answer within ``timeout``."""
    return await asyncio.to_thread(region_sync, port, timeout)


async def wait_region(port: int, want: str, within: float) -> None:
    async def answered() -> bool:
        return await region(port) == want

    await eventually(answered, within, f"the answer to become {want}")


def persisted(path: Path | str, version: int) -> bool:
    t = load_table(path)
    return t is not None and t.version == version


async def test_tables_from_etcd_show_within_a_second_and_survive_etcd_loss(etcd: EtcdCluster, tmp_path: Path) -> None:
    cfg = load(tmp_path, etcd_endpoints=etcd.endpoints)
    state = str(tmp_path / "dns-table.json")
    server = DnsServer(cfg, None, state_file=state)
    await server.start(["127.0.0.1:0"])
    port = server.addresses[0][1]
    reader = Store(cfg.etcd, base_dir=cfg.base_dir)
    writer = Store(cfg.etcd, base_dir=cfg.base_dir)
    await reader.open()
    await writer.open()
    task = asyncio.create_task(follow(reader, server))
    try:
        for version, target in ((1, "eu-west-1"), (2, "us-west-2"), (3, "eu-west-1")):
            await writer.put_table(world_to(cfg, version, target))
            await wait_region(port, target, within=1.0)
        await eventually(lambda: persisted(state, 3), 5, "the table to be persisted")
        await writer.close()
        etcd.stop()  # the control plane's store is gone: answers continue from the last table
        for _ in range(20):
            assert await region(port) == "eu-west-1"
        assert server.stats.table_version == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(reader.close(), 10)
        await server.close()


async def test_restart_with_etcd_down_answers_from_persisted_table(etcd: EtcdCluster, tmp_path: Path) -> None:
    config = write_config(tmp_path, etcd_endpoints=etcd.endpoints)
    cfg = load_config(config)
    port = free_port()
    listen = ("--listen", f"127.0.0.1:{port}")
    with DnsProcess(config, *listen, metrics=False) as d:
        d.ready()
        async with Store(cfg.etcd, base_dir=cfg.base_dir) as store:
            await store.put_table(world_to(cfg, 7, "us-west-2"))
        await wait_region(port, "us-west-2", within=15.0)
        await eventually(lambda: persisted(tmp_path / "dns-table.json", 7), 5, "the table to be persisted")
        assert d.stop(10) == 0, d.log()
    etcd.stop()
    with DnsProcess(config, *listen, metrics=False) as d:
        # Every worker up first: one answering is not all answering (each loads the file on its own).
        d.ready()
        # etcd is down: the persisted table answers (without it the world geo would fail open to all three)
        await wait_region(port, "us-west-2", within=15.0)
        for _ in range(30):  # a generous ceiling per answer: a loaded machine is slow, not wrong
            assert await region(port, timeout=5.0) == "us-west-2"
        assert d.stop(10) == 0, d.log()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
