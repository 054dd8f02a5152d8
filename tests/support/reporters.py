"""What a controller under test hears: agents' Report streams over real gRPC, without the agent process.

``FakeAgent`` streams one site's reports as the agent does (a report on every change, else every 0.2 s);
``start_agents`` feeds a controller every region and cache site of the example config; ``send`` is one
Report stream of given reports, for the ingest's refusals. The real agent has its own tests
(tests/test_agent_*.py) and runs in the end-to-end suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc

# The example config's regions and cache sites (site -> region).
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
SITES = {"oc-nyc-1": "us-east-1", "oc-lon-1": "eu-west-1"}


class FakeAgent:
    """A real gRPC client that streams reports for one site, as the agent does; ``set`` changes what it
    reports (status, capacity, load, checks) and sends at once."""

    def __init__(self, port: int, site: str, region: str, kind: int) -> None:
        self.port, self.site, self.region, self.kind = port, site, region, kind
        self.status = pb.HEALTH_STATUS_HEALTHY
        self.capacity, self.load = 0.0, 100.0
        self.checks: list[pb.CheckResult] = []  # per-check results, as the real agent's reports carry
        self.sequence = 0
        self.acks: list[pb.ReportAck] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

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

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            stub = pb_grpc.HealthServiceStub(ch)
            try:
                async for ack in stub.Report(self._reports()):
                    self.acks.append(ack)
            except grpc.aio.AioRpcError as exc:
                self.error = exc

    def set(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)
        self._wake.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def start_agents(port: int) -> dict[str, FakeAgent]:
    """A started ``FakeAgent`` for every region and cache site, reporting to the controller on ``port``."""
    agents = {r: FakeAgent(port, r, r, pb.SITE_KIND_REGION) for r in REGIONS}
    agents.update({s: FakeAgent(port, s, r, pb.SITE_KIND_CACHE) for s, r in SITES.items()})
    for a in agents.values():
        a.start()
    return agents


def report(site: str, region: str | None = None, sequence: int = 1, agent: str = "agent-1",
           status: int = pb.HEALTH_STATUS_HEALTHY, **kw: Any) -> pb.HealthReport:
    """One report: a region's when ``region`` is None, else a cache site's in ``region``."""
    kind = pb.SITE_KIND_REGION if region is None else pb.SITE_KIND_CACHE
    return pb.HealthReport(site=site, region=region or site, kind=kind, status=status, sequence=sequence,
                           agent_id=agent, **kw)


async def exchange(target: str, reports: Sequence[pb.HealthReport], token: str | None = None,
                   credentials: grpc.ChannelCredentials | None = None,
                   ) -> tuple[list[pb.ReportAck], grpc.aio.AioRpcError | None]:
    """One Report stream carrying ``reports``, then half-closed: its acks and the error that ended it (or None)."""
    md = (("authorization", f"Bearer {token}"),) if token else None
    acks: list[pb.ReportAck] = []
    ch = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
    async with ch:
        call = pb_grpc.HealthServiceStub(ch).Report(metadata=md, timeout=10)
        # Written by hand, after the stream's headers (the controller sends them once the credential is
        # accepted), as the agent does; not from a request iterator: a write or half-close racing the
        # server's refusal ends the call INTERNAL ("Failed execute_batch") or CANCELLED, and the server's
        # status is lost. A write to an ended call fails here instead, and reading the call below gives the
        # status the server sent.
        await call.initial_metadata()
        try:
            for r in reports:
                await call.write(r)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        try:
            async for a in call:
                acks.append(a)
        except grpc.aio.AioRpcError as err:
            return acks, err
        return acks, None


async def send(target: str, reports: Sequence[pb.HealthReport], token: str | None = None,
               credentials: grpc.ChannelCredentials | None = None) -> list[pb.ReportAck]:
    """One Report stream carrying ``reports``, then half-closed; the acks (raises the stream's error)."""
    acks, err = await exchange(target, reports, token, credentials)
    if err is not None:
        raise err
    return acks


async def send_refused(target: str, reports: Sequence[pb.HealthReport], token: str | None = None,
                       credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.AioRpcError:
    """The error ending a Report stream that must be refused (fails the test if it was not)."""
    acks, err = await exchange(target, reports, token, credentials)
    assert err is not None, f"the stream was not refused (acks: {[a.sequence for a in acks]})"
    return err
