"""One weighted pick (steering/pick.py) for the DNS server, RoutingService.Resolve and steering.client.

Pure properties of ``pick``; that a ``SlotTable`` (the fast path's memo)
gives what ``pick`` gives; a Hypothesis property that the DNS fast path's
inlined pick (both ``answer`` and ``answer_general``) picks what ``pick``
picks over random targets, weights, seeds, geo maps and clients; and,
through real sockets, that steering.client, Resolve and the DNS server's
fast and slow paths send random clients to the same target for the same
table. Movement when weights change: tests/test_pick_movement.py.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import zlib
from array import array
from pathlib import Path
from types import SimpleNamespace

import dns.asyncquery
import dns.edns
import dns.message
import dns.name
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.answers import build_steering
from dnsserver.fastpath import FastPath
from steering import pick
from steering.client import SteeringClient
from steering.config import Config
from steering.etcdproc import EtcdCluster
from steering.topology import GeoMap
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.controller import API, make_config, start_controller, stubs
from tests.support.dns_server import load, serving
from tests.support.strategies import ConfiguredGeoMap, ecs_options, geomaps

SEEDS = st.integers(0, 2**32 - 1)
POOL = tuple(f"{a}-{b}-{n}" for a in ("us", "eu", "ap", "oc") for b in ("east", "west", "lon") for n in (1, 2, 3))


def named(weights: list[int]) -> pick.Split:
    return pick.split([(f"t{i}", w) for i, w in enumerate(weights)])


@st.composite
def splits(draw: st.DrawFn, max_size: int = 8) -> pick.Split:
    """Random target names (what the race hashes) with random weights, at least one positive."""
    names = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=max_size, unique=True))
    weights = draw(st.lists(st.integers(0, 1000), min_size=len(names), max_size=len(names)))
    if not any(weights):
        weights[draw(st.integers(0, len(names) - 1))] = draw(st.integers(1, 1000))
    return pick.split(list(zip(names, weights, strict=True)))


@settings(max_examples=200, deadline=None)
@given(splits(), st.binary(max_size=18), SEEDS)
def test_pick_is_a_stable_index_of_a_positive_weight(split: pick.Split, subnet: bytes, seed: int) -> None:
    i = pick.pick(split, subnet, seed)
    assert 0 <= i < len(split.targets) and split.weights[i] > 0
    assert pick.pick(split, subnet, seed) == i


@settings(max_examples=200, deadline=None)
@given(splits(), st.binary(max_size=18), SEEDS, st.randoms(use_true_random=False))
def test_the_pick_follows_the_target_name_not_its_position(split: pick.Split, subnet: bytes, seed: int,
                                                           rng: random.Random) -> None:
    # the table lists serving targets highest weight first: a weight change reorders them, moving nobody
    order = list(range(len(split.targets)))
    rng.shuffle(order)
    shuffled = pick.Split(tuple(split.targets[i] for i in order), tuple(split.weights[i] for i in order))
    assert shuffled.targets[pick.pick(shuffled, subnet, seed)] == split.targets[pick.pick(split, subnet, seed)]


@settings(max_examples=100, deadline=None)
@given(splits(), SEEDS, st.lists(st.binary(max_size=18), min_size=1, max_size=30))
def test_a_slot_table_is_the_pick(split: pick.Split, seed: int, subnets: list[bytes]) -> None:
    table = pick.SlotTable(split.targets, split.weights, seed)
    for subnet in subnets:
        s = pick.slot(subnet, seed)
        want = pick.pick(split, subnet, seed)
        assert table.pick(subnet) == want and table.index[s] == want and table.fill(s) == want


def test_a_slot_table_past_254_targets_uses_two_bytes_and_is_the_pick() -> None:
    split = pick.split([(f"site-{i}", 1 + i % 7) for i in range(300)])
    seed = pick.name_seed("cdn.example.test.")
    table = pick.SlotTable(split.targets, split.weights, seed)
    assert isinstance(table.index, array) and table.index.itemsize == 2
    got = [table.pick(bytes((4, 24)) + i.to_bytes(3, "big") + b"\x00") for i in range(300)]
    assert got == [pick.pick(split, bytes((4, 24)) + i.to_bytes(3, "big") + b"\x00", seed) for i in range(300)]
    assert max(got) >= 255  # indices a byte cannot hold were picked and stored


def test_slot_tables_are_shared_while_in_use_and_bounded() -> None:
    split = named([600, 300, 100])
    table = pick.slot_table(split, 7)
    assert pick.slot_table(named([600, 300, 100]), 7) is table  # equal inputs: one table
    assert pick.slot_table(split, 8) is not table and pick.slot_table(named([600, 300, 101]), 7) is not table
    assert len(table.index) == pick.SLOTS  # a byte per slot: 64 KiB
    one = pick.slot_table(named([5]), 7)
    assert one.index == bytes(pick.SLOTS)  # one target: nothing to race, the shared zero bytes
    ident = id(table)
    del table
    assert all(id(t) != ident for t in pick._tables.values())  # nothing keeps an unused table


def test_zero_weights_only_is_refused() -> None:
    with pytest.raises(ValueError, match="positive weight"):
        pick.pick(named([0, 0]), b"\x04\x18abc", 1)
    with pytest.raises(ValueError, match="positive weight"):
        pick.SlotTable(("a", "b"), (0, 0), 1)


def test_pick_follows_the_weights_over_many_subnets() -> None:
    split = named([750, 250, 0])
    seed = pick.name_seed("api.example.test.")
    picks = [pick.pick(split, bytes((4, 24)) + i.to_bytes(3, "big") + b"\x00", seed) for i in range(4000)]
    assert picks.count(2) == 0 and 0.72 < picks.count(0) / len(picks) < 0.78


def test_the_seed_is_the_names_lower_case_wire_form() -> None:
    wire = b"\x03api\x07example\x04test\x00"
    assert pick.name_seed("API.Example.Test.") == pick.name_seed("api.example.test") == zlib.crc32(wire)
    assert pick.name_seed(dns.name.from_text("Api.EXAMPLE.test.")) == zlib.crc32(wire)


@settings(max_examples=150, deadline=None)
@given(st.data(), splits(), SEEDS)
def test_the_fast_paths_inline_pick_is_pick(data: st.DataObject, split: pick.Split, seed: int) -> None:
    # One steered name whose answer for target i is the two bytes i; random geo maps, targets, weights and
    # seeds; clients by ECS option and by source address (text and packed), UDP and TCP.
    geomap = data.draw(geomaps())
    fast_path_picks_like_pick(data, geomap, split, seed, queries=10)


def test_the_fast_paths_pick_is_pick_past_254_targets() -> None:
    # two-byte slot tables: an index of 255 or more is a real target, not "not raced yet"
    split = pick.split([(f"site-{i}", 1 + i % 5) for i in range(300)])

    @settings(max_examples=5, deadline=None)
    @given(st.data(), geomaps())
    def check(data: st.DataObject, geomap: ConfiguredGeoMap) -> None:
        fast_path_picks_like_pick(data, geomap, split, 4242, queries=40)

    check()


def fast_path_picks_like_pick(data: st.DataObject, geomap: ConfiguredGeoMap, split: pick.Split, seed: int,
                              queries: int) -> None:
    name = b"\x03api\x07example\x04test\x00"

    def variant(i: int) -> tuple[object, ...]:
        return (0, b"\x00\x01\x00\x01\x00\x00\x00\x00", b"\x00\x01\x00\x01\x00\x00\x00\x01", i.to_bytes(2, "big"),
                [0], [0])

    variants = tuple(variant(i) for i in range(len(split.targets)))
    table = pick.slot_table(split, seed)
    splits_ = tuple((table, variants, tuple([0] for _ in split.targets), None) for _ in geomap.ids)
    snapshot = SimpleNamespace(entries={name + b"\x00\x01\x00\x01": (seed, splits_)})  # all FastPath reads
    fast = FastPath(geomap, snapshot)  # type: ignore[arg-type]
    at = 12 + len(name) + 4  # the answer's first two bytes: the picked index
    plain = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
    for _ in range(queries):
        tcp = data.draw(st.sampled_from([0, 1]))
        if data.draw(st.booleans()):
            opt = data.draw(ecs_options(geomap))
            ecs = b"\x00\x08" + struct.pack("!H", len(opt)) + opt
            wire = (b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01" + name + b"\x00\x01\x00\x01"
                    + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + struct.pack("!H", len(ecs)) + ecs)
            subnet = geomap.key(4 if opt[1] == 1 else 6, opt[4:], opt[2]).subnet
            host: str | bytes = "127.0.0.1"
        else:
            wire = plain
            if data.draw(st.booleans()):
                ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                    data.draw(st.integers(0, 2**32 - 1)))
            else:
                ip = ipaddress.IPv6Address(data.draw(st.integers(0, 2**128 - 1)))
            host = str(ip) if data.draw(st.booleans()) else ip.packed
            subnet = geomap.key_for_source(str(ip)).subnet
        want = pick.pick(split, subnet, seed)
        for answer in (fast.answer, fast.answer_general):
            got = answer(wire, host, tcp)
            assert got is not None and int.from_bytes(got[at:at + 2], "big") == want, (wire.hex(), host)


def test_the_dns_server_seeds_each_name_with_name_seed(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    steered, _ = build_steering(cfg, None, GeoMap(cfg.geos, cfg.default_geo.id))
    for svc in cfg.services:
        assert steered[dns.name.from_text(svc.name)].seed == pick.name_seed(svc.name)


# ---------------------------------------------------------------- the three consumers agree, over sockets

VIDEO = "video.example.test."
PINS = {API: {"world": {"us-east-1": 5, "us-west-2": 3, "eu-west-1": 2},
              "europe": {"eu-west-1": 6, "us-east-1": 4},
              "na-west": {"us-west-2": 1, "us-east-1": 1, "eu-west-1": 1}},
        VIDEO: {"world": {"oc-nyc-1": 4, "oc-lon-1": 3, "us-east-1": 2, "eu-west-1": 1}}}


def random_clients(rng: random.Random, config: Config, n: int) -> list[str]:
    """Addresses inside the configured geos' prefixes (so every geo is asked) and anywhere."""
    nets = [ipaddress.ip_network(p) for g in config.geos for p in g.prefixes]
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.5:
            net = rng.choice(nets)
            out.append(str(net.network_address + rng.randrange(net.num_addresses)))
        elif roll < 0.8:
            out.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        else:
            out.append(str(ipaddress.IPv6Address((0x2001 << 112) | rng.getrandbits(112))))
    return out


