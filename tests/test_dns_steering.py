"""Geo by ECS and by source address, weighted and stable answers, table swaps, fail-open; real UDP/TCP."""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.answers import Split, pick
from dnsserver.geo import GeoMap
from tests.support.dns_server import load, serving, table_with

ADDR = {"us-east-1": {"192.0.2.10", "192.0.2.11"}, "us-west-2": {"192.0.2.20"}, "eu-west-1": {"192.0.2.30"}}


def region_of(r: dns.message.Message) -> str:
    got = {rd.address for rd in r.answer[0]}
    return next(k for k, v in ADDR.items() if v == got)


@pytest.fixture
def cfg(tmp_path: Path):
    # one resolver sending ECS for many subnets: the case dnsserver/README.md tells operators to exempt
    return load(tmp_path, dns={"rrl": {"exempt": ["127.0.0.0/8", "::1/128"]}})


async def ask(port: int, name: str = "api.example.test", ecs: tuple[str, int] | None = None, source: str | None = None,
              qtype: str = "A", use_tcp: bool = False) -> dns.message.Message:
    opts = [dns.edns.ECSOption(ecs[0], ecs[1])] if ecs else None
    q = dns.message.make_query(name, qtype, use_edns=0 if ecs else None, options=opts)
    if use_tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3, source=source)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3, source=source)


def test_geo_longest_prefix_match(cfg) -> None:
    gm = GeoMap(cfg.geos, cfg.default_geo.id)
    ids = gm.ids
    assert ids[gm.key(4, ipaddress.ip_address("198.51.100.70").packed, 32).geo] == "na-west"
    assert ids[gm.key(4, ipaddress.ip_address("198.51.100.130").packed, 32).geo] == "europe"
    # a /24 cannot tell the /26 geos apart: default geo, and scope 26 (RFC 7871 §7.2.1: the /26s inside the
    # /24 decide for their clients, so the answer must not be cached for the whole /24)
    k = gm.key(4, ipaddress.ip_address("198.51.100.0").packed[:3], 24)
    assert ids[k.geo] == "world" and k.scope == 26
    assert gm.key(4, b"\x0a\x01\x02", 24).scope == 24  # nothing configured inside 10.1.2.0/24
    assert ids[gm.key(6, ipaddress.ip_address("2001:db8:3:ff::").packed, 64).geo] == "europe"
    assert gm.key(6, ipaddress.ip_address("2001:db8:3:ff::").packed, 64).scope == 56
    assert ids[gm.key(4, b"\x0a\x00\x00\x01", 32).geo] == "world"
    assert ids[gm.key_for_source("::ffff:127.3.0.1").geo] == "europe"


async def test_geo_by_ecs_v4_and_v6_with_scope(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port):
        for (addr, plen), region, scope in [(("198.51.100.130", 32), "eu-west-1", 26),
                                            (("198.51.100.64", 28), "us-west-2", 26),
                                            (("2001:db8:3::", 48), "eu-west-1", 48),
                                            (("2001:db8:2:1::", 64), "us-west-2", 56),
                                            (("10.1.2.0", 24), "us-east-1", 24)]:
            for use_tcp in (False, True):
                r = await ask(port, ecs=(addr, plen), use_tcp=use_tcp)
                assert region_of(r) == region, addr
                (opt,) = [o for o in r.options if isinstance(o, dns.edns.ECSOption)]
                assert (opt.address, opt.srclen, opt.scopelen) == (addr, plen, scope)


async def test_geo_by_source_address_and_default(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port):
        assert region_of(await ask(port, source="127.3.0.9")) == "eu-west-1"
        assert region_of(await ask(port, source="127.2.0.9")) == "us-west-2"
        assert region_of(await ask(port, source="127.2.0.9", use_tcp=True)) == "us-west-2"
        assert region_of(await ask(port, source="127.9.0.1")) == "us-east-1"  # world: default geo


