"""Steered names whose targets mix addresses and CNAMEs, some of the CNAMEs to another steered name.

Such an answer depends on two picks (the first name's, then the second's for the same client), which a
pre-rendered entry (one pick) cannot hold: those names take the slow path, every other name stays rendered.
Real UDP and TCP queries against an in-process server; the table render directly; a Hypothesis property
over random mixes of targets chaining across steered names, whose replies (fast path where rendered, slow
path always) must equal a model of dnsserver/README.md's rules built here by hand; and the other readers of
the same configuration: the Route 53 plan and ``explain``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnsserver.answers import pick
from dnsserver.geo import GeoMap
from dnsserver.metrics import Stats
from dnsserver.render import build_snapshot
from dnsserver.server import DnsServer
from dnsserver.zones import load_zones
from steering.config import Config, load_config, parse_config
from steering.explain import Record, explain
from steering.route53.records import desired_records
from steering.table import GeoRoute, RoutingTable, ServiceRoute
from steering.topology import Topology
from tests.support.dns_server import EAST, serving, table_with, write_config

API = "api.example.test."
VIDEO = "video.example.test."
GEOS = ("na-east", "na-west", "europe", "south-america", "asia-pacific", "world")
VIDEO_ADDRESS = {"us-east-1": "192.0.2.12", "oc-lon-1": "192.0.2.130"}
ELSEWHERE = "edge.cdn.example.net."


def mixed_config(directory: Path, to_api: tuple[str, ...]) -> Config:
    """The example config with video's ``to_api`` targets CNAMEs to api (another steered name), eu-west-1 a
    CNAME out of our zones, us-east-1 and oc-lon-1 still addresses; ``v`` a zone CNAME to video."""
    path = write_config(directory, dns={"rrl": {"exempt": ["127.0.0.0/8", "::1/128"]}},
                        extra_zone="v IN CNAME video.example.test.")
    data = yaml.safe_load(path.read_text())
    (video,) = [s for s in data["services"] if s["name"] == VIDEO]
    for target in to_api:
        video["answers"][target] = {"CNAME": API}
    video["answers"]["eu-west-1"] = {"CNAME": ELSEWHERE}
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def mixed_table(cfg: Config, to_api: tuple[str, ...]) -> RoutingTable:
    """video split over its address target, the heaviest (the render's probe picks a split's first target,
    which is then not a CNAME), and the targets that CNAME to api; api all on us-east-1, so a reply through
    api carries EAST whatever video picked (api's own us-west-2 has weight 0)."""
    video = {"us-east-1": 600, **{t: 400 // len(to_api) for t in to_api}}
    return table_with(cfg, 1, {VIDEO: {g: video for g in GEOS}, API: {g: {"us-east-1": 1000} for g in GEOS}})


async def ask(port: int, name: str, subnet: str, use_tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.ECSOption(subnet, 24)])
    if use_tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)


def shape(r: dns.message.Message) -> tuple[Any, ...]:
    """(rcode, answer RRsets as (owner, type, sorted values)) of a reply."""
    return (r.rcode(), tuple((rr.name.to_text().lower(), dns.rdatatype.to_text(rr.rdtype),
                              tuple(sorted(rd.to_text().lower() for rd in rr))) for rr in r.answer))


THROUGH_API = ((VIDEO, "CNAME", (API,)), (API, "A", tuple(sorted(EAST))))

# oc-nyc-1: a target api has no answer for (the KeyError of the report); us-west-2: one it has, whose records
# were rendered under video's pick, ignoring api's table (a silently wrong answer); both at once.
CASES = [("oc-nyc-1",), ("us-west-2",), ("oc-nyc-1", "us-west-2")]


@pytest.mark.parametrize("to_api", CASES, ids=["+".join(c) for c in CASES])
async def test_mixed_targets_chaining_to_a_steered_name_over_udp_and_tcp(tmp_path: Path,
                                                                         to_api: tuple[str, ...]) -> None:
    cfg = mixed_config(tmp_path, to_api)
    async with serving(cfg, mixed_table(cfg, to_api)) as (server, port):
        video = server.snapshot.catalog.steered[dns.name.from_text(VIDEO)]
        world = video.splits[server.geomap.ids.index("world")]
        seen: Counter[str] = Counter()
        for i in range(120):
            subnet = f"10.{i // 100}.{i % 100}.0"  # no geo's prefix: the default geo, world
            picked = world.targets[pick(world, bytes((4, 24)) + ipaddress.IPv4Address(subnet).packed, video.seed)]
            seen[picked] += 1
            want = ((0, ((VIDEO, "A", (VIDEO_ADDRESS[picked],)),)) if picked in VIDEO_ADDRESS
                    else (0, THROUGH_API))
            for use_tcp in (False, True) if i % 10 == 0 else (False,):
                assert shape(await ask(port, "video.example.test", subnet, use_tcp)) == want, (subnet, picked)
            # through a zone CNAME first: three names, two of them picked
            v = await ask(port, "v.example.test", subnet)
            assert shape(v) == (0, (("v.example.test.", "CNAME", (VIDEO,)), *want[1]))
            assert shape(await ask(port, "api.example.test", subnet)) == (0, ((API, "A", tuple(sorted(EAST))),))
        assert set(seen) == {"us-east-1", *to_api}, seen  # both kinds of target were answered


def rendered(entries: Mapping[bytes, Any], name: str, qtype: str = "A") -> bool:
    """Whether the render made an entry for (name, type): the fast path answers it."""
    wire = dns.name.from_text(name).to_wire() or b""
    return wire + dns.rdatatype.from_text(qtype).to_bytes(2, "big") + b"\x00\x01" in entries


def test_the_render_leaves_two_pick_names_to_the_slow_path(tmp_path: Path) -> None:
    to_api = ("oc-nyc-1", "us-west-2")
    cfg = mixed_config(tmp_path, to_api)
    zones = load_zones(cfg)
    geomap = GeoMap(cfg.geos, cfg.default_geo.id)
    for table in (None, table_with(cfg, 1, {}), mixed_table(cfg, to_api)):
        entries = build_snapshot(cfg, zones, geomap, table, Stats()).entries
        # video and v (a CNAME to it) may reach api's pick after video's: not pre-rendered
        for name in ("video.example.test.", "v.example.test."):
            assert not rendered(entries, name, "A") and not rendered(entries, name, "AAAA")
        # a CNAME query is answered at video itself (one pick), and api depends on its own pick only
        assert rendered(entries, VIDEO, "CNAME") and rendered(entries, API) and rendered(entries, "www.example.test.")
    # a table that races only video's address and its CNAME out of our zones: one pick, rendered again
    one_pick = table_with(cfg, 2, {VIDEO: {g: {"us-east-1": 500, "eu-west-1": 500} for g in GEOS}})
    entries = build_snapshot(cfg, zones, geomap, one_pick, Stats()).entries
    assert rendered(entries, VIDEO) and rendered(entries, "v.example.test.", "AAAA")


def test_route53_and_explain_take_the_mix(tmp_path: Path) -> None:
    """Route 53 publishes address targets only (a CNAME target is noted, never followed) and ``explain``
    names the picked target's own records (a CNAME is shown, not resolved): neither follows the chain."""
    to_api = ("oc-nyc-1", "us-west-2")
    cfg = mixed_config(tmp_path, to_api)
    table = mixed_table(cfg, to_api)
    desired = desired_records(cfg, table, "Z123")
    video_sets = {(r.set_id, r.type) for r in desired.records.values()
                  if r.name.startswith(tuple(f"{g}.video" for g in GEOS)) and r.set_id}
    assert video_sets and {t for t, _ in video_sets} <= {"us-east-1", "oc-lon-1"}
    assert all(any(f"target {t} answers with a CNAME" in n for n in desired.notes)
               for t in (*to_api, "eu-west-1"))
    topology = Topology.from_config(cfg)
    targets: Counter[str] = Counter()
    for i in range(60):
        e = explain(topology, table, "video.example.test", "127.9.0.1", f"10.8.{i}.0/24")
        targets[e.target] += 1
        assert e.records == ((Record("CNAME", API),) if e.target in to_api
                             else (Record("A", VIDEO_ADDRESS[e.target]),))
    assert set(targets) == {"us-east-1", *to_api}


# ---- the property: random mixes, answers by hand from dnsserver/README.md's rules -----------------------

ZONE = """$TTL 300
@ IN SOA ns1 hostmaster 1 7200 900 1209600 60
@ IN NS ns1
ns1 IN A 192.0.2.53
static IN A 192.0.2.99
alias IN CNAME s0.example.test.
loop IN CNAME loop.example.test.
"""
# the zone's own names, as the model reads them: name -> (type, values)
STATIC: dict[str, tuple[str, tuple[str, ...]]] = {
    "static.example.test.": ("A", ("192.0.2.99",)), "alias.example.test.": ("CNAME", ("s0.example.test.",)),
    "loop.example.test.": ("CNAME", ("loop.example.test.",)), "ns1.example.test.": ("A", ("192.0.2.53",)),
}
REGIONS = ("r0", "r1", "r2")
SITES = ("p0", "p1")
GEO_IDS = ("g0", "g1")
STEERED = tuple(f"s{i}.example.test." for i in range(3))
# CNAME targets a steered target may answer with: steered names, a zone name, a zone CNAME back to s0, a
# loop, a name of the zone that does not exist, and one out of our zones
CNAME_TARGETS = (*STEERED, "static.example.test.", "alias.example.test.", "loop.example.test.",
                 "nothing.example.test.", "edge.cdn.example.net.")
QNAMES = (*STEERED, "alias.example.test.", "static.example.test.", "loop.example.test.", "nothing.example.test.")
QTYPES = ("A", "AAAA", "CNAME", "TXT", "ANY")


@dataclass(frozen=True)
class Mix:
    services: Mapping[str, Mapping[str, Mapping[str, Any]]]  # name -> target -> answer (the config's form)
    kinds: Mapping[str, str]  # name -> regions | sites
    weights: Mapping[str, Mapping[str, Mapping[str, int]]]  # name -> geo -> target -> weight (absent: not in table)


@st.composite
def answers(draw: st.DrawFn, service: int, target: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["A", "A+AAAA", "AAAA", "CNAME", "CNAME", "CNAME"]))
    if kind == "CNAME":
        return {"CNAME": draw(st.sampled_from(CNAME_TARGETS))}
    out: dict[str, Any] = {}
    if "A" in kind.split("+"):
        out["A"] = [f"198.51.{service}.{target + 1}"]
    if "AAAA" in kind:
        out["AAAA"] = [f"2001:db8:{service + 1}::{target + 1}"]
    return out