async def test_client_resolve_and_dns_send_a_client_to_the_same_target(etcd: EtcdCluster, tmp_path: Path) -> None:
    dns_section = {"listen": ["127.0.0.1:0"], "state_file": str(tmp_path / "dns-table.json"),
                   "rrl": {"exempt": ["127.0.0.0/8", "::1/128"]}}  # one resolver sending many subnets
    config = make_config(etcd.endpoints, extra={"dns": dns_section})
    by_address = {(svc.name, a): t for svc in config.services for t, ans in svc.answers.items() for a in ans.A}
    run = await start_controller(config)
    ch, op, routing, md = stubs(run.target)
    client = SteeringClient([run.target], backoff_initial=0.05, backoff_max=0.5)
    try:
        for service, geos in PINS.items():
            for geo, weights in geos.items():
                resp = await op.PinWeights(pb.PinWeightsRequest(service=service, geo=geo, weights=weights,
                                                                reason="pick test", force=True), metadata=md)
                assert resp.applied, resp
        await client.start()

        def pinned() -> bool:
            t = client.table
            return t is not None and all((r := t.route(s, g)) is not None and r.pinned
                                         for s, gs in PINS.items() for g in gs)

        await eventually(pinned, what="the client to receive the pinned table")
        table = client.table
        assert table is not None
        async with serving(config, table) as (server, port):
            seen: dict[str, set[str]] = {API: set(), VIDEO: set()}
            for address in random_clients(random.Random(1207), config, 150):
                for service in (API, VIDEO):
                    local = client.choose(service, client_address=address)
                    rpc = await routing.Resolve(pb.ResolveRequest(service=service, client_address=address),
                                                metadata=md)
                    plen = 32 if ipaddress.ip_address(address).version == 4 else 128
                    q = dns.message.make_query(service, "A", use_edns=0, options=[dns.edns.ECSOption(address, plen)])
                    reply = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
                    answered = {by_address[(service, rd.address)] for rd in reply.answer[0]}
                    # the same query through each path by hand: the hot path and the slow path (dnspython)
                    fast = server.fast.answer(q.to_wire(), "127.0.0.1", 0)
                    slow = server.slow.answer(server.snapshot, q.to_wire(), "127.0.0.1", 0)
                    assert fast is not None and slow is not None
                    by_path = [{by_address[(service, rd.address)] for rd in dns.message.from_wire(w).answer[0]}
                               for w in (fast, slow)]
                    assert rpc.table_version == table.version
                    assert local is not None and answered == {local.target} and rpc.choice.target == local.target, (
                        service, address, answered, local, rpc.choice)
                    assert by_path == [answered, answered], (service, address, by_path, answered)
                    seen[service].add(local.target)
            # the pins split every geo asked: more than one target answers each service
            assert len(seen[API]) == 3 and len(seen[VIDEO]) >= 3, seen
    finally:
        await client.close()
        await ch.close()
        await run.stop()
