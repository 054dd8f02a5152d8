"""Response rate limiting (RRL) for UDP replies: pure logic, no I/O, no clock (the second is passed in).

A spoofed-source flood turns an authoritative server into an amplifier: a
45-byte query can draw a reply twenty times its size, sent to the victim.
``RateLimiter.check(query, reply, host, second)`` looks at the reply about to
go out and returns what to send instead: the reply itself, a minimal
truncated reply (a "slip": TC=1, the question, no records, so a real client
retries over TCP, which cannot be spoofed), or None (drop).

Buckets are per (client prefix, answer class) and count the replies of the
current one-second window:

* responses: an answer or NODATA (AA set, or TC), keyed by the question's
  name (lower-cased) and type, at ``responses_per_second``;
* referrals: NOERROR without AA and without answers (a delegation), one
  bucket per prefix, at ``responses_per_second`` (random names under a cut
  would otherwise each get a bucket of their own);
* nxdomain: one bucket per prefix and zone (the longest configured zone that
  holds the name; random-subdomain floods share it), at ``nxdomains_per_second``;
  a DNSSEC compact denial (RFC 9824: NOERROR, no answers, an NSEC at the name
  whose bitmap holds NXNAME) is an NXDOMAIN and counted here too, or a flood of
  random names with DO set would get a bucket per name;
* errors: every other rcode (FORMERR, REFUSED, SERVFAIL, NOTIMP, and BADVERS,
  whose header rcode is 0 but which has no records), one bucket per prefix,
  at ``errors_per_second``.

Over the rate, the n-th limited reply of a bucket slips when n is a multiple
of ``slip`` (0: never; 1: always) and is dropped otherwise. Exempt from the
limit: sources in ``exempt``, and queries with a valid server cookie (the
caller's ``cookie_ok``). Both are checked only for a reply about to be
limited, so the common path pays nothing for them.

Memory: only the current window's buckets are kept; the first query of a new
second swaps in an empty dict. A window holds at most ``max_buckets``
buckets; past that, replies that would need a new bucket are treated as
limited (slipped at the slip rate, else dropped). The other choice, allowing
them, would let an attacker spoofing many sources fill the table with junk
early in each second and then reflect at the victim without limit for the
rest of it. Limited keeps the cap on amplification; the cost falls on real
clients new in that second, who still get a slip now and then (and a retry
over TCP), and the table empties at the next second. To fill it an attacker
needs ``max_buckets`` distinct (prefix, class) keys in one second, more
queries than one worker answers in a second at the default.

The host comes in the form the caller has: an IPv4 ``sin_addr`` read as a
native-endian int (the batch loop), 16 packed bytes (IPv6, batch loop), or
text (the other loops). An int is masked with a precomputed native-endian
mask; bytes and text go through a small cache to the same keys (an int for
IPv4, IPv4-mapped IPv6 included; the prefix's bytes for IPv6).

Threads: one limiter serves every UDP thread of a process. Dict operations
are atomic under the GIL; two threads counting the same bucket at once may
lose a count, which only lets one more reply through. A window never moves
back: a thread whose second is older counts into the current window.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Iterable

from dnsserver.metrics import RRL_CLASSES, Stats
from steering.config import Rrl

Host = str | bytes | int
CookieCheck = Callable[[bytes, str], bool]
Check = Callable[[bytes, bytes, Host, int], "bytes | None"]

RESPONSES, REFERRALS, NXDOMAIN, ERRORS = range(4)
_MAPPED = b"\x00" * 10 + b"\xff\xff"  # ::ffff:0:0/96, IPv4 on a dual-stack socket
_PREFIX_CACHE_MAX = 65_536
_NATIVE = sys.byteorder
_NO_RECORDS = b"\x00" * 6


def v4_mask(prefix: int) -> int:
    """The netmask for ``prefix`` bits as an int read from its bytes in native order, like ``sin_addr``."""
    return int.from_bytes(((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF).to_bytes(4, "big"), _NATIVE)


def truncated(reply: bytes) -> bytes:
    """The slip for ``reply``: same ID, flags with TC set (AA, RD, CD and rcode kept), the question, no records."""
    head = reply[:2] + bytes((reply[2] | 0x02, reply[3]))
    if reply[4:6] == b"\x00\x01":
        end = reply.find(b"\x00", 12)
        if end >= 0 and end + 5 <= len(reply):
            return head + b"\x00\x01" + _NO_RECORDS + reply[12:end + 5]
    return head + b"\x00\x00" + _NO_RECORDS


_NSEC = 47
_NXNAME_OCTET = 128 // 8  # type 128 (NXNAME) in window 0: octet 16, bit 0x80


def _skip_name(m: bytes, i: int) -> int:
    """The offset after the (possibly compressed) name at ``i``; -1 when it runs off the end."""
    n = len(m)
    while i < n:
        c = m[i]
        if c == 0:
            return i + 1
        if c & 0xC0 == 0xC0:
            return i + 2 if i + 2 <= n else -1
        i += c + 1
    return -1


def is_compact_denial(reply: bytes) -> bool:
    """Whether ``reply`` (NOERROR, no answers) proves the name does not exist the RFC 9824 way: an NSEC
    in the authority section whose type bitmap holds NXNAME. Walks the wire; anything malformed is False."""
    m = reply
    if len(m) < 12 or m[4:6] != b"\x00\x01":
        return False
    i = _skip_name(m, 12)
    if i < 0:
        return False
    i += 4  # the question's type and class
    for _ in range(min((m[8] << 8) | m[9], 16)):  # authority records: a compact denial has a few
        i = _skip_name(m, i)
        if i < 0 or i + 10 > len(m):
            return False
        rtype = (m[i] << 8) | m[i + 1]
        rdlen = (m[i + 8] << 8) | m[i + 9]
        start, i = i + 10, i + 10 + rdlen
        if i > len(m):
            return False
        if rtype == _NSEC:
            j = _skip_name(m[:i], start)  # the next name (never compressed in NSEC, but bounded either way)
            while j >= 0 and j + 2 <= i:
                window, length = m[j], m[j + 1]
                if window == 0:
                    return length > _NXNAME_OCTET and j + 2 + _NXNAME_OCTET < i and \
                        bool(m[j + 2 + _NXNAME_OCTET] & 0x80)
                j += 2 + length
            return False
    return False


def host_text(host: Host) -> str:
    """The address as text, whatever form the loop handed over."""
    if isinstance(host, int):
        return socket.inet_ntop(socket.AF_INET, host.to_bytes(4, _NATIVE))
    if isinstance(host, bytes):
        try:
            return socket.inet_ntop(socket.AF_INET6 if len(host) == 16 else socket.AF_INET, host)
        except ValueError:
            return "::"
    return host


def packed(host: Host) -> bytes | None:
    """4 bytes for IPv4 (IPv4-mapped IPv6 included), 16 for IPv6, None when it is not an address."""
    if isinstance(host, int):
        return host.to_bytes(4, _NATIVE)
    if isinstance(host, str):
        text = host.split("%", 1)[0]
        try:
            raw = socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        except (OSError, ValueError):
            return None
    else:
        raw = host
    if len(raw) == 16 and raw[:12] == _MAPPED:
        return raw[12:]
    return raw if len(raw) in (4, 16) else None


_EXEMPT_FLOOR = 1 << 60  # a bucket of an exempt prefix counts up from here: never over a limit again this second

class Exempt:
    """Membership in the configured prefixes: per prefix length, a set of masked addresses (no parsing per call)."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for text in cidrs:
            net = ipaddress.ip_network(text, strict=False)
            mapped = net.network_address.ipv4_mapped if isinstance(net, ipaddress.IPv6Network) else None
            if mapped is not None and net.prefixlen >= 96:  # an IPv4 prefix written as IPv4-mapped IPv6
                net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
            if isinstance(net, ipaddress.IPv4Network):
                v4.setdefault(net.prefixlen, set()).add(int(net.network_address) >> (32 - net.prefixlen))
            else:
                v6.setdefault(net.prefixlen, set()).add(int(net.network_address) >> (128 - net.prefixlen))
        self.v4 = tuple((32 - n, frozenset(s)) for n, s in sorted(v4.items()))
        self.v6 = tuple((128 - n, frozenset(s)) for n, s in sorted(v6.items()))

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __contains__(self, host: Host) -> bool:
        raw = packed(host)
        if raw is None:
            return False
        value = int.from_bytes(raw, "big")
        # an explicit loop, not any(): a generator costs more on this per-reply path
        for shift, nets in self.v4 if len(raw) == 4 else self.v6:  # noqa: SIM110
            if value >> shift in nets:
                return True
        return False

    def covers(self, host: Host, v4_bits: int, v6_bits: int) -> bool:
        """Whether an exempt prefix holds the host's whole rate-limiting prefix, so its bucket is exempt
        (an exempt /32 inside a /24 bucket is not: its neighbours share the bucket)."""
        raw = packed(host)
        if raw is None:
            return False
        value = int.from_bytes(raw, "big")
        width, bits, nets = (32, v4_bits, self.v4) if len(raw) == 4 else (128, v6_bits, self.v6)
        return any(width - shift <= bits and value >> shift in s for shift, s in nets)


