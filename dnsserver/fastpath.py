"""The hot path: answer ordinary queries from pre-rendered bytes, or return None for the slow path.

Handled here: a plain QUERY with one question, no answer/authority records,
and either nothing or exactly one OPT (version 0) in additional, whose
options may include one well-formed ECS option. Everything else, and any
answer that would not fit the client's payload, goes to ``slowpath``,
which is complete and strict. Reading the header and question with bytes
operations costs a few µs; dnspython's parse and render cost ~100 µs.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from typing import Any

from dnsserver.geo import ClientKey, GeoMap
from dnsserver.render import Snapshot

MAX_UDP_PAYLOAD = 1232  # what we advertise and cap UDP answers at (DNS flag day 2020)
_QD1 = b"\x00\x01\x00\x00\x00\x00"
_OPT_HEAD = b"\x00\x00\x29" + MAX_UDP_PAYLOAD.to_bytes(2, "big") + b"\x00\x00"
_DO = b"\x80\x00"
_NO_DO = b"\x00\x00"
_ECS_HEAD = b"\x00\x08"
_CACHE_MAX = 100_000
_GOLDEN = 0x9E3779B1


class FastPath:
    def __init__(self, geomap: GeoMap, snapshot: Snapshot) -> None:
        self.geomap = geomap
        self.entries: dict[bytes, tuple[Any, Any]] = snapshot.entries
        self._src: dict[str, ClientKey] = {}
        self._ecs: dict[bytes, ClientKey | None] = {}
        # everything after the ID is a function of (query after the ID, client, transport) within
        # one snapshot, so a repeated query costs one dict lookup; cleared on every install
        self._replies: dict[tuple[bytes, str, int], tuple[bytes, list[int], Any, Any]] = {}

    def install(self, snapshot: Snapshot) -> None:
        # two reference swaps with no await between: a query sees old or new answers, never a mix
        self.entries = snapshot.entries
        self._replies = {}

    def source_key(self, host: str) -> ClientKey:
        key = self._src.get(host)
        if key is None:
            if len(self._src) >= _CACHE_MAX:
                self._src.clear()
            key = self._src[host] = self.geomap.key_for_source(host)
        return key

    def ecs_key(self, opt: bytes) -> ClientKey | None:
        """Client key for an ECS option's data, or None when it is malformed (the slow path says FORMERR)."""
        if opt in self._ecs:
            return self._ecs[opt]
        key = None
        if len(opt) >= 4 and opt[3] == 0:
            family = (opt[0] << 8) | opt[1]
            src = opt[2]
            addr = opt[4:]
            width = 32 if family == 1 else 128 if family == 2 else 0
            if width and src <= width and len(addr) == (src + 7) // 8:
                rest = src % 8
                if not (rest and addr[-1] & (0xFF >> rest)):
                    key = self.geomap.key(4 if family == 1 else 6, addr, src)
        if len(self._ecs) >= _CACHE_MAX:
            self._ecs.clear()
        self._ecs[opt] = key
        return key

    def answer(self, q: bytes, host: str, tcp: int) -> bytes | None:
        hit = self._replies.get((q[2:], host, tcp))
        if hit is not None:
            hit[1][0] += 1
            if hit[2] is not None:
                hit[2][0] += 1
                if hit[3] is not None:
                    hit[3][0] += 1
            return q[:2] + hit[0]
        return self._answer(q, host, tcp)

    def _answer(self, q: bytes, host: str, tcp: int) -> bytes | None:
        n = len(q)
        if n < 17 or q[2] & 0xF8 or q[4:10] != _QD1:
            return None  # a response, another opcode, or not exactly one question
        end = q.find(b"\x00", 12)
        qe = end + 5
        if end < 0 or qe > n:
            return None
        entry = self.entries.get(q[12:end + 1].lower() + q[end + 1:qe])
        if entry is None:
            return None
        arcount = q[10:12]
        ecs = None
        if arcount == b"\x00\x00":
            if qe != n:
                return None
            limit = 65535 if tcp else 512
            opt = b""
        elif arcount == b"\x00\x01":
            # OPT: root owner, type 41, class = payload, ttl = ext-rcode, version, flags
            if n < qe + 11 or q[qe] or q[qe + 1:qe + 3] != b"\x00\x29" or q[qe + 6]:
                return None
            if qe + 11 + ((q[qe + 9] << 8) | q[qe + 10]) != n:
                return None
            p = qe + 11
            while p < n:
                if p + 4 > n:
                    return None
                olen = (q[p + 2] << 8) | q[p + 3]
                if p + 4 + olen > n:
                    return None
                if q[p] == 0 and q[p + 1] == 8:
                    if ecs is not None:
                        return None
                    ecs = q[p + 4:p + 4 + olen]
                p += 4 + olen
            limit = 65535 if tcp else max(512, min((q[qe + 3] << 8) | q[qe + 4], MAX_UDP_PAYLOAD))
            opt = _OPT_HEAD + (_DO if q[qe + 7] & 0x80 else _NO_DO)
        else:
            return None
        seed, data = entry
        if ecs is not None:
            key = self.ecs_key(ecs)
            if key is None:
                return None
            # scope: the bits the answer depends on; none for an answer that is the same for everyone
            opt += ((len(ecs) + 4).to_bytes(2, "big") + _ECS_HEAD + len(ecs).to_bytes(2, "big") + ecs[:3]
                    + (b"\x00" if seed is None else key.scope.to_bytes(1, "big")) + ecs[4:])
        elif opt:
            opt += b"\x00\x00"
        if seed is None:
            variant = data
        else:
            if ecs is None:
                key = self.source_key(host)
            total, cum, variants, cells, fb = data[key.geo]
            if len(variants) == 1:
                i = 0
            else:
                i = bisect_right(cum, ((zlib.crc32(key.subnet, seed) * _GOLDEN) & 0xFFFFFFFF) * total >> 32)
            variant = variants[i]
        resp = b"".join((q[:2], bytes((0x84 | (q[2] & 0x01), (q[3] & 0x10) | variant[0])),
                         variant[2] if opt else variant[1], q[12:qe], variant[3], opt))
        if len(resp) > limit:
            return None  # the slow path truncates properly
        qcell = variant[5 if tcp else 4]
        qcell[0] += 1
        acell = None
        if seed is not None:
            acell = cells[i]
            acell[0] += 1
            if fb is not None:
                fb[0] += 1
        if len(self._replies) >= _CACHE_MAX:
            self._replies.clear()
        self._replies[(q[2:], host, tcp)] = (resp[2:], qcell, acell, fb if acell is not None else None)
        return resp
