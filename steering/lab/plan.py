"""What a lab is made of, computed without touching the system: names, addresses, ports, links, etcd tuning.

Every name the lab creates starts with ``PREFIX`` so ``steering lab down`` finds
them after a crash: a namespace ``stl-<region>`` per region and ``stl-lab`` for
the bridge that joins them. Each region has one address, ``10.77.<n>.1`` (n from
1, in the order of the configuration), on an ``eth0`` whose peer hangs on the
bridge; the lab namespace has ``10.77.0.254`` (where ``status`` looks from). The
range exists only inside these namespaces: nothing in the lab has a route
elsewhere, so its traffic stays between lab addresses.

Inter-region conditions are per unordered pair of regions (``Link``): one-way
delay and jitter, loss, and whether the pair is cut. Each direction is shaped
on the sender's ``eth0`` (a netem per destination), so a cut is 100 % loss both
ways and healing sets the pair back to the lab's base link exactly.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any

PREFIX = "stl-"
LAB_NS = f"{PREFIX}lab"
RELAY_NS = f"{PREFIX}relay"  # the delay relay's namespace, on a kernel without netem (steering/lab/relay.py)
BRIDGE = f"{PREFIX}br"
SUBNET = ipaddress.IPv4Network("10.77.0.0/16")
LAB_ADDR = "10.77.0.254"
REGION_IF = "eth0"
MAX_REGIONS = 200  # one /24 each below 10.77.255.0; far above what a machine runs

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
CONTROLLER_PORT = 50051
INGEST_PORT = 50061  # the controllers' ingest listener, where the lab's agents report
DNS_PORT = 53
SIM_BASE_PORT = 8100  # the region's simulated targets on 8100, 8101, ... (loopback of its namespace)

COMPONENTS = ("etcd", "controller", "dns", "agent")  # what kill/restart take (agent: every agent of the region)
MAX_DELAY_MS = 10_000
MAX_CLOCK_SECONDS = 86_400 * 366
_REGION_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")


class PlanError(ValueError):
    """Input the lab refuses, in one line naming what is wrong."""


@dataclass(frozen=True)
class Region:
    id: str
    index: int  # 1-based: the third octet of its address
    targets: tuple[str, ...]  # simulated targets it runs: the region itself, then its cache sites

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.id}"

    @property
    def addr(self) -> str:
        return f"10.77.{self.index}.1"

    @property
    def bridge_port(self) -> str:
        return f"{PREFIX}v{self.index}"  # the veth peer in the lab namespace (IFNAMSIZ: at most 15)

    @property
    def relay_inner(self) -> str:
        return f"{PREFIX}r{self.index}"  # in the relay namespace: the peer of the region's eth0

    @property
    def relay_outer(self) -> str:
        return f"{PREFIX}w{self.index}"  # in the relay namespace: the peer of the region's bridge port

    def sim_port(self, target: str) -> int:
        return SIM_BASE_PORT + self.targets.index(target)


@dataclass(frozen=True)
class Link:
    """The conditions between two regions, the same both ways."""

    delay_ms: int
    jitter_ms: int
    loss_pct: float = 0.0
    cut: bool = False

    def leaf(self, netem: bool) -> list[str]:
        """The qdisc (kind and arguments) of either direction: netem with delay, jitter and loss where the
        kernel has it; else a FIFO that holds nothing while the pair is cut (the delay is then the relay's,
        the random loss nftables')."""
        if netem:
            return ["netem", *self.netem()]
        return ["pfifo", "limit", "0" if self.cut else "1000"]

    def netem(self) -> list[str]:
        """netem arguments of either direction."""
        args = ["delay", f"{self.delay_ms}ms"]
        if self.jitter_ms and self.delay_ms:
            args.append(f"{self.jitter_ms}ms")  # uniform: no distribution table file needed
        loss = 100.0 if self.cut else self.loss_pct
        if loss:
            args += ["loss", f"{loss:g}%"]
        return args

    def to_json(self) -> dict[str, Any]:
        return {"delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms, "loss_pct": self.loss_pct, "cut": self.cut}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Link:
        return cls(int(data["delay_ms"]), int(data["jitter_ms"]), float(data.get("loss_pct", 0.0)),
                   bool(data.get("cut", False)))


@dataclass(frozen=True)
class Topology:
    regions: tuple[Region, ...]
    base: Link  # what `up` makes and `heal` restores
    links: dict[tuple[str, str], Link] = field(default_factory=dict)
    netem: bool = True  # whether the kernel has sch_netem (delay and loss); cuts work either way

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.id == name:
                return r
        raise PlanError(f"unknown region {name!r}; the lab has: {', '.join(r.id for r in self.regions)}")

    def link(self, a: str, b: str) -> Link:
        return self.links.get(pair(a, b), self.base)


def relay_delays(topo: Topology) -> list[dict[str, Any]]:
    """The relay's one-way delay per ordered pair of regions (both directions of a link, the same)."""
    out: list[dict[str, Any]] = []
    for a in topo.regions:
        for b in topo.regions:
            link = topo.link(a.id, b.id)
            if a.id != b.id and (link.delay_ms or link.jitter_ms):
                out.append({"from": a.id, "to": b.id, "delay_ms": link.delay_ms, "jitter_ms": link.jitter_ms})
    return out


def pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def plan_regions(region_ids: list[str], sites: dict[str, str], count: int | None) -> tuple[Region, ...]:
    """The lab's regions: the first ``count`` of ``region_ids`` (all when None), each with the cache sites
    (``sites``: site -> region) it hosts."""
    if count is not None and not 1 <= count <= len(region_ids):
        raise PlanError(f"--regions: {count} is not between 1 and {len(region_ids)} (the regions of the config)")
    chosen = region_ids[:count] if count is not None else list(region_ids)
    if len(chosen) > MAX_REGIONS:
        raise PlanError(f"--regions: at most {MAX_REGIONS}")
    for rid in chosen:
        if not _REGION_ID.fullmatch(rid):
            raise PlanError(f"regions: {rid!r} cannot name a network namespace (a-z, 0-9 and '-', up to 41)")
    return tuple(Region(rid, i + 1, (rid, *sorted(s for s, r in sites.items() if r == rid)))
                 for i, rid in enumerate(chosen))


def etcd_timing(delay_ms: int, jitter_ms: int) -> tuple[int, int]:
    """(heartbeat, election timeout) in ms for a one-way delay and jitter: the heartbeat about 1.5 round
    trips (etcd's tuning guide: around the round trip), the election timeout ten heartbeats. At least
    200 ms: every member shares one machine's CPUs, and a busy machine once missed 100 ms heartbeats."""
    rtt = 2 * (delay_ms + jitter_ms)
    heartbeat = max(200, math.ceil(1.5 * rtt))
    return heartbeat, min(50_000, 10 * heartbeat)


def parse_delay(text: str, what: str = "latency") -> int:
    """``40ms``, ``0.2s``, ``200`` (ms) -> milliseconds, 0..MAX_DELAY_MS."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", text or "")
    if not m:
        raise PlanError(f"{what}: {text!r} is not a duration like 40ms or 0.2s")
    ms = float(m.group(1)) * (1000 if m.group(2) == "s" else 1)
    if not 0 <= ms <= MAX_DELAY_MS:
        raise PlanError(f"{what}: {text!r} is beyond {MAX_DELAY_MS} ms")
    return round(ms)


def parse_loss(text: str) -> float:
    """``20%`` or ``20`` -> 20.0, 0..100."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%?\s*", text or "")
    if not m or not 0 <= float(m.group(1)) <= 100:
        raise PlanError(f"loss: {text!r} is not a percentage between 0% and 100%")
    return float(m.group(1))


def parse_clock(text: str) -> int:
    """``+30s``, ``-30s``, ``+2m``, ``0`` -> seconds of wall-clock offset."""
    m = re.fullmatch(r"\s*([+-]?)(\d+)\s*([smh]?)\s*", text or "")
    if not m:
        raise PlanError(f"clock: {text!r} is not an offset like +30s, -30s or 0")
    seconds = int(m.group(2)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(3)]
    if seconds > MAX_CLOCK_SECONDS:
        raise PlanError(f"clock: {text!r} is beyond a year")
    return -seconds if m.group(1) == "-" else seconds


def check_component(name: str) -> str:
    if name not in COMPONENTS:
        raise PlanError(f"unknown component {name!r}; one of: {', '.join(COMPONENTS)}")
    return name


def check_pair(topo: Topology, a: str, b: str) -> tuple[str, str]:
    topo.region(a)
    topo.region(b)
    if a == b:
        raise PlanError(f"{a} and {b}: a region cannot be cut from (or shaped towards) itself")
    return pair(a, b)


def pairs_of(topo: Topology, a: str) -> list[tuple[str, str]]:
    """Every pair between ``a`` and another region."""
    topo.region(a)
    return [pair(a, r.id) for r in topo.regions if r.id != a]


def lab_config(data: dict[str, Any], regions: tuple[Region, ...]) -> dict[str, Any]:
    """The steering config of the lab from the user's (parsed YAML, paths already absolute): only the lab's
    regions and their sites, every reference to the others dropped; etcd spanning the regions; no observers
    (the lab runs each target's own agent only). Per-region settings (listen addresses) are in
    ``region_config``."""
    keep = {r.id for r in regions}
    out = dict(data)
    out["regions"] = [r for r in data.get("regions") or [] if r.get("id") in keep]
    kept_sites = [s for s in data.get("sites") or [] if s.get("region") in keep]
    out["sites"] = kept_sites
    site_ids = {s.get("id") for s in kept_sites}
    targets = keep | site_ids
    geos = []
    for g in data.get("geos") or []:
        g = dict(g)
        if "prefer" in g:
            g["prefer"] = [r for r in g["prefer"] if r in keep]
        if "prefer_sites" in g:
            g["prefer_sites"] = [s for s in g["prefer_sites"] if s in site_ids]
        geos.append(g)
    out["geos"] = geos
    services = []
    for svc in data.get("services") or []:
        svc = dict(svc)
        svc["answers"] = {t: a for t, a in (svc.get("answers") or {}).items() if t in targets}
        services.append(svc)
    out["services"] = services
    out.pop("observers", None)
    out.pop("route53", None)  # the lab never changes a real hosted zone
    policy = dict(out.get("policy") or {})
    if int(policy.get("min_serving_regions", 1)) > len(regions):
        policy["min_serving_regions"] = len(regions)
    health = policy.get("health")
    if isinstance(health, dict):  # observers are gone: a quorum of them cannot be asked for
        policy["health"] = {k: v for k, v in health.items() if k not in ("quorum", "per_geo_reachability")}
    out["policy"] = policy
    out["etcd"] = {**(data.get("etcd") or {}),
                   "endpoints": [f"{r.addr}:{ETCD_CLIENT_PORT}" for r in regions]}
    return out


def region_config(lab: dict[str, Any], region: Region, regions: tuple[Region, ...], state_dir: str) -> dict[str, Any]:
    """The config file of one region: its own etcd member first, its listen addresses, its DNS state file."""
    out = dict(lab)
    others = [f"{r.addr}:{ETCD_CLIENT_PORT}" for r in regions if r.id != region.id]
    out["etcd"] = {**lab["etcd"], "endpoints": [f"{region.addr}:{ETCD_CLIENT_PORT}", *others]}
    out["dns"] = {**(lab.get("dns") or {}), "listen": [f"{region.addr}:{DNS_PORT}"], "workers": 1,
                  "state_file": f"{state_dir}/dns-table.json"}
    out["controller"] = {**(lab.get("controller") or {}), "listen": f"{region.addr}:{CONTROLLER_PORT}",
                         "ingest_listen": f"{region.addr}:{INGEST_PORT}"}
    out["controller"].pop("http_listen", None)
    return out


def controllers_for(region: Region, regions: tuple[Region, ...]) -> list[str]:
    """An agent's controllers (their ingest listeners): its own region's first, then the others'."""
    return [f"{region.addr}:{INGEST_PORT}",
            *(f"{r.addr}:{INGEST_PORT}" for r in regions if r.id != region.id)]
