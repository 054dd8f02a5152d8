"""GeoIP: the cost of compiling a database of realistic size, and of a query with its map (docs/geoip.md).

    .venv/bin/python bench/geoip.py [--networks 300000] [--db FILE] [--repeat 3] [--subnets 100000]
                                    [--passes 10] [--pass-size 10000] [--against DIR]

Makes (once; kept beside the system's temp files, or at ``--db``) a MaxMind
DB with ``mmdb-writer``: about ``--networks`` networks, three quarters IPv4
laid /8 by /8 over the unicast space and a quarter IPv6 in the five RIRs'
/12s, with RIR-like country mixes, runs of one country, US networks with a
state, gaps. Then, for the example configuration with a ``geoip`` section
(na-west by US states, na-east by continent NA, europe, south-america,
asia-pacific by continent):

* compile: ``steering.geoip.load`` (walk + compile), then the DNS server's
  structures (``GeoMap``, ``ClientKeys``): CPU time, and peak and kept
  memory (tracemalloc), with the prefix and index entry counts;
* memory: what a worker keeps (its GeoMap, its block index: dense arrays for
  this map's size, and what the same index takes as dicts only);
* per query: ``FastPath.answer`` with one ECS option per query, IPv4 /24 and
  IPv6 /56 subnets spread over the database's networks (and ``x500``: the
  first 500 of them over and over, so the index stays in cache): the example's
  prefixes only, the GeoIP map (its dense index), the GeoIP map with its
  index as dicts only (``ClientKeys(dense=False)``, what it was before the
  dense index), and with ``--against DIR`` another checkout's fast path and
  index over the same maps (``git archive HEAD | tar -x -C DIR``); they take
  turns pass by pass, each pass over the next ``--pass-size`` queries; a
  round's figure is its fastest of ``--passes`` passes; printed: the fastest
  and the median round of ``--repeat``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import ipaddress
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dnsserver.clientkeys import ClientKeys  # noqa: E402
from dnsserver.fastpath import FastPath  # noqa: E402
from dnsserver.server import DnsServer  # noqa: E402
from steering import geoip  # noqa: E402
from steering.config import load_config  # noqa: E402
from steering.topology import GeoMap  # noqa: E402
from tests.support.dns_server import table_with, write_config  # noqa: E402

HOST = 0x0100007F
WEIGHTS = {"api.example.test.": {g: {"us-east-1": 600, "us-west-2": 300, "eu-west-1": 100}
                                 for g in ("na-east", "na-west", "europe", "south-america", "asia-pacific", "world")}}

RIRS: dict[str, list[tuple[str, str, float]]] = {  # country, continent, weight
    "arin": [("US", "NA", 80), ("CA", "NA", 10), ("PR", "NA", 1), ("JM", "NA", 1), ("BS", "NA", 1)],
    "ripe": [("DE", "EU", 14), ("GB", "EU", 12), ("FR", "EU", 10), ("NL", "EU", 8), ("RU", "EU", 10), ("IT", "EU", 6),
             ("ES", "EU", 5), ("PL", "EU", 4), ("SE", "EU", 4), ("UA", "EU", 3), ("TR", "AS", 4), ("IR", "AS", 3),
             ("SA", "AS", 2), ("AE", "AS", 2), ("CH", "EU", 3), ("AT", "EU", 2)],
    "apnic": [("CN", "AS", 30), ("JP", "AS", 18), ("KR", "AS", 10), ("IN", "AS", 10), ("AU", "OC", 8),
              ("TW", "AS", 5), ("ID", "AS", 4), ("VN", "AS", 4), ("SG", "AS", 3), ("HK", "AS", 3), ("NZ", "OC", 2)],
    "lacnic": [("BR", "SA", 45), ("MX", "NA", 20), ("AR", "SA", 12), ("CO", "SA", 8), ("CL", "SA", 8),
               ("PE", "SA", 4)],
    "afrinic": [("ZA", "AF", 35), ("EG", "AF", 20), ("NG", "AF", 10), ("KE", "AF", 10), ("MA", "AF", 10),
                ("TN", "AF", 5)],
}
STATES = [("CA", 12), ("TX", 9), ("NY", 6), ("FL", 6), ("IL", 4), ("WA", 4), ("VA", 5), ("GA", 3), ("PA", 4),
          ("OH", 3), ("NJ", 3), ("MA", 3), ("AZ", 2), ("CO", 2), ("OR", 2), ("NC", 3), ("MI", 3), ("MN", 2)]
V4_LENGTHS = [(24, 34), (23, 9), (22, 14), (21, 9), (20, 9), (19, 6), (18, 4), (17, 3), (16, 5), (15, 1),
              (25, 2), (26, 2), (27, 1), (28, 1)]
V6_LENGTHS = [(32, 38), (29, 14), (48, 26), (44, 5), (40, 6), (36, 5), (56, 4), (30, 2)]
V6_RIRS = [("2001:0000::", 16, "ripe"), ("2400::", 12, "apnic"), ("2600::", 12, "arin"), ("2800::", 12, "lacnic"),
           ("2a00::", 12, "ripe"), ("2c00::", 12, "afrinic")]


def _weighted(rng: random.Random, items: list[Any]) -> Any:
    return rng.choices([i[:-1] for i in items], weights=[i[-1] for i in items])[0]


class _Places:
    """Runs of one country (and US state): keep the last place with probability ``keep``."""

    def __init__(self, rng: random.Random, keep: float = 0.55) -> None:
        self.rng, self.keep = rng, keep
        self.last: dict[str, dict[str, Any]] = {}
        self.cache: dict[tuple[str, str, str], dict[str, Any]] = {}

    def record(self, rir: str) -> dict[str, Any]:
        if rir in self.last and self.rng.random() < self.keep:
            return self.last[rir]
        country, continent = _weighted(self.rng, RIRS[rir])
        state = _weighted(self.rng, STATES)[0] if country == "US" else ""
        key = (country, continent, state)
        rec = self.cache.get(key)
        if rec is None:
            rec = {"continent": {"code": continent, "names": {"en": continent}},
                   "country": {"iso_code": country, "names": {"en": country}},
                   "registered_country": {"iso_code": country}}
            if state:
                rec["subdivisions"] = [{"iso_code": state, "names": {"en": state}}]
            self.cache[key] = rec
        self.last[rir] = rec
        return rec


def generate(path: Path, networks: int, seed: int = 13) -> None:
    """Write a database of about ``networks`` networks at ``path`` (see the module doc)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPNetwork, IPSet  # type: ignore[import-untyped]

    rng = random.Random(seed)
    places = _Places(rng)
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"],
                        description="steering bench: synthetic GeoLite2-City layout")
    v4_target = networks * 3 // 4
    slash8 = [a for a in range(1, 224) if a not in (10, 127, 100, 169, 172, 192, 198, 203)]
    rirs = ["arin"] * 35 + ["ripe"] * 30 + ["apnic"] * 25 + ["lacnic"] * 5 + ["afrinic"] * 5
    per8 = max(1, v4_target // len(slash8))
    count = 0
    for a in slash8:
        rir = rng.choice(rirs)
        at, end = a << 24, (a + 1) << 24
        made = 0
        while at < end and made < per8 * 2:
            plen = _weighted(rng, V4_LENGTHS)[0]
            # spread this /8's share of networks over it: skip ahead as much as a network takes on average
            align = (at & -at).bit_length() - 1 if at else 32
            plen = max(plen, 32 - align)
            size = 1 << (32 - plen)
            if at + size > end:
                break
            if rng.random() > 0.08:
                writer.insert_network(IPSet([IPNetwork((at, plen))]), places.record(rir))
                made += 1
            at += size
            if rng.random() < 0.5:  # space between allocations, so a /8 holds about its share
                gap = ((end - at) // max(1, per8 - made)) >> 1
                at += gap - gap % 256
        count += made
    v6_target = networks - count
    for base, blen, rir in V6_RIRS:
        start = int(ipaddress.IPv6Address(base))
        span = 1 << (128 - blen)
        n = v6_target // len(V6_RIRS)
        at = start
        step = span // (n + 1)
        for _ in range(n):
            plen = _weighted(rng, V6_LENGTHS)[0]
            size = 1 << (128 - plen)
            at = (at + size - 1) // size * size
            if at + size > start + span:
                break
            writer.insert_network(IPSet([IPNetwork((at, plen), version=6)]), places.record(rir))
            count += 1
            at += size + rng.randrange(step) // size * size
    writer.to_db_file(str(path))


def config_with(directory: Path, db: Path) -> Path:
    path = write_config(directory)
    data = yaml.safe_load(path.read_text())
    data["geoip"] = {"database": str(db)}
    path.write_text(yaml.safe_dump(data))
    return path


def query(subnet: str, bits: int) -> bytes:
    wire: bytes = dns.message.make_query("api.example.test", "A", use_edns=0,
                                         options=[dns.edns.ECSOption(subnet, bits)]).to_wire()
    return wire


def one_pass(answer: Any, queries: list[bytes]) -> float:
    """µs per query over one pass."""
    t0 = time.perf_counter()
    for q in queries:
        answer(q, HOST, 0)
    return (time.perf_counter() - t0) / len(queries) * 1e6


def per_query(paths: dict[str, Any], queries: list[bytes], passes: int, size: int) -> dict[str, float]:
    """µs per query of each path: the fastest of ``passes`` passes, each over the next ``size`` queries (other
    subnets than the pass before, so short passes do not warm the caches for the next), the paths taking
    turns pass by pass, so a burst of other work on the machine weighs on all of them alike."""
    size = min(size or len(queries), len(queries))
    best = dict.fromkeys(paths, float("inf"))
    for k in range(passes):
        start = k * size % (len(queries) - size + 1)
        part = queries[start:start + size]
        for name, answer in paths.items():
            best[name] = min(best[name], one_pass(answer, part))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=300_000)
    ap.add_argument("--db", type=Path, default=None, help="database file (made when missing)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--passes", type=int, default=10, help="passes per round; the fastest counts")
    ap.add_argument("--pass-size", type=int, default=10_000, help="queries per pass (0: all)")
    ap.add_argument("--subnets", type=int, default=100_000)
    ap.add_argument("--against", type=Path, default=None,
                    help="another checkout (git archive of an older commit): its fast path and index take turns too")
    args = ap.parse_args()
    db = args.db or Path(tempfile.gettempdir()) / f"steering-bench-geoip-{args.networks}.mmdb"
    if not db.exists():
        t0 = time.perf_counter()
        generate(db, args.networks)
        print(f"generated {db} ({db.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config_with(Path(tmp) / "geoip", db))
        plain_cfg = load_config(write_config(Path(tmp) / "plain"))
        assert cfg.geoip is not None
        print(f"load average {os.getloadavg()[0]:.2f}")

        walk, build = [], []  # CPU seconds: the machine is shared, wall time says more about the others
        for _ in range(args.repeat):
            gc.collect()
            t0 = time.process_time()
            m = geoip.load(cfg.resolve_path(cfg.geoip.database), cfg.geos, cfg.default_geo.id)
            t1 = time.process_time()
            keys = ClientKeys(GeoMap(cfg.geos, cfg.default_geo.id, m))
            walk.append(t1 - t0)
            build.append(time.process_time() - t1)
        del keys
        gc.collect()
        tracemalloc.start()  # memory in a run of its own: tracing slows everything down
        full = geoip.load(cfg.resolve_path(cfg.geoip.database), cfg.geos, cfg.default_geo.id)
        _, peak_load = tracemalloc.get_traced_memory()
        gm = GeoMap(cfg.geos, cfg.default_geo.id, full)
        summary = full.summary()  # what a worker keeps besides its GeoMap and index (dnsserver.server)
        del full
        with_map = tracemalloc.get_traced_memory()[0]
        keys = ClientKeys(gm)
        kept, peak = tracemalloc.get_traced_memory()
        dicts = ClientKeys(gm, dense=False)  # the same index as dicts only (what every map had before)
        as_dicts = tracemalloc.get_traced_memory()[0] - kept
        tracemalloc.stop()
        sizes, dict_sizes = keys.sizes(), dicts.sizes()
        del dicts
        prefixes = m.prefixes  # the last timed run's map (made before tracing began)
        print(f"database: {m.info.networks} networks walked; compiled prefixes: v4 {len(prefixes[4])}, "
              f"v6 {len(prefixes[6])}; block index as dicts: v4 {dict_sizes[4][0]}, v6 {dict_sizes[6][0]} entries")
        print("block index in use: " + "; ".join(
            f"v{fam} {n} dict entries + {b / 2**20:.1f} MiB dense" for fam, (n, b) in sizes.items()))
        print(f"compile (walk + compile), CPU: median {statistics.median(walk):.2f} s "
              f"({min(walk):.2f}-{max(walk):.2f})")
        print(f"GeoMap + ClientKeys, CPU:      median {statistics.median(build):.2f} s "
              f"({min(build):.2f}-{max(build):.2f})")
        print(f"memory: peak {peak_load / 2**20:.0f} MiB while compiling, {peak / 2**20:.0f} MiB building the "
              f"index; kept {kept / 2**20:.0f} MiB per worker: GeoMap {with_map / 2**20:.0f} MiB "
              f"({summary.count()} prefixes), block index {(kept - with_map) / 2**20:.0f} MiB "
              f"(as dicts only: {as_dicts / 2**20:.0f} MiB)")
        del keys, gm

        rng = random.Random(13)
        nets4 = [ipaddress.ip_network((net, plen)) for plen, net, _g in prefixes[4]]
        nets6 = [ipaddress.ip_network((net, plen)) for plen, net, _g in prefixes[6]]

        def inside(nets: list[Any], bits: int) -> str:
            n = rng.choice(nets)
            host = int(n.network_address) + rng.randrange(n.num_addresses)
            width = n.max_prefixlen
            return str(ipaddress.ip_address(host >> (width - bits) << (width - bits)))

        loads = {"v4 /24": [query(inside(nets4, 24), 24) for _ in range(args.subnets)],
                 "v6 /56": [query(inside(nets6, 56), 56) for _ in range(args.subnets)]}
        # the same queries from 500 subnets only: the index stays in cache, what is left is the Python work
        loads |= {f"{name} x500": (queries[:500] * (args.subnets // 500 + 1))[:args.subnets]
                  for name, queries in loads.items()}
        plain = DnsServer(plain_cfg, table_with(plain_cfg, 1, WEIGHTS))
        geo = DnsServer(cfg, table_with(cfg, 1, WEIGHTS), geoip=m)
        dict_path = FastPath(geo.geomap, geo.snapshot, geo.slow.routed)  # the same map, its index as dicts only
        dict_path.set_geomap(geo.geomap, ClientKeys(geo.geomap, dense=False))
        paths: dict[str, Any] = {"prefixes": plain.fast.answer, "GeoIP": geo.fast.answer,
                                 "GeoIP, dicts": dict_path.answer}
        if args.against:  # another tree's fast path and index over the same maps and answers
            old = other_fast_path(args.against)
            paths["prefixes, against"] = old.FastPath(plain.geomap, plain.snapshot, plain.slow.routed).answer
            paths["GeoIP, against"] = old.FastPath(geo.geomap, geo.snapshot, geo.slow.routed).answer
        for queries in loads.values():  # the same bytes from every path: the index changes no answer
            for name, answer in paths.items():
                general = (plain if name.startswith("prefixes") else geo).fast.answer_general
                assert all(answer(q, HOST, 0) == general(q, HOST, 0) for q in queries), name
        # the fastest pass of a round is its figure, and the fastest round the least disturbed one
        got: dict[tuple[str, str], list[float]] = {(n, ln): [] for n in paths for ln in loads}
        for _ in range(args.repeat):
            for lname, queries in loads.items():
                for name, figure in per_query(paths, queries, args.passes, args.pass_size).items():
                    got[(name, lname)].append(figure)
        print(f"{'fast path':<20} {'load':<13} {'µs/query min':>13} {'median':>8}   rounds")
        for (name, lname), vals in got.items():
            print(f"{name:<20} {lname:<13} {min(vals):>13.3f} {statistics.median(vals):>8.3f}   "
                  + ", ".join(f"{v:.3f}" for v in vals))


def other_fast_path(tree: Path) -> Any:
    """``dnsserver/fastpath.py`` and the ``clientkeys.py`` it imports from another checkout (``git archive``
    of an older commit), as a module beside this tree's: ``--against``."""
    def module(name: str, path: Path) -> Any:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    ours = sys.modules["dnsserver.clientkeys"]
    sys.modules["dnsserver.clientkeys"] = module("against_clientkeys", tree / "dnsserver" / "clientkeys.py")
    try:
        return module("against_fastpath", tree / "dnsserver" / "fastpath.py")
    finally:
        sys.modules["dnsserver.clientkeys"] = ours


if __name__ == "__main__":
    main()
