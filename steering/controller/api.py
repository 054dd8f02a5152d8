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
import json
from typing import Any

import grpc

from steering import logs
from steering.controller.operator import OperatorService
from steering.controller.routing_api import RoutingService
from steering.model import Restore
from steering.table import RoutingTable
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.api")


def add_api_services(controller: Any, server: grpc.aio.Server) -> None:
    # grpcio-tools generates steering_pb2_grpc without annotations (both calls)
    pb_grpc.add_RoutingServiceServicer_to_server(RoutingService(controller), server)  # type: ignore[no-untyped-call]
    pb_grpc.add_OperatorServiceServicer_to_server(OperatorService(controller), server)  # type: ignore[no-untyped-call]
    controller._tasks.append(asyncio.create_task(restore_janitor(controller), name="restore-janitor"))


async def restore_janitor(controller: Any) -> None:
    interval = max(0.1, min(controller.config.policy.step_seconds, 5.0))
    while True:
        await asyncio.sleep(interval)
        if not controller.leader.is_leader:
            continue
        try:
            await clean_finished_restores(controller.store, controller.tables.current)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # etcd away: try again next round
            log.warning("restore janitor failed; retrying", error=str(exc) or type(exc).__name__)


async def clean_finished_restores(store: Any, table: RoutingTable | None) -> list[str]:
    """Delete Restore records whose ramp ``table`` shows complete; returns their regions."""
    from steering.store.keys import range_end

    if table is None or not table.ramps:
        return []  # no table, or one from before ramp progress was kept: nothing is known to be complete

    prefix = store.keys.overrides_prefix + b"restores/"
    resp = await store._get(prefix, range_end(prefix))
    kv = store.conn.kv
    done = []
    for item in resp.kvs:
        try:
            r = Restore.from_dict(json.loads(item.value))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # the store logs unreadable records
        at = table.ramps.get(r.region)
        if at is None or at.kind != "restore" or at.started_at != r.started_at or r.back(at.steps) < 1.0:
            continue
        txn = await store._txn([kv.txn_compare_value(item.key, item.value)], [kv.txn_op_delete(item.key)])
        if txn.succeeded:
            done.append(r.region)
            log.info("restore complete; record removed", region=r.region)
    return done
