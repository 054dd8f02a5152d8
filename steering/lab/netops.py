"""The lab's only contact with the kernel's networking: ``ip`` and ``tc`` commands, nothing decided here.

On a kernel without sch_netem ``build(topo, relay=True)`` also makes the relay
namespace and passes each region's link through it (steering/lab/relay.py
makes the delay there).

``build`` makes the namespaces, the bridge and the veth pairs of a topology and
gives every direction its own leaf qdisc (an HTB class per destination region,
selected by a u32 filter on the destination address): netem (delay, jitter,
loss; a cut is 100 % loss), or on a kernel without sch_netem a FIFO whose limit
is 0 while the pair is cut. ``shape`` changes one pair's leaves; ``etcd_cut``
sends a region's etcd peer traffic (port 2380) to a class that drops everything
(u32 port filters, matched first); ``remove`` deletes namespaces (their veths
and qdiscs go with them).

Random loss without netem: ``set_loss`` writes an nftables table of the lab's own
(``NFT_TABLE``) in a region's namespace, one rule per destination region that
drops that share of what the region sends there (``numgen random``); both
regions of a pair get one, so the loss is each way. Namespaces take their tables
with them when removed.

``run_in`` calls a function on a thread moved into a namespace (``setns``), for
what asks a lab address from this process (``lab status``'s probe), where an
``ip netns exec python`` per question cost an interpreter's start.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from steering.lab.plan import (
    BRIDGE,
    ETCD_PEER_PORT,
    LAB_ADDR,
    LAB_NS,
    PREFIX,
    REGION_IF,
    RELAY_NS,
    SUBNET,
    Link,
    Region,
    Topology,
)

NETNS_DIR = Path("/run/netns")
CUT_PRIO = "1"  # the etcd peer cut's filters: matched before the per-destination ones
DST_PRIO = "2"
DROP_CLASS = "1:2"
CAP_NET_ADMIN = 12
NFT_TABLE = "steering_lab"  # the lab's nftables table in each region's namespace (loss without netem)
NFT_CHAIN = "loss"
NFT_SCALE = 10_000  # numgen modulus: loss in steps of 0.01 %
NFT_INSTALL = "install nftables (apt-get install nftables) or use a kernel with sch_netem"


_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)  # this process's libc, for setns
T = TypeVar("T")


def run_in(netns: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a thread moved into network namespace ``netns`` (a name under /run/netns); what it returns or
    raises. A namespace is per thread on Linux: this process's other threads stay where they are, threads the
    moved one starts are in ``netns`` too, and a socket stays in the namespace it was made in. OSError when the
    namespace is not there or this process may not enter it (root, or CAP_SYS_ADMIN)."""
    box: dict[str, Any] = {}

    def moved() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
            try:
                if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # raised again on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=moved, name=f"netns-{netns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


class NetError(RuntimeError):
    """An ``ip`` or ``tc`` command failed: its command line and its message."""


def run(*argv: str) -> str:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {(res.stderr or res.stdout).strip()}")
    return res.stdout


def in_ns(ns: str, *argv: str) -> str:
    return run("ip", "netns", "exec", ns, *argv)


def can_admin_network() -> bool:
    """Root, or CAP_NET_ADMIN in the effective set."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def lab_namespaces() -> list[str]:
    """The namespaces with the lab's prefix that exist now."""
    try:
        names = [p.name for p in NETNS_DIR.iterdir()]
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(PREFIX))


def ns_pids(ns: str) -> list[int]:
    """Processes whose network namespace is ``ns``."""
    try:
        out = run("ip", "netns", "pids", ns)
    except NetError:
        return []
    return [int(x) for x in out.split() if x.isdigit()]


def _class_id(r: Region) -> str:
    return f"1:{r.index + 10:x}"