@st.composite
def mixes(draw: st.DrawFn) -> Mix:
    n = draw(st.integers(2, 3))
    services: dict[str, dict[str, dict[str, Any]]] = {}
    kinds: dict[str, str] = {}
    weights: dict[str, dict[str, dict[str, int]]] = {}
    for i in range(n):
        kind = draw(st.sampled_from(["regions", "sites"]))
        pool = REGIONS + (SITES if kind == "sites" else ())
        targets = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
        name = STEERED[i]
        services[name] = {t: draw(answers(i, j)) for j, t in enumerate(targets)}
        kinds[name] = kind
        if draw(st.integers(0, 4)):  # sometimes the table lacks the service: fail-open
            weights[name] = {g: dict(zip(targets, draw(st.lists(st.integers(0, 1000), min_size=len(targets),
                                                                max_size=len(targets))), strict=True))
                             for g in GEO_IDS}
    return Mix(services, kinds, weights)


def mix_config(zone_file: Path, mix: Mix) -> Config:
    data = {"regions": [{"id": r, "capacity": 1000} for r in REGIONS],
            "sites": [{"id": s, "region": REGIONS[i], "capacity": 100} for i, s in enumerate(SITES)],
            "geos": [{"id": "g0", "prefixes": ["10.0.0.0/16"], "default": True, "demand": 1,
                      "prefer": list(REGIONS), "prefer_sites": list(SITES)},
                     {"id": "g1", "prefixes": ["10.1.0.0/16"], "demand": 1,
                      "prefer": list(reversed(REGIONS)), "prefer_sites": list(reversed(SITES))}],
            "services": [{"name": name, "ttl": 30, "targets": mix.kinds[name], "answers": answers}
                         for name, answers in mix.services.items()],
            "zones": [{"origin": "example.test.", "file": str(zone_file)}],
            "dns": {"listen": ["127.0.0.1:0"]}}
    return parse_config(data, "<mix>")


