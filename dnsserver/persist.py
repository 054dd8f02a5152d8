"""The last routing table on disk, so a restart answers before the control plane is back.

Written atomically: a temporary file in the same directory, fsync, rename
over the old one, fsync the directory. A reader sees the old table or the
new one, never half of either, even across a power cut.

Read defensively: whatever is in the file (cut short, not JSON, nested
beyond the stack, a valid document that is not a table), loading gives a
table or None and one log line, never an exception. A file that cannot be
used is set aside as ``<file>.bad-<unix time>`` (the newest few kept, for a
post-mortem), so the next start does not trip over it again and the next
table received takes its place.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from steering import logs
from steering.table import RoutingTable

log = logs.get(__name__)

MAX_STATE_BYTES = 256 * 1024 * 1024  # far above any real table; reading more would only risk memory
KEEP_BAD = 3  # set-aside files kept per state file


def save_table(path: str | Path, table: RoutingTable) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, table.to_json())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
    dfd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    log.info("dns.state.written", path=str(p), version=table.version)


def load_table(path: str | Path, set_aside: bool = True) -> RoutingTable | None:
    """The persisted table, or None when there is none or it cannot be used (one log line).

    ``set_aside``: move an unusable file out of the way (only the process that writes the file
    should, so that several readers do not race to rename it).
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            blob = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        log.info("dns.state.none", path=str(p))
        return None
    except OSError as exc:  # permissions, a directory: not ours to move; the write will fail loudly too
        log.warning("dns.state.unreadable", path=str(p), error=f"{type(exc).__name__}: {exc}",
                    action="answering fail-open from the configuration until a table arrives")
        return None
    if len(blob) > MAX_STATE_BYTES:
        problem = f"larger than {MAX_STATE_BYTES} bytes ({size})"
    elif not blob:
        problem = "empty"
    else:
        try:
            return RoutingTable.from_json(blob)
        except ValueError as exc:
            problem = str(exc)
        except Exception as exc:  # from_json promises ValueError; a start must not depend on that promise
            problem = f"{type(exc).__name__}: {exc}"
    moved, error = _set_aside(p) if set_aside else (None, None)
    log.warning("dns.state.unusable", path=str(p), problem=problem[:300], set_aside=moved, set_aside_error=error,
                action="answering fail-open from the configuration until a table arrives")
    return None


def _set_aside(p: Path) -> tuple[str | None, str | None]:
    """Rename ``p`` to ``<p>.bad-<unix time>`` and delete all but the newest KEEP_BAD of those."""
    stamp, n = int(time.time()), 0
    existing = _aside(p)
    if existing and existing[-1][0] >= (stamp, 0):  # same second (or a clock gone back): order by a suffix
        stamp, n = existing[-1][0][0], existing[-1][0][1] + 1
    target = p.with_name(f"{p.name}.bad-{stamp}" + (f"-{n}" if n else ""))
    try:
        os.rename(p, target)
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    _prune(p)
    return str(target), None


_BAD = re.compile(r"\.bad-(\d+)(?:-(\d+))?$")


def _aside(p: Path) -> list[tuple[tuple[int, int], Path]]:
    found = []
    try:
        names = os.listdir(p.parent)
    except OSError:
        return []
    for name in names:
        if name.startswith(p.name + ".bad-"):
            m = _BAD.fullmatch(name[len(p.name):])
            if m:
                found.append(((int(m.group(1)), int(m.group(2) or 0)), p.parent / name))
    return sorted(found)


def set_aside_files(p: Path) -> list[Path]:
    """The set-aside copies of state file ``p``, oldest first."""
    return [path for _, path in _aside(p)]


def _prune(p: Path) -> None:
    for old in set_aside_files(p)[:-KEEP_BAD]:
        try:
            old.unlink()
        except OSError:
            pass  # kept one more: harmless
