"""DNS speed, per core: our server vs knot on the same machine, loopback only.

    .venv/bin/python bench/dns_vs_knot.py [--seconds 8] [--repeat 3] [--subnets 250000] [--servers ours,knot]
                                          [--dnssec]

Method (docs/dependencies.md, "DNS speed"): each server is pinned to core 0 and
shares it with a busy loop, so the server, not the load generator, is the
bottleneck; dnsperf runs on core 1. The server's CPU time (utime + stime
from /proc) divided by the queries answered is its cost per query; 1e6 / that
is its queries per second per core. knot serves an equivalent static zone
(the steered name as plain A records); ours serves it steered: weighted
split, geo lookup, metrics on, and as shipped: response rate limiting, DNS
cookies and NSID on. The load source (127.0.0.0/8) is on the RRL exempt list,
which is consulted only for a reply that is already over its limit, so every
query still pays the per-query RRL accounting. Three loads:

* ``plain``: dnsperf repeating one query without EDNS;
* ``ecs``: the same query with one fixed ECS option (dnsperf ``-E``);
* ``subnets``: ``--subnets`` queries, each with a different ECS subnet
  (dnsperf ``-B`` reading wire-format queries we generate): mostly /24s
  across the IPv4 space, some inside the configured geo prefixes (IPv4 /24
  and /26, IPv6 /56), so nothing keyed on the query bytes can repeat.

``--dnssec`` adds ``ours+dnssec`` (example.test signed with a combined ECDSA P-256 key, docs/dnssec.md)
and ``knot+dnssec`` (knot signing the zone with its default policy), every query with the DO bit (dnsperf
``-D``, or in the generated OPTs), and prints ours signed / ours unsigned per core (issue 17's goal: at
least 0.80) and ours / knot with both signed.

``--workers`` (default on) then runs ours unpinned with ``--workers 1`` and
``--workers 2`` under the ``subnets`` load and reports, for each, the CPU per
answered query summed over the worker processes, and each worker's share of
the queries (from the supervisor's ``steering_dns_worker_queries_total``).

Each run is repeated ``--repeat`` times (ours and knot alternate within a
round); the table gives the median and the spread (min-max), and the load
average before each round is printed, because other work on the machine
moves these figures.

Installs Debian ``dnsperf`` and ``knot`` on demand (apt-get). Every run is
bounded by ``--seconds``; every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# this file is named dns.py: keep its folder off the path so ``import dns`` finds dnspython
sys.path.insert(0, str(ROOT))

from dnsserver.persist import save_table  # noqa: E402
from steering.config import load_config  # noqa: E402
from tests.support import free_port, stop_process  # noqa: E402
from tests.support.dns_server import table_with, write_config  # noqa: E402
from tests.support.dnssec import signed_config  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
ECS_OPTION = "8:00011800c63364"  # ECS 198.51.100.0/24: family 1, source 24, scope 0
WEIGHTS = {"api.example.test.": {g: {"us-east-1": 600, "us-west-2": 300, "eu-west-1": 100}
                                 for g in ("na-east", "na-west", "europe", "south-america", "asia-pacific", "world")}}


def ensure_tools() -> None:
    if shutil.which("dnsperf") and (shutil.which("knotd") or Path("/usr/sbin/knotd").exists()):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "dnsperf", "knot"], check=True, env=env)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime (all threads)


def wait_udp(port: int, deadline: float) -> None:
    import dns.message
    import dns.query

    q = dns.message.make_query("api.example.test", "A")
    while time.monotonic() < deadline:
        try:
            dns.query.udp(q, "127.0.0.1", port=port, timeout=0.3)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer")



def subnet_queries(path: Path, count: int, qname: str = "api.example.test", do: bool = False) -> None:
    """``count`` A queries for ``qname`` with distinct ECS subnets, in dnsperf's -B format (length-prefixed);
    ``do``: with the DNSSEC OK bit."""
    rnd = random.Random(7)
    name = b"".join(bytes((len(p),)) + p.encode() for p in qname.split(".")) + b"\x00"
    head = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 1) + name + struct.pack("!HH", 1, 1)
    geo4 = [ipaddress.ip_network(f"127.{i}.0.0/16") for i in range(1, 6)]
    geo6 = [ipaddress.ip_network(f"2001:db8:{i}::/48") for i in range(1, 6)]
    seen: set[tuple[int, bytes]] = set()
    out = bytearray()
    while len(seen) < count:
        roll = rnd.random()
        if roll < 0.70:  # anywhere: the default geo
            family, src = 1, 24
            addr = bytes((rnd.randrange(1, 224), rnd.randrange(256), rnd.randrange(256)))
        elif roll < 0.85:  # inside a geo's /16
            family, src = 1, 24
            net = rnd.choice(geo4)
            addr = net.network_address.packed[:2] + bytes((rnd.randrange(256),))
        elif roll < 0.90:  # the /26 geos: only a /26 (or longer) source can match them
            family, src = 1, 26
            addr = bytes((198, 51, 100, rnd.randrange(4) << 6))
        else:  # IPv6 /56 inside a geo's /48
            family, src = 2, 56
            net = rnd.choice(geo6)
            addr = net.network_address.packed[:6] + bytes((rnd.randrange(256),))
        if (src, addr) in seen:
            continue
        seen.add((src, addr))
        ecs = struct.pack("!HBB", family, src, 0) + addr
        opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0x8000 if do else 0, len(ecs) + 4) + struct.pack("!HH", 8, len(ecs)) + ecs
        msg = head + opt
        out += struct.pack("!H", len(msg)) + msg
    path.write_bytes(bytes(out))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def dnsperf(port: int, qfile: Path, seconds: float, mode: str, pin: bool = True,
            clients: int = 1, do: bool = False) -> tuple[int, float]:
    # several clients = several source ports, which SO_REUSEPORT spreads over the workers by hash
    cmd = (["taskset", "-c", "1"] if pin else []) + ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
           "-l", str(seconds), "-q", "200", "-t", "2", "-c", str(clients)]
    if mode == "ecs":
        cmd += ["-E", ECS_OPTION]
    elif mode == "subnets":
        cmd += ["-B"]
    if do and mode != "subnets":  # the subnets file carries DO in its own OPTs
        cmd += ["-D"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    done = re.search(r"Queries completed:\s+(\d+)", out)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not done or not qps:
        raise RuntimeError(f"dnsperf output not understood:\n{out}")
    return int(done.group(1)), float(qps.group(1))


def measure(pid: int, port: int, qfile: Path, seconds: float, mode: str, do: bool = False) -> dict[str, float]:
    before = cpu_seconds(pid)
    answered, qps = dnsperf(port, qfile, seconds, mode, do=do)
    used = cpu_seconds(pid) - before
    us = used * 1e6 / max(answered, 1)
    return {"answered": answered, "qps_shared_core": qps, "cpu_us_per_query": us, "qps_per_core": 1e6 / us}


def knot_conf(work: Path, port: int, dnssec: bool = False, udp_workers: int = 1) -> Path:
    zone = (ROOT / "deploy" / "examples" / "example.test.zone").read_text()
    zone += "\napi IN A 192.0.2.10\napi IN A 192.0.2.11\napi IN AAAA 2001:db8::10\n"
    (work / "example.test.zone").write_text(zone)
    conf = work / "knot.conf"
    conf.write_text(f"""server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
    udp-workers: {udp_workers}
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{work}"
log:
  - target: stderr
    any: error
