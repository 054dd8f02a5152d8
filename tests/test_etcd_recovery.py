"""Recovery after etcd returns (issue 11, finding 5), against real processes.

Two ``steering controller`` processes and a DNS server following etcd; etcd is
killed (SIGKILL, then started again on the same data directory and port) or
frozen (SIGSTOP, then SIGCONT) while a region breaks. Once etcd answers again,
a controller must lead, publish a table without the region, and the DNS server
must answer from it. The goal is 5 s; the tests wait up to ``BOUND`` (no timing
assertions: they flake on a loaded machine) and print the measured times;
``bench/recovery.py`` measures p50/max over trials, with a 60 s kill.

The outage here is 20 s, not the 60 s of the issue, to keep the suite's wall
time acceptable: what matters is that it outlasts every lease (election 5 s,
health 3 s here) and is long enough for gRPC's default backoff to grow past
5 s (1 s, then 1.6 times more per refused attempt: ~10 s after 20 s).

And ``steerctl status`` answers while etcd is down, from what the replica
knows, marked stale.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.message
import dns.rdatatype
import pytest
from prometheus_client import REGISTRY

from dnsserver.feed import follow
from dnsserver.server import DnsServer
from steering.config import Config, Etcd, load_config
from steering.etcdproc import EtcdCluster
from steering.store import Store, StoreError
from steering.store.client import Conn, channel_options
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.cli import steerctl
from tests.support.controller import ControllerProcess, make_config, start_controller, write_config
from tests.support.reporters import FakeAgent, start_agents

OUTAGE = 20.0  # seconds etcd is away (the bench uses 60)
BOUND = 15.0  # generous: the goal is 5 s, measured and printed
BROKEN = "eu-west-1"
EUROPE_CLIENT = "198.51.100.129"  # in the example config's europe prefixes


@dataclass
class System:
    config: Config
    etcd: EtcdCluster
    controllers: list[ControllerProcess]
    agents: dict[str, FakeAgent]
    dns: DnsServer
    dns_port: int


@pytest.fixture
async def system(etcd: EtcdCluster, tmp_path: Path) -> AsyncIterator[System]:
    path = write_config(tmp_path / "steering.yaml", etcd.endpoints)
    config = load_config(path)
    controllers = [ControllerProcess(tmp_path, path, name=f"c{i}") for i in (1, 2)]
    dns_store = Store(config.etcd, base_dir=config.base_dir)
    server = DnsServer(config, None)
    agents: dict[str, FakeAgent] = {}
    feed: asyncio.Task[None] | None = None
    try:
        for c in controllers:
            await c.ready()
        agents = await start_agents(controllers[0].port)  # all report to c1; either may lead
        await server.start(["127.0.0.1:0"])
        await dns_store.open()
        feed = asyncio.create_task(follow(dns_store, server))
        sys_ = System(config, etcd, controllers, agents, server, server.addresses[0][1])

        async def settled() -> bool:
            t = await read_table(config)
            return (t is not None and all(st.health == "healthy" for st in t.regions.values())
                    and server.stats.table_version == t.version)

        await eventually(settled, 30, what="every region healthy, the DNS server on the current table")
        yield sys_
    finally:
        for a in agents.values():
            await a.stop()
        if feed is not None:
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)
        await dns_store.close()
        await server.close()
        for c in controllers:
            c.stop()


def quick(config: Config) -> Etcd:
    return config.etcd.model_copy(update={"timeout_seconds": 0.3})


async def read_table(config: Config) -> RoutingTable | None:
    """The published table through a fresh client (its own reconnect backoff never delays the test)."""
    try:
        async with Store(quick(config)) as store:
            return await store.get_table()
    except StoreError:
        return None


async def etcd_answers(config: Config) -> bool:
    try:
        async with Store(quick(config)) as store:
            await store.leader()
        return True
    except StoreError:
        return False


async def europe_answer(port: int) -> set[str]:
    q = dns.message.make_query("api.example.test.", "A")
    q.use_edns(0, options=[dns.edns.ECSOption(EUROPE_CLIENT, 32)])
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=1.0)
    return {rd.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


async def outage_then_recovery(s: System, kind: str) -> tuple[float, float]:
    """Take etcd away for OUTAGE seconds while BROKEN fails; return (published, DNS) seconds after it answers."""
    member = s.etcd.members[0]
    before = await read_table(s.config)
    assert before is not None and before.regions[BROKEN].serving
    broken_addresses = set(s.config.service("api.example.test.").answers[BROKEN].A)
    assert await europe_answer(s.dns_port) & broken_addresses
    if kind == "kill":
        member.kill()
    else:
        member.pause()
    t_out = time.monotonic()
    s.agents[BROKEN].set(status=pb.HEALTH_STATUS_UNHEALTHY)  # reported to c1, which cannot write it anywhere
    await asyncio.sleep(OUTAGE)  # the outage itself: the scenario, not a wait for a condition
    for c in s.controllers:
        assert c.proc.poll() is None, f"{c.log_path} exited during the outage"
    if kind == "kill":
        member.start()
    else:
        member.resume()
    await eventually(lambda: etcd_answers(s.config), 30, what="etcd to answer again")
    t0 = time.monotonic()
    print(f"etcd {kind}: away {t0 - t_out:.1f}s")

    async def published() -> RoutingTable | None:
        t = await read_table(s.config)
        return t if t is not None and t.version > before.version and not t.regions[BROKEN].serving else None

    table = await eventually(published, BOUND, what=f"a table without {BROKEN} published after etcd returned")
    t_published = time.monotonic() - t0

    async def dns_moved() -> bool:
        return s.dns.stats.table_version >= table.version and not await europe_answer(s.dns_port) & broken_addresses

    await eventually(dns_moved, BOUND, what="the DNS server to answer from the new table")
    t_dns = time.monotonic() - t0
    async with Store(s.config.etcd) as store:
        assert await store.leader() in {"c1", "c2"}
    print(f"etcd {kind} {OUTAGE:g}s: published {t_published:.2f}s and DNS followed {t_dns:.2f}s after etcd "
          f"answered again (goal: 5 s)")
    return t_published, t_dns


async def test_etcd_killed_then_back_controllers_publish_and_dns_follows(system: System) -> None:
    await outage_then_recovery(system, "kill")


async def test_etcd_frozen_then_resumed_controllers_publish_and_dns_follows(system: System) -> None:
    await outage_then_recovery(system, "stop")


async def test_steerctl_status_answers_from_the_replica_while_etcd_is_down(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    env = {"STEERCTL_SERVER": run.target}
    try:
        rc, out, err = await steerctl("status", "--json", env=env)
        assert rc == 0, err
        live = json.loads(out)
        assert live["stale"] is False and live["etcd_unreachable_since"] is None
        assert REGISTRY.get_sample_value("steering_etcd_reachable") == 1.0
        version = live["table"]["version"]

        killed = time.time()
        etcd.members[0].kill()

        async def stale() -> dict[str, Any] | None:
            rc, out, err = await steerctl("status", "--json", env=env)
            assert rc == 0, err  # never UNAVAILABLE: the replica answers from what it knows
            data = json.loads(out)
            return data if data["stale"] else None

        t0 = time.monotonic()
        data = await eventually(stale, 30, what="status marked stale")
        print(f"steerctl status with etcd down answered (stale) in {time.monotonic() - t0:.2f}s")
        assert killed - 1 <= data["etcd_unreachable_since"] <= time.time()
        assert REGISTRY.get_sample_value("steering_etcd_reachable") == 0.0  # the alert's gauge agrees
        assert data["table"]["version"] == version
        assert data["leader"] == "c1"  # the leader it last saw
        assert {r["region"]: r["health"] for r in data["regions"]} == {
            "us-east-1": "healthy", "us-west-2": "healthy", "eu-west-1": "healthy"}
        assert data["geos"]["api.example.test."]["europe"] == {"eu-west-1": 1000}

        rc, out, err = await steerctl("status", env=env)
        assert rc == 0, err
        assert "etcd unreachable since" in out and "showing this replica's last known state" in out, out
        assert "last seen leader c1" in out and f"table v{version}" in out, out

        etcd.members[0].start()

        async def live_again() -> bool:
            rc, out, _ = await steerctl("status", "--json", env=env)
            return rc == 0 and json.loads(out)["stale"] is False

        await eventually(live_again, 30, what="status from etcd again")
        assert REGISTRY.get_sample_value("steering_etcd_reachable") == 1.0
    finally:
        await run.stop()


async def test_reconnect_settings_are_bounded_and_reach_the_channel(etcd: EtcdCluster) -> None:
    # etcd3aio takes no channel options; we set them on its ConnectionManager (checked on this version).
    assert importlib.metadata.version("etcd3aio") == "0.3.0"
    for bad in (0.0, -1.0, float("nan"), float("inf"), 61.0):
        with pytest.raises(ValueError, match="reconnect_max_seconds"):
            Etcd(reconnect_max_seconds=bad)
    with pytest.raises(ValueError, match="keepalive_seconds"):
        Etcd(keepalive_seconds=1.0)  # etcd answers pings under 5 s apart with GOAWAY
    cfg = Etcd(endpoints=tuple(etcd.endpoints), reconnect_max_seconds=1.5)
    options = dict(channel_options(cfg))
    assert options["grpc.max_reconnect_backoff_ms"] == 1500
    assert options["grpc.initial_reconnect_backoff_ms"] <= 1500
    assert options["grpc.http2.max_pings_without_data"] == 0
    conn = Conn(cfg)
    await conn.open()
    try:
        assert conn.client is not None
        applied = dict(conn.client._manager.grpc_options)
        for name, value in options.items():
            assert applied[name] == value, name
        assert applied["grpc.lb_policy_name"] == "round_robin"  # etcd3aio's own options are kept
        await conn.call("KV.Range", conn.kv.get, b"x")
        assert conn.unreachable_since is None
    finally:
        await conn.close()


async def test_a_paused_member_answers_nothing_once_pause_returns(etcd: EtcdCluster) -> None:
    """``pause`` returns when every thread of etcd is stopped, not when the signal is sent: a call made right
    after it times out (the events test once saw a write answered after ``kill`` returned, under I/O load)."""
    from steering.etcdproc import stopped
    from tests.support.store import etcd_cfg

    member = etcd.members[0]
    async with Store(etcd_cfg(etcd.endpoints, timeout=1.0)) as store:
        await store.kv.put(store.keys.event("x"), b"before")
        member.pause()
        try:
            assert member.proc is not None and stopped(member.proc.pid)
            with pytest.raises(StoreError, match="unavailable"):
                await store.kv.put(store.keys.event("x"), b"during")
        finally:
            member.resume()
        pid = member.proc.pid
        await eventually(lambda: not stopped(pid), 5, what="etcd's threads to run again")

        async def answered() -> bytes | None:
            try:
                resp = await store.kv.get(store.keys.event("x"))
            except StoreError:
                return None
            return bytes(resp.kvs[0].value) if resp.kvs else None

        # etcd may apply the put the timeout gave up on once it runs again: either value, never an error
        assert await eventually(answered, 20, what="etcd to answer after SIGCONT") in (b"before", b"during")