def has_netem() -> bool:
    """Whether this kernel has sch_netem: tried on the loopback of a namespace of our own (the lab's)."""
    try:
        in_ns(LAB_NS, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms")
    except NetError:
        return False
    in_ns(LAB_NS, "tc", "qdisc", "del", "dev", "lo", "root")
    return True


def create_lab_ns() -> None:
    run("ip", "netns", "add", LAB_NS)
    in_ns(LAB_NS, "ip", "link", "set", "lo", "up")


def _create_relay_ns() -> None:
    """The relay's namespace: no address, no route, no IPv6, so its kernel neither forwards nor answers
    what crosses it (the relay process moves every frame)."""
    run("ip", "netns", "add", RELAY_NS)
    in_ns(RELAY_NS, "ip", "link", "set", "lo", "up")
    if Path("/proc/sys/net/ipv6").is_dir() and shutil.which("sysctl"):
        # without it its interfaces would send their own neighbour discovery into the regions
        in_ns(RELAY_NS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
              "net.ipv6.conf.default.disable_ipv6=1")


def build(topo: Topology, relay: bool = False) -> None:
    """Bridge, region namespaces, veths, addresses and one leaf qdisc per direction (in the lab namespace
    ``create_lab_ns`` made); raises NetError half-way (the caller removes what exists by prefix). With
    ``relay`` each region's eth0 reaches its bridge port through two interfaces of the relay namespace
    (``Region.relay_inner``, ``relay_outer``) that only the relay process joins."""
    in_ns(LAB_NS, "ip", "link", "add", BRIDGE, "type", "bridge")
    in_ns(LAB_NS, "ip", "addr", "add", f"{LAB_ADDR}/{SUBNET.prefixlen}", "dev", BRIDGE)
    in_ns(LAB_NS, "ip", "link", "set", BRIDGE, "up")
    if relay:
        _create_relay_ns()
    for r in topo.regions:
        run("ip", "netns", "add", r.netns)
        in_ns(r.netns, "ip", "link", "set", "lo", "up")
        if relay:
            run("ip", "link", "add", REGION_IF, "netns", r.netns, "type", "veth",
                "peer", "name", r.relay_inner, "netns", RELAY_NS)
            run("ip", "link", "add", r.relay_outer, "netns", RELAY_NS, "type", "veth",
                "peer", "name", r.bridge_port, "netns", LAB_NS)
            for dev in (r.relay_inner, r.relay_outer):
                in_ns(RELAY_NS, "ip", "link", "set", dev, "up")
        else:
            run("ip", "link", "add", REGION_IF, "netns", r.netns, "type", "veth",
                "peer", "name", r.bridge_port, "netns", LAB_NS)
        in_ns(LAB_NS, "ip", "link", "set", r.bridge_port, "master", BRIDGE)
        in_ns(LAB_NS, "ip", "link", "set", r.bridge_port, "up")
        in_ns(r.netns, "ip", "addr", "add", f"{r.addr}/{SUBNET.prefixlen}", "dev", REGION_IF)
        in_ns(r.netns, "ip", "link", "set", REGION_IF, "up")
        # Unshaped by default (the lab namespace's probes, ARP); one class per other region below.
        in_ns(r.netns, "tc", "qdisc", "add", "dev", REGION_IF, "root", "handle", "1:", "htb", "default", "1",
              "r2q", "100000")
        in_ns(r.netns, "tc", "class", "add", "dev", REGION_IF, "parent", "1:", "classid", "1:1",
              "htb", "rate", "10gbit")
        for dst in topo.regions:
            if dst.id == r.id:
                continue
            cls = _class_id(dst)
            in_ns(r.netns, "tc", "class", "add", "dev", REGION_IF, "parent", "1:", "classid", cls,
                  "htb", "rate", "10gbit")
            in_ns(r.netns, "tc", "qdisc", "add", "dev", REGION_IF, "parent", cls,
                  "handle", f"{dst.index + 10:x}:", *topo.link(r.id, dst.id).leaf(topo.netem))
            in_ns(r.netns, "tc", "filter", "add", "dev", REGION_IF, "parent", "1:", "protocol", "ip",
                  "prio", DST_PRIO, "u32", "match", "ip", "dst", f"{dst.addr}/32", "flowid", cls)
        # The class `etcd_cut` sends a region's etcd peer traffic to: a FIFO that holds nothing.
        in_ns(r.netns, "tc", "class", "add", "dev", REGION_IF, "parent", "1:", "classid", DROP_CLASS,
              "htb", "rate", "10gbit")
        in_ns(r.netns, "tc", "qdisc", "add", "dev", REGION_IF, "parent", DROP_CLASS, "handle", "2:",
              "pfifo", "limit", "0")


def nft() -> str | None:
    """The nft binary, also where root's PATH is not searched (``/usr/sbin``)."""
    return shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None)


