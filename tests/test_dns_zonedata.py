"""Zone data beyond plain records: wildcards (RFC 4592), delegations with glue (referrals, RFC 9471),
additional-section addresses for NS/MX/SRV targets, and RRSIG/NSEC at a CNAME owner.

Real UDP and TCP queries (dnspython as the client) against an in-process server; a Hypothesis property
checks that whatever the pre-rendered fast path answers, the slow path answers the same.
"""

from __future__ import annotations

from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.server import DnsServer
from steering.config import ConfigError, load_config
from tests.support.dns_server import load, serving, table_with, write_config

BIG_NS = 8  # servers of big.example.test, each with 4 A and 4 AAAA: the glue cannot fit in 1232 bytes
MANY_MX = 10  # exchanges of mx-many, each with 4 AAAA: the answer fits in 512 bytes, the addresses do not
DS_RDATA = "12345 13 2 " + "ab" * 32

EXTRA = "\n".join([
    # a wildcard CNAME to a steered name and one to a static name
    "*.cn IN CNAME api.example.test.",
    "*.cs IN CNAME mail.example.test.",
    # *.ent covers z.ent but not z.b.ent: b.ent exists (an empty non-terminal above a.b.ent)
    "a.b.ent IN A 192.0.2.1",
    "*.ent IN A 192.0.2.2",
    # a delegation that has a DS record on our side of the cut
    "sec IN NS ns1.sec.example.test.",
    f"sec IN DS {DS_RDATA}",
    "ns1.sec IN A 192.0.2.101",
    "ns1.sec IN AAAA 2001:db8::101",
    # a delegation whose required glue is too big for UDP
    *(f"big IN NS ns{i}.big.example.test." for i in range(BIG_NS)),
    *(f"ns{i}.big IN A 192.0.2.{10 * i + j}" for i in range(BIG_NS) for j in range(4)),
    *(f"ns{i}.big IN AAAA 2001:db8:b16::{i}:{j}" for i in range(BIG_NS) for j in range(4)),
    # MX targets: static in-zone (addresses added), steered (skipped), out of zone (skipped),
    # below a cut (the child's data: skipped)
    "mx IN MX 10 mail.example.test.",
    "mx IN MX 20 mx2.example.test.",
    "mx IN MX 30 api.example.test.",
    "mx IN MX 40 mx.example.net.",
    "mx IN MX 50 ns1.child.example.test.",
    "mx2 IN AAAA 2001:db8::25",
    *(f"mx-many IN MX {i} m{i}.example.test." for i in range(MANY_MX)),
    *(f"m{i} IN AAAA 2001:db8:3a::{i}:{j}" for i in range(MANY_MX) for j in range(4)),
    # a CNAME owner, for RRSIG/NSEC queries at it
    "alias IN CNAME mail.example.test.",
])


@pytest.fixture
def cfg(tmp_path: Path):
    return load(tmp_path, extra_zone=EXTRA)


async def udp(port: int, q: dns.message.Message) -> dns.message.Message:
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3, ignore_trailing=False)


async def tcp(port: int, q: dns.message.Message) -> dns.message.Message:
    return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)


def texts(section: list[dns.rrset.RRset]) -> set[str]:
    return {line for rrset in section for line in rrset.to_text().splitlines()}


def names(section: list[dns.rrset.RRset]) -> set[str]:
    return {rrset.name.to_text().lower() for rrset in section}


def soa_only(r: dns.message.Message) -> bool:
    return [rr.rdtype for rr in r.authority] == [dns.rdatatype.SOA] and r.authority[0].name.to_text() == "example.test."


# --- wildcards -------------------------------------------------------------------------------------


