"""A lab's life: ``up`` builds it and records it in ``<state-dir>/lab.json``, the other commands read that record.

The record holds the topology (regions, the base link and every changed pair),
each process with its command line, environment, PID and start time, each
region's clock offset, and who makes the delay (``delay_by``: "netem", or
"relay" on a kernel without netem: then ``lab/relay`` is one of the processes
and every change of a pair's delay waits until the relay has it in force).
``down`` needs none of it to clean up after a crash: it also finds the
namespaces by their prefix and kills what still lives in them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from steering.config import load_config
from steering.controller.healthmerge import record_key
from steering.demo.run import DEFAULT_LOAD, EXAMPLE_CONFIG, agent_document, bin_path
from steering.etcdproc import EtcdMember
from steering.lab import netops, procs
from steering.lab import probe as labprobe
from steering.lab.plan import (
    CONTROLLER_PORT,
    DNS_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    LAB_NS,
    RELAY_NS,
    Link,
    PlanError,
    Region,
    Topology,
    check_component,
    controllers_for,
    etcd_timing,
    lab_config,
    pair,
    plan_regions,
    region_config,
    relay_delays,
)
from steering.store.keys import Keys

STATE_FILE = "lab.json"
READY_TIMEOUT = 90.0
RELAY_CONFIG = "relay.json"  # the relay's ports and delays (steering/lab/relay.py), rewritten on each change
RELAY_STATS = "relay-stats.json"  # what the relay has in force, rewritten by it every second
RELAY_TIMEOUT = 10.0  # seconds for the relay to start, or to take new delays


class LabError(Exception):
    """A reason a lab command cannot do what was asked, in one line; nothing was changed."""


def default_state_dir() -> Path:
    return Path(os.environ.get("STEERING_LAB_DIR") or f"/tmp/steering-lab-{os.getuid()}")


def require_admin() -> None:
    if not netops.can_admin_network():
        raise LabError("needs root or CAP_NET_ADMIN to create network namespaces (try: sudo steering lab ...)")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        raise LabError("needs the iproute2 commands `ip` and `tc` on PATH")


@dataclass
class Lab:
    state_dir: Path
    info: dict[str, Any]

    # ------------------------------------------------------------------ the record

    @classmethod
    def load(cls, state_dir: Path) -> Lab | None:
        try:
            info = json.loads((state_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(state_dir, info) if isinstance(info, dict) else None

    def save(self) -> None:
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.info, indent=2, sort_keys=True))
        os.replace(tmp, self.state_dir / STATE_FILE)

    @property
    def topology(self) -> Topology:
        regions = tuple(Region(r["id"], int(r["index"]), tuple(r["targets"])) for r in self.info["regions"])
        links = {pair(*k.split("|", 1)): Link.from_json(v) for k, v in (self.info.get("links") or {}).items()}
        return Topology(regions, Link.from_json(self.info["base"]), links, bool(self.info.get("netem", True)))

    def procs_of(self, region: str, component: str | None = None) -> dict[str, dict[str, Any]]:
        """This region's process records by name (``component`` ``agent``: every agent of the region)."""
        out = {}
        for name, rec in (self.info.get("procs") or {}).items():
            r, _, comp = name.partition("/")
            if r != region:
                continue
            if component is None or comp == component or (component == "agent" and comp.startswith("agent-")):
                out[name] = rec
        return out

    # ------------------------------------------------------------------ faults

    @property
    def by_relay(self) -> bool:
        return self.info.get("delay_by") == "relay"

    def set_link(self, a: str, b: str, link: Link) -> None:
        topo = self.topology
        if not topo.netem and not self.by_relay and (link.delay_ms or link.jitter_ms):
            raise LabError("latency: this lab has no netem and no relay (started by an older steering); "
                           "`steering lab down` and `up` again")
        netops.shape(topo, a, b, link)
        links = dict(self.info.get("links") or {})
        key = "|".join(pair(a, b))
        if link == topo.base:
            links.pop(key, None)
        else:
            links[key] = link.to_json()
        self.info["links"] = links
        self.save()
        if self.by_relay and relay_delays(self.topology) != relay_delays(topo):
            self.update_relay()
        if not topo.netem and (link.loss_pct or topo.link(a, b).loss_pct):
            # Without netem, random loss is nftables rules in both regions (each replaced whole).
            now = self.topology
            for src in (now.region(a), now.region(b)):
                netops.set_loss(src, [(dst, now.link(src.id, dst.id).loss_pct)
                                      for dst in now.regions if dst.id != src.id])

    # ------------------------------------------------------------------ the relay (a kernel without netem)

    def write_relay_config(self) -> int:
        """The relay's config from the record, under a new generation; that generation."""
        topo = self.topology
        generation = int(self.info.get("relay_generation") or 0) + 1
        doc = {"generation": generation,
               "ports": [{"region": r.id, "inner": r.relay_inner, "outer": r.relay_outer, "addr": r.addr}
                         for r in topo.regions],
               "delays": relay_delays(topo)}
        tmp = self.state_dir / (RELAY_CONFIG + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.state_dir / RELAY_CONFIG)
        self.info["relay_generation"] = generation
        self.save()
        return generation

    def relay_stats(self) -> dict[str, Any] | None:
        try:
            stats = json.loads((self.state_dir / RELAY_STATS).read_text())
        except (OSError, ValueError):
            return None
        return stats if isinstance(stats, dict) else None

    def wait_relay(self, generation: int, timeout: float = RELAY_TIMEOUT) -> None:
        """Until the relay reports ``generation`` in force; LabError if it is dead or the time runs out."""
        rec = (self.info.get("procs") or {}).get("lab/relay")
        deadline = time.monotonic() + timeout
        while True:
            stats = self.relay_stats()
            if stats is not None and int(stats.get("generation") or 0) >= generation \
                    and rec is not None and stats.get("pid") == rec["pid"]:
                return
            if rec is None or not procs.alive(rec):
                raise LabError(f"the delay relay is not running (log: {self.state_dir / 'logs' / 'relay.log'}); "
                               "`steering lab down` and `up` again")
            if time.monotonic() >= deadline:
                raise LabError(f"the delay relay (pid {rec['pid']}) did not take the delays within {timeout:.0f}s")
            time.sleep(0.02)

    def update_relay(self) -> None:
        self.wait_relay(self.write_relay_config())

    def set_etcd_cut(self, region: str, cut: bool) -> None:
        """Cut (or heal) ``region``'s etcd member from its peers only (``netops.etcd_cut``), recorded."""
        r = self.topology.region(region)
        netops.etcd_cut(r, cut)
        cuts = set(self.info.get("etcd_cut") or [])
        cuts = cuts | {region} if cut else cuts - {region}
        self.info["etcd_cut"] = sorted(cuts)
        self.save()

    def kill(self, region: str, component: str) -> list[str]:
        check_component(component)
        self.topology.region(region)
        done = []
        for name, rec in self.procs_of(region, component).items():
            if procs.alive(rec):
                procs.kill(rec)
                done.append(f"{name} (pid {rec['pid']}) killed")
            else:
                done.append(f"{name} was not running")
        return done

    def restart(self, region: str, component: str, env: dict[str, str] | None = None) -> list[str]:
        """Stop (if it runs) and start again with the same command; ``env`` replaces its environment."""
        check_component(component)
        self.topology.region(region)
        chosen = self.procs_of(region, component)
        procs.stop(list(chosen.values()))
        done = []
        for name, rec in chosen.items():
            argv = list(rec["argv"])
            if component == "etcd" and "--initial-cluster-state" in argv:  # it rejoins the cluster it has data of
                argv[argv.index("--initial-cluster-state") + 1] = "existing"
            new = procs.spawn(rec["ns"], argv, Path(rec["log"]), rec.get("env") if env is None else env)
            self.info["procs"][name] = new
            done.append(f"{name} restarted (pid {new['pid']})")
        self.save()
        return done

    def clock(self, region: str, offset: int) -> list[str]:
        """Restart the region's controller with its wall clock ``offset`` seconds off (0: the real clock)."""
        env = faketime_env(offset) if offset else {}
        lines = self.restart(region, "controller", env)
        clocks = dict(self.info.get("clock") or {})
        clocks[region] = offset
        self.info["clock"] = clocks
        self.save()
        return lines

    # ------------------------------------------------------------------ status

    def probe_spec(self) -> dict[str, Any]:
        keys = Keys(self.info.get("etcd_prefix") or "/steering/v1")
        return {
            "qname": self.info["qname"],
            "leader_key": keys.leader.decode(),
            "regions": [{"id": r.id, "etcd": f"{r.addr}:{ETCD_CLIENT_PORT}",
                         "controller": f"{r.addr}:{CONTROLLER_PORT}", "dns": f"{r.addr}:{DNS_PORT}",
                         # each of its targets' records as written by its own controller: its agents report home
                         "home_keys": [keys.health(record_key(t, f"ctl-{r.id}")).decode() for t in r.targets]}
                        for r in self.topology.regions],
        }

    def probe(self) -> dict[str, Any]:
        """What each region's components answer, asked from the lab namespace (a thread of this process moved
        there: an ``ip netns exec python`` per probe was most of ``lab status``'s time)."""
        try:
            out: dict[str, Any] = netops.run_in(LAB_NS, lambda: labprobe.probe(self.probe_spec()))
        except OSError as exc:
            raise LabError(f"the probe in {LAB_NS} failed: {exc}") from exc
        for rid, h in out.items():
            h["table_version"] = self.table_version(rid)
        return out

    def table_version(self, region: str) -> int | None:
        """The version of the routing table the region's DNS server last applied (from its state file)."""
        try:
            data = json.loads((self.state_dir / "regions" / region / "dns-table.json").read_text())
        except (OSError, ValueError):
            return None
        version = data.get("version") if isinstance(data, dict) else None
        return int(version) if isinstance(version, int) else None

    def status(self) -> dict[str, Any]:
        health = self.probe()
        regions = []
        for r in self.topology.regions:
            h = health.get(r.id, {})
            comps = []
            for name, rec in self.procs_of(r.id).items():
                comp = name.partition("/")[2]
                listen = {"etcd": f"{r.addr}:{ETCD_CLIENT_PORT}", "controller": f"{r.addr}:{CONTROLLER_PORT}",
                          "dns": f"{r.addr}:{DNS_PORT}"}.get(comp, "")
                healthy: Any = None
                if comp == "etcd":
                    healthy = h.get("etcd")
                elif comp == "controller":
                    healthy = h.get("controller")
                elif comp == "dns":
                    healthy = (h.get("dns") or {}).get("ok")
                comps.append({"name": comp, "listen": listen, "pid": rec["pid"], "alive": procs.alive(rec),
                              "healthy": healthy})
            regions.append({"id": r.id, "netns": r.netns, "addr": r.addr, "components": comps,
                            "dns_answers": (h.get("dns") or {}).get("answers", []), "leader": h.get("leader"),
                            "agents_report_home": h.get("home"),
                            "table_version": h.get("table_version"),
                            "etcd_peers_cut": r.id in (self.info.get("etcd_cut") or []),
                            "clock_offset_seconds": (self.info.get("clock") or {}).get(r.id, 0)})
        topo = self.topology
        delay_by = str(self.info.get("delay_by") or ("netem" if topo.netem else ""))
        links = []
        for i, a in enumerate(topo.regions):
            for b in topo.regions[i + 1:]:
                link = topo.link(a.id, b.id)
                links.append({"a": a.id, "b": b.id, **link.to_json(),
                              "delay_by": delay_by if link.delay_ms or link.jitter_ms else "",
                              "loss_by": ("netem" if topo.netem else "nft") if link.loss_pct else ""})
        if not topo.netem and any(x.loss_pct for x in topo.links.values()):
            # the loss rules as the kernel holds them, with what they dropped (asked only while there is loss)
            for r, entry in zip(topo.regions, regions, strict=True):
                entry["loss_rules"] = netops.loss_rules(r)
        out = {"state_dir": str(self.state_dir), "qname": self.info["qname"], "regions": regions, "links": links,
               "etcd": self.info.get("etcd_tuning"), "delay_by": delay_by}
        relay = (self.info.get("procs") or {}).get("lab/relay")
        if relay is not None:  # what the relay holds, as it last wrote it (every second)
            stats = self.relay_stats() or {}
            out["relay"] = {"pid": relay["pid"], "alive": procs.alive(relay), "netns": RELAY_NS,
                            **{k: stats.get(k) for k in ("generation", "frames", "passed", "delayed", "dropped",
                                                         "send_errors", "pairs")}}
        return out


