"""Table swaps in the DNS server at planner-bench scale: render time, and the longest gap between answers
while a new table arrives every second.

    .venv/bin/python bench/dns_swap.py [--seconds 20] [--renders 5] [--clients 4] [--dnssec] [--rate N]

The topology of ``bench/planner.py --distinct`` (10,000 sites, 250 geos, 20
services, 20 regions), with RRL, cookies and NSID on as shipped (the bench's
own 127.0.0.0/8 exempt from limiting, as in ``bench/dns_vs_knot.py``);
``--dnssec``: the zone signed (one ECDSAP256SHA256 combined key, written to a
temporary directory) and the clients ask with DO=1.

* render, CPU time (process time), median of ``--renders``:
  - swap: ``DnsServer._render`` of a table with one site's health flipped
    (``steering.replan``), following the table served (what every table
    change costs: ``render.Reuse`` takes what did not change from it; goal:
    at most 1 s);
  - full: ``render.build_snapshot`` without a previous render (a server's
    start, a new config); with ``--dnssec`` in a new signing epoch, every
    signature made again (the re-signing every half validity, a key reload);
  - install: ``DnsServer.install`` of a swap's render (the fast path's
    tables built from the entries; ``apply_table`` does that in the
    render's thread, the loop only swaps references);
* gap: a ``DnsServer`` in this process (its UDP threads, as ``steering dns``
  runs them in each worker, and the daemon's ``tune_interpreter``) answers ``--clients`` client processes, each
  asking one steered name in a closed loop (send, wait for the answer, 0.5 s
  timeout); every second the bench plans a new table (one site's health
  flipped, through ``steering.replan``) and hands it to ``apply_table``, which
  renders off the event loop and swaps; as in ``steering dns``, the server
  gets the table decoded from its stored bytes (``steering.store.codec``, in
  a thread, as the store's watch does, and like a DNS worker's store without
  the sites' states: ``serving_only``), objects of its own, so the one it
  replaces is freed at the swap. The tables are planned and encoded before
  the clients start (a controller's work, not the DNS server's). Each client records when every answer
  arrived; the longest time between two consecutive answers of one client,
  over the run, is shown, with the same figure for a first stretch without
  swaps for comparison. A timeout counts as a gap. It holds the client's
  own waits for a core between an answer and its next query, so the goal
  is not judged on it (round trip, below).
  The longest gaps are named by what this process was doing meanwhile: the
  table's decode, ``apply_table``, a collection of the cyclic garbage
  collector, or "between" (none of them: the clients' own scheduling, or
  what this bench does not time).
* wait: per query, from just before the client sends it to the kernel's
  arrival stamp of its answer (``SO_TIMESTAMPNS``), longest and p99, without
  and with swaps. The gap above also holds the client's own waits for a core
  (two clients, the server's UDP thread and the render share 2 cores here);
  the wait does not: it is what a query spent between the client and the
  server, the server's stall included.
* round trip: per query, from the kernel's send stamp of the query
  (``SO_TIMESTAMPING``) to its arrival stamp of the answer: the wait without
  the client's own wait for a core between reading the clock and sending.
  The goal (answering never stalls over 10 ms during a swap) is judged on
  the longest round trip that a swap's decode or ``apply_table`` overlapped;
  the longest of the others (between swaps: the machine's own stalls, the
  server's collections) is printed beside it, as is the figure without swaps.
* server: what the server's UDP loop measures of itself (the histograms it
  exports, ``steering_dns_udp_query_seconds``, ``..._batch_seconds`` and
  ``..._interpreter_wait_seconds``, and the longest of each): per query
  answered, from the kernel's receive stamp to its reply sent (the time a
  query spent in the server, its wait in the socket included); per batch, from ``recvmmsg`` returning to the replies sent,
  and of that the wait for the interpreter. None holds a client's
  scheduling; all hold the server's threads waiting for a core and for the
  interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dns.message  # noqa: E402
import dns.name  # noqa: E402
import dns.rdatatype  # noqa: E402

from bench.planner import build  # noqa: E402
from dnsserver.dnssec import Signing, write_key  # noqa: E402
from dnsserver.metrics import UDP_BATCH, UDP_LATENCY_BOUNDS, UDP_LATENCY_SLOTS, UDP_QUERY, UDP_WAIT  # noqa: E402
from dnsserver.render import build_snapshot  # noqa: E402
from steering.config import Config, parse_config  # noqa: E402
from steering.model import Observed, Overrides, TargetHealth  # noqa: E402
from steering.replan import Replanner  # noqa: E402
from steering.store import codec  # noqa: E402

NAME = "svc01.example.test."
# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS, asm-generic and x86): Python 3.11's socket module does not name it
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
# linux/net_tstamp.h: a software stamp of each datagram as it leaves (on loopback: in the send call itself),
# handed back on the socket's error queue without the packet
SOF_TIMESTAMPING_TX_SOFTWARE, SOF_TIMESTAMPING_SOFTWARE, SOF_TIMESTAMPING_OPT_TSONLY = 1 << 1, 1 << 4, 1 << 11


def tx_stamp(sock: socket.socket) -> int | None:
    """The kernel's send stamp (ns, CLOCK_REALTIME) of the last datagram sent, from the error queue; None if
    none is there (yet)."""
    try:
        _, anc, _, _ = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return int(sec * 1_000_000_000 + nsec)
    return None


def config(keys: Path | None) -> tuple[Config, Observed]:
    """The planner bench's topology served as shipped; ``keys``: sign the zone with a key written there."""
    data, observed = build(20, distinct=True)
    data["dns"] = {"listen": ["127.0.0.1:0"], "nsid": True, "cookies": {"enabled": True},
                   "rrl": {"enabled": True, "exempt": ["127.0.0.0/8"]}}
    if keys is not None:
        key = write_key(keys, dns.name.from_text("example.test."), "ECDSAP256SHA256", "csk")[0]
        data["zones"] = [{"origin": "example.test.", "dnssec": {"algorithm": "ECDSAP256SHA256",
                                                               "keys": [str(key)]}}]
    return parse_config(data, "<bench>"), observed