async def test_wildcard_answers_a_name_that_does_not_exist(cfg) -> None:
    async with serving(cfg) as (server, port):
        for send in (udp, tcp):
            for name in ("foo.wild.example.test", "a.b.c.wild.example.test"):  # one label or several
                r = await send(port, dns.message.make_query(name, "A"))
                assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
                assert texts(r.answer) == {f"{name}. 300 IN A 192.0.2.80"}
                r = await send(port, dns.message.make_query(name, "TXT"))
                assert texts(r.answer) == {f'{name}. 300 IN TXT "synthesized from *.wild.example.test"'}
        # no pre-rendered entry for a synthesized name: the fast path declines it, the slow path answers
        wire = dns.message.make_query("foo.wild.example.test", "A").to_wire()
        assert server.fast.answer(wire, "127.0.0.1", 0) is None


async def test_wildcard_nodata_when_the_type_is_absent(cfg) -> None:
    async with serving(cfg) as (_, port):
        for send in (udp, tcp):
            r = await send(port, dns.message.make_query("foo.wild.example.test", "MX"))
            assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
            assert not r.answer and soa_only(r)


async def test_closest_encloser_and_empty_non_terminals(cfg) -> None:
    async with serving(cfg) as (_, port):
        r = await udp(port, dns.message.make_query("z.ent.example.test", "A"))
        assert texts(r.answer) == {"z.ent.example.test. 300 IN A 192.0.2.2"}
        # b.ent exists (it is above a.b.ent): it is the closest encloser, and *.b.ent does not exist
        r = await udp(port, dns.message.make_query("z.b.ent.example.test", "A"))
        assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer and soa_only(r)
        # the empty non-terminal itself is NODATA, not synthesized
        r = await udp(port, dns.message.make_query("b.ent.example.test", "A"))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer and soa_only(r)
        # the existing name is answered from its own data
        r = await udp(port, dns.message.make_query("a.b.ent.example.test", "A"))
        assert texts(r.answer) == {"a.b.ent.example.test. 300 IN A 192.0.2.1"}
        # wild.example.test (an empty non-terminal above *.wild) is NODATA; a name with no wildcard NXDOMAIN
        r = await udp(port, dns.message.make_query("wild.example.test", "A"))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
        r = await udp(port, dns.message.make_query("nothing.example.test", "A"))
        assert r.rcode() == dns.rcode.NXDOMAIN


async def test_wildcard_cname_is_followed(cfg) -> None:
    table = table_with(cfg, 1, {"api.example.test.": {g.id: {"eu-west-1": 1000} for g in cfg.geos}})
    async with serving(cfg, table) as (_, port):
        for send in (udp, tcp):
            r = await send(port, dns.message.make_query("x.cn.example.test", "A"))
            assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
            assert texts(r.answer) == {"x.cn.example.test. 300 IN CNAME api.example.test.",
                                       "api.example.test. 30 IN A 192.0.2.30"}
            r = await send(port, dns.message.make_query("Y.CS.example.test", "A"))
            assert texts(r.answer) == {"Y.CS.example.test. 300 IN CNAME mail.example.test.",
                                       "mail.example.test. 300 IN A 192.0.2.25"}


async def test_literal_asterisk_query_is_answered_literally(cfg) -> None:
    async with serving(cfg) as (server, port):
        q = dns.message.make_query("*.wild.example.test", "A")
        assert server.fast.answer(q.to_wire(), "127.0.0.1", 0) is not None  # an existing name: pre-rendered
        for send in (udp, tcp):
            r = await send(port, q)
            assert texts(r.answer) == {"*.wild.example.test. 300 IN A 192.0.2.80"}
        # an asterisk label that is not the wildcard's own is an ordinary name: synthesized from *.wild
        r = await udp(port, dns.message.make_query("*.x.wild.example.test", "A"))
        assert texts(r.answer) == {"*.x.wild.example.test. 300 IN A 192.0.2.80"}


async def test_wildcard_owner_echoes_the_query_case(cfg) -> None:
    async with serving(cfg) as (_, port):
        for send in (udp, tcp):
            r = await send(port, dns.message.make_query("FoO.WiLd.example.TEST", "A"))
            assert r.question[0].name.to_text() == "FoO.WiLd.example.TEST."
            assert r.answer[0].name.to_text() == "FoO.WiLd.example.TEST."