class _Window:
    """One second's buckets; replaced whole when the second changes."""

    __slots__ = ("buckets", "full", "second")

    def __init__(self, second: int) -> None:
        self.second = second
        self.buckets: dict[tuple[object, ...], list[int]] = {}
        self.full = 0  # replies limited because the window held max_buckets buckets


class RateLimiter:
    """``check(query, reply, host, second)``: the bytes to send (the reply or its slip), or None to drop.

    ``zones``: the served zones' origins in wire form, lower-case (for the NXDOMAIN buckets).
    ``cookie_ok(query, host_text)``: whether the query carries a valid server cookie; asked only for a
    reply about to be limited, and only when the query has an additional record (where a cookie lives)."""

    def __init__(self, cfg: Rrl, zones: Iterable[bytes] = (), stats: Stats | None = None,
                 cookie_ok: CookieCheck | None = None) -> None:
        self.cfg = cfg
        self.zones = frozenset(z.lower() for z in zones)
        self.stats = stats or Stats()
        self.cookie_ok = cookie_ok
        self.exempt = Exempt(cfg.exempt)
        self._win = [_Window(-1 << 62)]
        self._prefixes: dict[Host, int | bytes] = {}
        # set by _make_check: the steps the fast path calls when it counts a reply itself (``hot``)
        self._count: Callable[..., bytes | None]
        self._limited: Callable[..., bytes | None]
        self.check: Check = self._make_check()

    def hot(self) -> tuple[list[_Window], int, Callable[[Host], int | bytes], int,
                           Callable[..., bytes | None], Callable[..., bytes | None]]:
        """What ``FastPath`` needs to count an authoritative answer inline, as ``check`` does: the window cell,
        the IPv4 mask, the prefix of a host that is not an int, the responses rate, and the two steps for a
        new bucket and for a reply over the rate."""
        return self._win, v4_mask(self.cfg.ipv4_prefix), self.prefix, self.cfg.responses_per_second, \
            self._count, self._limited

    def tick(self, now: int) -> None:
        """Move to the window of second ``now`` (never back). The UDP loops call it before answering (once per
        batch), because the fast path counts its replies in the current window without a clock of its own."""
        if now > self._win[0].second:
            self._win[0] = _Window(now)

    @property
    def buckets(self) -> dict[tuple[object, ...], list[int]]:
        """The current window's counts (tests and introspection)."""
        return self._win[0].buckets

    def prefix(self, host: Host) -> int | bytes:
        """The bucket key for the client's prefix: an int (IPv4, as the batch loop masks it) or the IPv6 bytes."""
        if isinstance(host, int):
            return host & v4_mask(self.cfg.ipv4_prefix)
        key = self._prefixes.get(host)
        if key is None:
            if len(self._prefixes) >= _PREFIX_CACHE_MAX:
                self._prefixes.clear()
            key = self._prefixes[host] = self._prefix_of(host)
        return key

    def _prefix_of(self, host: Host) -> int | bytes:
        raw = packed(host)
        if raw is None:
            return b"?"  # not an address: all such share one bucket
        if len(raw) == 4:
            return int.from_bytes(raw, _NATIVE) & v4_mask(self.cfg.ipv4_prefix)
        bits = self.cfg.ipv6_prefix
        whole, rest = divmod(bits, 8)
        if not rest:
            return raw[:whole]
        return raw[:whole] + bytes((raw[whole] & (0xFF << (8 - rest)) & 0xFF,))

    def zone_of(self, name: bytes) -> bytes:
        """The longest served zone holding ``name`` (wire form, lower-case), or b"" when none does."""
        zones = self.zones
        i = 0
        n = len(name)
        while i < n:
            if name[i:] in zones:
                return name[i:]
            i += name[i] + 1
        return b""

    def classify(self, reply: bytes, pfx: int | bytes) -> tuple[tuple[object, ...], int]:
        """The bucket key and class index of a reply that is not a plain authoritative answer."""
        rc = reply[3] & 0x0F
        if not rc:
            if reply[2] & 0x06:  # AA or TC: an answer, NODATA, or one cut short
                end = reply.find(b"\x00", 12)
                if not (reply[6] | reply[7]) and (reply[8] | reply[9]) and is_compact_denial(reply):
                    zone = self.zone_of(reply[12:end + 1].lower()) if end > 0 else b""
                    return (pfx, NXDOMAIN, zone), NXDOMAIN  # RFC 9824's NXDOMAIN: per zone, not per name
                return (pfx, reply[12:end + 5].lower()), RESPONSES
            if reply[6] | reply[7]:
                end = reply.find(b"\x00", 12)
                return (pfx, reply[12:end + 5].lower()), RESPONSES
            if reply[8] | reply[9]:
                return (pfx, REFERRALS), REFERRALS
            return (pfx, ERRORS), ERRORS  # no records at all: BADVERS (the rcode is in the OPT)
        if rc == 3:
            end = reply.find(b"\x00", 12)
            zone = self.zone_of(reply[12:end + 1].lower()) if reply[4:6] == b"\x00\x01" and end > 0 else b""
            return (pfx, NXDOMAIN, zone), NXDOMAIN
        return (pfx, ERRORS), ERRORS

    def _make_check(self) -> Check:
        # the per-query path is this closure: locals and cells only, no attribute lookups
        cfg = self.cfg
        rates = (cfg.responses_per_second, cfg.responses_per_second, cfg.nxdomains_per_second,
                 cfg.errors_per_second)
        rps = cfg.responses_per_second
        cap = cfg.max_buckets
        slip = cfg.slip
        m4 = v4_mask(cfg.ipv4_prefix)
        v4_bits, v6_bits = cfg.ipv4_prefix, cfg.ipv6_prefix
        cur = self._win
        window = _Window
        pget = self._prefixes.get
        prefix = self.prefix
        classify = self.classify
        exempt = self.exempt if self.exempt else None
        cookie_ok = self.cookie_ok
        stats = self.stats
        dropped = tuple(stats.rrl_limited[(c, "dropped")] for c in RRL_CLASSES)
        slipped = tuple(stats.rrl_limited[(c, "slipped")] for c in RRL_CLASSES)
        by_prefix = stats.rrl_exempt["prefix"]
        by_cookie = stats.rrl_exempt["cookie"]
        table_full = stats.rrl_table_full

        def limited(q: bytes, reply: bytes, host: Host, over: int, cls: int,
                    cell: list[int] | None = None) -> bytes | None:
            if exempt is not None and host in exempt:
                by_prefix[0] += 1
                if cell is not None and exempt.covers(host, v4_bits, v6_bits):
                    # decided once per bucket and second: the rest of this second's replies in the bucket
                    # cost only the count (far below any limit), not this lookup again
                    cell[0] = -_EXEMPT_FLOOR
                return reply
            if cookie_ok is not None and len(q) > 11 and (q[10] or q[11]) and cookie_ok(q, host_text(host)):
                by_cookie[0] += 1
                return reply
            if slip and over % slip == 0:
                slipped[cls][0] += 1
                return truncated(reply)
            dropped[cls][0] += 1
            return None

        def count(q: bytes, reply: bytes, host: Host, win: _Window, key: tuple[object, ...], limit: int,
                  cls: int) -> bytes | None:
            buckets = win.buckets
            cell = buckets.get(key)  # a one-element list: counting it does not hash the key again
            if cell is None:
                if len(buckets) < cap:
                    buckets[key] = [1]
                    return reply  # every rate is at least 1
                table_full[0] += 1
                win.full += 1
                return limited(q, reply, host, win.full, cls)
            n = cell[0] = cell[0] + 1
            if n <= limit:
                return reply
            return limited(q, reply, host, n - limit, cls, cell)

        def check(q: bytes, reply: bytes, host: Host, now: int) -> bytes | None:
            win = cur[0]
            if now > win.second:
                win = cur[0] = window(now)  # the old window's buckets go at once: one swap, no sweep
            if type(host) is int:
                pfx: int | bytes = host & m4
            else:
                known = pget(host)
                pfx = known if known is not None else prefix(host)
            if reply[3] & 0x0F or not reply[2] & 0x06 or not (reply[6] | reply[7]):
                # an error, a referral, or no answers (NODATA, or a compact denial: an NXDOMAIN)
                key, cls = classify(reply, pfx)
                return count(q, reply, host, win, key, rates[cls], cls)
            # the common case, inline: an authoritative NOERROR with answers, counted by prefix and question
            key = (pfx, reply[12:reply.find(b"\x00", 12) + 5].lower())
            cell = win.buckets.get(key)
            if cell is None:
                return count(q, reply, host, win, key, rps, RESPONSES)
            n = cell[0] = cell[0] + 1
            if n <= rps:
                return reply
            return limited(q, reply, host, n - rps, RESPONSES, cell)

        self._count, self._limited = count, limited
        return check