def client(port: int, seconds: float, start: float, dnssec: bool, rate: float = 0.0) -> None:
    """One client: prints, as JSON, the answer times (monotonic) of the window and each query's wait: from
    just before its send to the kernel's arrival stamp of its answer (``SO_TIMESTAMPNS``), a figure this
    process's own scheduling does not stretch (it is stamped while the process may be waiting for a core),
    unlike the gap between answers, which does; and each query's round trip between the kernel's send stamp
    of the query and its arrival stamp of the answer (``SO_TIMESTAMPING``), which this process's scheduling
    cannot stretch at all: a client waiting for a core between reading the clock and sending stretches the
    wait, not the round trip. Closed loop (the next query as soon as an answer came), or
    with ``rate`` paced: a query every 1/rate s (none made up for when it fell behind), so the machine keeps
    cores free and the wait is the server's."""
    wire = dns.message.make_query(NAME, dns.rdatatype.A, want_dnssec=dnssec).to_wire()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
                        | SOF_TIMESTAMPING_OPT_TSONLY)
        stamped = True
    except OSError:
        stamped = False
    rtts: list[float | None] = []
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.5)
    times: list[float] = []
    waits: list[float] = []
    timeouts = 0
    anc_size = socket.CMSG_SPACE(16)
    while time.monotonic() < start:
        time.sleep(0.01)
    until = start + seconds
    pace = 1.0 / rate if rate > 0 else 0.0
    due = start
    while (now := time.monotonic()) < until:
        if pace:
            due += pace
            if due > now:
                time.sleep(due - now)
            elif now - due > pace:
                due = now  # fell behind (this process waited for a core): on from now, no burst
        sent = time.time_ns()  # CLOCK_REALTIME, the kernel stamp's clock
        sock.send(wire)
        # taken at once: an unread stamp would keep the socket "ready" and the wait for the answer would spin
        kernel_sent = tx_stamp(sock) if stamped else None
        try:
            _, anc, _, _ = sock.recvmsg(4096, anc_size)
            times.append(time.monotonic())
            if stamped and kernel_sent is None:
                kernel_sent = tx_stamp(sock)
            arrived = None
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack("qq", data[:16])
                    arrived = sec * 1_000_000_000 + nsec
                    waits.append((arrived - sent) / 1e9)
            rtts.append(None if arrived is None or kernel_sent is None else (arrived - kernel_sent) / 1e9)
        except TimeoutError:
            timeouts += 1
            times.append(now + 0.5)  # the gap runs on through a lost answer
            waits.append(0.5)
            rtts.append(0.5)
    print(json.dumps({"times": times, "waits": waits, "rtts": rtts, "timeouts": timeouts}))


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def flip(health: dict[str, TargetHealth], site: str) -> None:
    h = health[site]
    health[site] = TargetHealth(status="healthy" if h.status == "unhealthy" else "unhealthy", capacity=h.capacity,
                                load=h.load)


