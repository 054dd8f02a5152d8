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

A large map (a GeoIP database: half a million blocks) makes those dicts
miss the CPU's caches, several times per lookup (a dict's index, its
entry, the key's bytes). Such a family gets a *dense index* instead
(``_Dense``): the same levels as arrays of small ints, an address byte
picking the entry. IPv4: one array of 2^24 entries, one per /24 (16 MiB),
so a /24 or longer source costs one access; the /16 dict stays for sources
of /16 to /23. IPv6: an array over the /16s and, per refined block, a row
of 256 entries for its blocks 8 bits longer, down to the last level. An
entry is ``~geo`` (negative) when the block decides, else the block's
number among its level's refined blocks: its row at the next level, and
its ``(fallback geo, inner scope)`` in ``ends`` for a source that ends
there. Small maps keep the dicts (``dense_index`` says when), so the demo's
memory does not grow.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

from dnsserver.geo import GeoMap

ClientTuple = tuple[int, bytes, int]  # (geo index, subnet bytes hashed for the pick, ECS scope)
Ends = tuple[tuple[int, int], ...]  # a dense level's refined entry -> (fallback geo, inner scope)
# what the hot path walks in a dense index for one source length: (root bytes, root, (address byte, rows) per
# level below the root that the source reaches, the last such level's ends when the source ends there)
DenseShape = tuple[int, "array[int]", tuple[tuple[int, "array[int]"], ...], Ends | None]
# what an ECS option's fixed-size head says about the rest: see ``ClientKeys.shapes``
Shape = tuple[int, int, "tuple[tuple[int, dict[bytes, int]], ...] | None", bytes, bytes, int, int, int,
              "tuple[int, dict[bytes, int]] | None", DenseShape | None]

_MAX_BLOCKS = 1 << 21  # blocks filled while indexing (a prefix much shorter than a level fills many): stop there
# The dense index (module doc): the level its root array spans, per family. IPv4 /24: 2^24 entries, the whole
# index in one access; IPv6 /16, with rows of 256 entries below (a /24 root would cost 32 MiB and save one step).
DENSE_ROOT = {4: 24, 6: 16}
# A family's dicts go dense from this many blocks on (beyond the L2 cache's reach: ~6 MiB of dicts) ...
DENSE_MIN_BLOCKS = 1 << 16
# ... when the arrays take at most twice the memory of the dicts they replace (measured: ~90 bytes an entry,
# its bytes key included), so a map of many refined blocks with few entries each keeps its dicts
DICT_ENTRY_BYTES = 100


class _Family:
    __slots__ = ("dense", "family", "head", "inner", "key_bits", "levels", "nbytes", "pad", "width")

    def __init__(self, geomap: GeoMap, family: int, dense: bool | None) -> None:
        self.family = family
        self.width = 32 if family == 4 else 128
        self.nbytes = self.width // 8
        self.key_bits = min(geomap.key_bits[family], self.width)
        # per level, besides the blocks: for each refined block, the ECS scope of a source that ends exactly
        # at it (the longest configured prefix inside, RFC 7871 7.2.1), so such sources need not go to
        # GeoMap.key
        self.levels, self.inner = _index(geomap, family, self.width)
        self.dense = _Dense.build(self.levels, self.inner, geomap, family, dense)
        if self.dense is not None:  # the dicts it replaces go; those above its root serve shorter sources
            upper = len(self.levels) - len(self.dense.bits)
            self.levels, self.inner = self.levels[:upper], self.inner[:upper]
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


