"""Run the whole system on loopback: etcd, two controllers, the DNS server, simulated targets, agents.

Every daemon is a real process started from this venv's console scripts,
with its log under ``<state-dir>/logs``; the simulated targets (and, with
``--route53``, moto's Route 53) are HTTP servers in this process. Stopping
stops every process this demo started, by PID: agents first, then DNS,
controllers, etcd. A child that exits on its own is reported and the rest keep
running; ``restart(name)`` starts it again (``steering demo restart NAME``).

Unless the config lists its own ``observers``, the demo adds one per geo of
``OBSERVER_GEOS`` (``probe-na-east``, ``probe-europe``) observing every
region, each an ``steering agent`` process with ``role: observer`` per
region, with ``policy.health`` at a majority quorum and per-geo
reachability on, so ``steering demo cut REGION GEO`` shows a region
unreachable from one geo while it serves the others (docs/health.md).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from steering.config import Config, load_config
from steering.demo.control import STATE_FILE as STATE_FILE
from steering.demo.control import start_ticks
from steering.demo.simtarget import SimTarget
from steering.etcdproc import EtcdCluster, stop_process

if TYPE_CHECKING:
    from steering.demo.fakeroute53 import FakeRoute53

DEFAULT_LOAD = {"us-east-1": 6000.0, "us-west-2": 4000.0, "eu-west-1": 5000.0}
# Client geos whose observers the demo runs (those the config has), each observing every region.
OBSERVER_GEOS = ("na-east", "europe")
# The fake Route 53's pace: moto never throttles, and a demo should show a sync within seconds.
FAKE_ROUTE53 = {"max_requests_per_second": 50, "sync_interval": 15, "insync_poll_seconds": 0.2}
# The demo's default config: the example deployment of the source tree (the demo runs from a checkout).
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "steering.yaml"


def agent_document(target_id: str, region: str, is_region: bool, agent_id: str, controllers: list[str],
                   sim_url: str, observer: str = "") -> dict[str, Any]:
    """The agent file (as a dict) of the agent of simulated target ``target_id`` served at ``sim_url``
    (``steering demo`` and ``steering lab`` both write it): quick probes, so a break shows within seconds."""
    stats = f"{sim_url}/stats"
    health = f"{sim_url}/healthz" + (f"?from={observer}" if observer else "")
    return {
        "site": target_id,
        "region": region,
        "kind": "region" if is_region else "cache",
        "agent_id": agent_id,
        "controllers": controllers,
        "interval_seconds": 0.5,
        "fall": 2,
        "rise": 2,
        "initial": "healthy",
        "probes": [{"name": "frontend", "kind": "http", "url": health,
                    "expect_status": [200], "body_contains": "ok", "timeout_seconds": 1}],
        "capacity": {"url": stats, "json_path": "capacity.requests_per_second"},
        "load": {"url": stats, "json_path": "load.requests_per_second"},
        "backoff": {"initial_seconds": 0.2, "max_seconds": 2},
        # started beside its controllers, it may land on another's first: home again within seconds
        "failback_seconds": 2,
    }


class DemoError(Exception):
    """A reason the demo cannot start, in one line."""


def default_state_dir() -> Path:
    return Path(os.environ.get("STEERING_DEMO_DIR") or builtin_state_dir())


def builtin_state_dir() -> Path:
    """The state dir a command finds without ``--state-dir`` or ``$STEERING_DEMO_DIR``."""
    return Path(f"/tmp/steering-demo-{os.getuid()}")


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def command_name(name: str) -> str:
    """How a user runs this venv's console script ``name`` from this directory: bare when PATH finds this
    very script, else its path relative to here when it lies below (``.venv/bin/steerctl``), else absolute."""
    mine = Path(bin_path(name))
    found = shutil.which(name)
    if found and Path(found).resolve() == mine.resolve():
        return name
    try:
        return str(mine.relative_to(Path.cwd()))
    except ValueError:
        return str(mine)


def is_loopback_url(url: str | None) -> bool:
    host = urlsplit(url).hostname if url else None
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    env: dict[str, str] | None = None  # added to this process's environment

    def start(self) -> None:
        env = {**os.environ, **self.env} if self.env else None
        with open(self.log, "ab") as out:
            # Its own session: a Ctrl-C in the demo's terminal is the demo's to handle, in order.
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, env=env)

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.popen, timeout)

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen else 0


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 2000))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f": {lines[-1].strip()[:300]}" if lines else ""


def exit_words(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Demo:
    config_path: Path
    state_dir: Path
    dns_port: int = 5353
    api_port: int = 50051
    http_port: int = 8080  # the console and REST API: controller-1 here, controller-2 on the next port (0: off)
    ingest_port: int = 50061  # the agents' reports: controller-1's ingest listener, controller-2's next (0: off)
    observers: bool = True  # add the demo's observers when the config has none
    route53: bool = False  # run moto's Route 53 on loopback and point the leader's sink at it
    etcd: EtcdCluster | None = None
    procs: list[Proc] = field(default_factory=list)
    sims: dict[str, SimTarget] = field(default_factory=dict)
    config: Config | None = None
    run_config: Path | None = None
    owns_state: bool = False  # whether this instance wrote demo.json (a refused second demo did not)
    started: bool = False  # whether anything was started (a refused demo has nothing to stop)
    fake_route53: FakeRoute53 | None = None
    warnings: list[str] = field(default_factory=list)  # to say loudly before the hints (real AWS)
    _reported: set[int] = field(default_factory=set)  # PIDs whose exit was reported
    _lock: threading.RLock = field(default_factory=threading.RLock)  # restart vs stop

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
        for p in self.http_ports:
            if not port_free(p, socket.SOCK_STREAM):
                busy.append(f"HTTP port {p}")
        for p in self.ingest_ports:
            if not port_free(p, socket.SOCK_STREAM):
                busy.append(f"ingest port {p}")
        if busy:
            raise DemoError(f"{', '.join(busy)} already in use (is another demo running?); "
                            "choose others with --dns-port / --api-port / --http-port / --ingest-port")

    def start(self) -> None:
        self.preflight()
        base = load_config(self.config_path)  # validate the user's file first: errors name its fields
        if self.route53:
            from steering.demo.fakeroute53 import moto_missing

            missing = moto_missing()
            if missing:
                raise DemoError(f"--route53: {missing}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Each demo starts from a clean slate: no tables or evacuations from a previous run.
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        shutil.rmtree(self.state_dir / "targets", ignore_errors=True)
        shutil.rmtree(self.state_dir / "requests", ignore_errors=True)
        (self.state_dir / "dns-table.json").unlink(missing_ok=True)
        for sub in ("logs", "targets", "agents", "requests"):
            (self.state_dir / sub).mkdir(exist_ok=True)
        self.started = True
        if self.route53:
            from steering.demo.fakeroute53 import FakeRoute53

            try:
                self.fake_route53 = FakeRoute53.start(base.zones[0].origin)
            except Exception as exc:  # moto's server or its zone: one line, not a traceback
                raise DemoError(f"--route53: moto's Route 53 did not start: {type(exc).__name__}: {exc}") from None
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
        # The controllers talk to the fake Route 53 with dummy credentials, never the user's.
        aws = dict(self.fake_route53.env) if self.fake_route53 is not None else None
        for i in range(2):
            port = self.api_port + i
            http = ["--http-addr", f"127.0.0.1:{self.http_ports[i]}"] if self.http_ports else []
            ingest = ["--ingest-addr", f"127.0.0.1:{self.ingest_ports[i]}"] if self.ingest_ports else []
            self.procs.append(Proc(f"controller-{i + 1}", [bin_path("steering"), "controller", *env_args,
                                                           "--listen", f"127.0.0.1:{port}", "--id", f"ctl-{i + 1}",
                                                           *http, *ingest],
                                   logs / f"controller-{i + 1}.log", env=aws))
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
        if self.fake_route53 is not None:
            if data.get("route53"):
                self.warnings.append(f"--route53: the route53 section of {self.config_path} is replaced by "
                                     "the demo's fake Route 53")
            data["route53"] = {"hosted_zone_id": self.fake_route53.zone_id, "region": "us-east-1",
                               "endpoint_url": self.fake_route53.url, **FAKE_ROUTE53}
        elif base.route53 is not None and not is_loopback_url(base.route53.endpoint_url):
            r53 = base.route53
            self.warnings.append(
                f"ROUTE 53: {self.config_path} has a route53 section: the demo's leader WILL CHANGE hosted zone "
                f"{r53.hosted_zone_id} at {r53.endpoint_url or 'AWS (region ' + r53.region + ')'} with the AWS "
                "credentials of this environment. Ctrl-C now if that is not what you want; "
                "`steering demo --route53` uses a local fake instead")
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
        agent = agent_document(target_id, region, target_id in region_ids, observer or f"demo-{target_id}",
                               [f"127.0.0.1:{p}" for p in (self.ingest_ports or [self.api_port, self.api_port + 1])],
                               f"http://127.0.0.1:{sim.port}", observer)
        if observer:  # it sees the site from outside: no capacity or load of its own to read
            del agent["capacity"], agent["load"]
            agent.update(role="observer", geos=list(geos), steering_config=str(self.run_config))
        path = self.state_dir / "agents" / (f"{observer}-{target_id}.yaml" if observer else f"{target_id}.yaml")
        path.write_text(yaml.safe_dump(agent, sort_keys=False))
        return path

    @property
    def http_ports(self) -> list[int]:
        return [self.http_port, self.http_port + 1] if self.http_port else []

    @property
    def ingest_ports(self) -> list[int]:
        return [self.ingest_port, self.ingest_port + 1] if self.ingest_port else []

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/" if self.http_port else ""

    def pids(self) -> dict[str, int]:
        """Every child's PID by name (0: not running)."""
        out = {p.name: p.pid for p in self.procs}
        if self.etcd is not None:
            proc = self.etcd.members[0].proc
            out["etcd"] = proc.pid if proc is not None else 0
        return out

    def _write_info(self) -> None:
        assert self.etcd is not None
        pids = self.pids()
        info = {
            "pid": os.getpid(),
            "pid_start": start_ticks(os.getpid()),
            "dns_port": self.dns_port,
            "api_ports": [self.api_port, self.api_port + 1],
            "http_ports": self.http_ports,
            "ingest_ports": self.ingest_ports,
            "console_url": self.console_url,
            "etcd": self.etcd.endpoints,
            "config": str(self.run_config),
            "targets": {t: {"port": s.port, "state_file": str(s.state_file)} for t, s in self.sims.items()},
            "observers": {o.id: {"geos": list(o.geos), "targets": list(o.targets)}
                          for o in (self.config.observers if self.config else ())},
            "pids": pids,
            # With each PID the time its process started: `steering demo stop` signals a PID only while
            # it is still that process (steering.demo.control).
            "starts": {name: start_ticks(pid) for name, pid in pids.items() if pid},
            "route53": ({"endpoint_url": self.fake_route53.url, "hosted_zone_id": self.fake_route53.zone_id}
                        if self.fake_route53 is not None else None),
        }
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
        os.replace(tmp, self.state_dir / STATE_FILE)
        self.owns_state = True

    def _children(self) -> list[tuple[str, subprocess.Popen[bytes] | None, Path]]:
        out = [(p.name, p.popen, p.log) for p in self.procs]
        if self.etcd is not None:
            m = self.etcd.members[0]
            out.append(("etcd", m.proc, m.log_path or self.state_dir / "etcd"))
        return out

    def dead(self) -> list[str]:
        """Processes that exited on their own (so the demo can say so), each with its log's last line: the
        reason a start-up failed, without opening the file."""
        return [f"{name} ({exit_words(popen.returncode)}, log {log}{_last_line(log)})"
                for name, popen, log in self._children() if popen is not None and popen.poll() is not None]

    def newly_dead(self) -> list[tuple[str, str]]:
        """(name, how it ended and where its log is) of each child that exited since the last call."""
        out = []
        with self._lock:
            for name, popen, log in self._children():
                if popen is not None and popen.poll() is not None and popen.pid not in self._reported:
                    self._reported.add(popen.pid)
                    out.append((name, f"{exit_words(popen.returncode)}; log {log}"))
        return out

    def names(self) -> list[str]:
        """What ``restart`` takes: each child's name, and ``agents`` for every agent."""
        return [*sorted(name for name, _, _ in self._children()), "agents"]

    def restart(self, name: str) -> str:
        """Stop ``name`` if it runs and start it again (the same command, log and ports); one line saying
        so. ``agents`` restarts every agent. KeyError naming the known names for an unknown one."""
        with self._lock:
            if not self.started or self.etcd is None:
                raise KeyError("the demo is not running")
            if name == "agents":
                chosen = [p for p in self.procs if p.name.startswith("agent-")]
            else:
                chosen = [p for p in self.procs if p.name == name]
            if not chosen and name != "etcd":
                raise KeyError(f"unknown process {name!r}; known: {', '.join(self.names())}")
            if name == "etcd":
                member = self.etcd.members[0]
                member.stop()
                member.start()  # its data dir and ports: the controllers and DNS server reconnect
                done = [f"etcd (pid {self.pids()['etcd']})"]
            else:
                for p in chosen:
                    p.stop()
                for p in chosen:
                    p.start()
                done = [f"{p.name} (pid {p.pid})" for p in chosen]
            self._write_info()
            return f"restarted {', '.join(done)}"

    # ---------------------------------------------------------------- stop

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        steps: list[Callable[[], None]] = []
        agents = [p for p in self.procs if p.name.startswith("agent-")]
        others = [p for p in self.procs if not p.name.startswith("agent-")]
        for group in (agents, [p for p in others if p.name == "dns"],
                      [p for p in others if p.name.startswith("controller")]):
            steps.append(functools.partial(_terminate, group))  # the whole group at once, then wait for each
            steps += [p.stop for p in group]
        if self.etcd is not None:
            steps.append(self.etcd.stop)
        steps += [s.stop for s in self.sims.values()]
        if self.fake_route53 is not None:
            steps.append(self.fake_route53.stop)
        failed = []
        for step in steps:  # one that fails never keeps the others from running
            try:
                step()
            except Exception as exc:
                failed.append(f"{type(exc).__name__}: {exc}")
        self.fake_route53 = None
        if self.owns_state:
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)
            self.owns_state = False
        if failed:
            raise DemoError("while stopping: " + "; ".join(failed))


def _terminate(group: list[Proc]) -> None:
    for p in group:
        if p.popen is not None and p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)


async def wait_ready(demo: Demo, timeout: float = 30.0, stopping: Callable[[], bool] = lambda: False) -> None:
    """Until the DNS server answers and a routing table exists, a process dies, or ``stopping()``."""
    import dns.asyncquery
    import dns.message
    import dns.rcode

    assert demo.config is not None
    name = demo.config.services[0].name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping():
            return
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
