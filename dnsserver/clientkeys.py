"""Client keys for the hot path: an ECS option's bytes to (geo, subnet, scope) without a cache.

Pure. ``GeoMap.key`` is the reference (ints, a dataclass, a bisect or a loop
over prefix lengths: ~1.5 µs here); resolvers send many distinct subnets, so a
cache of its results misses when it matters. This computes the same triple
with a few bytes operations and a dict lookup or two in a *block index*: per
address family, levels of byte-aligned blocks (``GeoMap.levels``: IPv4 /16
then /24; IPv6 /32, /48, /56, or /16 to /56 in steps of 8 with a GeoIP map).
A block's entry is the geo of every address in it (the longest configured
prefix no longer than the block), or, when the block holds a longer prefix,
"refine" with that geo as the fallback for the next level, where absent
blocks take the fallback (the default geo at the first level); blocks whose
geo is that fallback are left out, so a GeoIP map's index holds only the
blocks that differ from their surroundings. Sources that are not long enough for a level, or
that end inside a refined block (whose longer prefixes make the ECS scope
longer than the source: see ``geo``), or that are longer than the key bits,
take ``GeoMap.key`` itself, so both always agree (a Hypothesis property
checks it). ``shapes`` tabulates, for every valid ECS option head,
which of those steps apply, so the hot path can take them inline.
"""

from __future__ import annotations

from bisect import bisect_right

from dnsserver.geo import GeoMap

ClientTuple = tuple[int, bytes, int]  # (geo index, subnet bytes hashed for the pick, ECS scope)
# what an ECS option's fixed-size head says about the rest: see ``ClientKeys.shapes``
Shape = tuple[int, int, "tuple[tuple[int, dict[bytes, int]], ...] | None", bytes, bytes, int, int, int,
              "tuple[int, dict[bytes, int]] | None"]

_MAX_BLOCKS = 1 << 21  # blocks filled while indexing (a prefix much shorter than a level fills many): stop there


class _Family:
    __slots__ = ("family", "head", "inner", "key_bits", "levels", "nbytes", "pad", "width")

    def __init__(self, geomap: GeoMap, family: int) -> None:
        self.family = family
        self.width = 32 if family == 4 else 128
        self.nbytes = self.width // 8
        self.key_bits = min(geomap.key_bits[family], self.width)
        # per level, besides the blocks: for each refined block, the ECS scope of a source that ends exactly
        # at it (the longest configured prefix inside, RFC 7871 7.2.1), so such sources need not go to
        # GeoMap.key
        self.levels, self.inner = _index(geomap, family, self.width)
        # subnet = bytes((family, bits)) + address padded to the family's width, as GeoMap.key builds it
        self.head = tuple(bytes((family, b)) for b in range(self.width + 1))
        self.pad = tuple(b"\x00" * i for i in range(self.nbytes + 1))


Level = tuple[int, int, dict[bytes, int]]


def _index(geomap: GeoMap, family: int, width: int) -> tuple[tuple[Level, ...], tuple[dict[bytes, int], ...]]:
    """Levels ``(bits, bytes, {block: geo, or -2 - fallback geo when refined})`` at ``geomap.levels``, and
    per level the inner scope of each refined block.

    A level holds only what its walk cannot take from the level above: refined blocks, and blocks whose
    geo differs from the fallback an absent block takes (the default at the first level, the refined
    parent's geo below). A block's geo is that of the longest prefix no longer than the level holding it:
    prefixes are applied shortest first, each filling the blocks it covers, so a longer one overwrites."""
    nets = sorted(geomap.prefixes(family))  # (length, network, geo): shortest first
    lengths = [n[0] for n in nets]
    levels: list[Level] = []
    inners: list[dict[bytes, int]] = []
    prev = 0
    parents: dict[int, int] = {}  # refined blocks of the previous level -> their geo
    filled = 0
    for bits in geomap.levels[family]:
        shift = width - bits
        lo = bisect_right(lengths, prev) if levels else 0  # below the first level: prefixes longer than prev
        hi = bisect_right(lengths, bits)
        geo_of: dict[int, int] = {}
        for plen, net, geo in nets[lo:hi]:
            count = 1 << (bits - plen)
            filled += count
            if filled > _MAX_BLOCKS:
                return tuple(levels), tuple(inners)  # deeper levels need this one: stop here
            if count == 1:
                geo_of[net >> shift] = geo
            else:
                first = net >> shift
                geo_of.update(dict.fromkeys(range(first, first + count), geo))
        scope: dict[int, int] = {}  # refined block -> its longest prefix (shortest first: the last one stays)
        for plen, net, _geo in nets[hi:]:
            scope[net >> shift] = plen
        table: dict[bytes, int] = {}
        nb = bits // 8
        up = bits - prev
        default = geomap.default
        for block, geo in geo_of.items():
            if block not in scope and geo != (parents[block >> up] if levels else default):
                table[block.to_bytes(nb, "big")] = geo
        for block in scope:
            fallback = parents[block >> up] if levels else default
            table[block.to_bytes(nb, "big")] = -2 - geo_of.get(block, fallback)
        levels.append((bits, nb, table))
        inners.append({block.to_bytes(nb, "big"): plen for block, plen in scope.items()})
        if not scope:
            break
        parents = {int.from_bytes(k, "big"): -2 - v for k, v in table.items() if v < 0}
        prev = bits
    return tuple(levels), tuple(inners)


