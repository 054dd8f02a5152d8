"""The hot path: answer ordinary queries from pre-rendered bytes, or return None for the slow path.

Handled here: a plain QUERY with one question, no answer/authority records,
and either nothing or exactly one OPT (version 0) in additional, whose
options may include one well-formed ECS option. Everything else, and any
answer that would not fit the client's payload, goes to ``slowpath``,
which is complete and strict. Reading the header and question with bytes
operations costs about a µs; dnspython's parse and render cost ~100 µs.

``FastPath.answer`` is a closure that takes the two shapes that matter
(no EDNS; an OPT holding one ECS option and nothing else) with as few
Python operations as it can: one dict lookup on header bytes 2-12 checks
opcode and counts and picks the reply's flags; one on the OPT's version,
flags and ECS head (``ClientKeys.shapes``) validates the option and gives
the pre-rendered OPT echo (scope included) and the block levels (or a
large map's dense index: ``clientkeys``), which it walks inline. Every
other shape goes to ``answer_general``, the step-by-step version, which
gives the same bytes (Hypothesis properties check both that and the geo,
pick and scope against ``GeoMap.key``).

Options: ECS is read here; COOKIE and NSID (and edns-tcp-keepalive over
TCP) go to the slow path, which answers them (``routed``); any other option
is ignored, as RFC 6891 asks. While the server says answers are stale
(``set_stale``: an old table and no control plane), steered answers carry an
Extended DNS Error 3 (Stale Answer) placed before the ECS option, so the
pre-rendered OPT echo only swaps to another table of shapes and a query
costs the same either way.

DNSSEC (docs/dnssec.md): each variant carries at index 4 what a DO=1 query
gets, the signed twin render made (itself again outside signed zones); the
OPT shapes already key on the DO bit, so the shape says which to copy and a
query without DO does no extra work.

The weighted pick is ``steering.pick.pick`` through the split's
``SlotTable``, written out inline (a function call per query would cost more
than the arithmetic): the client subnet's slot (crc32, seeded, mixed, top 16
bits), then one index into the table's bytes; a slot not raced yet (0xFF, or
any index past 254 in a two-byte table) goes through the table's ``fill``
once; a split of one target skips it all. ``tests/test_pick.py`` proves both
paths pick as ``pick`` does over random weights, seeds and clients.

Rate limiting (``rrl``) over UDP: ``answer_udp`` is the same closure made
with the limiter, and counts an authoritative answer in its bucket (prefix,
question lower-cased: the bytes it already lowered for the lookup) inline, as
``RateLimiter.check`` would; anything else it answers goes through ``check``.
That saves the call and the second parse of the reply (~0.3 µs a query).

Every query does the same work: there is no cache of replies or of ECS
subnets, because resolvers send many distinct subnets and such caches miss
exactly when the load is high (``clientkeys`` makes the subnet cheap instead).
Only the resolver's own address, of which there are few, is cached.

Thread safety: the answer tables live in one immutable ``_Tables`` object
that ``install`` swaps with one reference assignment; ``answer`` reads that
reference once, so a query on another thread sees old or new answers, never
a mix. Counters are ``cell[0] += 1`` on pre-allocated lists (no lock).
"""

from __future__ import annotations

import ipaddress
import os
import sys
import zlib
from collections.abc import Callable
from typing import Any

from dnsserver import ednsopts
from dnsserver.clientkeys import ClientKeys, ClientTuple
from dnsserver.geo import GeoMap
from dnsserver.render import RenderedAnswers
from dnsserver.rrl import RESPONSES, RateLimiter
from steering.pick import GOLDEN as _GOLDEN
from steering.pick import SLOT_SHIFT as _SLOT_SHIFT
from steering.pick import UNSET as _UNSET
from steering.pick import SlotTable

try:  # the hot path in C (dnsserver/_hot.c): built where a C compiler was at install time
    from dnsserver import _hot
except ImportError:  # pragma: no cover - the Python closure below answers alike
    _hot = None  # type: ignore[assignment]

