"""The project's benches in one run, with short bounded settings, summed up in one table (``make bench``).

    .venv/bin/python bench/all.py [--only planner,failover,ingest,ingest-10k,ingest-grpc,dns,dns-swap,dns-swap-paced,dns-swap-dnssec,memory] [--long]
        [--timeout 900]

Each bench runs as its own process (its full output is kept under
``--out``, default a fresh temporary directory, and its last lines are shown
when it fails); this script reads the figures from that output and prints,
per figure: the value, the goal (issue 18; DNS from issue 10 §8), whether it
is met, and where a peer runs on this machine (knot for DNS) the ratio
measured in the same run. It asserts nothing and exits 0 whatever the figures
say, non-zero only when a bench could not run. The load average before and
after each bench is printed beside it: on a shared machine it moves every
figure. ``--long`` uses the issue's settings (30 failover trials, 60 s of
ingest, 3 DNS rounds) instead of the short ones, and adds the memory bench
(20 minutes of reports at 10,000 sites; it runs without --long only when
named in ``--only``).

docs/benchmarks.md records a table from this script with the machine, date
and commands.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Row:
    bench: str
    figure: str
    value: str
    goal: str
    met: str  # "yes" | "no" | "-" (no goal) | "n/a" (not measured)
    peer: str = ""


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]
    long_args: tuple[str, ...]
    parse: Callable[[str], list[Row]]
    long_only: bool = False  # too long for ``make bench``: runs with --long or when named in --only
    timeout: float = 0.0  # seconds it may take at least, whatever --timeout says


def _num(pattern: str, text: str, group: int = 1) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(group).replace(",", "")) if m else None


def _row(bench: str, figure: str, value: float | None, unit: str, goal: str,
         ok: Callable[[float], bool] | None, fmt: str = "{:.1f}", peer: str = "") -> Row:
    if value is None:
        return Row(bench, figure, "not found in output", goal, "n/a", peer)
    met = "-" if ok is None else ("yes" if ok(value) else "no")
    return Row(bench, figure, fmt.format(value) + unit, goal, met, peer)


def parse_planner(out: str) -> list[Row]:
    b = "planner"
    return [
        _row(b, "plan, 10k sites x 250 geos x 20 distinct services", _num(r"\| plan\s+([\d.]+) ms", out), " ms",
             "-", None),
        _row(b, "plan with previous table and ramps, planner.plan (no parts kept)",
             _num(r"plan\+previous\+ramps\s+([\d.]+) ms", out), " ms", "<= 100 ms", lambda v: v <= 100),
        _row(b, "the leader's plan starting the ramps (Replanner)", _num(r"leader's ramps: start\s+([\d.]+) ms", out),
             " ms", "<= 100 ms", lambda v: v <= 100),
        _row(b, "the same, the least of the runs (steadier on a shared machine)",
             _num(r"leader's ramps: start\s+[\d.]+ ms \(least ([\d.]+)\)", out), " ms", "<= 100 ms", lambda v: v <= 100),
        _row(b, "the leader's plan at a ramp step", _num(r"leader's ramps: .*?step\s+([\d.]+) ms", out), " ms",
             "<= 100 ms", lambda v: v <= 100),
        _row(b, "the leader's re-plan after one site's change while ramping",
             _num(r"one site's change while ramping\s+([\d.]+) ms", out), " ms", "-", None, "{:.2f}"),
        _row(b, "incremental re-plan after one site's change", _num(r"re-plan after one site's change\s+([\d.]+) ms",
                                                                    out), " ms", "<= 10 ms", lambda v: v <= 10,
             "{:.2f}"),
        _row(b, "config validation at that scale", _num(r"validate\s+(\d+) ms", out), " ms", "-", None, "{:.0f}"),
    ]


def parse_failover(out: str) -> list[Row]:
    b = "failover"
    window = _num(r"detection window \(fall x interval\): ([\d.]+)s", out)
    brk = _num(r"break -> answer without \S+: n=\d+ p50=[\d.]+s p99=([\d.]+)s", out)
    evac = _num(r"evacuate --now -> answer without \S+: n=\d+ p50=[\d.]+s p99=([\d.]+)s", out)
    trials = _num(r"break -> answer without \S+: n=(\d+)", out)
    n = f" over {trials:.0f} trials" if trials else ""
    limit = (window or 0.0) + 0.3
    return [
        _row(b, f"break -> answer without the region, p99{n}", brk, " s",
             f"<= window + 0.3 s = {limit:.2f} s" if window is not None else "<= window + 0.3 s",
             (lambda v: v <= limit) if window is not None else None, "{:.2f}"),
        _row(b, f"evacuate --now -> answer without it, p99{n}", evac, " s", "<= 0.3 s", lambda v: v <= 0.3,
             "{:.3f}"),
    ]


def parse_ingest(out: str) -> list[Row]:
    listener = re.search(r"^listener: (\w+)", out, re.M)
    b = "ingest" if listener is None or listener.group(1) == "ingest" else f"ingest ({listener.group(1)})"
    sites = _num(r"sites=(\d+)", out)
    rate = _num(r"reports/s sustained: ([\d,]+)", out)
    offered = _num(r"\(offered ([\d,]+)/s", out)
    per = _num(r"controller CPU: [\d.]+ cores \((\d+) µs per report\)", out)
    cores = _num(r"controller CPU: ([\d.]+) cores", out)
    writes = _num(r"etcd writes/s: ([\d.]+)", out)
    errors = _num(r"stream errors \(each followed by a reconnect\): (\d+)", out)
    generator = _num(r"load generator CPU: ([\d.]+) cores", out)
    at = f" at {sites:.0f} sites" if sites else ""
    return [
        _row(b, f"controller CPU per report{at}", per, " µs", "<= 60 µs", lambda v: v <= 60, "{:.0f}"),
        _row(b, f"reports/s sustained{at}", rate, f" of {offered:,.0f} offered" if offered else "",
             "= offered", (lambda v: v >= 0.98 * offered) if offered else None, "{:,.0f}"),
        _row(b, "controller CPU", cores, " cores", "-", None, "{:.2f}"),
        _row(b, "etcd writes/s", writes, "", "< 100/s", lambda v: v < 100),
        _row(b, "stream errors in the window (controller's refusals, ack timeouts)", errors, "", "0",
             lambda v: v == 0, "{:.0f}"),
        _row(b, "load generator CPU", generator, " cores", "-", None, "{:.2f}"),
    ]


def parse_dns(out: str) -> list[Row]:
    b = "dns"
    rows = []
    for mode in ("plain", "ecs", "subnets"):
        ratio = _num(rf"ratio ours/knot per core, steered name, {mode}\s*: median ([\d.]+)", out)
        # The per-core rate is the last column of the server's line.
        ours = _num(rf"(?m)^ours\s+{mode}\s.*\s(\d+)$", out)
        knot = _num(rf"(?m)^knot\s+{mode}\s.*\s(\d+)$", out)
        peer = f"ours {ours:,.0f} / knot {knot:,.0f} q/s per core" if ours and knot else ""
        rows.append(_row(b, f"queries/s per core vs knot, {mode} (RRL, cookies, NSID on)", ratio, " x knot",
                         ">= 0.90 x knot", lambda v: v >= 0.90, "{:.2f}", peer))
    knot2 = _num(r"knot udp-workers 2 / 1 cpu per query: ([\d.]+)", out)
    rows.append(_row(b, "--workers 2 CPU per query / --workers 1", _num(r"workers 2 / workers 1 cpu per query: ([\d.]+)",
                                                                       out),
                     "", "<= 1.10", lambda v: v <= 1.10, "{:.2f}",
                     f"knot udp-workers 2 / 1: {knot2:.2f}, same run" if knot2 is not None else ""))
    return rows


def parse_swap(out: str) -> list[Row]:
    b = "dns-swap"
    dnssec = "DNSSEC on" if "(DNSSEC on" in out else "DNSSEC off"
    paced = re.search(r"\(paced at ([\d.]+) queries/s each\)", out)
    if paced:
        dnssec += f", clients paced at {float(paced.group(1)):,.0f}/s"
    quiet = _num(r"longest gap between answers without swaps \(\d+ s\): ([\d.]+) ms", out)
    wait_quiet = _num(r"longest wait for an answer \(send -> kernel arrival stamp\) without swaps: ([\d.]+) ms", out)
    rtt_quiet = _num(r"longest round trip \(kernel send stamp -> kernel arrival stamp\) without swaps: ([\d.]+) ms", out)
    batch = re.search(r"server, longest UDP batch, datagrams received -> replies sent: without swaps ([\d.]+) ms, "
                      r"with a swap every second ([\d.]+) ms", out)
    wait = re.search(r"server, longest UDP wait for the interpreter once datagrams are in: without swaps ([\d.]+) ms, "
                     r"with a swap every second ([\d.]+) ms", out)
    query = re.search(r"server, longest UDP query, kernel receive stamp -> reply sent: without swaps ([\d.]+) ms, "
                      r"with a swap every second ([\d.]+) ms", out)
    return [
        _row(b, f"table swap render at 10k sites x 250 geos x 20 services ({dnssec})",
             _num(r"swap \(one site.*\): median ([\d.]+) s", out), " s", "<= 1 s", lambda v: v <= 1, "{:.2f}"),
        _row(b, f"full render, no previous table ({dnssec}{', new signing epoch' if 'on' in dnssec else ''})",
             _num(r"full \(no previous render.*\): median ([\d.]+) s", out), " s", "-", None, "{:.2f}"),
        # the clients' own waits for a core are in it (closed loop: answer -> next send), so it is shown, not
        # judged; the goal is judged on the figures that hold the server's time only (docs/benchmarks.md)
        _row(b, f"longest gap between answers seen by a client, tables changing ({dnssec})",
             _num(r"longest gap between answers with a swap every second \(\d+ s\): ([\d.]+) ms", out), " ms",
             "-", None, "{:.1f}",
             (f"{quiet:.1f} ms without swaps, same run; the clients' scheduling included" if quiet is not None
              else "")),
        _row(b, f"longest wait for an answer, send -> kernel arrival stamp, tables changing ({dnssec})",
             _num(r"longest wait for an answer \(send -> kernel arrival stamp\) with a swap every second: ([\d.]+) ms",
                  out), " ms", "-", None, "{:.1f}",
             f"{wait_quiet:.1f} ms without swaps, same run" if wait_quiet is not None else ""),
        _row(b, f"longest round trip, kernel send stamp -> kernel arrival stamp, tables changing ({dnssec})",
             _num(r"longest round trip \(kernel send stamp -> kernel arrival stamp\) with a swap every second: "
                  r"([\d.]+) ms", out), " ms", "-", None, "{:.1f}",
             f"{rtt_quiet:.1f} ms without swaps, same run" if rtt_quiet is not None else ""),
        # the goal: no answer stalls over 10 ms because of a swap; judged on the round trips a swap's decode or
        # apply_table overlapped (kernel stamps: nothing of the clients' scheduling), the rest shown beside
        _row(b, f"longest round trip overlapping a swap's decode or apply_table ({dnssec})",
             _num(r"longest round trip overlapping a swap's decode or apply_table: ([\d.]+) ms", out), " ms",
             "<= 10 ms", lambda v: v <= 10, "{:.1f}",
             (f"outside them {outside:.1f} ms, same run" if (outside := _num(
                 r"longest round trip outside them: ([\d.]+) ms", out)) is not None else "")),
        _row(b, f"the server's longest UDP query, kernel receive stamp -> reply sent, tables changing ({dnssec})",
             float(query.group(2)) if query else None, " ms", "-", None, "{:.1f}",
             f"{float(query.group(1)):.1f} ms without swaps, same run" if query else ""),
        _row(b, f"the server's longest UDP batch, received -> replies sent, tables changing ({dnssec})",
             float(batch.group(2)) if batch else None, " ms", "-", None, "{:.1f}",
             (f"{float(batch.group(1)):.1f} ms without swaps; of it waiting for the interpreter "
              f"{float(wait.group(2)) if wait else float('nan'):.1f} ms") if batch else ""),
    ]


def parse_memory(out: str) -> list[Row]:
    """RSS at half time and at the end, and the growth's least-squares slope over the second half: "no
    growth" is met when that slope is at most 1 % of the resident memory per 10 minutes (RSS moves by a few
    MiB from sample to sample, and a DNS worker's by ~10 MiB as each table replaces the last)."""
    rows = []
    for who, label in (("controller", "controller"),
                       (r"DNS server \(\d+ processes, summed\)", "DNS server (all processes)")):
        m = re.search(rf"(?m)^{who}: RSS at ([\d.]+) min ([\d.]+) MiB, at ([\d.]+) min ([\d.]+) MiB, growth "
                      r"([+-][\d.]+) MiB; slope over the second half ([+-][\d.]+|nan) MiB per 10 min", out)
        if not m:
            rows.append(Row("memory", f"{label} resident at 10k sites", "not found in output", "no growth", "n/a"))
            continue
        t1, rss1, t2, rss2, growth, slope = m.groups()
        rows.append(Row("memory", f"{label} resident (RSS) at {t1} / {t2} min, 10k sites",
                        f"{float(rss1):.0f} / {float(rss2):.0f} MiB", "-", "-"))
        ok = slope != "nan" and float(slope) <= 0.01 * float(rss1)
        rows.append(Row("memory", f"{label} growth {t1} -> {t2} min (least-squares slope)",
                        f"{growth} MiB ({slope} MiB / 10 min)", "no growth (slope <= 1 %)", "yes" if ok else "no"))
    return rows


