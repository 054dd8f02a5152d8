"""The wire form of the commonest pre-rendered answer, built without a dnspython ``Message``.

Most variants of a large table are a steered name's own records: one or more RRsets of the asked name in
the answer section (with their RRSIGs when signed), nothing in the other sections. For those the bytes
after the question are fixed by a few rules of dnspython's renderer, which ``answer_body`` applies
directly: every owner name equals the question's, so it is compressed to a pointer to offset 12
(``Name.to_wire`` looks the whole name up first); each RRset's records are shuffled as
``Rdataset.to_wire`` shuffles them (the same ``random`` it uses, so a test that stops dnspython's shuffle
stops this one); and only types whose rdata holds no name that dnspython would compress are taken (A,
AAAA, TXT; an RRSIG's signer is never compressed), so an rdata's own ``to_wire`` gives its bytes.
Any other shape returns None and is rendered through a ``Message`` as before
(tests/test_render_memo.py compares both renders byte for byte).
"""

from __future__ import annotations

import struct
from typing import Any

import dns.rdataset
import dns.rdatatype

_POINTER_TO_QUESTION = b"\xc0\x0c"
# rdata without a compressible name: its bytes do not depend on what was written before it
_SELF_CONTAINED = frozenset({dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT, dns.rdatatype.RRSIG})
_WIRE_MAX = 200_000
# rdata -> its wire form, by identity (the entry holds the rdata, so its id stays its own): a steered
# target's record is written for A and ANY, unsigned and signed, and again by every table that renders it
_wire: dict[int, tuple[Any, bytes]] = {}
_MAX_BODY = 65535 - 512  # well below what a Message may hold: a larger answer takes dnspython's path (TooBig)


def answer_body(qname: Any, res: Any) -> tuple[int, bytes] | None:
    """``(records, body)`` for a reply whose every record is in the answer section, owned by ``qname``, of a
    self-contained type: what ``Message.to_wire`` writes after the question. None for any other reply."""
    if res.authority or res.additional or res.rcode > 15:
        return None
    pieces: list[bytes] = []
    count = 0
    size = 0
    for rrset in res.answer:
        if rrset.rdtype not in _SELF_CONTAINED or not len(rrset) or rrset.name != qname:
            return None
        head = _POINTER_TO_QUESTION + struct.pack("!HHI", rrset.rdtype, rrset.rdclass, rrset.ttl)
        records = list(rrset)
        vars(dns.rdataset)["random"].shuffle(records)  # looked up per call, as dnspython does (not exported)
        for rd in records:
            known = _wire.get(id(rd))
            if known is not None and known[0] is rd:
                data = known[1]
            else:
                data = rd.to_wire()
                if len(_wire) >= _WIRE_MAX:
                    _wire.clear()
                _wire[id(rd)] = (rd, data)
            pieces += (head, struct.pack("!H", len(data)), data)
            size += 12 + len(data)
        count += len(records)
    if size > _MAX_BODY:
        return None
    return count, b"".join(pieces)