def during_what(phases: list[tuple[str, float, float]], start: float, end: float) -> str:
    """What of ``phases`` overlapped ``start``..``end`` (1 ms either side), by name: "in decode+gc"; "between"
    when nothing did (the clients' own scheduling, or something this bench does not time)."""
    names = sorted({name for name, a, b in phases if a - 0.001 <= end and start <= b + 0.001})
    return "in " + "+".join(names) if names else "between"


def median_line(times: list[float]) -> str:
    return f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})"


async def run(seconds: float, renders: int, nclients: int, dnssec: bool, rate: float = 0.0) -> int:
    from dnsserver.server import DnsServer

    keys = tempfile.TemporaryDirectory()  # kept until the end: the server looks at its key files while it runs
    cfg, observed = config(Path(keys.name) if dnssec else None)
    replanner = Replanner()
    health = dict(observed.health)
    table = replanner.plan(cfg, Observed(health=dict(health), demand=observed.demand), Overrides(), None, 0.0)
    server = DnsServer(cfg, table, tune_interpreter=True)  # as the daemon
    decoding = [False]
    server.table_arriving = lambda: decoding[0]
    signed = "DNSSEC on, ECDSAP256SHA256" if dnssec else "DNSSEC off"
    sites = [s.id for s in cfg.sites]
    full: list[float] = []
    made = 0
    for _ in range(renders):
        gc.collect()
        signing = Signing.create(server.zone_keys, counter=[0]) if server.signing is not None else None
        t0 = time.process_time()
        build_snapshot(cfg, server.zones, server.geomap, table, server.stats, signing)
        full.append(time.process_time() - t0)
        made = signing.signatures_made() if signing is not None else 0
    swap: list[float] = []
    install: list[float] = []
    for i in range(renders):
        flip(health, sites[(1000 + i) * 37 % len(sites)])
        table = replanner.plan(cfg, Observed(health=dict(health), demand=observed.demand), Overrides(), table,
                               float(i + 1))
        gc.collect()
        t0 = time.process_time()
        snap = server._render(table)
        swap.append(time.process_time() - t0)
        t0 = time.process_time()
        server.install(snap)
        install.append(time.process_time() - t0)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"render at {len(cfg.sites)} sites, {len(cfg.geos)} geos, {len(cfg.services)} services ({signed}), CPU:")
    print(f"  swap (one site's health flipped, after the table served): {median_line(swap)}; goal <= 1 s")
    print(f"  full (no previous render{', new signing epoch: ' + str(made) + ' signatures' if dnssec else ''}): "
          f"{median_line(full)}")
    print(f"  install of a swap's render (the fast path's tables; apply_table builds them in its thread): "
          f"{median_line(install)}")
    # The tables of the run, planned and encoded now, as a controller would have (elsewhere): while the
    # clients ask, this process does only what a DNS server does with a table, decode and apply it.
    stored: list[codec.Encoded] = []
    for i in range(int(seconds) + 1):
        flip(health, sites[i * 37 % len(sites)])
        table = replanner.plan(cfg, Observed(health=dict(health), demand=observed.demand), Overrides(), table,
                               float(renders + i + 1))
        stored.append(codec.encode_table(table, 1 << 20))
    del table
    # objects the server froze (DnsServer._settle): counted before the clients start and after they stop
    # (the count walks every frozen object, holding the interpreter)
    frozen = [gc.get_freeze_count()]
    await server.start(["127.0.0.1:0"])
    port = server.addresses[0][1]
    quiet = max(3.0, seconds / 4)
    start = time.monotonic() + 3.0  # the clients' start-up
    # what this process was doing when an answer was late: (what, start, end), the collector's runs
    # included (the server's own, on its loop, between swaps)
    phases: list[tuple[str, float, float]] = []
    collecting: list[float] = []

    def collector(event: str, _info: dict[str, int]) -> None:
        if event == "start":
            collecting.append(time.monotonic())
        elif collecting:
            phases.append(("gc", collecting.pop(), time.monotonic()))

    gc.callbacks.append(collector)
    procs = [subprocess.Popen([sys.executable, __file__, "--client", str(port), "--seconds", str(quiet + seconds),
                               "--start", repr(start), "--rate", repr(rate), *(["--dnssec"] if dnssec else [])],
                              stdout=subprocess.PIPE,
                              text=True)
             for _ in range(nclients)]
    try:
        swaps_from = start + quiet
        await asyncio.sleep(max(0.0, swaps_from - time.monotonic()))
        # the server's own view (its UDP loops time every batch): the stretch without swaps ends here
        quiet_timings = server.stats.udp_timings.tolist()
        for at in (UDP_WAIT, UDP_BATCH, UDP_QUERY):
            server.stats.udp_timings[at + UDP_LATENCY_SLOTS - 1] = 0  # the longest, from now on
        swaps = 0
        render_wall: list[float] = []
        while time.monotonic() < swaps_from + seconds - 0.5 and swaps < len(stored):
            tick = time.monotonic()
            # as shipped: the table decoded from the bytes etcd holds, in a thread (the store's watch does
            # that), objects of its own; the apply_table window starts after it, the gaps count it too
            enc = stored[swaps]
            t0 = time.monotonic()
            decoding[0] = True  # as the store's ``decoding`` tells a DNS worker
            try:
                served = await asyncio.to_thread(codec.decode_table, enc.pointer, enc.chunks, True)
            finally:
                decoding[0] = False
            phases.append(("decode", t0, time.monotonic()))
            t0 = time.monotonic()
            await server.apply_table(served)
            del served
            render_wall.append(time.monotonic() - t0)
            phases.append(("apply_table", t0, time.monotonic()))
            swaps += 1
            await asyncio.sleep(max(0.0, tick + 1.0 - time.monotonic()))
        outs = [json.loads((p.communicate()[0] or "{}").strip().splitlines()[-1]) for p in procs]
        timings = server.stats.udp_timings.tolist()
    finally:
        if collector in gc.callbacks:
            gc.callbacks.remove(collector)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        await server.close()
        keys.cleanup()
    frozen.append(gc.get_freeze_count())
    gc.unfreeze()
    cyclic = gc.collect()  # garbage in reference cycles the freezes kept: what _settle would leak
    before: list[float] = []
    during: list[float] = []
    longest: list[tuple[float, float]] = []  # (gap, when it ended) with swaps
    quiet_longest: list[tuple[float, float]] = []  # the same without
    waits_before: list[float] = []
    waits_during: list[float] = []
    rtts_before: list[float] = []
    rtts_during: list[float] = []
    timed_during: list[tuple[float, float, float]] = []  # (round trip, answer's time, wait), with swaps
    answers = timeouts = 0
    for out in outs:
        ts = out["times"]
        answers += len(ts)
        timeouts += out["timeouts"]
        early = [t for t in ts if t < swaps_from]
        before += gaps(early)
        quiet_longest += [(b - a, b) for a, b in itertools.pairwise(early)]
        late = [t for t in ts if t >= swaps_from]
        during += gaps(late)
        longest += [(b - a, b) for a, b in itertools.pairwise(late)]
        ws = out.get("waits", [])
        if len(ws) == len(ts):  # one per answer (a kernel stamp always came): split as the times are
            waits_before += [w for w, t in zip(ws, ts, strict=True) if t < swaps_from]
            waits_during += [w for w, t in zip(ws, ts, strict=True) if t >= swaps_from]
        rs = out.get("rtts", [])
        if len(rs) == len(ts):  # None where a stamp did not come
            rtts_before += [r for r, t in zip(rs, ts, strict=True) if r is not None and t < swaps_from]
            rtts_during += [r for r, t in zip(rs, ts, strict=True) if r is not None and t >= swaps_from]
            if len(ws) == len(ts):  # each round trip with its answer's time and wait, to name what overlapped it
                timed_during += [(r, t, w) for r, t, w in zip(rs, ts, ws, strict=True)
                                 if r is not None and t >= swaps_from]
    print(f"load average {os.getloadavg()[0]:.2f}")
    paced = f"paced at {rate:g} queries/s each" if rate > 0 else "closed loop"
    print(f"{nclients} clients ({paced}), {answers} answers, {timeouts} timeouts; {swaps} swaps, apply_table wall time "
          f"median {statistics.median(render_wall):.3f} s, max {max(render_wall):.3f} s")
    if swaps:
        print(f"objects frozen before the clients {frozen[0]:,}, after {swaps} swaps {frozen[-1]:,}; "
              f"cyclic garbage found when unfrozen at the end: {cyclic:,} objects")
    if before:
        gap, end = max(quiet_longest)
        print(f"longest gap between answers without swaps ({quiet:.0f} s): {max(before) * 1e3:.1f} ms "
              f"(p99 {sorted(before)[int(len(before) * 0.99)] * 1e3:.2f} ms; {during_what(phases, end - gap, end)})")
    if longest:
        top = sorted(longest, reverse=True)[:5]
        inside = [during_what(phases, end - gap, end) for gap, end in top]
        print("the longest gaps with swaps: " + ", ".join(f"{g * 1e3:.1f} ms ({w})" for (g, _), w in zip(top, inside,
                                                                                                     strict=True)))
    if during:
        print(f"longest gap between answers with a swap every second ({seconds:.0f} s): {max(during) * 1e3:.1f} ms "
              f"(p99 {sorted(during)[int(len(during) * 0.99)] * 1e3:.2f} ms; the clients' scheduling included)")
    def top5(ws: list[float]) -> str:
        return ", ".join(f"{w * 1e3:.1f}" for w in sorted(ws, reverse=True)[:5])

    if waits_before and waits_during:
        print(f"longest wait for an answer (send -> kernel arrival stamp) without swaps: {max(waits_before) * 1e3:.1f} ms"
              f" (p99 {sorted(waits_before)[int(len(waits_before) * 0.99)] * 1e3:.2f} ms; top 5: {top5(waits_before)})")
        print(f"longest wait for an answer (send -> kernel arrival stamp) with a swap every second: "
              f"{max(waits_during) * 1e3:.1f} ms (p99 {sorted(waits_during)[int(len(waits_during) * 0.99)] * 1e3:.2f}"
              f" ms; top 5: {top5(waits_during)})")
    if server.stats.udp_timed:
        print_server_view(quiet_timings, timings)
    if rtts_before and rtts_during:
        for what, rs in (("without swaps", rtts_before), ("with a swap every second", rtts_during)):
            print(f"longest round trip (kernel send stamp -> kernel arrival stamp) {what}: {max(rs) * 1e3:.1f} ms "
                  f"(p99 {sorted(rs)[int(len(rs) * 0.99)] * 1e3:.2f} ms; top 5: {top5(rs)})")
    if timed_during:
        # Which round trips a swap's work overlapped: the query's flight is taken as the answer's time less
        # the longer of its wait and its round trip, less 1 ms (during_what's margin): a window that errs
        # long, so a late answer near a swap counts as the swap's.
        swap_work = [p for p in phases if p[0] in ("decode", "apply_table")]
        in_swap: list[float] = []
        out_swap: list[float] = []
        for r, t, w in timed_during:
            (out_swap if during_what(swap_work, t - max(r, w), t) == "between" else in_swap).append(r)
        if in_swap:
            print(f"longest round trip overlapping a swap's decode or apply_table: {max(in_swap) * 1e3:.1f} ms "
                  f"({len(in_swap):,} round trips; top 5: {top5(in_swap)}; goal <= 10 ms)")
        if out_swap:
            print(f"longest round trip outside them: {max(out_swap) * 1e3:.1f} ms ({len(out_swap):,} round trips; "
                  f"top 5: {top5(out_swap)}; between swaps: the machine's own stalls, and the server's collections)")
    return 0


