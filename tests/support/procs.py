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


def with_ctrl_c(argv: list[str]) -> list[str]:
    """``argv`` run with SIGINT at its default, as a command started from a terminal has it.

    A test run in the background (``nohup make test &``, a CI runner) has SIGINT ignored, and an ignored
    signal stays ignored across fork and exec: Python then never installs its KeyboardInterrupt handler,
    and a test's "Ctrl-C" (SIGINT) does nothing. A small exec wrapper puts the default back first.
    """
    import sys

    code = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", code, *argv]
