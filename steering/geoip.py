"""GeoIP: a MaxMind DB file compiled into prefixes of the geos that name continents, countries, subdivisions.

``load(path, geos, default_id)`` walks the database's networks once and
returns a ``GeoIpMap``: per address family, prefixes ``(length, network,
geo index)`` that ``steering.topology.GeoMap`` adds to the geos' own
``prefixes`` (which win: a GeoIP prefix inside or equal to a configured one
is dropped there), so a query costs what it cost before (docs/geoip.md).

Which geo a network goes to: its record's subdivisions, most specific first,
then its country, then its continent, each looked up in the geos' codes; a
network that names none of them, and any address the database does not
hold, is the default geo's. Record layouts read (``record_codes``):

* MaxMind GeoIP2/GeoLite2 Country and City, DB-IP (Lite) Country and City:
  ``continent.code``, ``country.iso_code``, ``subdivisions[].iso_code``
  (City databases; the subdivision is ``<country>-<iso_code>``, ``US-CA``).
  ``registered_country`` and ``represented_country`` are not read.
* IPinfo: ``country_code``/``continent_code`` (IPinfo Lite), or
  ``country``/``continent`` holding the two-letter codes (its country
  databases). No subdivisions.

A record with a country and no continent gets the country's continent
(``steering.geocodes``). Codes a database has that are no ISO country (the
legacy ``EU``, ``AP``, ``A1``) count as no country.

The compiled map is as fine as the client key (``V4_KEY_BITS``,
``V6_KEY_BITS``: /24, /56): a /24 (/56) the database splits between geos
goes to the geo holding most of its addresses (no geo counting as the
default geo; ties to the lower geo index), since the DNS server keys
answers on that block anyway. Then adjacent networks of one geo merge, and
for every block of the DNS server's index levels (``GEOIP_LEVELS``: IPv4
/16; IPv6 /16, /24, /32, /40, /48) that holds several geos, the geo holding
most of it gets the whole block as one prefix and only the others are kept
inside it: the same answer for every full-length key, far fewer prefixes,
and the block index (``dnsserver.clientkeys``) stores only the exceptions.
"""

from __future__ import annotations

import ipaddress
import os
import time
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steering.config import Geo
from steering.geocodes import CONTINENTS, COUNTRY_CONTINENT
from steering.topology import GEOIP_LEVELS, V4_KEY_BITS, V6_KEY_BITS

__all__ = ["Codes", "DatabaseInfo", "GeoIpError", "GeoIpMap", "codes_at", "compile_networks", "file_stamp", "load",
           "record_codes"]

Prefix = tuple[int, int, int]  # (prefix length, network as an int, geo index)


class GeoIpError(Exception):
    """A database that cannot be used, said in one line naming the field (``geoip.database: ...``)."""


@dataclass(frozen=True)
class Codes:
    """What a database record says about a network's place; subdivisions least specific first."""

    continent: str = ""
    country: str = ""
    subdivisions: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatabaseInfo:
    """What status and metrics show about the database a map was compiled from."""

    path: str
    database_type: str
    build_epoch: int
    networks: int  # networks walked
    subdivisions: bool  # some record names a subdivision
    stamp: tuple[int, int, int]  # (mtime ns, size, inode) when read: the reload's change test

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "database_type": self.database_type, "build_epoch": self.build_epoch,
                "networks": self.networks, "subdivisions": self.subdivisions}


@dataclass(frozen=True)
class GeoIpMap:
    """A database compiled for one list of geos: per family (4, 6), prefixes no longer than the client key."""

    geo_ids: tuple[str, ...]
    prefixes: Mapping[int, tuple[Prefix, ...]]
    info: DatabaseInfo
    compile_seconds: float
    total: int = -1  # the prefix count of a summary (``summary``), whose prefixes are gone

    def count(self) -> int:
        return self.total if self.total >= 0 else sum(len(p) for p in self.prefixes.values())

    def summary(self) -> GeoIpMap:
        """The same without its prefixes: for status and metrics once a GeoMap holds them (tens of MB)."""
        return GeoIpMap(self.geo_ids, {4: (), 6: ()}, self.info, self.compile_seconds, self.count())


