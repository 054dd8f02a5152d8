"""Table swaps in the DNS server at planner-bench scale: render time, and the longest gap between answers
while a new table arrives every second.

    .venv/bin/python bench/dns_swap.py [--seconds 20] [--renders 5] [--clients 4]

The topology of ``bench/planner.py --distinct`` (10,000 sites, 250 geos, 20
services, 20 regions), with RRL, cookies and NSID on as shipped (the bench's
own 127.0.0.0/8 exempt from limiting, as in ``bench/dns_vs_knot.py``);
DNSSEC off (the bench's zone is not signed).

* render: CPU time of ``DnsServer._render`` for a table at that scale, the
  median of ``--renders`` (goal: at most 1 s);
* gap: a ``DnsServer`` in this process (its UDP threads, as ``steering dns``
  runs them in each worker) answers ``--clients`` client processes, each
  asking one steered name in a closed loop (send, wait for the answer, 0.5 s
  timeout); every second the bench plans a new table (one site's health
  flipped, through ``steering.replan``) and hands it to ``apply_table``, which
  renders off the event loop and swaps. Each client records when every answer
  arrived; the longest time between two consecutive answers of one client,
  over the run, is the figure (goal: at most 10 ms), with the same figure
  for a first stretch without swaps for comparison. A timeout counts as a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import dns.message  # noqa: E402
import dns.rdatatype  # noqa: E402
from planner import build  # noqa: E402

from steering.config import Config, parse_config  # noqa: E402
from steering.model import Observed, Overrides, TargetHealth  # noqa: E402
from steering.replan import Replanner  # noqa: E402

NAME = "svc01.example.test."


def config() -> tuple[Config, Observed]:
    data, observed = build(20, distinct=True)
    data["dns"] = {"listen": ["127.0.0.1:0"], "nsid": True, "cookies": {"enabled": True},
                   "rrl": {"enabled": True, "exempt": ["127.0.0.0/8"]}}
    return parse_config(data, "<bench>"), observed


def client(port: int, seconds: float, start: float) -> None:
    """One closed-loop client: prints the answer times (monotonic) of the window as JSON."""
    wire = dns.message.make_query(NAME, dns.rdatatype.A).to_wire()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.5)
    times: list[float] = []
    timeouts = 0
    while time.monotonic() < start:
        time.sleep(0.01)
    until = start + seconds
    while (now := time.monotonic()) < until:
        sock.send(wire)
        try:
            sock.recv(4096)
            times.append(time.monotonic())
        except TimeoutError:
            timeouts += 1
            times.append(now + 0.5)  # the gap runs on through a lost answer
    print(json.dumps({"times": times, "timeouts": timeouts}))


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def run(seconds: float, renders: int, nclients: int) -> int:
    from dnsserver.server import DnsServer

    cfg, observed = config()
    replanner = Replanner()
    health = dict(observed.health)
    table = replanner.plan(cfg, Observed(health=dict(health), demand=observed.demand), Overrides(), None, 0.0)
    server = DnsServer(cfg, table)
    times = []
    for _ in range(renders):
        gc.collect()
        t0 = time.process_time()
        server._render(table)
        times.append(time.process_time() - t0)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"render at {len(cfg.sites)} sites, {len(cfg.geos)} geos, {len(cfg.services)} services: "
          f"median {statistics.median(times):.3f} s CPU (min {min(times):.3f}, max {max(times):.3f}; goal <= 1 s; "
          "DNSSEC off)")
    await server.start(["127.0.0.1:0"])
    port = server.addresses[0][1]
    quiet = max(3.0, seconds / 4)
    start = time.monotonic() + 3.0  # the clients' start-up
    procs = [subprocess.Popen([sys.executable, __file__, "--client", str(port), "--seconds", str(quiet + seconds),
                               "--start", repr(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(nclients)]
    try:
        swaps_from = start + quiet
        await asyncio.sleep(max(0.0, swaps_from - time.monotonic()))
        sites = [s.id for s in cfg.sites]
        swaps = 0
        render_wall: list[float] = []
        while time.monotonic() < swaps_from + seconds - 0.5:
            tick = time.monotonic()
            site = sites[swaps * 37 % len(sites)]
            h = health[site]
            health[site] = TargetHealth(status="healthy" if h.status == "unhealthy" else "unhealthy",
                                        capacity=h.capacity, load=h.load)
            table = replanner.plan(cfg, Observed(health=dict(health), demand=observed.demand), Overrides(), table,
                                   float(swaps + 1))
            t0 = time.monotonic()
            await server.apply_table(table)
            render_wall.append(time.monotonic() - t0)
            swaps += 1
            await asyncio.sleep(max(0.0, tick + 1.0 - time.monotonic()))
        outs = [json.loads((p.communicate()[0] or "{}").strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        await server.close()
    before: list[float] = []
    during: list[float] = []
    answers = timeouts = 0
    for out in outs:
        ts = out["times"]
        answers += len(ts)
        timeouts += out["timeouts"]
        before += gaps([t for t in ts if t < swaps_from])
        during += gaps([t for t in ts if t >= swaps_from])
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"{nclients} clients, {answers} answers, {timeouts} timeouts; {swaps} swaps, apply_table wall time "
          f"median {statistics.median(render_wall):.3f} s, max {max(render_wall):.3f} s")
    if before:
        print(f"longest gap between answers without swaps ({quiet:.0f} s): {max(before) * 1e3:.1f} ms "
              f"(p99 {sorted(before)[int(len(before) * 0.99)] * 1e3:.2f} ms)")
    if during:
        print(f"longest gap between answers with a swap every second ({seconds:.0f} s): {max(during) * 1e3:.1f} ms "
              f"(p99 {sorted(during)[int(len(during) * 0.99)] * 1e3:.2f} ms; goal <= 10 ms)")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of swaps (bounded)")
    ap.add_argument("--renders", type=int, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--client", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client is not None:
        client(args.client, args.seconds, args.start)
        return
    sys.exit(asyncio.run(run(min(args.seconds, 600.0), args.renders, args.clients)))


if __name__ == "__main__":
    main()
