"""The last routing table on disk, so a restart answers before the control plane is back.

Written atomically: a temporary file in the same directory, fsync, rename
over the old one, fsync the directory. A reader sees the old table or the
new one, never half of either, even across a power cut.
"""

from __future__ import annotations

import os
from pathlib import Path

from steering import logs
from steering.table import RoutingTable

log = logs.get(__name__)


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


def load_table(path: str | Path) -> RoutingTable | None:
    """The persisted table, or None (logged) when there is none or it cannot be used."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except FileNotFoundError:
        log.info("dns.state.none", path=str(p))
        return None
    except OSError as exc:
        log.warning("dns.state.unreadable", path=str(p), error=str(exc))
        return None
    try:
        return RoutingTable.from_json(blob)
    except ValueError as exc:
        log.warning("dns.state.corrupt", path=str(p), error=str(exc))
        return None
