"""Memory at scale: the controller's and the DNS server's resident memory under reports from 10,000 sites.

    .venv/bin/python bench/memory.py [--minutes 20] [--sites 10000] [--interval 8] [--flips-per-minute 6]

Starts a real etcd, one ``steering controller`` and one ``steering dns``
(the shipped commands; the DNS server follows the tables in etcd, with its
two worker processes unless ``--dns-workers``) on loopback. The topology
(``--topology ingest``, the default) is ``bench/ingest.py``'s, 10,000 sites
in 3 regions (``--sites``), with 25 geos that share the sites out as their
preferred ones and a second service answering for every site, so the DNS
server holds and renders an answer per site. ``--topology planner`` is
``bench/planner.py``'s (250 geos, 20 services, 20 regions): there the
controller, planning and publishing far bigger tables, took 80-240 reports/s
of 2,000 offered while the streams opened (a 90 s run): no steady state.
Then every site reports over the ingest bench's load (``bench/ingest_h2``:
gRPC over HTTP/2, ``--workers`` processes, 100 streams a connection), each
site once per ``--interval`` seconds, to the controller's ingest listener
(``--listener grpc``: its gRPC listener, as before the ingest listener; the
figures below are that listener's). The controller here sustains about
2,000-2,500 reports/s of sites already connected, not 10,000 sites at 1 Hz;
but 10,000 streams opening at once cost it more (each first report is a
change, and tables follow): at one report every 5 s (2,000/s) it had not
taken all the streams after 2 minutes (CANCELLED calls and ack timeouts fed
reconnects), so the default is one every 8 s (1,250/s), the streams
opening at 100/s, with which all 10,000 are connected in about 7 minutes
on the shared machine and the reports then acked as offered. Now and then
a site flips health (``--flips-per-minute`` over all sites), so the leader plans and publishes
new tables and the DNS server renders them.

Every 10 s it samples VmRSS and VmHWM (/proc/PID/status) of the controller
and of every process of the DNS server (the supervisor and its workers;
the sum is printed, and PSS from smaps_rollup, which does not count the
pages the workers share twice), with the reports/s the controller counted,
the tables it published and the table version the DNS server serves. At
the end: resident memory at half time (10 min by default) and at the end
(20 min), the growth between them, and the least-squares slope over the
second half in MiB per 10 minutes. The clock starts when the load starts.
It asserts nothing.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import ingest, planner  # noqa: E402
from steering.etcdproc import EtcdCluster  # noqa: E402
from steering.v1 import steering_pb2 as pb  # noqa: E402
from tests.support import free_port  # noqa: E402

PLANNER_REGIONS = [f"region-{i:02d}" for i in range(20)]  # as planner.build(20) names them
SAMPLE = 10.0  # seconds between samples
STARTUP = 8.0  # seconds for the load processes to start before their first stream opens
GEOS = 25  # of the ingest topology


def topology(kind: str, sites: int, etcd: list[str]) -> dict[str, Any]:
    """``ingest``: bench/ingest.py's topology (3 regions, a service answering for the regions) with
    25 geos, each preferring 1/25 of the sites, and a second service answering for every site, so the DNS server holds an answer per site; ``planner``: the
    planner bench's (20 regions, 250 geos, 20 services, half of them answering for every site), sites scaled."""
    if kind == "ingest":
        data = ingest.topology(sites, etcd, Path())
        regions = ingest.REGIONS
        # geos that split the sites between them, so that every site is some geo's preferred target
        data["geos"] = [{"id": f"geo-{g:02d}", "default": g == 0, "demand": 1, "prefixes": [f"10.{g}.0.0/16"],
                         "prefer": regions[g % 3:] + regions[:g % 3],
                         "prefer_sites": [f"s{i:05d}" for i in range(g, sites, GEOS)]} for g in range(GEOS)]
        data["services"].append({"name": "sites.bench.test.", "targets": "sites",
                                 "answers": {f"s{i:05d}": {"A": [f"198.18.{i // 250}.{i % 250 + 1}"]}
                                             for i in range(sites)}})
        return data
    planner.SITES = sites
    data, _ = planner.build(len(PLANNER_REGIONS))
    data["policy"].update({"silence_seconds": 15, "step_seconds": 5, "report_band": 0.05})
    data["etcd"] = {"endpoints": etcd, "prefix": "/bench"}
    return data


def names(kind: str) -> tuple[list[str], Callable[[int], str], str]:
    """The topology's regions, the region of site i, and the format of site ids."""
    if kind == "ingest":
        return ingest.REGIONS, lambda i: ingest.REGIONS[i % 3], "s{:05d}"
    return PLANNER_REGIONS, lambda i: PLANNER_REGIONS[i % len(PLANNER_REGIONS)], "site-{:05d}"


