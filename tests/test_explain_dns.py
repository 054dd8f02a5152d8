"""``steerctl explain`` offline agrees with a real DNS server answering from the same table.

1,000 ECS queries (IPv4 and IPv6 client subnets across the geos, and outside them) over UDP to a DNS
server answering from the table it persisted, each compared with the explanation computed from that
persisted file (the offline mode's reader): the same records (so the same target), TTL and ECS scope.
Then the shipped commands: ``steering dns`` from its state file against ``steerctl explain --config
--table`` as an operator runs it, and its bad input (one line, exit 2).
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections import Counter
from pathlib import Path

import dns.asyncquery
import dns.query

from dnsserver.persist import load_table, save_table
from steering.cli.explain_cmd import read_table
from steering.config import Config, load_config
from steering.explain import explain
from steering.table import GeoRoute, RoutingTable, ServiceRoute
from steering.topology import Topology
from tests.support.cli import steerctl
from tests.support.dns_server import DnsProcess, serving, write_config
from tests.support.explain_check import answered, ecs_query, mismatch, random_subnets

API = "api.example.test."
VIDEO = "video.example.test."
RRL_EXEMPT = {"rrl": {"exempt": ["127.0.0.0/8", "::1/128"]}}  # one resolver asking for many subnets


def varied_table(config: Config) -> RoutingTable:
    """Splits that differ per geo, and the cases the DNS server does not take the table for: a geo the
    table lacks, a route onto a target without answers; one route flagged fail-open by the planner."""
    api = {"na-east": {"us-east-1": 600, "us-west-2": 300, "eu-west-1": 100},
           "na-west": {"us-west-2": 450, "us-east-1": 450, "eu-west-1": 100},
           "europe": {"eu-west-1": 500, "us-east-1": 250, "us-west-2": 250},
           "south-america": {"us-east-1": 340, "us-west-2": 330, "eu-west-1": 330},
           "asia-pacific": {"us-west-2": 700, "eu-west-1": 0, "us-east-1": 300},
           "world": {"oc-lon-1": 1000}}  # no answers for a site in a regions service: the spread
    video = {"na-east": {"oc-nyc-1": 700, "us-east-1": 300},
             "na-west": {"oc-nyc-1": 200, "us-west-2": 800},
             "europe": {"oc-lon-1": 550, "eu-west-1": 250, "us-east-1": 200},
             "south-america": {"oc-nyc-1": 500, "us-east-1": 500},
             "world": {"oc-nyc-1": 300, "oc-lon-1": 300, "us-east-1": 400}}  # asia-pacific: not in the table

    def route(weights: dict[str, int], geo: str) -> GeoRoute:
        return GeoRoute(weights=weights, reasons={t: f"test {geo}" for t in weights},
                        fail_open=geo == "south-america")

    services = {API: ServiceRoute("regions", {g: route(w, g) for g, w in api.items()}),
                VIDEO: ServiceRoute("sites", {g: route(w, g) for g, w in video.items()})}
    assert {s.name for s in config.services} == set(services)
    return RoutingTable(version=12, parent_version=11, generated_at=1_700_000_000.0, services=services,
                        regions={}, topology=config.fingerprint())


CASES = ((API, "A"), (API, "AAAA"), (VIDEO, "A"))


async def test_explain_agrees_with_dns_answers_for_1000_clients(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, dns=RRL_EXEMPT))
    state = tmp_path / "dns-table.json"
    save_table(state, varied_table(config))
    served = load_table(state)  # what a restarted DNS server answers from ...
    explained = read_table(str(state))  # ... and what steerctl explain --table reads from the same file
    assert served is not None and served == explained
    topology = Topology.from_config(config)
    rng = random.Random(1313)
    failures: list[str] = []
    seen: Counter[str] = Counter()
    async with serving(config, served) as (_, port):
        for i, subnet in enumerate(random_subnets(rng, 1000)):
            service, qtype = CASES[i % len(CASES)]
            said = explain(topology, explained, service, "127.0.0.1", subnet).to_dict()
            reply = await dns.asyncquery.udp(ecs_query(service, qtype, subnet), "127.0.0.1", port=port, timeout=5)
            problem = mismatch(said, qtype, answered(reply))
            if problem:
                failures.append(f"{service} {qtype} ECS {subnet}: {problem}")
            seen.update([f"geo {said['geo']}", f"target {said['target']}", f"scope {said['ecs_scope']}",
                         f"fallback {said['fallback']}", f"v{ipaddress.ip_network(subnet).version}"])
        # and without ECS: the source address decides (127.N/16 are the example geos' loopback prefixes)
        for source in ("127.0.0.1", "127.1.0.9", "127.2.3.4", "127.3.0.200", "127.4.9.9", "127.5.0.1"):
            for service, qtype in CASES:
                said = explain(topology, explained, service, source).to_dict()
                reply = await dns.asyncquery.udp(ecs_query(service, qtype, None), "127.0.0.1", port=port,
                                                 source=source, timeout=5)
                problem = mismatch(said, qtype, answered(reply))
                if problem:
                    failures.append(f"{service} {qtype} from {source}: {problem}")
                seen.update([f"source geo {said['geo']}"])
    assert not failures, f"{len(failures)} of 1036 differ, e.g. " + "\n".join(failures[:5])
    # the comparison covered what it should: every geo, target and fallback, several scopes, both families
    assert all(seen[f"geo {g.id}"] >= 20 for g in config.geos), seen
    assert all(seen[f"source geo {g.id}"] for g in config.geos), seen
    assert all(seen[f"target {t}"] for t in ("us-east-1", "us-west-2", "eu-west-1", "oc-nyc-1", "oc-lon-1")), seen
    assert seen["fallback geo-not-in-table"] and seen["fallback no-answerable-target"], seen
    assert {s for s in seen if s.startswith("scope ")} >= {"scope 16", "scope 24", "scope 26", "scope 56"}, seen
    assert seen["v6"] >= 150 and seen["v4"] >= 600, seen


async def test_the_shipped_commands_agree_and_refuse_bad_input(tmp_path: Path) -> None:
    """``steering dns`` answering from its state file, ``steerctl explain --config --table`` reading it."""
    cfg_path = write_config(tmp_path, dns=RRL_EXEMPT)
    config = load_config(cfg_path)
    state = tmp_path / "dns-table.json"
    save_table(state, varied_table(config))
    offline = ("--config", str(cfg_path), "--table", str(state))
    with DnsProcess(cfg_path, "--no-etcd", "--workers", "1", metrics=False) as daemon:
        port = daemon.ready()
        for service, qtype, subnet in ((API, "A", "198.51.100.77/32"), (VIDEO, "A", "2001:db8:3:ab::/64"),
                                       (API, "AAAA", "198.51.100.0/24")):
            code, out, err = await steerctl("explain", service.rstrip("."), "127.0.0.1", "--ecs", subnet, *offline,
                                            "--json")
            assert code == 0, err
            said = json.loads(out)
            reply = dns.query.udp(ecs_query(service, qtype, subnet), "127.0.0.1", port=port, timeout=5)
            assert not mismatch(said, qtype, answered(reply)), (subnet, said, reply)
            assert said["table_version"] == 12
        daemon.stop()
    code, out, err = await steerctl("explain", "api.example.test", "127.0.0.1", "--ecs", "198.51.100.130/32",
                                    *offline)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "api.example.test. for 127.0.0.1 with ECS 198.51.100.130/32 (table v12)", out
    assert "europe: 198.51.100.128/26 is a configured prefix of europe" in lines[1], out
    assert any(line.startswith("  pick     ") and "slot" in line for line in lines), out
    assert "TTL 30" in out and "scope /26" in out, out

    not_a_table = tmp_path / "status.json"
    not_a_table.write_text('{"version": 12, "blob": "0123456789abcdef", "chunks": 1}')
    for args, says in (
        (("nope.example.test", "127.0.0.1", *offline), "service: unknown service 'nope.example.test'"),
        (("api.example.test", "300.1.1.1", *offline), "client_address: '300.1.1.1' is not an IPv4 or IPv6"),
        (("api.example.test", "127.0.0.1", "--ecs", "198.51.100.0/40", *offline), "ecs_subnet: '198.51.100.0/40'"),
        (("api.example.test", "127.0.0.1", "--config", str(cfg_path), "--table", str(not_a_table)),
         f"--table {not_a_table}: not a routing table"),
        (("api.example.test", "127.0.0.1", "--config", str(cfg_path)), "offline needs both --config FILE and"),
    ):
        code, out, err = await steerctl("explain", *args)
        assert code == 2 and out == "", (args, code, out, err)
        assert len(err.splitlines()) == 1 and err.startswith("steerctl: ") and says in err, (args, err)
