"""Acting on a running demo from another terminal: ``steering demo stop`` and ``steering demo restart NAME``.

The demo records in ``<state-dir>/demo.json`` its own PID and every child's
(``pids``) with each process's start time (``starts``, clock ticks since boot
from ``/proc/PID/stat``). A PID is acted on only while the process holding it
started at the recorded time, so a PID the system has since handed to another
process is never signalled.

``stop`` asks the demo process to stop (SIGTERM: it stops its children, agents
first) and, once it is gone or if it was gone already (killed with SIGKILL, say),
stops every recorded child still running: SIGTERM, then SIGKILL after a grace
period (etcd sometimes ignores TERM).

``restart`` is a request the running demo carries out itself, so the new
process is its child and stops with it: a file ``requests/<id>.json`` in the
state dir, answered by ``requests/<id>.done.json`` (demo.json then names the new
PID).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_FILE = "demo.json"
REQUESTS = "requests"
GRACE_SECONDS = 5.0  # SIGTERM, then this long, then SIGKILL
POLL_SECONDS = 0.05


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in (...) may hold spaces
    except (IndexError, ValueError):
        return None


def running(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is the process that started at ``started`` and has not exited (a zombie has)."""
    if pid <= 0 or started is None:
        return False
    if start_ticks(pid) != started:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_info(state_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def demo_running(info: dict[str, Any]) -> bool:
    return running(int(info.get("pid") or 0), info.get("pid_start"))


def _wait(until: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not until():
        if time.monotonic() >= deadline:
            return until()
        time.sleep(POLL_SECONDS)
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop(state_dir: Path, demo_timeout: float = 60.0) -> list[str]:
    """Stop the demo recorded in ``state_dir`` and every child it recorded: lines saying what was done."""
    info = read_info(state_dir)
    if info is None:
        return [f"no demo recorded in {state_dir}: nothing to stop"]
    lines = []
    pid = int(info.get("pid") or 0)
    if demo_running(info):
        _signal(pid, signal.SIGTERM)
        if _wait(lambda: not demo_running(info), demo_timeout):
            lines.append(f"the demo (pid {pid}) stopped")
        else:
            lines.append(f"the demo (pid {pid}) did not stop within {demo_timeout:g}s; stopping its processes")
    else:
        lines.append(f"the demo process (pid {pid}) is gone; stopping what it left running")
    pids: dict[str, int] = {k: int(v) for k, v in (info.get("pids") or {}).items() if v}
    starts: dict[str, int] = info.get("starts") or {}
    left = {name: p for name, p in pids.items() if running(p, starts.get(name))}
    for p in left.values():
        _signal(p, signal.SIGTERM)
    if not _wait(lambda: not any(running(p, starts.get(n)) for n, p in left.items()), GRACE_SECONDS):
        for name, p in left.items():
            if running(p, starts.get(name)):
                _signal(p, signal.SIGKILL)
        _wait(lambda: not any(running(p, starts.get(n)) for n, p in left.items()), GRACE_SECONDS)
    if left:
        lines.append(f"stopped {len(left)} leftover process(es): {', '.join(sorted(left))}")
    still = sorted(n for n, p in left.items() if running(p, starts.get(n)))
    if still:
        lines.append(f"still running after SIGKILL: {', '.join(still)}")
    elif not demo_running(info):
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    return lines


# ---------------------------------------------------------------------- restart requests


def request(state_dir: Path, action: str, name: str, timeout: float) -> dict[str, Any] | None:
    """Ask the running demo to carry out ``action`` on ``name``; its answer ({ok, message}), or None if it
    did not answer within ``timeout`` seconds."""
    box = state_dir / REQUESTS
    box.mkdir(exist_ok=True)
    rid = uuid.uuid4().hex
    tmp = box / f"{rid}.tmp"
    tmp.write_text(json.dumps({"action": action, "name": name}))
    os.replace(tmp, box / f"{rid}.json")
    done = box / f"{rid}.done.json"
    answered = _wait(done.exists, timeout)
    if not answered:
        (box / f"{rid}.json").unlink(missing_ok=True)
        return None
    try:
        answer = json.loads(done.read_text())
    except (OSError, ValueError):
        answer = {"ok": False, "message": "unreadable answer"}
    done.unlink(missing_ok=True)
    return answer if isinstance(answer, dict) else {"ok": False, "message": "unreadable answer"}


def pending(state_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Requests waiting for the demo, oldest first (unreadable ones are answered as such and dropped)."""
    box = state_dir / REQUESTS
    try:
        paths = sorted((p for p in box.glob("*.json") if not p.name.endswith(".done.json")),
                       key=lambda p: p.stat().st_mtime)
    except OSError:
        return []
    out = []
    for p in paths:
        try:
            body = json.loads(p.read_text())
        except (OSError, ValueError):
            answer(p, False, "unreadable request")
            continue
        if isinstance(body, dict):
            out.append((p, body))
        else:
            answer(p, False, "unreadable request")
    return out


def answer(path: Path, ok: bool, message: str) -> None:
    """Answer the request at ``path`` and remove it."""
    done = path.with_name(path.name.removesuffix(".json") + ".done.json")
    tmp = path.with_name(path.name.removesuffix(".json") + ".done.tmp")
    tmp.write_text(json.dumps({"ok": ok, "message": message}))
    os.replace(tmp, done)
    path.unlink(missing_ok=True)


__all__ = ["answer", "demo_running", "pending", "read_info", "request", "running", "start_ticks", "stop"]
