"""How a routing table is laid out in etcd, and the JSON of every other record. Pure: bytes in, bytes out.

etcd refuses a request over 1.5 MiB, and at benchmark scale the canonical
table JSON is several MiB. So the table is compressed (zlib; the JSON is very
repetitive) and cut into chunks stored under ``routing/v<N>/<blob>/<i>``;
``routing/current`` holds a small pointer naming version, blob id, chunk count
and a checksum. The blob id is derived from the content, so a retried publish
writes the same keys, and two would-be leaders writing the same version
cannot mix their chunks. A reader assembles the chunks at the revision at
which it read the pointer and checks the sha256, so it never sees half a table.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from steering.table import RoutingTable

CHUNK_BYTES = 256 * 1024
ENCODING = "zlib+json"


def record_bytes(data: Any) -> bytes:
    """Every other record's stored form: compact JSON with sorted keys (health, overrides, audit, ...)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Pointer:
    version: int
    parent_version: int
    blob: str
    chunks: int
    sha256: str
    size: int  # uncompressed bytes
    # Where the value of "sites" is in the uncompressed JSON (start, end): a DNS server, which serves no site
    # state, leaves those bytes unparsed (RoutingTable.from_json). None: written before it was kept.
    sites: tuple[int, int] | None = None

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"version": self.version, "parent_version": self.parent_version, "blob": self.blob,
                                "chunks": self.chunks, "sha256": self.sha256, "size": self.size,
                                "encoding": ENCODING}
        if self.sites is not None:
            data["sites"] = list(self.sites)
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Encoded:
    pointer: Pointer
    chunks: list[bytes]

    @property
    def total_bytes(self) -> int:
        return sum(len(c) for c in self.chunks)


# zlib level of a table's blob. At 10,000 sites (3.9 MB of JSON): level 6 took 66 ms of the leader's CPU per
# table for 416 KB, level 1 19 ms for 568 KB (inflating either: 7-11 ms). Every table an evacuation publishes
# pays it before DNS can follow; etcd holds the extra 150 KB without effort.
TABLE_ZLIB_LEVEL = 1


def encode_table(table: RoutingTable, chunk_bytes: int = CHUNK_BYTES) -> Encoded:
    raw, sites = table.to_json_with_sites_span()
    blob = zlib.compress(raw, TABLE_ZLIB_LEVEL)
    digest = hashlib.sha256(blob).hexdigest()
    chunks = [blob[i: i + chunk_bytes] for i in range(0, len(blob), chunk_bytes)] or [b""]
    pointer = Pointer(version=table.version, parent_version=table.parent_version, blob=digest[:16],
                      chunks=len(chunks), sha256=digest, size=len(raw), sites=sites)
    return Encoded(pointer, chunks)


def parse_pointer(value: bytes) -> Pointer | RoutingTable:
    """Read ``routing/current``: a pointer, or (written by hand or an old tool) a whole table inline.

    Raises ValueError naming the problem.
    """
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"routing/current: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("routing/current: not a JSON object")
    if "services" in data:
        return RoutingTable.from_json(value)
    try:
        if data.get("encoding") != ENCODING:
            raise ValueError(f"encoding {data.get('encoding')!r} is not {ENCODING!r}")
        p = Pointer(version=int(data["version"]), parent_version=int(data.get("parent_version", 0)),
                    blob=str(data["blob"]), chunks=int(data["chunks"]), sha256=str(data["sha256"]),
                    size=int(data.get("size", 0)), sites=_span(data.get("sites")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"routing/current: malformed pointer ({type(exc).__name__}: {exc})") from None
    if p.chunks < 1 or p.chunks > 10_000 or p.version < 0 or not p.blob.isalnum():
        raise ValueError(f"routing/current: implausible pointer {data!r}")
    return p


def _span(value: Any) -> tuple[int, int] | None:
    """A pointer's "sites": two ints, 0 <= start < end; anything else is as if absent (it is only a shortcut:
    a reader without it parses the whole table)."""
    if (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
            and 0 <= value[0] < value[1] < 2**63):
        return value[0], value[1]
    return None


def decode_table(pointer: Pointer, chunks: list[bytes], serving_only: bool = False) -> RoutingTable:
    """Reassemble and validate; raises ValueError for a missing chunk, a bad checksum or a malformed table.

    ``serving_only``: for a reader that serves no site state (a DNS server): with the pointer's span, the
    sites' states are left unparsed and the table has none (``RoutingTable.from_json``)."""
    if len(chunks) != pointer.chunks:
        raise ValueError(f"routing v{pointer.version}: {len(chunks)} of {pointer.chunks} chunks present")
    blob = b"".join(chunks)
    if hashlib.sha256(blob).hexdigest() != pointer.sha256:
        raise ValueError(f"routing v{pointer.version}: checksum mismatch")
    try:
        raw = inflate(blob)
    except zlib.error as exc:
        raise ValueError(f"routing v{pointer.version}: cannot decompress ({exc})") from None
    table = RoutingTable.from_json(raw, pointer.sites if serving_only else None)
    if table.version != pointer.version:
        raise ValueError(f"routing: pointer says v{pointer.version}, table says v{table.version}")
    return table


# Output per call of inflate's loop: ~0.3 ms of work. zlib.decompress lets go of the interpreter while it
# inflates but holds it to gather the output (4 MB at 10,000 sites) and keeps it between its steps, and a DNS
# server decodes tables in a thread next to the ones answering (docs/benchmarks.md, the swap stall).
INFLATE_PIECE = 256 * 1024


def inflate(blob: bytes) -> bytes:
    """``zlib.decompress(blob)`` a piece at a time; raises zlib.error for a truncated or corrupt stream."""
    d = zlib.decompressobj()
    parts = [d.decompress(blob, INFLATE_PIECE)]
    while d.unconsumed_tail:
        parts.append(d.decompress(d.unconsumed_tail, INFLATE_PIECE))
    parts.append(d.flush())
    if not d.eof:
        raise zlib.error("incomplete or truncated stream")
    return b"".join(parts)


def decode_kept(version: int, blob: str, chunks: list[bytes]) -> RoutingTable:
    """An older version read from its chunks alone (its pointer is gone): the blob id, 16 hex of the sha256,
    stands in for the checksum. Raises ValueError as ``decode_table`` does."""
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    if not digest.startswith(blob):
        raise ValueError(f"routing v{version}: checksum mismatch")
    return decode_table(Pointer(version=version, parent_version=0, blob=blob, chunks=len(chunks), sha256=digest,
                                size=0), chunks)


# Topology: stored in one key; compressed when large so that a big config stays under etcd's request limit.
_ZLIB_MAGIC = b"zlib:"


def encode_blob(data: bytes, threshold: int = 512 * 1024) -> bytes:
    if len(data) <= threshold:
        return data
    return _ZLIB_MAGIC + zlib.compress(data, 6)


def decode_blob(value: bytes) -> bytes:
    if value.startswith(_ZLIB_MAGIC):
        try:
            return zlib.decompress(value[len(_ZLIB_MAGIC):])
        except zlib.error as exc:
            raise ValueError(f"cannot decompress stored value ({exc})") from None
    return value