BENCHES = {
    "planner": Bench("planner", ("bench/planner.py", "--distinct", "--regions", "20", "--runs", "5"),
                     ("bench/planner.py", "--distinct", "--regions", "20", "--runs", "9"), parse_planner),
    "failover": Bench("failover", ("bench/failover.py", "--trials", "10"), ("bench/failover.py", "--trials", "30"),
                      parse_failover),
    "ingest": Bench("ingest", ("bench/ingest.py", "--sites", "5000", "--seconds", "20"),
                    ("bench/ingest.py", "--sites", "5000", "--seconds", "60"), parse_ingest),
    "ingest-10k": Bench("ingest-10k", ("bench/ingest.py", "--sites", "10000", "--seconds", "20"),
                        ("bench/ingest.py", "--sites", "10000", "--seconds", "60"), parse_ingest),
    # the same load on the gRPC listener (grpc.aio), for the comparison
    "ingest-grpc": Bench("ingest-grpc", ("bench/ingest.py", "--sites", "5000", "--seconds", "20", "--listener", "grpc"),
                         ("bench/ingest.py", "--sites", "5000", "--seconds", "60", "--listener", "grpc"),
                         parse_ingest),
    "dns": Bench("dns", ("bench/dns_vs_knot.py", "--seconds", "4", "--repeat", "2"),
                 ("bench/dns_vs_knot.py", "--seconds", "8", "--repeat", "3"), parse_dns),
    "dns-swap": Bench("dns-swap", ("bench/dns_swap.py", "--seconds", "10", "--renders", "1", "--clients", "2"),
                      ("bench/dns_swap.py", "--seconds", "60", "--renders", "5", "--clients", "4"), parse_swap),
    # the same with the clients paced (2,000 queries/s each): cores to spare, so the wait is the server's own
    "dns-swap-paced": Bench("dns-swap-paced", ("bench/dns_swap.py", "--seconds", "10", "--renders", "1", "--clients",
                                               "2", "--rate", "2000"),
                            ("bench/dns_swap.py", "--seconds", "60", "--renders", "5", "--clients", "4", "--rate",
                             "2000"), parse_swap),
    "dns-swap-dnssec": Bench("dns-swap-dnssec",
                             ("bench/dns_swap.py", "--dnssec", "--seconds", "10", "--renders", "1", "--clients", "2"),
                             ("bench/dns_swap.py", "--dnssec", "--seconds", "60", "--renders", "5", "--clients", "4"),
                             parse_swap),
    # the goal's own settings both ways: 10 minutes of reports, then 10 more
    "memory": Bench("memory", ("bench/memory.py", "--minutes", "20"), ("bench/memory.py", "--minutes", "20"),
                    parse_memory, long_only=True, timeout=1800),
}

