"""``RoutingService.Explain`` on a real controller (real etcd, gRPC over loopback, a GeoIP database) against
a real DNS server answering from the table that controller follows; ``steerctl explain`` through it; bad
input refused as INVALID_ARGUMENT naming the field (steerctl: one line, exit 2)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import dns.asyncquery
import grpc

from steering.cli import shapes
from steering.etcdproc import EtcdCluster
from steering.explain import explain
from steering.geoip import Codes, codes_at
from steering.geoipwatch import load_for
from steering.topology import Topology
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.cli import steerctl
from tests.support.controller import make_config, refused, start_controller, stubs
from tests.support.dns_server import serving
from tests.support.explain_check import answered, ecs_query, mismatch, random_subnets
from tests.support.geoipdb import city, country, write_db

API = "api.example.test."
VIDEO = "video.example.test."
PINS = {API: {"world": {"us-east-1": 5, "us-west-2": 3, "eu-west-1": 2},
              "europe": {"eu-west-1": 6, "us-east-1": 4}},
        VIDEO: {"na-east": {"oc-nyc-1": 4, "us-east-1": 3, "us-west-2": 3}}}


async def test_explain_through_a_controller_matches_the_dns_server(etcd: EtcdCluster, tmp_path: Path) -> None:
    dns_section = {"listen": ["127.0.0.1:0"], "state_file": str(tmp_path / "dns-table.json"),
                   "rrl": {"exempt": ["127.0.0.0/8", "::1/128"]}}
    db = write_db(tmp_path / "city.mmdb", [("81.2.69.0/24", city("EU", "GB", "ENG")),
                                          ("8.8.0.0/16", city("NA", "US", "CA")), ("1.0.16.0/20", country("AS", "JP"))])
    config = make_config(etcd.endpoints, extra={"dns": dns_section, "geoip": {"database": str(db)}})
    run = await start_controller(config)
    ch, op, routing, md = stubs(run.target)
    try:
        for service, geos in PINS.items():
            for geo, weights in geos.items():
                resp = await op.PinWeights(pb.PinWeightsRequest(service=service, geo=geo, weights=weights,
                                                                reason="explain test", force=True), metadata=md)
                assert resp.applied, resp

        def pinned() -> bool:
            t = run.ctl.tables.current
            return t is not None and all((r := t.route(s, g)) is not None and r.pinned
                                         for s, gs in PINS.items() for g in gs)

        await eventually(pinned, what="the controller to follow the pinned table")
        table = run.ctl.tables.current
        assert table is not None
        topology = Topology.from_config(config, load_for(config))  # as the DNS server places clients

        def codes_of(address: str) -> Codes | None:
            return codes_at(db, address)

        targets = set()
        geoip = ["81.2.69.0/24", "8.8.8.0/24", "1.0.17.0/24"]
        async with serving(config, table) as (_, port):
            for i, subnet in enumerate(geoip + random_subnets(random.Random(77), 40)):
                service, qtype = ((API, "A"), (VIDEO, "A"), (API, "AAAA"))[i % 3]
                resp = await routing.Explain(pb.ExplainRequest(service=service, client_address="127.0.0.1",
                                                               ecs_subnet=subnet), metadata=md)
                live = shapes.explanation(resp)
                assert live["table_version"] == table.version
                # the API's answer is the offline function's, field for field (one shape, one function)
                assert live == explain(topology, table, service, "127.0.0.1", subnet, codes_of).to_dict()
                reply = await dns.asyncquery.udp(ecs_query(service, qtype, subnet), "127.0.0.1", port=port, timeout=5)
                assert not mismatch(live, qtype, answered(reply)), (subnet, live, reply)
                targets.add(live["target"])
                if subnet in geoip:  # placed by the database, and the API says what it says
                    assert live["placed_by"]["source"] == "geoip" or live["geo"] == "world", live
                    assert live["placed_by"]["geoip"]["country"] in ("GB", "US", "JP"), live
        assert len(targets) >= 3, targets
        resp = await routing.Explain(pb.ExplainRequest(service=API, client_address="81.2.69.7"), metadata=md)
        assert (resp.geo, resp.geo_source, resp.geo_prefix) == ("europe", "geoip", "81.2.69.0/24")
        assert (resp.geoip.country, resp.geoip.matched) == ("GB", "continent EU")

        subnet = "198.51.100.130/32"
        code, out, err = await steerctl("--server", run.target, "explain", "api.example.test", "127.0.0.1",
                                        "--ecs", subnet, "--json")
        assert code == 0, err
        assert json.loads(out) == explain(topology, table, API, "127.0.0.1", subnet, codes_of).to_dict()
        code, out, err = await steerctl("--server", run.target, "explain", "api.example.test", "127.0.0.1",
                                        "--ecs", subnet)
        assert code == 0, err
        assert f"(table v{table.version})" in out and "configured prefix of europe" in out and "scope /26" in out

        for request, field in ((pb.ExplainRequest(service="nope.example.test", client_address="127.0.0.1"),
                                "service: unknown service 'nope.example.test'"),
                               (pb.ExplainRequest(service=API, client_address="not-an-ip"),
                                "client_address: 'not-an-ip' is not an IPv4 or IPv6 address"),
                               (pb.ExplainRequest(service=API, client_address="127.0.0.1", ecs_subnet="10.0.0.0/99"),
                                "ecs_subnet: '10.0.0.0/99' is not an IPv4 or IPv6 subnet"),
                               (pb.ExplainRequest(service=API, client_address="1" * 300),
                                "client_address: 300 characters; at most 253")):
            err_ = await refused(routing.Explain, request, metadata=md)
            assert err_.code() == grpc.StatusCode.INVALID_ARGUMENT and (err_.details() or "").startswith(field), (
                request, err_.details())
        code, out, err = await steerctl("--server", run.target, "explain", "api.example.test", "2001:db8::zz")
        assert code == 2 and out == "" and err.strip() == (
            "steerctl: client_address: '2001:db8::zz' is not an IPv4 or IPv6 address"), err
    finally:
        await ch.close()
        await run.stop()