def print_server_view(quiet: list[int], whole: list[int]) -> None:
    """The server's own figures (``steering_dns_udp_query_seconds``, ``..._batch_seconds`` and
    ``..._interpreter_wait_seconds``, with the longest of each that the histograms round up to a bucket): per
    UDP query answered, from the kernel's receive stamp to its reply sent (its wait in the socket included);
    per batch, from ``recvmmsg`` returning to its replies sent, and of that its wait for the interpreter. No
    client's scheduling in them; the server's threads being descheduled, and the swap's thread holding the
    interpreter, are."""
    n = len(UDP_LATENCY_BOUNDS) + 1
    for at, what in ((UDP_QUERY, "query, kernel receive stamp -> reply sent"),
                     (UDP_BATCH, "batch, datagrams received -> replies sent"),
                     (UDP_WAIT, "wait for the interpreter once datagrams are in")):
        before = quiet[at:at + n]
        during = [b - a for a, b in zip(before, whole[at:at + n], strict=True)]
        over = sum(c for bound, c in zip((*UDP_LATENCY_BOUNDS, math.inf), during, strict=True) if bound > 0.005)
        unit = "queries" if at == UDP_QUERY else "batches"
        print(f"server, longest UDP {what}: without swaps {quiet[at + n + 1] / 1e6:.1f} ms, with a swap every "
              f"second {whole[at + n + 1] / 1e6:.1f} ms ({sum(during):,} {unit}, {over:,} over 5 ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of swaps (bounded)")
    ap.add_argument("--renders", type=int, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--dnssec", action="store_true", help="sign the zone; the clients ask with DO=1")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="queries/s per client, paced (0: closed loop, each client asks as fast as it is answered)")
    ap.add_argument("--client", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client is not None:
        client(args.client, args.seconds, args.start, args.dnssec, args.rate)
        return
    rate = max(0.0, min(args.rate, 100_000.0)) if math.isfinite(args.rate) else 0.0
    sys.exit(asyncio.run(run(min(args.seconds, 600.0), args.renders, args.clients, args.dnssec, rate)))


if __name__ == "__main__":
    main()