class ClientKeys:
    """ECS option data -> client tuple; the same answer as ``GeoMap.key``, in a fraction of the time."""

    def __init__(self, geomap: GeoMap) -> None:
        self.geomap = geomap
        self.default = geomap.default
        self._fam = {1: _Family(geomap, 4), 2: _Family(geomap, 6)}
        self.shapes = _shapes(self._fam)

    def ecs(self, opt: bytes) -> ClientTuple | None:
        """For an ECS option's data (family, source, scope, address); None when malformed (FORMERR)."""
        if len(opt) < 4 or opt[0] or opt[3]:
            return None  # unknown family (high byte), or a scope in a query (RFC 7871 §7.1.2: must be 0)
        f = self._fam.get(opt[1])
        if f is None:
            return None
        src = opt[2]
        addr = opt[4:]
        n = len(addr)
        if src > f.width or n != (src + 7) >> 3:
            return None
        rest = src & 7
        if rest and addr[-1] & (0xFF >> rest):
            return None  # address bits beyond the source prefix must be zero
        if src <= f.key_bits:
            geo = self.default
            for i, (bits, nb, table) in enumerate(f.levels):
                if src < bits:
                    break  # prefixes between the last level and the source could match: the reference
                v = table.get(addr[:nb], geo)
                if v >= 0:  # nothing longer inside this block, so nothing inside the source's: scope = source
                    return v, f.head[src] + addr + f.pad[f.nbytes - n], src
                geo = -2 - v
                if src == bits:  # the source ends at this refined block: its fallback geo, a longer scope
                    return geo, f.head[src] + addr + f.pad[f.nbytes - n], f.inner[i][addr[:nb]]
        k = self.geomap.key(f.family, addr, src)
        return k.geo, k.subnet, k.scope


def _shapes(fams: dict[int, _Family]) -> dict[bytes, Shape]:
    """Every valid OPT rdata head holding one ECS option and nothing else, keyed by its 10 bytes (OPT
    rdlen, option code and length, family, source, scope 0), with what ``ClientKeys.ecs`` would do for it:
    ``(address bytes, mask of the bits that must be zero in the last byte, levels or None for GeoMap.key,
    subnet head, subnet padding, family, source, scope when a level decides, and for a source that ends
    exactly at the last level: that level's (bytes, {refined block: scope}))``. ``levels`` lists the
    ``(bytes, block table)`` levels ``ecs`` would consult for this source, in order; ``None`` when it would
    go to ``GeoMap.key`` straight away; when every level says "refine", the source's fallback geo and the
    block's inner scope decide if the source ends at the last level, else ``GeoMap.key``. The hot path then does the same lookups inline."""
    out: dict[bytes, Shape] = {}
    for code, f in fams.items():
        for src in range(f.width + 1):
            nb = (src + 7) >> 3
            head = bytes((0, nb + 8, 0, 8, 0, nb + 4, 0, code, src, 0))
            mask = 0xFF >> (src & 7) if src & 7 else 0
            levels: tuple[tuple[int, dict[bytes, int]], ...] | None = None
            inner: tuple[int, dict[bytes, int]] | None = None
            if src <= f.key_bits:
                usable = []
                for i, (bits, lnb, table) in enumerate(f.levels):
                    if src < bits:
                        break
                    usable.append((lnb, table))
                    inner = (lnb, f.inner[i]) if src == bits else None
                levels = tuple(usable) or None
            out[head] = (nb, mask, levels, f.head[min(src, f.width)], f.pad[f.nbytes - nb], f.family, src,
                         min(src, f.key_bits), inner)
    return out