MAX_UDP_PAYLOAD = 1232  # what we advertise and cap UDP answers at (DNS flag day 2020)
_OPT_DO = b"\x00\x00\x29" + MAX_UDP_PAYLOAD.to_bytes(2, "big") + b"\x00\x00\x80\x00"
_OPT_NO_DO = b"\x00\x00\x29" + MAX_UDP_PAYLOAD.to_bytes(2, "big") + b"\x00\x00\x00\x00"
_OPT_TYPE = b"\x00\x00\x29"  # root owner, type OPT
_ECS_CODE = b"\x00\x08"
_EDE_STALE = ednsopts.ede(ednsopts.EDE_STALE_ANSWER)
# options answered by the slow path, by transport (UDP, TCP): RFC 7828 has a server ignore keepalive over UDP
ROUTED: tuple[frozenset[int], frozenset[int]] = (
    frozenset((ednsopts.COOKIE, ednsopts.NSID)), frozenset((ednsopts.COOKIE, ednsopts.NSID, ednsopts.KEEPALIVE)))
_SCOPE = tuple(bytes((i,)) for i in range(256))
_SRC_CACHE_MAX = 100_000
_COUNTS_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # bytes 4-12: one question, nothing else
_COUNTS_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # ... and one additional record (OPT)
Host = str | bytes | int
_LETTERS = frozenset(range(0x41, 0x5B)) | frozenset(range(0x61, 0x7B))
# the hot path writes the pick's constants as literals (a literal costs less than a closure cell)
assert (_GOLDEN, _SLOT_SHIFT, _UNSET) == (0x9E3779B1, 16, 255), "update FastPath.answer's literals"


def native_module() -> Any:
    """``dnsserver._hot`` when built and not turned off, else None."""
    return _hot if native_available() else None


def native_available() -> bool:
    """Whether the C hot path is built and not turned off (``STEERING_DNS_NATIVE=0``: the Python closure)."""
    return _hot is not None and os.environ.get("STEERING_DNS_NATIVE", "1") != "0"


# id of a render object -> (the object, what the hot path made of it), in MEMO_SHARDS dicts chosen by the
# id's bits: one dict of ~100,000 entries (10,000 sites) resized holding the interpreter 2-4 ms, twice per
# install, in a thread next to the UDP ones; a shard's resize is a 64th of that.
MEMO_SHARDS = 64
Memo = list[dict[int, tuple[Any, Any]]]


def new_memo() -> Memo:
    return [{} for _ in range(MEMO_SHARDS)]


class _Tables:
    """One snapshot's answers, in the two lookups the hot path makes. Immutable once built.

    ``memo``: id of each render object converted (variant, geo row) -> (the object, what the hot path made
    of it). A render reuses the served one's variants and rows (``render.Reuse``), so an install given the
    previous tables converts only what is new: proportional to the change, not to the table (0.5-1 s at
    10,000 sites otherwise). The memo holds each object, so its id cannot be another's while it lives.

    A steered entry whose rows are the very tuple the previous install converted (a name none of whose geos
    changed: ``Reuse`` hands the same tuple on) is taken over whole, and a changed one takes each row at the
    same place that is the very row converted before (``_entry_from``), so an install walks the rows of the
    names that changed only: at 10,000 sites, 60,000 rows looked up per install otherwise (~60 ms holding
    the interpreter). ``sources`` holds what each steered entry was converted from, which keeps those ids
    valid for the next install's comparisons."""

    __slots__ = ("entries", "folded", "memo", "slot_tables", "sources")
    memo: Memo
    entries: dict[bytes, tuple[Any, Any]]
    folded: dict[bytes, tuple[Any, Any]]
    slot_tables: dict[bytes, list[SlotTable]]
    sources: dict[bytes, tuple[Any, ...]]

    def __init__(self, entries: dict[bytes, tuple[Any, Any]], previous: _Tables | None = None) -> None:
        memo = new_memo()
        prev = previous.memo if previous is not None else new_memo()
        old_sources = previous.sources if previous is not None else {}
        old_entries = previous.entries if previous is not None else {}
        old_kept = previous.slot_tables if previous is not None else {}
        # the hot path holds a table's index and fill only: keep the tables themselves alive with the answers
        self.slot_tables = {}
        self.sources = {}
        out: dict[bytes, tuple[Any, Any]] = {}
        for k, (seed, data) in entries.items():
            if seed is None:
                out[k] = None, _variant(data, memo, prev)
                continue
            self.sources[k] = data
            old = old_sources.get(k)
            if old is data and old_entries[k][0] == seed:
                out[k] = old_entries[k]
                self.slot_tables[k] = old_kept[k]
                continue
            self.slot_tables[k] = [table for table, _, _, _ in data]
            out[k] = seed, _entry_from(data, old, old_entries[k][1] if old is not None else None, memo, prev)
        self.entries = out
        # keyed by the whole question lower-cased in one step (name, type and class together); only
        # keys whose type/class bytes hold no ASCII letter, so lower() cannot make two keys collide
        # or let a query of another type match. The rest (HTTPS is type 0x0041) use ``entries``.
        self.folded = {k: v for k, v in self.entries.items() if not _LETTERS.intersection(k[-4:])}
        self.memo = memo