def mix_table(cfg: Config, mix: Mix) -> RoutingTable:
    services = {name: ServiceRoute(targets=mix.kinds[name], geos={
        g: GeoRoute(weights=w, reasons={t: "test" for t in w}) for g, w in geos.items()})
        for name, geos in mix.weights.items()}
    return RoutingTable(version=1, parent_version=0, generated_at=1_000_000.0, services=services, regions={},
                        topology=cfg.fingerprint())


Answer = tuple[tuple[str, str, tuple[str, ...]], ...]


Reply = tuple[int, Answer, str, int]  # rcode, answer, authority types, ECS scope


def expected(server: DnsServer, mix: Mix, qname: str, qtype: str, subnet: bytes, geo: int) -> Reply:
    """The reply by hand: a steered name answers with its picked target's records (the pick for this client
    in this name's own split: the pick itself is tests/test_dns_steering.py's), a CNAME of ours is followed
    to its target wherever that is in our zone (at most 8 followed, the ninth CNAME still answered), a CNAME
    out of our zones ends the answer, the type the query asks for ends it, a name without that type is NODATA
    (the SOA), a name that does not exist NXDOMAIN; a CNAME query answers the CNAME itself, ANY one RRset
    (the lowest type) of the name asked for. The ECS scope is the client's /24 once any name was picked."""
    out: list[tuple[str, str, tuple[str, ...]]] = []
    name = qname
    scope = 0
    for _ in range(9):
        if not name.endswith(".example.test."):
            return 0, tuple(out), "", scope
        if name in mix.services:
            scope = 24
            steered = server.snapshot.catalog.steered[dns.name.from_text(name)]
            split = steered.splits[geo]
            target = split.targets[pick(split, subnet, steered.seed)]
            ans = mix.services[name][target]
            records = {t: tuple(sorted(ans[t])) for t in ("A", "AAAA") if ans.get(t)}
            if "CNAME" in ans:
                records["CNAME"] = (ans["CNAME"],)
        elif name in STATIC:
            rtype, values = STATIC[name]
            records = {rtype: values}
        else:
            return dns.rcode.NXDOMAIN, tuple(out), "SOA", scope
        if qtype == "ANY":
            qtype = min(records, key=dns.rdatatype.from_text)
        if qtype in records:
            return 0, (*out, (name, qtype, records[qtype])), "", scope
        if "CNAME" not in records:
            return 0, tuple(out), "SOA", scope
        if (name, "CNAME", records["CNAME"]) not in out:  # a loop's repeats: one RRset once parsed
            out.append((name, "CNAME", records["CNAME"]))
        name = records["CNAME"][0]
    return 0, tuple(out), "", scope