async def test_a_steered_wildcard_picks_for_every_name_below_it(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["services"].append({"name": "*.cdn.example.test.", "ttl": 20, "targets": "regions",
                             "answers": {"us-east-1": {"A": ["192.0.2.41"]}, "eu-west-1": {"A": ["192.0.2.43"]}}})
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    table = table_with(cfg, 1, {"*.cdn.example.test.": {g.id: {"eu-west-1": 1000} for g in cfg.geos}})
    async with serving(cfg, table) as (_, port):
        for send in (udp, tcp):
            r = await send(port, dns.message.make_query("Img.CDN.example.test", "A"))
            assert r.flags & dns.flags.AA
            assert texts(r.answer) == {"Img.CDN.example.test. 20 IN A 192.0.2.43"}
            r = await send(port, dns.message.make_query("img.cdn.example.test", "AAAA"))
            assert r.rcode() == dns.rcode.NOERROR and not r.answer and soa_only(r)


# --- delegations ----------------------------------------------------------------------------------


async def test_referral_at_the_cut(cfg) -> None:
    async with serving(cfg) as (server, port):
        for qtype in ("A", "NS", "AAAA", "TXT", "ANY"):
            for send in (udp, tcp):
                r = await send(port, dns.message.make_query("child.example.test", qtype))
                assert r.rcode() == dns.rcode.NOERROR, qtype
                assert not r.flags & dns.flags.AA, qtype
                assert not r.answer
                assert texts(r.authority) == {"child.example.test. 300 IN NS ns1.child.example.test.",
                                              "child.example.test. 300 IN NS ns.example.net."}
                # in-bailiwick glue only: ns.example.net is the resolver's to look up
                assert texts(r.additional) == {"ns1.child.example.test. 300 IN A 192.0.2.99"}
        # pre-rendered with AA clear: the fast path answers it
        wire = dns.message.make_query("child.example.test", "A").to_wire()
        fast = server.fast.answer(wire, "127.0.0.1", 0)
        assert fast is not None and not dns.message.from_wire(fast).flags & dns.flags.AA


async def test_referral_below_the_cut_and_glue_is_not_answered(cfg) -> None:
    async with serving(cfg) as (_, port):
        # the glue's own name (exists in the file, but is the child's data) and names the file does not list
        for name in ("ns1.child.example.test", "www.child.example.test", "a.b.child.example.test"):
            for send in (udp, tcp):
                r = await send(port, dns.message.make_query(name, "A"))
                assert r.rcode() == dns.rcode.NOERROR and not r.flags & dns.flags.AA, name
                assert not r.answer
                assert names(r.authority) == {"child.example.test."}
                assert r.authority[0].rdtype == dns.rdatatype.NS
                assert texts(r.additional) == {"ns1.child.example.test. 300 IN A 192.0.2.99"}


async def test_ds_at_the_cut_is_answered_by_the_parent(cfg) -> None:
    async with serving(cfg) as (_, port):
        for send in (udp, tcp):
            r = await send(port, dns.message.make_query("sec.example.test", "DS"))
            assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
            assert texts(r.answer) == {f"sec.example.test. 300 IN DS {DS_RDATA}"}
            assert not r.authority
            r = await send(port, dns.message.make_query("child.example.test", "DS"))
            assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
            assert not r.answer and soa_only(r)
            # DS below the cut is the child's business: a referral
            r = await send(port, dns.message.make_query("x.sec.example.test", "DS"))
            assert not r.flags & dns.flags.AA and names(r.authority) == {"sec.example.test."}
            assert names(r.additional) == {"ns1.sec.example.test."} and len(r.additional) == 2  # A and AAAA


async def test_a_child_zone_we_also_serve_answers_itself(tmp_path: Path) -> None:
    cfg = load(tmp_path, extra_zones=[{"origin": "child.example.test.", "ns": ["ns1.child.example.test."]}])
    async with serving(cfg) as (_, port):
        r = await udp(port, dns.message.make_query("child.example.test", "SOA"))
        assert r.flags & dns.flags.AA and r.answer[0].name.to_text() == "child.example.test."
        # the parent's glue is not the child's data: the child zone has no ns1 (synthesized SOA + NS only)
        r = await udp(port, dns.message.make_query("ns1.child.example.test", "A"))
        assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
        assert r.authority[0].name.to_text() == "child.example.test."
        # DS at the child's apex comes from the parent's side of the cut
        r = await udp(port, dns.message.make_query("child.example.test", "DS"))
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA and soa_only(r)


async def test_referral_truncates_when_its_glue_does_not_fit(cfg) -> None:
    async with serving(cfg) as (_, port):
        for q in (dns.message.make_query("www.big.example.test", "A"),
                  dns.message.make_query("www.big.example.test", "A", use_edns=0, payload=1232)):
            r = await udp(port, q)
            assert r.flags & dns.flags.TC and not r.flags & dns.flags.AA
        r = await tcp(port, dns.message.make_query("www.big.example.test", "A"))
        assert not r.flags & dns.flags.TC and not r.flags & dns.flags.AA
        assert len(r.authority) == 1 and len(r.authority[0]) == BIG_NS
        assert sum(len(rr) for rr in r.additional) == BIG_NS * 8


async def test_zone_transfers_stay_refused(cfg) -> None:
    async with serving(cfg) as (_, port):
        for qtype in ("AXFR", "IXFR"):
            r = await tcp(port, dns.message.make_query("example.test", qtype))
            assert r.rcode() == dns.rcode.REFUSED


# --- additional section ---------------------------------------------------------------------------


async def test_apex_ns_mx_and_srv_carry_target_addresses(cfg) -> None:
    async with serving(cfg) as (_, port):
        for send in (udp, tcp):
            r = await send(port, dns.message.make_query("example.test", "NS"))
            assert r.flags & dns.flags.AA
            assert texts(r.additional) == {"ns1.example.test. 300 IN A 192.0.2.53",
                                           "ns1.example.test. 300 IN AAAA 2001:db8::53",
                                           "ns2.example.test. 300 IN A 192.0.2.54"}
            r = await send(port, dns.message.make_query("example.test", "MX"))
            assert texts(r.additional) == {"mail.example.test. 300 IN A 192.0.2.25"}
            r = await send(port, dns.message.make_query("_sip._tcp.example.test", "SRV"))
            assert texts(r.additional) == {"sip.example.test. 300 IN A 192.0.2.60"}
            # steered (api), out of zone (example.net) and below a cut (ns1.child): no addresses
            r = await send(port, dns.message.make_query("mx.example.test", "MX"))
            assert len(r.answer[0]) == 5
            assert texts(r.additional) == {"mail.example.test. 300 IN A 192.0.2.25",
                                           "mx2.example.test. 300 IN AAAA 2001:db8::25"}


async def test_optional_additional_is_dropped_not_truncated(cfg) -> None:
    async with serving(cfg) as (_, port):
        r = await udp(port, dns.message.make_query("mx-many.example.test", "MX"))
        assert not r.flags & dns.flags.TC and r.flags & dns.flags.AA
        assert len(r.answer[0]) == MANY_MX and not r.additional
        r = await tcp(port, dns.message.make_query("mx-many.example.test", "MX"))
        assert len(r.answer[0]) == MANY_MX and sum(len(rr) for rr in r.additional) == MANY_MX * 4


# --- RRSIG/NSEC at a CNAME owner ------------------------------------------------------------------


async def test_rrsig_and_nsec_at_a_cname_owner_are_nodata_at_the_owner(cfg) -> None:
    async with serving(cfg) as (_, port):
        for qtype in ("RRSIG", "NSEC"):
            for send in (udp, tcp):
                r = await send(port, dns.message.make_query("alias.example.test", qtype))
                assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
                assert not r.answer and soa_only(r), qtype
        r = await udp(port, dns.message.make_query("alias.example.test", "A"))  # other types still follow
        assert texts(r.answer) == {"alias.example.test. 300 IN CNAME mail.example.test.",
                                   "mail.example.test. 300 IN A 192.0.2.25"}


# --- config ---------------------------------------------------------------------------------------


def test_a_steered_name_below_a_delegation_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, extra_zone="api IN NS ns.elsewhere.example.net.")
    lines = [p for p in err.value.problems if "delegation" in p]
    assert lines == ["services[0].name: api.example.test. is at or below the delegation api.example.test. in zone "
                     "example.test.; the child zone's servers answer there, so it cannot be steered"]


