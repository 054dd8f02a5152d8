"""GeoIP geos on the wire: real DNS queries (ECS and source address) answered per geo, the database
reloaded on change without a restart (a broken file keeps the previous one), in-process and through the
shipped ``steering dns`` with two workers; ``RoutingService.Resolve`` and ``steering.client`` placing
clients the same way (docs/geoip.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import yaml

from dnsserver.persist import save_table
from steering.client import SteeringClient
from steering.config import Config, load_config
from steering.etcdproc import EtcdCluster
from steering.v1 import steering_pb2 as pb
from tests.support.cli import steerctl
from tests.support.controller import make_config, start_controller, stubs
from tests.support.dns_server import EAST, EU, WEST, DnsProcess, addresses, api_query, serving, table_with
from tests.support.dns_server import write_config as write_dns_config
from tests.support.geoipdb import city, write_db
from tests.support.wait import eventually, eventually_sync

FIRST = [  # the database as first written
    ("20.1.0.0/16", city("NA", "US", "CA")),  # na-west by state: us-west-2
    ("20.2.0.0/16", city("NA", "US", "TX")),  # na-east by continent: us-east-1
    ("30.0.0.0/8", city("EU", "DE", "BY")),  # europe: eu-west-1
    ("127.9.0.0/16", city("EU", "FR")),  # the source-address test's resolver, in europe
    ("2600:1::/32", city("NA", "US", "CA")),
    ("2a00::/12", city("EU", "NL")),
]
MOVED = [  # a new release: 20.1/16 moves to Germany, the resolver to California
    ("20.1.0.0/16", city("EU", "DE")),
    ("20.2.0.0/16", city("NA", "US", "TX")),
    ("30.0.0.0/8", city("EU", "DE", "BY")),
    ("127.9.0.0/16", city("NA", "US", "CA")),
    ("2600:1::/32", city("EU", "DE")),
    ("2a00::/12", city("EU", "NL")),
]


def geoip_config(directory: Path, reload_seconds: float = 0.5) -> tuple[Path, Path]:
    """The example config (geos by state and continent) with a GeoIP database: (config, database)."""
    db = write_db(directory / "GeoLite2-City.mmdb", FIRST, build_epoch=1_700_000_000)
    path = write_dns_config(directory)
    data = yaml.safe_load(path.read_text())
    data["geoip"] = {"database": db.name, "reload_seconds": reload_seconds}
    path.write_text(yaml.safe_dump(data))
    return path, db


def ecs(port: int, subnet: str, bits: int = 24) -> frozenset[str]:
    q = dns.message.make_query("api.example.test", "AAAA" if ":" in subnet else "A", use_edns=0,
                               options=[dns.edns.ECSOption(subnet, bits)])
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
    return frozenset(rd.address for rrset in r.answer for rd in rrset)


def from_source(port: int, source: str) -> frozenset[str]:
    return addresses(dns.query.udp(api_query(), "127.0.0.1", port=port, timeout=2, source=source))


V6_WEST, V6_EU = frozenset({"2001:db8::20"}), frozenset({"2001:db8::30"})


async def test_answers_per_geo_and_a_reload_without_restart(tmp_path: Path) -> None:
    cfg_path, db = geoip_config(tmp_path)
    cfg = load_config(cfg_path)
    async with serving(cfg, table_with(cfg, 1, {})) as (server, port):
        follow = asyncio.create_task(server.follow_geoip())
        try:
            assert ecs(port, "20.1.7.0") == WEST  # US-CA: na-west
            assert ecs(port, "20.2.7.0") == EAST  # US-TX: na-east, by continent
            assert ecs(port, "30.4.5.0") == EU
            assert ecs(port, "198.51.100.70", 32) == WEST  # the example's own prefixes still place (na-west)
            assert ecs(port, "2600:1:2::", 56) == V6_WEST and ecs(port, "2a00:5::", 56) == V6_EU
            assert from_source(port, "127.9.0.1") == EU  # no ECS: the resolver's own address
            assert from_source(port, "127.2.0.1") == WEST  # an explicit 127.2/16 prefix (na-west)
            assert server.geoip.map is not None and server.geoip.map.info.build_epoch == 1_700_000_000

            write_db(db, MOVED, build_epoch=1_700_086_400)
            await eventually(lambda: ecs(port, "20.1.7.0") == EU, timeout=20, what="20.1/16 answered from europe")
            assert from_source(port, "127.9.0.1") == WEST  # the resolver-address cache was dropped
            assert ecs(port, "2600:1:2::", 56) == V6_EU and ecs(port, "20.2.7.0") == EAST
            assert server.geoip.reloads == {"ok": 1, "error": 0}
            assert server.geoip.map.info.build_epoch == 1_700_086_400

            db.write_bytes(b"half a download" * 1000)  # a broken file: the previous database stays
            await eventually(lambda: server.geoip.reloads["error"] == 1, timeout=20, what="the broken file seen")
            assert "geoip.database" in server.geoip.last_error
            assert ecs(port, "20.1.7.0") == EU and server.geoip.map.info.build_epoch == 1_700_086_400
            db.unlink()  # gone: one warning, still the previous database
            await eventually(lambda: server.geoip.reloads["error"] == 2, timeout=20, what="the missing file seen")
            assert ecs(port, "20.1.7.0") == EU

            write_db(db, FIRST, build_epoch=1_700_172_800)  # back: a good file is read again
            await eventually(lambda: ecs(port, "20.1.7.0") == WEST, timeout=20, what="the good file read")
            assert server.geoip.reloads == {"ok": 2, "error": 2}
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)


def test_the_shipped_server_with_two_workers_reloads_in_every_worker(tmp_path: Path) -> None:
    cfg_path, db = geoip_config(tmp_path)
    cfg = load_config(cfg_path)
    save_table(str(tmp_path / "dns-table.json"), table_with(cfg, 1, {}))
    with DnsProcess(cfg_path, "--workers", "2", "--no-etcd") as daemon:
        port = daemon.ready()
        # fresh sockets: SO_REUSEPORT spreads them over both workers
        assert {ecs(port, "20.1.7.0") for _ in range(20)} == {WEST}
        assert daemon.metric("steering_geoip_build_timestamp_seconds", worker="0") == 1_700_000_000
        assert daemon.metric("steering_geoip_build_timestamp_seconds", worker="1") == 1_700_000_000
        write_db(db, MOVED, build_epoch=1_700_086_400)
        eventually_sync(lambda: daemon.metric("steering_geoip_reloads_total", result="ok") == 2, 30,
                        "both workers reloaded")
        assert {ecs(port, "20.1.7.0") for _ in range(20)} == {EU}
        assert daemon.metric("steering_geoip_build_timestamp_seconds") == 2 * 1_700_086_400
        assert len(daemon.named("geoip.reload.ok")) == 2
        db.write_bytes(b"\0" * 4096)
        eventually_sync(lambda: daemon.metric("steering_geoip_reloads_total", result="error") == 2, 30,
                        "both workers saw the broken file")
        assert {ecs(port, "20.1.7.0") for _ in range(20)} == {EU}
        failed = daemon.named("geoip.reload.failed")
        assert failed and all("geoip.database" in e["error"] for e in failed)
        assert daemon.stop() == 0


def controller_config(etcd: EtcdCluster, db: Path, reload_seconds: float = 0.5) -> Config:
    return make_config(etcd.endpoints, {"geoip": {"database": str(db), "reload_seconds": reload_seconds}})


async def resolve(target: str, address: str) -> Any:
    ch, _op, routing, _md = stubs(target)
    async with ch:
        return await routing.Resolve(pb.ResolveRequest(service="api.example.test", client_address=address))


async def test_resolve_and_the_client_place_by_geoip_and_follow_a_reload(tmp_path: Path, etcd: EtcdCluster) -> None:
    db = write_db(tmp_path / "city.mmdb", FIRST, build_epoch=1_700_000_000)
    run = await start_controller(controller_config(etcd, db))
    try:
        assert (await resolve(run.target, "20.1.7.9")).geo == "na-west"
        assert (await resolve(run.target, "20.2.7.9")).geo == "na-east"
        assert (await resolve(run.target, "30.1.1.1")).geo == "europe"
        assert (await resolve(run.target, "198.51.100.130")).geo == "europe"  # an explicit prefix
        async with SteeringClient([run.target], geoip_database=db, geoip_reload_seconds=0.5) as client, \
                SteeringClient([run.target]) as without:
            assert await client.wait_ready(15) and await without.wait_ready(15)
            assert client.resolve("api.example.test", client_address="20.1.7.9")[0].target == "us-west-2"
            assert client.topology is not None and client.topology.geo_for("30.1.1.1") == "europe"
            # without the database, GeoIP geos get only their prefixes: the default geo for the rest
            assert without.topology is not None and without.topology.geo_for("30.1.1.1") == "world"

            write_db(db, MOVED, build_epoch=1_700_086_400)

            async def moved() -> bool:
                return bool((await resolve(run.target, "20.1.7.9")).geo == "europe")

            await eventually(moved, timeout=20, what="Resolve to place 20.1/16 in europe")
            await eventually(lambda: client.topology is not None and client.topology.geo_for("20.1.7.9") == "europe",
                             timeout=20, what="the client to reload its database")
            assert run.ctl.placement.state.reloads["ok"] == 1
        # status shows the database in use: the RPC, and steerctl's line
        ch, op, _routing, _md = stubs(run.target)
        async with ch:
            status = await op.Status(pb.StatusRequest())
        assert status.geoip.database_type == "GeoLite2-City" and status.geoip.build_time.seconds == 1_700_086_400
        assert status.geoip.reloads_ok == 1 and status.geoip.networks > 0
        code, out, _err = await steerctl("--server", run.target, "status")
        assert code == 0 and "geoip: GeoLite2-City built 2023-11-15 22:13 UTC" in out, out
    finally:
        await run.stop()