@pytest.fixture(scope="module")
def zone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(tmp_path_factory.mktemp("mix")) / "example.test.zone"
    path.write_text(ZONE)
    return path


@functools.lru_cache(maxsize=4096)
def reply(wire: bytes) -> Reply:
    """The parts compared, parsed once per distinct wire: the two paths often answer byte for byte alike, and
    parsing was most of this module's time."""
    r = dns.message.from_wire(wire)
    auth = "".join(dns.rdatatype.to_text(rr.rdtype) for rr in r.authority)
    (ecs,) = [o for o in r.options if isinstance(o, dns.edns.ECSOption)]
    return r.rcode(), tuple((rr.name.to_text().lower(), dns.rdatatype.to_text(rr.rdtype),
                             tuple(sorted(rd.to_text().lower() for rd in rr))) for rr in r.answer), auth, ecs.scopelen


@functools.lru_cache(maxsize=4096)
def query_wire(qname: str, qtype: str, subnet: str) -> bytes:
    q = dns.message.make_query(qname, qtype, use_edns=0, options=[dns.edns.ECSOption(subnet, 24)])
    q.flags = 0
    q.id = 4242
    return q.to_wire()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mix=mixes(), clients=st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(0, 255)), min_size=1,
                                     max_size=4))
def test_random_mixes_of_targets_chaining_across_steered_names(zone_file: Path, mix: Mix,
                                                               clients: list[tuple[int, int]]) -> None:
    cfg = mix_config(zone_file, mix)
    server = DnsServer(cfg, mix_table(cfg, mix))  # renders the table: must not raise
    rendered = 0
    for geo, third in clients:
        subnet = f"10.{geo}.{third}.0"
        key = bytes((4, 24)) + ipaddress.IPv4Address(subnet).packed
        for qname in QNAMES:
            for qtype in QTYPES:
                wire = query_wire(qname, qtype, subnet)
                want = expected(server, mix, qname, qtype, key, geo)
                slow = server.slow.answer(server.snapshot, wire, "127.0.0.1", 0)
                assert slow is not None and reply(slow) == want, (qname, qtype, subnet)
                fast = server.fast.answer(wire, "127.0.0.1", 0)
                if fast is not None:
                    rendered += 1
                    assert reply(fast) == want, ("fast", qname, qtype, subnet)
    assert rendered  # names that depend on one pick or none stay rendered



async def test_a_cname_loop_gives_each_cname_once(tmp_path: Path) -> None:
    # la -> lb -> la: the chain ends where it comes back, each CNAME once (it used to repeat them up to the
    # chain limit, 9 records); the same through the fast path's render (UDP) and the slow path (TCP)
    path = write_config(tmp_path, extra_zone="la IN CNAME lb.example.test.\nlb IN CNAME la.example.test.")
    cfg = load_config(path)
    async with serving(cfg, table_with(cfg, 1, {})) as (_server, port):
        for use_tcp in (False, True):
            q = dns.message.make_query("la.example.test", "A")
            # one RR per RRset: a repeated record would show (dnspython merges duplicates otherwise)
            ask_ = dns.asyncquery.tcp if use_tcp else dns.asyncquery.udp
            r = await ask_(q, "127.0.0.1", port=port, timeout=3, one_rr_per_rrset=True)
            assert r.rcode() == dns.rcode.NOERROR
            assert [(rr.name.to_text(), len(rr), rr[0].to_text()) for rr in r.answer] == [
                ("la.example.test.", 1, "lb.example.test."), ("lb.example.test.", 1, "la.example.test.")]