zone:
  - domain: example.test
    storage: "{work}"
    file: "example.test.zone"
""" + ("    dnssec-signing: on\n" if dnssec else ""))  # knot's default policy: ECDSA P-256, keys it makes
    return conf


MODES = ("plain", "ecs", "subnets")


# as shipped (RRL, cookies, NSID on), with the bench's own source exempt from limiting only
OURS_DNS = {"rrl": {"enabled": True, "exempt": ["127.0.0.0/8"]}, "cookies": {"enabled": True}, "nsid": True}


def start_ours(work: Path, workers: int, pin: bool, dnssec: bool = False) -> tuple[subprocess.Popen[bytes], int, int]:
    """``steering dns`` serving the persisted table (weighted split in every geo), no etcd, metrics on;
    ``dnssec``: example.test signed with a combined ECDSA P-256 key (docs/dnssec.md)."""
    config = signed_config(work / "ours", dns_settings=OURS_DNS)[0] if dnssec else write_config(work / "ours",
                                                                                                  dns=OURS_DNS)
    cfg = load_config(config)
    save_table(work / "ours" / "dns-table.json", table_with(cfg, 1, WEIGHTS))
    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-c", "from steering.cli.main import main; main()", "dns", "--config", str(config),
           "--listen", f"127.0.0.1:{port}", "--no-etcd", "--metrics-addr", f"127.0.0.1:{mport}",
           "--workers", str(workers)]
    ours = subprocess.Popen((["taskset", "-c", "0"] if pin else []) + cmd, cwd=ROOT, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_udp(port, time.monotonic() + 20)
    return ours, port, mport


def run_ours(work: Path, seconds: float, files: dict[str, Path], dnssec: bool = False) -> dict[str, dict[str, float]]:
    ours, port, _ = start_ours(work, 1, pin=True, dnssec=dnssec)
    try:
        return {m: measure(ours.pid, port, files[m], seconds, m, do=dnssec) for m in MODES}
    finally:
        stop_process(ours, 10)


def family_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the supervisor and its workers)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def worker_queries(mport: int) -> dict[str, float]:
    from urllib.request import urlopen

    text = urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    out = {}
    for m in re.finditer(r'^steering_dns_worker_queries_total\{worker="(\d+)"\} ([\d.e+]+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def run_workers(work: Path, seconds: float, qfile: Path, workers: int) -> dict[str, Any]:
    """Unpinned, so the workers can use both cores: CPU per answered query summed over all processes."""
    ours, port, mport = start_ours(work, workers, pin=False)
    try:
        before_q = worker_queries(mport) if workers > 1 else {}
        before = family_cpu(ours.pid)
        answered, qps = dnsperf(port, qfile, seconds, "subnets", pin=False, clients=32)
        used = family_cpu(ours.pid) - before
        after_q = worker_queries(mport) if workers > 1 else {}
        per = {w: after_q[w] - before_q.get(w, 0.0) for w in after_q}
        total = sum(per.values()) or 1.0
        return {"answered": answered, "qps": qps, "cpu_us_per_query": used * 1e6 / max(answered, 1),
                "shares": {w: n / total for w, n in sorted(per.items())}}
    finally:
        stop_process(ours, 10)


def run_knot_workers(work: Path, seconds: float, qfile: Path, workers: int) -> dict[str, Any]:
    """knot with ``workers`` UDP threads, unpinned like ours in ``run_workers``: the peer's own cost of a
    second worker on this machine (both share the two cores with dnsperf)."""
    kwork = work / f"knot-w{workers}"
    shutil.rmtree(kwork, ignore_errors=True)
    kwork.mkdir()
    kport = free_port()
    knotd = shutil.which("knotd") or "/usr/sbin/knotd"
    knot = subprocess.Popen([knotd, "-c", str(knot_conf(kwork, kport, udp_workers=workers))], stderr=subprocess.DEVNULL)
    try:
        wait_udp(kport, time.monotonic() + 20)
        before = cpu_seconds(knot.pid)  # every thread's
        answered, qps = dnsperf(kport, qfile, seconds, "subnets", pin=False, clients=32)
        return {"answered": answered, "qps": qps,
                "cpu_us_per_query": (cpu_seconds(knot.pid) - before) * 1e6 / max(answered, 1)}
    finally:
        stop_process(knot, 10)


def run_knot(work: Path, seconds: float, files: dict[str, Path], dnssec: bool = False) -> dict[str, dict[str, float]]:
    kwork = work / "knot"
    shutil.rmtree(kwork, ignore_errors=True)
    kwork.mkdir()
    kport = free_port()
    knotd = shutil.which("knotd") or "/usr/sbin/knotd"
    knot = subprocess.Popen(["taskset", "-c", "0", knotd, "-c", str(knot_conf(kwork, kport, dnssec))],
                            stderr=subprocess.DEVNULL)
    try:
        wait_udp(kport, time.monotonic() + 20)
        return {m: measure(knot.pid, kport, files[m], seconds, m, do=dnssec) for m in MODES}
    finally:
        stop_process(knot, 10)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each dnsperf run (bounded)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the median and spread are reported")
    ap.add_argument("--subnets", type=int, default=250_000, help="distinct ECS subnets in the 'subnets' load")
    ap.add_argument("--servers", default="ours,knot", help="which servers to run (comma-separated)")
    ap.add_argument("--dnssec", action="store_true",
                    help="also signed: ours with example.test signed and knot signing it, every query with DO set "
                         "(servers ours+dnssec and knot+dnssec; docs/dnssec.md)")
    ap.add_argument("--no-workers", dest="workers", action="store_false",
                    help="skip the --workers 1 vs --workers 2 comparison")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 1.0), 30.0)
    rounds = min(max(args.repeat, 1), 10)
    servers = [s for s in args.servers.split(",") if s]
    if args.dnssec:
        servers += [f"{s}+dnssec" for s in servers if "+" not in s]
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores: the server on one, dnsperf on the other")
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="dnsbench-"))
    plain = work / "queries.txt"
    plain.write_text("api.example.test A\n")
    subnets = work / "subnets.bin"
    subnet_queries(subnets, min(max(args.subnets, 1), 2_000_000))
    files = {"plain": plain, "ecs": plain, "subnets": subnets}
    signed_subnets = work / "subnets-do.bin"
    if args.dnssec:
        subnet_queries(signed_subnets, min(max(args.subnets, 1), 2_000_000), do=True)
    signed_files = {**files, "subnets": signed_subnets}
    busy = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
    results: dict[str, dict[str, list[dict[str, float]]]] = {s: {m: [] for m in MODES} for s in servers}
    try:
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}: load average before: {loadavg()}", flush=True)
            for server in servers:
                signed = server.endswith("+dnssec")
                got = (run_ours if server.startswith("ours") else run_knot)(
                    work, seconds, signed_files if signed else files, signed)
                for m in MODES:
                    results[server][m].append(got[m])
    finally:
        stop_process(busy, 10)
    multi: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    knot_multi: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    try:
        if args.workers and "ours" in servers:
            for _ in range(rounds):
                for n in (1, 2):
                    multi[n].append(run_workers(work, seconds, subnets, n))
                    if "knot" in servers:
                        knot_multi[n].append(run_knot_workers(work, seconds, subnets, n))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {loadavg()}")
    print(f"{'server':6} {'load':8} {'answered':>9} {'qps(shared core)':>17} {'cpu us/query median (min-max)':>31}"
          f" {'qps/core':>9}")
    for server in servers:
        for m in MODES:
            rs = results[server][m]
            us = [x["cpu_us_per_query"] for x in rs]
            print(f"{server:6} {m:8} {int(statistics.median(x['answered'] for x in rs)):>9}"
                  f" {statistics.median(x['qps_shared_core'] for x in rs):>17.0f} {_spread(us):>31}"
                  f" {1e6 / statistics.median(us):>9.0f}")
    if "ours" in servers and "knot" in servers:
        for m in MODES:
            ratios = [k["cpu_us_per_query"] / o["cpu_us_per_query"]
                      for o, k in zip(results["ours"][m], results["knot"][m], strict=True)]
            print(f"ratio ours/knot per core, steered name, {m:8}: median {statistics.median(ratios):.2f}"
                  f" (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    if "ours" in servers and "ours+dnssec" in servers:
        for m in MODES:
            ratios = [o["cpu_us_per_query"] / s["cpu_us_per_query"]
                      for o, s in zip(results["ours"][m], results["ours+dnssec"][m], strict=True)]
            print(f"ours signed (DO=1) / ours unsigned per core, {m:8}: median {statistics.median(ratios):.2f}"
                  f" (goal >= 0.80; rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    if "ours+dnssec" in servers and "knot+dnssec" in servers:
        for m in MODES:
            ratios = [k["cpu_us_per_query"] / o["cpu_us_per_query"]
                      for o, k in zip(results["ours+dnssec"][m], results["knot+dnssec"][m], strict=True)]
            print(f"ratio ours/knot per core, both signed, DO=1, {m:8}: median {statistics.median(ratios):.2f}"
                  f" (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    if multi[1] and multi[2]:
        one = [x["cpu_us_per_query"] for x in multi[1]]
        two = [x["cpu_us_per_query"] for x in multi[2]]
        print(f"ours --workers 1 (unpinned, subnets): cpu us/query {_spread(one)}, "
              f"qps {statistics.median(x['qps'] for x in multi[1]):.0f}")
        print(f"ours --workers 2 (unpinned, subnets): cpu us/query {_spread(two)}, "
              f"qps {statistics.median(x['qps'] for x in multi[2]):.0f}")
        print(f"workers 2 / workers 1 cpu per query: {statistics.median(two) / statistics.median(one):.2f}"
              f" (goal <= 1.10)")
        if knot_multi[1] and knot_multi[2]:
            k1 = [x["cpu_us_per_query"] for x in knot_multi[1]]
            k2 = [x["cpu_us_per_query"] for x in knot_multi[2]]
            print(f"knot udp-workers 1 (unpinned, subnets): cpu us/query {_spread(k1)}; udp-workers 2: {_spread(k2)}")
            print(f"knot udp-workers 2 / 1 cpu per query: {statistics.median(k2) / statistics.median(k1):.2f} "
                  "(the peer's cost of a second worker here, same run)")
        for i, x in enumerate(multi[2]):
            shares = ", ".join(f"worker {w}: {s:.0%}" for w, s in x["shares"].items())
            print(f"  round {i + 1} share of queries: {shares} (goal: each >= 30%)")


if __name__ == "__main__":
    main()
