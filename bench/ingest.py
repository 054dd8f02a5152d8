"""Ingest at scale: N simulated agents stream reports every second to one controller process.

Starts a real etcd and one `steering controller` process (with --metrics-addr)
on loopback, with a synthetic topology of N cache sites, then opens N
grpc.aio streams from this process (spread over a few channels) that each
report once per interval for a bounded time. Load jitters inside the
controller's report band, as steady traffic does, and a small share of sites
flip status now and then. Prints reports/s sustained, etcd writes/s (from the
controller's own counter) and the controller's CPU use.

The measurement window is one interval of the system-wide monotonic clock,
fixed by the parent before the load processes start (after the warm-up and an
allowance for their start-up): the processes count only the acks and stream
errors inside it and the parent samples the controller's CPU and counters at
its two ends, so every figure covers the same seconds (before, the acks of
each process's own window were divided by the parent's longer one, which
included the processes' start-up and their streams' ending). Stream errors
inside the window are the load generator's own failures: the figures are only
as good as that count is small.

Usage: python bench/ingest.py [--sites 5000] [--seconds 30] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steering.etcdproc import EtcdCluster  # noqa: E402
from steering.v1 import steering_pb2 as pb  # noqa: E402
from steering.v1 import steering_pb2_grpc as pb_grpc  # noqa: E402
from tests.support import free_port  # noqa: E402

REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
FLIP = float(os.environ.get("INGEST_FLIP", "0.001"))  # chance per report that a site changes status
STARTUP = 8.0  # seconds allowed for the load processes to start (import grpc, open channels) on a busy machine


def topology(sites: int, etcd: list[str], zone_dir: Path) -> dict[str, Any]:
    return {
        "policy": {"silence_seconds": 15, "step_seconds": 5, "report_band": 0.05},
        "regions": [{"id": r, "capacity": 100000} for r in REGIONS],
        "sites": [{"id": f"s{i:05d}", "region": REGIONS[i % 3], "capacity": 1000} for i in range(sites)],
        "geos": [{"id": "world", "default": True, "demand": 1, "prefer": REGIONS}],
        "services": [{"name": "api.bench.test.", "answers": {r: {"A": [f"192.0.2.{i + 1}"]}
                                                            for i, r in enumerate(REGIONS)}}],
        "zones": [{"origin": "bench.test."}],
        "etcd": {"endpoints": etcd, "prefix": "/bench"},
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int, metric: str, by_label: bool = False) -> Any:
    """The metric's value summed over its labels, or per label set (by_label)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    per: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(rf"^{metric}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m:
            per[m.group(1) or ""] = per.get(m.group(1) or "", 0.0) + float(m.group(2))
    return per if by_label else sum(per.values())


async def agent(stub: pb_grpc.HealthServiceStub, site: str, region: str, kind: pb.SiteKind, interval: float,
                window: tuple[float, float], counts: dict[str, int], rng: random.Random) -> None:
    """One simulated agent: a stream of reports; after a stream error it reconnects, as agents do."""
    seq = 0
    status = pb.HEALTH_STATUS_HEALTHY
    start, until = window
    await asyncio.sleep(rng.random() * interval)  # spread the agents over the interval

    while time.monotonic() < until:
        # call.write/read rather than a request generator: with thousands of streams in one process,
        # grpc.aio's generator-driven calls fail now and then (CANCELLED from the client's own core;
        # reproduced against a trivial server, whose handlers are never cancelled).
        call = stub.Report()
        try:
            due = time.monotonic()
            while time.monotonic() < until:
                seq += 1
                if kind == pb.SITE_KIND_CACHE and rng.random() < FLIP:  # a rare real change
                    status = (pb.HEALTH_STATUS_UNHEALTHY if status == pb.HEALTH_STATUS_HEALTHY
                              else pb.HEALTH_STATUS_HEALTHY)
                    counts["flips"] = counts.get("flips", 0) + 1
                await call.write(pb.HealthReport(site=site, region=region, kind=kind, status=status,
                                                 capacity=1000, load=500 + rng.uniform(-10, 10), sequence=seq,
                                                 agent_id=f"bench-{site}"))
                await call.read()
                if start <= time.monotonic() < until:
                    counts["acks"] += 1
                due += interval  # on a fixed beat, so the offered rate really is one report per interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            counts["all_errors"] = counts.get("all_errors", 0) + 1
            if start <= time.monotonic() < until:
                counts["errors"] += 1
                code = f"error:{exc.code().name}:{(exc.details() or '')[:60]}"
                counts[code] = counts.get(code, 0) + 1
            if counts["all_errors"] <= 3:
                print(f"stream error {site} at {until - time.monotonic():.1f}s before the end: {exc.code().name} "
                      f"{exc.details()}", file=sys.stderr)
            await asyncio.sleep(0.5 + rng.random() * 0.5)


