"""The lab's processes: started inside a region's namespace, detached (``up`` returns), known by PID and start time.

Each is started as ``ip netns exec NS ARGV`` in a session of its own; ``ip``
execs the command, so the recorded PID is the daemon's and its process group
holds its children (DNS workers). A PID is signalled only while the process
holding it started at the recorded time (``steering.demo.control.running``), so
a PID the system has since reused is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from steering.demo.control import running, start_ticks

GRACE_SECONDS = 5.0
POLL_SECONDS = 0.05
# The daemons this process started: the record is what lasts (up returns), these only reap.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(ns: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start ``argv`` in namespace ``ns``; its record: pid, start, and what it takes to start it again."""
    full_env = {**os.environ, **env} if env else None
    with open(log, "ab") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=full_env)
    _CHILDREN[proc.pid] = proc  # kept so this process reaps it if it ends while we run (no zombie)
    return {"ns": ns, "argv": argv, "log": str(log), "env": env or {}, "pid": proc.pid,
            "start": start_ticks(proc.pid)}


def alive(rec: dict[str, Any]) -> bool:
    child = _CHILDREN.get(int(rec.get("pid") or 0))
    if child is not None:
        child.poll()
    return running(int(rec.get("pid") or 0), rec.get("start"))


def _signal_group(rec: dict[str, Any], sig: int) -> None:
    pid = int(rec.get("pid") or 0)
    if not alive(rec):
        return
    try:
        os.killpg(pid, sig)  # the daemon and its workers
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def kill(rec: dict[str, Any]) -> None:
    """SIGKILL, as a crash: no chance to resign or flush."""
    _signal_group(rec, signal.SIGKILL)
    wait_gone([rec], GRACE_SECONDS)


def stop(recs: list[dict[str, Any]], grace: float = GRACE_SECONDS) -> list[dict[str, Any]]:
    """SIGTERM to all, then SIGKILL to those left after ``grace``; the ones still running after that."""
    for r in recs:
        _signal_group(r, signal.SIGCONT)  # a stopped process would hold SIGTERM
        _signal_group(r, signal.SIGTERM)
    if not wait_gone(recs, grace):
        for r in recs:
            _signal_group(r, signal.SIGKILL)
        wait_gone(recs, grace)
    return [r for r in recs if alive(r)]


def wait_gone(recs: list[dict[str, Any]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(r) for r in recs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def kill_pids(pids: list[int]) -> None:
    """SIGKILL processes found in the lab's namespaces that no record names (left by a crashed ``up``)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