def test_a_delegation_to_a_zone_we_also_serve_is_not_a_config_error(tmp_path: Path) -> None:
    cfg = load(tmp_path, extra_zone="api IN NS ns1.example.test.",
               extra_zones=[{"origin": "api.example.test.", "ns": ["ns1.example.test."]}])
    assert any(s.name == "api.example.test." for s in cfg.services)


# --- the fast path agrees with the slow path over the new zone content ----------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> DnsServer:
    cfg = load(Path(tmp_path_factory.mktemp("zonedata")), extra_zone=EXTRA)
    return DnsServer(cfg, table_with(cfg, 1, {}))


def _zone_names() -> list[str]:
    return ["example.test", "wild.example.test", "*.wild.example.test", "child.example.test",
            "ns1.child.example.test", "sec.example.test", "ns1.sec.example.test", "big.example.test",
            "ns3.big.example.test", "ent.example.test", "b.ent.example.test", "a.b.ent.example.test",
            "*.ent.example.test", "*.cn.example.test", "*.cs.example.test", "mx.example.test",
            "mx-many.example.test", "alias.example.test", "api.example.test", "www.example.test",
            "_sip._tcp.example.test", "mail.example.test", "video.example.test", "other.test"]


@st.composite
def query_names(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(_zone_names()))
    labels = draw(st.lists(st.sampled_from(["x", "*", "ns1", "b", "wild", "child", "zz-9"]), max_size=2))
    name = ".".join([*labels, name])
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))