def _memoized(obj: tuple[Any, ...], memo: Memo, prev: Memo,
              convert: Callable[[tuple[Any, ...], Memo, Memo], tuple[Any, ...]]) -> tuple[Any, ...]:
    """``convert(obj)``, once per render object: from this install's memo, else taken over from the previous
    install's when it holds this very object (by identity: the memo keeps each object alive, so its id is
    not another's), else converted."""
    key = id(obj)
    shard = key >> 4 & (MEMO_SHARDS - 1)  # objects are 16-byte aligned: the bits above vary
    mine = memo[shard]
    hit = mine.get(key)
    if hit is not None:
        return hit[1]  # type: ignore[no-any-return]
    old = prev[shard].get(key)
    out = old[1] if old is not None and old[0] is obj else convert(obj, memo, prev)
    mine[key] = (obj, out)
    return out


def _variant(v: tuple[Any, ...], memo: Memo, prev: Memo) -> tuple[Any, ...]:
    """render's ``(rcode, counts, counts_with_opt, body, udp_cell, tcp_cell, flags[, signed])`` as
    ``(heads, body, udp_cell, tcp_cell, do)``: ``heads[RD | CD | 2 if OPT]`` is flags and counts, ready to
    copy; ``do`` the same for a DO=1 query (the signed variant in a DNSSEC zone, else these four again).
    ``flags`` (QR, and AA unless a referral) may be left out: QR and AA."""
    return _memoized(v, memo, prev, _convert_variant)


def _convert_variant(v: tuple[Any, ...], memo: Memo, prev: Memo) -> tuple[Any, ...]:
    rcode, counts, counts_opt, body, udp_cell, tcp_cell = v[:6]
    top = v[6] if len(v) > 6 else 0x84
    heads = tuple(bytes((top | (i & 0x01), (i & 0x10) | rcode)) + (counts_opt if i & 0x02 else counts)
                  for i in range(0x14))
    do = _variant(v[7], memo, prev)[:4] if len(v) > 7 else (heads, body, udp_cell, tcp_cell)
    return heads, body, udp_cell, tcp_cell, do


def _row(row: tuple[Any, ...], memo: Memo, prev: Memo) -> tuple[Any, ...]:
    """A geo's split ``(slot_table, variants, cells, fallback_cell)`` as ``(index, fill, variants, cells,
    fallback_cell)``: the table's two halves as locals; ``fill`` None for a split of one target (target 0 for
    every client: no slot to compute)."""
    return _memoized(row, memo, prev, _convert_row)


def _convert_row(row: tuple[Any, ...], memo: Memo, prev: Memo,
                 known: dict[int, tuple[Any, ...]] | None = None) -> tuple[Any, ...]:
    """``known``: converted variants by id, taken before the memo (``_entry_from``: the row this one replaces)."""
    table, variants, cells, fb = row
    if known is None:
        converted = tuple(_variant(v, memo, prev) for v in variants)
    else:
        converted = tuple(known.get(id(v)) or _variant(v, memo, prev) for v in variants)
    return table.index, table.fill if len(table.targets) > 1 else None, converted, cells, fb


def _entry_from(rows: tuple[Any, ...], old: tuple[Any, ...] | None, old_rows: tuple[Any, ...] | None, memo: Memo,
                prev: Memo) -> tuple[Any, ...]:
    """A steered name's rows by geo (``_row``), each row that is the very one at the same place of the
    previous install's source (``old``, converted as ``old_rows``) taken from there; a changed row takes the
    variants it shares with the row it replaces from that row's conversion. ``old`` is alive (the previous
    tables hold it), so an id of one of its objects is no other live object's."""
    if old is None or old_rows is None or len(old) != len(rows):  # old_rows was made from old: same length
        return tuple(_row(row, memo, prev) for row in rows)
    return tuple(done if row is was else
                 _convert_row(row, memo, prev, {id(v): c for v, c in zip(was[1], done[2], strict=True)})
                 for row, was, done in zip(rows, old, old_rows, strict=True))