def faketime_env(offset: int) -> dict[str, str]:
    """Run a process with its wall clock ``offset`` seconds off, monotonic untouched (the libfaketime wheel)."""
    spec = importlib.util.find_spec("libfaketime")
    lib = Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1" \
        if spec is not None and spec.origin else None
    if lib is None or not lib.is_file():
        raise LabError("clock: needs the libfaketime wheel (pip install libfaketime, or the dev extras)")
    return {"LD_PRELOAD": str(lib), "FAKETIME": f"{offset:+d}", "DONT_FAKE_MONOTONIC": "1"}


# ---------------------------------------------------------------------- up


def running_lab(state_dir: Path) -> str | None:
    """Why a new lab cannot start now, or None."""
    existing = netops.lab_namespaces()
    if existing:
        return f"a lab is running (namespaces {', '.join(existing)}); `steering lab down` first"
    lab = Lab.load(state_dir)
    if lab is not None and any(procs.alive(r) for r in (lab.info.get("procs") or {}).values()):
        return f"a lab recorded in {state_dir} still has processes; `steering lab down` first"
    return None


def prepare(config_path: Path | None, count: int | None, latency_ms: int, jitter_ms: int,
            state_dir: Path) -> tuple[Topology, dict[str, Any], str]:
    """Everything ``up`` decides before it touches the system: the topology, the lab's config (validated)
    and the name to ask DNS for. LabError / PlanError / ConfigError on bad input."""
    path = config_path or EXAMPLE_CONFIG
    base = load_config(path)  # the user's file first: errors name its fields
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    for zone in data.get("zones") or []:
        if zone.get("file"):
            zone["file"] = str(base.resolve_path(zone["file"]).resolve())
    if data.get("auth"):
        data["auth"]["tokens_file"] = str(base.resolve_path(data["auth"]["tokens_file"]).resolve())
    if data.get("geoip") and data["geoip"].get("database"):
        data["geoip"]["database"] = str(base.resolve_path(data["geoip"]["database"]).resolve())
    regions = plan_regions([r.id for r in base.regions], {s.id: s.region for s in base.sites}, count)
    topo = Topology(regions, Link(latency_ms, jitter_ms))
    lab = lab_config(data, regions)
    if not lab["services"]:
        raise PlanError("services: the config has none to answer for")
    check = state_dir / "lab-check.yaml"
    state_dir.mkdir(parents=True, exist_ok=True)
    check.write_text(yaml.safe_dump(region_config(lab, regions[0], regions, str(state_dir)), sort_keys=False))
    try:
        load_config(check)  # the pruned config must still be a valid deployment
    finally:
        check.unlink(missing_ok=True)
    return topo, lab, str(lab["services"][0]["name"])


