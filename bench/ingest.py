"""Ingest at scale: N simulated agents stream reports every second to one controller process.

Starts a real etcd and one `steering controller` process (with --metrics-addr)
on loopback, with a synthetic topology of N cache sites, then N Report
streams from load processes (``--workers``), ``--per-connection`` streams to
an HTTP/2 connection, each reporting once per interval for a bounded time.
Load jitters inside the controller's report band, as steady traffic does, and
a small share of sites flip status now and then.

The load is ``ingest_h2``: gRPC over HTTP/2 written for this bench, because
grpc.aio clients cost ~190 µs of CPU per report, as much as the controller
they measure. Streams open at ``--open-rate`` per second (a Python gRPC
server accepts new calls one at a time on its event loop, and grpc core
cancels the calls that wait too long for it: the CANCELLED errors of the
earlier generator, which started thousands of streams within one second).

The measurement window is one interval of the system-wide monotonic clock,
fixed by the parent before the load processes start (after their start-up,
the ramp of stream opens and a warm-up): the processes count only the reports
sent, the acks and the stream errors inside it and their own CPU time, and
the parent samples the controller's CPU (/proc) and counters at its two ends,
so every figure covers the same seconds. Prints reports/s offered, sent and
acknowledged, stream errors by kind (grpc-status of the trailers, RST_STREAM,
ack timeouts), etcd writes/s, the controller's CPU per report and the load
generator's own CPU.

The controller takes the streams on its ingest listener (``--ingest-addr``: gRPC over HTTP/2 spoken
with h2, without grpc core), or with ``--listener grpc`` on its gRPC listener (grpc.aio), for the
comparison.

Usage: python bench/ingest.py [--sites 5000] [--seconds 30] [--interval 1.0] [--per-connection 100]
                              [--listener ingest|grpc]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steering.etcdproc import EtcdCluster  # noqa: E402
from steering.v1 import steering_pb2 as pb  # noqa: E402
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


def worker(index: int, nworkers: int, sites: int, interval: float, port: int, seconds: float, start: float,
           first: float, per_connection: int, open_rate: float) -> None:
    """One load process: agents index, index + nworkers, ...; prints what it saw in the window
    [start, start + seconds) (system-wide monotonic clock) as JSON."""
    import uvloop

    from bench.ingest_h2 import Agent, Counts, Load

    agents = [Agent(site=f"s{i:05d}", region=REGIONS[i % 3], kind=pb.SITE_KIND_CACHE)
              for i in range(index, sites, nworkers)]
    if index == 0:  # the regions report too, or the planner (rightly) calls them silent and fails open
        agents = [Agent(site=r, region=r, kind=pb.SITE_KIND_REGION) for r in REGIONS] + agents
    counts = Counts(start=start, until=start + seconds)
    load = Load("127.0.0.1", port, agents, interval=interval, connections=-(-len(agents) // per_connection),
                open_rate=open_rate / nworkers, counts=counts, flip=FLIP, rng=random.Random(index))
    uvloop.run(load.run(first))
    print(json.dumps({"acks": counts.acks, "sent": counts.sent, "blocked": counts.blocked,
                      "no_stream": counts.no_stream, "errors": counts.errors, "all_errors": counts.all_errors,
                      "flips": counts.flips, "late_max": counts.late_max, "connections": len(load.conns),
                      "cpu": (counts.cpu1 or 0.0) - (counts.cpu0 or 0.0)}))


async def main(sites: int, seconds: float, interval: float, nworkers: int, per_connection: int,
               open_rate: float, listener: str = "ingest") -> int:
    root = Path(tempfile.mkdtemp(prefix="steering-ingest-"))
    done = False
    etcd = EtcdCluster.create(1, root=root / "etcd").start()
    cfg_path = root / "steering.yaml"
    cfg_path.write_text(yaml.safe_dump(topology(sites, etcd.endpoints, root)))
    api, metrics, ingest = free_port(), free_port(), free_port()
    target = ingest if listener == "ingest" else api
    env = {**os.environ, "STEERING_LOG_LEVEL": "warning"}
    with open(root / "controller.log", "wb") as log:  # the child keeps its own copy of the descriptor
        ctl = subprocess.Popen([str(Path(sys.executable).parent / "steering"), "controller",
                                "--config", str(cfg_path), "--listen", f"127.0.0.1:{api}",
                                "--metrics-addr", f"127.0.0.1:{metrics}", "--id", "bench",
                                *(["--ingest-addr", f"127.0.0.1:{ingest}"] if listener == "ingest" else [])],
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
        ramp = (sites + len(REGIONS)) / open_rate  # every stream open, at the bounded rate
        warmup = float(os.environ.get("INGEST_WARMUP", min(25.0, seconds / 2))) + ramp
        # The window, on the monotonic clock every process shares: after the processes' start-up (a few
        # seconds on a busy machine), the streams' ramp and the warm-up (first reports of every site are
        # real changes).
        first = time.monotonic() + STARTUP
        start = first + warmup
        load0 = os.getloadavg()[0]
        # The simulated agents run in worker processes, so the load generator is not one Python core.
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", str(w), "--workers", str(nworkers),
                                     "--sites", str(sites), "--interval", str(interval), "--port", str(target),
                                     "--seconds", str(seconds), "--start", repr(start), "--first", repr(first),
                                     "--per-connection", str(per_connection), "--open-rate", str(open_rate)],
                                    stdout=subprocess.PIPE, text=True) for w in range(nworkers)]
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        writes0, cpu0, t0 = scrape(metrics, "steering_etcd_writes_total"), cpu_seconds(ctl.pid), time.monotonic()
        kinds0 = scrape(metrics, "steering_etcd_writes_total", by_label=True)
        requests0 = scrape(metrics, "steering_etcd_write_requests_total")
        rejected0 = scrape(metrics, "steering_reports_rejected_total")
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        writes, cpu = scrape(metrics, "steering_etcd_writes_total") - writes0, cpu_seconds(ctl.pid) - cpu0
        dt = time.monotonic() - t0
        kinds = {k: v - kinds0.get(k, 0.0) for k, v in scrape(metrics, "steering_etcd_writes_total", True).items()}
        requests = scrape(metrics, "steering_etcd_write_requests_total") - requests0
        rejected = scrape(metrics, "steering_reports_rejected_total") - rejected0
        load1 = os.getloadavg()[0]
        lag = t0 - start  # how late the parent sampled the window's start (it was busy too)
        while any(w.poll() is None for w in workers):
            await asyncio.sleep(0.2)
        total: dict[str, Any] = {"acks": 0, "sent": 0, "blocked": 0, "no_stream": 0, "all_errors": 0, "flips": 0,
                                 "connections": 0, "cpu": 0.0}
        errors: dict[str, int] = {}
        late = 0.0
        for w in workers:
            lines = (w.stdout.read() if w.stdout else "").strip().splitlines()
            if w.returncode != 0 or not lines:
                print(f"a load process failed (exit {w.returncode}); its error is above", file=sys.stderr)
                return 1
            out = json.loads(lines[-1])
            for k in total:
                total[k] += out[k]
            for k, v in out["errors"].items():
                errors[k] = errors.get(k, 0) + v
            late = max(late, out["late_max"])
        acks = total["acks"]
        print(f"listener: {listener} ({'gRPC over HTTP/2 with h2, --ingest-addr' if listener == 'ingest' else 'grpc.aio'})")
        print(f"sites={sites} interval={interval}s measured={dt:.1f}s (after {STARTUP:.0f}s start-up, "
              f"{warmup:.0f}s warm-up with a {ramp:.0f}s ramp of stream opens; window sampled "
              f"{lag * 1e3:.0f} ms late); load average {load0:.1f} -> {load1:.1f}")
        print(f"reports/s sustained: {acks / dt:,.0f} (offered {sites / interval:,.0f}/s; sent "
              f"{total['sent'] / dt:,.0f}/s; over {total['connections']} HTTP/2 connections from {nworkers} "
              f"processes)")
        print(f"etcd writes/s: {writes / dt:.1f} (goal < 100/s at steady state); by kind: "
              + ", ".join(f"{k.split('=')[-1].strip('}').strip(chr(34))} {v / dt:.1f}/s" for k, v in sorted(kinds.items()))
              + f"; in {requests / dt:.1f} write requests/s")
        print(f"status changes sent by the agents: {total['flips'] / (dt + warmup):.1f}/s")
        print(f"controller CPU: {cpu / dt:.2f} cores ({cpu / max(acks, 1) * 1e6:.0f} µs per report)")
        print(f"load generator CPU: {total['cpu'] / dt:.2f} cores ({total['cpu'] / max(total['sent'], 1) * 1e6:.0f} µs "
              f"per report sent); latest beat {late * 1e3:.0f} ms behind its time")
        print(f"stream errors (each followed by a reconnect): {sum(errors.values())} "
              f"{dict(sorted(errors.items()))}; {total['all_errors']} including the warm-up and the end; "
              f"reports not sent: {total['no_stream']} (no stream), {total['blocked']} (flow control); "
              f"rejected by the controller: {rejected:.0f}")
        done = True
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
        if done:  # etcd's data is ~60 MB a run; a failed run keeps it with the controller's log
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2, help="load-generating processes")
    ap.add_argument("--per-connection", type=int, default=100,
                    help="agents' streams per HTTP/2 connection (an agent has one connection of its own: 1)")
    ap.add_argument("--open-rate", type=float, default=500.0, help="streams opened per second at the start")
    ap.add_argument("--listener", choices=("ingest", "grpc"), default="ingest",
                    help="the controller's ingest listener (default) or its gRPC listener")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--first", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        worker(a.worker, a.workers, a.sites, a.interval, a.port, a.seconds, a.start, a.first, a.per_connection,
               a.open_rate)
        sys.exit(0)
    sys.exit(asyncio.run(main(a.sites, a.seconds, a.interval, a.workers, a.per_connection, a.open_rate,
                              a.listener)))
