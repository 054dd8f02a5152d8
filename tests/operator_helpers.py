"""Shared by the operator, steerctl and client tests: controllers on a real etcd, fed by fake agents."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from steering.config import Config, parse_config
from steering.controller.server import Controller
from steering.table import RoutingTable
from steering.testing import EXAMPLE_CONFIG
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc
from tests.test_controller import REGIONS, SITES, FakeAgent, eventually, weight  # noqa: F401

API = "api.example.test."


def config_data(endpoints: Sequence[str], **policy: Any) -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["etcd"] = {"endpoints": list(endpoints), "prefix": "/test/steering"}
    data["policy"].update({"silence_seconds": 3.0, "step_seconds": 0.3, "max_shift": 0.5, **policy})
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


class CheckingAgent(FakeAgent):
    """A FakeAgent whose reports also carry per-check results (``checks``), as the real agent's do."""

    def __init__(self, port: int, site: str, region: str, kind: int) -> None:
        super().__init__(port, site, region, kind)
        self.checks: list[pb.CheckResult] = []

    async def _reports(self) -> AsyncIterator[pb.HealthReport]:
        while True:
            self.sequence += 1
            yield pb.HealthReport(site=self.site, region=self.region, kind=self.kind, status=self.status,
                                  capacity=self.capacity, load=self.load, sequence=self.sequence,
                                  agent_id=f"agent-{self.site}", checks=list(self.checks))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), 0.2)
            except TimeoutError:
                pass


async def start_agents(port: int) -> dict[str, FakeAgent]:
    agents: dict[str, FakeAgent] = {r: CheckingAgent(port, r, r, pb.SITE_KIND_REGION) for r in REGIONS}
    agents.update({s: CheckingAgent(port, s, r, pb.SITE_KIND_CACHE) for s, r in SITES.items()})
    for a in agents.values():
        a.start()
    return agents


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
    ctl = Controller(config, name, listen)
    port = await ctl.start()
    fakes = await start_agents(port) if agents else {}
    for a in fakes.values():
        a.set(**agent_kw)
    run = Running(ctl, port, fakes)
    if lead:
        await eventually(lambda: ctl.leader.is_leader, what=f"{name} to lead")
    if agents:
        def all_healthy() -> bool:
            t = ctl.tables.current
            return t is not None and all(t.regions[r].health == "healthy" for r in REGIONS)

        await eventually(all_healthy, what="all regions healthy in the table")
    return run


def stubs(target: str, token: str | None = None) -> tuple[grpc.aio.Channel, Any, Any, tuple[tuple[str, str], ...]]:
    ch = grpc.aio.insecure_channel(target)
    md = (("authorization", f"Bearer {token}"),) if token else ()
    return ch, pb_grpc.OperatorServiceStub(ch), pb_grpc.RoutingServiceStub(ch), md


def region_share(table: RoutingTable | None, region: str, service: str = API) -> int:
    """Sum of the region's weight over every geo of a service (0 when it is fully out)."""
    if table is None:
        return -1
    return sum(route.weights.get(region, 0) for route in table.services[service].geos.values())


def now() -> float:
    return time.time()


async def refused(call: Any, *args: Any, **kw: Any) -> grpc.aio.AioRpcError:
    """The error a call that must be refused raised (fails the test if it was not refused)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(*args, **kw)
    return info.value
