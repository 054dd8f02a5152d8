"""Recovery after etcd returns: how long until controllers lead and publish, and DNS follows.

Runs the demo's real processes on loopback (etcd, two controllers, the DNS
server, agents probing simulated targets), then N trials of an etcd outage:

* ``kill``: etcd is killed (SIGKILL) for ``--outage`` seconds, then started
  again on the same data directory and port;
* ``stop``: etcd is frozen (SIGSTOP) for ``--outage`` seconds, then SIGCONT
  (its sockets stay open: a hung host, not a dead one).

During the outage the simulated eu-west-1 starts failing its health checks,
so the controllers have something to publish once etcd is back. The clock
starts when etcd answers a read again (a fresh client polls it every 20 ms)
and stops at:

* ``lead``: a controller holds the leader key and a table newer than the
  one before the outage is published with eu-west-1 out;
* ``dns``: the DNS server answers clients in europe without eu-west-1.

Between trials the region is healed and we wait until europe is answered
from eu-west-1 again. Prints each trial and p50/max per outage kind. The goal
(issue 11): both within 5 s. Usage:

    python bench/recovery.py [--trials 3] [--kill-outage 60] [--stop-outage 20] [--kinds kill,stop]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.failover import answer, pct, until  # noqa: E402
from steering import logs  # noqa: E402
from steering.demo.run import Demo, wait_ready  # noqa: E402
from steering.demo.simtarget import write_state  # noqa: E402
from steering.store import Store  # noqa: E402
from steering.table import RoutingTable  # noqa: E402
from tests.support import EXAMPLE_CONFIG, free_port  # noqa: E402

REGION, GEO = "eu-west-1", "europe"
T = TypeVar("T")
QUERIES = 8  # each from a new source port: SO_REUSEPORT spreads them over the DNS worker processes


class Probe:
    """Reads etcd through a fresh client each time, so its own reconnect backoff never delays the clock."""

    def __init__(self, demo: Demo) -> None:
        assert demo.config is not None
        self.etcd = demo.config.etcd.model_copy(update={"timeout_seconds": 0.3})

    async def _with_store(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        store = Store(self.etcd)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    async def answers(self) -> bool:
        await self._with_store(lambda s: s.leader())
        return True

    async def table(self) -> RoutingTable | None:
        return await self._with_store(lambda s: s.get_table())

    async def leader(self) -> str | None:
        return await self._with_store(lambda s: s.leader())


async def trial(demo: Demo, probe: Probe, kind: str, outage: float, client: str, home: set[str]) -> dict[str, float]:
    assert demo.etcd is not None
    member = demo.etcd.members[0]
    before = await probe.table()
    assert before is not None
    state = demo.sims[REGION].state_file
    if kind == "kill":
        member.kill()
    else:
        member.pause()
    t_out = time.monotonic()
    write_state(state, broken=True)  # the agents see it at once; the controllers cannot write it anywhere
    await asyncio.sleep(max(0.0, outage - (time.monotonic() - t_out)))
    if kind == "kill":
        member.start()
    else:
        member.resume()
    back = await until(probe.answers, 60, step=0.02)

    async def published() -> bool:
        t = await probe.table()
        return (t is not None and t.version > before.version and not t.regions[REGION].serving
                and bool(await probe.leader()))

    async def dns_moved() -> bool:  # several queries, so that every DNS worker process has it
        return all([not (await answer(demo, client) & home) for _ in range(QUERIES)])

    lead_task = asyncio.create_task(until(published, 120, step=0.02))
    dns_task = asyncio.create_task(until(dns_moved, 120, step=0.02))
    await asyncio.gather(lead_task, dns_task)
    result = {"etcd_back": back, "lead": lead_task.result(), "dns": dns_task.result()}
    # Heal and wait until europe is answered from eu-west-1 again (a restore ramp: tens of seconds).
    write_state(state, broken=False)

    async def home_again() -> bool:
        t = await probe.table()
        return (t is not None and t.regions[REGION].serving and not t.converging
                and all([bool(await answer(demo, client) & home) for _ in range(QUERIES)]))

    await until(home_again, 180, step=0.2)
    return result


async def main(trials: int, kinds: list[str], outages: dict[str, float]) -> int:
    state = Path(tempfile.mkdtemp(prefix="steering-recovery-"))
    demo = Demo(config_path=EXAMPLE_CONFIG, state_dir=state, dns_port=free_port(), api_port=free_port(), http_port=0,
                ingest_port=free_port())
    demo.start()
    try:
        await wait_ready(demo, timeout=60)
        assert demo.config is not None
        home = set(demo.config.service("api.example.test.").answers[REGION].A)
        client = str(ipaddress.ip_network(demo.config.geo(GEO).prefixes[0])[1])
        probe = Probe(demo)

        async def settled() -> bool:
            t = await probe.table()
            return (t is not None and not t.converging and bool(await answer(demo, client) & home)
                    and all(st.health == "healthy" for st in [*t.regions.values(), *t.sites.values()]))

        await until(settled, 90, step=0.2)
        results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for i in range(trials):
            for kind in kinds:
                r = await trial(demo, probe, kind, outages[kind], client, home)
                results[kind].append(r)
                print(f"trial {i + 1} {kind} {outages[kind]:g}s: etcd answered {r['etcd_back']:.2f}s after restart; "
                      f"then published {r['lead']:.2f}s, DNS followed {r['dns']:.2f}s", flush=True)
        print()
        for kind, rs in results.items():
            for key, label in (("lead", "controller led and published"), ("dns", "DNS answered from it")):
                vals = [r[key] for r in rs]
                print(f"{kind} {outages[kind]:g}s, {label}: p50 {statistics.median(vals):.2f}s, "
                      f"p90 {pct(vals, 90):.2f}s, max {max(vals):.2f}s (n={len(vals)})")
        return 0
    finally:
        demo.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--kinds", default="kill,stop", help="comma-separated: kill (SIGKILL + restart), stop (SIGSTOP/CONT)")
    ap.add_argument("--kill-outage", type=float, default=60.0)
    ap.add_argument("--stop-outage", type=float, default=20.0)
    a = ap.parse_args()
    logs.setup(level="warning")  # the probe's clients open and close every 20 ms
    sys.exit(asyncio.run(main(a.trials, a.kinds.split(","), {"kill": a.kill_outage, "stop": a.stop_outage})))
