"""Round trips between a running lab's regions, and what the delay relay costs (docs/lab.md, "Latency without netem").

Against a lab that is up (``sudo steering lab up ...``): from every region, ICMP
echo to every other region's address (a raw socket inside the region's
namespace: the machine has no ``ping``), ``--count`` each, and the round trip's
min / p50 / p99 / max; then, where the lab's delay is made by the userspace
relay (a kernel without netem), the relay's CPU over ``--cpu-seconds`` of the
lab's own traffic (etcd, controllers, agents: nothing added) and the frames it
moved. Prints figures, asserts nothing.

Usage: sudo .venv/bin/python bench/lab_latency.py [--state-dir DIR] [--count 200] [--cpu-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steering.lab.lab import Lab, default_state_dir  # noqa: E402
from steering.lab.procs import alive  # noqa: E402

# Run inside the source region's namespace: ICMP echo over a raw socket, one at a time, RTTs in ms as JSON.
PINGER = r"""
import json, os, select, socket, struct, sys, time
dst, count, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack(f"!{len(b)//2}H", b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
out = []
for seq in range(count):
    body = b"steering-lab-rtt" * 4
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, seq) + body
    t0 = time.perf_counter(); s.sendto(pkt, (dst, 0)); end = t0 + 2.0
    while True:
        left = end - time.perf_counter()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            out.append(None); break
        data = s.recv(2048); ihl = (data[0] & 15) * 4
        typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if typ == 0 and rid == ident and rseq == seq:
            out.append((time.perf_counter() - t0) * 1000); break
    time.sleep(gap)
print(json.dumps(out))
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rtts(src_ns: str, dst: str, count: int, gap: float) -> list[float | None]:
    res = subprocess.run(["ip", "netns", "exec", src_ns, sys.executable, "-c", PINGER, dst, str(count), str(gap)],
                         capture_output=True, text=True, timeout=60 + count * (gap + 2), check=True)
    out: list[float | None] = json.loads(res.stdout)
    return out


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state-dir", type=Path, default=None)
    ap.add_argument("--count", type=int, default=200, help="echoes per ordered pair of regions")
    ap.add_argument("--gap", type=float, default=0.01, help="seconds between echoes")
    ap.add_argument("--cpu-seconds", type=float, default=30.0, help="how long to watch the relay's CPU")
    args = ap.parse_args()
    lab = Lab.load(args.state_dir or default_state_dir())
    if lab is None:
        sys.exit("no lab is running: sudo steering lab up first")
    topo = lab.topology
    by = lab.info.get("delay_by") or ("netem" if topo.netem else "none (no netem, no relay)")
    print(f"lab: {len(topo.regions)} regions, delay by {by}")
    for a in topo.regions:
        for b in topo.regions:
            if a.id == b.id:
                continue
            link = topo.link(a.id, b.id)
            got = rtts(a.netns, b.addr, args.count, args.gap)
            ok = [v for v in got if v is not None]
            if not ok:
                print(f"  {a.id} -> {b.id}: no echo answered")
                continue
            print(f"  {a.id} -> {b.id} (one-way {link.delay_ms} +/- {link.jitter_ms} ms): rtt ms min {min(ok):.3f} "
                  f"p50 {pct(ok, 0.5):.3f} p99 {pct(ok, 0.99):.3f} max {max(ok):.3f} "
                  f"({len(ok)}/{len(got)} answered)")
    relay = (lab.info.get("procs") or {}).get("lab/relay")
    if relay is None or not alive(relay):
        print("no relay process: nothing to measure the CPU of")
        return
    stats_file = Path(relay["argv"][-1])
    before = json.loads(stats_file.read_text())
    t0, c0 = time.monotonic(), cpu_ticks(int(relay["pid"]))
    time.sleep(args.cpu_seconds)
    t1, c1 = time.monotonic(), cpu_ticks(int(relay["pid"]))
    after = json.loads(stats_file.read_text())
    hz = os.sysconf("SC_CLK_TCK")
    frames = after["frames"] - before["frames"]
    print(f"relay pid {relay['pid']}: {100 * (c1 - c0) / hz / (t1 - t0):.2f} % of one core over {t1 - t0:.0f} s "
          f"of the lab's own traffic, {frames / (t1 - t0):.0f} frames/s "
          f"({after['delayed'] - before['delayed']} held, {after['dropped'] - before['dropped']} dropped)")


if __name__ == "__main__":
    main()