# What the table says of a long-only bench that did not run, so the table shows what is missing.
NOT_RUN = {
    "memory": Row("memory", "controller / DNS resident at 10k sites, growth over 10 min",
                  "not run (20 min: --long or --only memory)", "no growth", "n/a"),
}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated: " + ", ".join(BENCHES) + " (default: all but "
                    + ", ".join(n for n, b in BENCHES.items() if b.long_only) + ", which runs with --long)")
    ap.add_argument("--long", action="store_true", help="the issue's settings instead of the short ones")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per bench before it is stopped")
    ap.add_argument("--out", type=Path, default=None, help="directory for each bench's full output")
    args = ap.parse_args()
    names = ([n for n in args.only.split(",") if n] if args.only is not None
             else [n for n, b in BENCHES.items() if args.long or not b.long_only])
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"--only: unknown bench {', '.join(unknown)} (known: {', '.join(BENCHES)})", file=sys.stderr)
        return 2
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="steering-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.node()} {platform.machine()} {_cpu()} x{os.cpu_count()}, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    rows: list[Row] = []
    commands: list[str] = []
    failed = 0
    for name in names:
        bench = BENCHES[name]
        argv = bench.long_args if args.long else bench.args
        cmd = ".venv/bin/python " + " ".join(argv)
        commands.append(cmd)
        before = load()
        t0 = time.monotonic()
        print(f"[{name}] {cmd}  (load average before: {before})", flush=True)
        limit = max(args.timeout, bench.timeout)
        try:
            proc = subprocess.run([PY, *argv], cwd=ROOT, capture_output=True, text=True, timeout=limit)
            text, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            code = -1
            text += f"\n(stopped after {limit:.0f} s)"
        (out_dir / f"{name}.txt").write_text(text)
        print(f"[{name}] {time.monotonic() - t0:.0f} s, exit {code}, load average after: {load()}; "
              f"output: {out_dir / (name + '.txt')}", flush=True)
        if code != 0:
            failed += 1
            print("\n".join("    " + line for line in text.strip().splitlines()[-8:]))
        rows.extend(bench.parse(text))
    rows.extend(r for name, r in NOT_RUN.items() if name not in names)
    print()
    print(table(rows))
    return 1 if failed else 0


def table(rows: list[Row]) -> str:
    head = ("bench", "figure", "value", "goal", "met", "peer, same run")
    cells = [head] + [(r.bench, r.figure, r.value, r.goal, r.met, r.peer) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(head))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    sys.exit(main())