def _find_ecs(q: bytes, p: int, n: int, routed: frozenset[int]) -> bytes | None:
    """The ECS option's data among OPT options from ``p`` to ``n``: b"" when absent, None when malformed or
    when an option in ``routed`` is there (the slow path answers those)."""
    ecs = b""
    found = False
    while p < n:
        if p + 4 > n:
            return None
        olen = (q[p + 2] << 8) | q[p + 3]
        if p + 4 + olen > n:
            return None
        if q[p] == 0 and q[p + 1] == 8:
            if found:
                return None  # two ECS options: FORMERR (slow path)
            found = True
            ecs = q[p + 4:p + 4 + olen]
            if not ecs:
                return None  # an empty ECS option is malformed
        elif ((q[p] << 8) | q[p + 1]) in routed:
            return None
        p += 4 + olen
    return ecs


def _flag_heads() -> dict[bytes, int]:
    """Header bytes 2-12 of every query the hot path takes (QUERY, QR clear; one question; no records
    but maybe one additional) -> the index into a variant's ``heads``: RD | CD, and 2 with an OPT."""
    out = {}
    for b2 in range(8):  # QR 0, opcode 0; AA, TC and RD as sent
        for b3 in range(256):
            for counts, opt in ((_COUNTS_PLAIN, 0), (_COUNTS_OPT, 2)):
                out[bytes((b2, b3)) + counts] = (b2 & 0x01) | (b3 & 0x10) | opt
    return out


_FLAG_HEADS = _flag_heads()


def _steered_opt(opt: bytes, rdlen: bytes, rest: bytes, stale: bool) -> bytes:
    """A steered answer's OPT up to the address; the stale EDE goes first, so the address stays last."""
    if not stale:
        return opt + rdlen + rest
    return opt + (int.from_bytes(rdlen, "big") + len(_EDE_STALE)).to_bytes(2, "big") + _EDE_STALE + rest


def opt_shapes(keys: ClientKeys, stale: bool) -> dict[bytes, tuple[Any, ...]]:
    """The hot path's table of OPT shapes: keyed by the OPT's version and flags (only DO may be set) before
    ``ClientKeys.shapes``' key: its shape, and the reply's OPT up to the address, when static (scope 0) and
    when steered (with the scope when a level decides; ``GeoMap.key``'s scope replaces the last byte
    otherwise). The levels split into the first and the rest: the first decides for most addresses."""
    out = {flags + k: (v[0], v[1], v[2] and v[2][0], v[2] and v[2][1:], *v[3:7], opt + k[:9] + b"\x00",
                       _steered_opt(opt, k[:2], k[2:9] + bytes((v[7],)), stale), v[8], v[9],
                       opt is _OPT_DO)
           for k, v in keys.shapes.items()
           for flags, opt in ((b"\x00\x00\x00", _OPT_NO_DO), (b"\x00\x80\x00", _OPT_DO))}
    # an OPT without options (what most resolvers send): "-8 address bytes" makes the length check mean rdlen 0
    for flags, opt in ((b"\x00\x00\x00", _OPT_NO_DO), (b"\x00\x80\x00", _OPT_DO)):
        out[flags + b"\x00\x00"] = (-8, 0, None, None, b"", b"", 0, 0, opt + b"\x00\x00",
                                     _steered_opt(opt, b"\x00\x00", b"", stale), None, None, opt is _OPT_DO)
    return out


