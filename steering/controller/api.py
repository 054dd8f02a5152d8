"""Registers the routing and operator API on a controller's gRPC server (called by ``Controller.start``).

It also starts the restore janitor: the *leading* replica deletes a Restore
record once a published table shows its ramp complete (the planner ignores
it from then on, so this is housekeeping: ``steerctl status`` stops listing
it). The table decides, not this replica's clock: a clock ahead would delete
the record early and return the region's traffic at once. The delete compares
the record's value, so a newer restore written meanwhile stays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from steering import logs
from steering.config import Config
from steering.controller.operator import OperatorService
from steering.controller.routing_api import RoutingService
from steering.geoipwatch import Placement
from steering.ports import AgentSessions, ApiStore, FollowedTable, RestoreRecords
from steering.store.overrides import StoredRestore
from steering.table import RoutingTable
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.api")


@dataclass(frozen=True)
class _RoutingParts:
    """What ``RoutingService`` reads: the config and the followed table."""

    config: Config
    tables: FollowedTable
    placement: Placement | None = None  # None: RoutingService places clients with a placement of its own


@dataclass(frozen=True)
class Services:
    """The routing and operator services of one replica: registered on its gRPC server, and called by its
    REST API (steering/http), so each action has one implementation for both."""

    routing: RoutingService
    operator: OperatorService


def build_services(*, config: Config, store: ApiStore, tables: FollowedTable, agents: AgentSessions, replica: str,
                   is_leader: Callable[[], bool], placement: Placement | None = None) -> Services:
    return Services(RoutingService(_RoutingParts(config, tables, placement)),
                    OperatorService(config, store, tables, agents, replica, is_leader,
                                    geoip=placement.state if placement is not None else None))


def add_api_services(server: grpc.aio.Server, *, config: Config, store: ApiStore, tables: FollowedTable,
                     agents: AgentSessions, replica: str, is_leader: Callable[[], bool],
                     placement: Placement | None = None, services: Services | None = None) -> asyncio.Task[None]:
    """Register both services on ``server`` (``services``, or new ones); returns the restore janitor's task,
    which the caller owns."""
    if services is None:
        services = build_services(config=config, store=store, tables=tables, agents=agents, replica=replica,
                                  is_leader=is_leader, placement=placement)
    # grpcio-tools generates steering_pb2_grpc without annotations (both calls)
    pb_grpc.add_RoutingServiceServicer_to_server(services.routing, server)  # type: ignore[no-untyped-call]
    pb_grpc.add_OperatorServiceServicer_to_server(services.operator, server)  # type: ignore[no-untyped-call]
    interval = max(0.1, min(config.policy.step_seconds, 5.0))
    return asyncio.create_task(restore_janitor(store, tables, is_leader, interval), name="restore-janitor")


async def restore_janitor(store: RestoreRecords, tables: FollowedTable, is_leader: Callable[[], bool],
                          interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        if not is_leader():
            continue
        try:
            await clean_finished_restores(store, tables.current)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # etcd away: try again next round
            log.warning("restore janitor failed; retrying", error=str(exc) or type(exc).__name__)


def finished_restores(table: RoutingTable | None, stored: list[StoredRestore]) -> list[StoredRestore]:
    """The restore records whose ramp ``table`` shows complete (pure: the table decides, not a clock)."""
    if table is None or not table.ramps:
        return []  # no table, or one from before ramp progress was kept: nothing is known to be complete
    done = []
    for s in stored:
        r = s.restore
        at = table.ramps.get(r.region)
        if at is None or at.kind != "restore" or at.started_at != r.started_at or r.back(at.steps) < 1.0:
            continue
        done.append(s)
    return done


async def clean_finished_restores(store: RestoreRecords, table: RoutingTable | None) -> list[str]:
    """Delete Restore records whose ramp ``table`` shows complete; returns their regions."""
    if table is None or not table.ramps:
        return []  # nothing can be complete: not even a read
    removed = []
    for s in finished_restores(table, await store.get_restores()):
        if await store.delete_restore_if_unchanged(s):
            removed.append(s.restore.region)
            log.info("restore complete; record removed", region=s.restore.region)
    return removed
