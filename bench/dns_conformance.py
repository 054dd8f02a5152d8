"""Third-party conformance: Zonemaster against ``steering dns`` and against knot, same zone, no network.

    .venv/bin/python bench/dns_conformance.py [--level INFO] [--keep] [--dnssec]

Both servers serve ``deploy/examples/example.test.zone`` (zone ``example.test``)
unchanged; ours runs ``steering dns --no-etcd`` from
``deploy/examples/steering.yaml`` (via ``tests/support/dns_server.py``'s ``write_config``,
listen addresses replaced, every other dns setting as shipped: RRL, cookies
and NSID on; ``--dns JSON`` sets more) with a persisted table, and knot gets the
steered names as the fixed records that table gives these clients (the
default geo), so both answer every name alike.

Everything runs in a private network namespace (``unshare --net``) that has
nothing but its own loopback device: no packet can leave the machine, port 53
is free, and the zone's own name server addresses (192.0.2.53, 192.0.2.54,
2001:db8::53) are put on that loopback device, so each server listens exactly
where the zone says its name servers are and Zonemaster reaches every one of
them, over IPv4 and IPv6, UDP and TCP. The two servers run one after the
other on the same addresses.

zonemaster-cli runs an undelegated test (``--ns NAME/ADDR`` for every NS
address of the zone). There is no internet, so a knot on 127.0.0.4:53 is a
fake root (``--hints``): it serves an empty ``.`` zone, so every lookup
Zonemaster makes outside the tested zone (parent, reverse names, ASN look-ups)
ends at a local NXDOMAIN instead of a timeout.

The findings of both runs are compared by (module, tag); every tag that ours
has and knot does not is printed with its arguments, and the exit status is 1
when there is any (0 when none, 2 when a run could not be made). ``--keep``
keeps the work directory (both runs' JSON, logs, configs).

``--dnssec`` signs the zone on both sides (ours: a combined ECDSA P-256 key, docs/dnssec.md; knot: its
default policy) and gives zonemaster each server's DS (from the DNSKEY it publishes), so its DNSSEC test
cases run too.

Installs Debian ``zonemaster-cli`` and ``knot`` on demand (apt-get, before
entering the namespace). Needs root (namespaces). Every process started here
is stopped by PID, and the namespace goes away with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dnsserver.persist import save_table  # noqa: E402
from steering.config import Config, load_config  # noqa: E402
from tests.support import EXAMPLES, stop_process  # noqa: E402
from tests.support.dns_server import table_with, write_config  # noqa: E402
from tests.support.dnssec import signed_config  # noqa: E402

ZONE = "example.test."
FAKE_ROOT = "127.0.0.4"
NETNS_MARK = "STEERING_DNS_CONFORMANCE_NETNS"
LEVELS = ("DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL")


def ensure_packages(binaries: Mapping[str, str]) -> None:
    """apt-get install the packages whose binary (``{binary: package}``) is missing; update the lists once."""
    missing = sorted({pkg for binary, pkg in binaries.items()
                      if not (shutil.which(binary) or Path("/usr/sbin", binary).exists())})
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def knotd_path() -> str:
    return shutil.which("knotd") or "/usr/sbin/knotd"


# ---- the zone as both servers see it ----------------------------------------------------------

def fixed_steered_records(cfg: Config) -> str:
    """Zone-file lines giving each steered name the records a default-geo client gets from ``table_with``."""
    table = table_with(cfg, 1, {})
    default = next(g.id for g in cfg.geos if g.default)
    lines = []
    for svc in cfg.services:
        weights = table.services[svc.name].geos[default].weights
        target = max(weights, key=lambda t: weights[t])
        ans = svc.answers[target]
        for rdtype, values in (("A", ans.A), ("AAAA", ans.AAAA)):
            lines += [f"{svc.name} {svc.ttl} IN {rdtype} {v}" for v in values or ()]
        if ans.CNAME:
            lines.append(f"{svc.name} {svc.ttl} IN CNAME {ans.CNAME}")
    return "\n".join(lines) + "\n"


def knot_zone_text(cfg: Config, extra_zone: str = "") -> str:
    """The example zone file, ``extra_zone`` appended as ours gets it, and the steered names fixed."""
    text = (EXAMPLES / "example.test.zone").read_text()
    if extra_zone:
        text += "\n" + extra_zone + "\n"
    return text + "\n" + fixed_steered_records(cfg)


# ---- servers -----------------------------------------------------------------------------------

def _wait_answer(addr: str, port: int, qname: str, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    import dns.message
    import dns.query

    q = dns.message.make_query(qname, "SOA")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {addr}:{port} exited with {proc.returncode}")
        try:
            dns.query.udp(q, addr, port=port, timeout=0.3)
        except Exception:
            time.sleep(0.1)
            continue
        time.sleep(0.2)  # an answer from some other process on the port must not pass for ours
        if proc.poll() is not None:
            raise RuntimeError(f"server for {addr}:{port} exited with {proc.returncode}")
        return
    raise RuntimeError(f"server on {addr}:{port} did not answer")


def start_knot(work: Path, listens: Sequence[tuple[str, int]], zones: Iterable[tuple[str, str]],
               server_extra: str = "", extra: str = "", dnssec: bool = False) -> subprocess.Popen[bytes]:
    """knotd serving ``zones`` ((domain, zone text)) on ``listens``; answers before this returns."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    zone_items = []
    first = ""
    for domain, text in zones:
        fname = ("root" if domain == "." else domain.rstrip(".")) + ".zone"
        (work / fname).write_text(text)
        zone_items.append(f"  - domain: \"{domain}\"\n    storage: \"{work}\"\n    file: \"{fname}\"\n"
                          + ("    dnssec-signing: on\n" if dnssec and domain != "." else ""))
        first = first or domain
    listen = "\n".join(f"    listen: {a}@{p}" for a, p in listens)
    conf = work / "knot.conf"
    conf.write_text(f"""server:
    rundir: "{work}"
{listen}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
{server_extra}
database:
    storage: "{work}"
log:
  - target: stderr
    any: warning
{extra}
zone:
{''.join(zone_items)}""")
    check = subprocess.run([shutil.which("knotc") or "/usr/sbin/knotc", "-c", str(conf), "conf-check"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"knot config rejected: {check.stdout}{check.stderr}")
    with open(work / "knotd.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([knotd_path(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_answer(listens[0][0], listens[0][1], first, time.monotonic() + 20, proc)
    except Exception:
        stop_process(proc, 10)
        raise RuntimeError(f"knot did not start: {(work / 'knotd.log').read_text()[-2000:]}") from None
    return proc


def ours_config(work: Path, listens: Sequence[tuple[str, int]], extra_zone: str = "",
                dns: Mapping[str, Any] | None = None, dnssec: bool = False) -> Path:
    """The example config for ours on ``listens`` with ``dns`` settings on top, the default-geo table persisted;
    ``dnssec``: the zone signed with a combined ECDSA P-256 key (docs/dnssec.md)."""
    listen = [f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in listens]
    settings = {"listen": listen, **(dns or {})}
    if dnssec:
        config = signed_config(work, extra_zone=extra_zone, dns_settings=settings)[0]
    else:
        config = write_config(work, dns=settings, extra_zone=extra_zone)
    save_table(work / "dns-table.json", table_with(load_config(config), 1, {}))
    return config


def start_ours(work: Path, listens: Sequence[tuple[str, int]], extra_zone: str = "",
               dns: Mapping[str, Any] | None = None, dnssec: bool = False) -> subprocess.Popen[bytes]:
    """``steering dns --no-etcd`` on ``listens``; answers before this returns."""
    config = ours_config(work, listens, extra_zone, dns, dnssec)
    with open(work / "steering-dns.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-c", "from steering.cli.main import main; main()", "dns",
                                 "--config", str(config), "--no-etcd"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for addr, port in listens:
            _wait_answer(addr, port, ZONE, time.monotonic() + 30, proc)
    except Exception:
        stop_process(proc, 10)
        raise RuntimeError(f"steering dns did not start: {(work / 'steering-dns.log').read_text()[-3000:]}") from None
    return proc


# ---- zonemaster ---------------------------------------------------------------------------------

ROOT_ZONE = f""". 86400 IN SOA ns.fake-root. hostmaster.fake-root. 1 1800 900 604800 86400
. 86400 IN NS ns.fake-root.
ns.fake-root. 86400 IN A {FAKE_ROOT}
"""
HINTS = f""".                        3600000      NS    ns.fake-root.
ns.fake-root.            3600000      A     {FAKE_ROOT}
"""


def zone_ds(addr: str) -> list[str]:
    """The DS (SHA-256, zonemaster's ``--ds`` form) of every SEP key the server at ``addr`` publishes."""
    import dns.dnssec
    import dns.message
    import dns.query
    import dns.rdatatype

    reply = dns.query.tcp(dns.message.make_query(ZONE, "DNSKEY", want_dnssec=True), addr, port=53, timeout=5)
    out = []
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.DNSKEY:
            for key in rrset:
                if key.flags & 1:  # SEP
                    ds = dns.dnssec.make_ds(ZONE, key, "SHA256")
                    out.append(f"{ds.key_tag},{ds.algorithm},{ds.digest_type},{ds.digest.hex()}")
    if not out:
        raise RuntimeError(f"no signed DNSKEY RRset at {addr}")
    return out


def zonemaster(work: Path, servers: Sequence[tuple[str, str]], level: str, timeout: float,
               ds: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One undelegated run against ``servers`` ((NS name, address)): its JSON entries (level, module, tag, args);
    ``ds``: the parent's DS records to check the zone's keys against (a signed zone)."""
    hints = work / "hints.zone"
    hints.write_text(HINTS)
    cmd = ["zonemaster-cli", "--json", "--no-progress", "--level", level, "--hints", str(hints)]
    for record in ds:
        cmd += ["--ds", record]
    for name, addr in servers:
        cmd += ["--ns", f"{name.rstrip('.')}/{addr}"]
    cmd.append(ZONE.rstrip("."))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work,
                         env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"zonemaster-cli output not understood (exit {out.returncode}):\n"
                           f"{out.stdout[-2000:]}{out.stderr[-2000:]}") from None
    return list(data)


def zone_name_servers(path: Path, origin: str) -> list[tuple[str, str]]:
    """(NS name, address) for every in-zone NS name's A and AAAA records in the zone file."""
    import dns.rdatatype
    import dns.zone

    zone = dns.zone.from_file(str(path), origin=origin, relativize=False)
    out = []
    for ns in zone.find_rdataset(origin, dns.rdatatype.NS):
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            rds = zone.get_rdataset(ns.target, rdtype)
            out += [(ns.target.to_text(), rd.address) for rd in rds or ()]
    return out


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def enter_netns(argv: Sequence[str], timeout: float) -> int:
    """Run this script again inside a new network namespace (only ``lo``); its exit status."""
    env = {**os.environ, NETNS_MARK: "1"}
    try:
        return subprocess.run(["unshare", "--net", "--", sys.executable, str(Path(__file__).resolve()), *argv],
                              env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print("timed out", file=sys.stderr)
        return 2


def setup_netns(addresses: Iterable[str]) -> None:
    """Loopback up, and the given addresses on it (this namespace only: nothing routes out of it)."""
    _ip("link", "set", "lo", "up")
    for addr in addresses:
        if addr.startswith("127.") or addr == "::1":
            continue
        _ip("addr", "add", f"{addr}/{128 if ':' in addr else 32}", "dev", "lo")


def findings(entries: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    out: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for e in entries:
        out.setdefault((str(e.get("module")), str(e.get("tag"))), []).append(e)
    return out


def _fmt(e: Mapping[str, Any]) -> str:
    args = e.get("args") or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(args.items())) if isinstance(args, dict) else str(args)
    return f"    {e.get('level', '?'):8} {text[:300]}"


def run(args: argparse.Namespace) -> int:
    """Inside the namespace: both runs and the comparison; the exit status."""
    servers = zone_name_servers(EXAMPLES / "example.test.zone", ZONE)
    addrs = sorted({a for _, a in servers})
    setup_netns([*addrs, FAKE_ROOT])
    listens = [(a, 53) for a in addrs]
    work = Path(tempfile.mkdtemp(prefix="dnsconf-"))
    cfg = load_config(write_config(work / "cfg"))
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        procs.append(start_knot(work / "root", [(FAKE_ROOT, 53)], [(".", ROOT_ZONE)]))
        for name in ("ours", "knot"):
            if name == "ours":
                proc = start_ours(work / "ours", listens, dns=json.loads(args.dns), dnssec=args.dnssec)
            else:
                proc = start_knot(work / "knot", listens, [(ZONE, knot_zone_text(cfg))], dnssec=args.dnssec)
            procs.append(proc)
            try:
                t0 = time.monotonic()
                ds = zone_ds(listens[0][0]) if args.dnssec else []
                results[name] = zonemaster(work, servers, args.level, args.timeout, ds)
                print(f"{name}: zonemaster-cli gave {len(results[name])} messages at {args.level} or above"
                      f" in {time.monotonic() - t0:.1f} s", flush=True)
            finally:
                stop_process(proc, 10)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        for p in procs:
            stop_process(p, 10)
        for name, entries in results.items():
            (work / f"zonemaster-{name}.json").write_text(json.dumps(entries, indent=1))
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return compare(results["ours"], results["knot"])


def compare(ours_entries: list[dict[str, Any]], knot_entries: list[dict[str, Any]]) -> int:
    ours, knot = findings(ours_entries), findings(knot_entries)
    extra = sorted(set(ours) - set(knot))
    gone = sorted(set(knot) - set(ours))
    print(f"tags: ours {len(ours)}, knot {len(knot)}, only ours {len(extra)}, only knot {len(gone)}")
    for key in gone:
        print(f"only knot: {key[0]}/{key[1]} ({knot[key][0].get('level')})")
        for e in knot[key][:3]:
            print(_fmt(e))
    for key in extra:
        entries = sorted(ours[key], key=lambda e: LEVELS.index(str(e.get("level", "INFO"))), reverse=True)
        print(f"ONLY OURS: {key[0]}/{key[1]} ({len(entries)}x)")
        for e in entries[:5]:
            print(_fmt(e))
    print(f"{len(extra)} findings ours has and knot does not")
    return 1 if extra else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", default="INFO", choices=LEVELS, help="least severe level compared")
    ap.add_argument("--timeout", type=float, default=900.0, help="bound on each zonemaster run (seconds)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, zone files, JSON)")
    ap.add_argument("--dnssec", action="store_true",
                    help="both zones signed (ours: a combined key, docs/dnssec.md; knot: its default policy), "
                         "zonemaster given each one's DS: its DNSSEC test cases run")
    ap.add_argument("--dns", default="{}", help="JSON object of dns settings for ours on top of the example's"
                    " (default: none, so RRL, cookies and NSID are on as shipped)")
    args = ap.parse_args()
    if not isinstance(json.loads(args.dns), dict):
        sys.exit("--dns takes a JSON object, e.g. '{\"rrl\": {\"enabled\": false}}'")
    if os.environ.get(NETNS_MARK) == "1":
        sys.exit(run(args))
    if os.geteuid() != 0:
        sys.exit("needs root: a private network namespace, and port 53 in it")
    ensure_packages({"zonemaster-cli": "zonemaster-cli", "knotd": "knot"})
    sys.exit(enter_netns(sys.argv[1:], timeout=3 * args.timeout + 120))


if __name__ == "__main__":
    main()
