"""A restore ramp when the next leader's wall clock is off (issue 11, finding 6), against real processes.

Two ``steering controller`` processes on a real etcd. The second runs under libfaketime (the library the
``libfaketime`` wheel of the dev extras ships, preloaded) with its wall clock 30 s behind or 60 s ahead;
its monotonic clock is left alone, as a skewed host's is. A restore ramp is under way under the first,
accurate, leader when it is SIGKILLed, and the skewed replica takes over. Every published table is
watched: the region's share never goes back down (a leader 30 s behind once stepped back), the restore
does not finish sooner than its n steps allow (one 60 s ahead once finished it at once), the skewed
leader publishes steps of its own, and ``generated_at`` never decreases.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from steering.etcdproc import EtcdCluster
from steering.model import ramp_steps
from steering.store import Store
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.controller import ControllerProcess, make_config, region_share, stubs, write_config
from tests.support.reporters import REGIONS, start_agents

REGION = "eu-west-1"
STEP, INTERVAL = 0.1, 2.0  # ten steps: most of them after the takeover (the old leader's lease runs 5 s)


def faketime_env(offset: int) -> dict[str, str]:
    """The environment that runs a process with its wall clock ``offset`` seconds off (monotonic untouched)."""
    spec = importlib.util.find_spec("libfaketime")
    assert spec is not None and spec.origin, "the libfaketime wheel is missing: install the dev extras"
    lib = Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    assert lib.is_file(), f"{lib} missing from the libfaketime wheel"
    return {"LD_PRELOAD": str(lib), "FAKETIME": f"{offset:+d}", "DONT_FAKE_MONOTONIC": "1"}


def restored(table: RoutingTable) -> int | None:
    """The share (in %) the region has back by its label; 100 when it has none (restored or never out)."""
    label = table.regions[REGION].evacuation
    if label == "":
        return 100
    m = re.fullmatch(r"restoring \((\d+)%\)", label)
    return int(m.group(1)) if m else None


def first_log_time(proc: ControllerProcess) -> float:
    for line in proc.logs():
        if "timestamp" in line:
            return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
    raise AssertionError(f"no log line from {proc.log_path}")


@pytest.mark.parametrize("offset", [-30, 60])
async def test_a_skewed_leader_continues_a_restore_without_stepping_back_or_finishing_early(
        etcd: EtcdCluster, tmp_path: Path, offset: int) -> None:
    # A 10 s silence timeout, not the suite's 3 s: under a loaded CI machine b's event loop once stalled for
    # over 3 s, its 3 s health lease expired and the sites went silent for a table or two (traffic left them,
    # then came back paced, as it should). That is the silence rule at work, not the clock skew tested here.
    path = write_config(tmp_path / "steering.yaml", etcd.endpoints, silence_seconds=10.0)
    store = Store(make_config(etcd.endpoints).etcd)
    await store.open()
    seen: list[tuple[float, RoutingTable]] = []  # (our monotonic time, table) for every version published

    async def watch() -> None:
        async for t in store.watch_table():
            seen.append((time.monotonic(), t))

    def latest() -> RoutingTable | None:
        return seen[-1][1] if seen else None

    async def leads(name: str) -> bool:
        return await store.leader() == name

    a = ControllerProcess(tmp_path, path, "a")
    b: ControllerProcess | None = None
    agents: dict[str, object] = {}
    watcher = asyncio.create_task(watch())
    ch = None
    try:
        await a.ready()
        await eventually(lambda: leads("a"), timeout=20, what="a to lead")
        before = time.time()
        b = ControllerProcess(tmp_path, path, "b", env=faketime_env(offset))
        await b.ready()
        after = time.time()
        stamp = first_log_time(b)  # b's clock really is off: its log lines are stamped `offset` from ours
        assert before + offset - 1 <= stamp <= after + offset + 1, (stamp - before, offset)
        agents = await start_agents(b.port)  # health goes through b: losing a loses none of it

        def healthy() -> bool:
            t = latest()
            return t is not None and all(t.regions[r].health == "healthy" for r in REGIONS)

        await eventually(healthy, timeout=20, what="every region healthy in the table")
        ch, op, _, md = stubs(a.target)
        await op.Evacuate(pb.EvacuateRequest(region=REGION, mode=pb.EVACUATION_MODE_NOW, reason="clock test"),
                          metadata=md)
        await eventually(lambda: (t := latest()) is not None and not t.regions[REGION].serving,
                         what=f"{REGION} evacuated")
        await op.Restore(pb.RestoreRequest(region=REGION, mode=pb.EVACUATION_MODE_RAMP,
                                           ramp=pb.Ramp(step=STEP, interval_seconds=INTERVAL), reason="clock test"),
                         metadata=md)
        # Two steps under a, then it dies (no resignation: b waits out its lease, as after a crash).
        await eventually(lambda: (t := latest()) is not None and t.leader == "a" and (restored(t) or 0) >= 20
                         and restored(t) != 100, timeout=20, what="the restore under way under a")
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(5)
        await eventually(lambda: (t := latest()) is not None and t.leader == "b" and restored(t) == 100,
                         timeout=60, what="b to finish the restore")
        # b removes the finished Restore record: its janitor goes by the table, not by its clock.

        async def record_gone() -> bool:
            return not (await store.get_overrides()).restores

        await eventually(record_gone, timeout=15, what="the finished Restore record removed")
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        for agent in agents.values():
            await agent.stop()  # type: ignore[attr-defined]
        if ch is not None:
            await ch.close()
        if b is not None:
            b.stop()
        a.stop()
        await store.close()

    tables = [t for _, t in seen]
    for older, newer in itertools.pairwise(tables):
        assert newer.version > older.version
        assert newer.generated_at >= older.generated_at, (
            f"generated_at went back: v{older.version} {older.generated_at} by {older.leader} -> "
            f"v{newer.version} {newer.generated_at} by {newer.leader}")
    start = next(i for i, t in enumerate(tables) if (restored(t) or 100) < 100)
    done = next(i for i in range(start, len(tables)) if restored(tables[i]) == 100)
    ramp = tables[start:done + 1]
    shown = [(t.leader, restored(t), region_share(t, REGION)) for t in ramp]
    unwell = [(t.version, sorted(r for r, st in [*t.regions.items(), *t.sites.items()] if st.health != "healthy"))
              for t in ramp]
    assert all(s is not None for _, s, _ in shown), shown
    assert [s for _, s, _ in shown] == sorted(s for _, s, _ in shown), f"the restore stepped back: {shown}; not healthy: {unwell}"
    assert [w for _, _, w in shown] == sorted(w for _, _, w in shown), f"the region's weight went back: {shown}; not healthy: {unwell}"
    steps = [t.ramps[REGION].steps for t in ramp if t.ramps and REGION in t.ramps]
    assert steps == sorted(steps) and len(steps) == len(ramp), steps
    assert any(leader == "b" and 0 < s < 100 for leader, s, _ in shown), f"b took no step of its own: {shown}"
    n = ramp_steps(STEP)
    took = seen[done][0] - seen[start][0]
    # (n - 1) intervals at the least; one interval of it allowed for watching the first table late.
    assert took >= (n - 2) * INTERVAL, f"finished {took:.1f}s after it began; {n} steps of {INTERVAL}s"
