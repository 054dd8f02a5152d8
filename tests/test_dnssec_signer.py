"""``dnssec.sign_rrset`` (the render's signer) makes the very RRSIG ``dns.dnssec.sign`` makes: same header
fields, signer and signature bytes (both deterministic: RFC 6979 ECDSA, Ed25519), for owners of every shape
(apex, deep, wildcard, upper case) and RRsets of one or several records of several types."""

from __future__ import annotations

import dns.dnssec
import dns.name
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.dnssec import SigningKey, sign_rrset, write_key

ORIGIN = dns.name.from_text("example.test.")
OWNERS = ["example.test.", "www.example.test.", "A.Deep.Name.example.test.", "*.wild.example.test.",
          "*.example.test."]
RECORDS = {
    "A": st.lists(st.builds("10.0.{}.{}".format, st.integers(0, 255), st.integers(1, 254)), min_size=1, max_size=4),
    "AAAA": st.lists(st.builds("2001:db8::{:x}".format, st.integers(1, 0xffff)), min_size=1, max_size=3),
    "TXT": st.lists(st.from_regex(r'\A"[a-z0-9 ]{0,20}"\Z'), min_size=1, max_size=3),
    "MX": st.lists(st.from_regex(r"\A[0-9]{1,2} mx[0-9]\.example\.test\.\Z"), min_size=1, max_size=3),
    "CNAME": st.lists(st.just("target.example.net."), min_size=1, max_size=1),
}


@pytest.fixture(scope="module", params=["ECDSAP256SHA256", "ED25519"])
def key(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return write_key(tmp_path_factory.mktemp("keys"), ORIGIN, request.param, "csk")[1]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), owner=st.sampled_from(OWNERS), rdtype=st.sampled_from(sorted(RECORDS)),
       ttl=st.integers(0, 2**31 - 1), inception=st.integers(1_767_225_600, 1_900_000_000),
       length=st.integers(1, 40 * 86400))
def test_sign_rrset_equals_dnspython(key: SigningKey, data: st.DataObject, owner: str, rdtype: str, ttl: int,
                                     inception: int, length: int) -> None:
    rrset = dns.rrset.from_text_list(owner, ttl, "IN", rdtype, data.draw(RECORDS[rdtype]))
    want = dns.dnssec.sign(rrset, key.private, ORIGIN, key.dnskey, inception=inception,
                           expiration=inception + length)
    got = sign_rrset(rrset, key, ORIGIN, inception, inception + length)
    assert got == want
    assert got.to_wire() == want.to_wire()
    dns.dnssec.validate_rrsig(rrset, got, {ORIGIN: dns.rrset.from_rdata(ORIGIN, 3600, key.dnskey)},
                              now=inception + 1)
