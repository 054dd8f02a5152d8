"""Child processes the tests start: stopped by PID (``steering.etcdproc.stop_process``, the demo's too)."""

from __future__ import annotations

import os
from pathlib import Path

from steering.etcdproc import stop_process

__all__ = ["gone", "stop_process"]


def gone(pid: int) -> bool:
    """True once ``pid`` is no process, or a zombie (it answers nothing and holds no socket)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, not ours
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