async def test_weighted_split_and_stable_per_subnet(cfg) -> None:
    weights = {"api.example.test.": {"world": {"us-east-1": 700, "us-west-2": 300, "eu-west-1": 0}}}
    async with serving(cfg, table_with(cfg, 1, weights)) as (server, port):
        subnets = [f"10.{i // 256}.{i % 256}.0" for i in range(1500)]
        first = {s: region_of(await ask(port, ecs=(s, 24))) for s in subnets}
        share = Counter(first.values())
        assert set(share) == {"us-east-1", "us-west-2"}
        assert abs(share["us-east-1"] / len(subnets) - 0.7) < 0.05, share
        # the same subnet gets the same answer again (UDP and TCP, fast and slow path alike)
        for s in subnets[:100]:
            assert region_of(await ask(port, ecs=(s, 24))) == first[s]
            assert region_of(await ask(port, ecs=(s, 24), use_tcp=True)) == first[s]
            slow = server.slow.answer(server.snapshot, dns.message.make_query(
                "api.example.test", "A", use_edns=0, options=[dns.edns.ECSOption(s, 24)]).to_wire(), "127.0.0.1", 0)
            assert region_of(dns.message.from_wire(slow)) == first[s]
        counted = sum(c[0] for (svc, geo, _), c in server.stats.answers.items() if geo == "world")
        assert counted >= len(subnets) + 300


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=6).filter(lambda w: sum(w) > 0),
       st.binary(min_size=2, max_size=18), st.integers(0, 2**32 - 1))
def test_pick_is_stable_and_never_picks_a_zero_weight(weights: list[int], subnet: bytes, seed: int) -> None:
    split = Split(tuple(f"t{i}" for i in range(len(weights))), tuple(weights))
    i = pick(split, subnet, seed)
    assert 0 <= i < len(weights) and weights[i] > 0 and pick(split, subnet, seed) == i


async def test_new_table_shows_in_answers_and_fail_open_without_table(cfg, tmp_path: Path) -> None:
    async with serving(cfg, None) as (server, port):
        # no table at all: fail open to every configured target of the geo, never an empty answer
        seen = {region_of(await ask(port, ecs=(f"10.9.{i}.0", 24))) for i in range(200)}
        assert seen == {"us-east-1", "us-west-2", "eu-west-1"}
        assert server.stats.fallback_events["no-table"][0] >= 12
        assert sum(c[0] for c in server.stats.fallbacks.values()) >= 200
        server.set_table(table_with(cfg, 2, {"api.example.test.": {"world": {"eu-west-1": 1000}}}), persist=False)
        assert region_of(await ask(port, ecs=("10.9.1.0", 24))) == "eu-west-1"
        await server.apply_table(table_with(cfg, 3, {"api.example.test.": {"world": {"us-west-2": 1000}}}))
        assert region_of(await ask(port, ecs=("10.9.1.0", 24))) == "us-west-2"
        assert server.stats.table_version == 3


async def test_table_missing_a_service_fails_open_for_it(cfg) -> None:
    table = table_with(cfg, 1, {})
    table = type(table)(**{**table.__dict__, "services": {"video.example.test.": table.services["video.example.test."]}})
    async with serving(cfg, table) as (server, port):
        r = await ask(port)
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        assert server.stats.fallback_events["service-not-in-table"][0] == 6


async def test_site_targeted_service(cfg) -> None:
    weights = {"video.example.test.": {"europe": {"oc-lon-1": 1000}}}
    async with serving(cfg, table_with(cfg, 1, weights)) as (_, port):
        r = await ask(port, name="video.example.test", source="127.3.0.5")
        assert {rd.address for rd in r.answer[0]} == {"192.0.2.130"} and r.answer[0].ttl == 20


async def test_many_concurrent_clients(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port):
        rs = await asyncio.gather(*(ask(port, ecs=(f"10.7.{i}.0", 24)) for i in range(100)))
        assert all(r.answer for r in rs)
