"""End to end, every part real: the demo's processes (etcd, two controllers, DNS, agents) on loopback.

Answers are read with real DNS queries carrying ECS for a client in each geo.
Times are printed (see bench/failover.py for measured percentiles), never
asserted: the waits have generous deadlines and fail only when nothing moves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.message
import dns.rdatatype
import pytest

from steering.demo.run import STATE_FILE, Demo, wait_ready
from steering.demo.simtarget import write_state
from tests.support import EXAMPLE_CONFIG, ROOT, eventually, eventually_sync
from tests.support.paths import STEERCTL, STEERING
from tests.support.ports import free_port_block
from tests.support.procs import gone

SERVICE = "api.example.test."
RESTARTING = (Exception,)  # a query may fail while a process restarts: keep waiting
HOME_OF_US_EAST = ("na-east", "south-america", "world")


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    d = Demo(config_path=EXAMPLE_CONFIG, state_dir=tmp_path / "demo", dns_port=free_port_block(1),
             api_port=free_port_block(2), http_port=free_port_block(2), ingest_port=free_port_block(2))
    try:
        d.start()
        await wait_ready(d, timeout=60)
        await settled(d)
        yield d
    finally:
        d.stop()


async def settled(demo: Demo) -> None:
    """Until every target has reported healthy and no ramp is running: the state tests start from."""
    from steering.store import Store

    assert demo.config is not None
    store = Store(demo.config.etcd, base_dir=demo.config.base_dir)
    await store.open()
    try:
        async def ready() -> bool:
            t = await store.get_table()
            return t is not None and not t.converging and all(
                st.health == "healthy" for st in [*t.regions.values(), *t.sites.values()])

        await eventually(ready, 60, "every target healthy in the table", ignoring=RESTARTING)
    finally:
        await store.close()

    # The DNS server follows etcd on its own: wait until it answers every geo the tests start from as the
    # settled table does (one geo answering is not all: a table from before settling once split europe).
    async def home() -> bool:
        return (await answered_regions(demo, "na-east") == {"us-east-1"}
                and await answered_regions(demo, "europe") == {"eu-west-1"})

    await eventually(home, 10, "DNS to answer na-east and europe from the settled table", ignoring=RESTARTING)


def region_of_address(demo: Demo) -> dict[str, str]:
    assert demo.config is not None
    out = {}
    for target, answer in demo.config.service(SERVICE).answers.items():
        for a in answer.A:
            out[a] = target
    return out


async def answered_regions(demo: Demo, geo: str, clients: int = 4) -> set[str]:
    """Regions named in the A answers for a few clients of ``geo`` (ECS), or of the default geo."""
    assert demo.config is not None
    g = demo.config.geo(geo)
    regions: set[str] = set()
    owner = region_of_address(demo)
    v4 = [p for p in g.prefixes if ":" not in p and not p.startswith("127.")]
    for i in range(clients):
        q = dns.message.make_query(SERVICE, "A")
        if v4:
            client = ipaddress.ip_network(v4[0])[i + 1]
            q.use_edns(0, options=[dns.edns.ECSOption(str(client), 32)])
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=demo.dns_port, timeout=1.0)
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.A:
                regions.update(owner[rd.address] for rd in rrset)
    return regions


async def seconds(waiting: Awaitable[object]) -> float:
    """How long ``waiting`` (an ``eventually``) took: printed, never asserted."""
    t0 = time.monotonic()
    await waiting
    return time.monotonic() - t0


async def east_everywhere_absent(demo: Demo) -> bool:
    for geo in [g.id for g in demo.config.geos]:  # type: ignore[union-attr]
        if "us-east-1" in await answered_regions(demo, geo):
            return False
    return True


async def test_break_and_heal_a_region(demo: Demo) -> None:
    for geo in HOME_OF_US_EAST:
        assert await answered_regions(demo, geo) == {"us-east-1"}, geo
    write_state(demo.sims["us-east-1"].state_file, broken=True)
    took = await seconds(eventually(lambda: east_everywhere_absent(demo), 30, "us-east-1 to leave every geo",
                                    ignoring=RESTARTING))
    print(f"break -> no DNS answer names us-east-1: {took:.2f}s")
    write_state(demo.sims["us-east-1"].state_file, broken=False)

    async def back() -> bool:
        return "us-east-1" in await answered_regions(demo, "na-east", clients=16)

    took = await seconds(eventually(back, 60, "us-east-1 to come back", ignoring=RESTARTING))
    print(f"heal -> us-east-1 answered again: {took:.2f}s")


async def test_leader_killed_the_other_takes_over(demo: Demo) -> None:
    info = json.loads((demo.state_dir / STATE_FILE).read_text())
    from steering.store import Store

    assert demo.config is not None
    store = Store(demo.config.etcd, base_dir=demo.config.base_dir)
    await store.open()
    try:
        leader = await store.leader()
        assert leader in ("ctl-1", "ctl-2")
        name = "controller-1" if leader == "ctl-1" else "controller-2"
        os.kill(info["pids"][name], signal.SIGKILL)

        async def new_leader() -> bool:
            return (await store.leader()) not in (None, leader)

        took = await seconds(eventually(new_leader, 30, "another controller to lead", ignoring=RESTARTING))
        print(f"leader killed -> new leader: {took:.2f}s")
        write_state(demo.sims["us-east-1"].state_file, broken=True)
        await eventually(lambda: east_everywhere_absent(demo), 30, "a break to converge under the new leader",
                         ignoring=RESTARTING)
    finally:
        await store.close()


async def test_etcd_down_dns_keeps_answering_then_converges(demo: Demo) -> None:
    assert demo.etcd is not None
    before = await answered_regions(demo, "europe")
    assert before == {"eu-west-1"}
    demo.etcd.stop()
    for _ in range(10):  # a second of queries with etcd gone
        assert await answered_regions(demo, "europe") == {"eu-west-1"}
        await asyncio.sleep(0.1)
    demo.etcd.start()
    write_state(demo.sims["eu-west-1"].state_file, broken=True)

    async def europe_moved() -> bool:
        return "eu-west-1" not in await answered_regions(demo, "europe")

    took = await seconds(eventually(europe_moved, 60, "the system to converge after etcd returned",
                                    ignoring=RESTARTING))
    print(f"etcd back + break -> converged: {took:.2f}s")


def test_demo_stops_cleanly_and_refuses_a_second_instance(tmp_path: Path) -> None:
    dns_port, api_port = free_port_block(1), free_port_block(2)
    state = tmp_path / "demo"
    args = [STEERING, "demo", "--dns-port", str(dns_port), "--api-port", str(api_port), "--http-port",
            str(free_port_block(2)), "--ingest-port", str(free_port_block(2)), "--state-dir", str(state)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def state_file() -> dict[str, Any] | None:
            assert first.poll() is None, first.stdout.read().decode() if first.stdout else ""
            try:
                return json.loads((state / STATE_FILE).read_text())  # type: ignore[no-any-return]
            except (OSError, ValueError):
                return None

        info = eventually_sync(state_file, 60, "the demo's state file")
        second = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "already running" in second.stderr or "already in use" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert second.stdout == "" and "stopping" not in second.stderr  # only why it was refused
        # break/heal from a second terminal talk to the running demo through its state dir
        broke = subprocess.run([STEERING, "demo", "--state-dir", str(state), "break", "us-west-2"],
                               capture_output=True, text=True, timeout=30)
        assert broke.returncode == 0 and "broken" in broke.stdout
        assert json.loads(Path(info["targets"]["us-west-2"]["state_file"]).read_text())["broken"] is True
        bad = subprocess.run([STEERING, "demo", "--state-dir", str(state), "break", "mars-1"],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2 and "unknown region or site 'mars-1'" in bad.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out.decode()[-2000:]
    pids = [p for p in info["pids"].values() if p]
    assert len(pids) >= 9  # etcd, 2 controllers, dns, 5 agents
    eventually_sync(lambda: all(gone(p) for p in pids), 10, "every process of the demo to be gone")
    assert not (state / STATE_FILE).exists()


def steerctl(demo: Demo, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [STEERCTL, "--server", f"127.0.0.1:{demo.api_port}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


async def test_steerctl_evacuate_restore_and_a_refused_evacuation(demo: Demo) -> None:
    from steering.client import SteeringClient

    async with SteeringClient([f"127.0.0.1:{demo.api_port}", f"127.0.0.1:{demo.api_port + 1}"]) as steer:
        assert await steer.wait_ready(timeout=20)
        client = str(ipaddress.ip_network(demo.config.geo("europe").prefixes[0])[1])  # type: ignore[union-attr]
        assert steer.choose(SERVICE, client_address=client).target == "eu-west-1"  # type: ignore[union-attr]

        t0 = time.monotonic()
        proc = await asyncio.to_thread(steerctl, demo, "evacuate", "eu-west-1", "--reason", "e2e", "--now", "--yes")
        assert proc.returncode == 0, proc.stderr + proc.stdout

        async def europe_moved() -> bool:
            return "eu-west-1" not in await answered_regions(demo, "europe")

        took = await seconds(eventually(europe_moved, 10, "DNS answers to leave eu-west-1", ignoring=RESTARTING))
        print(f"steerctl evacuate --now returned after {proc and time.monotonic() - t0:.2f}s; DNS moved "
              f"{took:.2f}s after it returned")

        async def client_moved() -> bool:
            chosen = steer.choose(SERVICE, client_address=client)
            return chosen is not None and chosen.target != "eu-west-1"

        await eventually(client_moved, 10, "steering.client to follow the evacuation", ignoring=RESTARTING)

        # A second evacuation would leave one region serving: refused by min_serving_regions, nothing written.
        status_before = json.loads((await asyncio.to_thread(steerctl, demo, "status", "--json")).stdout)
        refused = await asyncio.to_thread(steerctl, demo, "evacuate", "us-east-1", "--reason", "too much", "--now",
                                          "--yes")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "min_serving_regions" in refused.stderr
        status_after = json.loads((await asyncio.to_thread(steerctl, demo, "status", "--json")).stdout)
        assert [e["region"] for e in status_after["evacuations"]] == \
            [e["region"] for e in status_before["evacuations"]] == ["eu-west-1"]
        assert "us-east-1" in await answered_regions(demo, "na-east")

        proc = await asyncio.to_thread(steerctl, demo, "restore", "eu-west-1", "--now", "--yes")
        assert proc.returncode == 0, proc.stderr + proc.stdout

        async def europe_back() -> bool:
            return await answered_regions(demo, "europe") == {"eu-west-1"}

        await eventually(europe_back, 10, "DNS answers back on eu-west-1", ignoring=RESTARTING)

        async def client_back() -> bool:
            chosen = steer.choose(SERVICE, client_address=client)
            return chosen is not None and chosen.target == "eu-west-1"

        await eventually(client_back, 10, "steering.client back on eu-west-1", ignoring=RESTARTING)
        history = json.loads((await asyncio.to_thread(steerctl, demo, "history", "--json")).stdout)
        actions = [r["action"] for r in (history["records"] if isinstance(history, dict) else history)]
        assert actions[:2] == ["restore", "evacuate"], actions


class ServiceProcess:
    """A real service process embedding steering.client; its latest line says where it sends a client."""

    def __init__(self, demo: Demo, client: str) -> None:
        script = ROOT / "tests" / "support" / "service_process.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--server", f"127.0.0.1:{demo.api_port}",
             "--server", f"127.0.0.1:{demo.api_port + 1}", "--service", SERVICE, "--client", client],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.latest: dict[str, object] = {}
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.latest = json.loads(line)

    async def target(self) -> object:
        return self.latest.get("target")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def test_a_service_process_with_steering_client_follows_everything(demo: Demo) -> None:
    """break, heal, evacuate, restore, leader killed, etcd down and back: the embedded client follows."""
    assert demo.config is not None and demo.etcd is not None
    client = str(ipaddress.ip_network(demo.config.geo("na-east").prefixes[0])[1])
    svc = ServiceProcess(demo, client)
    try:
        async def goes(where: str) -> bool:
            return await svc.target() == where

        async def avoids(where: str) -> bool:
            target = await svc.target()
            return target is not None and target != where

        await eventually(lambda: goes("us-east-1"), 30, "the service to send na-east to us-east-1", ignoring=RESTARTING)
        write_state(demo.sims["us-east-1"].state_file, broken=True)
        took = await seconds(eventually(lambda: avoids("us-east-1"), 30, "the service to leave a broken us-east-1",
                                        ignoring=RESTARTING))
        print(f"service process: break -> moved in {took:.2f}s")
        write_state(demo.sims["us-east-1"].state_file, broken=False)
        await eventually(lambda: goes("us-east-1"), 60, "the service back on a healed us-east-1", ignoring=RESTARTING)

        proc = await asyncio.to_thread(steerctl, demo, "evacuate", "us-east-1", "--reason", "e2e", "--now", "--yes")
        assert proc.returncode == 0, proc.stderr
        await eventually(lambda: avoids("us-east-1"), 10, "the service to follow an evacuation", ignoring=RESTARTING)
        proc = await asyncio.to_thread(steerctl, demo, "restore", "us-east-1", "--now", "--yes")
        assert proc.returncode == 0, proc.stderr
        await eventually(lambda: goes("us-east-1"), 30, "the service to follow a restore", ignoring=RESTARTING)

        info = json.loads((demo.state_dir / STATE_FILE).read_text())
        from steering.store import Store

        store = Store(demo.config.etcd, base_dir=demo.config.base_dir)
        await store.open()
        try:
            leader = await store.leader()
        finally:
            await store.close()
        os.kill(info["pids"]["controller-1" if leader == "ctl-1" else "controller-2"], signal.SIGKILL)
        write_state(demo.sims["us-east-1"].state_file, broken=True)
        await eventually(lambda: avoids("us-east-1"), 30, "the service to follow a break after the leader died",
                         ignoring=RESTARTING)

        demo.etcd.stop()
        for _ in range(10):  # the control plane's store is gone: the service keeps its last view
            assert await avoids("us-east-1")
            await asyncio.sleep(0.1)
        demo.etcd.start()
        write_state(demo.sims["us-east-1"].state_file, broken=False)
        await eventually(lambda: goes("us-east-1"), 60, "the service to converge after etcd returned",
                         ignoring=RESTARTING)
    finally:
        svc.stop()