class _Dense:
    """A family's dense index (module doc): ``bits`` the levels it spans, root first; ``root`` one entry per
    block of the first (``nb`` address bytes pick it); ``rows`` per level below: (the address byte that picks
    the entry in a row, the rows end to end, 256 entries each, one row per refined block of the level above);
    ``ends`` per level: a refined entry's (fallback geo, inner scope). Entries: ``~geo`` when the block
    decides, else the refined block's number (at the deepest level: of its distinct ``ends``, so few)."""

    __slots__ = ("bits", "ends", "nb", "root", "rows")

    def __init__(self, bits: tuple[int, ...], root: array[int], rows: tuple[tuple[int, array[int]], ...],
                 ends: tuple[Ends, ...]) -> None:
        self.bits, self.root, self.rows, self.ends = bits, root, rows, ends
        self.nb = bits[0] // 8

    def nbytes(self) -> int:
        """The arrays' size in bytes (what a worker keeps for them; ``ends`` are a few kB)."""
        return sum(a.itemsize * len(a) for a in (self.root, *(rows for _k, rows in self.rows)))

    def shape(self, src: int) -> DenseShape:
        """What the hot path walks for a source of ``src`` bits (at least the root's)."""
        steps = tuple(step for bits, step in zip(self.bits[1:], self.rows, strict=True) if bits <= src)
        last = len(steps)
        return self.nb, self.root, steps, self.ends[last] if self.bits[last] == src else None

    @classmethod
    def build(cls, levels: tuple[Level, ...], inners: tuple[dict[bytes, int], ...], geomap: GeoMap, family: int,
              dense: bool | None) -> _Dense | None:
        """The dense index for these dict levels when ``dense_index`` says so; None when the levels do not allow
        it (no root level; levels below it not 8 bits apart: IPv6 with configured prefixes only)."""
        bits = [b for b, _nb, _t in levels]
        root_bits = DENSE_ROOT[family]
        if dense is False or root_bits not in bits:
            return None
        r = bits.index(root_bits)
        if any(b - a != 8 for a, b in zip(bits[r:-1], bits[r + 1:], strict=True)):
            return None
        # refined blocks per level from the root down, in address order: their numbers are their rows below
        refined = [sorted(k for k, v in levels[i][2].items() if v < 0) for i in range(r, len(levels))]
        ngeos = len(geomap.ids)
        size = (1 << root_bits) * _itemsize(ngeos, len(refined[0])) + sum(
            256 * len(refined[j - 1]) * _itemsize(ngeos, len(refined[j])) for j in range(1, len(refined)))
        if dense is None and not dense_index(sum(len(t) for _b, _nb, t in levels), size):
            return None
        ends: list[Ends] = []
        numbers: list[dict[bytes, int]] = []
        for j, keys in enumerate(refined):
            table, inner = levels[r + j][2], inners[r + j]
            pairs = [(-2 - table[k], inner[k]) for k in keys]
            if j < len(refined) - 1:  # a row each below
                ends.append(tuple(pairs))
                numbers.append({k: i for i, k in enumerate(keys)})
            else:  # the deepest: numbered by their distinct ends
                distinct = list(dict.fromkeys(pairs))
                ends.append(tuple(distinct))
                at = {p: i for i, p in enumerate(distinct)}
                numbers.append({k: at[p] for k, p in zip(keys, pairs, strict=True)})
        root = _filled(ngeos, len(ends[0]), ~geomap.default, 1 << root_bits)
        for b, _nb, table in levels[:r]:  # the levels above, shallowest first: each block spans root entries
            span = 1 << (root_bits - b)
            runs: dict[int, array[int]] = {}
            for k, v in table.items():
                g = v if v >= 0 else -2 - v  # a refined block's fallback is what its unlisted blocks take
                run = runs.get(g)
                if run is None:
                    run = runs[g] = _filled(ngeos, len(ends[0]), ~g, span)
                start = int.from_bytes(k, "big") * span
                root[start:start + span] = run
        for k, v in levels[r][2].items():
            root[int.from_bytes(k, "big")] = ~v if v >= 0 else numbers[0][k]
        rows: list[tuple[int, array[int]]] = []
        for j in range(1, len(refined)):
            _b, nb, table = levels[r + j]
            parents, parent_table, up, own = refined[j - 1], levels[r + j - 1][2], numbers[j - 1], numbers[j]
            rows_j = _filled(ngeos, len(ends[j]), 0, 256 * len(parents))
            runs = {}
            for p, k in enumerate(parents):  # unlisted blocks take the parent's fallback
                g = -2 - parent_table[k]
                run = runs.get(g)
                if run is None:
                    run = runs[g] = _filled(ngeos, len(ends[j]), ~g, 256)
                rows_j[p << 8:(p + 1) << 8] = run
            for k, v in table.items():
                rows_j[(up[k[:-1]] << 8) | k[-1]] = ~v if v >= 0 else own[k]
            rows.append((nb - 1, rows_j))
        return cls(tuple(bits[r:]), root, tuple(rows), tuple(ends))


def dense_index(entries: int, nbytes: int) -> bool:
    """Whether a family whose dict levels hold ``entries`` blocks gets a dense index of ``nbytes``."""
    return entries >= DENSE_MIN_BLOCKS and nbytes <= 2 * DICT_ENTRY_BYTES * entries


