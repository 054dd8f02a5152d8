"""Client geography: longest-prefix match of a client subnet over the configured prefixes.

Pure. An answer for a steered name depends only on the first ``bits`` of the
client's address (its *key*): a resolver's ECS subnet or its own address,
truncated to ``key_bits(family)``. The ECS scope we return is ``bits``, or
more when a configured prefix longer than ``bits`` lies inside the client's
block (RFC 7871 §7.2.1: a /24 holding a configured /28 gets scope 28): the
answer was chosen without the bits that would have placed some of that
block's clients elsewhere, so a resolver must not reuse it for the whole
block.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from steering.config import Geo

# Granularity of a client subnet when the query does not ask for less: the
# common ECS source prefixes. A configured prefix longer than this raises it.
V4_KEY_BITS = 24
V6_KEY_BITS = 56


@dataclass(frozen=True)
class ClientKey:
    """What steering looks at: the geo index, the subnet bytes hashed for a stable answer, the scope."""

    geo: int
    subnet: bytes
    scope: int


class GeoMap:
    """Longest-prefix match from an address to a geo index (position in ``ids``)."""

    def __init__(self, geos: Sequence[Geo], default_id: str) -> None:
        self.ids: tuple[str, ...] = tuple(g.id for g in geos)
        self.default: int = self.ids.index(default_id)
        # per family: {prefix length: {network int: geo index}}, lengths longest first
        self._tables: dict[int, list[tuple[int, dict[int, int]]]] = {4: [], 6: []}
        by_len: dict[int, dict[int, dict[int, int]]] = {4: {}, 6: {}}
        longest = {4: V4_KEY_BITS, 6: V6_KEY_BITS}
        for i, g in enumerate(geos):
            for net in g.networks():
                fam = net.version
                by_len[fam].setdefault(net.prefixlen, {})[int(net.network_address)] = i
                longest[fam] = max(longest[fam], net.prefixlen)
        for fam in (4, 6):
            self._tables[fam] = sorted(by_len[fam].items(), key=lambda kv: -kv[0])
        # per family, longest first: (prefix length, sorted network ints), to find prefixes inside a block
        self._starts = {fam: [(plen, sorted(nets)) for plen, nets in self._tables[fam]] for fam in (4, 6)}
        self.key_bits = longest  # family -> bits of the address that can matter

    def match(self, family: int, addr: int, bits: int) -> int:
        """Geo index for ``addr`` of which only the first ``bits`` are known (the rest zero)."""
        width = 32 if family == 4 else 128
        for plen, nets in self._tables[family]:
            if plen > bits:
                continue  # the client did not tell us enough to match this one
            net = addr >> (width - plen) << (width - plen) if plen else 0
            hit = nets.get(net)
            if hit is not None:
                return hit
        return self.default

    def key(self, family: int, addr_bytes: bytes, source_bits: int) -> ClientKey:
        """The client key for an address (4 or 16 bytes, or an ECS address of any length) and prefix."""
        width = 32 if family == 4 else 128
        nbytes = width // 8
        bits = min(source_bits, self.key_bits[family], width)
        raw = (addr_bytes[:nbytes]).ljust(nbytes, b"\0")
        addr = int.from_bytes(raw, "big")
        addr = addr >> (width - bits) << (width - bits) if bits else 0
        geo = self.match(family, addr, bits)
        subnet = bytes((family, bits)) + addr.to_bytes(nbytes, "big")
        return ClientKey(geo, subnet, self.scope(family, addr, bits))

    def scope(self, family: int, addr: int, bits: int) -> int:
        """The ECS scope for the block ``addr``/``bits``: ``bits``, or the longest configured prefix inside it."""
        width = 32 if family == 4 else 128
        end = addr + (1 << (width - bits))
        for plen, starts in self._starts[family]:  # longest first: the first one inside is the answer
            if plen <= bits:
                break
            i = bisect_left(starts, addr)
            if i < len(starts) and starts[i] < end:
                return plen
        return bits

    def key_for_source(self, host: str) -> ClientKey:
        """The client key for a resolver's source address (text, as the socket gives it)."""
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return self.key(ip.version, ip.packed, 128)
