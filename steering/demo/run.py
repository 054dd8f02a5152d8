"""Run the whole system on loopback: etcd, two controllers, the DNS server, simulated targets, agents.

Every daemon is a real process started from this venv's console scripts,
with its log under ``<state-dir>/logs``; the simulated targets are HTTP
servers in this process. Stopping (Ctrl-C or SIGTERM) stops every process
this demo started, by PID: agents first, then DNS, controllers, etcd.

Unless the config lists its own ``observers``, the demo adds one per geo of
``OBSERVER_GEOS`` (``probe-na-east``, ``probe-europe``) observing every
region, each an ``steering agent`` process with ``role: observer`` per
region, with ``policy.health`` at a majority quorum and per-geo
reachability on, so ``steering demo cut REGION GEO`` shows a region
unreachable from one geo while it serves the others (docs/health.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steering.config import Config, load_config
from steering.demo.simtarget import SimTarget
from steering.etcdproc import EtcdCluster, stop_process

DEFAULT_LOAD = {"us-east-1": 6000.0, "us-west-2": 4000.0, "eu-west-1": 5000.0}
# Client geos whose observers the demo runs (those the config has), each observing every region.
OBSERVER_GEOS = ("na-east", "europe")
STATE_FILE = "demo.json"
# The demo's default config: the example deployment of the source tree (the demo runs from a checkout).
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "steering.yaml"


class DemoError(Exception):
    """A reason the demo cannot start, in one line."""


def default_state_dir() -> Path:
    return Path(os.environ.get("STEERING_DEMO_DIR") or f"/tmp/steering-demo-{os.getuid()}")


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.popen, timeout)

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen else 0


@dataclass
class Demo:
    config_path: Path
    state_dir: Path
    dns_port: int = 5353
    api_port: int = 50051
    observers: bool = True  # add the demo's observers when the config has none
    etcd: EtcdCluster | None = None
    procs: list[Proc] = field(default_factory=list)
    sims: dict[str, SimTarget] = field(default_factory=dict)
    config: Config | None = None
    run_config: Path | None = None
    owns_state: bool = False  # whether this instance wrote demo.json (a refused second demo did not)

    # ---------------------------------------------------------------- start

    def preflight(self) -> None:
        info = self.state_dir / STATE_FILE
        if info.exists():
            try:
                pid = int(json.loads(info.read_text()).get("pid", 0))
            except (OSError, ValueError):
                pid = 0
            if pid and pid_alive(pid):
                raise DemoError(f"a demo is already running (pid {pid}, state dir {self.state_dir}); "
                                "stop it first or use --state-dir")
        busy = []
        if not port_free(self.dns_port, socket.SOCK_DGRAM) or not port_free(self.dns_port, socket.SOCK_STREAM):
            busy.append(f"DNS port {self.dns_port}")
        for p in (self.api_port, self.api_port + 1):
            if not port_free(p, socket.SOCK_STREAM):
                busy.append(f"API port {p}")
        if busy:
            raise DemoError(f"{', '.join(busy)} already in use (is another demo running?); "
                            "choose others with --dns-port / --api-port")

    def start(self) -> None:
        self.preflight()
        base = load_config(self.config_path)  # validate the user's file first: errors name its fields
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Each demo starts from a clean slate: no tables or evacuations from a previous run.
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        shutil.rmtree(self.state_dir / "targets", ignore_errors=True)
        (self.state_dir / "dns-table.json").unlink(missing_ok=True)
        for sub in ("logs", "targets", "agents"):
            (self.state_dir / sub).mkdir(exist_ok=True)
        self.etcd = EtcdCluster.create(1, root=self.state_dir / "etcd")
        self.etcd.start()
        self.run_config = self._write_config(base)
        self.config = load_config(self.run_config)
        for r in self.config.regions:
            self._sim(r.id, r.capacity, DEFAULT_LOAD.get(r.id, r.capacity * 0.5))
        for s in self.config.sites:
            self._sim(s.id, s.capacity, s.capacity * 0.4)
        logs = self.state_dir / "logs"
        env_args = ["--config", str(self.run_config)]
        for i in range(2):
            port = self.api_port + i
            self.procs.append(Proc(f"controller-{i + 1}", [bin_path("steering"), "controller", *env_args,
                                                           "--listen", f"127.0.0.1:{port}", "--id", f"ctl-{i + 1}"],
                                   logs / f"controller-{i + 1}.log"))
        self.procs.append(Proc("dns", [bin_path("steering"), "dns", *env_args,
                                       "--listen", f"127.0.0.1:{self.dns_port}"], logs / "dns.log"))
        for target_id in self.sims:
            agent_yaml = self._write_agent(target_id)
            self.procs.append(Proc(f"agent-{target_id}", [bin_path("steering"), "agent", "--config", str(agent_yaml)],
                                   logs / f"agent-{target_id}.log"))
        for o in self.config.observers:
            for target_id in o.targets:
                if target_id not in self.sims:
                    continue
                agent_yaml = self._write_agent(target_id, observer=o.id, geos=o.geos)
                name = f"agent-{o.id}-{target_id}"
                self.procs.append(Proc(name, [bin_path("steering"), "agent", "--config", str(agent_yaml)],
                                       logs / f"{name}.log"))
        for p in self.procs:
            p.start()
        self._write_info()

    def _sim(self, target_id: str, capacity: float, load: float) -> None:
        state = self.state_dir / "targets" / f"{target_id}.json"
        self.sims[target_id] = SimTarget(target_id, state, capacity, load).start()

    def _write_config(self, base: Config) -> Path:
        data: dict[str, Any] = yaml.safe_load(self.config_path.read_text())
        assert self.etcd is not None
        data["etcd"] = {"endpoints": self.etcd.endpoints, "prefix": "/steering/v1"}
        data["dns"] = {**(data.get("dns") or {}), "listen": [f"127.0.0.1:{self.dns_port}"],
                       "state_file": str(self.state_dir / "dns-table.json")}
        data["controller"] = {**(data.get("controller") or {}), "listen": f"127.0.0.1:{self.api_port}"}
        data.pop("route53", None)  # the demo never talks to AWS
        if self.observers and not data.get("observers"):
            geos = [g.id for g in base.geos if g.id in OBSERVER_GEOS]
            data["observers"] = [{"id": f"probe-{g}", "geos": [g], "targets": [r.id for r in base.regions]}
                                 for g in geos]
            if geos:
                policy = data.setdefault("policy", {}) or {}
                policy.setdefault("health", {"quorum": "majority", "per_geo_reachability": True})
                data["policy"] = policy
        for zone in data.get("zones", []):
            if zone.get("file"):
                zone["file"] = str(base.resolve_path(zone["file"]).resolve())
        if data.get("auth"):
            data["auth"]["tokens_file"] = str(base.resolve_path(data["auth"]["tokens_file"]).resolve())
        path = self.state_dir / "steering.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def _write_agent(self, target_id: str, observer: str = "", geos: tuple[str, ...] = ()) -> Path:
        """The agent file of ``target_id``'s own agent, or of ``observer`` probing it from outside."""
        assert self.config is not None
        sim = self.sims[target_id]
        region_ids = {r.id for r in self.config.regions}
        region = target_id if target_id in region_ids else self.config.site(target_id).region
        stats = f"http://127.0.0.1:{sim.port}/stats"
        health = f"http://127.0.0.1:{sim.port}/healthz" + (f"?from={observer}" if observer else "")
        agent: dict[str, Any] = {
            "site": target_id,
            "region": region,
            "kind": "region" if target_id in region_ids else "cache",
            "agent_id": observer or f"demo-{target_id}",
            "controllers": [f"127.0.0.1:{self.api_port}", f"127.0.0.1:{self.api_port + 1}"],
            "interval_seconds": 0.5,
            "fall": 2,
            "rise": 2,
            "initial": "healthy",
            "probes": [{"name": "frontend", "kind": "http", "url": health,
                        "expect_status": [200], "body_contains": "ok", "timeout_seconds": 1}],
            "capacity": {"url": stats, "json_path": "capacity.requests_per_second"},
            "load": {"url": stats, "json_path": "load.requests_per_second"},
            "backoff": {"initial_seconds": 0.2, "max_seconds": 2},
        }
        if observer:  # it sees the site from outside: no capacity or load of its own to read
            del agent["capacity"], agent["load"]
            agent.update(role="observer", geos=list(geos), steering_config=str(self.run_config))
        path = self.state_dir / "agents" / (f"{observer}-{target_id}.yaml" if observer else f"{target_id}.yaml")
        path.write_text(yaml.safe_dump(agent, sort_keys=False))
        return path

    def _write_info(self) -> None:
        assert self.etcd is not None
        info = {
            "pid": os.getpid(),
            "dns_port": self.dns_port,
            "api_ports": [self.api_port, self.api_port + 1],
            "etcd": self.etcd.endpoints,
            "config": str(self.run_config),
            "targets": {t: {"port": s.port, "state_file": str(s.state_file)} for t, s in self.sims.items()},
            "observers": {o.id: {"geos": list(o.geos), "targets": list(o.targets)}
                          for o in (self.config.observers if self.config else ())},
            "pids": {p.name: p.pid for p in self.procs} | {"etcd": self.etcd.members[0].proc.pid
                                                            if self.etcd.members[0].proc else 0},
        }
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
        os.replace(tmp, self.state_dir / STATE_FILE)
        self.owns_state = True

    def dead(self) -> list[str]:
        """Processes that exited on their own (so the demo can say so)."""
        return [f"{p.name} (exit {p.popen.returncode}, log {p.log})" for p in self.procs
                if p.popen is not None and p.popen.poll() is not None]

    # ---------------------------------------------------------------- stop

    def stop(self) -> None:
        agents = [p for p in self.procs if p.name.startswith("agent-")]
        others = [p for p in self.procs if not p.name.startswith("agent-")]
        for group in (agents, [p for p in others if p.name == "dns"],
                      [p for p in others if p.name.startswith("controller")]):
            for p in group:
                if p.popen is not None and p.popen.poll() is None:
                    p.popen.send_signal(signal.SIGTERM)
            for p in group:
                p.stop()
        if self.etcd is not None:
            self.etcd.stop()
        for s in self.sims.values():
            s.stop()
        if self.owns_state:
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)
            self.owns_state = False


async def wait_ready(demo: Demo, timeout: float = 30.0) -> None:
    """Until the DNS server answers and a routing table exists, or a process dies."""
    import dns.asyncquery
    import dns.message
    import dns.rcode

    assert demo.config is not None
    name = demo.config.services[0].name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = demo.dead()
        if dead:
            raise DemoError("exited during start-up: " + "; ".join(dead))
        try:
            q = dns.message.make_query(name, "A")
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=demo.dns_port, timeout=0.5)
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise DemoError(f"not ready within {timeout:.0f}s; see the logs in {demo.state_dir / 'logs'}")