def report(agent: Any, rng: random.Random, flip: float, counts: Any, site_capacity: int,
           region_capacity: int) -> bytes:
    """A report inside the report band (no change) but for a rare health flip of a site."""
    if agent.kind == pb.SITE_KIND_CACHE:
        if rng.random() < flip:
            agent.status = (pb.HEALTH_STATUS_UNHEALTHY if agent.status == pb.HEALTH_STATUS_HEALTHY
                            else pb.HEALTH_STATUS_HEALTHY)
            counts.flips += 1
        capacity, load = site_capacity, site_capacity * (0.5 + rng.uniform(-0.01, 0.01))
    else:
        capacity, load = region_capacity, region_capacity * (0.6 + rng.uniform(-0.01, 0.01))
    return pb.HealthReport(site=agent.site, region=agent.region, kind=agent.kind, status=agent.status,
                           capacity=capacity, load=load, sequence=agent.sequence,
                           agent_id=f"bench-{agent.site}").SerializeToString()


def worker(kind: str, index: int, nworkers: int, sites: int, interval: float, port: int, first: float,
           until: float, flip: float, open_rate: float) -> None:
    """One load process: sites index, index + nworkers, ...; prints its counts over the whole run as JSON."""
    import uvloop

    from bench.ingest_h2 import Agent, Counts, Load

    regions, region_of, site_id = names(kind)
    agents = [Agent(site=site_id.format(i), region=region_of(i), kind=pb.SITE_KIND_CACHE)
              for i in range(index, sites, nworkers)]
    if index == 0:  # the regions report too, or the planner calls them silent and fails open
        agents = [Agent(site=r, region=r, kind=pb.SITE_KIND_REGION) for r in regions] + agents
    capacities = (1000, 100_000) if kind == "ingest" else (400, 50_000)  # as each topology configures them
    counts = Counts(start=first, until=until)
    rng = random.Random(index)
    load = Load("127.0.0.1", port, agents, interval=interval, connections=-(-len(agents) // 100),
                open_rate=open_rate / nworkers, counts=counts, flip=0.0, rng=rng,
                make_report=lambda agent, r: report(agent, r, flip, counts, *capacities))
    uvloop.run(load.run(first))
    print(json.dumps({"acks": counts.acks, "sent": counts.sent, "errors": counts.errors, "flips": counts.flips,
                      "no_stream": counts.no_stream, "blocked": counts.blocked,
                      "cpu": (counts.cpu1 or 0.0) - (counts.cpu0 or 0.0)}))


# ------------------------------------------------------------------ sampling


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of one process, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def family(pid: int) -> list[int]:
    """The process and its descendants (the DNS supervisor's workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def memory(pid: int) -> dict[str, Any]:
    """RSS, HWM and PSS (MiB) summed over the process's family, and RSS per process."""
    rss = hwm = pss = 0
    per: dict[int, float] = {}
    for p in family(pid):
        try:
            s = status_kib(p)
            q = pss_kib(p)
        except OSError:  # a worker that just ended
            continue
        rss += s.get("VmRSS", 0)
        hwm += s.get("VmHWM", 0)
        pss += q
        per[p] = s.get("VmRSS", 0) / 1024
    return {"rss": rss / 1024, "hwm": hwm / 1024, "pss": pss / 1024, "per": per}


def scrape(port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


def metric(text: str, name: str, agg: str = "sum") -> float | None:
    values = [float(m.group(2)) for m in re.finditer(rf"(?m)^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text)]
    if not values:
        return None
    return max(values) if agg == "max" else sum(values)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per 10 minutes."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (v - my) for t, v in points) / den * 600 if den else float("nan")


def ver(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}"


def at(samples: list[dict[str, Any]], t: float) -> dict[str, Any]:
    return min(samples, key=lambda s: abs(s["t"] - t))


# ------------------------------------------------------------------ the run


def wait_metrics(port: int, proc: subprocess.Popen[bytes], what: str, log: Path, deadline: float) -> None:
    while True:
        try:
            scrape(port)
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{what} did not start; log: {log}") from None
            time.sleep(0.3)


def run(kind: str, minutes: float, sites: int, interval: float, flips_per_minute: float, nworkers: int,
        dns_workers: int, open_rate: float, listener: str = "ingest") -> int:
    root = Path(tempfile.mkdtemp(prefix="steering-memory-"))
    done = False
    procs: list[subprocess.Popen[Any]] = []
    etcd = EtcdCluster.create(1, root=root / "etcd").start()
    try:
        cfg_path = root / "steering.yaml"
        cfg_path.write_text(yaml.safe_dump(topology(kind, sites, etcd.endpoints)))
        api, cmetrics, dport, dmetrics, ingest_port = free_port(), free_port(), free_port(), free_port(), free_port()
        target = ingest_port if listener == "ingest" else api
        steering = str(Path(sys.executable).parent / "steering")
        env = {**os.environ, "STEERING_LOG_LEVEL": "warning"}
        with open(root / "controller.log", "wb") as log:  # the child keeps its own copy of the descriptor
            ctl = subprocess.Popen([steering, "controller", "--config", str(cfg_path), "--listen", f"127.0.0.1:{api}",
                                    "--metrics-addr", f"127.0.0.1:{cmetrics}", "--id", "bench",
                                    *(["--ingest-addr", f"127.0.0.1:{ingest_port}"] if listener == "ingest" else [])],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        procs.append(ctl)
        with open(root / "dns.log", "wb") as log:
            dns = subprocess.Popen([steering, "dns", "--config", str(cfg_path), "--listen", f"127.0.0.1:{dport}",
                                    "--metrics-addr", f"127.0.0.1:{dmetrics}", "--workers", str(dns_workers)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        procs.append(dns)
        deadline = time.monotonic() + 120  # the config's validation at this scale takes seconds under load
        wait_metrics(cmetrics, ctl, "the controller", root / "controller.log", deadline)
        wait_metrics(dmetrics, dns, "steering dns", root / "dns.log", deadline)
        before = {"controller": memory(ctl.pid), "dns": memory(dns.pid)}
        offered = sites / interval
        # the chance per report that its site flips, for flips_per_minute over all sites
        flip = min(1.0, flips_per_minute / 60 / offered)
        first = time.monotonic() + STARTUP
        until = first + minutes * 60
        load0 = os.getloadavg()
        shape = ("bench/ingest.py's: 3 regions, 25 geos, a service for the regions and one for every site"
                 if kind == "ingest" else f"bench/planner.py's: 20 regions, {planner.GEOS} geos, {planner.SERVICES} "
                 "services")
        print(f"{sites} sites, topology {shape}; each site reports every {interval:g} s "
              f"({offered:,.0f} reports/s offered) to the controller's {listener} listener, "
              f"~{flips_per_minute:g} health flips a minute; "
              f"DNS server with {dns_workers} worker(s); {minutes:g} min; load average "
              f"{' '.join(f'{x:.2f}' for x in load0)}", flush=True)
        print(f"before the load: controller RSS {before['controller']['rss']:.1f} MiB; DNS RSS "
              f"{before['dns']['rss']:.1f} MiB over {len(before['dns']['per'])} processes", flush=True)
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", str(w), "--workers", str(nworkers),
                                     "--topology", kind, "--sites", str(sites), "--interval", str(interval), "--port", str(target),
                                     "--first", repr(first), "--until", repr(until), "--flip", repr(flip), "--open-rate", repr(open_rate)],
                                    stdout=subprocess.PIPE, text=True) for w in range(nworkers)]
        procs += workers
        samples: list[dict[str, Any]] = []
        prev: tuple[float, float, float] | None = None
        print(f"{'t (s)':>6} {'ctl RSS':>8} {'ctl HWM':>8} {'dns RSS':>8} {'dns PSS':>8} {'dns HWM':>8} "
              f"{'per DNS process (RSS MiB)':<26} {'rep/s':>6} {'ctl CPU':>7} {'agents':>6} {'tables':>6} {'ctl ver':>7} {'dns ver':>7} "
              f"{'load':>5}", flush=True)
        tick = first
        while tick <= until + 0.5:
            time.sleep(max(0.0, tick - time.monotonic()))
            now = time.monotonic()
            c, d = memory(ctl.pid), memory(dns.pid)
            try:
                ctext, dtext = scrape(cmetrics), scrape(dmetrics)
            except OSError:
                ctext = dtext = ""
            received = metric(ctext, "steering_reports_received_total") or 0.0
            cpu = ingest.cpu_seconds(ctl.pid)
            rate = (received - prev[1]) / (now - prev[0]) if prev and ctext else 0.0
            cores = (cpu - prev[2]) / (now - prev[0]) if prev else 0.0
            if ctext:  # a scrape the controller did not answer in time leaves the rate for the next sample
                prev = (now, received, cpu)
            s: dict[str, Any] = {"t": now - first, "ctl": c, "dns": d, "rate": rate, "cores": cores,
                 "agents": metric(ctext, "steering_connected_agents") or 0,
                 "tables": metric(ctext, "steering_tables_published_total") or 0,
                 "dns_version": metric(dtext, "steering_dns_table_version", "max"),
                 "version": metric(ctext, "steering_table_version", "max")}
            samples.append(s)
            per = "/".join(f"{v:.0f}" for _, v in sorted(d["per"].items()))
            print(f"{s['t']:6.0f} {c['rss']:8.1f} {c['hwm']:8.1f} {d['rss']:8.1f} {d['pss']:8.1f} {d['hwm']:8.1f} "
                  f"{per:<26} {rate:6.0f} {cores:7.2f} {s['agents']:6.0f} {s['tables']:6.0f} {ver(s['version']):>7} {ver(s['dns_version']):>7} "
                  f"{os.getloadavg()[0]:5.2f}", flush=True)
            if ctl.poll() is not None or dns.poll() is not None:
                print(f"a server ended early; logs in {root}", file=sys.stderr)
                return 1
            tick += SAMPLE
        outs = []
        for w in workers:
            text = w.communicate(timeout=60)[0] or ""
            lines = text.strip().splitlines()
            if w.returncode != 0 or not lines:
                print(f"a load process failed (exit {w.returncode}); its error is above", file=sys.stderr)
                return 1
            outs.append(json.loads(lines[-1]))
        load1 = os.getloadavg()
        half, end = minutes * 30, minutes * 60
        h, e = at(samples, half), at(samples, end)
        acks = sum(o["acks"] for o in outs)
        errors: dict[str, int] = {}
        for o in outs:
            for k, v in o["errors"].items():
                errors[k] = errors.get(k, 0) + v
        second = [s for s in samples if s["t"] >= half - 1]
        print()
        print(f"load: {acks / e['t']:,.0f} reports/s acknowledged on average of {offered:,.0f} offered; "
              f"{sum(o['flips'] for o in outs)} health flips sent; {e['tables']:.0f} tables published "
              f"(the last version {ver(e['version'])}, the DNS server serving {ver(e['dns_version'])}); "
              f"stream errors {sum(errors.values())} "
              f"{dict(sorted(errors.items()))}; load generator {sum(o['cpu'] for o in outs) / e['t']:.2f} cores")
        print(f"load average {' '.join(f'{x:.2f}' for x in load0)} -> {' '.join(f'{x:.2f}' for x in load1)}")
        for key, name in (("ctl", "controller"), ("dns", f"DNS server ({len(e['dns']['per'])} processes, summed)")):
            print(f"{name}: RSS at {h['t'] / 60:.1f} min {h[key]['rss']:.1f} MiB, at {e['t'] / 60:.1f} min "
                  f"{e[key]['rss']:.1f} MiB, growth {e[key]['rss'] - h[key]['rss']:+.1f} MiB; slope over the second "
                  f"half {slope([(s['t'], s[key]['rss']) for s in second]):+.2f} MiB per 10 min; "
                  f"HWM at the end {e[key]['hwm']:.1f} MiB")
            if key == "dns":
                print(f"DNS server PSS (shared pages counted once): at {h['t'] / 60:.1f} min {h[key]['pss']:.1f} MiB, "
                      f"at {e['t'] / 60:.1f} min {e[key]['pss']:.1f} MiB, growth "
                      f"{e[key]['pss'] - h[key]['pss']:+.1f} MiB; slope over the second half "
                      f"{slope([(s['t'], s[key]['pss']) for s in second]):+.2f} MiB per 10 min")
        done = True
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        etcd.close()
        if done:  # etcd's data; a failed run keeps it with the servers' logs
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="minutes of reports; figures at half and at the end")
    ap.add_argument("--sites", type=int, default=10_000)
    ap.add_argument("--topology", choices=("ingest", "planner"), default="ingest",
                    help="ingest: bench/ingest.py's, a service per site added; planner: bench/planner.py's")
    ap.add_argument("--interval", type=float, default=8.0, help="seconds between one site's reports")
    ap.add_argument("--flips-per-minute", type=float, default=6.0, help="site health flips a minute, all sites")
    ap.add_argument("--workers", type=int, default=2, help="load-generating processes")
    ap.add_argument("--dns-workers", type=int, default=2, help="steering dns --workers (2: this machine's CPUs)")
    ap.add_argument("--open-rate", type=float, default=100.0,
                    help="streams opened per second at the start (faster, and the controller's gRPC core "
                         "cancels the calls it cannot take in time: see bench/ingest.py)")
    ap.add_argument("--listener", choices=("ingest", "grpc"), default="ingest",
                    help="where the agents report: the controller's ingest listener (default) or its gRPC one")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--first", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--until", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--flip", type=float, default=0.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        worker(a.topology, a.worker, a.workers, a.sites, a.interval, a.port, a.first, a.until, a.flip, a.open_rate)
        return
    if a.minutes <= 0 or a.sites < 1 or a.interval <= 0:
        ap.error("--minutes, --sites and --interval must be positive")
    sys.exit(run(a.topology, a.minutes, a.sites, a.interval, a.flips_per_minute, a.workers, a.dns_workers, a.open_rate,
                 a.listener))


if __name__ == "__main__":
    main()
