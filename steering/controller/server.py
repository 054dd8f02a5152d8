"""One controller replica: the gRPC server, the ingest, the leader loop and the table follower.

Start-up never waits for etcd: the server listens at once (agents and the
API see a live replica that reports NOT_SERVING on the standard health
service until etcd answers), and every etcd user retries on its own.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from steering import logs
from steering.config import Config
from steering.controller import metrics
from steering.controller.api import add_api_services, build_services
from steering.controller.drillapi import DrillService
from steering.controller.drillrunner import DrillRunner
from steering.controller.h2ingest import H2Ingest
from steering.controller.ingest import Ingest
from steering.controller.leader import Leader
from steering.controller.sinks import EventSink, TableSink, share_status
from steering.controller.tableview import TableView
from steering.geoip import GeoIpMap
from steering.geoipwatch import Placement
from steering.http.app import HttpApi
from steering.http.routes import Api
from steering.http.schemas import Known
from steering.ports import Sink
from steering.store import Store
from steering.v1 import steering_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # imported only when route53 is configured (boto3 is optional)
    from steering.route53 import Route53Sink

log = logs.get("steering.controller")

SERVICE_NAMES = ("steering.v1.HealthService", "steering.v1.RoutingService", "steering.v1.OperatorService",
                 "steering.v1.DrillService")


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{int(time.time() * 1000) % 100000}"


class Controller:
    def __init__(self, config: Config, replica: str, listen: str, geoip: GeoIpMap | None = None,
                 http_listen: str | None = None, ingest_listen: str | None = None) -> None:
        self.config = config
        self.replica = replica
        self.listen = listen
        self.http_listen = http_listen  # the REST API's address (docs/rest-api.md); None: not served
        # agents' Report over HTTP/2 without grpc core (h2ingest); None: only on ``listen``
        self.ingest_listen = ingest_listen if ingest_listen is not None else config.controller.ingest_listen
        # where Resolve places clients: the geos' prefixes and the GeoIP database (compiled here unless
        # given; GeoIpError when it cannot be), reloaded when the file changes (docs/geoip.md)
        self.placement = Placement(config, geoip)
        self.store = Store(config.etcd, base_dir=config.base_dir)
        metrics.ETCD_REACHABLE.set_function(lambda: 0.0 if self.store.unreachable_since is not None else 1.0)
        # The leader's sinks, walked in this order for every table: etcd (fenced), then Route 53.
        sinks: list[Sink] = [TableSink(self.store, replica, retry_max_seconds=config.etcd.reconnect_max_seconds)]
        self.events = EventSink(config, self.store, replica)  # the event timeline: the last sink
        self.route53: Route53Sink | None = None
        if config.route53 is not None:
            from steering.route53 import Route53Sink

            self.route53 = Route53Sink(config)
            # status/route53, for every replica's Status; a sync failing or recovering is an event
            self.route53.on_status = share_status(self.store, self.events)
            sinks.append(self.route53)
        self.leader = Leader(config, self.store, replica, sinks=sinks, events=self.events)
        self.ingest = Ingest(config, self.store, replica, lambda: self.leader.is_leader)
        self.tables = TableView(self.store)
        self.health = health.aio.HealthServicer()
        # one instance of each service, for gRPC and for the REST API: one implementation of each action
        self.services = build_services(config=config, store=self.store, tables=self.tables, agents=self.ingest,
                                       replica=replica, is_leader=lambda: self.leader.is_leader,
                                       placement=self.placement)
        # chaos drills (docs/drills.md): the API on every replica, the runner acting while this one leads
        self.drills = DrillService(config, self.store, self.services.operator)
        self.drill_runner = DrillRunner(self.store, self.services.operator, self.tables, replica,
                                        lambda: self.leader.is_leader, drills=self.drills)
        self.server: grpc.aio.Server | None = None
        self.http: HttpApi | None = None
        self.h2ingest: H2Ingest | None = None
        self.port = 0
        self.http_port = 0
        self.ingest_port = 0
        self._tasks: list[asyncio.Task[None]] = []

    def _add_api(self, server: grpc.aio.Server) -> None:
        # grpcio-tools generates steering_pb2_grpc without annotations
        pb_grpc.add_HealthServiceServicer_to_server(self.ingest, server)  # type: ignore[no-untyped-call]
        pb_grpc.add_DrillServiceServicer_to_server(self.drills, server)  # type: ignore[no-untyped-call]
        self._tasks.append(add_api_services(server, config=self.config, store=self.store, tables=self.tables,
                                            agents=self.ingest, replica=self.replica,
                                            is_leader=lambda: self.leader.is_leader, placement=self.placement,
                                            services=self.services))

    async def start(self, server_credentials: grpc.ServerCredentials | None = None,
                    interceptors: list[grpc.aio.ServerInterceptor] | None = None) -> int:
        from steering import auth

        # The config's auth and tls sections apply unless the caller passes its own.
        if interceptors is None:
            interceptors = auth.server_interceptors(self.config)
        if server_credentials is None:
            server_credentials = auth.server_credentials(self.config)
        await self.store.open()
        self.server = grpc.aio.server(interceptors=interceptors or [],
                                      options=[("grpc.so_reuseport", 0),
                                               ])
        self._add_api(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        if server_credentials is not None:
            self.port = self.server.add_secure_port(self.listen, server_credentials)
        else:
            self.port = self.server.add_insecure_port(self.listen)
        if not self.port:
            raise OSError(f"cannot listen on {self.listen}")
        if self.http_listen:
            self.http = HttpApi(self.config, Api(config=self.config, operator=self.services.operator,
                                                 routing=self.services.routing, tables=self.tables, store=self.store,
                                                 known=Known(self.config)), self.http_listen)
            self.http_port = await self.http.start()
        if self.ingest_listen:
            self.h2ingest = H2Ingest(self.ingest, self.config, self.ingest_listen)
            self.ingest_port = await self.h2ingest.start()
        await self.server.start()
        self.ingest.start()
        self._tasks += [  # after the API's restore janitor (_add_api)
            asyncio.create_task(self.leader.run(), name="leader"),
            asyncio.create_task(self._follow_tables(), name="tables"),
            asyncio.create_task(self.drill_runner.run(), name="drills"),
        ]
        if self.config.geoip is not None:
            self._tasks.append(asyncio.create_task(self.placement.reloader().run(), name="geoip"))
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("controller started", replica=self.replica, listen=self.listen, port=self.port,
                 http_listen=self.http_listen or "", http_port=self.http_port,
                 ingest_listen=self.ingest_listen or "", ingest_port=self.ingest_port)
        return self.port

    async def _follow_tables(self) -> None:
        while True:
            try:
                await self.tables.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("table follower failed; restarting")
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """SIGTERM: resign leadership first (another replica takes over at once), then drain."""
        log.info("controller stopping", replica=self.replica)
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.leader.stop()
        if self.http is not None:
            await self.http.stop()
        if self.h2ingest is not None:
            await self.h2ingest.close()
        if self.server is not None:
            await self.server.stop(grace=1.0)
        await self.ingest.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()
        log.info("controller stopped", replica=self.replica)
