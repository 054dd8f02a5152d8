"""DNS speed, per core: our server vs knot on the same machine, loopback only.

    .venv/bin/python bench/dns.py [--seconds 8]

Method (DEPENDENCIES.md, "DNS speed"): each server is pinned to core 0 and
shares it with a busy loop, so the server, not the load generator, is the
bottleneck; dnsperf runs on core 1. The server's CPU time (utime + stime
from /proc) divided by the queries answered is its cost per query; 1e6 / that
is its queries per second per core. knot serves an equivalent static zone
(the steered name as plain A records); ours serves it steered: weighted
split, geo lookup, metrics on, with and without an ECS option.

Installs Debian ``dnsperf`` and ``knot`` on demand (apt-get). Every run is
bounded by ``--seconds``; every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this file is named dns.py: keep its folder off the path so ``import dns`` finds dnspython
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from dnsserver.persist import save_table  # noqa: E402
from dnsserver.testing import table_with, write_config  # noqa: E402
from steering.config import load_config  # noqa: E402

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def dnsperf(port: int, qfile: Path, seconds: float, ecs: bool) -> tuple[int, float]:
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
           "-l", str(seconds), "-q", "200", "-t", "2"]
    if ecs:
        cmd += ["-E", ECS_OPTION]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    done = re.search(r"Queries completed:\s+(\d+)", out)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not done or not qps:
        raise RuntimeError(f"dnsperf output not understood:\n{out}")
    return int(done.group(1)), float(qps.group(1))


def measure(pid: int, port: int, qfile: Path, seconds: float, ecs: bool) -> dict[str, float]:
    before = cpu_seconds(pid)
    answered, qps = dnsperf(port, qfile, seconds, ecs)
    used = cpu_seconds(pid) - before
    us = used * 1e6 / max(answered, 1)
    return {"answered": answered, "qps_shared_core": qps, "cpu_us_per_query": us, "qps_per_core": 1e6 / us}


def knot_conf(work: Path, port: int) -> Path:
    zone = (ROOT / "deploy" / "examples" / "example.test.zone").read_text()
    zone += "\napi IN A 192.0.2.10\napi IN A 192.0.2.11\napi IN AAAA 2001:db8::10\n"
    (work / "example.test.zone").write_text(zone)
    conf = work / "knot.conf"
    conf.write_text(f"""server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
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
""")
    return conf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each dnsperf run (bounded)")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 1.0), 30.0)
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores: the server on one, dnsperf on the other")
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="dnsbench-"))
    qfile = work / "queries.txt"
    qfile.write_text("api.example.test A\n")
    busy = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
    results: dict[str, dict[str, float]] = {}
    try:
        # ours: the persisted table (weighted split in every geo), no etcd
        config = write_config(work / "ours")
        cfg = load_config(config)
        save_table(work / "ours" / "dns-table.json", table_with(cfg, 1, WEIGHTS))
        port = free_port()
        ours = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c",
                                 "from steering.cli.main import main; main()", "dns", "--config", str(config),
                                 "--listen", f"127.0.0.1:{port}", "--no-etcd",
                                 "--metrics-addr", f"127.0.0.1:{free_port()}"],
                                cwd=ROOT, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            wait_udp(port, time.monotonic() + 20)
            results["ours"] = measure(ours.pid, port, qfile, seconds, ecs=False)
            results["ours+ecs"] = measure(ours.pid, port, qfile, seconds, ecs=True)
        finally:
            stop(ours)
        kwork = work / "knot"
        kwork.mkdir()
        kport = free_port()
        knotd = shutil.which("knotd") or "/usr/sbin/knotd"
        knot = subprocess.Popen(["taskset", "-c", "0", knotd, "-c", str(knot_conf(kwork, kport))],
                                stderr=subprocess.DEVNULL)
        try:
            wait_udp(kport, time.monotonic() + 20)
            results["knot"] = measure(knot.pid, kport, qfile, seconds, ecs=False)
            results["knot+ecs"] = measure(knot.pid, kport, qfile, seconds, ecs=True)
        finally:
            stop(knot)
    finally:
        stop(busy)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':10} {'answered':>10} {'qps(shared core)':>17} {'cpu us/query':>13} {'qps/core':>10}")
    for name, r in results.items():
        print(f"{name:10} {int(r['answered']):>10} {r['qps_shared_core']:>17.0f} {r['cpu_us_per_query']:>13.2f}"
              f" {r['qps_per_core']:>10.0f}")
    for mode, k in (("no ECS", ""), ("ECS", "+ecs")):
        ratio = results["ours" + k]["qps_per_core"] / results["knot" + k]["qps_per_core"]
        print(f"ratio ours/knot per core, steered name, {mode}: {ratio:.2f}")


if __name__ == "__main__":
    main()
