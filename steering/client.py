"""``steering.client``: answer "where should this client go?" in-process, from a local view fed by Watch.

No RPC per request: the client follows ``RoutingService.Watch`` on one of the
controllers and answers from the last table it received (``resolve``,
``choose``: ``steering.resolve``, so ``choose`` sends a client where the DNS
server answers its subnet). When the controllers are unreachable it keeps that view and
reconnects with exponential backoff, trying the servers in turn.

    import asyncio
    from steering.client import SteeringClient

    async def main() -> None:
        async with SteeringClient(["127.0.0.1:50051"], token="...") as steer:
            await steer.wait_ready(timeout=10)
            target = steer.choose("api.example.test", client_address="198.51.100.7")
            print(target.target, target.addresses, target.reason)   # e.g. us-east-1 ('192.0.2.10', ...)

    asyncio.run(main())

Geos defined by countries, continents or subdivisions (docs/geoip.md) need a GeoIP database to place a
client: the controller sends their codes in the topology, not its compiled map, so give the client the
same database file the DNS servers use (``geoip_database=``); it compiles it for the topology's geos and
reloads it when the file changes. Without one, such geos get only the clients their ``prefixes`` hold and
every other client is the default geo's (logged once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc

from steering import logs
from steering.config import Geo
from steering.geoip import GeoIpMap, file_stamp, load
from steering.geoipwatch import GeoIpReloader, GeoIpState
from steering.resolve import Target, choose, rank
from steering.table import RoutingTable
from steering.topology import Topology
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.client")

__all__ = ["SteeringClient", "Target"]


class SteeringClient:
    def __init__(self, servers: Sequence[str] | str, *, service: str = "", token: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None, backoff_initial: float = 0.2,
                 backoff_max: float = 10.0, geoip_database: str | Path | None = None,
                 geoip_reload_seconds: float = 5.0) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers:
            raise ValueError("servers: give at least one controller address")
        self.service = service
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.credentials = credentials
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.table: RoutingTable | None = None
        self.topology: Topology | None = None
        self.connected = False
        self.reconnects = 0
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.geoip_database = Path(geoip_database) if geoip_database is not None else None
        self.geoip_reload_seconds = geoip_reload_seconds
        self.geoip = GeoIpState()  # the database this client places clients with (status, tests)
        self._geoip_for = ""  # the topology's geos (JSON) the map in self.geoip was compiled for
        self._geoip_task: asyncio.Task[None] | None = None
        self._geoip_warned = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="steering-client")

    async def close(self) -> None:
        for task in (self._task, self._geoip_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._geoip_task = None
        self.connected = False

    async def __aenter__(self) -> SteeringClient:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True once a table and the topology have arrived (False on timeout)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_version(self, version: int, timeout: float | None = None) -> RoutingTable | None:
        """The first table newer than ``version`` (None on timeout)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: self.table is not None and self.table.version > version), timeout)
            except TimeoutError:
                return None
        return self.table

    @property
    def version(self) -> int:
        return self.table.version if self.table else 0

    # ------------------------------------------------------------------ answers (no I/O)

    def resolve(self, service: str, *, client_address: str = "", geo: str = "", max_targets: int = 0) -> list[Target]:
        """Ranked targets, highest weight first; raises LookupError before the first table arrives."""
        if self.table is None or self.topology is None:
            raise LookupError("no routing table yet: call wait_ready() first")
        return rank(self.table, self.topology, service, client_address=client_address, geo=geo,
                    max_targets=max_targets)[2]

    def choose(self, service: str, *, client_address: str = "", geo: str = "") -> Target | None:
        """The target this client gets: by weight, the DNS server's pick for the client's subnet, so the
        same subnet gets the same target while the weights hold; raises LookupError before the first table."""
        if self.table is None or self.topology is None:
            raise LookupError("no routing table yet: call wait_ready() first")
        return choose(self.table, self.topology, service, client_address=client_address, geo=geo)

    # ------------------------------------------------------------------ the watch loop

    def _channel(self, server: str) -> grpc.aio.Channel:
        if self.credentials is not None:
            return grpc.aio.secure_channel(server, self.credentials)
        return grpc.aio.insecure_channel(server)

    async def _run(self) -> None:
        backoff = self.backoff_initial
        i = 0
        while True:
            server = self.servers[i % len(self.servers)]
            i += 1
            try:
                async with self._channel(server) as ch:
                    # grpcio-tools generates steering_pb2_grpc without annotations
                    stub = pb_grpc.RoutingServiceStub(ch)  # type: ignore[no-untyped-call]
                    call = stub.Watch(pb.WatchRequest(service=self.service, since_version=self.version),
                                      metadata=self.metadata)
                    async for msg in call:
                        if not self.connected:
                            log.info("steering client connected", server=server, version=self.version)
                        self.connected = True
                        backoff = self.backoff_initial
                        await self._receive(msg)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.INVALID_ARGUMENT):
                    log.error("steering client refused; retrying slowly", server=server, code=exc.code().name,
                              error=exc.details())
                    backoff = self.backoff_max
                else:
                    log.warning("steering client disconnected; keeping the last table", server=server,
                                version=self.version, error=exc.code().name)
            except Exception as exc:  # a bad message must not end the loop
                log.warning("steering client error; reconnecting", server=server, error=str(exc))
            self.connected = False
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _receive(self, msg: pb.WatchResponse) -> None:
        if msg.topology_json:
            topology = Topology.from_json(msg.topology_json)
            self.topology = await self._placed(topology) if topology.uses_geoip() else topology
        if msg.HasField("table") and msg.table.json:
            table = RoutingTable.from_json(msg.table.json)
            if self.table is None or table.version > self.table.version:
                self.table = table
                async with self._changed:
                    self._changed.notify_all()
        if self.table is not None and self.topology is not None:
            self._ready.set()

    # ------------------------------------------------------------------ GeoIP geos (docs/geoip.md)

    async def _placed(self, topology: Topology) -> Topology:
        """``topology`` placing clients with this client's GeoIP database, compiled for its geos (in a
        thread; again only when the geos or the file changed), and kept current by a reloader."""
        if self.geoip_database is None:
            if not self._geoip_warned:
                self._geoip_warned = True
                log.warning("steering client: the topology has geos by country, continent or subdivision and no "
                            "geoip_database was given; clients outside their prefixes get the default geo")
            return topology
        geos = topology.geo_models()
        key = repr([(g.id, g.continents, g.countries, g.subdivisions) for g in geos])
        current = self.geoip.map
        if current is None or key != self._geoip_for or current.info.stamp != _stamp(self.geoip_database):
            try:
                current = await asyncio.to_thread(load, self.geoip_database, geos, topology.default_id)
            except Exception as exc:  # GeoIpError, or a topology whose codes this version does not take
                log.warning("steering client: geoip database unusable; keeping the last map", error=str(exc))
                self.geoip.reloads["error"] += 1
                self.geoip.last_error = str(exc)
                return topology.with_geoip(self.geoip.map) if self.geoip.map is not None and \
                    self.geoip.map.geo_ids == tuple(topology.geo_ids) else topology
            self.geoip.map, self._geoip_for = current, key
        self._follow_geoip(geos, topology.default_id)
        return topology.with_geoip(current)

    def _follow_geoip(self, geos: list[Geo], default_id: str) -> None:
        if self._geoip_task is not None:
            self._geoip_task.cancel()

        def swap(topology: Topology | None) -> None:
            if topology is not None:
                self.topology = topology

        def prepare(geoip: GeoIpMap) -> Topology | None:
            return self.topology.with_geoip(geoip) if self.topology is not None else None

        assert self.geoip_database is not None
        reloader = GeoIpReloader(self.geoip_database, geos, default_id, self.geoip, prepare, swap,
                                 interval=self.geoip_reload_seconds, component="client", keep_prefixes=True)
        self._geoip_task = asyncio.create_task(reloader.run(), name="steering-client-geoip")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        return file_stamp(path)
    except OSError:
        return None
