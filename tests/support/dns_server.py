"""The DNS server for tests: configs and hand-made tables, the server in-process, and ``steering dns`` as
shipped (a subprocess of the console script, its JSON log lines collected).

Moved here from ``dnsserver/testing.py`` (and the ``Daemon`` of tests/test_dns_workers.py): none of it
is product code. The benchmarks (bench/dns_*.py) import ``write_config`` and ``table_with`` from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.request
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dnsserver.server import DnsServer
from steering.config import Config, load_config
from steering.table import GeoRoute, RoutingTable, ServiceRoute
from tests.support.paths import EXAMPLES, ROOT, STEERING
from tests.support.ports import free_port
from tests.support.procs import gone, stop_process
from tests.support.wait import eventually_sync

# ---- configuration and tables


def write_config(directory: Path, dns: Mapping[str, Any] | None = None, extra_zone: str = "",
                 etcd_endpoints: list[str] | None = None, extra_zones: list[dict[str, Any]] | None = None) -> Path:
    """The example config with its zone file copied into ``directory``; ``extra_zone`` lines appended."""
    directory.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((EXAMPLES / "steering.yaml").read_text())
    data["dns"] = {"listen": ["127.0.0.1:0"], "state_file": str(directory / "dns-table.json"), **(dns or {})}
    if etcd_endpoints is not None:
        data["etcd"] = {"endpoints": etcd_endpoints, "prefix": "/steering/v1", "timeout_seconds": 2.0}
    data["zones"] = list(data["zones"]) + list(extra_zones or [])
    shutil.copy(EXAMPLES / "example.test.zone", directory / "example.test.zone")
    if extra_zone:
        with open(directory / "example.test.zone", "a") as f:
            f.write("\n" + extra_zone + "\n")
    path = directory / "steering.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(directory: Path, **kw: Any) -> Config:
    return load_config(write_config(directory, **kw))


def table_with(cfg: Config, version: int, weights: Mapping[str, Mapping[str, Mapping[str, int]]],
               generated_at: float = 1_000_000.0) -> RoutingTable:
    """A table from ``{service: {geo: {target: weight}}}``; geos not given get their first preference."""
    services = {}
    for svc in cfg.services:
        geos = {}
        for geo in cfg.geos:
            w = dict(weights.get(svc.name, {}).get(geo.id, {}))
            if not w:
                first = next(t for t in (*geo.prefer, *geo.prefer_sites) if t in svc.answers)
                w = {first: 1000}
            geos[geo.id] = GeoRoute(weights=w, reasons={t: "test" for t in w})
        services[svc.name] = ServiceRoute(targets=svc.targets, geos=geos)
    return RoutingTable(version=version, parent_version=version - 1, generated_at=generated_at,
                        services=services, regions={}, topology=cfg.fingerprint())


# The example config's answers for api.example.test per region, and a table splitting every geo of it
# between us-east-1 and us-west-2.
EAST = frozenset({"192.0.2.10", "192.0.2.11"})
WEST = frozenset({"192.0.2.20"})
EU = frozenset({"192.0.2.30"})
SPLIT = {"api.example.test.": {g: {"us-east-1": 500, "us-west-2": 500}
                               for g in ("na-east", "na-west", "europe", "south-america", "asia-pacific", "world")}}


# ---- asking


def addresses(r: dns.message.Message) -> frozenset[str]:
    """Every address in the answer section."""
    return frozenset(rd.address for rrset in r.answer for rd in rrset)


def api_query(subnet: str | None = None) -> dns.message.Message:
    """api.example.test A, with an ECS /24 of ``subnet`` when given (a client in that subnet)."""
    opts: list[dns.edns.Option] | None = [dns.edns.ECSOption(subnet, 24)] if subnet else None
    return dns.message.make_query("api.example.test", "A", use_edns=0 if subnet else None, options=opts)


def ask_udp(port: int, subnet: str | None = None, timeout: float = 2.0) -> dns.message.Message:
    """One query from a fresh socket: a new source port every time."""
    return dns.query.udp(api_query(subnet), "127.0.0.1", port=port, timeout=timeout)


def ask_tcp(port: int, subnet: str | None = None, timeout: float = 2.0) -> dns.message.Message:
    """One query on a fresh connection."""
    return dns.query.tcp(api_query(subnet), "127.0.0.1", port=port, timeout=timeout)


def answered(port: int) -> bool:
    """Whether the server on ``port`` answers NOERROR now (a condition for ``eventually``)."""
    try:
        return ask_udp(port, timeout=0.5).rcode() == dns.rcode.NOERROR
    except (dns.exception.Timeout, OSError):
        return False


# ---- in-process


@contextlib.asynccontextmanager
async def serving(cfg: Config, table: RoutingTable | None = None,
                  state_file: str | None = None) -> AsyncIterator[tuple[DnsServer, int]]:
    """A ``DnsServer`` on this event loop, on a free loopback port: ``(server, port)``."""
    server = DnsServer(cfg, table, state_file=state_file)
    await server.start(["127.0.0.1:0"])
    try:
        yield server, server.addresses[0][1]
    finally:
        await server.close()


# ---- the shipped command


class DnsProcess:
    """``steering dns`` as a subprocess, with JSON logs collected from its stderr (the supervisor's and the
    workers'); a context manager that never leaves a worker behind, even when a test failed.

    ``args`` go to the command after ``--config``; ``metrics`` serves /metrics on a free port.
    """

    def __init__(self, config: Path, *args: str, metrics: bool = True) -> None:
        self.metrics_port = free_port() if metrics else None
        argv = [STEERING, "dns", "--config", str(config), *args]
        if self.metrics_port:
            argv += ["--metrics-addr", f"127.0.0.1:{self.metrics_port}"]
        env = {**os.environ, "STEERING_LOG_FORMAT": "json"}
        # a session of its own: a test may signal the daemon's whole process group, as systemd does
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.raw: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # read stderr as it comes: a full pipe would stall the daemon
        self._reader = threading.Thread(target=self._read, name="dns-log-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self._lock:
                self.raw.append(line)
                if isinstance(event, dict):
                    self.events.append(event)

    def log(self) -> str:
        """Every line written to stderr so far."""
        with self._lock:
            return "\n".join(self.raw)

    def named(self, name: str, **match: Any) -> list[dict[str, Any]]:
        """The log events called ``name`` whose fields equal ``match``."""
        with self._lock:
            return [e for e in self.events if e.get("event") == name
                    and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, name: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        """The latest such event, once there is one (fails at once if the daemon exited without it)."""
        def found() -> dict[str, Any] | None:
            got = self.named(name, **match)
            assert got or self.proc.poll() is None, f"steering dns exited {self.proc.returncode}:\n{self.log()[-3000:]}"
            return got[-1] if got else None
        event: dict[str, Any] = eventually_sync(found, timeout, f"log event {name} {match}")
        return event

    def ready(self, timeout: float = 30) -> int:
        """Once every worker listens (the supervisor says so; a single process: once it listens); the port.

        Until then a query can land on a worker's socket that nobody reads yet (SO_REUSEPORT spreads them)."""
        def up() -> bool:
            assert self.proc.poll() is None, f"steering dns exited {self.proc.returncode}:\n{self.log()[-3000:]}"
            if self.named("dns.supervisor.starting"):  # logged before any worker starts
                return bool(self.named("dns.supervisor.ready"))
            return bool(self.named("dns.listening"))

        eventually_sync(up, timeout, "steering dns to be ready")
        return self.port

    @property
    def port(self) -> int:
        """The port it listens on, from its latest ``dns.listening`` line (waits for one)."""
        return int(self.wait_event("dns.listening")["port"])

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> PID of its latest process."""
        return {int(e["worker"]): int(e["pid"]) for e in self.named("dns.worker.started")}

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        assert self.metrics_port is not None, "started without metrics"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=15) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def metric(self, name: str, **labels: str) -> float:
        """The sum over the samples carrying these labels (each worker reports its own gauges)."""
        want = set(labels.items())
        return sum(v for (n, have), v in self.metrics().items() if n == name and want <= set(have))

    def wait(self, timeout: float = 30) -> int:
        """Wait for it to exit by itself; the exit code once its log is read to the end."""
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait, then SIGKILL; the exit code once its log is read to the end."""
        stop_process(self.proc, timeout)
        self._reader.join(10)
        return self.proc.returncode

    def __enter__(self) -> DnsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.worker_pids().values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(10)
