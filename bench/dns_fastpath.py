"""DNS fast path, in-process: the cost of one ``FastPath.answer`` call per query shape (no sockets).

    .venv/bin/python bench/dns_fastpath.py [--repeat 3] [--passes 5] [--subnets 100000] [--against OLD.py]

The example configuration (deploy/examples) with a weighted split
(600/300/100 over us-east-1, us-west-2, eu-west-1) in every geo, answered by
``DnsServer(...).fast.answer`` as a UDP thread calls it. Loads:

* ``plain``: api.example.test A without EDNS, from one cached source address;
* ``ecs``: the same query with one fixed ECS option (198.51.100.0/24);
* ``subnets``: ``--subnets`` queries, each with its own ECS /24 across the
  IPv4 space, so nothing keyed on the subnet repeats within a pass.
* ``subnets-cold``: the first pass over those queries right after the table
  was rendered (what follows a table change, when the pick has state to fill);
* ``ecs-1-target``: the ``ecs`` query against a table with one target per
  geo (1000 to us-east-1), the common case outside a ramp.

A figure is the wall time of a pass over the queries divided by their number
(loop overhead included, the same before and after a change), the fastest of
``--passes`` passes (of ``--pass-size`` queries each, default all); each load is measured ``--repeat`` times and the median
and spread (min-max) are printed with the load average, because other work on
the machine moves these figures.

``--against OLD.py`` also loads another ``dnsserver/fastpath.py``, the one
with the cumulative-range pick from before issue 13
(``git show d9c8d79:dnsserver/fastpath.py > OLD.py``), gives it the same
answers in its layout (``(total, cumulative, ...)`` per split, from each slot
table's weights) and alternates its passes with this one's, pass by pass, so
both see the same machine; the difference per load is printed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import random
import socket
import statistics
import sys
import tempfile
import time
import zlib
from bisect import bisect_right
from pathlib import Path
from typing import Any

import dns.edns
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dnsserver.fastpath import FastPath  # noqa: E402
from dnsserver.server import DnsServer  # noqa: E402
from steering import pick  # noqa: E402
from tests.support.dns_server import load, table_with  # noqa: E402

GEOS = ("na-east", "na-west", "europe", "south-america", "asia-pacific", "world")
WEIGHTS = {"api.example.test.": {g: {"us-east-1": 600, "us-west-2": 300, "eu-west-1": 100} for g in GEOS}}
ONE = {"api.example.test.": {g: {"us-east-1": 1000} for g in GEOS}}
HOST = 0x0100007F  # 127.0.0.1 as the batch loop passes it (sin_addr read as an int)


def query(ecs: str | None) -> bytes:
    opts: list[dns.edns.Option] | None = [dns.edns.ECSOption(ecs, 24)] if ecs else None
    wire: bytes = dns.message.make_query("api.example.test", "A", use_edns=0 if ecs else None, options=opts).to_wire()
    return wire


def server(directory: Path, weights: dict[str, Any] = WEIGHTS) -> DnsServer:
    cfg = load(directory)
    return DnsServer(cfg, table_with(cfg, 1, weights))


def per_query(answer: object, queries: list[bytes], passes: int) -> float:
    """µs per query: the fastest of ``passes`` passes over ``queries``."""
    return min(one_pass(answer, queries) for _ in range(passes))


def one_pass(answer: object, queries: list[bytes]) -> float:
    fn = answer
    t0 = time.perf_counter()
    for q in queries:
        fn(q, HOST, 0)  # type: ignore[operator]
    return (time.perf_counter() - t0) / len(queries) * 1e6


def pick_step(subnets: list[bytes], passes: int) -> tuple[float, float]:
    """µs per query of the pick step alone, (cumulative ranges, slot table), each written as the fast path
    writes it, over warm tables, the fastest of ``passes`` alternating passes over ``subnets``."""
    seed = pick.name_seed("api.example.test.")
    split = pick.split([("us-east-1", 600), ("us-west-2", 300), ("eu-west-1", 100)])
    table = pick.slot_table(split, seed)
    cum = tuple(itertools.accumulate(split.weights))
    entry_old = (cum[-1], cum, split.targets, None, None)
    entry_new = (table.index, table.fill, split.targets, None, None)
    crc32 = zlib.crc32
    bisect = bisect_right

    def old() -> float:
        t0 = time.perf_counter()
        for sub in subnets:
            total, cum, variants, _cells, _fb = entry_old
            i = 0 if len(variants) == 1 else bisect(cum, ((crc32(sub, seed) * pick.GOLDEN) & 0xFFFFFFFF) * total >> 32)
            variants[i]  # what the fast path does next
        return (time.perf_counter() - t0) / len(subnets) * 1e6

    def new() -> float:
        t0 = time.perf_counter()
        for sub in subnets:
            index, fill, variants, _cells, _fb = entry_new
            if fill is None:
                i = 0
            else:
                s = ((crc32(sub, seed) * 0x9E3779B1) & 0xFFFFFFFF) >> 16
                i = index[s]
                if i >= 255:
                    i = fill(s)
            variants[i]
        return (time.perf_counter() - t0) / len(subnets) * 1e6

    new()  # race every slot these subnets use: the warm figure
    olds, news = [], []
    for _ in range(passes):
        olds.append(old())
        news.append(new())
    return min(olds), min(news)


def cumulative_fast_path(path: str, srv: DnsServer) -> Any:
    """The fast path in ``path`` (cumulative ranges) over ``srv``'s answers, converted to its layout."""
    spec = importlib.util.spec_from_file_location("fastpath_against", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entries: dict[bytes, tuple[Any, Any]] = {}
    for key, (seed, data) in srv.snapshot.entries.items():
        if seed is None:
            entries[key] = (seed, data)
            continue
        splits = []
        for table, variants, cells, fb in data:
            cum = tuple(itertools.accumulate(table.weights))
            splits.append((cum[-1], cum, variants, cells, fb))
        entries[key] = (seed, tuple(splits))
    return module.FastPath(srv.geomap, type(srv.snapshot)(srv.snapshot.catalog, entries, srv.snapshot.table,
                                                         srv.snapshot.fallbacks), srv.slow.routed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the median and spread are printed")
    ap.add_argument("--passes", type=int, default=5, help="passes per figure; the fastest counts")
    ap.add_argument("--subnets", type=int, default=100_000, help="distinct ECS /24s in the 'subnets' load")
    ap.add_argument("--pass-size", type=int, default=0,
                    help="queries per pass (default: the whole load); short passes and many of them make the "
                         "fastest a better figure on a busy machine")
    ap.add_argument("--against", help="another dnsserver/fastpath.py (cumulative ranges) to alternate with")
    args = ap.parse_args()
    rng = random.Random(13)
    subnets = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0" for _ in range(args.subnets)]
    loads = {"plain": [query(None)] * 100_000, "ecs": [query("198.51.100.0")] * 100_000,
             "subnets": [query(s) for s in subnets]}
    names = (*loads, "subnets-cold", "ecs-1-target")
    results: dict[str, list[float]] = {name: [] for name in names}
    against: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            print(f"round {r + 1}: load average {os.getloadavg()[0]:.2f}", flush=True)
            srv = server(Path(tmp) / f"r{r}")
            one = server(Path(tmp) / f"one{r}", ONE)
            for q in loads["plain"][:1] + loads["ecs"][:1] + loads["subnets"][:1]:
                assert srv.fast.answer(q, HOST, 0) is not None, "the fast path must answer every load"
            old = old_one = None
            if args.against:
                old, old_one = cumulative_fast_path(args.against, srv), cumulative_fast_path(args.against, one)
                against["subnets-cold"].append(one_pass(old.answer, loads["subnets"]))
            # a fresh server: its first pass over the subnets is the cold one
            results["subnets-cold"].append(one_pass(srv.fast.answer, loads["subnets"]))
            runs: list[tuple[str, FastPath, Any, list[bytes]]] = [
                *((name, srv.fast, old, queries) for name, queries in loads.items()),
                ("ecs-1-target", one.fast, old_one, loads["ecs"])]
            for name, fast, other, queries in runs:
                mine, theirs = [], []
                size = min(args.pass_size or len(queries), len(queries))
                for k in range(args.passes):  # alternating, so both see the same machine
                    start = k * size % (len(queries) - size + 1)
                    part = queries[start:start + size]
                    mine.append(one_pass(fast.answer, part))
                    if other is not None:
                        theirs.append(one_pass(other.answer, part))
                results[name].append(min(mine))
                if theirs:
                    against[name].append(min(theirs))
    print(f"{'load':<14} {'µs/query median':>16} {'(min-max)':>14}   rounds")
    for name, got in results.items():
        print(f"{name:<14} {statistics.median(got):>16.3f} ({min(got):.3f}-{max(got):.3f})   "
              + ", ".join(f"{g:.3f}" for g in got))
    keys = [bytes((4, 24)) + socket.inet_aton(s)[:3] + b"\x00" for s in subnets[:10_000]]
    print("\npick step alone, as the fast path writes it (warm tables), fastest of 40 alternating passes:")
    for r in range(args.repeat):
        before, after = pick_step(keys, 40)
        print(f"  round {r + 1}: cumulative ranges {before:.3f} µs, slot table {after:.3f} µs, "
              f"difference {after - before:+.3f} µs (load average {os.getloadavg()[0]:.2f})")
    if args.against:
        print(f"\nagainst {args.against} (cumulative ranges), alternating pass by pass:")
        print(f"{'load':<14} {'theirs median':>14} {'ours median':>12} {'ours - theirs per round (µs)':>30}")
        for name in names:
            diffs = [a - b for a, b in zip(results[name], against[name], strict=True)]
            print(f"{name:<14} {statistics.median(against[name]):>14.3f} {statistics.median(results[name]):>12.3f}"
                  f"   {', '.join(f'{d:+.3f}' for d in diffs)} (median {statistics.median(diffs):+.3f})")


if __name__ == "__main__":
    main()