def up(state_dir: Path, topo: Topology, lab: dict[str, Any], qname: str) -> Lab:
    """Build the network and start every process; the Lab (recorded in the state dir). On a failure the
    caller runs ``down``."""
    for sub in ("etcd", "logs", "targets", "regions", "agents"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
        (state_dir / sub).mkdir(parents=True)
    (state_dir / STATE_FILE).write_text(json.dumps({"version": 1, "procs": {}}))  # `down` finds a crash
    netops.create_lab_ns()
    warnings = []
    relay = not netops.has_netem()
    if relay:  # the delay by the lab's relay process, the loss by nftables
        if not netops.nft():
            warnings.append(f"this kernel has no netem (sch_netem) and there is no nft: `loss` will not work "
                            f"({netops.NFT_INSTALL})")
        topo = Topology(topo.regions, topo.base, netem=False)
    heartbeat, election = etcd_timing(topo.base.delay_ms, topo.base.jitter_ms)
    info: dict[str, Any] = {
        "version": 1, "created": time.time(), "qname": qname,
        "etcd_prefix": (lab.get("etcd") or {}).get("prefix") or "/steering/v1",
        "regions": [{"id": r.id, "index": r.index, "targets": list(r.targets), "netns": r.netns, "addr": r.addr}
                    for r in topo.regions],
        "base": topo.base.to_json(), "links": {}, "clock": {}, "procs": {}, "netem": topo.netem,
        "delay_by": "relay" if relay else "netem",
        "warnings": warnings,
        "etcd_tuning": {"heartbeat_ms": heartbeat, "election_ms": election},
    }
    result = Lab(state_dir, info)
    result.save()
    netops.build(topo, relay=relay)
    if relay:  # before anything talks across the regions: without it nothing crosses
        (state_dir / RELAY_STATS).unlink(missing_ok=True)
        generation = result.write_relay_config()
        info["procs"]["lab/relay"] = procs.spawn(
            RELAY_NS, [sys.executable, "-m", "steering.lab.relay", str(state_dir / RELAY_CONFIG),
                       str(state_dir / RELAY_STATS)], state_dir / "logs" / "relay.log")
        result.save()
        result.wait_relay(generation)
    initial = ",".join(f"{r.id}=http://{r.addr}:{ETCD_PEER_PORT}" for r in topo.regions)
    logs = state_dir / "logs"
    caps = {r["id"]: r["capacity"] for r in lab["regions"]} | {s["id"]: s["capacity"] for s in lab["sites"]}
    rec = info["procs"]
    for r in topo.regions:
        member = EtcdMember(name=r.id, client_port=ETCD_CLIENT_PORT, peer_port=ETCD_PEER_PORT,
                            data_dir=state_dir / "etcd" / f"{r.id}.data", initial_cluster=initial, host=r.addr,
                            heartbeat_ms=heartbeat, election_ms=election)
        rec[f"{r.id}/etcd"] = procs.spawn(r.netns, member.argv(), logs / f"{r.id}-etcd.log")
    result.save()
    for r in topo.regions:
        cfg_dir = state_dir / "regions" / r.id
        cfg_dir.mkdir(parents=True)
        cfg = cfg_dir / "steering.yaml"
        cfg.write_text(yaml.safe_dump(region_config(lab, r, topo.regions, str(cfg_dir)), sort_keys=False))
        sims = [f"{t}:{r.sim_port(t)}:{caps[t]:g}:{DEFAULT_LOAD.get(t, caps[t] * 0.5):g}" for t in r.targets]
        rec[f"{r.id}/sim"] = procs.spawn(r.netns, [sys.executable, "-m", "steering.lab.simserve",
                                                   str(state_dir / "targets"), *sims], logs / f"{r.id}-sim.log")
        rec[f"{r.id}/controller"] = procs.spawn(
            r.netns, [bin_path("steering"), "controller", "--config", str(cfg), "--id", f"ctl-{r.id}",
                        "--insecure"],  # lab addresses exist only in the lab's namespaces
            logs / f"{r.id}-controller.log")
        rec[f"{r.id}/dns"] = procs.spawn(r.netns, [bin_path("steering"), "dns", "--config", str(cfg)],
                                         logs / f"{r.id}-dns.log")
        for t in r.targets:
            doc = agent_document(t, r.id, t == r.id, f"lab-{t}", controllers_for(r, topo.regions),
                                 f"http://127.0.0.1:{r.sim_port(t)}")
            agent = state_dir / "agents" / f"{t}.yaml"
            agent.write_text(yaml.safe_dump(doc, sort_keys=False))
            rec[f"{r.id}/agent-{t}"] = procs.spawn(r.netns, [bin_path("steering"), "agent", "--config", str(agent)],
                                                   logs / f"{r.id}-agent-{t}.log")
        result.save()
    return result


def ready(health: dict[str, Any]) -> bool:
    """A region is ready when its etcd member is healthy, its controller listens, it sees a leader, its DNS
    server answers and its agents report to its own controller (an agent that started before it reports to
    another region's until it moves back: a cut of that link would silence a healthy region)."""
    return bool(health["etcd"] and health["controller"] and health["leader"] and health["dns"]["ok"]
                and health.get("table_version") and health.get("home"))


def wait_ready(lab: Lab, timeout: float = READY_TIMEOUT) -> float:
    """Until every region's etcd is healthy and its DNS server answers; the seconds it took. LabError when a
    process died or the time ran out."""
    t0 = time.monotonic()
    last: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout:
        dead = [n for n, r in lab.info["procs"].items() if not procs.alive(r)]
        if dead:
            raise LabError(f"exited during start-up: {', '.join(dead)} (logs in {lab.state_dir / 'logs'})")
        last = lab.probe()
        if all(ready(h) for h in last.values()):
            return time.monotonic() - t0
        time.sleep(0.2)
    waiting = sorted(rid for rid, h in last.items() if not ready(h))
    raise LabError(f"not ready within {timeout:.0f}s (waiting for {', '.join(waiting)}); "
                   f"logs in {lab.state_dir / 'logs'}")


# ---------------------------------------------------------------------- down


def down(state_dir: Path) -> list[str]:
    """Stop every recorded process, kill whatever still lives in the lab's namespaces, delete them."""
    lab = Lab.load(state_dir)
    namespaces = netops.lab_namespaces()
    if lab is None and not namespaces:
        return []
    lines = []
    if lab is not None:
        recs = lab.info.get("procs") or {}
        order = ("agent", "sim", "dns", "controller", "etcd", "relay")  # clients first, the store, the wire last
        running = {n: r for n, r in recs.items() if procs.alive(r)}
        for comp in order:
            group = [r for n, r in running.items() if n.partition("/")[2].split("-")[0] == comp]
            # etcd often sits out SIGTERM for seconds; its data is discarded by the next `up` anyway.
            procs.stop(group, grace=0.5 if comp == "etcd" else procs.GRACE_SECONDS)
        if running:
            lines.append(f"stopped {len(running)} process(es)")
    stray = [pid for ns in namespaces for pid in netops.ns_pids(ns) if pid != os.getpid()]
    if stray:
        procs.kill_pids(stray)
        lines.append(f"killed {len(stray)} process(es) left in the lab's namespaces")
    failed = netops.remove(namespaces)
    if namespaces:
        lines.append(f"removed namespaces {', '.join(n for n in namespaces if n not in failed)}")
    lines += [f"could not remove {ns}: {why}" for ns, why in failed.items()]
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return lines