# ---------------------------------------------------------------- records


def _code(value: Any) -> str:
    return value if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isupper() else ""


def record_codes(record: Any) -> Codes:
    """The continent, country and subdivisions of one record, whichever layout (see the module doc)."""
    if not isinstance(record, Mapping):
        return Codes()
    country_rec = record.get("country")
    if isinstance(country_rec, Mapping):  # MaxMind and DB-IP
        country = _code(country_rec.get("iso_code"))
        cont = record.get("continent")
        continent = _code(cont.get("code")) if isinstance(cont, Mapping) else ""
    else:  # IPinfo
        country = _code(record.get("country_code")) or _code(country_rec)
        continent = _code(record.get("continent_code")) or _code(record.get("continent"))
    if country not in COUNTRY_CONTINENT:
        country = ""
    if continent not in CONTINENTS:
        continent = COUNTRY_CONTINENT.get(country, "")
    subs: tuple[str, ...] = ()
    raw = record.get("subdivisions")
    if country and isinstance(raw, list):
        subs = tuple(f"{country}-{s['iso_code']}" for s in raw
                     if isinstance(s, Mapping) and isinstance(s.get("iso_code"), str) and 0 < len(s["iso_code"]) <= 3)
    return Codes(continent, country, subs)


class _Placer:
    """Codes -> geo index: subdivision (most specific first), then country, then continent, else the default."""

    def __init__(self, geos: Sequence[Geo], default: int) -> None:
        self.default = default
        self.subdivision: dict[str, int] = {}
        self.country: dict[str, int] = {}
        self.continent: dict[str, int] = {}
        for i, g in enumerate(geos):
            for code in g.subdivisions:
                self.subdivision.setdefault(code, i)
            for code in g.all_countries():
                self.country.setdefault(code, i)
            for code in g.all_continents():
                self.continent.setdefault(code, i)
        self._cache: dict[Codes, int] = {}

    def place(self, codes: Codes) -> int:
        hit = self._cache.get(codes)
        if hit is None:
            hit = next((self.subdivision[s] for s in reversed(codes.subdivisions) if s in self.subdivision),
                       self.country.get(codes.country, self.continent.get(codes.continent, self.default)))
            self._cache[codes] = hit
        return hit


# ---------------------------------------------------------------- compiling


def compile_networks(entries: Iterable[tuple[int, int, int, Codes]], geos: Sequence[Geo], default_id: str,
                     ) -> dict[int, tuple[Prefix, ...]]:
    """Per family, the prefixes for networks ``(family, start, prefix length, codes)`` given in address
    order (see the module doc). Pure."""
    ids = [g.id for g in geos]
    default = ids.index(default_id)
    placer = _Placer(geos, default)
    intervals: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
    for family, start, plen, codes in entries:
        width = 32 if family == 4 else 128
        intervals[family].append((start, start + (1 << (width - plen)), placer.place(codes)))
    out = {}
    for fam, width, key in ((4, 32, V4_KEY_BITS), (6, 128, V6_KEY_BITS)):
        runs = _blocks(_merged(sorted(intervals[fam])), width - key, default)
        out[fam] = tuple(_lift(_filled(runs, 1 << key, default), key, width, GEOIP_LEVELS[fam][:-1], default))
    return out