class FastPath:
    """``answer(query, host, tcp)``: the reply bytes, or None for the slow path.

    ``answer_udp(query, host, 0)``: the same over UDP with the rate limit (``limiter``) applied to what it
    answers, as ``limiter.check`` would: the reply, its slip, or b"" to drop (None: the slow path, whose
    replies the caller limits). It counts in the limiter's current window, which the UDP loop moves with
    ``limiter.tick`` before answering. Without a limiter it is ``answer``.

    ``answer`` is a closure over its tables and helpers (no attribute lookups per query) that handles
    the two shapes that matter, a query without EDNS and one whose OPT holds a single ECS option, and
    hands every other shape to ``answer_general``, the complete version, which gives the same bytes
    (a Hypothesis property checks it)."""

    def __init__(self, geomap: GeoMap, snapshot: RenderedAnswers,
                 routed: tuple[frozenset[int], frozenset[int]] = ROUTED, limiter: RateLimiter | None = None,
                 native: bool | None = None) -> None:
        self.geomap = geomap
        self.keys = ClientKeys(geomap)
        self.routed = routed  # option codes the slow path answers, for UDP and TCP
        self.stale = False
        self._cur = [_Tables(snapshot.entries)]
        self._src: dict[Host, ClientTuple] = {}
        # each answer closure's setters (its cells): set_stale and set_geomap call them all
        self._set_stale: list[Callable[[bool], None]] = []
        self._set_geomap: list[Callable[[GeoMap, ClientKeys, dict[Host, ClientTuple]], None]] = []
        make = self._make_native if (native_available() if native is None else native) else self._make_answer
        self.native = make == self._make_native
        self.answer: Callable[[bytes, Host, int], bytes | None] = make(None)
        self.answer_udp = make(limiter) if limiter is not None else self.answer

    def set_stale(self, stale: bool) -> None:
        """Steered answers to EDNS queries carry EDE 3 (Stale Answer) while ``stale``; one reference swap."""
        self.stale = stale
        for setter in self._set_stale:
            setter(stale)

    def set_geomap(self, geomap: GeoMap, keys: ClientKeys | None = None) -> None:
        """Place clients with another geo map of the same geos (a GeoIP database reloaded: docs/geoip.md):
        its block index built whole (``keys``, or here), then swapped in by reference assignments, so each
        query decides with the old map or the new one; the resolver-address cache starts empty."""
        keys = keys if keys is not None else ClientKeys(geomap)
        src: dict[Host, ClientTuple] = {}
        self.keys = keys
        self.geomap = geomap
        self._src = src
        for setter in self._set_geomap:
            setter(geomap, keys, src)

    @property
    def tables(self) -> _Tables:
        return self._cur[0]

    @property
    def entries(self) -> dict[bytes, tuple[Any, Any]]:
        return self._cur[0].entries

    def install(self, snapshot: RenderedAnswers) -> None:
        # one reference swap (module docstring); what the previous tables converted already is taken over
        self._cur[0] = _Tables(snapshot.entries, self._cur[0])

    def source_key(self, host: Host) -> ClientTuple:
        """Client key for the resolver's address: text, packed bytes, or an IPv4 ``sin_addr`` read as an int."""
        src = self._src  # the cache, then the map: set_geomap swaps the map first, so no old key lands
        key = src.get(host)  # in a new cache
        if key is None:
            if len(src) >= _SRC_CACHE_MAX:
                src.clear()
            geomap = self.geomap
            if isinstance(host, str):
                k = geomap.key_for_source(host)
            else:
                ip = ipaddress.ip_address(host.to_bytes(4, sys.byteorder) if isinstance(host, int) else host)
                if ip.version == 6 and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                k = geomap.key(ip.version, ip.packed, 128)
            key = src[host] = (k.geo, k.subnet, k.scope)
        return key

    def _general_limited(self, limiter: RateLimiter) -> Callable[[bytes, Host, int], bytes | None]:
        """``answer_general`` with the rate limit applied to what it answers (b"": drop), counted in the window
        the UDP loop moved to, as the hot path counts its own replies."""
        rl_cur = limiter.hot()[0]
        rl_check = limiter.check

        def general_limited(q: bytes, host: Host, tcp: int) -> bytes | None:
            resp = self.answer_general(q, host, tcp)
            if resp is None:
                return None
            return rl_check(q, resp, host, rl_cur[0].second) or b""

        return general_limited

    def _make_native(self, limiter: RateLimiter | None) -> Callable[[bytes, Host, int], bytes | None]:
        """``_make_answer``'s closure as ``dnsserver._hot.Answer``: the same steps and Python objects, in C."""
        assert _hot is not None
        fresh = opt_shapes(self.keys, False)
        stale = opt_shapes(self.keys, True)
        general = self._general_limited(limiter) if limiter is not None else self.answer_general
        hot = _hot.Answer(self._cur, stale if self.stale else fresh, self._src, self.source_key, self.geomap.key,
                          self.geomap.default, general, limiter.hot() if limiter is not None else None,
                          limiter.check if limiter is not None else None, RESPONSES)

        def set_stale(stale_now: bool) -> None:
            hot.set_shapes(stale if stale_now else fresh)

        def set_geomap(geomap: GeoMap, keys: ClientKeys, src: dict[Host, ClientTuple]) -> None:
            nonlocal fresh, stale
            fresh, stale = opt_shapes(keys, False), opt_shapes(keys, True)
            hot.set_geomap(geomap.key, src, geomap.default, stale if self.stale else fresh)

        self._set_stale.append(set_stale)
        self._set_geomap.append(set_geomap)
        return hot

    def _make_answer(self, limiter: RateLimiter | None) -> Callable[[bytes, Host, int], bytes | None]:
        # everything the closure touches is a local of this frame: a cell read per use, no attribute lookups
        cur = self._cur
        heads_of = _FLAG_HEADS.get
        general: Callable[[bytes, Host, int], bytes | None] = self.answer_general
        src_get = self._src.get
        source_key = self.source_key
        gkey = self.geomap.key
        default = self.geomap.default
        crc32 = zlib.crc32
        from_bytes = int.from_bytes
        join = b"".join
        opt_type = _OPT_TYPE
        scopes = _SCOPE

        def make_shapes(stale: bool) -> dict[bytes, tuple[Any, ...]]:
            return opt_shapes(self.keys, stale)

        fresh_shapes = make_shapes(False)
        stale_shapes = make_shapes(True)
        shape_of = (stale_shapes if self.stale else fresh_shapes).get

        def set_stale(stale: bool) -> None:
            nonlocal shape_of  # the closure's cell: the next query reads the other table, at no cost per query
            shape_of = (stale_shapes if stale else fresh_shapes).get

        self._set_stale.append(set_stale)

        def set_geomap(geomap: GeoMap, keys: ClientKeys, src: dict[Host, ClientTuple]) -> None:
            nonlocal gkey, src_get, default, fresh_shapes, stale_shapes, shape_of  # cells, as set_stale's
            fresh, stale = make_shapes(False), make_shapes(True)
            gkey, src_get, default = geomap.key, src.get, geomap.default
            fresh_shapes, stale_shapes = fresh, stale
            shape_of = (stale_shapes if self.stale else fresh_shapes).get

        self._set_geomap.append(set_geomap)

        if limiter is not None:
            # the rate limit's common case, counted here as RateLimiter.check counts it (an authoritative
            # answer, bucket (prefix, question lower-cased)): the lowered question is at hand already
            rl_cur, rl_m4, rl_prefix, rl_rps, rl_count, rl_limited = limiter.hot()
            rl_check = limiter.check
            general = self._general_limited(limiter)

        def answer(q: bytes, host: Host, tcp: int) -> bytes | None:
            hi = heads_of(q[2:12])
            if hi is None:
                return None  # a response, another opcode, or sections the hot path does not take
            end = q.find(b"\x00", 12)
            qe = end + 5
            n = len(q)
            if end < 0 or qe > n:
                return None
            question = q[12:qe]
            t = cur[0]
            lq = question.lower()
            entry = t.folded.get(lq)
            if entry is None:
                entry = t.entries.get(q[12:end + 1].lower() + q[end + 1:qe])
                if entry is None:
                    return None
            seed, data = entry
            if hi & 2:
                shape = shape_of(q[qe + 6:qe + 19])
                if shape is None or n != qe + 19 + shape[0] or q[qe:qe + 3] != opt_type:
                    return general(q, host, tcp)  # other options or flags, or not valid
                nb, mask, first, levels, subhead, pad, family, src, echo, steered_echo, inner, dense, do = shape
                if nb < 0:
                    addr = b""
                    if seed is not None:
                        key = src_get(host) or source_key(host)
                        geo = key[0]
                        sub = key[1]
                        echo = steered_echo
                else:
                    if mask and q[n - 1] & mask:
                        return None  # address bits beyond the source prefix: FORMERR from the slow path
                    addr = q[qe + 19:]
                    if seed is not None:
                        if dense is None:
                            # ClientKeys.ecs inline: the block levels, else GeoMap.key
                            geo = -1
                            if first:
                                geo = first[1].get(addr[:first[0]], default)
                                if geo < 0:  # a block with longer prefixes inside: the next levels
                                    g = -2 - geo
                                    for lnb, table in levels:
                                        geo = table.get(addr[:lnb], g)
                                        if geo >= 0:
                                            break
                                        g = -2 - geo
                                    # all refined: the source ends inside a block with longer prefixes, GeoMap.key
                            if geo >= 0:
                                sub = subhead + addr + pad
                                echo = steered_echo
                            elif inner is not None:  # the source ends at a refined block: its fallback, a longer scope
                                geo = g
                                sub = subhead + addr + pad
                                echo = steered_echo[:-1] + scopes[inner[1][addr[:inner[0]]]]
                            else:
                                k = gkey(family, addr, src)
                                geo = k.geo
                                sub = k.subnet
                                echo = steered_echo[:-1] + scopes[k.scope]
                        else:
                            # a large map's dense index (ClientKeys.ecs): an array entry per level, ~geo or a row
                            geo = dense[1][from_bytes(addr[:dense[0]], "big")]
                            if geo >= 0:
                                for at, rows in dense[2]:
                                    geo = rows[(geo << 8) | addr[at]]
                                    if geo < 0:
                                        break
                            if geo < 0:
                                geo = ~geo
                                sub = subhead + addr + pad
                                echo = steered_echo
                            elif dense[3] is not None:  # the source ends at a refined block: its fallback, its scope
                                geo, scope = dense[3][geo]
                                sub = subhead + addr + pad
                                echo = steered_echo[:-1] + scopes[scope]
                            else:
                                k = gkey(family, addr, src)
                                geo = k.geo
                                sub = k.subnet
                                echo = steered_echo[:-1] + scopes[k.scope]
            else:
                if qe != n:
                    return None
                if seed is not None:
                    key = src_get(host) or source_key(host)
                    geo = key[0]
                    sub = key[1]
            if seed is None:
                variant = data
            else:
                index, fill, variants, cells, fb = data[geo]
                if fill is None:  # one target
                    i = 0
                else:
                    s = ((crc32(sub, seed) * 0x9E3779B1) & 0xFFFFFFFF) >> 16  # pick.slot: GOLDEN, SLOT_SHIFT
                    i = index[s]
                    if i >= 255:  # pick.UNSET: not raced yet (or a two-byte table's index past 254)
                        i = fill(s)
                variant = variants[i]
            if hi & 2:
                if do:  # DO=1: the signed answer (the same one outside signed zones)
                    variant = variant[4]
                resp = join((q[:2], variant[0][hi], question, variant[1], echo, addr))
                m = len(resp)
                if m > 512:  # the payload limit is never below 512: read it only when it may matter
                    if tcp:
                        limit = 65535
                    else:
                        limit = (q[qe + 3] << 8) | q[qe + 4]
                        limit = MAX_UDP_PAYLOAD if limit > MAX_UDP_PAYLOAD else 512 if limit < 512 else limit
                    if m > limit:
                        return None  # the slow path truncates properly
            else:
                resp = join((q[:2], variant[0][hi], question, variant[1]))
                if len(resp) > (65535 if tcp else 512):
                    return None
            variant[3 if tcp else 2][0] += 1
            if seed is not None:
                cells[i][0] += 1
                if fb is not None:
                    fb[0] += 1
            if limiter is None:
                return resp
            # RateLimiter.check's common case, inline (the window is the one the loop moved to)
            win = rl_cur[0]
            # not an authoritative NOERROR (a referral): check classifies. A compact denial (RateLimiter.check
            # routes replies without answers to classify) never comes from here: only the slow path makes one
            if resp[3] & 0x0F or not resp[2] & 0x06:
                return rl_check(q, resp, host, win.second) or b""
            bucket = (host & rl_m4 if type(host) is int else rl_prefix(host), lq)
            cell = win.buckets.get(bucket)
            if cell is None:
                return rl_count(q, resp, host, win, bucket, rl_rps, RESPONSES) or b""
            c = cell[0] = cell[0] + 1
            if c <= rl_rps:
                return resp
            return rl_limited(q, resp, host, c - rl_rps, RESPONSES, cell) or b""

        return answer

    def answer_general(self, q: bytes, host: Host, tcp: int) -> bytes | None:
        """Every shape the hot path takes, step by step: the reference for ``answer``."""
        n = len(q)
        if n < 17 or q[2] & 0xF8:
            return None  # a response, or another opcode
        counts = q[4:12]
        end = q.find(b"\x00", 12)
        qe = end + 5
        if end < 0 or qe > n:
            return None
        tables = self._cur[0]
        question = q[12:qe]
        entry = tables.folded.get(question.lower())
        if entry is None:
            entry = tables.entries.get(q[12:end + 1].lower() + q[end + 1:qe])
            if entry is None:
                return None
        ecs = None
        if counts == _COUNTS_PLAIN:
            if qe != n:
                return None
            limit = 65535 if tcp else 512
            opt = None
        elif counts == _COUNTS_OPT:
            rdlen = n - qe - 11
            # OPT: root owner, type 41, class = payload, ttl = ext-rcode, version, flags; rdata to the end
            if rdlen < 0 or q[qe:qe + 3] != _OPT_TYPE or q[qe + 6] or ((q[qe + 9] << 8) | q[qe + 10]) != rdlen:
                return None
            opt = _OPT_DO if q[qe + 7] & 0x80 else _OPT_NO_DO
            if tcp:
                limit = 65535
            else:
                limit = (q[qe + 3] << 8) | q[qe + 4]
                limit = MAX_UDP_PAYLOAD if limit > MAX_UDP_PAYLOAD else 512 if limit < 512 else limit
            if not rdlen:
                pass
            elif q[qe + 11:qe + 13] == _ECS_CODE and ((q[qe + 13] << 8) | q[qe + 14]) == rdlen - 4:
                # the usual shape: the ECS option and nothing else. Its echo is the same bytes but the
                # scope: rdlen, code, length, family, source; scope; address
                ecs = q[qe + 15:]
                echo = q[qe + 9:qe + 18]
                suffix = q[qe + 19:]
            else:
                found = _find_ecs(q, qe + 11, n, self.routed[1 if tcp else 0])
                if found is None:
                    return None
                if found:
                    if len(found) > 20:
                        return None  # longer than any valid ECS option (IPv6 /128): the slow path says why
                    ecs = found
                    olen = len(ecs)
                    echo = bytes((0, olen + 4, 0, 8, 0, olen)) + ecs[:3]
                    suffix = ecs[4:]
        else:
            return None
        seed, data = entry
        if seed is None:
            variant = data
        else:
            if ecs is None:
                key = self._src.get(host) or self.source_key(host)
            else:
                ecs_key = self.keys.ecs(ecs)
                if ecs_key is None:
                    return None
                key = ecs_key
            index, fill, variants, cells, fb = data[key[0]]
            if fill is None:
                i = 0
            else:
                s = ((zlib.crc32(key[1], seed) * _GOLDEN) & 0xFFFFFFFF) >> _SLOT_SHIFT
                i = index[s]
                if i >= _UNSET:
                    i = fill(s)
            variant = variants[i]
        if opt is _OPT_DO:
            variant = variant[4]  # the signed answer (the same one outside signed zones)
        # a steered answer while stale: EDE 3 first in the OPT's rdata (before the ECS option)
        ede = _EDE_STALE if self.stale and seed is not None else b""
        if opt is None:
            resp = b"".join((q[:2], variant[0][(q[2] & 0x01) | (q[3] & 0x10)], question, variant[1]))
        elif ecs is None:
            resp = b"".join((q[:2], variant[0][(q[2] & 0x01) | (q[3] & 0x10) | 2], question, variant[1], opt,
                             len(ede).to_bytes(2, "big"), ede))
        else:
            if seed is None and self.keys.ecs(ecs) is None:
                return None  # malformed ECS: FORMERR from the slow path
            # scope: the bits the answer depends on; none for an answer that is the same for everyone
            rdlen = ((echo[0] << 8) | echo[1]) + len(ede)
            resp = b"".join((q[:2], variant[0][(q[2] & 0x01) | (q[3] & 0x10) | 2], question, variant[1], opt,
                             rdlen.to_bytes(2, "big"), ede, echo[2:], _SCOPE[0 if seed is None else key[2]], suffix))
        if len(resp) > limit:
            return None  # the slow path truncates properly
        variant[3 if tcp else 2][0] += 1
        if seed is not None:
            cells[i][0] += 1
            if fb is not None:
                fb[0] += 1
        return resp