def _itemsize(ngeos: int, numbers: int) -> int:
    return 1 if ngeos <= 128 and numbers <= 128 else 2 if ngeos <= 32768 and numbers <= 32768 else 4


def _filled(ngeos: int, numbers: int, value: int, count: int) -> array[int]:
    """``count`` entries of ``value`` in the smallest signed type holding ``~geo`` and ``numbers`` numbers."""
    size = _itemsize(ngeos, numbers)
    return array("b" if size == 1 else "h" if size == 2 else "i", [value]) * count


class ClientKeys:
    """ECS option data -> client tuple; the same answer as ``GeoMap.key``, in a fraction of the time.

    ``dense``: None to give a family the dense index when ``dense_index`` says it is large enough, True
    whenever its levels allow one (tests), False never."""

    def __init__(self, geomap: GeoMap, dense: bool | None = None) -> None:
        self.geomap = geomap
        self.default = geomap.default
        self._fam = {1: _Family(geomap, 4, dense), 2: _Family(geomap, 6, dense)}
        self.shapes = _shapes(self._fam)

    def sizes(self) -> dict[int, tuple[int, int]]:
        """Per family (4, 6): (blocks in dicts, bytes in dense arrays): what bench/geoip.py reports."""
        return {f.family: (sum(len(t) for _b, _n, t in f.levels), f.dense.nbytes() if f.dense else 0)
                for f in self._fam.values()}

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
            d = f.dense
            if d is not None and src >= d.bits[0]:
                v = d.root[int.from_bytes(addr[:d.nb], "big")]
                last = 0
                for bits, (at, rows) in zip(d.bits[1:], d.rows, strict=True):
                    if v < 0 or src < bits:
                        break
                    v = rows[(v << 8) | addr[at]]
                    last += 1
                if v < 0:
                    return ~v, f.head[src] + addr + f.pad[f.nbytes - n], src
                if src == d.bits[last]:  # the source ends at this refined block: as below
                    geo, scope = d.ends[last][v]
                    return geo, f.head[src] + addr + f.pad[f.nbytes - n], scope
            else:
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
        key = self.geomap.key(f.family, addr, src)
        return key.geo, key.subnet, key.scope


def _shapes(fams: dict[int, _Family]) -> dict[bytes, Shape]:
    """Every valid OPT rdata head holding one ECS option and nothing else, keyed by its 10 bytes (OPT
    rdlen, option code and length, family, source, scope 0), with what ``ClientKeys.ecs`` would do for it:
    ``(address bytes, mask of the bits that must be zero in the last byte, levels or None for GeoMap.key,
    subnet head, subnet padding, family, source, scope when a level decides, and for a source that ends
    exactly at the last level: that level's (bytes, {refined block: scope}), and the dense index's walk
    (``_Dense.shape``) or None)``. ``levels`` lists the ``(bytes, block table)`` levels ``ecs`` would
    consult for this source, in order; ``None`` when it would go to ``GeoMap.key`` straight away or walk
    the dense index; when every level says "refine", the source's fallback geo and the block's inner scope
    decide if the source ends at the last level, else ``GeoMap.key``. The hot path then does the same
    lookups inline."""
    out: dict[bytes, Shape] = {}
    for code, f in fams.items():
        for src in range(f.width + 1):
            nb = (src + 7) >> 3
            head = bytes((0, nb + 8, 0, 8, 0, nb + 4, 0, code, src, 0))
            mask = 0xFF >> (src & 7) if src & 7 else 0
            levels: tuple[tuple[int, dict[bytes, int]], ...] | None = None
            inner: tuple[int, dict[bytes, int]] | None = None
            dense: DenseShape | None = None
            if src <= f.key_bits:
                if f.dense is not None and src >= f.dense.bits[0]:
                    dense = f.dense.shape(src)
                else:
                    usable = []
                    for i, (bits, lnb, table) in enumerate(f.levels):
                        if src < bits:
                            break
                        usable.append((lnb, table))
                        inner = (lnb, f.inner[i]) if src == bits else None
                    levels = tuple(usable) or None
            out[head] = (nb, mask, levels, f.head[min(src, f.width)], f.pad[f.nbytes - nb], f.family, src,
                         min(src, f.key_bits), inner, dense)
    return out
