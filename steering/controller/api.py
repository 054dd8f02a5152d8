"""Registers the routing and operator API on a controller's gRPC server (called by ``Controller.start``).

It also starts the restore janitor: the *leading* replica deletes a Restore
record once its ramp is complete (the planner ignores it from then on, so
this is housekeeping: ``steerctl status`` stops listing it). The delete
compares the record's value, so a newer restore written meanwhile stays.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc

from steering import logs
from steering.controller.operator import OperatorService
from steering.controller.routing_api import RoutingService
from steering.model import Restore
from steering.v1 import steering_pb2_grpc as pb_grpc

log = logs.get("steering.api")


def add_api_services(controller: Any, server: grpc.aio.Server) -> None:
    pb_grpc.add_RoutingServiceServicer_to_server(RoutingService(controller), server)
    pb_grpc.add_OperatorServiceServicer_to_server(OperatorService(controller), server)
    controller._tasks.append(asyncio.create_task(restore_janitor(controller), name="restore-janitor"))


async def restore_janitor(controller: Any) -> None:
    interval = max(0.1, min(controller.config.policy.step_seconds, 5.0))
    while True:
        await asyncio.sleep(interval)
        if not controller.leader.is_leader:
            continue
        try:
            await clean_finished_restores(controller.store, time.time())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # etcd away: try again next round
            log.warning("restore janitor failed; retrying", error=str(exc) or type(exc).__name__)


async def clean_finished_restores(store: Any, now: float) -> list[str]:
    """Delete Restore records whose ramp is complete; returns their regions."""
    from steering.store.keys import range_end

    prefix = store.keys.overrides_prefix + b"restores/"
    resp = await store._get(prefix, range_end(prefix))
    kv = store.conn.kv
    done = []
    for item in resp.kvs:
        try:
            r = Restore.from_dict(json.loads(item.value))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # the store logs unreadable records
        if r.restored(now) < 1.0:
            continue
        txn = await store._txn([kv.txn_compare_value(item.key, item.value)], [kv.txn_op_delete(item.key)])
        if txn.succeeded:
            done.append(r.region)
            log.info("restore complete; record removed", region=r.region)
    return done
