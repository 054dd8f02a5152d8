"""DNSSEC signing at table render: the time to pre-render every answer unsigned and signed (docs/dnssec.md).

    .venv/bin/python bench/dnssec_render.py [--regions 20] [--regions-only] [--algorithm ECDSAP256SHA256] [--runs 3]

The planner bench's topology (bench/planner.py: 10,000 sites, 250 geos, 20 services, ``--regions``),
its zone signed with one combined key, a table planned for it. Per run it prints the CPU time of
``build_snapshot``: unsigned; signed in a new signing epoch (every RRset signed: what a server start or
the periodic re-signing costs); signed again in the same epoch with the next table (weights moved: the
epoch's cached signatures are reused, what an ordinary table change costs); and the signatures made.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dns.name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.planner import build  # noqa: E402  # the same topology as the planner bench
from dnsserver.dnssec import Signing, write_key  # noqa: E402
from dnsserver.geo import GeoMap  # noqa: E402
from dnsserver.metrics import Stats  # noqa: E402
from dnsserver.render import build_snapshot  # noqa: E402
from dnsserver.zones import load_zones  # noqa: E402
from steering.config import parse_config  # noqa: E402
from steering.model import Overrides  # noqa: E402
from steering.planner import plan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regions", type=int, default=20)
    ap.add_argument("--algorithm", default="ECDSAP256SHA256", choices=["ECDSAP256SHA256", "ED25519"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--regions-only", action="store_true",
                    help="every service answers per region (the issue's 250 geos x 20 services x 20 regions), "
                         "none per site (the planner bench's half of the services with 10,000 site answers)")
    args = ap.parse_args()
    data, observed = build(args.regions)
    if args.regions_only:
        for svc in data["services"]:
            svc["targets"] = "regions"
            svc["answers"] = {t: a for t, a in svc["answers"].items() if t.startswith("region-")}
    with tempfile.TemporaryDirectory() as tmp:
        key = write_key(Path(tmp), dns.name.from_text("example.test."), args.algorithm, "csk")[0]
        data["zones"] = [{"origin": "example.test.", "dnssec": {"algorithm": args.algorithm, "keys": [str(key)]}}]
        cfg = parse_config(data)
        zones = load_zones(cfg)
    first = plan(cfg, observed, Overrides(), previous=None, now=1000.0)
    second = plan(cfg, observed, Overrides(), previous=first, now=1005.0)
    geomap = GeoMap(cfg.geos, cfg.default_geo.id)
    keys = [z.keys for z in zones if z.keys is not None]
    unsigned: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    print(f"{len(cfg.geos)} geos x {len(cfg.services)} services x {args.regions} regions, {len(cfg.sites)} sites; "
          f"{args.algorithm}; CPU seconds of the render (process time: other work on the machine does not count)",
          flush=True)
    for run in range(args.runs):
        t = time.process_time()
        build_snapshot(cfg, zones, geomap, first, Stats())
        unsigned.append(time.process_time() - t)
        signing = Signing.create(keys)
        t = time.process_time()
        snap = build_snapshot(cfg, zones, geomap, first, Stats(), signing)
        cold.append(time.process_time() - t)
        t = time.process_time()
        build_snapshot(cfg, zones, geomap, second, Stats(), signing)
        warm.append(time.process_time() - t)
        print(f"  run {run + 1}: unsigned {unsigned[-1]:.2f} s, signed new epoch {cold[-1]:.2f} s "
              f"({signing.signatures_made()} signatures), signed next table {warm[-1]:.2f} s; {len(snap.entries)} "
              f"entries; load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"render unsigned                  {statistics.median(unsigned):7.2f} s")
    print(f"render signed, new epoch         {statistics.median(cold):7.2f} s")
    print(f"render signed, next table        {statistics.median(warm):7.2f} s")

if __name__ == "__main__":
    main()
