"""The controller for tests: its config, a replica in-process (``start_controller``) or as the shipped
command (``ControllerProcess``), and the clients tests call it with.

Moved here from tests/operator_helpers.py, tests/test_controller.py (the agents now in ``reporters``)
and tests/test_agent_identity.py (``ControllerProcess``), which other tests imported.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from steering.config import Config, parse_config
from steering.controller.server import Controller
from steering.table import RoutingTable
from steering.v1 import steering_pb2_grpc as pb_grpc
from tests.support.paths import EXAMPLE_CONFIG, STEERING
from tests.support.ports import free_port
from tests.support.procs import stop_process
from tests.support.reporters import REGIONS, FakeAgent, start_agents
from tests.support.wait import eventually

API = "api.example.test."


# ---- configuration


SILENCE = 6.0  # policy.silence_seconds of the tests' configs


def config_data(endpoints: Sequence[str], **policy: Any) -> dict[str, Any]:
    """The example config on these etcd endpoints, with short silence/steps and a fast debounce."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["etcd"] = {"endpoints": list(endpoints), "prefix": "/test/steering"}
    # 6 s of silence, not less: on a loaded 2-core CI machine (the suite under -n 2 beside a busy loop) a
    # process stalled past 3 s, its sites went silent and tests about something else saw them leave.
    data["policy"].update({"silence_seconds": SILENCE, "step_seconds": 0.3, "max_shift": 0.5, **policy})
    data["controller"] = {"listen": "127.0.0.1:0", "debounce_seconds": 0.02}
    return data


def make_config(endpoints: Sequence[str], extra: dict[str, Any] | None = None, base_dir: Path | None = None,
                **policy: Any) -> Config:
    data = config_data(endpoints, **policy)
    data.update(extra or {})
    return parse_config(data, "test", base_dir or EXAMPLE_CONFIG.parent)


def write_config(path: Path, endpoints: Sequence[str], extra: dict[str, Any] | None = None, **policy: Any) -> Path:
    """A config file for subprocesses (zone file paths made absolute)."""
    data = config_data(endpoints, **policy)
    data.update(extra or {})
    for z in data["zones"]:
        if z.get("file"):
            z["file"] = str(EXAMPLE_CONFIG.parent / z["file"])
    path.write_text(yaml.safe_dump(data))
    return path


# ---- in-process


class Running:
    """A started controller and its agents."""

    def __init__(self, ctl: Controller, port: int, agents: dict[str, FakeAgent]) -> None:
        self.ctl, self.port, self.agents = ctl, port, agents

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for a in self.agents.values():
            await a.stop()
        await self.ctl.stop()


async def start_controller(config: Config, name: str = "c1", agents: bool = True, lead: bool = True,
                           listen: str = "127.0.0.1:0", **agent_kw: Any) -> Running:
    """A replica on this event loop; with ``agents``, fed by a ``FakeAgent`` per site (``agent_kw`` set on
    each); with ``lead``, returned once it leads and follows a table (with agents, once that table has every
    region healthy)."""
    ctl = Controller(config, name, listen)
    port = await ctl.start()
    fakes = await start_agents(port) if agents else {}
    for a in fakes.values():
        a.set(**agent_kw)
    run = Running(ctl, port, fakes)
    if lead:
        await eventually(lambda: ctl.leader.is_leader, what=f"{name} to lead")
        # Leading is not serving yet: until its first table is published and followed, the API answers
        # UNAVAILABLE ("no routing table yet"), the race a loaded machine once showed in
        # test_operator_auth.py::test_roles_and_audit_actor.
        await eventually(lambda: ctl.tables.current is not None, what=f"{name} to follow its first table")
    if agents:
        def all_healthy() -> bool:
            t = ctl.tables.current
            return t is not None and all(t.regions[r].health == "healthy" for r in REGIONS)

        await eventually(all_healthy, what="all regions healthy in the table")
    return run


# ---- the shipped command


class ControllerProcess:
    """``steering controller`` as a subprocess on a free loopback port, logging JSON lines to a file."""

    def __init__(self, tmp_path: Path, config: Path, name: str = "c1", extra: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"controller-{name}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [STEERING, "controller", "--config", str(config), "--listen", self.target, "--id", name, *extra],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "STEERING_LOG_FORMAT": "json", **(env or {})})

    async def ready(self) -> None:
        """Once its gRPC health check says SERVING (fails at once if it exited)."""
        async def serving() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            async with grpc.aio.insecure_channel(self.target) as ch:
                try:
                    r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
                return r.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(serving, timeout=20, what="the controller to serve")

    def logs(self) -> list[dict[str, Any]]:
        """Its JSON log lines so far (other lines skipped)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self) -> None:
        stop_process(self.proc, 5)


# ---- clients


def stubs(target: str, token: str | None = None) -> tuple[grpc.aio.Channel, Any, Any, tuple[tuple[str, str], ...]]:
    """A channel, the Operator and Routing stubs, and the metadata carrying ``token``."""
    ch = grpc.aio.insecure_channel(target)
    md = (("authorization", f"Bearer {token}"),) if token else ()
    return ch, pb_grpc.OperatorServiceStub(ch), pb_grpc.RoutingServiceStub(ch), md


async def refused(call: Any, *args: Any, **kw: Any) -> grpc.aio.AioRpcError:
    """The error a call that must be refused raised (fails the test if it was not refused)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(*args, **kw)
    return info.value


def region_share(table: RoutingTable | None, region: str, service: str = API) -> int:
    """Sum of the region's weight over every geo of a service (0 when it is fully out; -1 without a table)."""
    if table is None:
        return -1
    return sum(route.weights.get(region, 0) for route in table.services[service].geos.values())
