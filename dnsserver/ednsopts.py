"""EDNS(0) options on the wire: codes, the OPT record's place in a query, option lists, encodings.

Pure bytes work, no dnspython: the slow path reads the options itself (so a
malformed option gets the same FORMERR, with question and OPT, whatever
dnspython thinks of it), and ``cookies.query_has_valid_server_cookie`` must
be cheap enough to run on a response that rate limiting is about to drop.
"""

from __future__ import annotations

NSID = 3  # RFC 5001
ECS = 8  # RFC 7871
COOKIE = 10  # RFC 7873
KEEPALIVE = 11  # RFC 7828 edns-tcp-keepalive
PADDING = 12  # RFC 7830
EDE = 15  # RFC 8914

# Extended DNS Error info-codes we send (RFC 8914 §4)
EDE_STALE_ANSWER = 3
EDE_PROHIBITED = 18
EDE_NOT_AUTHORITATIVE = 20

OPT_TYPE = 41
Option = tuple[int, bytes]


def _skip_name(wire: bytes, p: int) -> int:
    """Offset after the name at ``p`` (labels, then a zero or a compression pointer); -1 when cut short."""
    n = len(wire)
    for _ in range(128):  # a name has at most 127 labels: a longer run is garbage
        if p >= n:
            return -1
        b = wire[p]
        if b == 0:
            return p + 1
        if b & 0xC0 == 0xC0:
            return p + 2 if p + 2 <= n else -1
        if b & 0xC0:
            return -1  # the 0x40/0x80 label types are obsolete or unknown
        p += 1 + b
    return -1


def locate_opt(wire: bytes) -> tuple[int, int, int] | None:
    """``(record start, rdata start, rdata end)`` of the first OPT record in the additional section, or None
    when there is none or the sections cannot be walked (dnspython then decides what is wrong)."""
    n = len(wire)
    if n < 12:
        return None
    qd = (wire[4] << 8) | wire[5]
    rrs = ((wire[6] << 8) | wire[7]) + ((wire[8] << 8) | wire[9])
    ar = (wire[10] << 8) | wire[11]
    if not ar:
        return None
    p = 12
    for _ in range(qd):
        p = _skip_name(wire, p)
        if p < 0 or p + 4 > n:
            return None
        p += 4
    for i in range(rrs + ar):
        start = p
        p = _skip_name(wire, p)
        if p < 0 or p + 10 > n:
            return None
        rtype = (wire[p] << 8) | wire[p + 1]
        rdlen = (wire[p + 8] << 8) | wire[p + 9]
        rdata = p + 10
        p = rdata + rdlen
        if p > n:
            return None
        if i >= rrs and rtype == OPT_TYPE:
            return start, rdata, p
    return None


def parse_options(rdata: bytes) -> list[Option] | None:
    """The OPT rdata's (code, data) options in order; None when an option runs past the end."""
    out: list[Option] = []
    p = 0
    n = len(rdata)
    while p < n:
        if p + 4 > n:
            return None
        code = (rdata[p] << 8) | rdata[p + 1]
        olen = (rdata[p + 2] << 8) | rdata[p + 3]
        end = p + 4 + olen
        if end > n:
            return None
        out.append((code, rdata[p + 4:end]))
        p = end
    return out


def without_options(wire: bytes, where: tuple[int, int, int]) -> bytes:
    """The query with the OPT's rdata emptied, for dnspython to parse the rest; only when the OPT is the
    last record (nothing after it can point into the bytes that move), else the query as it is."""
    _, rdata, end = where
    if end != len(wire):
        return wire
    return wire[:rdata - 2] + b"\x00\x00"


def encode(code: int, data: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def ede(info_code: int, text: str = "") -> bytes:
    """An Extended DNS Error option (RFC 8914): info-code and optional UTF-8 extra text."""
    return encode(EDE, info_code.to_bytes(2, "big") + text.encode())


def keepalive(idle_seconds: float) -> bytes:
    """An edns-tcp-keepalive option announcing the idle timeout, in units of 100 ms (RFC 7828 §3.1)."""
    return encode(KEEPALIVE, min(65535, max(0, round(idle_seconds * 10))).to_bytes(2, "big"))


def ecs_valid(data: bytes) -> bool:
    """RFC 7871 §6 rules for a query's ECS option: known family, source within the address width, scope 0,
    exactly the address bytes the source needs, and no bits set past the source prefix."""
    if len(data) < 4 or data[0] or data[1] not in (1, 2) or data[3]:
        return False
    src = data[2]
    if src > (32 if data[1] == 1 else 128) or len(data) - 4 != (src + 7) >> 3:
        return False
    rest = src & 7
    return not (rest and data[-1] & (0xFF >> rest))