@settings(max_examples=400, deadline=None)
@given(name=query_names(),
       qtype=st.sampled_from(["A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "ANY", "SRV", "DS", "RRSIG",
                              "NSEC", "CAA"]),
       edns=st.sampled_from([None, 0]), payload=st.sampled_from([512, 1232, 4096]), rd=st.booleans(),
       host=st.sampled_from(["127.0.0.1", "127.3.0.9"]), tcp=st.sampled_from([0, 1]))
def test_fast_path_equals_slow_path_over_zone_data(server: DnsServer, name: str, qtype: str, edns: int | None,
                                                   payload: int, rd: bool, host: str, tcp: int) -> None:
    q = dns.message.make_query(name, qtype, use_edns=edns, payload=payload)
    q.flags = (q.flags & ~dns.flags.RD) | (dns.flags.RD if rd else 0)
    wire = q.to_wire()
    fast = server.fast.answer(wire, host, tcp)
    slow = dns.message.from_wire(server.slow.answer(server.snapshot, wire, host, tcp))
    if fast is None:
        return
    qname = dns.name.from_text(name).canonicalize()
    catalog = server.snapshot.catalog
    # only names that exist are pre-rendered: a wildcard-synthesized name never takes the fast path
    assert qname in catalog.existing
    a = dns.message.from_wire(fast)
    assert (a.id, a.flags, a.rcode(), a.edns, a.ednsflags, a.payload) == (
        slow.id, slow.flags, slow.rcode(), slow.edns, slow.ednsflags, slow.payload)
    assert a.question == slow.question and a.question[0].name.to_text() == name + "."
    for sa, sb in ((a.answer, slow.answer), (a.authority, slow.authority), (a.additional, slow.additional)):
        assert sa == sb  # RRsets compare their records as sets: the slow path shuffles them
        assert [rr.name.to_text() for rr in sa] == [rr.name.to_text() for rr in sb]  # owner case too
