"""``steering demo`` as a user runs it: the console script in a subprocess, on free loopback ports.

``DemoRun.start`` runs it (optionally behind a shell pipeline, ``| tee FILE``, in its own session so a test
can send the terminal's Ctrl-C to the whole group); ``up`` waits for its hints and its state file;
``close`` stops it by PID and then stops, by the PIDs and start times the demo recorded, whatever it left
running (``steering.demo.control.stop``): a failed test never leaves etcd and the controllers behind.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steering.demo import control
from tests.support.paths import ROOT, STEERING
from tests.support.ports import free_port_block
from tests.support.procs import gone, stop_process
from tests.support.wait import eventually_sync

UP = "The demo is up."


@dataclass
class DemoRun:
    state: Path
    log: Path  # everything the demo printed (stdout and stderr), or what tee wrote
    proc: subprocess.Popen[bytes]
    dns_port: int
    api_port: int
    http_port: int

    @classmethod
    def start(cls, tmp: Path, *extra: str, env: dict[str, str] | None = None, tee: bool = False,
              name: str = "demo") -> DemoRun:
        dns_port, api_port, http_port = free_port_block(1), free_port_block(2), free_port_block(2)
        state, log = tmp / name, tmp / f"{name}.log"
        argv = [STEERING, "demo", "--dns-port", str(dns_port), "--api-port", str(api_port), "--http-port",
                str(http_port), "--ingest-port", str(free_port_block(2)), "--state-dir", str(state), *extra]
        full_env = {**os.environ, **(env or {})}
        if tee:  # `steering demo | tee LOG` in a shell of its own session: a terminal's process group
            line = f"{shlex.join(argv)} 2>&1 | tee {shlex.quote(str(log))}"
            proc = subprocess.Popen(["bash", "-c", line], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT, env=full_env)
        else:
            with open(log, "wb") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=ROOT, env=full_env)
        return cls(state, log, proc, dns_port, api_port, http_port)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def info(self) -> dict[str, Any] | None:
        return control.read_info(self.state)

    def up(self, timeout: float = 120) -> dict[str, Any]:
        """Until the demo printed its hints and wrote its state file; that state."""
        def ready() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"the demo exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            info = self.info()
            return info if info is not None and UP in self.output() else None

        found: dict[str, Any] = eventually_sync(ready, timeout, "the demo to be up")
        return found

    def pids(self) -> dict[str, int]:
        info = self.info() or {}
        return {k: int(v) for k, v in (info.get("pids") or {}).items() if v}

    @property
    def servers(self) -> str:
        return f"127.0.0.1:{self.api_port},127.0.0.1:{self.api_port + 1}"

    def demo_pid(self) -> int:
        """The ``steering demo`` process (under ``tee``, not the shell's PID)."""
        return int((self.info() or {}).get("pid") or self.proc.pid)

    def command(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``steering demo --state-dir STATE ARGS`` from a second terminal."""
        return subprocess.run([STEERING, "demo", "--state-dir", str(self.state), *args], capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)

    def close(self) -> None:
        recorded = self.info()
        if self.proc.poll() is None:
            if recorded is not None:
                try:
                    os.kill(int(recorded["pid"]), signal.SIGTERM)
                except (ProcessLookupError, KeyError, ValueError):
                    pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, 5)
        control.stop(self.state, demo_timeout=5)  # whatever it left running, by its recorded PIDs only


def all_gone(pids: list[int], timeout: float = 30) -> None:
    eventually_sync(lambda: all(gone(p) for p in pids), timeout,
                    f"every process of the demo to be gone: {[p for p in pids if not gone(p)]}")


def plain_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


__all__ = ["UP", "DemoRun", "all_gone", "plain_lines"]