async def worker(index: int, nworkers: int, sites: int, interval: float, port: int, seconds: float,
                 start: float) -> None:
    """One load process: agents index, index + nworkers, ...; prints the acks and errors of the window
    [start, start + seconds) (system-wide monotonic clock) as JSON."""
    mine = range(index, sites, nworkers)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(max(1, len(mine) // 100))]
    counts = {"acks": 0, "errors": 0}
    rng = random.Random(index)
    window = (start, start + seconds)
    stubs = [pb_grpc.HealthServiceStub(ch) for ch in channels]  # type: ignore[no-untyped-call]
    tasks = [asyncio.create_task(agent(stubs[n % len(stubs)], f"s{i:05d}",
                                       REGIONS[i % 3], pb.SITE_KIND_CACHE, interval, window, counts, rng))
             for n, i in enumerate(mine)]
    if index == 0:  # the regions report too, or the planner (rightly) calls them silent and fails open
        tasks += [asyncio.create_task(agent(stubs[0], r, r, pb.SITE_KIND_REGION,
                                            interval, window, {"acks": 0, "errors": 0}, rng)) for r in REGIONS]
    await asyncio.gather(*tasks)
    for ch in channels:
        await ch.close()
    print(json.dumps({"acks": counts["acks"], "errors": counts["errors"], "all_errors": counts.get("all_errors", 0),
                      "flips": counts.get("flips", 0),
                      "codes": {k: v for k, v in counts.items() if k.startswith("error:")}}))


async def main(sites: int, seconds: float, interval: float, nworkers: int) -> int:
    root = Path(tempfile.mkdtemp(prefix="steering-ingest-"))
    etcd = EtcdCluster.create(1, root=root / "etcd").start()
    cfg_path = root / "steering.yaml"
    cfg_path.write_text(yaml.safe_dump(topology(sites, etcd.endpoints, root)))
    api, metrics = free_port(), free_port()
    env = {**os.environ, "STEERING_LOG_LEVEL": "warning"}
    with open(root / "controller.log", "wb") as log:  # the child keeps its own copy of the descriptor
        ctl = subprocess.Popen([str(Path(sys.executable).parent / "steering"), "controller",
                                "--config", str(cfg_path), "--listen", f"127.0.0.1:{api}",
                                "--metrics-addr", f"127.0.0.1:{metrics}", "--id", "bench"],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(metrics, "steering_leader")
                break
            except OSError:
                if time.monotonic() > deadline or ctl.poll() is not None:
                    print(f"controller did not start; log: {root / 'controller.log'}", file=sys.stderr)
                    return 1
                await asyncio.sleep(0.2)
        warmup = float(os.environ.get("INGEST_WARMUP", min(25.0, seconds / 2)))
        # The window, on the monotonic clock every process shares: after the processes' start-up (a few
        # seconds on a busy machine) and the warm-up (first reports of every site are real changes).
        start = time.monotonic() + STARTUP + warmup
        # The simulated agents run in worker processes, so the load generator is not one Python core.
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", str(w), "--workers", str(nworkers),
                                     "--sites", str(sites), "--interval", str(interval), "--port", str(api),
                                     "--seconds", str(seconds), "--start", repr(start)],
                                    stdout=subprocess.PIPE, text=True) for w in range(nworkers)]
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        writes0, cpu0, t0 = scrape(metrics, "steering_etcd_writes_total"), cpu_seconds(ctl.pid), time.monotonic()
        kinds0 = scrape(metrics, "steering_etcd_writes_total", by_label=True)
        requests0 = scrape(metrics, "steering_etcd_write_requests_total")
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        writes, cpu = scrape(metrics, "steering_etcd_writes_total") - writes0, cpu_seconds(ctl.pid) - cpu0
        dt = time.monotonic() - t0
        kinds = {k: v - kinds0.get(k, 0.0) for k, v in scrape(metrics, "steering_etcd_writes_total", True).items()}
        requests = scrape(metrics, "steering_etcd_write_requests_total") - requests0
        lag = t0 - start  # how late the parent sampled the window's start (it was busy too)
        while any(w.poll() is None for w in workers):
            await asyncio.sleep(0.2)
        acks = errors = flips = all_errors = 0
        codes: dict[str, int] = {}
        for w in workers:
            out = json.loads((w.stdout.read() if w.stdout else "").strip().splitlines()[-1])
            acks += out["acks"]
            errors += out["errors"]
            all_errors += out["all_errors"]
            flips += out["flips"]
            for k, v in out["codes"].items():
                codes[k] = codes.get(k, 0) + v
        counts = {"errors": errors}
        print(f"sites={sites} interval={interval}s measured={dt:.1f}s (after {warmup:.0f}s warm-up; window "
              f"sampled {lag * 1e3:.0f} ms late)")
        print(f"reports/s sustained: {acks / dt:,.0f} (offered {sites / interval:,.0f}/s)")
        print(f"etcd writes/s: {writes / dt:.1f} (goal < 100/s at steady state); by kind: "
              + ", ".join(f"{k.split('=')[-1].strip('}').strip(chr(34))} {v / dt:.1f}/s" for k, v in sorted(kinds.items()))
              + f"; in {requests / dt:.1f} write requests/s")
        print(f"status changes sent by the agents: {flips / (dt + warmup):.1f}/s")
        print(f"controller CPU: {cpu / dt:.2f} cores ({cpu / max(acks, 1) * 1e6:.0f} µs per report)")
        print(f"stream errors (each followed by a reconnect): {counts['errors']}  "
              f"(load from {nworkers} processes on the same 2 cores) {codes}; {all_errors} including the "
              "warm-up and the end")
        return 0
    finally:
        if os.environ.get("INGEST_KEY_VERSIONS"):
            out = subprocess.run([str(Path(sys.executable).parent / "etcdctl"), "--endpoints", etcd.endpoints[0],
                                  "get", "--prefix", "/bench/health/", "-w", "json"], capture_output=True, text=True)
            kvs = json.loads(out.stdout).get("kvs", [])
            versions = sorted((kv.get("version", 0) for kv in kvs), reverse=True)
            print(f"health keys: {len(kvs)}; writes per key, top: {versions[:10]}; total {sum(versions)}")
        ctl.terminate()
        try:
            ctl.wait(10)
        except subprocess.TimeoutExpired:
            ctl.kill()
        etcd.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2, help="load-generating processes")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        asyncio.run(worker(a.worker, a.workers, a.sites, a.interval, a.port, a.seconds, a.start))
        sys.exit(0)
    sys.exit(asyncio.run(main(a.sites, a.seconds, a.interval, a.workers)))
