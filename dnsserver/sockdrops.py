"""Datagrams the kernel dropped at the server's own UDP sockets, read from ``/proc/net/udp`` and ``udp6``.

A query that finds its socket's receive buffer full is dropped by the kernel
before any loop sees it: no histogram or counter of the server's own can
count it, and a resolver only sees a timeout. The kernel keeps a count per
socket (the last column of ``/proc/net/udp``, ``sk_drops``); the server
reads its sockets' counts, matched by inode, when it is scraped. The files
hold every UDP socket of the network namespace, one line each: a read is
one pass over them. Not Linux, or no such file: nothing is counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TABLES = ("/proc/net/udp", "/proc/net/udp6")


def parse(text: str, inodes: frozenset[int]) -> dict[int, int]:
    """Drops by inode for the sockets in ``inodes`` found in one ``/proc/net/udp``-style table. A line of
    another shape (a header, a future column layout without the inode where it is now) is skipped."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 13 or not fields[9].isdigit() or not fields[-1].isdigit():
            continue
        inode = int(fields[9])
        if inode in inodes:
            out[inode] = int(fields[-1])
    return out


def read(inodes: Iterable[int], tables: Iterable[str] = TABLES) -> dict[int, int]:
    """Drops by inode for ``inodes``, from the namespace's tables; a table that cannot be read counts none."""
    wanted = frozenset(inodes)
    found: dict[int, int] = {}
    if not wanted:
        return found
    for path in tables:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                found.update(parse(f.read(), wanted))
        except OSError:
            continue
    return found


def total(seen: dict[int, int], now: Mapping[int, int]) -> int:
    """The sum over sockets of the most each has reported (``seen`` is updated): a socket closed since, whose
    line is gone, keeps what it counted, so the total never goes down."""
    for inode, drops in now.items():
        if drops > seen.get(inode, 0):
            seen[inode] = drops
    return sum(seen.values())