def _merged(intervals: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Adjacent intervals of one geo as one (the input sorted and disjoint, as a database's networks are)."""
    out: list[tuple[int, int, int]] = []
    for s, e, g in intervals:
        if out and out[-1][1] == s and out[-1][2] == g:
            out[-1] = (out[-1][0], e, g)
        elif out and s < out[-1][1]:
            continue  # overlapping: not from a well-formed tree; the first one stands
        else:
            out.append((s, e, g))
    return out


def _blocks(intervals: list[tuple[int, int, int]], shift: int, default: int) -> list[tuple[int, int, int]]:
    """Address intervals -> runs of whole blocks of ``2**shift`` addresses (block numbers, end exclusive).

    A block the intervals cover partly or split between geos goes to the geo covering most of it, the
    addresses no interval covers counting for the default geo; ties go to the lower geo index."""
    size = 1 << shift
    runs: list[tuple[int, int, int]] = []
    tally: dict[int, dict[int, int]] = {}

    def add(s: int, e: int, g: int) -> None:
        if s >= e:
            return
        if runs and runs[-1][1] == s and runs[-1][2] == g:
            runs[-1] = (runs[-1][0], e, g)
        else:
            runs.append((s, e, g))

    def settle(upto: int) -> None:
        """Decide the partly covered blocks before block ``upto`` (they are all behind the walk)."""
        for b in sorted(k for k in tally if k < upto):
            counts = tally.pop(b)
            counts[default] = counts.get(default, 0) + size - sum(counts.values())
            add(b, b + 1, min(counts, key=lambda g: (-counts[g], g)))

    for s, e, g in intervals:
        first, last = s >> shift, (e - 1) >> shift  # the blocks holding its first and last address
        settle(first)  # the intervals are sorted: blocks before this one's first are complete
        head, tail = bool(s & (size - 1)), bool(e & (size - 1))  # starts or ends inside a block
        if first == last and (head or tail):
            part = tally.setdefault(first, {})
            part[g] = part.get(g, 0) + e - s
            continue
        if head:
            part = tally.setdefault(first, {})
            part[g] = part.get(g, 0) + ((first + 1) << shift) - s
        full_from, full_to = first + head, last + 1 - tail
        if full_from < full_to:
            settle(full_from)
            add(full_from, full_to, g)
        if tail:
            part = tally.setdefault(last, {})
            part[g] = part.get(g, 0) + e - (last << shift)
    settle(1 << 200)
    return runs


def _filled(runs: list[tuple[int, int, int]], end: int, default: int) -> list[tuple[int, int, int]]:
    """Runs covering [0, end): gaps are the default geo's; neighbours of one geo merged."""
    out: list[tuple[int, int, int]] = []
    at = 0
    for s, e, g in [*runs, (end, end, default)]:
        for piece in ((at, s, default), (s, e, g)):
            if piece[0] >= piece[1]:
                continue
            if out and out[-1][2] == piece[2] and out[-1][1] == piece[0]:
                out[-1] = (out[-1][0], piece[1], piece[2])
            else:
                out.append(piece)
        at = e
    return out


def _cidrs(s: int, e: int) -> Iterator[tuple[int, int]]:
    """[s, e) as aligned power-of-two blocks: (start, log2 size)."""
    while s < e:
        k = (s & -s).bit_length() - 1 if s else (e - s).bit_length()
        while (1 << k) > e - s:
            k -= 1
        yield s, k
        s += 1 << k


def _lift(runs: list[tuple[int, int, int]], key: int, width: int, levels: Sequence[int], default: int,
          ) -> list[Prefix]:
    """Prefixes for ``runs`` (block numbers of a key-bit space, covering it whole): see the module doc.

    Each block of a level in ``levels`` that holds several geos is given its majority geo (when that is
    not what it inherits) and only the other geos' runs are emitted inside it."""
    starts = [r[0] for r in runs]
    out: list[Prefix] = []
    shift = width - key

    def emit(s: int, e: int, g: int) -> None:
        for start, k in _cidrs(s, e):
            out.append((key - k, start << shift, g))

    def visit(lo: int, hi: int, depth: int, inherited: int) -> None:
        """The runs inside [lo, hi) (a block of ``levels[depth - 1]``, or the whole space), given the geo
        the block already has from an emitted prefix around it."""
        i = max(bisect_right(starts, lo) - 1, 0)
        child = 1 << (key - levels[depth]) if depth < len(levels) else 1
        mixed: list[int] = []
        while i < len(runs) and runs[i][0] < hi:
            s, e, g = runs[i]
            s, e = max(s, lo), min(e, hi)
            i += 1
            if child == 1:
                if g != inherited:
                    emit(s, e, g)
                continue
            whole_from = -(-s // child) * child
            whole_to = e // child * child
            if whole_from < whole_to and g != inherited:
                emit(whole_from, whole_to, g)
            for edge in (s, e - 1):  # children cut by a run's edge hold several geos
                c = edge // child * child
                if (c < whole_from or c >= whole_to) and (not mixed or mixed[-1] != c):
                    mixed.append(c)
        for c in mixed:
            counts: dict[int, int] = {}
            j = max(bisect_right(starts, c) - 1, 0)
            while j < len(runs) and runs[j][0] < c + child:
                s, e, g = runs[j]
                counts[g] = counts.get(g, 0) + min(e, c + child) - max(s, c)
                j += 1
            major = min(counts, key=lambda g: (-counts[g], g != inherited, g))
            if major != inherited:
                emit(c, c + child, major)
            visit(c, c + child, depth + 1, major)

    visit(0, runs[-1][1] if runs else 0, 0, default)
    return out


# ---------------------------------------------------------------- the file


def file_stamp(path: str | Path) -> tuple[int, int, int]:
    """(mtime ns, size, inode): what tells a replaced or rewritten database file; OSError if unreadable."""
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def load(path: str | Path, geos: Sequence[Geo], default_id: str) -> GeoIpMap:
    """Open, walk and compile the database at ``path``; GeoIpError naming ``geoip.database`` if it cannot.

    Refuses a database that names no subdivision when a geo lists subdivisions (it could place nobody
    there)."""
    import maxminddb

    began = time.perf_counter()
    where = f"geoip.database: {path}"
    try:
        stamp = file_stamp(path)
        reader = maxminddb.open_database(str(path))
    except FileNotFoundError:
        raise GeoIpError(f"{where} does not exist") from None
    except OSError as exc:
        raise GeoIpError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, TypeError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoIpError(f"{where}: not a MaxMind DB file ({_short(exc)})") from None
    try:
        meta = reader.metadata()
        networks = list(_networks(Path(path), reader))
        prefixes = compile_networks(networks, geos, default_id)
    except (ValueError, TypeError, KeyError, IndexError, maxminddb.InvalidDatabaseError, OSError) as exc:
        raise GeoIpError(f"{where}: unreadable database ({_short(exc)})") from None
    finally:
        reader.close()
    if not networks:
        raise GeoIpError(f"{where}: the database holds no network")
    subdivisions = any(codes.subdivisions for *_, codes in networks)
    wanted = [(i, g.subdivisions) for i, g in enumerate(geos) if g.subdivisions]
    if wanted and not subdivisions:
        i, codes = wanted[0]
        raise GeoIpError(f"{where}: {meta.database_type} names no subdivisions, so geos[{i}].subdivisions "
                         f"({', '.join(codes[:3])}) would match nothing; use a City database")
    info = DatabaseInfo(path=str(path), database_type=str(meta.database_type), build_epoch=int(meta.build_epoch),
                        networks=len(networks), subdivisions=subdivisions, stamp=stamp)
    return GeoIpMap(geo_ids=tuple(g.id for g in geos), prefixes=prefixes, info=info,
                    compile_seconds=time.perf_counter() - began)


def codes_at(path: str | Path, address: str) -> Codes | None:
    """What the database at ``path`` says of one address (``record_codes`` of its record; None when it holds
    none, or an IPv6 address in an IPv4 database): for explaining one client (``steering.explain``), one
    open per call, never the query path. GeoIpError naming ``geoip.database`` when it cannot be read."""
    import maxminddb

    try:
        with maxminddb.open_database(str(path)) as reader:
            record = reader.get(address)
    except ValueError as exc:
        if "IPv6 address" in str(exc) and "IPv4-only" in str(exc):
            return None
        raise GeoIpError(f"geoip.database: {path}: not a MaxMind DB file ({_short(exc)})") from None
    except OSError as exc:
        raise GeoIpError(f"geoip.database: {path}: cannot read: {exc.strerror or exc}") from None
    except (TypeError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoIpError(f"geoip.database: {path}: unreadable database ({_short(exc)})") from None
    return None if record is None else record_codes(record)


def _networks(path: Path, reader: Any) -> Iterator[tuple[int, int, int, Codes]]:
    """Every network of the database in address order: (family, start, prefix length, codes).

    The search tree is walked here (MaxMind DB spec 2.0: ``node_count`` nodes of two records each, a
    record below ``node_count`` another node, equal to it no data, above it a pointer to data), and each
    distinct data record is read once, through ``reader.get`` for the first address that has it: a City
    database has millions of networks but far fewer distinct records, and decoding them is the cost.
    IPv4 in an IPv6 database is the ``::/96`` subtree; the aliases of it (``::ffff:0:0/96``, 6to4,
    Teredo) lead back to its root and are skipped, as maxminddb's own iteration does. A tree that would
    take more steps than twice its nodes (a loop, in a file that is not a real database) is refused."""
    meta = reader.metadata()
    nodes, size, bits = int(meta.node_count), int(meta.record_size), 128 if meta.ip_version == 6 else 32
    if size not in (24, 28, 32) or nodes <= 0:
        raise ValueError(f"record size {size}, {nodes} nodes")
    with open(path, "rb") as f:
        tree = f.read(nodes * size // 4)
    if len(tree) < nodes * size // 4:
        raise ValueError("the search tree is cut short")
    step = size // 4

    def read(node: int) -> tuple[int, int]:
        o = node * step
        if size == 24:
            return int.from_bytes(tree[o:o + 3], "big"), int.from_bytes(tree[o + 3:o + 6], "big")
        if size == 32:
            return int.from_bytes(tree[o:o + 4], "big"), int.from_bytes(tree[o + 4:o + 8], "big")
        mid = tree[o + 3]
        return (((mid & 0xF0) << 20) | int.from_bytes(tree[o:o + 3], "big"),
                ((mid & 0x0F) << 24) | int.from_bytes(tree[o + 4:o + 7], "big"))

    v4_root = -1
    if bits == 128:
        v4_root = 0
        for _ in range(96):
            if v4_root >= nodes:
                break
            v4_root = read(v4_root)[0]
    codes_of: dict[int, Codes] = {}
    stack = [(0, 0, 0)]  # (node, depth, the address bits so far)
    budget = 2 * nodes + 256
    while stack:
        budget -= 1
        if budget < 0:
            raise ValueError("the search tree has more paths than nodes (a loop)")
        node, depth, acc = stack.pop()
        if node < nodes:
            if depth >= bits or (node == v4_root and acc):
                continue  # past the address width (malformed), or an alias of the IPv4 subtree
            left, right = read(node)
            stack.append((right, depth + 1, acc << 1 | 1))
            stack.append((left, depth + 1, acc << 1))
            continue
        if node == nodes:
            continue  # no data for these addresses
        start = acc << (bits - depth)
        family, plen = 6, depth
        if bits == 32:
            family = 4
        elif start >> 32 == 0 and depth >= 96:
            family, plen = 4, depth - 96
        codes = codes_of.get(node)
        if codes is None:
            address = ipaddress.ip_address(start if family == 4 else start.to_bytes(16, "big"))
            codes = codes_of[node] = record_codes(reader.get(address))
        yield family, start, plen, codes


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]

