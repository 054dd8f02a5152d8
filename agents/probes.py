"""Probes: one check of one target, returning a ``CheckResult``-shaped outcome.

Each probe bounds itself by its own timeout and never raises: whatever goes
wrong becomes ``ok=False`` with a detail saying why. The agent also wraps
each call in a hard deadline (see ``agent.py``) in case a probe misbehaves.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents import httpget
from agents.config import GrpcProbe, HttpProbe, Probe, TcpProbe
from steering.addr import parse_hostport


@dataclass(frozen=True)
class ProbeResult:
    name: str
    kind: str
    ok: bool
    detail: str
    latency_seconds: float
    critical: bool = True


def timeout_detail(seconds: float) -> str:
    return f"timeout after {seconds:g}s"


async def run_probe(probe: Probe) -> ProbeResult:
    """Run one probe within its timeout; never raises (except on cancellation)."""
    started = time.monotonic()
    try:
        ok, detail = await asyncio.wait_for(_dispatch(probe), probe.timeout_seconds)
    except TimeoutError:
        ok, detail = False, timeout_detail(probe.timeout_seconds)
    except Exception as exc:  # a probe must never take the agent down
        ok, detail = False, f"probe error: {type(exc).__name__}: {exc}"
    return ProbeResult(probe.name, probe.kind, ok, detail, time.monotonic() - started, probe.critical)


async def _dispatch(probe: Probe) -> tuple[bool, str]:
    if isinstance(probe, HttpProbe):
        return await http_check(probe)
    if isinstance(probe, TcpProbe):
        return await tcp_check(probe)
    if isinstance(probe, GrpcProbe):
        return await grpc_check(probe)
    raise TypeError(f"unknown probe kind {probe!r}")


async def http_check(probe: HttpProbe) -> tuple[bool, str]:
    try:
        response = await httpget.get(probe.url, max_body=256 * 1024)
    except httpget.HttpError as exc:
        return False, str(exc)
    if response.status not in probe.expect_status:
        want = ", ".join(str(s) for s in probe.expect_status)
        return False, f"status {response.status}, expected {want}"
    if probe.body_contains is not None and probe.body_contains.encode() not in response.body:
        return False, f"status {response.status}, body lacks {probe.body_contains!r}"
    return True, f"status {response.status}"


async def tcp_check(probe: TcpProbe) -> tuple[bool, str]:
    host, port = parse_hostport(probe.address)
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return False, f"connect {probe.address}: {exc.strerror or exc}"
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (TimeoutError, OSError):
        pass
    return True, "connected"


_STATUS_NAMES = {v: k for k, v in health_pb2.HealthCheckResponse.ServingStatus.items()}


async def grpc_check(probe: GrpcProbe) -> tuple[bool, str]:
    # A fresh channel per check: a long-lived one would sit in gRPC's own
    # reconnect backoff (up to two minutes) and hide a target that came back.
    host, port = parse_hostport(probe.address)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=probe.service),
                timeout=probe.timeout_seconds,
                wait_for_ready=False,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, timeout_detail(probe.timeout_seconds)
            return False, f"{exc.code().name}: {exc.details()}"
    name = _STATUS_NAMES.get(response.status, str(response.status))
    return response.status == health_pb2.HealthCheckResponse.SERVING, name
