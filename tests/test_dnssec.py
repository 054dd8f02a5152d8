"""DNSSEC (docs/dnssec.md): every kind of answer a signed zone gives, validated with dns.dnssec.validate
against the zone's DNSKEY, itself trusted through the DS the operator gives the registrar.

Real UDP and TCP queries against an in-process server, and the shipped ``steering dns`` and ``steerctl
dnssec`` as subprocesses; a Hypothesis property over names and types that every DO=1 answer validates.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.asyncquery
import dns.dnssec
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver import dnssec
from dnsserver.dnssec import NXNAME, write_key
from dnsserver.server import DnsServer
from dnsserver.zones import ZoneError
from steering.config import load_config
from tests.support.dns_server import DnsProcess, serving, table_with
from tests.support.dnssec import ZONE, signed_config, validate
from tests.support.paths import ROOT, STEERCTL, STEERING

DS_RDATA = "12345 13 2 " + "ab" * 32
MANY = 25  # A records at many.example.test: fits 512 bytes unsigned, not with its RRSIG
EXTRA = "\n".join([
    "sec IN NS ns1.sec.example.test.",
    f"sec IN DS {DS_RDATA}",
    "ns1.sec IN A 192.0.2.101",
    "*.cn IN CNAME api.example.test.",
    "tochild IN CNAME x.child.example.test.",  # a CNAME into a delegation: the referral's proof follows it
    "dangling IN CNAME gone.example.test.",  # a CNAME to a name that does not exist: compact denial
    "a.b.ent IN A 192.0.2.1",
    "*.ent IN A 192.0.2.2",
    *(f"many IN A 192.0.2.{i + 1}" for i in range(MANY)),
])
# ECS sources and the addresses their geo's first preference answers (table_with: first preference)
GEOS = [("198.51.100.0", 26, {"192.0.2.10", "192.0.2.11"}),  # na-east -> us-east-1
        ("198.51.100.128", 26, {"192.0.2.30"}),  # europe -> eu-west-1
        ("203.0.113.128", 25, {"192.0.2.20"}),  # asia-pacific -> us-west-2
        ("2001:db8:3::", 48, {"192.0.2.30"})]  # europe, IPv6


def query(name: str, qtype: str, ecs: tuple[str, int] | None = None, do: bool = True,
          payload: int = 1232) -> dns.message.Message:
    options: list[dns.edns.Option] | None = [dns.edns.ECSOption(*ecs)] if ecs else None
    return dns.message.make_query(name, qtype, use_edns=0, want_dnssec=do, payload=payload, options=options)


async def ask(port: int, q: dns.message.Message, tcp: bool) -> dns.message.Message:
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3, ignore_trailing=False)


def trusted_dnskey(reply: dns.message.Message, ds_lines: list[str]) -> dns.rrset.RRset:
    """The DNSKEY RRset of a DNSKEY reply, once its self-signature validates and a key matches a DS line
    (``example.test. IN DS ...``, as ``steerctl dnssec`` prints them): the chain from the parent."""
    dnskey = reply.find_rrset(reply.answer, ZONE, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    assert validate(reply, dnskey, ("answer",)) == 1
    anchors = {dns.rrset.from_text(ZONE, 3600, "IN", "DS", line.split(" DS ", 1)[1])[0] for line in ds_lines}
    assert any(dns.dnssec.make_ds(ZONE, k, "SHA256") in anchors for k in dnskey), "no DNSKEY matches the DS"
    return dnskey


def nsec_of(reply: dns.message.Message) -> dns.rrset.RRset:
    return next(r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC)


def bitmap(nsec: dns.rrset.RRset) -> set[int]:
    return {t for window, bits in nsec[0].windows for i, byte in enumerate(bits) for b in range(8)
            if byte & (0x80 >> b) for t in [window * 256 + i * 8 + b]}


def check_kinds(reply_of: dict[str, dns.message.Message], dnskey: dns.rrset.RRset) -> None:
    """What each kind of answer must carry, beside validating."""
    for r in reply_of.values():
        assert r.ednsflags & dns.flags.DO
        validate(r, dnskey)
    r = reply_of["static"]
    assert [x.rdtype for x in r.answer] == [dns.rdatatype.A, dns.rdatatype.RRSIG]
    # NXDOMAIN as compact denial (RFC 9824): NOERROR, an NSEC at the name with NXNAME, next \000.name
    r = reply_of["nxdomain"]
    nsec = nsec_of(r)
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert nsec.name == dns.name.from_text("nope.example.test.")
    assert nsec[0].next == dns.name.from_text("\\000.nope.example.test.")
    assert bitmap(nsec) == {dns.rdatatype.RRSIG, dns.rdatatype.NSEC, NXNAME}
    # NODATA: the name's own types, not the one asked
    nsec = nsec_of(reply_of["nodata"])
    assert bitmap(nsec) == {dns.rdatatype.A, dns.rdatatype.RRSIG, dns.rdatatype.NSEC}
    # wildcard: signed as *.wild (labels 3), and an NSEC covering the query name
    r = reply_of["wildcard"]
    sig = next(x for x in r.answer if x.rdtype == dns.rdatatype.RRSIG)
    assert sig.name == dns.name.from_text("x.wild.example.test.") and sig[0].labels == 3
    nsec = nsec_of(r)
    qname = dns.name.from_text("x.wild.example.test.")
    assert nsec.name < qname < nsec[0].next
    # a next name below the query name would make it an empty non-terminal, that exists (BIND refuses that)
    assert not nsec[0].next.is_subdomain(qname)
    # referrals: AA clear; the DS and its RRSIG, or an NSEC at the cut with NS and no DS
    r = reply_of["referral_ds"]
    assert not r.flags & dns.flags.AA
    assert [x.rdtype for x in r.authority] == [dns.rdatatype.NS, dns.rdatatype.DS, dns.rdatatype.RRSIG]
    r = reply_of["referral"]
    assert not r.flags & dns.flags.AA
    assert bitmap(nsec_of(r)) == {dns.rdatatype.NS, dns.rdatatype.RRSIG, dns.rdatatype.NSEC}
    # a CNAME to a steered name: both RRsets signed
    r = reply_of["cname"]
    assert [x.rdtype for x in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.RRSIG, dns.rdatatype.A,
                                            dns.rdatatype.RRSIG]
    r = reply_of["cname_referral"]
    assert [x.rdtype for x in r.authority] == [dns.rdatatype.NS, dns.rdatatype.NSEC, dns.rdatatype.RRSIG]
    r = reply_of["cname_nxdomain"]
    assert r.rcode() == dns.rcode.NOERROR and nsec_of(r).name == dns.name.from_text("gone.example.test.")
    assert NXNAME in bitmap(nsec_of(r))
    for kind in ("cds", "cdnskey"):
        assert len(reply_of[kind].answer) == 2


KINDS = {"static": ("mail.example.test", "A"), "nxdomain": ("nope.example.test", "A"),
         "nodata": ("mail.example.test", "AAAA"), "wildcard": ("x.wild.example.test", "A"),
         "wildcard_nodata": ("x.wild.example.test", "AAAA"), "below_ent": ("z.b.ent.example.test", "A"),
         "referral": ("child.example.test", "A"), "referral_ds": ("sec.example.test", "A"),
         "ds_absent": ("child.example.test", "DS"), "ds": ("sec.example.test", "DS"),
         "cname": ("www.example.test", "A"), "wild_cname": ("q.cn.example.test", "A"),
         "cname_referral": ("tochild.example.test", "A"), "cname_nxdomain": ("dangling.example.test", "A"),
         "apex_soa": ("example.test", "SOA"), "apex_mx": ("example.test", "MX"),
         "cds": ("example.test", "CDS"), "cdnskey": ("example.test", "CDNSKEY"),
         "steered_aaaa": ("api.example.test", "AAAA"), "steered_nodata": ("api.example.test", "TXT")}


@pytest.mark.parametrize("algorithm,split", [("ECDSAP256SHA256", False), ("ED25519", True)])
@pytest.mark.parametrize("tcp", [False, True])
async def test_every_kind_of_answer_validates(tmp_path: Path, algorithm: str, split: bool, tcp: bool) -> None:
    path, _ = signed_config(tmp_path, algorithm, split, extra_zone=EXTRA)
    cfg = load_config(path)
    async with serving(cfg, table_with(cfg, 1, {})) as (server, port):
        assert server.zone_keys[0].ds()  # the trust anchor: what `steerctl dnssec ds` prints
        ds_lines = [f"example.test. IN DS {d.to_text()}" for d in server.zone_keys[0].ds()]
        dnskey = trusted_dnskey(await ask(port, query("example.test", "DNSKEY"), tcp), ds_lines)
        replies = {kind: await ask(port, query(*q), tcp) for kind, q in KINDS.items()}
        check_kinds(replies, dnskey)
        # steered answers, per geo (ECS), and for the resolver's own address: each signed
        for address, prefix, want in GEOS:
            r = await ask(port, query("api.example.test", "A", (address, prefix)), tcp)
            validate(r, dnskey)
            assert {rd.address for rd in r.answer[0]} == want
        r = await ask(port, query("api.example.test", "A"), tcp)
        assert validate(r, dnskey) == 1
        # DO=0 is answered as before: no RRSIG, NXDOMAIN kept
        plain = await ask(port, query("nope.example.test", "A", do=False), tcp)
        assert plain.rcode() == dns.rcode.NXDOMAIN and len(plain.authority) == 1
        plain = await ask(port, query("api.example.test", "A", ("198.51.100.0", 26), do=False), tcp)
        assert [x.rdtype for x in plain.answer] == [dns.rdatatype.A]


async def test_a_signed_answer_too_big_for_udp_is_truncated(tmp_path: Path) -> None:
    path, _ = signed_config(tmp_path, extra_zone=EXTRA)
    cfg = load_config(path)
    async with serving(cfg) as (_server, port):
        unsigned = await ask(port, query("many.example.test", "A", do=False, payload=512), False)
        assert not unsigned.flags & dns.flags.TC and len(unsigned.answer[0]) == MANY
        signed = await ask(port, query("many.example.test", "A", payload=512), False)
        assert signed.flags & dns.flags.TC and not signed.answer
        full = await ask(port, query("many.example.test", "A", payload=512), True)
        assert len(full.answer) == 2 and not full.flags & dns.flags.TC


def _server(tmp_path: Path, clock: list[float]) -> DnsServer:
    path, _ = signed_config(tmp_path, extra_zone=EXTRA)
    cfg = load_config(path)
    return DnsServer(cfg, table_with(cfg, 1, {}), clock=lambda: clock[0])


def _answer(server: DnsServer, name: str, qtype: str) -> dns.message.Message:
    wire = query(name, qtype).to_wire()
    reply = server.fast.answer(wire, "127.0.0.1", 1) or server.slow.answer(server.snapshot, wire, "127.0.0.1", 1)
    assert reply is not None
    return dns.message.from_wire(reply)


async def test_signatures_are_renewed_before_they_expire_without_a_restart(tmp_path: Path) -> None:
    start = 2977 * 7 * 86400.0  # on the epochs' grid (half the 14-day validity)
    clock = [start]
    server = _server(tmp_path, clock)
    dnskey = server.zones[0].nodes[ZONE][dns.rdatatype.DNSKEY]
    first = _answer(server, "api.example.test", "A")
    sig = first.answer[1][0]
    assert sig.inception < start and sig.expiration >= start + 14 * 86400  # skew back, validity (+ jitter)
    validate(first, dnskey, now=start)
    clock[0] = start + 6 * 86400
    assert not await server.resign_if_due()  # more than half the window left
    assert server.stats.dnssec_resign_at == start + 7 * 86400  # metrics: the next epoch, the signatures made
    made = server.stats.dnssec_signatures[0]
    assert made > 0
    clock[0] = start + 8 * 86400
    assert await server.resign_if_due()
    assert server.stats.dnssec_resign_at == start + 14 * 86400 and server.stats.dnssec_signatures[0] > made
    renewed = _answer(server, "api.example.test", "A")
    assert renewed.answer[1][0].inception > sig.inception
    later = start + 16 * 86400  # the first epoch's signatures have expired by now; the renewed ones have not
    with pytest.raises(dns.exception.ValidationFailure):
        validate(first, dnskey, now=later)
    validate(renewed, dnskey, now=later)
    validate(_answer(server, "nope.example.test", "A"), dnskey, now=later)
    # a clock that cannot be right: no new epoch (logged, counted), the signatures in use stay
    assert server.signing is not None
    server.signing.resign_at = 0  # due by any clock
    clock[0] = 1000.0
    errors = server.stats.errors[0]
    assert not await server.resign_if_due()
    assert server.stats.errors[0] == errors + 1
    assert _answer(server, "api.example.test", "A").answer[1][0].inception == renewed.answer[1][0].inception


async def test_a_scheduled_zsk_roll_pre_publishes_then_switches(tmp_path: Path) -> None:
    """KSK + ZSK A, and ZSK B with a timeline: B published a day ahead, signing from day 2 when A retires,
    A removed on day 4. The server follows it with an injected clock, no restart."""
    day = 86400
    start = 2977 * 7 * 86400.0
    path, (ksk, zsk_a) = signed_config(tmp_path, split=True, extra_zone=EXTRA)
    zsk_b = write_key(tmp_path / "keys", ZONE, "ECDSAP256SHA256", "zsk")[0]
    data = yaml.safe_load(path.read_text())
    data["zones"][0]["dnssec"]["keys"] = [
        {"file": str(ksk), "role": "ksk"},
        {"file": str(zsk_a), "role": "zsk", "inactive": int(start + 2 * day), "delete": int(start + 4 * day)},
        {"file": str(zsk_b), "role": "zsk", "publish": int(start + day), "activate": int(start + 2 * day)}]
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    clock = [start]
    server = DnsServer(cfg, table_with(cfg, 1, {}), clock=lambda: clock[0])
    tags = {k.role + ("" if k.publish is None else "-new"): k.tag for k in server.zone_keys[0].keys}
    tag_a = next(k.tag for k in server.zone_keys[0].keys if k.role == "zsk" and k.publish is None)
    tag_b = next(k.tag for k in server.zone_keys[0].keys if k.role == "zsk" and k.publish is not None)

    def state() -> tuple[set[int], set[int]]:
        """(DNSKEY tags published, tags signing api.example.test A), every RRset validated at the clock."""
        keys = _answer(server, "example.test", "DNSKEY")
        dnskey = keys.answer[0]
        validate(keys, dnskey, ("answer",), now=clock[0])
        api = _answer(server, "api.example.test", "A")
        validate(api, dnskey, now=clock[0])
        return {dns.dnssec.key_id(k) for k in dnskey}, {sig.key_tag for sig in api.answer[1]}

    assert state() == ({tags["ksk"], tag_a}, {tag_a})
    for day_n, published, signing in [(1, {tags["ksk"], tag_a, tag_b}, {tag_a}),
                                      (2, {tags["ksk"], tag_a, tag_b}, {tag_b}),
                                      (4, {tags["ksk"], tag_b}, {tag_b})]:
        clock[0] = start + day_n * day - 1
        assert not await server.resign_if_due()
        clock[0] = start + day_n * day
        assert await server.resign_if_due()
        assert state() == (published, signing), day_n


def test_replicas_started_apart_sign_alike(tmp_path: Path) -> None:
    """Epochs sit on a grid: servers with the same keys started hours apart serve the same signed bytes."""
    path, _ = signed_config(tmp_path, extra_zone=EXTRA)
    cfg = load_config(path)
    start = 2977 * 7 * 86400.0
    one = DnsServer(cfg, table_with(cfg, 1, {}), clock=lambda: start + 60)
    two = DnsServer(cfg, table_with(cfg, 1, {}), clock=lambda: start + 86400)
    wire = query("mail.example.test", "A").to_wire()
    assert one.fast.answer(wire, "127.0.0.1", 0) == two.fast.answer(wire, "127.0.0.1", 0) is not None


def test_a_clock_far_off_refuses_to_start_signing(tmp_path: Path) -> None:
    with pytest.raises(ZoneError, match="refusing to sign"):
        _server(tmp_path, [1000.0])


def test_online_denial_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = _server(tmp_path, [1_800_000_000.0])
    monkeypatch.setattr(dnssec, "_CACHE_MAX", 50)
    assert server.signing is not None
    signer = server.signing.signers[ZONE]
    for i in range(200):
        assert _answer(server, f"n{i}.example.test", "A").rcode() == dns.rcode.NOERROR
        assert len(signer.cache) <= 50


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory: pytest.TempPathFactory) -> DnsServer:
    path, _ = signed_config(Path(tmp_path_factory.mktemp("signed")), extra_zone=EXTRA)
    cfg = load_config(path)
    return DnsServer(cfg, table_with(cfg, 1, {}))


LABELS = ["x", "A", "wild", "*", "b", "ent", "cn", "child", "sec", "ns1", "api", "www", "mail", "many", "tochild",
          "dangling"]
QTYPES = ["A", "AAAA", "TXT", "MX", "NS", "SOA", "DS", "DNSKEY", "CNAME", "ANY", "SRV", "CDS", "NSEC", "RRSIG"]


@settings(max_examples=150, deadline=None)
@given(labels=st.lists(st.sampled_from(LABELS), max_size=3), qtype=st.sampled_from(QTYPES),
       ecs=st.sampled_from([None, *[(a, p) for a, p, _ in GEOS]]))
def test_every_do_answer_validates(signed_server: DnsServer, labels: list[str], qtype: str,
                                   ecs: tuple[str, int] | None) -> None:
    """Any name in or below the zone, any type: the DO=1 answer's every RRset validates, and a negative
    answer carries an NSEC whose bitmap denies the type (for the name, or covering it)."""
    if labels[:1] == ["*"] and len(labels) > 1:
        # a literal "*" label expanded from a shorter wildcard: RFC 4035 §5.3.2 valid (labels does not count the
        # leading "*"), but dns.dnssec.validate refuses any wild owner whose labels is not one less
        labels = labels[1:]
    name = ".".join([*labels, "example.test"])
    dnskey = signed_server.zones[0].nodes[ZONE][dns.rdatatype.DNSKEY]
    wire = query(name, qtype, ecs).to_wire()
    fast = signed_server.fast.answer(wire, "127.0.0.1", 1)
    got = fast or signed_server.slow.answer(signed_server.snapshot, wire, "127.0.0.1", 1)
    assert got is not None
    reply = dns.message.from_wire(got)
    assert reply.rcode() == dns.rcode.NOERROR  # compact denial: never NXDOMAIN to DO=1
    validate(reply, dnskey)
    if reply.flags & dns.flags.AA and not reply.answer and qtype not in ("NSEC", "RRSIG"):
        nsec = nsec_of(reply)
        assert dns.rdatatype.from_text(qtype) not in bitmap(nsec) or qtype == "ANY"


# ---- the shipped commands


def steerctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STEERCTL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_shipped_server_signs_over_udp_and_tcp(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    made = steerctl("dnssec", "keygen", "example.test", "--split", "--out", str(keydir))
    assert made.returncode == 0, made.stderr
    printed_ds = [line for line in made.stdout.splitlines() if " DS " in line]
    assert len(printed_ds) == 1  # the KSK's only
    files = sorted(keydir.glob("*.pem"))
    assert {p.name.split(".")[-2] for p in files} == {"ksk", "zsk"}
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    path, _ = signed_config(tmp_path / "cfg", extra_zone=EXTRA)
    data = yaml.safe_load(path.read_text())
    data["zones"][0]["dnssec"] = {"keys": [{"file": str(p), "role": p.name.split(".")[-2]} for p in files]}
    path.write_text(yaml.safe_dump(data))
    again = steerctl("dnssec", "ds", "example.test", "--config", str(path))
    assert again.returncode == 0 and again.stdout.splitlines() == printed_ds, again.stderr
    with DnsProcess(path, "--workers", "1", "--no-etcd", "--listen", "127.0.0.1:0") as d:
        port = d.ready()
        assert d.metric("steering_dns_dnssec_signatures_total") > 0
        assert d.metric("steering_dns_dnssec_next_resign_timestamp_seconds") > 0
        for tcp in (False, True):
            send = dns.query.tcp if tcp else dns.query.udp
            dnskey = trusted_dnskey(send(query("example.test", "DNSKEY"), "127.0.0.1", port=port, timeout=5),
                                    printed_ds)
            replies = {kind: send(query(*q), "127.0.0.1", port=port, timeout=5) for kind, q in KINDS.items()}
            check_kinds(replies, dnskey)
            for address, prefix, _ in GEOS:
                validate(send(query("api.example.test", "A", (address, prefix)), "127.0.0.1", port=port,
                              timeout=5), dnskey)
        status = steerctl("dnssec", "status", "--config", str(path), "--server", f"127.0.0.1:{port}")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "DNSKEY matches the DS" in status.stdout and printed_ds[0] in status.stdout
    assert "PRIVATE" not in d.log() and "BEGIN" not in d.log()  # key material never logged


@pytest.mark.parametrize("problem", ["missing", "not_pem", "wrong_algorithm", "no_keys", "zsk_only"])
def test_bad_dnssec_config_is_one_line_naming_the_field(tmp_path: Path, problem: str) -> None:
    path, keys = signed_config(tmp_path)
    data = yaml.safe_load(path.read_text())
    section = data["zones"][0]["dnssec"]
    if problem == "missing":
        section["keys"][0]["file"] = str(tmp_path / "absent.pem")
        want = "zones[0].dnssec.keys[0].file: cannot read"
    elif problem == "not_pem":
        keys[0].write_text("not a key\n")
        want = "zones[0].dnssec.keys[0].file: "
    elif problem == "wrong_algorithm":
        ed_key = write_key(tmp_path / "ed", ZONE, "ED25519", "csk")[0]
        section["keys"][0]["file"] = str(ed_key)
        want = "zones[0].dnssec.keys[0].file: "
    elif problem == "no_keys":
        section["keys"] = []
        want = "zones[0].dnssec.keys: DNSSEC is enabled but no keys are listed"
    else:
        section["keys"][0]["role"] = "zsk"
        want = "zones[0].dnssec.keys: needs a combined key"
    path.write_text(yaml.safe_dump(data))
    check = subprocess.run([STEERING, "config", "check", "--config", str(path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 2 and want in check.stderr, check.stderr
    lines = [line for line in check.stderr.splitlines() if "dnssec" in line]
    assert len(lines) == 1
    assert "BEGIN" not in check.stderr
    if problem in ("missing", "wrong_algorithm"):
        with DnsProcess(path, "--workers", "1", "--no-etcd", "--listen", "127.0.0.1:0", metrics=False) as d:
            assert d.wait() == 2
        assert want in d.log()