def _nft_script(ns: str, script: str) -> None:
    binary = nft()
    if binary is None:
        raise NetError(f"nft: not found; {NFT_INSTALL}")
    res = subprocess.run(["ip", "netns", "exec", ns, binary, "-f", "-"], input=script, capture_output=True,
                         text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise NetError(f"nft -f - in {ns}: {(res.stderr or res.stdout).strip()}")


def _loss_table(losses: list[tuple[Region, float]]) -> str:
    """The whole table: created empty first so that deleting it never fails, then made anew."""
    lines = [f"table inet {NFT_TABLE}", f"delete table inet {NFT_TABLE}"]
    rules = [f"    ip daddr {dst.addr} numgen random mod {NFT_SCALE} < {round(pct * NFT_SCALE / 100)} counter drop "
             f'comment "loss {pct:g}% to {dst.id}"' for dst, pct in losses if pct > 0]
    if rules:
        lines += [f"table inet {NFT_TABLE} {{", f"  chain {NFT_CHAIN} {{",
                  "    type filter hook output priority 0; policy accept;", *rules, "  }", "}"]
    return "\n".join(lines) + "\n"


def has_nft_loss() -> bool:
    """Whether nft is installed and the kernel takes a ``numgen random`` drop rule (tried in the lab's own
    namespace, then removed)."""
    if nft() is None:
        return False
    probe = Region("probe", 0, ())
    try:
        _nft_script(LAB_NS, _loss_table([(probe, 1.0)]))
        _nft_script(LAB_NS, _loss_table([]))
    except NetError:
        return False
    return True


def set_loss(region: Region, losses: list[tuple[Region, float]]) -> None:
    """Make ``region`` drop ``pct`` % (at random) of what it sends to each region of ``losses``; the region's
    earlier loss rules are replaced (an empty list removes them)."""
    _nft_script(region.netns, _loss_table(losses))


def loss_rules(region: Region) -> list[dict[str, object]]:
    """The loss rules in ``region``'s namespace as the kernel holds them: destination, share, packets
    dropped so far (none without nft or without the table)."""
    binary = nft()
    if binary is None:
        return []
    res = subprocess.run(["ip", "netns", "exec", region.netns, binary, "list", "chain", "inet", NFT_TABLE,
                          NFT_CHAIN], capture_output=True, text=True, timeout=30, check=False)
    out: list[dict[str, object]] = []
    for line in res.stdout.splitlines() if res.returncode == 0 else []:
        words = line.split()
        if "numgen" not in words or "daddr" not in words:
            continue
        try:
            dst = words[words.index("daddr") + 1]
            share = int(words[words.index("<") + 1]) * 100 / NFT_SCALE
            dropped = int(words[words.index("packets") + 1]) if "packets" in words else 0
        except (ValueError, IndexError):
            continue
        out.append({"to": dst, "loss_pct": share, "dropped_packets": dropped})
    return out


def etcd_cut(region: Region, cut: bool) -> None:
    """Cut (or heal) the region's etcd member from its peers only: everything it sends from or to the peer
    port (its raft streams, both the ones it opened and its side of the others') goes to the drop class,
    ahead of the per-destination filters; its clients (port 2379) and every other port are untouched. TCP
    needs both directions, so dropping this side cuts the member from the majority both ways."""
    if cut:
        for field in ("sport", "dport"):
            in_ns(region.netns, "tc", "filter", "add", "dev", REGION_IF, "parent", "1:", "protocol", "ip",
                  "prio", CUT_PRIO, "u32", "match", "ip", field, str(ETCD_PEER_PORT), "0xffff",
                  "flowid", DROP_CLASS)
    else:
        try:
            in_ns(region.netns, "tc", "filter", "del", "dev", REGION_IF, "parent", "1:", "protocol", "ip",
                  "prio", CUT_PRIO)
        except NetError as exc:  # none there: already healed
            if not any(w in str(exc) for w in ("Cannot find", "No such file", "not found")):
                raise


def shape(topo: Topology, a: str, b: str, link: Link) -> None:
    """Set the conditions between regions ``a`` and ``b``, both directions."""
    ra, rb = topo.region(a), topo.region(b)
    for src, dst in ((ra, rb), (rb, ra)):
        in_ns(src.netns, "tc", "qdisc", "change", "dev", REGION_IF, "parent", _class_id(dst),
              "handle", f"{dst.index + 10:x}:", *link.leaf(topo.netem))


def remove(names: list[str]) -> dict[str, str]:
    """Delete these namespaces; the ones that could not be deleted, with why."""
    failed = {}
    for ns in names:
        try:
            run("ip", "netns", "del", ns)
        except NetError as exc:
            failed[ns] = str(exc)
    return failed
